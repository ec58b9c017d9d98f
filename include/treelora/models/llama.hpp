// treelora/models/llama.hpp: the Llama family of decoder-only language models (Llama 2 and 3, SmolLM, TinyLlama) as
// Hugging Face's LlamaForCausalLM computes them, with LoRA adapters on modules chosen by name.
//   x = embed_tokens[ids]                                         [batch, tokens, d]
//   per layer:  h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = input_layernorm(x)  (RMSNorm)
//               x = h + mlp(post_attention_layernorm(h))          mlp = down_proj(silu(gate_proj) * up_proj)
//   logits = lm_head(norm(x))                                     lm_head tied to embed_tokens or its own weight
// Attention is causal and grouped-query (models/transformer/causal_attention.hpp); RoPE is the half-split
// convention with llama3 frequency scaling (layers/rotary_embedding.hpp), evaluated at each token's position.
// Parameter names are the Hugging Face module paths ("model.layers.0.self_attn.q_proj.weight"), the adapters'
// "...q_proj.lora_a" / "lora_b": a PEFT export is a prefix and a suffix (models/hf_causal_lm.hpp).
// The base weights are initialised as transformers does (normal(0, initializer_range), norms 1); with LoRA targets
// they are frozen and only the adapters train.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/layers/rms_norm.hpp"
#include "treelora/layers/rotary_embedding.hpp"
#include "treelora/models/causal_lm.hpp"
#include "treelora/models/model.hpp"
#include "treelora/models/transformer/swiglu_mlp.hpp"

namespace treelora {

struct llama_config {
  index_t vocab_size = 4096;
  index_t hidden_size = 256;
  index_t intermediate_size = 704;
  index_t num_hidden_layers = 6;
  index_t num_attention_heads = 8;
  index_t num_key_value_heads = 4;
  index_t head_dim = 0;  ///< 0: hidden_size / num_attention_heads
  index_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<rope_llama3_scaling> rope_scaling;
  bool tie_word_embeddings = true;
  bool attention_bias = false;
  bool mlp_bias = false;
  index_t bos_token_id = 1;
  std::vector<index_t> eos_token_ids = {2};
  index_t pad_token_id = -1;  ///< -1: none (batches must then be unpadded)
  double initializer_range = 0.02;
  std::vector<std::string> lora_targets = {"q_proj", "v_proj"};  ///< PEFT's default for Llama; empty: no adapters
  index_t lora_rank = 8;
  double lora_alpha = 32.0;
  double lora_dropout = 0.0;
  std::uint64_t seed = 0;

  static constexpr std::array<std::string_view, 7> modules = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                              "gate_proj", "up_proj", "down_proj"};

  /// The ~5.5 M-parameter model the text benchmark pre-trains (d 256, 6 layers, 8 heads, 4 kv heads, tied).
  static llama_config tiny() { return {}; }
  /// SmolLM-135M's shapes (HuggingFaceTB/SmolLM-135M): d 576, 30 layers, 9 heads, 3 kv heads, I 1536, V 49152, tied.
  static llama_config smollm_135m() {
    llama_config c;
    c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536, c.num_hidden_layers = 30;
    c.num_attention_heads = 9, c.num_key_value_heads = 3, c.max_position_embeddings = 2048;
    c.bos_token_id = 0, c.eos_token_ids = {0};
    return c;
  }
  /// Llama-3.2-1B's shapes: d 2048, 16 layers, 32 heads, 8 kv heads, I 8192, V 128256, tied, rope theta 500000 with
  /// llama3 scaling (factor 32).
  static llama_config llama_3_2_1b() {
    llama_config c;
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_hidden_layers = 16;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 64, c.max_position_embeddings = 131072;
    c.rope_theta = 500000.0, c.rope_scaling = rope_llama3_scaling{32.0, 1.0, 4.0, 8192};
    c.bos_token_id = 128000, c.eos_token_ids = {128001};
    return c;
  }

