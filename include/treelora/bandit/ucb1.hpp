// treelora/bandit/ucb1.hpp: UCB1 (Auer, Cesa-Bianchi, Fischer 2002) written for losses, flat over arms.
//   index_k = mu_k - sqrt(2 ln t / n_k),  pick the minimum; every arm is pulled once first.
// It ignores any tree: the flat baseline for the hierarchical Lcb.
#pragma once

#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

class ucb1 {
 public:
  static constexpr std::string_view name() { return "ucb1"; }

  void reset(const bandit_setup& setup) {
    detail::require_setup("ucb1::reset", setup);
    setup_ = setup;
    setup_.hierarchy = {};
    stats_.reset(setup.n_arms, setup.n_modules);
    ids_.assign(static_cast<std::size_t>(setup.n_modules), 0);
  }
  std::span<const index_t> select(index_t t, random::generator&) {
    if (setup_.n_arms <= 0) throw_invalid_argument("ucb1::select", "reset() was not called");
    const double log_t = std::log(static_cast<double>(t + 1));
    for (index_t l = 0; l < setup_.n_modules; ++l) {
      index_t best = -1;
      double best_value = 0;
      for (index_t k = 0; k < setup_.n_arms && best < 0; ++k)
        if (stats_.count(k, l) == 0) best = k;  // pull every arm once first
      if (best < 0)
        for (index_t k = 0; k < setup_.n_arms; ++k) {
          const double value = stats_.mean(k, l) - std::sqrt(2 * log_t / static_cast<double>(stats_.count(k, l)));
          if (best < 0 || value < best_value) {
            best = k;
            best_value = value;
          }
        }
      ids_[static_cast<std::size_t>(l)] = best;
    }
    return ids_;
  }
  void update(std::span<const index_t> ids, std::span<const double> losses) {
    detail::require_update("ucb1::update", setup_, ids, losses);
    for (index_t l = 0; l < setup_.n_modules; ++l)
      stats_.add(ids[static_cast<std::size_t>(l)], l, losses[static_cast<std::size_t>(l)]);
  }
  const arm_statistics& statistics() const { return stats_; }

 private:
  bandit_setup setup_;
  arm_statistics stats_;
  std::vector<index_t> ids_;
};

static_assert(check_bandit_policy<ucb1>());

}  // namespace treelora
