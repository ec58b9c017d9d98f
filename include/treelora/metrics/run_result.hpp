// treelora/metrics/run_result.hpp: everything one continual-learning run measured (the runner fills it in,
// metrics/report.hpp turns it into tables and files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "treelora/metrics/continual_metrics.hpp"

namespace treelora {

/// Everything a run measured.
struct run_result {
  std::string method;
  accuracy_matrix task_il, class_il, task_identity;
  std::vector<double> before = {};            ///< task-IL accuracy of the untrained model on each task (for FWT)
  std::vector<double> train_seconds = {};     ///< per task, evaluation excluded
  std::vector<double> checkpoint_seconds = {};  ///< per task: writing its checkpoint (empty without checkpoints)
  std::vector<double> final_loss = {};        ///< per task: mean training loss over its last epoch
  std::vector<std::size_t> peak_bytes = {};   ///< peak resident memory after each task
  std::vector<std::size_t> state_bytes = {};  ///< the strategy's per-task state after each task
  index_t trainable_parameters = 0;
  index_t steps = 0;
  double seconds = 0;                         ///< all training time
  std::uint64_t seed = 0;                     ///< runner_options::seed of the run
  index_t threads = 1;                        ///< OpenMP threads the run used (results do not depend on it)
  /// Class-IL accuracy and task identity mean something only when the tasks' class sets are disjoint; on a
  /// domain-incremental stream (every task has the same classes) they are not reported.
  bool class_incremental = true;
};

}  // namespace treelora