  index_t head_width() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  treelora::lora_targets lora() const {
    return {lora_targets, {.rank = lora_rank, .alpha = lora_alpha, .dropout = lora_dropout, .seed = seed}};
  }
  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    const auto bad = [](auto&&... parts) { throw_invalid_argument("llama_config", concat(parts...)); };
    if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers < 0 || max_position_embeddings <= 0)
      bad("vocab_size ", vocab_size, ", hidden_size ", hidden_size, ", intermediate_size ", intermediate_size,
          ", max_position_embeddings ", max_position_embeddings, " must be positive, num_hidden_layers ", num_hidden_layers, " >= 0");
    if (num_attention_heads <= 0 || num_key_value_heads <= 0 || num_attention_heads % num_key_value_heads != 0)
      bad("num_attention_heads ", num_attention_heads, " must be a positive multiple of num_key_value_heads ", num_key_value_heads);
    if (head_dim == 0 && hidden_size % num_attention_heads != 0)
      bad("hidden_size ", hidden_size, " is not divisible into ", num_attention_heads, " heads (set head_dim)");
    if (head_width() <= 0 || head_width() % 2 != 0) bad("head_dim ", head_width(), " must be positive and even (RoPE)");
    if (!(rms_norm_eps > 0)) bad("rms_norm_eps ", rms_norm_eps, " must be > 0");
    if (!(initializer_range >= 0)) bad("initializer_range ", initializer_range, " must be >= 0");
    rope_inverse_frequencies(head_width(), rope_theta, rope_scaling);  // checks theta and the scaling
    for (index_t id : eos_token_ids)
      if (id < 0 || id >= vocab_size) bad("eos_token_id ", id, " is outside the vocabulary [0, ", vocab_size, ")");
    if (bos_token_id >= vocab_size || pad_token_id >= vocab_size)
      bad("bos_token_id ", bos_token_id, " / pad_token_id ", pad_token_id, " outside the vocabulary [0, ", vocab_size, ")");
    lora().validate("llama_config", modules);
  }
};

namespace llama_detail {
/// The input of every layer of one forward: the mask and the rotation tables at each token's position.
template <Backend B>
struct layer_inputs {
  index_t batch, tokens;
  const_tensor_view<B> mask, cos, sin;
};
}  // namespace llama_detail

/// One decoder layer: input_layernorm, self_attn.{q,k,v,o}_proj with RoPE and causal GQA, post_attention_layernorm,
/// mlp.{gate,up,down}_proj.
template <Backend B, class F = standard_lora>
class llama_layer {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using projection = optional_lora_linear<B, F>;
  using targets = basic_lora_targets<typename F::config>;

  llama_layer(B& backend, const llama_config& c, std::uint64_t seed, const targets& lora)
      : backend_(&backend),
        heads_(c.num_attention_heads),
        kv_heads_(c.num_key_value_heads),
        head_dim_(c.head_width()),
        input_layernorm_(backend, c.hidden_size, c.rms_norm_eps),
        q_(backend, c.hidden_size, heads_ * head_dim_, random::mix64(seed + 1), lora.for_module("q_proj", seed * 8 + 1), c.attention_bias),
        k_(backend, c.hidden_size, kv_heads_ * head_dim_, random::mix64(seed + 2), lora.for_module("k_proj", seed * 8 + 2), c.attention_bias),
        v_(backend, c.hidden_size, kv_heads_ * head_dim_, random::mix64(seed + 3), lora.for_module("v_proj", seed * 8 + 3), c.attention_bias),
        o_(backend, heads_ * head_dim_, c.hidden_size, random::mix64(seed + 4), lora.for_module("o_proj", seed * 8 + 4), c.attention_bias),
        attention_(backend, heads_, kv_heads_, head_dim_),
        post_attention_layernorm_(backend, c.hidden_size, c.rms_norm_eps),
        mlp_(backend, c.hidden_size, c.intermediate_size, seed, lora, c.mlp_bias) {
    // transformers' _init_weights: Linear weights N(0, initializer_range), biases 0
    std::uint64_t stream = random::mix64(seed + 11);
    for (auto& [name, p] : projections()) {
      fill_normal<B>(p->weight(), 0, static_cast<scalar_type>(c.initializer_range), stream++);
      if (!p->base().bias().empty()) p->base().bias().fill(scalar_type(0));
    }
  }

