// treelora/bandit/thompson_sampling.hpp: Gaussian Thompson sampling (Agrawal & Goyal 2013) for losses.
//   theta_k ~ N(mu_k, scale^2 / (n_k + 1)),  pick the minimum theta (mu_k = 0 for an unpulled arm).
// scale should match the loss noise (L1 residuals are not in [0, 1]). Flat: it ignores any tree.
#pragma once

#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

class thompson_sampling {
 public:
  static constexpr std::string_view name() { return "thompson_sampling"; }

  explicit thompson_sampling(double scale = 1.0) : scale_(scale) {
    if (!(scale > 0)) throw_invalid_argument("thompson_sampling", concat("scale must be > 0, got ", scale));
  }
  void reset(const bandit_setup& setup) {
    detail::require_setup("thompson_sampling::reset", setup);
    setup_ = setup;
    setup_.hierarchy = {};
    stats_.reset(setup.n_arms, setup.n_modules);
    ids_.assign(static_cast<std::size_t>(setup.n_modules), 0);
  }
  std::span<const index_t> select(index_t, random::generator& generator) {
    if (setup_.n_arms <= 0) throw_invalid_argument("thompson_sampling::select", "reset() was not called");
    for (index_t l = 0; l < setup_.n_modules; ++l) {
      index_t best = 0;
      double best_value = 0;
      for (index_t k = 0; k < setup_.n_arms; ++k) {
        const double sd = scale_ / std::sqrt(static_cast<double>(stats_.count(k, l) + 1));
        const double theta = stats_.mean(k, l) + sd * generator.normal();
        if (k == 0 || theta < best_value) {
          best = k;
          best_value = theta;
        }
      }
      ids_[static_cast<std::size_t>(l)] = best;
    }
    return ids_;
  }
  void update(std::span<const index_t> ids, std::span<const double> losses) {
    detail::require_update("thompson_sampling::update", setup_, ids, losses);
    for (index_t l = 0; l < setup_.n_modules; ++l)
      stats_.add(ids[static_cast<std::size_t>(l)], l, losses[static_cast<std::size_t>(l)]);
  }
  const arm_statistics& statistics() const { return stats_; }

 private:
  double scale_;
  bandit_setup setup_;
  arm_statistics stats_;
  std::vector<index_t> ids_;
};

static_assert(check_bandit_policy<thompson_sampling>());

}  // namespace treelora
