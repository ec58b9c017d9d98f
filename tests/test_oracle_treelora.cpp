// The released TreeLoRA code's outputs (tests/data/oracle/treelora_reference.json; its format is in the
// README.md beside it) reproduced in reference mode on cpu_backend<float>: every tree exactly (membership,
// order, depth, leaves) with its medians, and every recorded selection step (first-draw and per-module
// probabilities, sim and count afterwards) when the recorded draws are replayed. Also checks the test-only
// JSON reader. The data folder comes from the compile definition TREELORA_TEST_DATA_DIR (tests/CMakeLists.txt).
#include "test_support.hpp"

#include <cstdio>
#include <utility>

#include "json_reader.hpp"
#include "treelora/bandit.hpp"
#include "treelora/tree.hpp"

using namespace treelora;
using treelora::testing::json;
using backend_type = cpu_backend<float>;

namespace {

const json& oracle() {
  static const json data = json::parse_file(std::string(TREELORA_TEST_DATA_DIR) + "/oracle/treelora_reference.json");
  return data;
}

/// acc [n, L, D] flat -> n tensors [L, D].
std::vector<tensor<backend_type>> split_tasks(backend_type& backend, const json& flat, index_t n, index_t L, index_t D) {
  const auto values = flat.as_vector<float>();
  REQUIRE(static_cast<index_t>(values.size()) == n * L * D);
  std::vector<tensor<backend_type>> out;
  for (index_t k = 0; k < n; ++k)
    out.push_back(tensor<backend_type>::from_host(
        backend, shape{L, D}, std::span<const float>(values.data() + k * L * D, static_cast<std::size_t>(L * D))));
  return out;
}

struct worst_error {
  double relative = 0;  ///< max |a - b| / max(|b|, floor)
  void add(double a, double b, double floor) { relative = std::max(relative, std::abs(a - b) / std::max(std::abs(b), floor)); }
};

/// Node-by-node comparison of our tree with the oracle's; returns false at the first structural mismatch.
template <class Tree>
bool same_tree(const Tree& tree, index_t index, const json& expected, worst_error& median_error) {
  const tree_node& node = tree.nodes()[static_cast<std::size_t>(index)];
  const auto tasks = expected["tasks"].template as_vector<index_t>();
  if (node.tasks != tasks || node.depth != expected["depth"].integer() || node.leaf != expected["leaf"].boolean())
    return false;
  if (node.leaf) return true;
  median_error.add(node.threshold, expected["median"].number(), 1.0);
  return same_tree(tree, node.left, expected["left"], median_error) &&
         same_tree(tree, node.right, expected["right"], median_error);
}

}  // namespace

TEST_CASE("json reader: values, nesting, and malformed input") {
  const json v = json::parse(R"( {"a": [1, -2.5e1, true, null, "x\"y"], "b": {"c": false}, "d": []} )");
  CHECK(v["a"].size() == 5);
  CHECK(v["a"][1].number() == -25.0);
  CHECK(v["a"][2].boolean());
  CHECK(v["a"][3].is_null());
  CHECK(v["a"][4].string() == "x\"y");
  CHECK_FALSE(v["b"]["c"].boolean());
  CHECK(v["d"].size() == 0);
  for (const char* bad : {"{", "[1,]", "{\"a\" 1}", "tru", "[1 2]", "\"open", "{} x", "-"})
    CHECK_THROWS_AS(json::parse(bad), std::runtime_error);
  CHECK_THROWS_AS(v["missing"], std::runtime_error);
}

TEST_CASE("reference tree build reproduces every oracle tree") {
  backend_type backend;
  const auto& cases = oracle()["tree_cases"];
  REQUIRE(cases.size() == 16);
  worst_error median_error;
  std::size_t matched = 0;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const auto& tc = cases[c];
    const index_t n = tc["n_tasks"].integer(), L = tc["n_modules"].integer(), D = tc["dim"].integer();
    const auto acc = split_tasks(backend, tc["acc"], n, L, D);
    task_tree<backend_type> tree(backend, L, D);
    tree.build(drift_vectors<backend_type>(acc));
    const bool same = same_tree(tree, 0, tc["tree"], median_error);
    CHECK_MESSAGE(same, "tree case " << c << " differs:\n" << tree.to_string());
    matched += same;
  }
  MESSAGE("oracle trees matched: " << matched << " / " << cases.size() << ", worst median error " << median_error.relative);
  CHECK(matched == cases.size());
  CHECK(median_error.relative < 1e-5);
}