  std::array<std::pair<std::string_view, projection*>, 7> projections() {
    return {{{"self_attn.q_proj", &q_}, {"self_attn.k_proj", &k_}, {"self_attn.v_proj", &v_}, {"self_attn.o_proj", &o_},
             {"mlp.gate_proj", &mlp_.gate_proj()}, {"mlp.up_proj", &mlp_.up_proj()}, {"mlp.down_proj", &mlp_.down_proj()}}};
  }
  causal_attention<B>& attention() { return attention_; }
  bool has_adapter() {
    for (auto& [name, p] : projections())
      if (p->has_adapter()) return true;
    return false;
  }
  void set_trainable(bool trainable) {
    for (auto& [name, p] : projections()) p->set_trainable(trainable);
    input_layernorm_.set_trainable(trainable);
    post_attention_layernorm_.set_trainable(trainable);
  }
  void set_training(bool training) {
    for (auto& [name, p] : projections()) p->set_training(training);
  }
  void set_cache(index_t batch, index_t capacity) { attention_.set_cache(batch, capacity); }

  const_tensor_view<B> forward(const_tensor_view<B> x, const llama_detail::layer_inputs<B>& in) {
    input_ = x;
    const_tensor_view<B> n = input_layernorm_.forward(x);
    const_tensor_view<B> q = q_.forward(n), k = k_.forward(n), v = v_.forward(n);
    q_rotated_.resize(*backend_, q.shape());
    k_rotated_.resize(*backend_, k.shape());
    rotate_half<B>(q, in.batch * in.tokens, heads_, 0, in.cos, in.sin, q_rotated_);
    rotate_half<B>(k, in.batch * in.tokens, kv_heads_, 0, in.cos, in.sin, k_rotated_);
    cos_ = in.cos, sin_ = in.sin, rows_ = in.batch * in.tokens;
    const_tensor_view<B> context = attention_.forward({q_rotated_.data(), heads_ * head_dim_}, {k_rotated_.data(), kv_heads_ * head_dim_},
                                                      {v.data(), kv_heads_ * head_dim_}, in.batch, in.tokens, in.mask);
    const_tensor_view<B> attended = o_.forward(context);
    residual_.resize(*backend_, x.shape());
    copy<B>(x, residual_);
    axpy<B>(scalar_type(1), attended, residual_);  // h = x + attn
    const_tensor_view<B> m = mlp_.forward(post_attention_layernorm_.forward(residual_));
    output_.resize(*backend_, x.shape());
    copy<B>(residual_, output_);
    axpy<B>(scalar_type(1), m, output_);  // y = h + mlp
    return output_;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (input_.data() == nullptr) throw_invalid_argument("llama_layer::backward", "called before forward");
    residual_gradient_.resize(*backend_, dy.shape());
    copy<B>(post_attention_layernorm_.backward(mlp_.backward(dy)), residual_gradient_);
    axpy<B>(scalar_type(1), dy, residual_gradient_);  // dh = dy + d mlp path
    const_tensor_view<B> dcontext = o_.backward(residual_gradient_);
    const shape q_shape = q_rotated_.shape(), kv_shape = k_rotated_.shape();
    dq_rotated_.resize(*backend_, q_shape), dk_rotated_.resize(*backend_, kv_shape), dv_.resize(*backend_, kv_shape);
    attention_.backward(dcontext, {dq_rotated_.data(), heads_ * head_dim_}, {dk_rotated_.data(), kv_heads_ * head_dim_},
                        {dv_.data(), kv_heads_ * head_dim_});
    dq_.resize(*backend_, q_shape), dk_.resize(*backend_, kv_shape);
    rotate_half<B>(dq_rotated_, rows_, heads_, 0, cos_, sin_, dq_, /*inverse=*/true);
    rotate_half<B>(dk_rotated_, rows_, kv_heads_, 0, cos_, sin_, dk_, /*inverse=*/true);
    normed_gradient_.resize(*backend_, input_.shape());
    copy<B>(q_.backward(dq_), normed_gradient_);
    axpy<B>(scalar_type(1), k_.backward(dk_), normed_gradient_);
    axpy<B>(scalar_type(1), v_.backward(dv_), normed_gradient_);
    input_gradient_.resize(*backend_, input_.shape());
    copy<B>(input_layernorm_.backward(normed_gradient_), input_gradient_);
    axpy<B>(scalar_type(1), residual_gradient_, input_gradient_);  // dx = dh + d attention path
    return input_gradient_;
  }

  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    input_layernorm_.collect_parameters(out, join_name(prefix, "input_layernorm"));
    for (auto& [name, p] : projections()) {
      if (name.starts_with("mlp.")) continue;
      p->collect_parameters(out, join_name(prefix, name));
    }
    post_attention_layernorm_.collect_parameters(out, join_name(prefix, "post_attention_layernorm"));
    mlp_.collect_parameters(out, join_name(prefix, "mlp"));
  }

 private:
  B* backend_;
  index_t heads_, kv_heads_, head_dim_;
  rms_norm<B> input_layernorm_;
  projection q_, k_, v_, o_;
  causal_attention<B> attention_;
  rms_norm<B> post_attention_layernorm_;
  swiglu_mlp<B, F> mlp_;
  const_tensor_view<B> input_, cos_, sin_;
  index_t rows_ = 0;
  tensor<B> q_rotated_, k_rotated_, residual_, output_;
  tensor<B> residual_gradient_, dq_rotated_, dk_rotated_, dv_, dq_, dk_, normed_gradient_, input_gradient_;
};

