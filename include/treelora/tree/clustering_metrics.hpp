// treelora/tree/clustering_metrics.hpp: agreement between two clusterings of the same items.
// Used to check that a task tree recovers a planted task hierarchy level by level.
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <utility>

#include "treelora/core/error.hpp"

namespace treelora {

/// Adjusted Rand index (Hubert & Arabie 1985) of two labelings a and b of the same n items:
///   ARI = (sum_ij C(n_ij, 2) - E) / (0.5 (sum_i C(a_i, 2) + sum_j C(b_j, 2)) - E),
///   E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2),
/// with n_ij the contingency table and a_i, b_j its row and column sums. 1 = identical partitions (up to
/// renaming), about 0 = chance. When both labelings are trivial (the denominator is 0) it returns 1.
inline double adjusted_rand_index(std::span<const index_t> a, std::span<const index_t> b) {
  if (a.size() != b.size())
    throw_invalid_argument("adjusted_rand_index", concat("labelings differ in length: ", a.size(), " vs ", b.size()));
  const auto pairs = [](double k) { return k * (k - 1) / 2; };
  std::map<std::pair<index_t, index_t>, double> table;
  std::map<index_t, double> rows, cols;
  for (std::size_t i = 0; i < a.size(); ++i) {
    table[{a[i], b[i]}] += 1;
    rows[a[i]] += 1;
    cols[b[i]] += 1;
  }
  double index = 0, sum_rows = 0, sum_cols = 0;
  for (const auto& [key, count] : table) index += pairs(count);
  for (const auto& [key, count] : rows) sum_rows += pairs(count);
  for (const auto& [key, count] : cols) sum_cols += pairs(count);
  const double total = pairs(static_cast<double>(a.size()));
  const double expected = total > 0 ? sum_rows * sum_cols / total : 0.0;
  const double maximum = 0.5 * (sum_rows + sum_cols);
  if (maximum - expected == 0) return 1.0;
  return (index - expected) / (maximum - expected);
}

}  // namespace treelora