TEST_CASE("reference selection follows every oracle step with the recorded draws") {
  backend_type backend;
  const auto& cases = oracle()["search_cases"];
  REQUIRE(cases.size() == 6);
  // Two errors: `replay` follows the whole path on our own statistics, whose sim entries differ from
  // torch's by an ulp where the two L1 sums round differently (the summation order); softmax turns an ulp
  // of a logit in the hundreds into ~1e-5 of a probability. `restored` restarts every step from the
  // oracle's previous sim/count, which isolates the selection arithmetic.
  worst_error replay_error, restored_error, statistic_error;
  std::size_t steps = 0;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const auto& sc = cases[c];
    const index_t n = sc["n_prev"].integer(), L = sc["n_modules"].integer(), D = sc["dim"].integer(),
                  T = sc["T"].integer();
    const auto acc = split_tasks(backend, sc["acc"], n, L, D);
    task_tree<backend_type> tree(backend, L, D);
    tree.build(drift_vectors<backend_type>(acc));
    worst_error ignored;
    REQUIRE_MESSAGE(same_tree(tree, 0, sc["tree"], ignored), "search case " << c << " tree");
    tree_bandit<backend_type, softmax_distance_ucb<float>> bandit(backend), restarted(backend);
    bandit.reset(std::span<const tensor<backend_type>>(acc), T, tree.nodes());
    restarted.reset(std::span<const tensor<backend_type>>(acc), T, tree.nodes());
    const json* previous = nullptr;
    for (const auto& step : sc["steps"].elements()) {
      const auto cur_values = step["cur"].as_vector<float>();
      const auto cur = tensor<backend_type>::from_host(backend, shape{L, D}, cur_values);
      const auto chosen = step["chosen"].as_vector<index_t>();
      if (previous)
        restarted.policy().load_statistics((*previous)["sim_after"].as_vector<float>(),
                                           (*previous)["count_after"].as_vector<float>());
      previous = &step;
      restarted.step_replayed(cur, step["t"].integer(), step["first_chosen"].integer(), chosen);
      const auto ids = bandit.step_replayed(cur, step["t"].integer(), step["first_chosen"].integer(), chosen);
      CHECK(std::vector<index_t>(ids.begin(), ids.end()) == chosen);
      const auto& policy = bandit.policy();
      CHECK(policy.first_draw() == step["first_chosen"].integer());
      const auto first = step["first_probs"].as_vector<double>();
      for (auto [p, error] : {std::pair{&policy, &replay_error}, std::pair{&std::as_const(restarted).policy(), &restored_error}}) {
        for (index_t k = 0; k < n; ++k)  // probabilities below 1e-3 are compared absolutely (floor)
          error->add(p->first_probabilities()[static_cast<std::size_t>(k)], first[static_cast<std::size_t>(k)], 1e-3);
        for (index_t l = 0; l < L; ++l) {
          const auto expected = step["module_probs"][static_cast<std::size_t>(l)].as_vector<double>();
          const auto got = p->module_probabilities(l);
          for (index_t k = 0; k < n; ++k)
            error->add(got[static_cast<std::size_t>(k)], expected[static_cast<std::size_t>(k)], 1e-3);
        }
      }
      const auto sim = step["sim_after"].as_vector<double>(), count = step["count_after"].as_vector<double>();
      for (std::size_t i = 0; i < sim.size(); ++i) {
        statistic_error.add(policy.similarity_sums()[i], sim[i], 1.0);
        CHECK(policy.counts()[i] == count[i]);
      }
      ++steps;
    }
  }
  MESSAGE("oracle steps followed: " << steps << ", worst probability error: restored " << restored_error.relative
                                    << ", replayed path " << replay_error.relative << "; worst sim error "
                                    << statistic_error.relative);
  CHECK(steps == 64);
  CHECK(restored_error.relative < 1e-5);
  CHECK(replay_error.relative < 5e-5);
  CHECK(statistic_error.relative < 1e-5);
}
