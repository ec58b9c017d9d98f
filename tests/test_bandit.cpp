// The bandit policies: the toy probabilities of docs/treelora.md for the reference policy, every policy against a
// brute-force recomputation of its rule on small instances, the smooth-tree Lcb descent against an
// independent recursion, the backend driver's residuals, input errors, and Lcb's regret growing
// sublinearly in T on a smooth-tree instance (slope of log regret vs log T below 0.7).
#include "test_support.hpp"

#include <numeric>

#include "treelora/bandit.hpp"
#include "treelora/tree.hpp"

using namespace treelora;

namespace {

/// Feeds `pulls` observations of loss `loss` to arm `arm` (one module).
template <class P>
void feed(P& policy, index_t arm, double loss, int pulls) {
  for (int i = 0; i < pulls; ++i) policy.update(std::span<const index_t>(&arm, 1), std::span<const double>(&loss, 1));
}

/// Least-squares slope of log y against log x.
double log_log_slope(const std::vector<double>& x, const std::vector<double>& y) {
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < x.size(); ++i) mx += std::log(x[i]) / static_cast<double>(x.size()), my += std::log(y[i]) / static_cast<double>(x.size());
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (std::log(x[i]) - mx) * (std::log(y[i]) - my);
    sxx += (std::log(x[i]) - mx) * (std::log(x[i]) - mx);
  }
  return sxy / sxx;
}

/// Spec 1.2 in plain double, from sim/count [n, L], for a given first draw.
struct naive_reference {
  std::vector<double> first, modules;  // modules[k * L + l]
};
naive_reference naive_softmax_ucb(const std::vector<double>& sim, const std::vector<double>& count, index_t n, index_t L,
                                  index_t T, index_t t, index_t first_draw, const std::vector<tree_node>& tree) {
  std::vector<double> m(sim.size());
  for (std::size_t i = 0; i < m.size(); ++i) {
    const double mean = count[i] > 0 ? sim[i] / count[i] : sim[i];
    const double bonus = std::sqrt(std::log(2.0 * T * (t + 1) * (t + 2))) / std::sqrt(2 * count[i] + 1e-5);
    m[i] = -(mean - bonus);
  }
  const double mn = *std::min_element(m.begin(), m.end());
  for (auto& v : m) v += mn;
  naive_reference out;
  double z = 0;
  for (index_t k = 0; k < n; ++k) {
    double s = 0;
    for (index_t l = 0; l < L; ++l) s += m[static_cast<std::size_t>(k * L + l)];
    out.first.push_back(std::exp(s));
    z += out.first.back();
  }
  for (auto& p : out.first) p /= z;
  if (!tree.empty() && !tree[0].leaf) {
    for (index_t child : {tree[0].left, tree[0].right}) {
      const auto& c = tree[static_cast<std::size_t>(child)];
      if (std::find(c.tasks.begin(), c.tasks.end(), first_draw) == c.tasks.end()) continue;
      const double factor = std::min(c.leaf ? 1.0 : c.threshold, 1.5);
      for (index_t k : c.tasks)
        for (index_t l = 0; l < L; ++l) m[static_cast<std::size_t>(k * L + l)] *= factor;
    }
  }
  const auto [lo, hi] = std::minmax_element(m.begin(), m.end());
  const double range = *hi - *lo + 1e-5;
  out.modules.resize(m.size());
  for (index_t l = 0; l < L; ++l) {
    double zl = 0;
    for (index_t k = 0; k < n; ++k) zl += std::exp(m[static_cast<std::size_t>(k * L + l)] / range);
    for (index_t k = 0; k < n; ++k)
      out.modules[static_cast<std::size_t>(k * L + l)] = std::exp(m[static_cast<std::size_t>(k * L + l)] / range) / zl;
  }
  return out;
}

/// Independent smooth-tree bound: B(v) from the arms under v, recursively.
double naive_bound(const std::vector<tree_node>& nodes, index_t v, const std::vector<double>& sum,
                   const std::vector<double>& count, double log_t) {
  const auto inf = std::numeric_limits<double>::infinity();
  const auto lcb_of = [&](double s, double c) { return c == 0 ? -inf : s / c - 2 * std::sqrt(log_t / c); };
  const auto& node = nodes[static_cast<std::size_t>(v)];
  if (node.leaf) {
    double b = inf;
    for (index_t k : node.tasks) b = std::min(b, lcb_of(sum[static_cast<std::size_t>(k)], count[static_cast<std::size_t>(k)]));
    return b;
  }
  double s = 0, c = 0;
  for (index_t k : node.tasks) s += sum[static_cast<std::size_t>(k)], c += count[static_cast<std::size_t>(k)];
  return std::max(std::min(naive_bound(nodes, node.left, sum, count, log_t), naive_bound(nodes, node.right, sum, count, log_t)),
                  lcb_of(s, c));
}

}  // namespace

