// treelora/metrics/text_metrics.hpp: the per-example scores of the text tasks (data/text_tasks.hpp), as
// TRACE's metrics.py (which the TreeLoRA code uses) computes them, and their mean over a test set.
//
// As in metrics.py, an example whose prediction or target is the empty string scores 0 under every metric,
// and a mean divides by the number of examples (empty ones included). Lengths are counted in code points, as
// Python counts str; bytes that are not valid UTF-8 count as one symbol each (utf8::code_points). Scales
// follow metrics.py: accuracy, exact match and ROUGE-L in [0, 1], edit similarity and chrF in [0, 100];
// text_score puts every metric in [0, 1] for the accuracy matrix.
#pragma once

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "treelora/core/error.hpp"
#include "treelora/core/utf8.hpp"
#include "treelora/data/text_tasks.hpp"

namespace treelora {

namespace detail::text_metrics {
inline bool is_space(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/// Whitespace-separated tokens (Python's str.split() for ASCII whitespace).
inline std::vector<std::string_view> tokens(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(static_cast<unsigned char>(text[i]))) ++i;
    const std::size_t start = i;
    while (i < text.size() && !is_space(static_cast<unsigned char>(text[i]))) ++i;
    if (i > start) out.push_back(text.substr(start, i - start));
  }
  return out;
}

/// The length of a longest common subsequence, by the row-by-row dynamic programme
/// L[i][j] = a[i-1] == b[j-1] ? L[i-1][j-1] + 1 : max(L[i-1][j], L[i][j-1]).
template <class T>
std::size_t longest_common_subsequence(const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<std::size_t> previous(b.size() + 1, 0), current(b.size() + 1, 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j)
      current[j] = a[i - 1] == b[j - 1] ? previous[j - 1] + 1 : std::max(previous[j], current[j - 1]);
    std::swap(previous, current);
  }
  return previous[b.size()];
}
}  // namespace detail::text_metrics

/// Levenshtein distance between the code points of `a` and `b`: the least total cost of insertions and
/// deletions (cost 1 each) and substitutions (cost `substitution_cost`) turning a into b. D[i][j] =
/// min(D[i-1][j] + 1, D[i][j-1] + 1, D[i-1][j-1] + (a[i-1] == b[j-1] ? 0 : substitution_cost)). With
/// substitution_cost 2 a substitution is never cheaper than a deletion and an insertion: the "indel" distance
/// |a| + |b| - 2 LCS(a, b).
inline std::size_t levenshtein_distance(std::string_view a, std::string_view b,
                                        std::size_t substitution_cost = 1) {
  const auto x = utf8::code_points(a), y = utf8::code_points(b);
  std::vector<std::size_t> previous(y.size() + 1), current(y.size() + 1);
  for (std::size_t j = 0; j <= y.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= x.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= y.size(); ++j)
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : substitution_cost)});
    std::swap(previous, current);
  }
  return previous[y.size()];
}

/// Accuracy as metrics.py scores a label answer: 1 when the prediction, stripped of surrounding whitespace
/// and cut to the target's length (in code points), equals the target (a prefix exact match: "animal, surely"
/// counts for "animal"); else 0.
inline double text_accuracy(std::string_view prediction, std::string_view target) {
  if (prediction.empty() || target.empty()) return 0;
  auto points = utf8::code_points(prediction);
  const auto space = [](char32_t c) { return detail::text_metrics::is_space(c); };
  points.erase(points.begin(), std::find_if_not(points.begin(), points.end(), space));
  while (!points.empty() && space(points.back())) points.pop_back();
  const auto wanted = utf8::code_points(target);
  points.resize(std::min(points.size(), wanted.size()));
  return points == wanted ? 1.0 : 0.0;
}

/// Exact match: 1 when prediction == target byte for byte, else 0.
inline double exact_match(std::string_view prediction, std::string_view target) {
  if (prediction.empty() || target.empty()) return 0;
  return prediction == target ? 1.0 : 0.0;
}

/// Edit similarity in [0, 100]: 100 (|p| + |t| - d) / (|p| + |t|), d = levenshtein_distance(p, t, 2), lengths
/// in code points. This is python-Levenshtein's ratio x 100, which fuzzywuzzy's fuzz.ratio (metrics.py's edit
/// similarity) returns rounded to an integer; the rounding is not kept. Equal to 200 LCS(p, t) / (|p| + |t|).
inline double edit_similarity(std::string_view prediction, std::string_view target) {
  if (prediction.empty() || target.empty()) return 0;
  const double total =
      static_cast<double>(utf8::code_points(prediction).size() + utf8::code_points(target).size());
  return 100.0 * (total - static_cast<double>(levenshtein_distance(prediction, target, 2))) / total;
}

