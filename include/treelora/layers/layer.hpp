// treelora/layers/layer.hpp: the Layer concept (how users plug their own layers in) and named parameters.
//
// A layer owns its parameters, their gradients and its output buffers:
//   forward(x)   -> a view of the layer's output; x must stay alive and unchanged until backward.
//   backward(dy) -> a view of the gradient w.r.t. x; gradients of trainable parameters ACCUMULATE
//                   (call zero_gradients between steps, as with PyTorch's zero_grad).
//   collect_parameters(out, prefix) appends {prefix + name, value, gradient, trainable} with stable names.
#pragma once

#include <concepts>
#include <string>
#include <string_view>
#include <vector>

#include "treelora/tensor/ops.hpp"

namespace treelora {

/// A named trainable (or frozen) tensor and its gradient, as optimisers and checkpoints see it.
template <Backend B>
struct parameter {
  std::string name;
  tensor<B>* value = nullptr;
  tensor<B>* gradient = nullptr;  // same shape as value; may be empty for a frozen parameter
  bool trainable = true;
};

template <Backend B>
using parameter_list = std::vector<parameter<B>>;

/// The contract of a layer. See examples/quickstart.cpp for a user-written layer that models it.
template <class L>
concept Layer = requires(L& layer, const_tensor_view<typename L::backend_type> view,
                         parameter_list<typename L::backend_type>& out, std::string_view prefix) {
  typename L::backend_type;
  requires Backend<typename L::backend_type>;
  { layer.forward(view) } -> std::convertible_to<const_tensor_view<typename L::backend_type>>;
  { layer.backward(view) } -> std::convertible_to<const_tensor_view<typename L::backend_type>>;
  layer.collect_parameters(out, prefix);
};

/// A layer that is a linear map y = x W^T (+ b), with W [out, in] reachable for merging adapters into it.
/// Contract beyond the signatures: a linear map needs neither its output nor its input gradient for its own
/// backward, so a wrapper (lora_layer) may add to the buffers that forward and backward return.
template <class L>
concept LinearLike = Layer<L> && requires(L& layer, const L& const_layer, bool flag) {
  { const_layer.in_features() } -> std::convertible_to<index_t>;
  { const_layer.out_features() } -> std::convertible_to<index_t>;
  { layer.weight() } -> std::same_as<tensor<typename L::backend_type>&>;
  layer.set_trainable(flag);
};

/// Readable diagnostics: static_assert(check_layer<my_layer>()).
template <class L>
consteval bool check_layer() {
  static_assert(requires { typename L::backend_type; }, "treelora: a Layer needs `using backend_type = <a Backend>;`");
  static_assert(Layer<L>,
                "treelora: not a Layer: needs forward(const_tensor_view<B>) and backward(const_tensor_view<B>) "
                "returning something convertible to const_tensor_view<B>, and "
                "collect_parameters(parameter_list<B>&, std::string_view prefix)");
  return true;
}

/// All parameters of a layer, names prefixed.
template <Layer L>
parameter_list<typename L::backend_type> parameters(L& layer, std::string_view prefix = "") {
  parameter_list<typename L::backend_type> out;
  layer.collect_parameters(out, prefix);
  return out;
}

/// Sets every gradient in the list to zero.
template <Backend B>
void zero_gradients(const parameter_list<B>& params) {
  for (const auto& p : params)
    if (p.gradient && !p.gradient->empty()) p.gradient->fill(typename B::scalar_type(0));
}

/// The number of scalars in trainable parameters.
template <Backend B>
index_t trainable_parameter_count(const parameter_list<B>& params) {
  index_t n = 0;
  for (const auto& p : params)
    if (p.trainable) n += p.value->numel();
  return n;
}

/// Joins a prefix and a name with a dot ("block0.q" + "weight" -> "block0.q.weight").
inline std::string join_name(std::string_view prefix, std::string_view name) {
  if (prefix.empty()) return std::string(name);
  return std::string(prefix) + "." + std::string(name);
}

}  // namespace treelora