TEST_CASE("reference softmax UCB: the toy probabilities of docs/treelora.md") {
  softmax_distance_ucb<float> policy;
  random::generator gen(1);
  policy.reset(bandit_setup{2, 1, 100});
  feed(policy, 0, 1.0, 50);
  feed(policy, 1, 5.0, 50);
  policy.select(49, gen);
  auto p = policy.module_probabilities(0);
  CHECK(p[0] == doctest::Approx(0.2689).epsilon(1e-4));
  CHECK(p[1] == doctest::Approx(0.7311).epsilon(1e-4));

  policy.reset(bandit_setup{4, 1, 100});
  for (index_t k = 0; k < 4; ++k) feed(policy, k, static_cast<double>(k + 1), 50);
  policy.select(49, gen);
  p = policy.module_probabilities(0);
  const double expected[] = {0.1416, 0.1976, 0.2758, 0.3849};
  for (int k = 0; k < 4; ++k) CHECK(p[static_cast<std::size_t>(k)] == doctest::Approx(expected[k]).epsilon(1e-3));

  // an unpulled arm's bonus (about 316 sqrt(ln ..)) dominates the first draw
  policy.reset(bandit_setup{3, 2, 100});
  const index_t ids[] = {0, 0};
  const double losses[] = {1.0, 1.0};
  policy.update(ids, losses);
  const index_t ids1[] = {1, 1};
  policy.update(ids1, losses);
  policy.select(3, gen);
  CHECK(policy.first_probabilities()[2] > 0.999f);
}

TEST_CASE("reference softmax UCB matches a plain double recomputation, with and without tree guidance") {
  random::generator data(5);
  for (int trial = 0; trial < 20; ++trial) {
    const index_t n = 2 + static_cast<index_t>(data.below(6)), L = 1 + static_cast<index_t>(data.below(4)), T = 40;
    const index_t t = static_cast<index_t>(data.below(static_cast<std::uint64_t>(T)));
    std::vector<double> sim(static_cast<std::size_t>(n * L)), count(sim.size());
    for (std::size_t i = 0; i < sim.size(); ++i) {
      count[i] = static_cast<double>(data.below(4));
      sim[i] = -count[i] * (1 + 3 * data.uniform());
    }
    std::vector<tree_node> tree;
    if (trial % 2) {  // a root with one internal child (median 0.7) and one leaf child
      tree = balanced_hierarchy(n);
      tree[static_cast<std::size_t>(tree[0].left)].threshold = 0.7;
    }
    softmax_distance_ucb<double> policy;
    policy.reset(bandit_setup{n, L, T, tree});
    policy.load_statistics(sim, count);
    const index_t first = static_cast<index_t>(data.below(static_cast<std::uint64_t>(n)));
    const std::vector<index_t> chosen(static_cast<std::size_t>(L), 0);
    policy.select_replayed(t, first, chosen);
    const auto expected = naive_softmax_ucb(sim, count, n, L, T, t, first, tree);
    std::vector<double> first_got(policy.first_probabilities().begin(), policy.first_probabilities().end());
    CHECK(testing::relative_error(first_got, expected.first) < 1e-12);
    for (index_t l = 0; l < L; ++l) {
      const auto got = policy.module_probabilities(l);
      for (index_t k = 0; k < n; ++k)
        CHECK(got[static_cast<std::size_t>(k)] == doctest::Approx(expected.modules[static_cast<std::size_t>(k * L + l)]).epsilon(1e-12));
    }
  }
}

