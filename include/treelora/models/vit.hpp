// treelora/models/vit.hpp: the reference Vision Transformer (Dosovitskiy et al. 2021), small enough for a CPU.
//   patches  = patchify(image)                          [batch * patches, channels * patch^2]  (on the backend)
//   tokens   = [cls; patches W_pe^T + b_pe] + position    [batch, 1 + patches, width]
//   tokens   = block_depth-1( ... block_0(tokens))       pre-LN blocks: x + attn(LN(x)), x + mlp(LN(x))
//   logits   = head(LN(tokens[:, 0]))                     [batch, classes]  (the CLS token)
// A patch vector is ordered (channel, row in patch, column in patch), so W_pe [width, C p p] is PyTorch's
// Conv2d(C, width, p, stride p) weight flattened. Patchify is a gather of p-wide row segments on the backend
// (`gather_rows`); its backward is the matching scatter. The head is shared by all classes; the engine restricts it
// to one task's classes through the loss (cross_entropy_loss's allowed_classes).
// The adapters follow a Factorization F (standard_lora by default; vit<B, inflora>, vit<B, olora>, vit<B, dual_lora>
// carry the continual-learning factorisations with the same block code). Each adapter sees its projection's input
// as [batch, tokens, width], so a per-sample adapter finds every sample's CLS row itself (no hook, no cost for LoRA).
// With LoRA targets the base weights are frozen and only the adapters and the head train; set_backbone_trainable
// makes the whole backbone train (pre-training), reset_head swaps the head (a 4-way rotation head, then the task head).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/core/hash.hpp"
#include "treelora/layers/cross_entropy.hpp"
#include "treelora/models/transformer/transformer_block.hpp"
#include "treelora/models/model.hpp"

namespace treelora {

struct vit_config {
  index_t image_height = 28;
  index_t image_width = 28;
  index_t channels = 1;
  index_t patch_size = 7;
  index_t width = 64;  ///< the token width (embedding dimension)
  index_t depth = 4;   ///< number of transformer blocks
  index_t heads = 4;
  double mlp_ratio = 4.0;  ///< MLP hidden width = mlp_ratio * width
  index_t classes = 10;
  std::vector<std::string> lora_targets = {"q", "v"};  ///< any of q, k, v, o, fc1, fc2; empty: no adapters
  index_t lora_rank = 8;
  double lora_alpha = 16.0;
  double lora_dropout = 0.0;
  double layer_norm_epsilon = 1e-6;
  std::uint64_t seed = 0;  ///< initialisation of every weight and adapter

  index_t patches() const { return (image_height / patch_size) * (image_width / patch_size); }
  index_t tokens() const { return patches() + 1; }
  index_t patch_features() const { return channels * patch_size * patch_size; }
  index_t image_features() const { return channels * image_height * image_width; }
  index_t mlp_hidden() const { return static_cast<index_t>(mlp_ratio * static_cast<double>(width) + 0.5); }
  treelora::lora_targets lora() const {
    return {lora_targets, {.rank = lora_rank, .alpha = lora_alpha, .dropout = lora_dropout, .seed = seed}};
  }

  /// Throws std::invalid_argument naming the first bad field.
  void validate() const {
    if (image_height <= 0 || image_width <= 0 || channels <= 0 || patch_size <= 0)
      throw_invalid_argument("vit_config", concat("image ", channels, " x ", image_height, " x ", image_width,
                                                  " and patch size ", patch_size, " must be positive"));
    if (image_height % patch_size != 0 || image_width % patch_size != 0)
      throw_invalid_argument("vit_config", concat("image ", image_height, " x ", image_width,
                                                  " is not divisible into patches of ", patch_size));
    if (width <= 0 || depth < 0 || heads <= 0 || width % heads != 0)
      throw_invalid_argument("vit_config", concat("width ", width, " must be positive and divisible into ", heads,
                                                  " heads; depth ", depth, " must be >= 0"));
    if (!(mlp_ratio > 0) || mlp_hidden() <= 0) throw_invalid_argument("vit_config", concat("mlp_ratio ", mlp_ratio, " must be positive"));
    if (classes <= 0) throw_invalid_argument("vit_config", concat("classes ", classes, " must be positive"));
    lora().validate("vit_config");
  }
};

/// A parameter copied to the host as float: what backbone checkpoints hold.
struct host_parameter {
  std::string name;
  shape value_shape;
  std::vector<float> values;
};

template <Backend B, class F = standard_lora>
class vit {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using factorization = F;
  using block_type = transformer_block<B, F>;
  using adapter_type = typename F::template adapter<B>;
  using adapter_config = typename F::config;