template <Backend B, class F = standard_lora>
class llama {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using factorization = F;
  using layer_type = llama_layer<B, F>;
  using adapter_type = typename F::template adapter<B>;
  using adapter_config = typename F::config;

  llama(B& backend, const llama_config& config) : llama(backend, config, model_detail::default_adapter_config<adapter_config>(config)) {}

  llama(B& backend, const llama_config& config, const adapter_config& adapter)
      : backend_(&backend),
        config_((config.validate(), config)),
        embed_tokens_(backend, config.vocab_size, config.hidden_size, random::mix64(config.seed + 201), config.initializer_range),
        norm_(backend, config.hidden_size, config.rms_norm_eps),
        lm_head_(backend, config.tie_word_embeddings ? &embed_tokens_ : nullptr, config.vocab_size, config.hidden_size,
                 random::mix64(config.seed + 202), config.initializer_range),
        inverse_frequencies_(rope_inverse_frequencies(config.head_width(), config.rope_theta, config.rope_scaling)) {
    basic_lora_targets<adapter_config> lora{config.lora_targets, adapter};
    lora.lora.seed = config.seed;
    layers_.reserve(static_cast<std::size_t>(config.num_hidden_layers));
    for (index_t i = 0; i < config.num_hidden_layers; ++i)
      layers_.emplace_back(backend, config, random::mix64(config.seed + 1000 + static_cast<std::uint64_t>(i)), lora);
    set_backbone_trainable(config.lora_targets.empty());
  }
  // A tied head points at the embedding: a moved model re-points it at its own.
  llama(llama&& o) noexcept
      : backend_(o.backend_),
        config_(std::move(o.config_)),
        embed_tokens_(std::move(o.embed_tokens_)),
        layers_(std::move(o.layers_)),
        norm_(std::move(o.norm_)),
        lm_head_(std::move(o.lm_head_)),
        inverse_frequencies_(std::move(o.inverse_frequencies_)),
        backbone_trainable_(o.backbone_trainable_) {
    lm_head_.retie(&embed_tokens_);
  }
  llama(const llama&) = delete;
  llama& operator=(const llama&) = delete;
  llama& operator=(llama&&) = delete;

  B& backend() { return *backend_; }
  const llama_config& config() const { return config_; }
  index_t vocabulary() const { return config_.vocab_size; }
  index_t pad_token_id() const { return config_.pad_token_id; }
  std::vector<index_t> eos_token_ids() const { return config_.eos_token_ids; }
  embedding<B>& embed_tokens() { return embed_tokens_; }
  std::vector<layer_type>& layers() { return layers_; }
  rms_norm<B>& norm() { return norm_; }
  lm_head<B>& head() { return lm_head_; }
  bool backbone_trainable() const { return backbone_trainable_; }

