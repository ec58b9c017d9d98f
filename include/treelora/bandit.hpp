// treelora/bandit.hpp: the bandit component (policies, the backend driver, synthetic regret).
#pragma once

#include "treelora/bandit/bandit_policy.hpp"
#include "treelora/bandit/epsilon_greedy.hpp"
#include "treelora/bandit/exhaustive.hpp"
#include "treelora/bandit/lcb.hpp"
#include "treelora/bandit/regret.hpp"
#include "treelora/bandit/softmax_distance_ucb.hpp"
#include "treelora/bandit/thompson_sampling.hpp"
#include "treelora/bandit/tree_bandit.hpp"
#include "treelora/bandit/ucb1.hpp"
#include "treelora/bandit/uniform_policy.hpp"

// The simulation of every library policy (bandit/regret.hpp), with its policy's members, compiled once in
// treelora::compiled (src/bandit.cpp): a program that plays them on synthetic arms compiles none of it.
#define TREELORA_SIMULATE_BANDIT(Policy)                                                                              \
  bandit_run simulate_bandit<Policy>(Policy&, std::span<const double>, index_t, double, std::uint64_t,               \
                                     std::span<const tree_node>, index_t)
#if defined(TREELORA_COMPILED)
namespace treelora {
extern template TREELORA_SIMULATE_BANDIT(lcb);
extern template TREELORA_SIMULATE_BANDIT(ucb1);
extern template TREELORA_SIMULATE_BANDIT(thompson_sampling);
extern template TREELORA_SIMULATE_BANDIT(epsilon_greedy);
extern template TREELORA_SIMULATE_BANDIT(softmax_distance_ucb<float>);
extern template TREELORA_SIMULATE_BANDIT(uniform_policy);
extern template TREELORA_SIMULATE_BANDIT(exhaustive);
}  // namespace treelora
#endif
