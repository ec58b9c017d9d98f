// treelora/strategy/strategy.hpp: the Strategy concept: what a continual-learning method does around the
// runner's training loop (strategy/runner.hpp). The runner owns the loop; a strategy only reacts:
//   begin_task(model, context)       a new task starts (optimiser state is fresh for every task)
//   begin_epoch(model, context)      TreeLoRA's reference mode resets its accumulators here
//   before_backward(model, context)  optional: before the forward pass (a sparse rule chooses what backward computes)
//   after_backward(model, context)   gradients of the task loss are in place; add regulariser gradients here and
//                                    return the regulariser's value (0 when there is none)
//   update(model, optimiser, context) apply the parameter update (sparse rules skip work here)
//   end_task(model, context)         the task's training is over (store per-task state, rebuild a tree)
//   adjust_logits(model, logits, predicted_tasks)  optional, at evaluation after each forward pass: calibrate the
//                                    logits in place and/or predict each sample's task (DualLoRA)
//   name(), state_bytes()            for reports: the method's name and the bytes of per-task state it keeps
#pragma once

#include <concepts>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/core/training_context.hpp"
#include "treelora/models/model.hpp"

namespace treelora {


template <class S, class M>
concept Strategy = Model<M> && requires(S& strategy, const S& const_strategy, M& model, const training_context& context) {
  { const_strategy.name() } -> std::convertible_to<std::string>;
  strategy.begin_task(model, context);
  strategy.begin_epoch(model, context);
  { strategy.after_backward(model, context) } -> std::convertible_to<double>;
  strategy.end_task(model, context);
  { const_strategy.state_bytes() } -> std::convertible_to<std::size_t>;
};

/// A model that hands out its typed adapters in model order (vit<B, F>::factorized_adapters()).
template <class M>
concept FactorizedModel = Model<M> && requires(M& model) {
  { model.factorized_adapters() } -> std::convertible_to<std::vector<typename M::adapter_type*>>;
};

/// A model whose adapters are the factorisation F's (vit<B, inflora> for F = inflora). Strategies that need one
/// factorisation check it with a static_assert that names it.
template <class M, class F>
concept uses_factorization =
    FactorizedModel<M> && std::is_same_v<typename M::adapter_type, typename F::template adapter<typename M::backend_type>>;

/// The plain update every dense strategy uses: one optimiser step over all trainable parameters.
struct dense_update {
  template <class M, class Optimizer>
  void operator()(M&, Optimizer& optimizer, const training_context&) {
    optimizer.step();
  }
};

}  // namespace treelora