TEST_CASE("reference softmax UCB draws follow its probabilities; replayed draws are checked") {
  softmax_distance_ucb<double> policy;
  policy.reset(bandit_setup{3, 1, 10});
  feed(policy, 0, 1.0, 5);
  feed(policy, 1, 2.0, 5);
  feed(policy, 2, 3.0, 5);
  random::generator gen(9);
  std::vector<double> freq(3, 0.0);
  const int draws = 20000;
  std::vector<double> p;
  for (int i = 0; i < draws; ++i) {
    freq[static_cast<std::size_t>(policy.select(4, gen)[0])] += 1.0 / draws;
    p = policy.module_probabilities(0);
  }
  for (int k = 0; k < 3; ++k) CHECK(freq[static_cast<std::size_t>(k)] == doctest::Approx(p[static_cast<std::size_t>(k)]).epsilon(0.05));
  const index_t bad[] = {3};
  CHECK_THROWS_WITH_AS(policy.select_replayed(4, 0, bad), doctest::Contains("select_replayed"), std::invalid_argument);
  CHECK_THROWS_AS(policy.select_replayed(4, -1, std::vector<index_t>{0}), std::invalid_argument);
  CHECK_THROWS_AS(policy.select_replayed(4, 0, std::vector<index_t>{0, 0}), std::invalid_argument);
}

TEST_CASE("flat Lcb, Ucb1 and greedy pick what a brute-force index computation picks") {
  random::generator data(3), gen(4);
  const index_t n = 6, L = 2;
  lcb flat_lcb;
  ucb1 u;
  epsilon_greedy greedy(0.0);
  flat_lcb.reset(bandit_setup{n, L, 1});
  u.reset(bandit_setup{n, L, 1});
  greedy.reset(bandit_setup{n, L, 1});
  std::vector<double> sum_l(n * L), cnt_l(n * L), sum_u(n * L), cnt_u(n * L), sum_g(n * L), cnt_g(n * L);
  const auto brute = [&](const std::vector<double>& sum, const std::vector<double>& cnt, index_t l, double c, double log_t,
                         bool unpulled_first) {
    index_t best = -1;
    double best_v = 0;
    for (index_t k = 0; k < n; ++k) {
      const double c_k = cnt[static_cast<std::size_t>(k * L + l)];
      if (c_k == 0 && unpulled_first) return k;
      const double v = c_k == 0 ? -std::numeric_limits<double>::infinity()
                                : sum[static_cast<std::size_t>(k * L + l)] / c_k - c * std::sqrt(log_t / c_k);
      if (best < 0 || v < best_v) best = k, best_v = v;
    }
    return best;
  };
  for (index_t t = 0; t < 200; ++t) {
    const double log_t = std::log(static_cast<double>(t + 1));
    const auto a = flat_lcb.select(t, gen);
    const auto b = u.select(t, gen);
    const auto g = greedy.select(t, gen);
    std::vector<index_t> ia(a.begin(), a.end()), ib(b.begin(), b.end()), ig(g.begin(), g.end());
    std::vector<double> la, lb, lg;
    for (index_t l = 0; l < L; ++l) {
      CHECK(ia[static_cast<std::size_t>(l)] == brute(sum_l, cnt_l, l, 2.0, log_t, false));
      CHECK(ib[static_cast<std::size_t>(l)] == brute(sum_u, cnt_u, l, std::sqrt(2.0), log_t, true));
      CHECK(ig[static_cast<std::size_t>(l)] == brute(sum_g, cnt_g, l, 0.0, log_t, true));
      for (auto [ids, losses, sum, cnt] : {std::tuple{&ia, &la, &sum_l, &cnt_l}, std::tuple{&ib, &lb, &sum_u, &cnt_u},
                                           std::tuple{&ig, &lg, &sum_g, &cnt_g}}) {
        const index_t k = (*ids)[static_cast<std::size_t>(l)];
        losses->push_back(0.2 * static_cast<double>(k % 3) + data.uniform());
        (*sum)[static_cast<std::size_t>(k * L + l)] += losses->back();
        (*cnt)[static_cast<std::size_t>(k * L + l)] += 1;
      }
    }
    flat_lcb.update(ia, la);
    u.update(ib, lb);
    greedy.update(ig, lg);
  }
}

