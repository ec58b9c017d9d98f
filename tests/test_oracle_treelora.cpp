// The released TreeLoRA code's outputs (tests/data/oracle/treelora_reference.json; its format is in the
// README.md beside it) reproduced in reference mode on cpu_backend<float>: every tree exactly (membership,
// order, depth, leaves) with its medians, and every recorded selection step (first-draw and per-module
// probabilities, sim and count afterwards) when the recorded draws are replayed. The oracle is read with
// treelora::json (nlohmann::json; the reader's own checks are in test_hardening.cpp). The data folder comes from
// the compile definition TREELORA_TEST_DATA_DIR (tests/CMakeLists.txt).
#include "test_support.hpp"

#include <cstdio>
#include <utility>

#include "treelora/io/json.hpp"
#include "treelora/bandit.hpp"
#include "treelora/tree.hpp"

using namespace treelora;
namespace json = treelora::json;
using backend_type = cpu_backend<float>;

namespace {

const json::value& oracle() {
  static const json::value data = json::parse_file(std::string(TREELORA_TEST_DATA_DIR) + "/oracle/treelora_reference.json");
  return data;
}

/// acc [n, L, D] flat -> n tensors [L, D].
std::vector<tensor<backend_type>> split_tasks(backend_type& backend, const json::value& flat, index_t n, index_t L, index_t D) {
  const auto values = flat.get<std::vector<float>>();
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
bool same_tree(const Tree& tree, index_t index, const json::value& expected, worst_error& median_error) {
  const tree_node& node = tree.nodes()[static_cast<std::size_t>(index)];
  const auto tasks = expected.at("tasks").template get<std::vector<index_t>>();
  if (node.tasks != tasks || node.depth != expected.at("depth").get<index_t>() || node.leaf != expected.at("leaf").get<bool>())
    return false;
  if (node.leaf) return true;
  median_error.add(node.threshold, expected.at("median").get<double>(), 1.0);
  return same_tree(tree, node.left, expected.at("left"), median_error) &&
         same_tree(tree, node.right, expected.at("right"), median_error);
}

}  // namespace

TEST_CASE("reference tree build reproduces every oracle tree") {
  backend_type backend;
  const auto& cases = oracle().at("tree_cases");
  REQUIRE(cases.size() == 16);
  worst_error median_error;
  std::size_t matched = 0;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const auto& tc = cases.at(c);
    const index_t n = tc.at("n_tasks").get<index_t>(), L = tc.at("n_modules").get<index_t>(), D = tc.at("dim").get<index_t>();
    const auto acc = split_tasks(backend, tc.at("acc"), n, L, D);
    task_tree<backend_type> tree(backend, L, D);
    tree.build(drift_vectors<backend_type>(acc));
    const bool same = same_tree(tree, 0, tc.at("tree"), median_error);
    CHECK_MESSAGE(same, "tree case " << c << " differs:\n" << tree.to_string());
    matched += same;
  }
  MESSAGE("oracle trees matched: " << matched << " / " << cases.size() << ", worst median error " << median_error.relative);
  CHECK(matched == cases.size());
  CHECK(median_error.relative < 1e-5);
}

TEST_CASE("reference selection follows every oracle step with the recorded draws") {
  backend_type backend;
  const auto& cases = oracle().at("search_cases");
  REQUIRE(cases.size() == 6);
  // Two errors: `replay` follows the whole path on our own statistics, whose sim entries differ from
  // torch's by an ulp where the two L1 sums round differently (the summation order); softmax turns an ulp
  // of a logit in the hundreds into ~1e-5 of a probability. `restored` restarts every step from the
  // oracle's previous sim/count, which isolates the selection arithmetic.
  worst_error replay_error, restored_error, statistic_error;
  std::size_t steps = 0;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const auto& sc = cases.at(c);
    const index_t n = sc.at("n_prev").get<index_t>(), L = sc.at("n_modules").get<index_t>(), D = sc.at("dim").get<index_t>(),
                  T = sc.at("T").get<index_t>();
    const auto acc = split_tasks(backend, sc.at("acc"), n, L, D);
    task_tree<backend_type> tree(backend, L, D);
    tree.build(drift_vectors<backend_type>(acc));
    worst_error ignored;
    REQUIRE_MESSAGE(same_tree(tree, 0, sc.at("tree"), ignored), "search case " << c << " tree");
    tree_bandit<backend_type, softmax_distance_ucb<float>> bandit(backend), restarted(backend);
    bandit.reset(std::span<const tensor<backend_type>>(acc), T, tree.nodes());
    restarted.reset(std::span<const tensor<backend_type>>(acc), T, tree.nodes());
    const json::value* previous = nullptr;
    for (const auto& step : sc.at("steps")) {
      const auto cur_values = step.at("cur").get<std::vector<float>>();
      const auto cur = tensor<backend_type>::from_host(backend, shape{L, D}, cur_values);
      const auto chosen = step.at("chosen").get<std::vector<index_t>>();
      if (previous)
        restarted.policy().load_statistics((*previous).at("sim_after").get<std::vector<float>>(),
                                           (*previous).at("count_after").get<std::vector<float>>());
      previous = &step;
      restarted.step_replayed(cur, step.at("t").get<index_t>(), step.at("first_chosen").get<index_t>(), chosen);
      const auto ids = bandit.step_replayed(cur, step.at("t").get<index_t>(), step.at("first_chosen").get<index_t>(), chosen);
      CHECK(std::vector<index_t>(ids.begin(), ids.end()) == chosen);
      const auto& policy = bandit.policy();
      CHECK(policy.first_draw() == step.at("first_chosen").get<index_t>());
      const auto first = step.at("first_probs").get<std::vector<double>>();
      for (auto [p, error] : {std::pair{&policy, &replay_error}, std::pair{&std::as_const(restarted).policy(), &restored_error}}) {
        for (index_t k = 0; k < n; ++k)  // probabilities below 1e-3 are compared absolutely (floor)
          error->add(p->first_probabilities()[static_cast<std::size_t>(k)], first[static_cast<std::size_t>(k)], 1e-3);
        for (index_t l = 0; l < L; ++l) {
          const auto expected = step.at("module_probs").at(static_cast<std::size_t>(l)).get<std::vector<double>>();
          const auto got = p->module_probabilities(l);
          for (index_t k = 0; k < n; ++k)
            error->add(got[static_cast<std::size_t>(k)], expected[static_cast<std::size_t>(k)], 1e-3);
        }
      }
      const auto sim = step.at("sim_after").get<std::vector<double>>(), count = step.at("count_after").get<std::vector<double>>();
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
