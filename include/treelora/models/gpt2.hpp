// treelora/models/gpt2.hpp: GPT-2 (Radford et al. 2019) as Hugging Face's GPT2LMHeadModel computes it, with LoRA
// adapters on modules chosen by name.
//   x = wte[ids] + wpe[positions]                               learned positions
//   per layer:  h = x + attn.c_proj(attn(split_qkv(attn.c_attn(ln_1(x)))))      causal multi-head attention
//               x = h + mlp.c_proj(gelu_new(mlp.c_fc(ln_2(h))))                 gelu_new = the tanh approximation
//   logits = ln_f(x) wte^T                                      the head is always tied to wte
// c_attn is ONE projection d -> 3d whose output columns are q, k and v; the attention reads them in place
// (causal_attention's strided operands), so the fused layout costs no copy.
// Layout: Hugging Face stores c_attn, c_proj and c_fc as Conv1D, weight [in, out] (y = x W + b); here every
// projection is a Linear, weight [out, in] (y = x W^T + b): the loader transposes (models/hf_causal_lm.hpp). The
// adapters are the same in both layouts (A [r, in], B [out, r]); their PEFT export says fan_in_fan_out = true, which
// is how PEFT reads a LoRA on a Conv1D. LoRA target "c_proj" adapts both attn.c_proj and mlp.c_proj, as in PEFT
// (a target names the last part of a module path).
#pragma once

#include <array>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/layers/activation.hpp"
#include "treelora/layers/layer_norm.hpp"
#include "treelora/lora/optional_lora.hpp"
#include "treelora/models/causal_lm.hpp"
#include "treelora/models/model.hpp"

namespace treelora {

struct gpt2_config {
  index_t vocab_size = 50257;
  index_t n_positions = 1024;
  index_t n_embd = 768;
  index_t n_layer = 12;
  index_t n_head = 12;
  index_t n_inner = 0;  ///< 0: 4 n_embd
  double layer_norm_epsilon = 1e-5;
  double initializer_range = 0.02;
  index_t bos_token_id = 50256;
  std::vector<index_t> eos_token_ids = {50256};
  index_t pad_token_id = -1;  ///< -1: none
  std::vector<std::string> lora_targets = {"c_attn"};  ///< PEFT's default for GPT-2; empty: no adapters
  index_t lora_rank = 8;
  double lora_alpha = 32.0;
  double lora_dropout = 0.0;
  std::uint64_t seed = 0;

  static constexpr std::array<std::string_view, 3> modules = {"c_attn", "c_proj", "c_fc"};

  /// GPT-2 small (124 M): d 768, 12 layers, 12 heads, 1024 positions, V 50257.
  static gpt2_config small() { return {}; }

  index_t inner() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
  index_t head_width() const { return n_embd / n_head; }
  treelora::lora_targets lora() const {
    return {lora_targets, {.rank = lora_rank, .alpha = lora_alpha, .dropout = lora_dropout, .seed = seed}};
  }
  void validate() const {
    const auto bad = [](auto&&... parts) { throw_invalid_argument("gpt2_config", concat(parts...)); };
    if (vocab_size <= 0 || n_positions <= 0 || n_embd <= 0 || n_layer < 0 || n_inner < 0)
      bad("vocab_size ", vocab_size, ", n_positions ", n_positions, ", n_embd ", n_embd, " must be positive; n_layer ",
          n_layer, " and n_inner ", n_inner, " >= 0");
    if (n_head <= 0 || n_embd % n_head != 0) bad("n_embd ", n_embd, " is not divisible into ", n_head, " heads");
    if (!(layer_norm_epsilon > 0)) bad("layer_norm_epsilon ", layer_norm_epsilon, " must be > 0");
    if (!(initializer_range >= 0)) bad("initializer_range ", initializer_range, " must be >= 0");
    for (index_t id : eos_token_ids)
      if (id < 0 || id >= vocab_size) bad("eos_token_id ", id, " is outside the vocabulary [0, ", vocab_size, ")");
    if (bos_token_id >= vocab_size || pad_token_id >= vocab_size)
      bad("bos_token_id ", bos_token_id, " / pad_token_id ", pad_token_id, " outside the vocabulary [0, ", vocab_size, ")");
    lora().validate("gpt2_config", modules);
  }
};

/// One GPT-2 block: ln_1, attn.c_attn (fused q, k, v), causal attention, attn.c_proj, ln_2, mlp.c_fc, gelu_new,
/// mlp.c_proj.
template <Backend B, class F = standard_lora>
class gpt2_layer {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using projection = optional_lora_linear<B, F>;
  using targets = basic_lora_targets<typename F::config>;