  /// Whether the base weights (embedding, norms, projections, untied head) train; on by default only without LoRA.
  void set_backbone_trainable(bool trainable) {
    backbone_trainable_ = trainable;
    embed_tokens_.set_trainable(trainable);
    for (auto& layer : layers_) layer.set_trainable(trainable);
    norm_.set_trainable(trainable);
    lm_head_.set_trainable(trainable);
  }
  void set_training(bool training) {
    for (auto& layer : layers_) layer.set_training(training);
  }
  /// The key/value cache of every layer on (capacity > 0) or off (generation, causal_lm.hpp).
  void set_cache(index_t batch, index_t capacity) {
    for (auto& layer : layers_) layer.set_cache(batch, capacity);
  }

  /// ids [batch * tokens] with their layout -> logits [batch * tokens, vocabulary], or with `last_only` the logits of
  /// each sequence's last token [batch, vocabulary] (generation: the head is the largest product at a step, and
  /// backward is refused after it).
  const_tensor_view<B> forward_tokens(std::span<const index_t> ids, const token_layout& layout, bool last_only = false) {
    if (static_cast<index_t>(ids.size()) != layout.batch * layout.tokens || layout.left_padding.size() != std::size_t(layout.batch))
      throw_invalid_argument("llama::forward_tokens", concat(ids.size(), " ids do not fit ", layout.batch, " sequences of ",
                                                             layout.tokens, " tokens"));
    if (layout.keys() > config_.max_position_embeddings)
      throw_invalid_argument("llama::forward_tokens", concat(layout.keys(), " tokens exceed max_position_embeddings ",
                                                             config_.max_position_embeddings));
    const index_t d = config_.hidden_size;
    batch_ = layout.batch, tokens_ = layout.tokens;
    const_tensor_view<B> h = embed_tokens_.forward(ids).reshaped(shape{batch_, tokens_, d});
    rope_tables(layout);
    causal_attention_mask<B>(layout, mask_, *backend_);
    const llama_detail::layer_inputs<B> in{batch_, tokens_, mask_, cos_, sin_};
    for (auto& layer : layers_) h = layer.forward(h, in);
    last_only_ = last_only;
    return lm_head_.forward(norm_.forward(last_only ? last_rows(h, batch_, tokens_, last_, *backend_) : h.reshaped(shape{batch_ * tokens_, d})));
  }

  /// The Layer entry point: token ids stored as scalars [batch, tokens]; leading pad_token_id tokens are padding.
  const_tensor_view<B> forward(const_tensor_view<B> ids) {
    const auto host = ids_from_scalars<B>(ids, config_.vocab_size, "llama::forward");
    return forward_tokens(host, left_padded_layout(host, ids.shape()[0], ids.shape()[1], config_.pad_token_id));
  }

  /// d logits [batch * tokens, vocabulary] -> nothing (ids have no gradient): returns an empty view. Parameter
  /// gradients accumulate. With the backbone frozen, backward stops below the lowest layer with an adapter.
  const_tensor_view<B> backward(const_tensor_view<B> logits_gradient) {
    if (batch_ == 0 || last_only_) throw_invalid_argument("llama::backward", "called before a (whole-sequence) forward");
    const_tensor_view<B> g = norm_.backward(lm_head_.backward(logits_gradient));
    g = g.reshaped(shape{batch_, tokens_, config_.hidden_size});
    std::size_t lowest = 0;  // a frozen backbone below the lowest adapter needs no gradient
    while (!backbone_trainable_ && lowest < layers_.size() && !layers_[lowest].has_adapter()) ++lowest;
    for (std::size_t i = layers_.size(); i-- > lowest;) g = layers_[i].backward(g);
    if (backbone_trainable_) embed_tokens_.backward(g.reshaped(shape{batch_ * tokens_, config_.hidden_size}));
    return {};
  }

