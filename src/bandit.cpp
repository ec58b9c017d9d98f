// The treelora::compiled library: the synthetic-arm simulation (bandit/regret.hpp) of every library bandit policy,
// instantiated once here; programs that link the library see them declared `extern template` (bandit.hpp) and do
// not compile them again (docs/build_time.md).
#define TREELORA_COMPILED

#include "treelora/bandit.hpp"

namespace treelora {
template TREELORA_SIMULATE_BANDIT(lcb);
template TREELORA_SIMULATE_BANDIT(ucb1);
template TREELORA_SIMULATE_BANDIT(thompson_sampling);
template TREELORA_SIMULATE_BANDIT(epsilon_greedy);
template TREELORA_SIMULATE_BANDIT(softmax_distance_ucb<float>);
template TREELORA_SIMULATE_BANDIT(uniform_policy);
template TREELORA_SIMULATE_BANDIT(exhaustive);
}  // namespace treelora
