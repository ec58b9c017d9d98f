// treelora/bandit/uniform_policy.hpp: a uniformly random arm per module (the paper's "penalty with
// random selection" ablation). Learns nothing; the regret upper baseline.
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

class uniform_policy {
 public:
  static constexpr std::string_view name() { return "uniform"; }

  void reset(const bandit_setup& setup) {
    detail::require_setup("uniform_policy::reset", setup);
    setup_ = setup;
    setup_.hierarchy = {};
    ids_.assign(static_cast<std::size_t>(setup.n_modules), 0);
  }
  std::span<const index_t> select(index_t, random::generator& generator) {
    if (setup_.n_arms <= 0) throw_invalid_argument("uniform_policy::select", "reset() was not called");
    for (auto& id : ids_) id = static_cast<index_t>(generator.below(static_cast<std::uint64_t>(setup_.n_arms)));
    return ids_;
  }
  void update(std::span<const index_t> ids, std::span<const double> losses) {
    detail::require_update("uniform_policy::update", setup_, ids, losses);
  }

 private:
  bandit_setup setup_;
  std::vector<index_t> ids_;
};

static_assert(check_bandit_policy<uniform_policy>());

}  // namespace treelora