TEST_CASE("smooth-tree Lcb descent matches an independent recursion (exact refresh)") {
  cpu_backend<double> backend;
  random::generator data(17), gen(18);
  // two hierarchies: a balanced tree of single arms, and a task tree with multi-arm leaves (max_depth 2)
  std::vector<std::vector<tree_node>> hierarchies = {balanced_hierarchy(11)};
  {
    const index_t n = 9, L = 3, D = 4;
    task_tree<cpu_backend<double>, l1_similarity, median_split> tree(backend, L, D, tree_options{2, {}});
    std::vector<tensor<cpu_backend<double>>> vectors;
    for (index_t k = 0; k < n; ++k) vectors.push_back(testing::random_tensor(backend, shape{L, D}, 100 + static_cast<std::uint64_t>(k)));
    tree.build(std::move(vectors));
    hierarchies.push_back(tree.nodes());
  }
  for (const auto& nodes : hierarchies) {
    const index_t n = static_cast<index_t>(nodes[0].tasks.size());
    lcb policy;
    policy.reset(bandit_setup{n, 1, 1, nodes});
    std::vector<double> sum(static_cast<std::size_t>(n)), count(static_cast<std::size_t>(n));
    for (index_t t = 0; t < 300; ++t) {
      const double log_t = std::log(static_cast<double>(t + 1));
      const index_t arm = policy.select(t, gen)[0];
      // brute force: descend by the naive bounds, then the min-LCB arm of the leaf
      index_t v = 0;
      while (!nodes[static_cast<std::size_t>(v)].leaf) {
        const auto& node = nodes[static_cast<std::size_t>(v)];
        v = naive_bound(nodes, node.left, sum, count, log_t) <= naive_bound(nodes, node.right, sum, count, log_t) ? node.left : node.right;
      }
      index_t expected = -1;
      double best = 0;
      for (index_t k : nodes[static_cast<std::size_t>(v)].tasks) {
        const double c = count[static_cast<std::size_t>(k)];
        const double value = c == 0 ? -std::numeric_limits<double>::infinity() : sum[static_cast<std::size_t>(k)] / c - 2 * std::sqrt(log_t / c);
        if (expected < 0 || value < best) expected = k, best = value;
      }
      REQUIRE(arm == expected);
      const double root_bound = naive_bound(nodes, 0, sum, count, log_t);
      if (std::isinf(root_bound)) CHECK(policy.bound(0, 0) == root_bound);
      else CHECK(policy.bound(0, 0) == doctest::Approx(root_bound));
      const double loss = 0.1 * static_cast<double>(std::abs(arm - 3)) + 0.3 * data.uniform();
      feed(policy, arm, loss, 1);
      sum[static_cast<std::size_t>(arm)] += loss;
      count[static_cast<std::size_t>(arm)] += 1;
    }
  }
}

TEST_CASE("Thompson sampling and path-refresh Lcb concentrate on the best arm; uniform spreads evenly") {
  const auto means = smooth_tree_means(8, 5);
  const auto hierarchy = balanced_hierarchy(8);
  const auto best_share = [&](auto policy, std::span<const tree_node> tree) {
    policy.reset(bandit_setup{8, 1, 1, tree});
    random::generator gen(21), noise(22);
    int best = 0;
    const int steps = 4000;
    for (index_t t = 0; t < steps; ++t) {
      const index_t arm = policy.select(t, gen)[0];
      feed(policy, arm, means[static_cast<std::size_t>(arm)] + 0.1 * noise.normal(), 1);
      best += (t >= steps / 2 && arm == 5);
    }
    return best / (steps / 2.0);
  };
  CHECK(best_share(thompson_sampling(0.3), {}) > 0.8);
  CHECK(best_share(lcb(2.0, 0.0, lcb_refresh::path), hierarchy) > 0.8);
  CHECK(best_share(epsilon_greedy(0.1), {}) > 0.8);
  const double uniform_share = best_share(uniform_policy{}, {});
  CHECK(uniform_share == doctest::Approx(1.0 / 8).epsilon(0.25));
}

TEST_CASE("exhaustive takes the minimum observed loss per module and needs observe_all first") {
  exhaustive policy;
  random::generator gen(1);
  policy.reset(bandit_setup{3, 2, 1});
  CHECK_THROWS_AS(policy.select(0, gen), std::invalid_argument);
  const double losses[] = {3, 1, 2, 5, 0.5, 9};  // [arm, module]
  policy.observe_all(losses);
  const auto ids = policy.select(0, gen);
  CHECK(ids[0] == 2);
  CHECK(ids[1] == 0);
  CHECK_THROWS_AS(policy.observe_all(std::vector<double>(5)), std::invalid_argument);
}