  /// Standard LoRA reads rank, alpha and dropout from `config`; another factorisation starts from its default
  /// config with `rank = lora_rank` (when it has a rank). The adapter seed is always config.seed.
  vit(B& backend, const vit_config& config) : vit(backend, config, model_detail::default_adapter_config<adapter_config>(config)) {}

  /// The adapters configured by `adapter` (its seed is replaced by config.seed, then derived per module).
  vit(B& backend, const vit_config& config, const adapter_config& adapter)
      : backend_(&backend),
        config_((config.validate(), config)),
        patch_embed_(backend, config.patch_features(), config.width, true, random::mix64(config.seed + 101)),
        norm_(backend, config.width, config.layer_norm_epsilon),
        head_(backend, config.width, config.classes, true, random::mix64(config.seed + 102)) {
    cls_token_ = tensor<B>(backend, shape{config.width});
    position_embedding_ = tensor<B>(backend, shape{config.tokens(), config.width});
    cls_gradient_ = tensor<B>(backend, cls_token_.shape());
    position_gradient_ = tensor<B>(backend, position_embedding_.shape());
    fill_normal<B>(cls_token_, 0, scalar_type(0.02), random::mix64(config.seed + 103));  // timm: N(0, 0.02)
    fill_normal<B>(position_embedding_, 0, scalar_type(0.02), random::mix64(config.seed + 104));
    basic_lora_targets<adapter_config> lora{config.lora_targets, adapter};
    lora.lora.seed = config.seed;
    blocks_.reserve(static_cast<std::size_t>(config.depth));
    for (index_t i = 0; i < config.depth; ++i)
      blocks_.emplace_back(backend,
                           transformer_block_options{.width = config.width,
                                                     .heads = config.heads,
                                                     .mlp_hidden = config.mlp_hidden(),
                                                     .layer_norm_epsilon = config.layer_norm_epsilon,
                                                     .seed = random::mix64(config.seed + 1000 + static_cast<std::uint64_t>(i))},
                           lora);
    set_backbone_trainable(config.lora_targets.empty());
  }

  B& backend() { return *backend_; }
  const vit_config& config() const { return config_; }
  index_t classes() const { return head_.out_features(); }
  linear<B>& patch_embedding() { return patch_embed_; }
  tensor<B>& cls_token() { return cls_token_; }
  tensor<B>& position_embedding() { return position_embedding_; }
  std::vector<block_type>& blocks() { return blocks_; }
  layer_norm<B>& final_norm() { return norm_; }
  linear<B>& head() { return head_; }
  bool backbone_trainable() const { return backbone_trainable_; }
  /// The input of block 0 from the last forward, [batch, tokens, width] (CLS first, then patches row by row).
  const_tensor_view<B> embedded_tokens() const { return tokens_; }

  /// Whether the backbone (everything but the head and the adapters) trains. On by default only without LoRA.
  void set_backbone_trainable(bool trainable) {
    backbone_trainable_ = trainable;
    patch_embed_.set_trainable(trainable);
    for (auto& block : blocks_) block.set_trainable(trainable);
    norm_.set_trainable(trainable);
  }

  /// A fresh head with `classes` outputs (PyTorch's default initialisation from `seed`). Parameter pointers taken
  /// before (an optimiser's list) refer to the old head afterwards: collect the parameters again.
  void reset_head(index_t classes, std::uint64_t seed) { head_ = linear<B>(*backend_, config_.width, classes, true, seed); }

  /// Whether backward must return d images (on by default: the finite-difference tests read it). Off, and with the
  /// backbone frozen, backward stops below the lowest block that needs a gradient (block_type::needs_gradient: the
  /// adapters a sparse rule left on, or adapters only on upper layers) and returns an empty view: the frozen layers
  /// below are not differentiated at all. The runner turns it off; the gradients it computes are the same.
  void set_input_gradient_needed(bool needed) { input_gradient_needed_ = needed; }
  bool input_gradient_needed() const { return input_gradient_needed_; }

