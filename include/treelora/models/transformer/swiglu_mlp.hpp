// treelora/models/transformer/swiglu_mlp.hpp: the Llama family's MLP (SwiGLU, Shazeer 2020 "GLU Variants Improve
// Transformer"), with Hugging Face's module names:
//   y = down_proj(silu(gate_proj(x)) * up_proj(x))
// Backward, with g = gate_proj(x), u = up_proj(x), a = silu(g), h = a * u:
//   dh = down_proj'(dy);  du = dh * a;  da = dh * u;  dg = silu'(g) * da;  dx = gate_proj'(dg) + up_proj'(du).
// LoRA adapters go on the modules named in the targets among "gate_proj", "up_proj", "down_proj"; Llama has no bias
// in its MLP unless config.json says mlp_bias.
#pragma once

#include <cstdint>
#include <string_view>

#include "treelora/layers/activation.hpp"
#include "treelora/lora/optional_lora.hpp"

namespace treelora {

template <Backend B, class F = standard_lora>
class swiglu_mlp {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using projection = optional_lora_linear<B, F>;
  using targets = basic_lora_targets<typename F::config>;

  swiglu_mlp(B& backend, index_t width, index_t hidden, std::uint64_t seed = 0, const targets& lora = {{}, {}},
             bool bias = false)
      : backend_(&backend),
        gate_(backend, width, hidden, random::mix64(seed + 7), lora.for_module("gate_proj", seed * 8 + 5), bias),
        up_(backend, width, hidden, random::mix64(seed + 8), lora.for_module("up_proj", seed * 8 + 6), bias),
        down_(backend, hidden, width, random::mix64(seed + 9), lora.for_module("down_proj", seed * 8 + 7), bias),
        activation_(backend) {}

  projection& gate_proj() { return gate_; }
  projection& up_proj() { return up_; }
  projection& down_proj() { return down_; }
  void set_trainable(bool trainable) {
    for (projection* p : {&gate_, &up_, &down_}) p->set_trainable(trainable);
  }
  void set_training(bool training) {
    for (projection* p : {&gate_, &up_, &down_}) p->set_training(training);
  }
  /// Frees every activation and backward buffer (activation checkpointing).
  void release_buffers() {
    for (projection* p : {&gate_, &up_, &down_}) p->release_buffers();
    activation_.release_buffers();
    product_ = tensor<B>(), up_gradient_ = tensor<B>(), activation_gradient_ = tensor<B>(), input_gradient_ = tensor<B>();
    up_out_ = activated_ = {};
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    up_out_ = up_.forward(x);
    activated_ = activation_.forward(gate_.forward(x));
    product_.resize(*backend_, activated_.shape());
    multiply<B>(activated_, up_out_, product_);  // h = silu(g) * u
    return down_.forward(product_);
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (activated_.data() == nullptr) throw_invalid_argument("swiglu_mlp::backward", "called before forward");
    const_tensor_view<B> dh = down_.backward(dy);
    up_gradient_.resize(*backend_, dh.shape());
    activation_gradient_.resize(*backend_, dh.shape());
    multiply<B>(dh, activated_, up_gradient_);       // du = dh * a
    multiply<B>(dh, up_out_, activation_gradient_);  // da = dh * u
    const_tensor_view<B> dg = activation_.backward(activation_gradient_);
    input_gradient_.resize(*backend_, dg.shape().with_last(gate_.in_features()));
    copy<B>(gate_.backward(dg), input_gradient_);
    axpy<B>(scalar_type(1), up_.backward(up_gradient_), input_gradient_);
    return input_gradient_;
  }

  /// "gate_proj.weight", ("gate_proj.lora_a", ...), "up_proj.*", "down_proj.*".
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    gate_.collect_parameters(out, join_name(prefix, "gate_proj"));
    up_.collect_parameters(out, join_name(prefix, "up_proj"));
    down_.collect_parameters(out, join_name(prefix, "down_proj"));
  }

 private:
  B* backend_;
  projection gate_, up_, down_;
  silu<B> activation_;
  const_tensor_view<B> up_out_, activated_;
  tensor<B> product_, up_gradient_, activation_gradient_, input_gradient_;
};

}  // namespace treelora
