// treelora/models/transformer/mlp_block.hpp: the transformer's position-wise MLP, y = fc2(GELU(fc1(x))), fc1: width -> hidden,
// fc2: hidden -> width. Either projection may carry a LoRA adapter ("fc1", "fc2").
#pragma once

#include "treelora/layers/activation.hpp"
#include "treelora/lora/optional_lora.hpp"

namespace treelora {

template <Backend B, class F = standard_lora>
class mlp_block {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using projection = optional_lora_linear<B, F>;
  using targets = basic_lora_targets<typename F::config>;

  mlp_block(B& backend, index_t width, index_t hidden, std::uint64_t seed = 0, const targets& lora = {{}, {}})
      : fc1_(backend, width, hidden, random::mix64(seed + 5), lora.for_module("fc1", seed * 8 + 5)),
        activation_(backend),
        fc2_(backend, hidden, width, random::mix64(seed + 6), lora.for_module("fc2", seed * 8 + 6)) {}

  projection& fc1() { return fc1_; }
  projection& fc2() { return fc2_; }
  void set_trainable(bool trainable) {
    fc1_.set_trainable(trainable);
    fc2_.set_trainable(trainable);
  }
  void set_training(bool training) {
    fc1_.set_training(training);
    fc2_.set_training(training);
  }
  /// Frees every activation and backward buffer (activation checkpointing).
  void release_buffers() {
    fc1_.release_buffers();
    activation_.release_buffers();
    fc2_.release_buffers();
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) { return fc2_.forward(activation_.forward(fc1_.forward(x))); }
  const_tensor_view<B> backward(const_tensor_view<B> dy) { return fc1_.backward(activation_.backward(fc2_.backward(dy))); }

  /// "fc1.weight", "fc1.bias", ("fc1.lora_a", "fc1.lora_b"), "fc2.weight", ...
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    fc1_.collect_parameters(out, join_name(prefix, "fc1"));
    fc2_.collect_parameters(out, join_name(prefix, "fc2"));
  }

 private:
  projection fc1_;
  gelu<B> activation_;
  projection fc2_;
};

}  // namespace treelora