  /// Hugging Face's names: "model.embed_tokens.weight", "model.layers.<i>.<...>", "model.norm.weight",
  /// "lm_head.weight" (untied only).
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    embed_tokens_.collect_parameters(out, join_name(prefix, "model.embed_tokens"));
    for (std::size_t i = 0; i < layers_.size(); ++i) layers_[i].collect_parameters(out, join_name(prefix, concat("model.layers.", i)));
    norm_.collect_parameters(out, join_name(prefix, "model.norm"));
    lm_head_.collect_parameters(out, join_name(prefix, "lm_head.weight"));
  }

  /// The adapters in model order: model.layers.0.self_attn.q_proj, model.layers.0.self_attn.v_proj, ...
  std::vector<adapter_view<B>> adapters() { return model_detail::adapter_views<B>(layers_, "model.layers."); }
  std::vector<adapter_type*> factorized_adapters() { return model_detail::typed_adapters<adapter_type>(layers_); }

  /// FNV-1a-64 of the base weights (everything but the adapters).
  std::uint64_t backbone_fingerprint() { return parameters_fingerprint<B>(backbone_parameters(), "treelora llama backbone"); }

  /// Checkpoints (io/checkpoint.hpp): the architecture is compared, a frozen backbone by its fingerprint; the adapters
  /// and, when it trains, the backbone are saved.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("architecture", std::string("llama"));
    ar.expect("vocab_size", config_.vocab_size), ar.expect("hidden_size", config_.hidden_size);
    ar.expect("intermediate_size", config_.intermediate_size), ar.expect("num_hidden_layers", config_.num_hidden_layers);
    ar.expect("num_attention_heads", config_.num_attention_heads), ar.expect("num_key_value_heads", config_.num_key_value_heads);
    ar.expect("head_dim", config_.head_width()), ar.expect("tie_word_embeddings", config_.tie_word_embeddings);
    ar.expect("lora_targets", config_.lora_targets), ar.expect("backbone_trainable", backbone_trainable_);
    if (!backbone_trainable_) ar.expect("backbone_fingerprint", backbone_fingerprint());
    else
      for (auto& p : backbone_parameters()) ar.tensor_of_shape(p.name, *p.value, *backend_, p.value->shape());
    model_detail::checkpoint_adapters(ar, layers_, "model.layers.");
  }

  /// Every parameter but the adapters'.
  parameter_list<B> backbone_parameters() { return model_detail::without_adapters<B>(parameters(*this)); }

 private:
  /// cos and sin of every token's angles, [batch * tokens, head_dim / 2], computed in double and rounded.
  void rope_tables(const token_layout& layout) {
    const index_t half = config_.head_width() / 2;
    std::vector<scalar_type> c(std::size_t(layout.batch * layout.tokens * half)), s(c.size());
    for (index_t b = 0; b < layout.batch; ++b)
      for (index_t t = 0; t < layout.tokens; ++t) {
        const double position = static_cast<double>(layout.position(b, t));
        for (index_t i = 0; i < half; ++i) {
          const double angle = position * inverse_frequencies_[std::size_t(i)];
          c[std::size_t((b * layout.tokens + t) * half + i)] = static_cast<scalar_type>(std::cos(angle));
          s[std::size_t((b * layout.tokens + t) * half + i)] = static_cast<scalar_type>(std::sin(angle));
        }
      }
    cos_ = tensor<B>::from_host(*backend_, shape{layout.batch * layout.tokens, half}, c);
    sin_ = tensor<B>::from_host(*backend_, shape{layout.batch * layout.tokens, half}, s);
  }

  B* backend_;
  llama_config config_;
  embedding<B> embed_tokens_;
  std::vector<layer_type> layers_;
  rms_norm<B> norm_;
  lm_head<B> lm_head_;
  std::vector<double> inverse_frequencies_;
  bool backbone_trainable_ = true;
  index_t batch_ = 0, tokens_ = 0;
  bool last_only_ = false;
  tensor<B> mask_, cos_, sin_, last_;
};

}  // namespace treelora