  gpt2_layer(B& backend, const gpt2_config& c, std::uint64_t seed, const targets& lora)
      : backend_(&backend),
        width_(c.n_embd),
        ln_1_(backend, c.n_embd, c.layer_norm_epsilon),
        c_attn_(backend, c.n_embd, 3 * c.n_embd, random::mix64(seed + 1), lora.for_module("c_attn", seed * 8 + 1)),
        attention_(backend, c.n_head, c.n_head, c.head_width()),
        attn_c_proj_(backend, c.n_embd, c.n_embd, random::mix64(seed + 2), lora.for_module("c_proj", seed * 8 + 2)),
        ln_2_(backend, c.n_embd, c.layer_norm_epsilon),
        c_fc_(backend, c.n_embd, c.inner(), random::mix64(seed + 3), lora.for_module("c_fc", seed * 8 + 3)),
        activation_(backend),
        mlp_c_proj_(backend, c.inner(), c.n_embd, random::mix64(seed + 4), lora.for_module("c_proj", seed * 8 + 4)) {
    // transformers' GPT-2 initialisation: N(0, initializer_range), the residual projections scaled by 1/sqrt(2 n_layer)
    std::uint64_t stream = random::mix64(seed + 11);
    const double residual_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(std::max<index_t>(c.n_layer, 1)));
    for (auto& [name, p] : projections()) {
      const double stddev = c.initializer_range * (name.ends_with("c_proj") ? residual_scale : 1.0);
      fill_normal<B>(p->weight(), 0, static_cast<scalar_type>(stddev), stream++);
      p->base().bias().fill(scalar_type(0));
    }
  }

  std::array<std::pair<std::string_view, projection*>, 4> projections() {
    return {{{"attn.c_attn", &c_attn_}, {"attn.c_proj", &attn_c_proj_}, {"mlp.c_fc", &c_fc_}, {"mlp.c_proj", &mlp_c_proj_}}};
  }
  bool has_adapter() {
    for (auto& [name, p] : projections())
      if (p->has_adapter()) return true;
    return false;
  }
  void set_trainable(bool trainable) {
    for (auto& [name, p] : projections()) p->set_trainable(trainable);
    ln_1_.set_trainable(trainable);
    ln_2_.set_trainable(trainable);
  }
  void set_training(bool training) {
    for (auto& [name, p] : projections()) p->set_training(training);
  }
  void set_cache(index_t batch, index_t capacity) { attention_.set_cache(batch, capacity); }

  const_tensor_view<B> forward(const_tensor_view<B> x, index_t batch, index_t tokens, const_tensor_view<B> mask) {
    input_ = x;
    const index_t d = width_;
    const_tensor_view<B> qkv = c_attn_.forward(ln_1_.forward(x));  // [batch, tokens, 3d]: q | k | v
    const_tensor_view<B> context =
        attention_.forward({qkv.data(), 3 * d}, {qkv.data() + d, 3 * d}, {qkv.data() + 2 * d, 3 * d}, batch, tokens, mask);
    residual_.resize(*backend_, x.shape());
    copy<B>(x, residual_);
    axpy<B>(scalar_type(1), attn_c_proj_.forward(context), residual_);  // h = x + attn
    const_tensor_view<B> m = mlp_c_proj_.forward(activation_.forward(c_fc_.forward(ln_2_.forward(residual_))));
    output_.resize(*backend_, x.shape());
    copy<B>(residual_, output_);
    axpy<B>(scalar_type(1), m, output_);  // y = h + mlp
    return output_;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (input_.data() == nullptr) throw_invalid_argument("gpt2_layer::backward", "called before forward");
    const index_t d = width_;
    residual_gradient_.resize(*backend_, dy.shape());
    copy<B>(ln_2_.backward(c_fc_.backward(activation_.backward(mlp_c_proj_.backward(dy)))), residual_gradient_);
    axpy<B>(scalar_type(1), dy, residual_gradient_);  // dh
    const_tensor_view<B> dcontext = attn_c_proj_.backward(residual_gradient_);
    qkv_gradient_.resize(*backend_, input_.shape().with_last(3 * d));
    attention_.backward(dcontext, {qkv_gradient_.data(), 3 * d}, {qkv_gradient_.data() + d, 3 * d},
                        {qkv_gradient_.data() + 2 * d, 3 * d});
    input_gradient_.resize(*backend_, input_.shape());
    copy<B>(ln_1_.backward(c_attn_.backward(qkv_gradient_)), input_gradient_);
    axpy<B>(scalar_type(1), residual_gradient_, input_gradient_);  // dx = dh + d attention path
    return input_gradient_;
  }

  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    ln_1_.collect_parameters(out, join_name(prefix, "ln_1"));
    c_attn_.collect_parameters(out, join_name(prefix, "attn.c_attn"));
    attn_c_proj_.collect_parameters(out, join_name(prefix, "attn.c_proj"));
    ln_2_.collect_parameters(out, join_name(prefix, "ln_2"));
    c_fc_.collect_parameters(out, join_name(prefix, "mlp.c_fc"));
    mlp_c_proj_.collect_parameters(out, join_name(prefix, "mlp.c_proj"));
  }

 private:
  B* backend_;
  index_t width_;
  layer_norm<B> ln_1_;
  projection c_attn_;
  causal_attention<B> attention_;
  projection attn_c_proj_;
  layer_norm<B> ln_2_;
  projection c_fc_;
  gelu_tanh<B> activation_;
  projection mlp_c_proj_;
  const_tensor_view<B> input_;
  tensor<B> residual_, output_, residual_gradient_, qkv_gradient_, input_gradient_;
};

