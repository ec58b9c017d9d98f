// treelora/tree/split.hpp: where a task tree cuts a group of scores into a left and a right child.
//
// A SplitPolicy computes one threshold from the scores of a node's tasks and says on which side a score
// falls. The same rule routes a new task during incremental insertion. When a rule would leave one side
// empty the tree applies the released code's positional fallback (first floor(n/2) left, rest right);
// that fallback belongs to the tree (task_tree.hpp), not to the policy.
#pragma once

#include <algorithm>
#include <concepts>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/core/error.hpp"

namespace treelora {

/// A split rule: `threshold(scores)` (scores non-empty) and `goes_left(score, threshold)`, and a name.
template <class S>
concept SplitPolicy = requires(const S& s, std::span<const double> scores, double value) {
  { s.threshold(scores) } -> std::convertible_to<double>;
  { s.goes_left(value, value) } -> std::same_as<bool>;
  { S::name() } -> std::convertible_to<std::string_view>;
};

namespace detail {
inline std::vector<double> sorted_scores(std::span<const double> scores, std::string_view where) {
  if (scores.empty()) throw_invalid_argument(where, "no scores to split");
  std::vector<double> s(scores.begin(), scores.end());
  std::sort(s.begin(), s.end());
  return s;
}
}  // namespace detail

/// Reference (released code): the LOWER median, as torch.median (for an even count the smaller middle
/// value), and s >= median goes left. Quirk kept for fidelity: 8 distinct scores split 5 / 3.
struct lower_median_split {
  static constexpr std::string_view name() { return "lower_median"; }
  double threshold(std::span<const double> scores) const {
    const auto s = detail::sorted_scores(scores, "lower_median_split::threshold");
    return s[(s.size() - 1) / 2];
  }
  bool goes_left(double score, double threshold) const { return score >= threshold; }
};

/// The plain median (the mean of the two middle values for an even count); s >= median goes left, so
/// distinct scores split evenly.
struct median_split {
  static constexpr std::string_view name() { return "median"; }
  double threshold(std::span<const double> scores) const {
    const auto s = detail::sorted_scores(scores, "median_split::threshold");
    const std::size_t n = s.size();
    return n % 2 == 1 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  }
  bool goes_left(double score, double threshold) const { return score >= threshold; }
};

/// The mean of the scores; s > mean goes left (a group of equal scores stays whole, then falls back).
struct mean_split {
  static constexpr std::string_view name() { return "mean"; }
  double threshold(std::span<const double> scores) const {
    if (scores.empty()) throw_invalid_argument("mean_split::threshold", "no scores to split");
    return std::accumulate(scores.begin(), scores.end(), 0.0) / static_cast<double>(scores.size());
  }
  bool goes_left(double score, double threshold) const { return score > threshold; }
};

}  // namespace treelora
