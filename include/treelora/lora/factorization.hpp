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

#include <concepts>

#include "treelora/layers/layer.hpp"

namespace treelora {

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