template <Backend B, class F = standard_lora>
class gpt2 {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using factorization = F;
  using layer_type = gpt2_layer<B, F>;
  using adapter_type = typename F::template adapter<B>;
  using adapter_config = typename F::config;

  gpt2(B& backend, const gpt2_config& config) : gpt2(backend, config, model_detail::default_adapter_config<adapter_config>(config)) {}

  gpt2(B& backend, const gpt2_config& config, const adapter_config& adapter)
      : backend_(&backend),
        config_((config.validate(), config)),
        wte_(backend, config.vocab_size, config.n_embd, random::mix64(config.seed + 201), config.initializer_range),
        wpe_(backend, config.n_positions, config.n_embd, random::mix64(config.seed + 202), config.initializer_range),
        ln_f_(backend, config.n_embd, config.layer_norm_epsilon),
        head_(backend, &wte_, config.vocab_size, config.n_embd, 0, 0) {
    basic_lora_targets<adapter_config> lora{config.lora_targets, adapter};
    lora.lora.seed = config.seed;
    layers_.reserve(static_cast<std::size_t>(config.n_layer));
    for (index_t i = 0; i < config.n_layer; ++i)
      layers_.emplace_back(backend, config, random::mix64(config.seed + 1000 + static_cast<std::uint64_t>(i)), lora);
    set_backbone_trainable(config.lora_targets.empty());
  }
  // The head points at wte: a moved model re-points it at its own.
  gpt2(gpt2&& o) noexcept
      : backend_(o.backend_),
        config_(std::move(o.config_)),
        wte_(std::move(o.wte_)),
        wpe_(std::move(o.wpe_)),
        layers_(std::move(o.layers_)),
        ln_f_(std::move(o.ln_f_)),
        head_(std::move(o.head_)),
        backbone_trainable_(o.backbone_trainable_) {
    head_.retie(&wte_);
  }
  gpt2(const gpt2&) = delete;
  gpt2& operator=(const gpt2&) = delete;
  gpt2& operator=(gpt2&&) = delete;

  B& backend() { return *backend_; }
  const gpt2_config& config() const { return config_; }
  index_t vocabulary() const { return config_.vocab_size; }
  index_t pad_token_id() const { return config_.pad_token_id; }
  std::vector<index_t> eos_token_ids() const { return config_.eos_token_ids; }
  embedding<B>& wte() { return wte_; }
  embedding<B>& wpe() { return wpe_; }
  std::vector<layer_type>& layers() { return layers_; }
  layer_norm<B>& ln_f() { return ln_f_; }
  bool backbone_trainable() const { return backbone_trainable_; }

  void set_backbone_trainable(bool trainable) {
    backbone_trainable_ = trainable;
    wte_.set_trainable(trainable);
    wpe_.set_trainable(trainable);
    for (auto& layer : layers_) layer.set_trainable(trainable);
    ln_f_.set_trainable(trainable);
  }
  void set_training(bool training) {
    for (auto& layer : layers_) layer.set_training(training);
  }
  void set_cache(index_t batch, index_t capacity) {
    for (auto& layer : layers_) layer.set_cache(batch, capacity);
  }