TEST_CASE("policies reject bad set-ups and updates with messages that name them") {
  lcb a;
  CHECK_THROWS_WITH_AS(a.reset(bandit_setup{0, 1, 1}), doctest::Contains("lcb::reset"), std::invalid_argument);
  softmax_distance_ucb<float> s;
  CHECK_THROWS_WITH_AS(s.reset(bandit_setup{0, 2, 5}), doctest::Contains("n_arms = 0"), std::invalid_argument);
  ucb1 u;
  u.reset(bandit_setup{2, 2, 1});
  const index_t one[] = {0};
  const double loss[] = {1.0};
  CHECK_THROWS_AS(u.update(one, loss), std::invalid_argument);
  const index_t outside[] = {0, 2};
  const double losses[] = {1.0, 1.0};
  CHECK_THROWS_WITH_AS(u.update(outside, losses), doctest::Contains("arm 2"), std::invalid_argument);
  // a hierarchy whose leaves do not cover exactly the arms is refused
  lcb b;
  CHECK_THROWS_AS(b.reset(bandit_setup{3, 1, 1, balanced_hierarchy(4)}), std::invalid_argument);
  CHECK_THROWS_AS(s.reset(bandit_setup{4, 1, 1, balanced_hierarchy(3)}), std::invalid_argument);
  CHECK_THROWS_AS(thompson_sampling(0.0), std::invalid_argument);
  CHECK_THROWS_AS(epsilon_greedy(1.5), std::invalid_argument);
}

TEST_CASE_TEMPLATE("tree_bandit observes the L1 residual of each module's pick on the backend", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t n = 5, L = 3, D = 7;
  std::vector<tensor<B>> arms;
  for (index_t k = 0; k < n; ++k) arms.push_back(testing::random_tensor(backend, shape{L, D}, 40 + static_cast<std::uint64_t>(k)));
  const auto current = testing::random_tensor(backend, shape{L, D}, 99);
  const auto host_current = current.to_host();
  const auto residual = [&](index_t k, index_t l) {
    const auto a = arms[static_cast<std::size_t>(k)].to_host();
    double s = 0;
    for (index_t j = 0; j < D; ++j) s += std::abs(static_cast<double>(host_current[static_cast<std::size_t>(l * D + j)]) - static_cast<double>(a[static_cast<std::size_t>(l * D + j)]));
    return s;
  };
  tree_bandit<B, exhaustive> full(backend);
  full.reset(std::span<const tensor<B>>(arms), 10);
  const auto ids = full.step(current, 0);
  for (index_t l = 0; l < L; ++l) {
    index_t best = 0;
    for (index_t k = 1; k < n; ++k)
      if (residual(k, l) < residual(best, l)) best = k;
    CHECK(ids[static_cast<std::size_t>(l)] == best);
    CHECK(full.losses()[static_cast<std::size_t>(l)] == doctest::Approx(residual(best, l)).epsilon(10 * testing::tolerance_v<B>));
  }
  tree_bandit<B, softmax_distance_ucb<typename B::scalar_type>> reference(backend, {}, 3);
  reference.reset(std::span<const tensor<B>>(arms), 10);
  for (index_t t = 0; t < 4; ++t) {
    const auto picked = reference.step(current, t);
    for (index_t l = 0; l < L; ++l)
      CHECK(reference.losses()[static_cast<std::size_t>(l)] == doctest::Approx(residual(picked[static_cast<std::size_t>(l)], l)).epsilon(10 * testing::tolerance_v<B>));
  }
  double counted = 0;
  for (auto c : reference.policy().counts()) counted += static_cast<double>(c);
  CHECK(counted == 4 * L);
  reference.reset();  // epoch start: statistics back to zero
  for (auto c : reference.policy().counts()) CHECK(c == 0);
  CHECK_THROWS_WITH_AS(reference.step(tensor<B>(backend, shape{L, D + 1}), 0), doctest::Contains("tree_bandit::step"), std::invalid_argument);
  CHECK_THROWS_AS(reference.reset(std::vector<const_tensor_view<B>>{}, 10), std::invalid_argument);
  std::vector<tensor<B>> mixed;
  mixed.emplace_back(backend, shape{L, D});
  mixed.emplace_back(backend, shape{L + 1, D});
  CHECK_THROWS_AS(reference.reset(std::span<const tensor<B>>(mixed), 10), std::invalid_argument);
}

