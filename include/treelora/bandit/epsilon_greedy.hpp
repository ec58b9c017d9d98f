// treelora/bandit/epsilon_greedy.hpp: epsilon-greedy for losses. Every arm is pulled once first; then
// with probability epsilon a uniform arm, otherwise the arm with the smallest mean loss (first on ties).
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

class epsilon_greedy {
 public:
  static constexpr std::string_view name() { return "epsilon_greedy"; }

  explicit epsilon_greedy(double epsilon = 0.1) : epsilon_(epsilon) {
    if (!(epsilon >= 0 && epsilon <= 1))
      throw_invalid_argument("epsilon_greedy", concat("epsilon must be in [0, 1], got ", epsilon));
  }
  void reset(const bandit_setup& setup) {
    detail::require_setup("epsilon_greedy::reset", setup);
    setup_ = setup;
    setup_.hierarchy = {};
    stats_.reset(setup.n_arms, setup.n_modules);
    ids_.assign(static_cast<std::size_t>(setup.n_modules), 0);
  }
  std::span<const index_t> select(index_t, random::generator& generator) {
    if (setup_.n_arms <= 0) throw_invalid_argument("epsilon_greedy::select", "reset() was not called");
    for (index_t l = 0; l < setup_.n_modules; ++l) {
      index_t best = -1;
      for (index_t k = 0; k < setup_.n_arms && best < 0; ++k)
        if (stats_.count(k, l) == 0) best = k;
      if (best < 0 && generator.uniform() < epsilon_) {
        best = static_cast<index_t>(generator.below(static_cast<std::uint64_t>(setup_.n_arms)));
      } else if (best < 0) {
        best = 0;
        for (index_t k = 1; k < setup_.n_arms; ++k)
          if (stats_.mean(k, l) < stats_.mean(best, l)) best = k;
      }
      ids_[static_cast<std::size_t>(l)] = best;
    }
    return ids_;
  }
  void update(std::span<const index_t> ids, std::span<const double> losses) {
    detail::require_update("epsilon_greedy::update", setup_, ids, losses);
    for (index_t l = 0; l < setup_.n_modules; ++l)
      stats_.add(ids[static_cast<std::size_t>(l)], l, losses[static_cast<std::size_t>(l)]);
  }
  const arm_statistics& statistics() const { return stats_; }

 private:
  double epsilon_;
  bandit_setup setup_;
  arm_statistics stats_;
  std::vector<index_t> ids_;
};

static_assert(check_bandit_policy<epsilon_greedy>());

}  // namespace treelora
