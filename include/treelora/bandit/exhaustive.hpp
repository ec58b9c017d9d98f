// treelora/bandit/exhaustive.hpp: the full-information baseline. Before every selection the driver
// computes EVERY arm's loss (n L distances of size D per step: the cost baseline) and this policy takes
// the minimum per module (zero regret against the instantaneous losses: the regret baseline).
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

class exhaustive {
 public:
  static constexpr std::string_view name() { return "exhaustive"; }

  void reset(const bandit_setup& setup) {
    detail::require_setup("exhaustive::reset", setup);
    setup_ = setup;
    setup_.hierarchy = {};
    losses_.clear();
    ids_.assign(static_cast<std::size_t>(setup.n_modules), 0);
  }
  /// losses[k * n_modules + l]: arm k's loss in module l at this step.
  void observe_all(std::span<const double> losses) {
    if (static_cast<index_t>(losses.size()) != setup_.n_arms * setup_.n_modules)
      throw_invalid_argument("exhaustive::observe_all", concat(losses.size(), " losses for ", setup_.n_arms, " arms x ",
                                                               setup_.n_modules, " modules"));
    losses_.assign(losses.begin(), losses.end());
  }
  std::span<const index_t> select(index_t, random::generator&) {
    if (losses_.empty()) throw_invalid_argument("exhaustive::select", "observe_all() must come before select()");
    for (index_t l = 0; l < setup_.n_modules; ++l) {
      index_t best = 0;
      for (index_t k = 1; k < setup_.n_arms; ++k)
        if (loss(k, l) < loss(best, l)) best = k;
      ids_[static_cast<std::size_t>(l)] = best;
    }
    return ids_;
  }
  void update(std::span<const index_t> ids, std::span<const double> losses) {
    detail::require_update("exhaustive::update", setup_, ids, losses);
  }

 private:
  double loss(index_t k, index_t l) const { return losses_[static_cast<std::size_t>(k * setup_.n_modules + l)]; }
  bandit_setup setup_;
  std::vector<double> losses_;
  std::vector<index_t> ids_;
};

static_assert(FullInformationPolicy<exhaustive>);

}  // namespace treelora
