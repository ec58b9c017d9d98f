// treelora/models/transformer/transformer_block.hpp: a pre-LN transformer encoder block (as in ViT, Dosovitskiy et al. 2021):
//   h = x + attn(LN1(x)),   y = h + mlp(LN2(h))
// Backward follows the two residual branches:
//   dh = dy + LN2'(mlp'(dy)),   dx = dh + LN1'(attn'(dh)).
// Activation checkpointing (set_recompute): in training, forward keeps only its input (a view of the block below's
// output) and its output, and frees everything else; backward first recomputes the forward (the adapters' dropout
// replayed from the positions it started at: the same masks, so the same gradients, bit for bit), then frees again.
#pragma once

#include <array>
#include <string_view>
#include <utility>

#include "treelora/models/transformer/attention.hpp"
#include "treelora/layers/layer_norm.hpp"
#include "treelora/models/transformer/mlp_block.hpp"

namespace treelora {

struct transformer_block_options {
  index_t width = 64;
  index_t heads = 4;
  index_t mlp_hidden = 256;
  double layer_norm_epsilon = 1e-6;  ///< timm's ViT uses 1e-6
  std::uint64_t seed = 0;            ///< initialisation of this block's projections and adapters
};

template <Backend B, class F = standard_lora>
class transformer_block {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using projection = optional_lora_linear<B, F>;
  using targets = basic_lora_targets<typename F::config>;

  transformer_block(B& backend, const transformer_block_options& options, const targets& lora = {{}, {}})
      : backend_(&backend),
        norm1_(backend, options.width, options.layer_norm_epsilon),
        attention_(backend, options.width, options.heads, options.seed, lora),
        norm2_(backend, options.width, options.layer_norm_epsilon),
        mlp_(backend, options.width, options.mlp_hidden, options.seed, lora) {
    lora.validate("transformer_block");
  }

  layer_norm<B>& norm1() { return norm1_; }
  layer_norm<B>& norm2() { return norm2_; }
  multi_head_attention<B, F>& attention() { return attention_; }
  mlp_block<B, F>& mlp() { return mlp_; }

  /// The block's projections in model order: q, k, v, o, fc1, fc2 (with their names).
  std::array<std::pair<std::string_view, projection*>, 6> projections() {
    return {{{"attn.q", &attention_.q()}, {"attn.k", &attention_.k()}, {"attn.v", &attention_.v()},
             {"attn.o", &attention_.o()}, {"mlp.fc1", &mlp_.fc1()}, {"mlp.fc2", &mlp_.fc2()}}};
  }

  /// Whether backward through this block yields any parameter gradient: a trainable LayerNorm or base projection, or
  /// an adapter whose gradients are enabled (a sparse rule or the bandit may switch an adapter's off).
  bool needs_gradient() {
    if (norm1_.trainable() || norm2_.trainable()) return true;
    for (auto& [name, p] : projections())
      if (p->base().trainable() || (p->has_adapter() && p->adapter().gradients_enabled())) return true;
    return false;
  }

  /// Whether the base weights (projections and LayerNorms) train; adapters always do.
  void set_trainable(bool trainable) {
    norm1_.set_trainable(trainable);
    norm2_.set_trainable(trainable);
    attention_.set_trainable(trainable);
    mlp_.set_trainable(trainable);
  }
  void set_training(bool training) {
    training_ = training;
    attention_.set_training(training);
    mlp_.set_training(training);
  }

  /// Activation checkpointing for this block (see the top of this file); off by default.
  void set_recompute(bool recompute) {
    recompute_ = recompute;
    if (!recompute) recomputable_ = false;
  }
  bool recompute() const { return recompute_; }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    if (!(recompute_ && training_)) {
      recomputable_ = false;
      return compute(x);
    }
    input_ = x;
    std::size_t i = 0;
    for (auto& [name, p] : projections()) dropout_start_[i++] = p->dropout_position();
    compute(x);
    release_internals();
    recomputable_ = true;
    return output_;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (recomputable_) {  // the forward again, from the same input and the same dropout positions
      std::array<std::uint64_t, 6> end{};
      std::size_t i = 0;
      for (auto& [name, p] : projections()) end[i] = p->dropout_position(), p->set_dropout_position(dropout_start_[i]), ++i;
      compute(input_);
      i = 0;
      for (auto& [name, p] : projections()) p->set_dropout_position(end[i++]);
    }
    const_tensor_view<B> dx = backward_pass(dy);
    if (recomputable_) release_internals();
    return dx;
  }

 private:
  void release_internals() {
    norm1_.release_buffers();
    attention_.release_buffers();
    norm2_.release_buffers();
    mlp_.release_buffers();
    residual_ = tensor<B>(), residual_gradient_ = tensor<B>();
  }

  const_tensor_view<B> compute(const_tensor_view<B> x) {
    residual_.resize(*backend_, x.shape());
    copy<B>(x, residual_);
    axpy<B>(scalar_type(1), attention_.forward(norm1_.forward(x)), residual_);  // h = x + attn(LN1(x))
    output_.resize(*backend_, x.shape());
    copy<B>(residual_, output_);
    axpy<B>(scalar_type(1), mlp_.forward(norm2_.forward(residual_)), output_);  // y = h + mlp(LN2(h))
    return output_;
  }

  const_tensor_view<B> backward_pass(const_tensor_view<B> dy) {
    if (output_.empty()) throw_invalid_argument("transformer_block::backward", "called before forward");
    if (!(dy.shape() == output_.shape()))
      throw_invalid_argument("transformer_block::backward", concat("output gradient ", dy.shape().to_string(),
                                                                   " does not match output ", output_.shape().to_string()));
    residual_gradient_.resize(*backend_, dy.shape());
    copy<B>(dy, residual_gradient_);
    axpy<B>(scalar_type(1), norm2_.backward(mlp_.backward(dy)), residual_gradient_);  // dh = dy + LN2'(mlp'(dy))
    input_gradient_.resize(*backend_, dy.shape());
    copy<B>(residual_gradient_, input_gradient_);
    axpy<B>(scalar_type(1), norm1_.backward(attention_.backward(residual_gradient_)), input_gradient_);  // dx
    return input_gradient_;
  }

 public:
  /// "norm1.weight", "norm1.bias", "attn.q.weight", ..., "norm2.*", "mlp.fc1.*", "mlp.fc2.*".
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    norm1_.collect_parameters(out, join_name(prefix, "norm1"));
    attention_.collect_parameters(out, join_name(prefix, "attn"));
    norm2_.collect_parameters(out, join_name(prefix, "norm2"));
    mlp_.collect_parameters(out, join_name(prefix, "mlp"));
  }

 private:
  B* backend_;
  layer_norm<B> norm1_;
  multi_head_attention<B, F> attention_;
  layer_norm<B> norm2_;
  mlp_block<B, F> mlp_;
  tensor<B> residual_, output_, residual_gradient_, input_gradient_;
  bool training_ = true, recompute_ = false, recomputable_ = false;
  const_tensor_view<B> input_;                 // the input of the last training forward (recompute mode)
  std::array<std::uint64_t, 6> dropout_start_{};  // each projection's dropout position before that forward
};

}  // namespace treelora
