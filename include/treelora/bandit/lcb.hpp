// treelora/bandit/lcb.hpp: the paper's bandit (docs/treelora.md 2): deterministic minimum lower confidence bound,
// flat on plain arms or as a hierarchical smooth-tree descent over a task tree.
//
//   leaf arm:       LCB_k = mu_k - c sqrt(log t / n_k)                       (c = 2 in the paper)
//   internal node:  B(v)  = max( min over children B(j), mu_v - c sqrt(log t / n_v) - delta )
//                   (the BAST smooth-tree bound, Coquelin & Munos 2007; a leaf node's B is the min
//                   over its arms' LCB_k)
//   select:         from the root, go to the child with the smaller B; at the leaf take the arm with
//                   the minimum LCB (the most similar task). Unpulled arms and subtrees have -infinity.
// mu are mean observed L1 residuals, n pull counts, t = step + 1 (1-based round). One game per module.
// Refresh: `exact` recomputes B for every node each step (the equation as written, O(nodes) per module);
// `path` keeps B cached and recomputes it only along the pulled leaf's path (O(depth) per module, the
// usual BAST/HOO practice), so values off the path lag by the log t growth since they were last touched.
#pragma once

#include <cmath>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

enum class lcb_refresh { exact, path };

class lcb {
 public:
  static constexpr std::string_view name() { return "lcb"; }

  /// radius: c in c sqrt(log t / n) (paper: 2); smoothness: delta of the smooth-tree bound.
  explicit lcb(double radius = 2.0, double smoothness = 0.0, lcb_refresh refresh = lcb_refresh::exact)
      : radius_(radius), smoothness_(smoothness), refresh_(refresh) {
    if (!(radius >= 0)) throw_invalid_argument("lcb", concat("radius must be >= 0, got ", radius));
  }

  void reset(const bandit_setup& setup) {
    detail::require_setup("lcb::reset", setup);
    setup_ = setup;
    nodes_.assign(setup.hierarchy.begin(), setup.hierarchy.end());
    setup_.hierarchy = {};
    arms_.reset(setup.n_arms, setup.n_modules);
    leaf_of_.clear();
    if (!nodes_.empty()) leaf_of_ = detail::leaves_of_arms("lcb::reset", nodes_, setup.n_arms);
    for (std::size_t v = 0; v < nodes_.size(); ++v)  // the bottom-up refresh walks indices backwards
      if (!nodes_[v].leaf && (nodes_[v].left <= static_cast<index_t>(v) || nodes_[v].right <= static_cast<index_t>(v)))
        throw_invalid_argument("lcb::reset", concat("node ", v, " has a child with a smaller index (", nodes_[v].left,
                                                    ", ", nodes_[v].right, "): children must follow their parent"));
    nodes_stats_.reset(static_cast<index_t>(nodes_.size()), setup.n_modules);
    bound_.assign(nodes_.size() * static_cast<std::size_t>(setup.n_modules), -infinity);
    ids_.assign(static_cast<std::size_t>(setup.n_modules), 0);
    log_t_ = 0;
  }

  std::span<const index_t> select(index_t t, random::generator&) {
    if (setup_.n_arms <= 0) throw_invalid_argument("lcb::select", "reset() was not called");
    log_t_ = std::log(static_cast<double>(t + 1));
    for (index_t l = 0; l < setup_.n_modules; ++l) {
      index_t arm;
      if (nodes_.empty()) {
        arm = argmin_arm(l, nullptr);
      } else {
        if (refresh_ == lcb_refresh::exact)
          for (index_t v = static_cast<index_t>(nodes_.size()) - 1; v >= 0; --v) refresh(v, l);
        index_t v = 0;
        while (!nodes_[static_cast<std::size_t>(v)].leaf) {
          const auto& node = nodes_[static_cast<std::size_t>(v)];
          v = bound(node.left, l) <= bound(node.right, l) ? node.left : node.right;
        }
        arm = argmin_arm(l, &nodes_[static_cast<std::size_t>(v)].tasks);
      }
      ids_[static_cast<std::size_t>(l)] = arm;
    }
    return ids_;
  }

  void update(std::span<const index_t> ids, std::span<const double> losses) {
    detail::require_update("lcb::update", setup_, ids, losses);
    for (index_t l = 0; l < setup_.n_modules; ++l) {
      const index_t arm = ids[static_cast<std::size_t>(l)];
      const double loss = losses[static_cast<std::size_t>(l)];
      arms_.add(arm, l, loss);
      if (nodes_.empty()) continue;
      for (index_t v = leaf_of_[static_cast<std::size_t>(arm)]; v >= 0; v = nodes_[static_cast<std::size_t>(v)].parent) {
        nodes_stats_.add(v, l, loss);
        if (refresh_ == lcb_refresh::path) refresh(v, l);
      }
    }
  }

  /// LCB_k = mu_k - c sqrt(log t / n_k) at the last select's t (-infinity when unpulled).
  double lower_bound(index_t arm, index_t module) const {
    const index_t n = arms_.count(arm, module);
    if (n == 0) return -infinity;
    return arms_.mean(arm, module) - radius_ * std::sqrt(log_t_ / static_cast<double>(n));
  }
  /// B(v) for node v as last computed (exact mode: this step's value).
  double bound(index_t node, index_t module) const {
    return bound_[static_cast<std::size_t>(node * setup_.n_modules + module)];
  }
  const arm_statistics& statistics() const { return arms_; }

 private:
  static constexpr double infinity = std::numeric_limits<double>::infinity();

  /// The arm (of `candidates`, or of all arms) with the minimum LCB; ties go to the first.
  index_t argmin_arm(index_t module, const std::vector<index_t>* candidates) const {
    index_t best = -1;
    double best_value = infinity;
    const auto consider = [&](index_t k) {
      const double value = lower_bound(k, module);
      if (best < 0 || value < best_value) {
        best = k;
        best_value = value;
      }
    };
    if (candidates) for (index_t k : *candidates) consider(k);
    else for (index_t k = 0; k < setup_.n_arms; ++k) consider(k);
    return best;
  }

  void refresh(index_t v, index_t l) {
    const auto& node = nodes_[static_cast<std::size_t>(v)];
    double value;
    if (node.leaf) {
      value = infinity;
      for (index_t k : node.tasks) value = std::min(value, lower_bound(k, l));
    } else {
      const double children = std::min(bound(node.left, l), bound(node.right, l));
      const index_t n = nodes_stats_.count(v, l);
      const double own = n == 0 ? -infinity
                                : nodes_stats_.mean(v, l) - radius_ * std::sqrt(log_t_ / static_cast<double>(n)) -
                                      smoothness_;
      value = std::max(children, own);
    }
    bound_[static_cast<std::size_t>(v * setup_.n_modules + l)] = value;
  }

  double radius_, smoothness_;
  lcb_refresh refresh_;
  bandit_setup setup_;
  std::vector<tree_node> nodes_;
  std::vector<index_t> leaf_of_;
  arm_statistics arms_, nodes_stats_;
  std::vector<double> bound_;
  std::vector<index_t> ids_;
  double log_t_ = 0;
};

static_assert(check_bandit_policy<lcb>());

}  // namespace treelora
