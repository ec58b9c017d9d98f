// treelora/bandit/regret.hpp: bandit policies on plain synthetic arms, and their cumulative regret.
//
// Arm k has a true mean loss mu_k; a pull observes mu_k + noise * N(0, 1). Pseudo-regret after T steps
// is sum_t (mu_{chosen_t} - min_k mu_k). smooth_tree_means() plants a smooth-tree instance: means that
// vary slowly along the arm order, so a balanced hierarchy over that order has informative node means
// (the setting of the paper's O(sqrt(T log NT)) bound).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

/// mu_k = low + spread * sqrt(|k - best| / (n - 1)): one best arm, means rising smoothly away from it.
inline std::vector<double> smooth_tree_means(index_t n_arms, index_t best, double low = 0.1, double spread = 0.8) {
  if (n_arms <= 0 || best < 0 || best >= n_arms)
    throw_invalid_argument("smooth_tree_means", concat("best arm ", best, " of ", n_arms, " arms"));
  std::vector<double> means(static_cast<std::size_t>(n_arms));
  for (index_t k = 0; k < n_arms; ++k)
    means[static_cast<std::size_t>(k)] =
        low + spread * std::sqrt(static_cast<double>(std::abs(k - best)) / static_cast<double>(std::max<index_t>(1, n_arms - 1)));
  return means;
}

/// Plays `policy` for `steps` steps on arms with mean losses `means` (one module) and returns the
/// cumulative pseudo-regret after each step. Full-information policies see every arm's noisy loss first.
template <class Policy>
std::vector<double> simulate_regret(Policy& policy, std::span<const double> means, index_t steps, double noise,
                                    std::uint64_t seed, std::span<const tree_node> hierarchy = {}) {
  static_assert(BanditPolicy<Policy>, "treelora::simulate_regret: Policy must be a BanditPolicy");
  if (means.empty()) throw_invalid_argument("simulate_regret", "needs at least one arm");
  const index_t n = static_cast<index_t>(means.size());
  policy.reset(bandit_setup{n, 1, std::max<index_t>(steps, 1), hierarchy});
  random::generator choices(seed), environment(random::mix64(seed ^ 0x5eedULL));
  const double best = *std::min_element(means.begin(), means.end());
  std::vector<double> curve, all(static_cast<std::size_t>(n));
  curve.reserve(static_cast<std::size_t>(steps));
  double regret = 0;
  for (index_t t = 0; t < steps; ++t) {
    for (index_t k = 0; k < n; ++k) all[static_cast<std::size_t>(k)] = means[static_cast<std::size_t>(k)] + noise * environment.normal();
    if constexpr (FullInformationPolicy<Policy>) policy.observe_all(all);
    const index_t arm = policy.select(t, choices)[0];
    const double loss = all[static_cast<std::size_t>(arm)];
    policy.update(std::span<const index_t>(&arm, 1), std::span<const double>(&loss, 1));
    regret += means[static_cast<std::size_t>(arm)] - best;
    curve.push_back(regret);
  }
  return curve;
}

}  // namespace treelora