TEST_CASE("Lcb regret on a smooth-tree instance grows sublinearly in T; uniform's grows linearly") {
  const index_t n = 16, horizon = 1 << 15;
  const auto means = smooth_tree_means(n, 11);
  const auto hierarchy = balanced_hierarchy(n);
  std::vector<double> x, lcb_regret(6, 0.0), uniform_regret(6, 0.0);
  for (int i = 0; i < 6; ++i) x.push_back(static_cast<double>(horizon >> (5 - i)));
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    lcb tree_lcb;
    uniform_policy uniform;
    const auto a = simulate_regret(tree_lcb, means, horizon, 0.2, seed, hierarchy);
    const auto b = simulate_regret(uniform, means, horizon, 0.2, seed);
    for (int i = 0; i < 6; ++i) {
      lcb_regret[static_cast<std::size_t>(i)] += a[static_cast<std::size_t>(x[static_cast<std::size_t>(i)]) - 1] / 3;
      uniform_regret[static_cast<std::size_t>(i)] += b[static_cast<std::size_t>(x[static_cast<std::size_t>(i)]) - 1] / 3;
    }
  }
  const double slope = log_log_slope(x, lcb_regret), uniform_slope = log_log_slope(x, uniform_regret);
  MESSAGE("log-log regret slope over T = 1024..32768: lcb " << slope << ", uniform " << uniform_slope
                                                            << "; lcb regret at T = 32768: " << lcb_regret.back());
  CHECK(slope < 0.7);
  CHECK(uniform_slope > 0.95);
  CHECK(lcb_regret.back() < 0.1 * uniform_regret.back());
}

TEST_CASE("simulate_bandit: its regret curve and pull counts equal a replay of the same policy written out here") {
  const index_t n = 8, steps = 400, from = 150;
  const auto means = smooth_tree_means(n, 5);
  const auto hierarchy = balanced_hierarchy(n);
  const auto replay = [&](auto policy, std::span<const tree_node> tree) {  // the loop, by hand
    policy.reset(bandit_setup{n, 1, steps, tree});
    random::generator choices(9), environment(random::mix64(9 ^ 0x5eedULL));
    bandit_run run{{}, std::vector<index_t>(std::size_t(n), 0)};
    std::vector<double> all(static_cast<std::size_t>(n));
    double regret = 0;
    for (index_t t = 0; t < steps; ++t) {
      for (index_t k = 0; k < n; ++k) all[std::size_t(k)] = means[std::size_t(k)] + 0.3 * environment.normal();
      if constexpr (FullInformationPolicy<decltype(policy)>) policy.observe_all(all);
      const index_t arm = policy.select(t, choices)[0];
      policy.update(std::span<const index_t>(&arm, 1), std::span<const double>(&all[std::size_t(arm)], 1));
      regret += means[std::size_t(arm)] - means[5];
      run.regret.push_back(regret);
      if (t >= from) ++run.pulls[std::size_t(arm)];
    }
    return run;
  };
  const auto check = [&](auto policy, std::span<const tree_node> tree) {
    auto copy = policy;
    const bandit_run got = simulate_bandit(copy, means, steps, 0.3, 9, tree, from);
    const bandit_run expected = replay(policy, tree);
    CHECK(got.regret == expected.regret);
    CHECK(got.pulls == expected.pulls);
    index_t total = 0;
    for (index_t p : got.pulls) total += p;
    CHECK(total == steps - from);
    auto again = policy;
    CHECK(simulate_regret(again, means, steps, 0.3, 9, tree) == got.regret);
  };
  check(lcb(), hierarchy);
  check(ucb1(), {});
  check(thompson_sampling(0.3), {});
  check(epsilon_greedy(0.1), {});
  check(softmax_distance_ucb<float>(), hierarchy);
  check(uniform_policy(), {});
  check(exhaustive(), {});
  // a policy that chooses an arm outside the instance is refused, not read out of bounds
  struct out_of_range {
    std::vector<index_t> chosen{3};
    void reset(const bandit_setup&) {}
    std::span<const index_t> select(index_t, random::generator&) const { return chosen; }
    void update(std::span<const index_t>, std::span<const double>) {}
    static std::string_view name() { return "out of range"; }
  } bad;
  const std::vector<double> two = {0.1, 0.2};
  CHECK_THROWS_WITH_AS(simulate_bandit(bad, two, 5, 0.1, 1), doctest::Contains("chose arm 3 of 2 at step 0"), std::runtime_error);
  CHECK_THROWS_WITH_AS(simulate_bandit(bad, two, -1, 0.1, 1), doctest::Contains("steps -1"), std::invalid_argument);
}