  /// Activation checkpointing per block (transformer_block.hpp): in training, each block keeps only its input and
  /// output and recomputes its forward during backward, trading one more forward of the blocks for their activations'
  /// memory (docs/models.md). Off by default; the gradients are the same, bit for bit.
  void set_activation_checkpointing(bool on) {
    for (auto& block : blocks_) block.set_recompute(on);
  }
  bool activation_checkpointing() const { return !blocks_.empty() && blocks_.front().recompute(); }

  /// Training mode enables the adapters' dropout.
  void set_training(bool training) {
    for (auto& block : blocks_) block.set_training(training);
  }

  /// images: [batch, C * H * W], [batch, H, W] (one channel) or [batch, C, H, W], channel-major row-major pixels.
  /// Returns the logits [batch, classes].
  const_tensor_view<B> forward(const_tensor_view<B> images) {
    const index_t batch = images.shape().rank() >= 2 ? images.shape()[0] : 0;
    if (batch <= 0 || images.numel() != batch * config_.image_features())
      throw_invalid_argument("vit::forward", concat("input ", images.shape().to_string(), " is not a batch of ",
                                                    config_.channels, " x ", config_.image_height, " x ",
                                                    config_.image_width, " images"));
    input_shape_ = images.shape();
    prepare_indices(batch);
    const index_t p = config_.patch_size, width = config_.width, tokens = config_.tokens();
    // Patchify: rows of p pixels, gathered into patch order.
    patches_.resize(*backend_, shape{batch * config_.patches(), config_.patch_features()});
    gather_rows<B>(images.reshaped(shape{images.numel() / p, p}), patch_segments_, patches_.view().reshaped(shape{patches_.numel() / p, p}));
    const_tensor_view<B> embedded = patch_embed_.forward(patches_);  // [batch * patches, width]
    // tokens[b, 0] = cls + position[0];  tokens[b, 1 + n] = embedded[b, n] + position[1 + n]
    tokens_.resize(*backend_, shape{batch, tokens, width});
    tokens_.fill(scalar_type(0));
    scatter_add_rows<B>(embedded, patch_rows_, tokens_.view().reshaped(shape{batch * tokens, width}));
    token_bias_.resize(*backend_, shape{tokens * width});
    copy<B>(position_embedding_, token_bias_);
    axpy<B>(scalar_type(1), cls_token_, token_bias_.view().reshaped(shape{tokens, width}).row_range(0, 1));
    add_row_vector<B>(token_bias_, tokens_.view().reshaped(shape{batch, tokens * width}));
    const_tensor_view<B> h = tokens_;
    for (auto& block : blocks_) h = block.forward(h);
    cls_rows_.resize(*backend_, shape{batch, width});
    gather_rows<B>(h.reshaped(shape{batch * tokens, width}), cls_indices_, cls_rows_);
    return head_.forward(norm_.forward(cls_rows_));
  }

  /// d logits -> d images (same shape as the input). Parameter gradients accumulate.
  const_tensor_view<B> backward(const_tensor_view<B> logits_gradient) {
    if (patch_rows_.empty()) throw_invalid_argument("vit::backward", "called before forward");
    const index_t batch = static_cast<index_t>(cls_indices_.size()), width = config_.width, tokens = config_.tokens();
    const_tensor_view<B> cls_gradient = norm_.backward(head_.backward(logits_gradient));
    token_gradient_.resize(*backend_, shape{batch, tokens, width});
    token_gradient_.fill(scalar_type(0));
    scatter_add_rows<B>(cls_gradient, cls_indices_, token_gradient_.view().reshaped(shape{batch * tokens, width}));
    const_tensor_view<B> g = token_gradient_;
    const bool stop_early = !input_gradient_needed_ && !backbone_trainable_;
    std::size_t lowest = 0;  // the lowest block backward must reach
    if (stop_early) {
      lowest = blocks_.size();
      for (std::size_t i = 0; i < blocks_.size(); ++i)
        if (blocks_[i].needs_gradient()) {
          lowest = i;
          break;
        }
    }
    for (std::size_t i = blocks_.size(); i-- > lowest;) g = blocks_[i].backward(g);
    if (stop_early) return {};  // nothing below needs a gradient, and the caller does not read d images
    if (backbone_trainable_) {
      // d position += sum_b dtokens[b];  d cls += sum_b dtokens[b, 0]
      token_bias_gradient_.resize(*backend_, shape{tokens * width});
      sum_rows<B>(g.reshaped(shape{batch, tokens * width}), token_bias_gradient_);
      axpy<B>(scalar_type(1), token_bias_gradient_, position_gradient_);
      axpy<B>(scalar_type(1), token_bias_gradient_.view().reshaped(shape{tokens, width}).row_range(0, 1), cls_gradient_);
    }
    embedded_gradient_.resize(*backend_, shape{batch * config_.patches(), width});
    gather_rows<B>(g.reshaped(shape{batch * tokens, width}), patch_rows_, embedded_gradient_);
    const_tensor_view<B> patch_gradient = patch_embed_.backward(embedded_gradient_);
    const index_t p = config_.patch_size;
    input_gradient_.resize(*backend_, input_shape_);
    input_gradient_.fill(scalar_type(0));
    scatter_add_rows<B>(patch_gradient.reshaped(shape{patch_gradient.numel() / p, p}), patch_segments_,
                        input_gradient_.view().reshaped(shape{input_gradient_.numel() / p, p}));
    return input_gradient_;
  }

