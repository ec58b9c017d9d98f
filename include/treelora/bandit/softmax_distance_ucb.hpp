// treelora/bandit/softmax_distance_ucb.hpp: the released TreeLoRA selection (reference mode, docs/treelora.md 1.2).
//
// A softmax over a distance-UCB, guided by the root split of the task tree. It is reproduced exactly,
// quirks included, with the arithmetic in Real (float: the released code ran float32 tensors) so the
// probabilities match torch to float accuracy. Draws come from the injected generator, or from outside
// (select_replayed) to follow a recorded path. Cost per step: O(n L) on the host (linear in n).
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

template <class Real = float>
class softmax_distance_ucb {
 public:
  static constexpr std::string_view name() { return "softmax_distance_ucb"; }

  /// Epoch start (docs/treelora.md 1: sim = 0, count = 0). The root split of setup.hierarchy (if any) is copied.
  void reset(const bandit_setup& setup) {
    detail::require_setup("softmax_distance_ucb::reset", setup);
    setup_ = setup;
    setup_.hierarchy = {};
    const auto n = static_cast<std::size_t>(setup.n_arms), l = static_cast<std::size_t>(setup.n_modules);
    sim_.assign(n * l, Real(0));
    count_.assign(n * l, Real(0));
    scores_.assign(n * l, Real(0));
    module_probabilities_.assign(n * l, Real(0));
    first_probabilities_.assign(n, Real(0));
    ids_.assign(l, 0);
    first_ = -1;
    guided_ = false;
    in_left_.assign(n, false);
    const auto& nodes = setup.hierarchy;
    if (!nodes.empty()) {
      detail::leaves_of_arms("softmax_distance_ucb::reset", nodes, setup.n_arms);
      const tree_node& root = nodes.front();
      if (!root.leaf) {
        guided_ = true;
        const tree_node& left = nodes[static_cast<std::size_t>(root.left)];
        const tree_node& right = nodes[static_cast<std::size_t>(root.right)];
        for (index_t k : left.tasks) in_left_[static_cast<std::size_t>(k)] = true;
        // fidelity: a leaf child's median is None in the released code and counts as 1.0; capped at 1.5.
        left_factor_ = static_cast<Real>(std::min(left.leaf ? 1.0 : left.threshold, 1.5));
        right_factor_ = static_cast<Real>(std::min(right.leaf ? 1.0 : right.threshold, 1.5));
      }
    }
  }

  /// One step at micro-batch t (0-based, after the ramp update) with draws from `generator`.
  std::span<const index_t> select(index_t t, random::generator& generator) {
    return run(t, [&](std::span<const Real> p) { return detail::categorical_draw(p, generator); },
               [&](index_t, std::span<const Real> p) { return detail::categorical_draw(p, generator); });
  }
  /// The same step with the draws given from outside (first: the tree-guidance draw; chosen[l]: module l).
  std::span<const index_t> select_replayed(index_t t, index_t first, std::span<const index_t> chosen) {
    if (static_cast<index_t>(chosen.size()) != setup_.n_modules)
      throw_invalid_argument("softmax_distance_ucb::select_replayed",
                             concat(chosen.size(), " replayed draws for ", setup_.n_modules, " modules"));
    const auto check = [&](index_t draw, std::string_view what) {
      if (draw < 0 || draw >= setup_.n_arms)
        throw_invalid_argument("softmax_distance_ucb::select_replayed",
                               concat(what, " draw ", draw, " outside [0, ", setup_.n_arms, ")"));
      return draw;
    };
    return run(t, [&](std::span<const Real>) { return check(first, "first"); },
               [&](index_t l, std::span<const Real>) { return check(chosen[static_cast<std::size_t>(l)], "module"); });
  }

  /// count[ids[l], l] += 1;  sim[ids[l], l] -= || cur_l - acc[ids[l]]_l ||_1  (losses[l] is that distance).
  void update(std::span<const index_t> ids, std::span<const double> losses) {
    detail::require_update("softmax_distance_ucb::update", setup_, ids, losses);
    for (index_t l = 0; l < setup_.n_modules; ++l) {
      const std::size_t i = at(ids[static_cast<std::size_t>(l)], l);
      count_[i] += Real(1);
      sim_[i] = static_cast<Real>(sim_[i] - static_cast<Real>(losses[static_cast<std::size_t>(l)]));
    }
  }

  // ---------------------------------------------------------------- inspection (after select)
  /// w: the distribution of the tree-guidance draw, one value per arm.
  std::span<const Real> first_probabilities() const { return first_probabilities_; }
  index_t first_draw() const { return first_; }
  /// P_l: module l's distribution over the arms.
  std::vector<Real> module_probabilities(index_t module) const {
    std::vector<Real> p(static_cast<std::size_t>(setup_.n_arms));
    for (index_t k = 0; k < setup_.n_arms; ++k) p[static_cast<std::size_t>(k)] = module_probabilities_[at(k, module)];
    return p;
  }
  /// sim[n, L] (sums of negative L1 distances) and count[n, L], row-major.
  std::span<const Real> similarity_sums() const { return sim_; }
  std::span<const Real> counts() const { return count_; }
  /// Restores sim and count (row-major [n, L]), for example from a checkpoint.
  void load_statistics(std::span<const Real> sim, std::span<const Real> count) {
    if (sim.size() != sim_.size() || count.size() != count_.size())
      throw_invalid_argument("softmax_distance_ucb::load_statistics",
                             concat(sim.size(), " sims and ", count.size(), " counts for ", setup_.n_arms, " arms x ",
                                    setup_.n_modules, " modules"));
    sim_.assign(sim.begin(), sim.end());
    count_.assign(count.begin(), count.end());
  }
  const bandit_setup& setup() const { return setup_; }

