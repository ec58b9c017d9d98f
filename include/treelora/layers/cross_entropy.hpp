// treelora/layers/cross_entropy.hpp: softmax cross-entropy over class logits, optionally restricted to a subset
// of the classes, and the argmax prediction used for accuracy.
//   loss = mean_r [ log sum_{c in allowed} exp(z_rc) - z_r,label_r ],  d loss / d z_rc = (p_rc - [c = label_r]) / rows
// with p the softmax over the allowed classes; a class outside `allowed_classes` is treated as z = -inf: zero
// probability and zero gradient. This is how one task's classes are trained on a head shared by all classes.
// On a host-accessible backend (the CPU's) they compute in double on the host; the host scratch is thread-local and
// only grows, so a training loop allocates nothing after its first step. A backend with the optional
// BackendDeviceLosses members (the CUDA one) computes them where the logits are: the labels go to the device, the
// loss (one double) or the predicted classes come back, never the logits.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "treelora/tensor/ops.hpp"

namespace treelora {

namespace detail {
/// allowed[c] = 1 when class c may be predicted. An empty list allows every class.
inline std::vector<unsigned char>& class_mask(std::string_view where, index_t classes,
                                              std::span<const index_t> allowed_classes) {
  thread_local std::vector<unsigned char> allowed;
  allowed.assign(static_cast<std::size_t>(classes), allowed_classes.empty() ? 1 : 0);
  for (index_t c : allowed_classes) {
    if (c < 0 || c >= classes)
      throw_invalid_argument(where, concat("allowed class ", c, " outside [0, ", classes, ")"));
    allowed[static_cast<std::size_t>(c)] = 1;
  }
  return allowed;
}

inline std::string describe_classes(std::span<const index_t> classes) {
  std::string s = "{";
  for (std::size_t i = 0; i < classes.size(); ++i) s += (i ? ", " : "") + std::to_string(classes[i]);
  return s + "}";
}
}  // namespace detail

/// Mean softmax cross-entropy of `logits` [rows, classes] against `labels` (one per row); writes the gradient with
/// respect to the logits into `gradient` (same shape). Throws std::invalid_argument for a label outside the classes
/// or outside `allowed_classes` (naming the row and the label), std::runtime_error when the loss is not finite.
template <Backend B>
double cross_entropy_loss(const_tensor_view<B> logits, std::span<const index_t> labels, tensor_view<B> gradient,
                          std::span<const index_t> allowed_classes = {}) {
  using S = typename B::scalar_type;
  const index_t rows = logits.rows(), classes = logits.cols();
  if (static_cast<index_t>(labels.size()) != rows || !(gradient.shape() == logits.shape()) || rows == 0)
    throw_invalid_argument("cross_entropy_loss", concat("logits ", logits.shape().to_string(), ", ", labels.size(),
                                                        " labels, gradient ", gradient.shape().to_string()));
  const auto& allowed = detail::class_mask("cross_entropy_loss", classes, allowed_classes);
  for (index_t r = 0; r < rows; ++r) {
    const index_t label = labels[static_cast<std::size_t>(r)];
    if (label < 0 || label >= classes)
      throw_invalid_argument("cross_entropy_loss", concat("row ", r, ": label ", label, " outside [0, ", classes, ")"));
    if (!allowed[static_cast<std::size_t>(label)])
      throw_invalid_argument("cross_entropy_loss", concat("row ", r, ": label ", label, " is not in the allowed classes ",
                                                          detail::describe_classes(allowed_classes)));
  }
  const double inv_rows = 1.0 / static_cast<double>(rows);
  if constexpr (!B::is_host_accessible && BackendDeviceLosses<B>) {
    const double loss = logits.backend()->cross_entropy_rows(rows, classes, logits.data(), labels, allowed_classes,
                                                             inv_rows, gradient.data()) * inv_rows;
    require_finite(loss, "cross_entropy_loss", "loss");
    return loss;
  }
  thread_local std::vector<S> host;  // host copy of the logits, overwritten by the gradient
  host.resize(static_cast<std::size_t>(rows * classes));
  logits.backend()->copy_to_host(logits.data(), host.data(), rows * classes);
  double total = 0;
  for (index_t r = 0; r < rows; ++r) {
    S* z = host.data() + r * classes;
    double top = -std::numeric_limits<double>::infinity();
    for (index_t c = 0; c < classes; ++c)
      if (allowed[static_cast<std::size_t>(c)]) top = std::max(top, static_cast<double>(z[c]));
    double normaliser = 0;  // sum_c exp(z_c - max)
    for (index_t c = 0; c < classes; ++c)
      if (allowed[static_cast<std::size_t>(c)]) normaliser += std::exp(static_cast<double>(z[c]) - top);
    const index_t label = labels[static_cast<std::size_t>(r)];
    total += std::log(normaliser) - (static_cast<double>(z[label]) - top);
    for (index_t c = 0; c < classes; ++c) {
      const double p = allowed[static_cast<std::size_t>(c)] ? std::exp(static_cast<double>(z[c]) - top) / normaliser : 0.0;
      z[c] = static_cast<S>((p - (c == label ? 1.0 : 0.0)) * inv_rows);
    }
  }
  const double loss = total * inv_rows;
  require_finite(loss, "cross_entropy_loss", "loss");
  gradient.backend()->copy_from_host(host.data(), gradient.data(), rows * classes);
  return loss;
}

namespace detail {
/// max_c z_c and sum_c exp(z_c - max) of one row, in double: log-sum-exp = top + log(normaliser).
template <class S>
std::pair<double, double> shifted_exp_sum(const S* z, index_t n) {
  double top = -std::numeric_limits<double>::infinity(), normaliser = 0;
  for (index_t c = 0; c < n; ++c) top = std::max(top, static_cast<double>(z[c]));
  for (index_t c = 0; c < n; ++c) normaliser += std::exp(static_cast<double>(z[c]) - top);
  return {top, normaliser};
}
}  // namespace detail

/// The label of a row that does not count (PyTorch's ignore_index).
inline constexpr index_t ignored_label = -100;

/// Token-level cross-entropy for language models: `logits` [rows, vocabulary] (rows = batch x tokens), one label per
/// row, `ignored_label` for rows that do not count (prompt, padding); the loss is the mean over the counted rows and
/// the gradient rows of ignored rows are zero. The whole vocabulary takes part (no class mask). Throws
/// std::invalid_argument for a label outside the vocabulary or when no row counts, std::runtime_error when the loss
/// is not finite.
template <Backend B>
double token_cross_entropy_loss(const_tensor_view<B> logits, std::span<const index_t> labels, tensor_view<B> gradient) {
  using S = typename B::scalar_type;
  const index_t rows = logits.rows(), vocabulary = logits.cols();
  if (static_cast<index_t>(labels.size()) != rows || !(gradient.shape() == logits.shape()) || rows == 0)
    throw_invalid_argument("token_cross_entropy_loss", concat("logits ", logits.shape().to_string(), ", ", labels.size(),
                                                              " labels, gradient ", gradient.shape().to_string()));
  index_t counted = 0;
  for (index_t r = 0; r < rows; ++r) {
    const index_t label = labels[static_cast<std::size_t>(r)];
    if (label == ignored_label) continue;
    if (label < 0 || label >= vocabulary)
      throw_invalid_argument("token_cross_entropy_loss", concat("row ", r, ": label ", label, " outside [0, ", vocabulary,
                                                                ") (use ignored_label for rows that do not count)"));
    ++counted;
  }
  if (counted == 0) throw_invalid_argument("token_cross_entropy_loss", concat("none of the ", rows, " rows counts"));
  if constexpr (B::is_host_accessible) {
    // The backend's softmax (vectorised, threaded) writes p into the gradient; then per counted row the loss is
    // -log p[label] and the gradient (p - onehot) / counted. A vocabulary-wide row is 49k-128k entries: this path is
    // 4x faster than the scalar double loop below on SmolLM's vocabulary. Where p[label] is too small for float to
    // hold its logarithm accurately, that row's log-sum-exp is recomputed from the logits in double.
    const double inv_counted = 1.0 / static_cast<double>(counted);
    logits.backend()->softmax_rows(rows, vocabulary, logits.data(), gradient.data());
    logits.backend()->scale(rows * vocabulary, static_cast<S>(inv_counted), gradient.data());
    double total = 0;
    for (index_t r = 0; r < rows; ++r) {
      S* g = gradient.data() + r * vocabulary;
      const index_t label = labels[static_cast<std::size_t>(r)];
      if (label == ignored_label) {
        std::fill(g, g + vocabulary, S(0));
        continue;
      }
      const double p = static_cast<double>(g[label]) / inv_counted;
      if (p >= 1e-30) {
        total -= std::log(p);
      } else {
        const S* z = logits.data() + r * vocabulary;
        const auto [top, normaliser] = detail::shifted_exp_sum(z, vocabulary);
        total += std::log(normaliser) - (static_cast<double>(z[label]) - top);
      }
      g[label] -= static_cast<S>(inv_counted);
    }
    const double loss = total * inv_counted;
    require_finite(loss, "token_cross_entropy_loss", "loss");
    return loss;
  }
  const double inv_counted = 1.0 / static_cast<double>(counted);
  if constexpr (BackendDeviceLosses<B>) {  // ignored_label is negative: the device kernel skips those rows
    const double loss = logits.backend()->cross_entropy_rows(rows, vocabulary, logits.data(), labels, {}, inv_counted,
                                                             gradient.data()) * inv_counted;
    require_finite(loss, "token_cross_entropy_loss", "loss");
    return loss;
  }
  thread_local std::vector<S> host;
  host.resize(static_cast<std::size_t>(rows * vocabulary));
  logits.backend()->copy_to_host(logits.data(), host.data(), rows * vocabulary);
  double total = 0;
  for (index_t r = 0; r < rows; ++r) {
    S* z = host.data() + r * vocabulary;
    const index_t label = labels[static_cast<std::size_t>(r)];
    if (label == ignored_label) {
      std::fill(z, z + vocabulary, S(0));
      continue;
    }
    const auto [top, normaliser] = detail::shifted_exp_sum(z, vocabulary);
    total += std::log(normaliser) - (static_cast<double>(z[label]) - top);
    for (index_t c = 0; c < vocabulary; ++c)
      z[c] = static_cast<S>((std::exp(static_cast<double>(z[c]) - top) / normaliser - (c == label ? 1.0 : 0.0)) * inv_counted);
  }
  const double loss = total * inv_counted;
  require_finite(loss, "token_cross_entropy_loss", "loss");
  gradient.backend()->copy_from_host(host.data(), gradient.data(), rows * vocabulary);
  return loss;
}

/// The labels of next-token prediction (TRACE's objective): position t of a sequence predicts token t + 1, and counts
/// only where `counted` marks token t + 1 (the answer and EOS: prompt and padding are not learned); the last position
/// predicts nothing. `ids` and `counted` are [batch, tokens] row-major; the result is one label per position.
inline std::vector<index_t> next_token_labels(std::span<const index_t> ids, std::span<const unsigned char> counted, index_t tokens) {
  if (tokens <= 0 || ids.size() % static_cast<std::size_t>(tokens) != 0 || counted.size() != ids.size())
    throw_invalid_argument("next_token_labels", concat(ids.size(), " ids and ", counted.size(), " flags are not sequences of ",
                                                       tokens, " tokens"));
  std::vector<index_t> labels(ids.size(), ignored_label);
  for (std::size_t i = 0; i < ids.size(); ++i)
    if ((i + 1) % static_cast<std::size_t>(tokens) != 0 && counted[i + 1]) labels[i] = ids[i + 1];
  return labels;
}

/// The highest-scoring class of each row (the lowest index on ties), among `allowed_classes` when it is non-empty.
template <Backend B>
std::vector<index_t> argmax_rows(const_tensor_view<B> logits, std::span<const index_t> allowed_classes = {}) {
  using S = typename B::scalar_type;
  const index_t rows = logits.rows(), classes = logits.cols();
  const auto& allowed = detail::class_mask("argmax_rows", classes, allowed_classes);
  if constexpr (!B::is_host_accessible && BackendDeviceLosses<B>)
    return logits.backend()->argmax_rows(rows, classes, logits.data(), allowed_classes);
  thread_local std::vector<S> host;
  host.resize(static_cast<std::size_t>(rows * classes));
  if (rows * classes > 0) logits.backend()->copy_to_host(logits.data(), host.data(), rows * classes);
  std::vector<index_t> out(static_cast<std::size_t>(rows), -1);
  for (index_t r = 0; r < rows; ++r) {
    const S* z = host.data() + r * classes;
    for (index_t c = 0; c < classes; ++c) {
      if (!allowed[static_cast<std::size_t>(c)]) continue;
      index_t& best = out[static_cast<std::size_t>(r)];
      if (best < 0 || z[c] > z[best]) best = c;
    }
  }
  return out;
}

}  // namespace treelora