  /// "patch_embed.weight", "patch_embed.bias", "cls_token", "position_embedding", "blocks.<i>.<...>",
  /// "norm.weight", "norm.bias", "head.weight", "head.bias".
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    patch_embed_.collect_parameters(out, join_name(prefix, "patch_embed"));
    out.push_back({join_name(prefix, "cls_token"), &cls_token_, &cls_gradient_, backbone_trainable_});
    out.push_back({join_name(prefix, "position_embedding"), &position_embedding_, &position_gradient_, backbone_trainable_});
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      blocks_[i].collect_parameters(out, join_name(prefix, concat("blocks.", i)));
    norm_.collect_parameters(out, join_name(prefix, "norm"));
    head_.collect_parameters(out, join_name(prefix, "head"));
  }

  /// The LoRA adapters in model order: blocks.0.attn.q, blocks.0.attn.v, blocks.1.attn.q, ... (within a block the
  /// order is q, k, v, o, fc1, fc2, keeping only the targets).
  std::vector<adapter_view<B>> adapters() { return model_detail::adapter_views<B>(blocks_, "blocks."); }

  /// The typed adapters in the same model order as adapters(): what a strategy calls for task-boundary operations
  /// (InfLoRA's fixed A, O-LoRA's new branch, DualLoRA's bases).
  std::vector<adapter_type*> factorized_adapters() { return model_detail::typed_adapters<adapter_type>(blocks_); }

  /// FNV-1a-64 of the backbone's parameters (names, shapes and values): which pre-trained weights the model holds.
  std::uint64_t backbone_fingerprint() {
    std::uint64_t h = fnv1a64("treelora vit backbone parameters", 32);
    for (auto& p : backbone_parameters()) {
      h = fnv1a64(p.name.data(), p.name.size(), h);
      const std::string dims = p.value->shape().to_string();
      h = fnv1a64(dims.data(), dims.size(), h);
      if constexpr (B::is_host_accessible) {
        h = fnv1a64(p.value->data(), std::size_t(p.value->numel()) * sizeof(scalar_type), h);
      } else {
        const auto host = p.value->to_host();
        h = fnv1a64(host.data(), host.size() * sizeof(scalar_type), h);
      }
    }
    return h;
  }

