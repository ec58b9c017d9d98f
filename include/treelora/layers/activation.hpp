// treelora/layers/activation.hpp: parameter-free elementwise activation layers, y = f(x), dx = dy f'(x):
//   gelu:      x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))                   (PyTorch's exact GELU; the ViT's)
//   gelu_tanh: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))         (GPT-2's "gelu_new", another function)
//   silu:      x sigmoid(x)                                              (Llama's SwiGLU MLP)
// Each is pointwise_activation<B, f, f'> over the backend's unary functions (backend/backend.hpp).
#pragma once

#include "treelora/layers/layer.hpp"

namespace treelora {

template <Backend B, unary_function Function, unary_function Derivative>
class pointwise_activation {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  explicit pointwise_activation(B& backend) : backend_(&backend) {}
  /// Frees the forward output and the backward scratch (activation checkpointing).
  void release_buffers() {
    output_ = tensor<B>(), input_gradient_ = tensor<B>();
    input_ = {};
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    input_ = x;
    output_.resize(*backend_, x.shape());
    apply<B>(Function, x, output_);
    return output_;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (input_.data() == nullptr) throw_invalid_argument("activation::backward", "called before forward");
    if (dy.numel() != input_.numel())
      throw_invalid_argument("activation::backward", concat("output gradient ", dy.shape().to_string(),
                                                             " does not match output ", input_.shape().to_string()));
    input_gradient_.resize(*backend_, input_.shape());
    apply<B>(Derivative, input_, input_gradient_);      // f'(x)
    multiply<B>(input_gradient_, dy, input_gradient_);  // dx = f'(x) dy (elementwise, in place)
    return input_gradient_;
  }

  void collect_parameters(parameter_list<B>&, std::string_view) {}

 private:
  B* backend_;
  tensor<B> output_, input_gradient_;
  const_tensor_view<B> input_;
};

template <Backend B>
using gelu = pointwise_activation<B, unary_function::gelu, unary_function::gelu_derivative>;
template <Backend B>
using gelu_tanh = pointwise_activation<B, unary_function::gelu_tanh, unary_function::gelu_tanh_derivative>;
template <Backend B>
using silu = pointwise_activation<B, unary_function::silu, unary_function::silu_derivative>;

}  // namespace treelora
