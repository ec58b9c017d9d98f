// treelora/bandit/bandit_policy.hpp: the BanditPolicy concept and what every policy shares.
//
// Each previous task (entry) is an arm; each of the L modules plays its own game over the same arms, and
// a policy picks one arm per module per step. Pulling arm k in module l observes a loss: the L1 residual
// || cur_l - acc[k]_l ||_1 between the current and the stored task vector (smaller = more similar).
// A policy never touches tensors: tree_bandit.hpp computes the residuals on the backend and feeds them
// in, and simulate_regret (regret.hpp) feeds synthetic losses to the same policies on plain arms.
//
// Contract (t is the 0-based step index since reset):
//   reset(setup)             start over: n_arms, n_modules, horizon T, optional tree (nodes[0] = root)
//   select(t, generator)     -> span of n_modules arm ids, valid until the next select/reset
//   update(ids, losses)      the losses observed for ids (one per module)
//   observe_all(losses)      optional (full-information policies): every arm's loss, [n_arms x n_modules]
#pragma once

#include <concepts>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/core/error.hpp"
#include "treelora/tree/tree_node.hpp"

namespace treelora {

/// What a bandit is asked to play.
struct bandit_setup {
  index_t n_arms = 0;     ///< previous tasks (tree entries)
  index_t n_modules = 1;  ///< independent games, one per LoRA module (1 for plain arms)
  index_t horizon = 1;    ///< T, micro-batches per epoch (the reference bonus uses it)
  std::span<const tree_node> hierarchy{};  ///< optional task tree over the arms; copied by reset
};

template <class P>
concept BanditPolicy = requires(P& p, const bandit_setup& setup, index_t t, random::generator& g,
                                std::span<const index_t> ids, std::span<const double> losses) {
  p.reset(setup);
  { p.select(t, g) } -> std::convertible_to<std::span<const index_t>>;
  p.update(ids, losses);
  { P::name() } -> std::convertible_to<std::string_view>;
};

/// A policy that sees every arm's loss before it selects (the Exhaustive baseline).
template <class P>
concept FullInformationPolicy = BanditPolicy<P> && requires(P& p, std::span<const double> all) { p.observe_all(all); };

template <class P>
consteval bool check_bandit_policy() {
  static_assert(BanditPolicy<P>,
                "treelora: not a BanditPolicy: needs reset(const bandit_setup&), select(index_t t, "
                "random::generator&) -> span<const index_t>, update(span<const index_t>, span<const double>) and "
                "static name() (see bandit/bandit_policy.hpp)");
  return true;
}

namespace detail {

inline void require_setup(std::string_view where, const bandit_setup& s) {
  if (s.n_arms <= 0) throw_invalid_argument(where, concat("needs at least one arm (a previous task), got n_arms = ", s.n_arms));
  if (s.n_modules <= 0) throw_invalid_argument(where, concat("needs n_modules > 0, got ", s.n_modules));
  if (s.horizon <= 0) throw_invalid_argument(where, concat("needs horizon T > 0, got ", s.horizon));
}

inline void require_update(std::string_view where, const bandit_setup& s, std::span<const index_t> ids,
                           std::span<const double> losses) {
  if (static_cast<index_t>(ids.size()) != s.n_modules || static_cast<index_t>(losses.size()) != s.n_modules)
    throw_invalid_argument(where, concat("needs ", s.n_modules, " ids and losses, got ", ids.size(), " and ", losses.size()));
  for (index_t id : ids)
    if (id < 0 || id >= s.n_arms) throw_invalid_argument(where, concat("arm ", id, " outside [0, ", s.n_arms, ")"));
}

/// Checks that the hierarchy's leaves partition the arms and returns leaf_of[arm].
inline std::vector<index_t> leaves_of_arms(std::string_view where, std::span<const tree_node> nodes, index_t n_arms) {
  std::vector<index_t> leaf_of(static_cast<std::size_t>(n_arms), -1);
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const auto& n = nodes[i];
    if (!n.leaf && (n.left < 0 || n.right < 0 || n.left >= static_cast<index_t>(nodes.size()) ||
                    n.right >= static_cast<index_t>(nodes.size())))
      throw_invalid_argument(where, concat("node ", i, " has children outside the ", nodes.size(), " nodes"));
    if (!n.leaf) continue;
    for (index_t arm : n.tasks) {
      if (arm < 0 || arm >= n_arms)
        throw_invalid_argument(where, concat("leaf ", i, " holds arm ", arm, " outside [0, ", n_arms, ")"));
      if (leaf_of[static_cast<std::size_t>(arm)] >= 0)
        throw_invalid_argument(where, concat("arm ", arm, " is in two leaves"));
      leaf_of[static_cast<std::size_t>(arm)] = static_cast<index_t>(i);
    }
  }
  for (index_t arm = 0; arm < n_arms; ++arm)
    if (leaf_of[static_cast<std::size_t>(arm)] < 0)
      throw_invalid_argument(where, concat("arm ", arm, " is in no leaf of the hierarchy"));
  return leaf_of;
}

/// Inverse-CDF draw from (unnormalised, non-negative) probabilities with one uniform number.
template <class Real>
index_t categorical_draw(std::span<const Real> probabilities, random::generator& generator) {
  double total = 0;
  for (Real p : probabilities) total += static_cast<double>(p);
  const double u = generator.uniform() * total;
  double cumulative = 0;
  index_t last_positive = 0;
  for (std::size_t i = 0; i < probabilities.size(); ++i) {
    if (probabilities[i] > 0) last_positive = static_cast<index_t>(i);
    cumulative += static_cast<double>(probabilities[i]);
    if (u < cumulative) return static_cast<index_t>(i);
  }
  return last_positive;  // u landed on the rounding slack at the top
}

}  // namespace detail