  /// Checkpoints (io/checkpoint.hpp): the architecture is compared, and a frozen backbone by its fingerprint (a run
  /// resumes only on the pre-trained weights it started from); what trains is saved: the head, every adapter's state
  /// (per-task branches included), and the whole backbone when it trains.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("image_height", config_.image_height), ar.expect("image_width", config_.image_width);
    ar.expect("channels", config_.channels), ar.expect("patch_size", config_.patch_size), ar.expect("width", config_.width);
    ar.expect("depth", config_.depth), ar.expect("heads", config_.heads), ar.expect("mlp_ratio", config_.mlp_ratio);
    ar.expect("lora_targets", config_.lora_targets), ar.expect("layer_norm_epsilon", config_.layer_norm_epsilon);
    ar.expect("classes", head_.out_features()), ar.expect("backbone_trainable", backbone_trainable_);
    if (!backbone_trainable_) ar.expect("backbone_fingerprint", backbone_fingerprint());
    parameter_list<B> all;
    collect_parameters(all, "");
    for (auto& p : all) {
      const bool head = p.name.starts_with("head."), adapter = p.name.find(".lora_") != std::string::npos;
      if (head || (backbone_trainable_ && !adapter)) ar.tensor_of_shape(p.name, *p.value, *backend_, p.value->shape());
    }
    model_detail::checkpoint_adapters(ar, blocks_, "blocks.");
  }

  /// The backbone's parameters (everything but the head and the adapters) copied to the host as float.
  std::vector<host_parameter> backbone_state() {
    std::vector<host_parameter> out;
    for (auto& p : backbone_parameters()) {
      const auto values = p.value->to_host();
      out.push_back({p.name, p.value->shape(), std::vector<float>(values.begin(), values.end())});
    }
    return out;
  }

  /// Loads backbone parameters saved by backbone_state from a model of the same architecture. Every backbone
  /// parameter must be present with its shape; a missing, extra or misshapen one throws std::invalid_argument.
  void load_backbone_state(const std::vector<host_parameter>& state) {
    auto params = backbone_parameters();
    if (params.size() != state.size())
      throw_invalid_argument("vit::load_backbone_state",
                             concat(state.size(), " parameters given, the backbone has ", params.size()));
    std::vector<scalar_type> staging;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& s = state[i];
      if (s.name != params[i].name || !(s.value_shape == params[i].value->shape()) ||
          static_cast<index_t>(s.values.size()) != s.value_shape.numel())
        throw_invalid_argument("vit::load_backbone_state",
                               concat("parameter ", i, " is ", s.name, " ", s.value_shape.to_string(), ", expected ",
                                      params[i].name, " ", params[i].value->shape().to_string()));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      staging.assign(state[i].values.begin(), state[i].values.end());
      backend_->copy_from_host(staging.data(), params[i].value->data(), params[i].value->numel());
    }
  }

 private:
  parameter_list<B> backbone_parameters() {
    parameter_list<B> all, out;
    collect_parameters(all, "");
    for (auto& p : all)
      if (!p.name.starts_with("head.") && p.name.find(".lora_") == std::string::npos) out.push_back(p);
    return out;
  }

  /// Index lists of the gathers, rebuilt only when the batch size changes (no allocation once at the largest).
  void prepare_indices(index_t batch) {
    if (static_cast<index_t>(cls_indices_.size()) == batch) return;
    const index_t p = config_.patch_size, channels = config_.channels, height = config_.image_height;
    const index_t columns = config_.image_width / p, rows = config_.image_height / p, tokens = config_.tokens();
    patch_segments_.clear();
    patch_rows_.clear();
    cls_indices_.clear();
    for (index_t b = 0; b < batch; ++b) {
      cls_indices_.push_back(b * tokens);
      for (index_t pr = 0; pr < rows; ++pr)
        for (index_t pc = 0; pc < columns; ++pc) {
          patch_rows_.push_back(b * tokens + 1 + pr * columns + pc);
          // patch (pr, pc) row (c, i) is image row segment (b, c, pr p + i, pc)
          for (index_t c = 0; c < channels; ++c)
            for (index_t i = 0; i < p; ++i) patch_segments_.push_back(((b * channels + c) * height + pr * p + i) * columns + pc);
        }
    }
  }

  B* backend_;
  vit_config config_;
  linear<B> patch_embed_;
  tensor<B> cls_token_, position_embedding_, cls_gradient_, position_gradient_;
  std::vector<block_type> blocks_;
  layer_norm<B> norm_;
  linear<B> head_;
  bool backbone_trainable_ = true;
  bool input_gradient_needed_ = true;
  std::vector<index_t> patch_segments_, patch_rows_, cls_indices_;
  shape input_shape_;
  tensor<B> patches_, tokens_, token_bias_, cls_rows_;
  tensor<B> token_gradient_, token_bias_gradient_, embedded_gradient_, input_gradient_;
};

#if defined(TREELORA_COMPILED)
// The float CPU ViT and its parts are compiled once in treelora::compiled (src/models.cpp), for each factorisation
// the library ships: the standard LoRA ones are declared here, the others next to their strategies
// (strategy/inflora.hpp, strategy/olora.hpp, strategy/duallora.hpp). docs/build_time.md.
extern template class optional_lora_linear<cpu_backend<float>, standard_lora>;
extern template class multi_head_attention<cpu_backend<float>, standard_lora>;
extern template class mlp_block<cpu_backend<float>, standard_lora>;
extern template class transformer_block<cpu_backend<float>, standard_lora>;
extern template class vit<cpu_backend<float>, standard_lora>;
#endif

static_assert(check_model<vit<cpu_backend<float>>>());

}  // namespace treelora