  /// As llama::forward_tokens (last_only: each sequence's last logits, [batch, vocabulary]).
  const_tensor_view<B> forward_tokens(std::span<const index_t> ids, const token_layout& layout, bool last_only = false) {
    if (static_cast<index_t>(ids.size()) != layout.batch * layout.tokens || layout.left_padding.size() != std::size_t(layout.batch))
      throw_invalid_argument("gpt2::forward_tokens", concat(ids.size(), " ids do not fit ", layout.batch, " sequences of ",
                                                            layout.tokens, " tokens"));
    if (layout.keys() > config_.n_positions)
      throw_invalid_argument("gpt2::forward_tokens", concat(layout.keys(), " tokens exceed n_positions ", config_.n_positions));
    const index_t d = config_.n_embd;
    batch_ = layout.batch, tokens_ = layout.tokens;
    embedded_.resize(*backend_, shape{batch_, tokens_, d});
    copy<B>(wte_.forward(ids), embedded_);
    const auto positions = layout.positions();
    axpy<B>(scalar_type(1), wpe_.forward(positions), embedded_);  // x = wte[ids] + wpe[positions]
    causal_attention_mask<B>(layout, mask_, *backend_);
    const_tensor_view<B> h = embedded_;
    for (auto& layer : layers_) h = layer.forward(h, batch_, tokens_, mask_);
    last_only_ = last_only;
    return head_.forward(ln_f_.forward(last_only ? last_rows(h, batch_, tokens_, last_, *backend_) : h.reshaped(shape{batch_ * tokens_, d})));
  }

  /// The Layer entry point: token ids stored as scalars [batch, tokens]; leading pad_token_id tokens are padding.
  const_tensor_view<B> forward(const_tensor_view<B> ids) {
    const auto host = ids_from_scalars<B>(ids, config_.vocab_size, "gpt2::forward");
    return forward_tokens(host, left_padded_layout(host, ids.shape()[0], ids.shape()[1], config_.pad_token_id));
  }

  /// d logits -> an empty view (ids have no gradient); parameter gradients accumulate. With the backbone frozen,
  /// backward stops below the lowest layer with an adapter.
  const_tensor_view<B> backward(const_tensor_view<B> logits_gradient) {
    if (batch_ == 0 || last_only_) throw_invalid_argument("gpt2::backward", "called before a (whole-sequence) forward");
    const index_t d = config_.n_embd;
    const_tensor_view<B> g = ln_f_.backward(head_.backward(logits_gradient)).reshaped(shape{batch_, tokens_, d});
    std::size_t lowest = 0;  // a frozen backbone below the lowest adapter needs no gradient
    while (!backbone_trainable_ && lowest < layers_.size() && !layers_[lowest].has_adapter()) ++lowest;
    for (std::size_t i = layers_.size(); i-- > lowest;) g = layers_[i].backward(g);
    if (backbone_trainable_) {
      wte_.backward(g.reshaped(shape{batch_ * tokens_, d}));
      wpe_.backward(g.reshaped(shape{batch_ * tokens_, d}));
    }
    return {};
  }

  /// GPT2LMHeadModel's names: "transformer.wte.weight", "transformer.wpe.weight", "transformer.h.<i>.<...>",
  /// "transformer.ln_f.*" (lm_head is tied to wte and has no name of its own).
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    wte_.collect_parameters(out, join_name(prefix, "transformer.wte"));
    wpe_.collect_parameters(out, join_name(prefix, "transformer.wpe"));
    for (std::size_t i = 0; i < layers_.size(); ++i) layers_[i].collect_parameters(out, join_name(prefix, concat("transformer.h.", i)));
    ln_f_.collect_parameters(out, join_name(prefix, "transformer.ln_f"));
  }

  std::vector<adapter_view<B>> adapters() { return model_detail::adapter_views<B>(layers_, "transformer.h."); }
  std::vector<adapter_type*> factorized_adapters() { return model_detail::typed_adapters<adapter_type>(layers_); }

  std::uint64_t backbone_fingerprint() { return parameters_fingerprint<B>(backbone_parameters(), "treelora gpt2 backbone"); }

  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("architecture", std::string("gpt2"));
    ar.expect("vocab_size", config_.vocab_size), ar.expect("n_positions", config_.n_positions), ar.expect("n_embd", config_.n_embd);
    ar.expect("n_layer", config_.n_layer), ar.expect("n_head", config_.n_head), ar.expect("n_inner", config_.inner());
    ar.expect("lora_targets", config_.lora_targets), ar.expect("backbone_trainable", backbone_trainable_);
    if (!backbone_trainable_) ar.expect("backbone_fingerprint", backbone_fingerprint());
    else
      for (auto& p : backbone_parameters()) ar.tensor_of_shape(p.name, *p.value, *backend_, p.value->shape());
    model_detail::checkpoint_adapters(ar, layers_, "transformer.h.");
  }

  /// Every parameter but the adapters'.
  parameter_list<B> backbone_parameters() { return model_detail::without_adapters<B>(parameters(*this)); }

 private:
  B* backend_;
  gpt2_config config_;
  embedding<B> wte_, wpe_;
  std::vector<layer_type> layers_;
  layer_norm<B> ln_f_;
  lm_head<B> head_;
  bool backbone_trainable_ = true;
  index_t batch_ = 0, tokens_ = 0;
  bool last_only_ = false;
  tensor<B> embedded_, mask_, last_;
};

}  // namespace treelora