/// Running sums and pull counts per (arm, module): the statistics of the mean-based policies.
class arm_statistics {
 public:
  void reset(index_t n_arms, index_t n_modules) {
    n_arms_ = n_arms;
    n_modules_ = n_modules;
    sum_.assign(static_cast<std::size_t>(n_arms * n_modules), 0.0);
    count_.assign(static_cast<std::size_t>(n_arms * n_modules), 0);
  }
  void add(index_t arm, index_t module, double loss) {
    sum_[at(arm, module)] += loss;
    count_[at(arm, module)] += 1;
  }
  index_t count(index_t arm, index_t module) const { return count_[at(arm, module)]; }
  double sum(index_t arm, index_t module) const { return sum_[at(arm, module)]; }
  /// Empirical mean loss mu_k (0 for an unpulled arm).
  double mean(index_t arm, index_t module) const {
    const index_t c = count(arm, module);
    return c > 0 ? sum(arm, module) / static_cast<double>(c) : 0.0;
  }
  index_t n_arms() const { return n_arms_; }
  index_t n_modules() const { return n_modules_; }

 private:
  std::size_t at(index_t arm, index_t module) const { return static_cast<std::size_t>(arm * n_modules_ + module); }
  index_t n_arms_ = 0, n_modules_ = 0;
  std::vector<double> sum_;
  std::vector<index_t> count_;
};

/// A balanced binary hierarchy over arms 0..n-1 in order (leaves of one arm): the tree a smooth-tree
/// bandit uses on plain arms whose neighbours in index order have similar means.
inline std::vector<tree_node> balanced_hierarchy(index_t n_arms) {
  if (n_arms <= 0) throw_invalid_argument("balanced_hierarchy", concat("needs n_arms > 0, got ", n_arms));
  std::vector<tree_node> nodes;
  struct builder {
    std::vector<tree_node>& nodes;
    index_t make(index_t first, index_t count, index_t depth, index_t parent) {
      const index_t index = static_cast<index_t>(nodes.size());
      tree_node node;
      for (index_t a = first; a < first + count; ++a) node.tasks.push_back(a);
      node.depth = depth;
      node.parent = parent;
      node.leaf = count <= 1;
      nodes.push_back(std::move(node));
      if (count > 1) {
        const index_t half = count / 2;
        const index_t l = make(first, half, depth + 1, index);
        const index_t r = make(first + half, count - half, depth + 1, index);
        nodes[static_cast<std::size_t>(index)].left = l;
        nodes[static_cast<std::size_t>(index)].right = r;
        nodes[static_cast<std::size_t>(index)].module = 0;
      }
      return index;
    }
  } b{nodes};
  b.make(0, n_arms, 0, -1);
  return nodes;
}

}  // namespace treelora