 private:
  std::size_t at(index_t arm, index_t module) const {
    return static_cast<std::size_t>(arm * setup_.n_modules + module);
  }

  template <class FirstDraw, class ModuleDraw>
  std::span<const index_t> run(index_t t, FirstDraw&& draw_first, ModuleDraw&& draw_module) {
    if (setup_.n_arms <= 0) throw_invalid_argument("softmax_distance_ucb::select", "reset() was not called");
    if (t < 0) throw_invalid_argument("softmax_distance_ucb::select", concat("negative step t = ", t));
    const index_t n = setup_.n_arms, L = setup_.n_modules;
    auto& m = scores_;
    // b(c) = sqrt(ln(2 T (t+1) (t+2))) / sqrt(2 c + 1e-5): the log in double (Python math), the rest in Real.
    const double tt = static_cast<double>(t);
    const Real log_term = static_cast<Real>(std::sqrt(std::log(2.0 * static_cast<double>(setup_.horizon) * (tt + 1) * (tt + 2))));
    Real global_min = std::numeric_limits<Real>::infinity();
    for (std::size_t i = 0; i < m.size(); ++i) {
      // M = sim; where count > 0: M /= count   (the mean of negative L1 distances)
      Real v = count_[i] > Real(0) ? static_cast<Real>(sim_[i] / count_[i]) : sim_[i];
      const Real bonus = static_cast<Real>(static_cast<Real>(Real(1) / std::sqrt(static_cast<Real>(Real(2) * count_[i] + Real(1e-5)))) * log_term);
      v = static_cast<Real>(-(static_cast<Real>(v - bonus)));  // M = -(M - b(count)): distance + bonus
      m[i] = v;
      global_min = std::min(global_min, v);
    }
    for (auto& v : m) v = static_cast<Real>(v + global_min);  // fidelity: M + min(M) (ADDED, not subtracted)
    // w = softmax over arms of the row sums; first ~ Categorical(w)
    for (index_t k = 0; k < n; ++k) first_probabilities_[static_cast<std::size_t>(k)] = row_sum(m.data() + at(k, 0), L);
    softmax(first_probabilities_.data(), n, 1);
    first_ = draw_first(std::span<const Real>(first_probabilities_));
    // The root child containing `first` is scaled by min(child median (1.0 for a leaf), 1.5).
    if (guided_) {
      const bool left = in_left_[static_cast<std::size_t>(first_)];
      const Real factor = left ? left_factor_ : right_factor_;
      for (index_t k = 0; k < n; ++k)
        if (in_left_[static_cast<std::size_t>(k)] == left)
          for (index_t l = 0; l < L; ++l) m[at(k, l)] = static_cast<Real>(m[at(k, l)] * factor);
    }
    // M = M / (max(M) - min(M) + 1e-5)
    const auto [lo, hi] = std::minmax_element(m.begin(), m.end());
    const Real range = static_cast<Real>(static_cast<Real>(*hi - *lo) + Real(1e-5));
    for (std::size_t i = 0; i < m.size(); ++i) module_probabilities_[i] = static_cast<Real>(m[i] / range);
    // P_l = softmax over arms of M[:, l]; ids[l] ~ Categorical(P_l)
    for (index_t l = 0; l < L; ++l) softmax(module_probabilities_.data() + l, n, L);
    std::vector<Real> column(static_cast<std::size_t>(n));
    for (index_t l = 0; l < L; ++l) {
      for (index_t k = 0; k < n; ++k) column[static_cast<std::size_t>(k)] = module_probabilities_[at(k, l)];
      ids_[static_cast<std::size_t>(l)] = draw_module(l, std::span<const Real>(column));
    }
    return ids_;
  }

  /// torch.sum over a short contiguous row in torch's CPU order (row_sum, ilp factor 4): four strided
  /// partial sums, the tail added to the first, then p0 + p1 + p2 + p3. Fidelity: float rounding then
  /// matches torch's bit for bit for rows shorter than one SIMD vector (L < 8 on AVX2).
  static Real row_sum(const Real* x, index_t size) {
    Real partial[4] = {0, 0, 0, 0};
    const index_t blocks = size / 4;
    for (index_t i = 0; i < blocks; ++i)
      for (index_t j = 0; j < 4; ++j) partial[j] = static_cast<Real>(partial[j] + x[4 * i + j]);
    for (index_t i = 4 * blocks; i < size; ++i) partial[0] = static_cast<Real>(partial[0] + x[i]);
    for (index_t j = 1; j < 4; ++j) partial[0] = static_cast<Real>(partial[0] + partial[j]);
    return partial[0];
  }

  /// In-place softmax of n values spaced `stride` apart, in Real: exp(x - max) / sum.
  static void softmax(Real* x, index_t n, index_t stride) {
    Real mx = -std::numeric_limits<Real>::infinity();
    for (index_t k = 0; k < n; ++k) mx = std::max(mx, x[k * stride]);
    Real sum = 0;
    for (index_t k = 0; k < n; ++k) {
      x[k * stride] = std::exp(static_cast<Real>(x[k * stride] - mx));
      sum = static_cast<Real>(sum + x[k * stride]);
    }
    for (index_t k = 0; k < n; ++k) x[k * stride] = static_cast<Real>(x[k * stride] / sum);
  }

  bandit_setup setup_;
  std::vector<Real> sim_, count_, scores_, module_probabilities_, first_probabilities_;
  std::vector<index_t> ids_;
  std::vector<bool> in_left_;
  bool guided_ = false;
  Real left_factor_ = 1, right_factor_ = 1;
  index_t first_ = -1;
};

static_assert(check_bandit_policy<softmax_distance_ucb<float>>());

}  // namespace treelora
