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
