// treelora/layers/activation.hpp: parameter-free elementwise activation layers.
//   gelu: y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's exact GELU);  dx = dy (Phi(x) + x phi(x)).
#pragma once

#include "treelora/layers/layer.hpp"

namespace treelora {

template <Backend B>
class gelu {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  explicit gelu(B& backend) : backend_(&backend) {}
  /// Frees the forward output and the backward scratch (activation checkpointing).
  void release_buffers() {
    output_ = tensor<B>(), input_gradient_ = tensor<B>();
    input_ = {};
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    input_ = x;
    output_.resize(*backend_, x.shape());
    apply<B>(unary_function::gelu, x, output_);
    return output_;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (input_.data() == nullptr) throw_invalid_argument("gelu::backward", "called before forward");
    if (dy.numel() != input_.numel())
      throw_invalid_argument("gelu::backward", concat("output gradient ", dy.shape().to_string(), " does not match output ",
                                                       input_.shape().to_string()));
    input_gradient_.resize(*backend_, input_.shape());
    apply<B>(unary_function::gelu_derivative, input_, input_gradient_);  // GELU'(x)
    multiply<B>(input_gradient_, dy, input_gradient_);                  // dx = GELU'(x) dy (elementwise, in place)
    return input_gradient_;
  }

  void collect_parameters(parameter_list<B>&, std::string_view) {}

 private:
  B* backend_;
  tensor<B> output_, input_gradient_;
  const_tensor_view<B> input_;
};

}  // namespace treelora
