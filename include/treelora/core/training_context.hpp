// treelora/core/training_context.hpp: where the runner is in a stream (task, epoch, step, loss). Every hook of a
// strategy (strategy/strategy.hpp) and of a sparse-update rule (sparse/sparse_rules.hpp) receives it; it lives here,
// below both, so that neither folder needs the other.
#pragma once

#include <functional>
#include <span>

#include "treelora/core/error.hpp"

namespace treelora {

/// Where the runner is, passed to every hook.
struct training_context {
  index_t task = 0;             ///< n: the task being trained, 0-based
  index_t tasks = 0;            ///< N
  index_t epoch = 0;            ///< epoch within the task
  index_t epochs = 0;           ///< epochs of this task
  index_t step = 0;             ///< t: micro-batch index within the epoch, 0-based
  index_t steps_per_epoch = 0;  ///< T
  index_t global_step = 0;      ///< steps since the stream began
  double loss = 0;              ///< the task loss of the current micro-batch (after backward)
  index_t rank = 0;             ///< this process's data-parallel rank (distributed/communicator.hpp)
  index_t ranks = 1;            ///< the number of data-parallel ranks (1: one process)
  /// Set by the runner: one no-grad, evaluation-mode forward pass over the current task's training set, in order, in
  /// batches of the given size (what a strategy that collects input statistics observes: InfLoRA). Empty outside a
  /// runner. In a data-parallel run (distributed/communicator.hpp) each rank forwards only its batches (batch b on rank
  /// b % ranks), so what a strategy collects is a partial sum: it must then add it up with sum_over_ranks.
  std::function<void(index_t batch_size)> forward_training_set = {};
  /// Set by the runner: sums the values over the data-parallel ranks in place, the same result on every rank (one
  /// process: leaves them). A strategy calls it on what it collected during forward_training_set. Empty outside a
  /// runner.
  std::function<void(std::span<double> values)> sum_over_ranks = {};
};

}  // namespace treelora
