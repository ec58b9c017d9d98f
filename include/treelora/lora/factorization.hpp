// treelora/lora/factorization.hpp: the Factorization concept: how a LoRA-style adapter attaches to a linear map.
//
// A factorisation is a tag type F with a nested `config` and a nested `template <Backend B> class adapter`
// (bound to the backend only where it is used, as ensmallen binds policies to the matrix type). lora_layer
// owns one adapter next to the frozen base layer and calls:
//   adapter(backend, in_features, out_features, config)
//   forward_add(x, y)      y  += delta(x)                      (y already holds the base's output)
//   backward_add(dy, dx)   dx += (d delta / dx)^T dy, and accumulate the adapter's parameter gradients
//   merge_into(W, sign)    W  += sign * (the adapter's weight delta, [out, in])
//   collect_parameters(out, prefix), set_training(bool) (dropout and other train-only behaviour)
// InfLoRA, O-LoRA and DualLoRA are further factorisations; lora_layer does not change for them.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>

#include "treelora/layers/layer.hpp"

namespace treelora {

namespace detail {
/// What every LoRA-style adapter starts from: A [rank, in] Kaiming-uniform with a = sqrt(5) (gain sqrt(2 / 6), bound
/// gain sqrt(3 / fan_in) = 1 / sqrt(in)), B [out, rank] zeros, and zero gradients of both.
template <Backend B>
void init_low_rank_factors(B& backend, index_t rank, index_t in, index_t out, std::uint64_t seed, tensor<B>& a,
                           tensor<B>& b, tensor<B>& a_gradient, tensor<B>& b_gradient) {
  a = tensor<B>(backend, shape{rank, in});
  b = tensor<B>(backend, shape{out, rank});
  a_gradient = tensor<B>(backend, a.shape());
  b_gradient = tensor<B>(backend, b.shape());
  const auto bound = static_cast<typename B::scalar_type>(1.0 / std::sqrt(static_cast<double>(in)));
  fill_uniform<B>(a, -bound, bound, seed);
}
}  // namespace detail

template <class A>
concept FactorizationAdapter =
    requires(A& adapter, const_tensor_view<typename A::backend_type> in, tensor_view<typename A::backend_type> out,
             tensor<typename A::backend_type>& weight, typename A::backend_type::scalar_type sign,
             parameter_list<typename A::backend_type>& params, std::string_view prefix, bool flag) {
      adapter.forward_add(in, out);
      adapter.backward_add(in, out);
      adapter.merge_into(weight, sign);
      adapter.collect_parameters(params, prefix);
      adapter.set_training(flag);
    };

template <class F, class B>
concept Factorization = Backend<B> && requires { typename F::config; } &&
                        std::constructible_from<typename F::template adapter<B>, B&, index_t, index_t,
                                                const typename F::config&> &&
                        FactorizationAdapter<typename F::template adapter<B>>;

}  // namespace treelora
