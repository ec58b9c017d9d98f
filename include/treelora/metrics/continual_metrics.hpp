// treelora/metrics/continual_metrics.hpp: continual-learning metrics from one accuracy matrix
// (definitions: docs/metrics.md). R[i][j] = accuracy on task j's test set after training task i.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "treelora/core/error.hpp"

namespace treelora {

class accuracy_matrix {
 public:
  explicit accuracy_matrix(index_t tasks = 0)
      : tasks_(tasks), values_(static_cast<std::size_t>(tasks * tasks), std::nan("")) {}
  index_t tasks() const { return tasks_; }
  double& operator()(index_t after_task, index_t on_task) {
    check(after_task, on_task);
    return values_[static_cast<std::size_t>(after_task * tasks_ + on_task)];
  }
  double operator()(index_t after_task, index_t on_task) const {
    check(after_task, on_task);
    return values_[static_cast<std::size_t>(after_task * tasks_ + on_task)];
  }
  /// Builds a matrix from rows (tests and hand-written examples).
  static accuracy_matrix from_rows(const std::vector<std::vector<double>>& rows) {
    accuracy_matrix m(static_cast<index_t>(rows.size()));
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].size() != rows.size())
        throw_invalid_argument("accuracy_matrix::from_rows", concat("row ", i, " has ", rows[i].size(), " values for ",
                                                                     rows.size(), " tasks"));
      for (std::size_t j = 0; j < rows.size(); ++j) m(index_t(i), index_t(j)) = rows[i][j];
    }
    return m;
  }
  /// The matrix as a table (percent), '-' where not measured. Built with snprintf into fixed buffers and
  /// appended: GCC 12 at -O3 reports a false -Wstringop-overflow on chains of std::string concatenation here.
  std::string to_table() const {
    std::string out = "after\\on";
    char label[24], cell[32];
    for (index_t j = 0; j < tasks_; ++j) {
      std::snprintf(label, sizeof label, "T%lld", static_cast<long long>(j));
      std::snprintf(cell, sizeof cell, "%8s", label);
      out.append(cell);
    }
    out.push_back('\n');
    for (index_t i = 0; i < tasks_; ++i) {
      std::snprintf(label, sizeof label, "T%lld", static_cast<long long>(i));
      std::snprintf(cell, sizeof cell, "%-8s", label);
      out.append(cell);
      for (index_t j = 0; j < tasks_; ++j) {
        const double v = (*this)(i, j);
        if (std::isnan(v)) std::snprintf(cell, sizeof cell, "%8s", "-");
        else std::snprintf(cell, sizeof cell, "%8.2f", 100.0 * v);
        out.append(cell);
      }
      out.push_back('\n');
    }
    return out;
  }

 private:
  void check(index_t i, index_t j) const {
    if (i < 0 || j < 0 || i >= tasks_ || j >= tasks_)
      throw_invalid_argument("accuracy_matrix", concat("entry (", i, ", ", j, ") outside ", tasks_, " x ", tasks_));
  }
  index_t tasks_;
  std::vector<double> values_;
};

namespace detail {
inline void require_tasks(const accuracy_matrix& r, index_t at_least, const char* metric) {
  if (r.tasks() < at_least) throw_invalid_argument(metric, concat("needs at least ", at_least, " tasks, got ", r.tasks()));
}
}  // namespace detail

/// ACC (TRACE "OP"): mean_j R[T-1][j].
inline double final_average_accuracy(const accuracy_matrix& r) {
  detail::require_tasks(r, 1, "final_average_accuracy");
  double s = 0;
  for (index_t j = 0; j < r.tasks(); ++j) s += r(r.tasks() - 1, j);
  return s / double(r.tasks());
}

/// AIA: mean_i mean_{j<=i} R[i][j].
inline double average_incremental_accuracy(const accuracy_matrix& r) {
  detail::require_tasks(r, 1, "average_incremental_accuracy");
  double s = 0;
  for (index_t i = 0; i < r.tasks(); ++i) {
    double row = 0;
    for (index_t j = 0; j <= i; ++j) row += r(i, j);
    s += row / double(i + 1);
  }
  return s / double(r.tasks());
}

/// BWT in the paper's sign (forgetting positive): 1/(T-1) sum_{j<T-1} (R[j][j] - R[T-1][j]).
inline double backward_transfer(const accuracy_matrix& r) {
  detail::require_tasks(r, 2, "backward_transfer");
  const index_t last = r.tasks() - 1;
  double s = 0;
  for (index_t j = 0; j < last; ++j) s += r(j, j) - r(last, j);
  return s / double(last);
}

/// BWT as the released TreeLoRA results script prints it: (1/T) sum_j min(R[T-1][j] - R[j][j], 0)
/// (positive transfer clipped to zero, divided by T, forgetting negative).
inline double backward_transfer_released(const accuracy_matrix& r) {
  detail::require_tasks(r, 1, "backward_transfer_released");
  const index_t last = r.tasks() - 1;
  double s = 0;
  for (index_t j = 0; j < r.tasks(); ++j) s += std::min(r(last, j) - r(j, j), 0.0);
  return s / double(r.tasks());
}

/// FWT: 1/(T-1) sum_{j>=1} (R[j-1][j] - b[j]), b = accuracy before any continual training.
inline double forward_transfer(const accuracy_matrix& r, const std::vector<double>& before) {
  detail::require_tasks(r, 2, "forward_transfer");
  if (static_cast<index_t>(before.size()) != r.tasks())
    throw_invalid_argument("forward_transfer", concat(before.size(), " baseline accuracies for ", r.tasks(), " tasks"));
  double s = 0;
  for (index_t j = 1; j < r.tasks(); ++j) s += r(j - 1, j) - before[static_cast<std::size_t>(j)];
  return s / double(r.tasks() - 1);
}

/// Forgetting (Chaudhry et al. 2018): mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j]).
/// The max runs over l >= j (a task cannot be forgotten before it is learned).
inline double forgetting(const accuracy_matrix& r) {
  detail::require_tasks(r, 2, "forgetting");
  const index_t last = r.tasks() - 1;
  double s = 0;
  for (index_t j = 0; j < last; ++j) {
    double best = r(j, j);
    for (index_t l = j; l < last; ++l) best = std::max(best, r(l, j));
    s += best - r(last, j);
  }
  return s / double(last);
}

/// Peak resident set size of this process in bytes (VmHWM from /proc/self/status; 0 where unavailable).
inline std::size_t peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      std::size_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    std::getline(status, key);
  }
  return 0;
}

}  // namespace treelora