/// ROUGE-L F1 in [0, 1] over whitespace tokens (Lin 2004): with l = LCS(prediction tokens, target tokens),
/// P = l / |prediction|, R = l / |target|, F = 2 P R / (P + R), and 0 when l = 0. metrics.py calls the rouge
/// package, which also splits at "." and counts distinct words; this is the plain sentence-level measure.
inline double rouge_l(std::string_view prediction, std::string_view target) {
  if (prediction.empty() || target.empty()) return 0;
  const auto p = detail::text_metrics::tokens(prediction), t = detail::text_metrics::tokens(target);
  const std::size_t l = detail::text_metrics::longest_common_subsequence(p, t);
  if (l == 0) return 0;
  const double precision = static_cast<double>(l) / static_cast<double>(p.size());
  const double recall = static_cast<double>(l) / static_cast<double>(t.size());
  return 2 * precision * recall / (precision + recall);
}

/// chrF in [0, 100] (Popović 2015, sacreBLEU's defaults): character n-grams of orders 1..max_order over the
/// code points with whitespace removed; for each order with n-grams on both sides, P_n = matches / prediction
/// n-grams and R_n = matches / target n-grams (matches: the multiset intersection); P and R are their means
/// over those orders; chrF = 100 (1 + beta^2) P R / (beta^2 P + R), 0 when P R = 0.
inline double chrf(std::string_view prediction, std::string_view target, std::size_t max_order = 6,
                   double beta = 2) {
  if (prediction.empty() || target.empty()) return 0;
  const auto characters = [](std::string_view text) {
    auto points = utf8::code_points(text);
    std::erase_if(points, [](char32_t c) { return detail::text_metrics::is_space(c); });
    return points;
  };
  const auto p = characters(prediction), t = characters(target);
  double precision = 0, recall = 0;
  std::size_t orders = 0;
  for (std::size_t n = 1; n <= max_order && n <= std::min(p.size(), t.size()); ++n) {
    std::map<std::u32string, std::size_t> counts;
    for (std::size_t i = 0; i + n <= t.size(); ++i)
      ++counts[std::u32string(t.begin() + i, t.begin() + i + n)];
    std::size_t matches = 0;
    for (std::size_t i = 0; i + n <= p.size(); ++i)
      if (auto& left = counts[std::u32string(p.begin() + i, p.begin() + i + n)]; left > 0) --left, ++matches;
    precision += static_cast<double>(matches) / static_cast<double>(p.size() - n + 1);
    recall += static_cast<double>(matches) / static_cast<double>(t.size() - n + 1);
    ++orders;
  }
  if (orders == 0) return 0;
  precision /= static_cast<double>(orders);
  recall /= static_cast<double>(orders);
  if (precision * recall == 0) return 0;
  const double b2 = beta * beta;
  return 100 * (1 + b2) * precision * recall / (b2 * precision + recall);
}

/// The score of one example under a text_task's metric, in [0, 1] (edit similarity divided by 100).
inline double text_score(std::string_view metric, std::string_view prediction, std::string_view target) {
  if (metric == "accuracy") return text_accuracy(prediction, target);
  if (metric == "exact_match") return exact_match(prediction, target);
  if (metric == "edit_similarity") return edit_similarity(prediction, target) / 100;
  if (metric == "rouge_l") return rouge_l(prediction, target);
  throw_invalid_argument("text_score", concat("unknown metric '", metric,
                                              "' (accuracy, edit_similarity, exact_match or rouge_l)"));
}

/// The mean of text_score over a test set: sum / n, as metrics.py divides by the number of examples.
inline double mean_text_score(std::string_view metric, const std::vector<std::string>& predictions,
                              const std::vector<std::string>& targets) {
  if (predictions.size() != targets.size())
    throw_invalid_argument("mean_text_score",
                           concat(predictions.size(), " predictions for ", targets.size(), " targets"));
  if (targets.empty()) throw_invalid_argument("mean_text_score", "no examples");
  double sum = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) sum += text_score(metric, predictions[i], targets[i]);
  return sum / static_cast<double>(targets.size());
}

}  // namespace treelora
