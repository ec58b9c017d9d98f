// The task tree: the toy split of docs/treelora.md, a brute-force tree on the host for every similarity x split
// policy, the positional fallback, layer maps, incremental insertion and the storage budget, printing,
// drift vectors, planted-hierarchy recovery (adjusted Rand index) and the ARI itself.
#include "test_support.hpp"

#include <functional>
#include <map>
#include <numeric>
#include <set>

#include "treelora/tree.hpp"

using namespace treelora;

namespace {

template <class B>
std::vector<tensor<B>> host_vectors(B& backend, const std::vector<std::vector<double>>& values, index_t L, index_t D) {
  std::vector<tensor<B>> out;
  for (const auto& v : values) {
    std::vector<typename B::scalar_type> cast(v.begin(), v.end());
    out.push_back(tensor<B>::from_host(backend, shape{L, D}, cast));
  }
  return out;
}

// ---- brute force: the docs/treelora.md 1.1 recursion written plainly on host doubles
struct naive_node {
  std::vector<index_t> tasks;
  index_t depth;
  bool leaf;
  double threshold = 0;
  bool ambiguous = false;  ///< two scores (or a score and a mean threshold) within rounding: either split is right
  std::unique_ptr<naive_node> left, right;
};
using score_fn = std::function<double(const double*, const double*, index_t)>;
using split_fn = std::function<std::pair<double, std::function<bool(double)>>(std::vector<double>)>;

std::unique_ptr<naive_node> naive_build(const std::vector<std::vector<double>>& g, std::vector<index_t> tasks,
                                        index_t depth, index_t L, index_t D, const score_fn& score,
                                        const split_fn& split) {
  auto node = std::make_unique<naive_node>();
  node->tasks = tasks;
  node->depth = depth;
  node->leaf = depth >= L || tasks.size() <= 1;
  if (node->leaf) return node;
  std::vector<double> mean(static_cast<std::size_t>(D), 0.0), scores;
  for (index_t k : tasks)
    for (index_t j = 0; j < D; ++j) mean[static_cast<std::size_t>(j)] += g[static_cast<std::size_t>(k)][static_cast<std::size_t>(depth * D + j)] / static_cast<double>(tasks.size());
  for (index_t k : tasks) scores.push_back(score(g[static_cast<std::size_t>(k)].data() + depth * D, mean.data(), D));
  auto [threshold, left_side] = split(scores);
  std::vector<double> sorted = scores;
  std::sort(sorted.begin(), sorted.end());
  const double scale = 1e-4 * std::max(1.0, std::abs(sorted.back()) + std::abs(sorted.front()));
  for (std::size_t i = 1; i < sorted.size(); ++i) node->ambiguous |= sorted[i] - sorted[i - 1] < scale;
  for (double v : scores) node->ambiguous |= v != threshold && std::abs(v - threshold) < scale;
  std::vector<index_t> left, right;
  for (std::size_t i = 0; i < tasks.size(); ++i) (left_side(scores[i]) ? left : right).push_back(tasks[i]);
  if (left.empty() || right.empty()) {
    left.assign(tasks.begin(), tasks.begin() + static_cast<std::ptrdiff_t>(tasks.size() / 2));
    right.assign(tasks.begin() + static_cast<std::ptrdiff_t>(tasks.size() / 2), tasks.end());
  }
  node->threshold = threshold;
  node->left = naive_build(g, left, depth + 1, L, D, score, split);
  node->right = naive_build(g, right, depth + 1, L, D, score, split);
  return node;
}

template <class Tree>
bool same_as_naive(const Tree& tree, index_t index, const naive_node& expected, double tolerance) {
  const auto& node = tree.nodes()[static_cast<std::size_t>(index)];
  if (node.tasks != expected.tasks || node.depth != expected.depth || node.leaf != expected.leaf) return false;
  if (node.leaf || expected.ambiguous) return true;
  if (std::abs(node.threshold - expected.threshold) > tolerance * std::max(1.0, std::abs(expected.threshold))) return false;
  return same_as_naive(tree, node.left, *expected.left, tolerance) && same_as_naive(tree, node.right, *expected.right, tolerance);
}

/// Structural invariants: children partition their parent, leaves partition the entries, parents link back.
template <class Tree>
void check_invariants(const Tree& tree) {
  const auto& nodes = tree.nodes();
  REQUIRE_FALSE(nodes.empty());
  std::multiset<index_t> in_leaves;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const auto& n = nodes[i];
    CHECK_FALSE(n.tasks.empty());
    if (n.leaf) {
      in_leaves.insert(n.tasks.begin(), n.tasks.end());
      continue;
    }
    const auto& l = nodes[static_cast<std::size_t>(n.left)];
    const auto& r = nodes[static_cast<std::size_t>(n.right)];
    CHECK(l.parent == static_cast<index_t>(i));
    CHECK(r.parent == static_cast<index_t>(i));
    std::multiset<index_t> children(l.tasks.begin(), l.tasks.end());
    children.insert(r.tasks.begin(), r.tasks.end());
    CHECK(children == std::multiset<index_t>(n.tasks.begin(), n.tasks.end()));
  }
  std::multiset<index_t> all;
  for (index_t k = 0; k < tree.size(); ++k) all.insert(k);
  CHECK(in_leaves == all);
}

double naive_dot(const double* a, const double* b, index_t d) {
  double s = 0;
  for (index_t j = 0; j < d; ++j) s += a[j] * b[j];
  return s;
}

}  // namespace

TEST_CASE_TEMPLATE("toy (docs/treelora.md): 8 tasks with distinct scores split 5 / 3 at the root", B, TREELORA_TEST_BACKENDS) {
  B backend;
  std::vector<std::vector<double>> values;
  for (int k : {3, 8, 1, 5, 7, 2, 6, 4}) values.push_back({static_cast<double>(k)});
  task_tree<B> tree(backend, 1, 1);
  tree.build(host_vectors(backend, values, 1, 1));
  const auto& root = tree.root();
  REQUIRE_FALSE(root.leaf);
  // mean 4.5, scores 4.5 v, lower median = 4 * 4.5 = 18, >= goes left in the original order
  CHECK(root.threshold == doctest::Approx(18.0));
  CHECK(tree.nodes()[static_cast<std::size_t>(root.left)].tasks == std::vector<index_t>{1, 3, 4, 6, 7});
  CHECK(tree.nodes()[static_cast<std::size_t>(root.right)].tasks == std::vector<index_t>{0, 2, 5});
  CHECK(tree.nodes()[static_cast<std::size_t>(root.left)].leaf);  // depth 1 >= L = 1
}

TEST_CASE_TEMPLATE("every similarity x split policy matches a brute-force build", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t n = 13, L = 4, D = 6;
  random::generator gen(42);
  std::vector<std::vector<double>> values(n, std::vector<double>(static_cast<std::size_t>(L * D)));
  for (auto& v : values)
    for (auto& x : v) x = gen.normal() + 0.5;
  const score_fn dot_score = naive_dot;
  const score_fn l1_score = [](const double* a, const double* b, index_t d) {
    double s = 0;
    for (index_t j = 0; j < d; ++j) s += std::abs(a[j] - b[j]);
    return s;
  };
  const score_fn cos_score = [](const double* a, const double* b, index_t d) {
    return naive_dot(a, b, d) / (std::sqrt(naive_dot(a, a, d)) * std::sqrt(naive_dot(b, b, d)) + 1e-12);
  };
  const split_fn lower = [](std::vector<double> s) {
    std::sort(s.begin(), s.end());
    const double t = s[(s.size() - 1) / 2];
    return std::pair{t, std::function<bool(double)>([t](double x) { return x >= t; })};
  };
  const split_fn median = [](std::vector<double> s) {
    std::sort(s.begin(), s.end());
    const std::size_t m = s.size();
    const double t = m % 2 ? s[m / 2] : 0.5 * (s[m / 2 - 1] + s[m / 2]);
    return std::pair{t, std::function<bool(double)>([t](double x) { return x >= t; })};
  };
  const split_fn mean = [](std::vector<double> s) {
    const double t = std::accumulate(s.begin(), s.end(), 0.0) / static_cast<double>(s.size());
    return std::pair{t, std::function<bool(double)>([t](double x) { return x > t; })};
  };
  std::vector<index_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  const double tol = 100 * testing::tolerance_v<B>;
  const auto vectors = host_vectors(backend, values, L, D);
  const auto check = [&]<class S, class P>(S, P, const score_fn& score, const split_fn& split) {
    task_tree<B, S, P> tree(backend, L, D);
    tree.build(vectors);
    check_invariants(tree);
    const auto expected = naive_build(values, all, 0, L, D, score, split);
    CHECK_MESSAGE(same_as_naive(tree, 0, *expected, tol), S::name() << " / " << P::name() << "\n" << tree.to_string());
  };
  check(dot_similarity{}, lower_median_split{}, dot_score, lower);
  check(dot_similarity{}, median_split{}, dot_score, median);
  check(dot_similarity{}, mean_split{}, dot_score, mean);
  check(l1_similarity{}, lower_median_split{}, l1_score, lower);
  check(l1_similarity{}, median_split{}, l1_score, median);
  check(l1_similarity{}, mean_split{}, l1_score, mean);
  check(cosine_similarity{}, lower_median_split{}, cos_score, lower);
  check(cosine_similarity{}, median_split{}, cos_score, median);
  check(cosine_similarity{}, mean_split{}, cos_score, mean);
}

TEST_CASE_TEMPLATE("equal scores take the positional fallback: first floor(n/2) left", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const std::vector<std::vector<double>> values(5, std::vector<double>{1.0, 2.0});
  task_tree<B> tree(backend, 1, 2);
  tree.build(host_vectors(backend, values, 1, 2));
  CHECK(tree.nodes()[static_cast<std::size_t>(tree.root().left)].tasks == std::vector<index_t>{0, 1});
  CHECK(tree.nodes()[static_cast<std::size_t>(tree.root().right)].tasks == std::vector<index_t>{2, 3, 4});
}

TEST_CASE_TEMPLATE("layer map and depth: level d splits on layer_map[d]; bad maps throw", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t L = 4, D = 3, n = 8;
  random::generator gen(7);
  std::vector<std::vector<double>> values(n, std::vector<double>(static_cast<std::size_t>(L * D)));
  for (auto& v : values)
    for (auto& x : v) x = gen.normal();
  tree_options options;
  options.layer_map = {3, 1};
  task_tree<B, l1_similarity, median_split> tree(backend, L, D, options);
  tree.build(host_vectors(backend, values, L, D));
  check_invariants(tree);
  CHECK(tree.height() == 2);
  for (const auto& node : tree.nodes())
    if (!node.leaf) CHECK(node.module == options.layer_map[static_cast<std::size_t>(node.depth)]);
  CHECK(tree.root().module == 3);

  CHECK_THROWS_AS((task_tree<B>(backend, L, D, tree_options{-1, {0, 4}})), std::invalid_argument);
  CHECK_THROWS_AS((task_tree<B>(backend, L, D, tree_options{5, {}})), std::invalid_argument);
  CHECK_THROWS_AS((task_tree<B>(backend, L, D, tree_options{3, {0, 1}})), std::invalid_argument);
  CHECK_THROWS_AS((task_tree<B>(backend, 0, D)), std::invalid_argument);
  task_tree<B> plain(backend, L, D);
  std::vector<tensor<B>> wrong;
  wrong.emplace_back(backend, shape{L, D + 1});
  CHECK_THROWS_WITH_AS(plain.build(std::move(wrong)), doctest::Contains("task_tree::build"), std::invalid_argument);
  CHECK_THROWS_AS(plain.insert(tensor<B>(backend, shape{L - 1, D})), std::invalid_argument);
  CHECK_THROWS_AS(plain.root(), std::invalid_argument);
}

TEST_CASE_TEMPLATE("insert routes each new task by the split rules and keeps the tree valid", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t L = 3, D = 5, n = 20;
  random::generator gen(11);
  task_tree<B, l1_similarity, median_split> tree(backend, L, D);
  for (index_t k = 0; k < n; ++k) {
    std::vector<double> v(static_cast<std::size_t>(L * D));
    for (auto& x : v) x = gen.normal();
    auto t = host_vectors(backend, {v}, L, D).front();
    // the leaf the rules route it to, computed from the tree before the insert
    index_t expected_leaf_parent = -1;
    if (tree.size() > 0) {
      index_t node = 0;
      while (!tree.nodes()[static_cast<std::size_t>(node)].leaf) {
        const auto& nd = tree.nodes()[static_cast<std::size_t>(node)];
        const auto mean = tree.mean(node).to_host();
        double s = 0;
        for (index_t j = 0; j < D; ++j) s += std::abs(v[static_cast<std::size_t>(nd.module * D + j)] - static_cast<double>(mean[static_cast<std::size_t>(j)]));
        node = s >= nd.threshold ? nd.left : nd.right;
      }
      expected_leaf_parent = node;
    }
    const index_t id = tree.insert(std::move(t));
    CHECK(id == k);
    CHECK(tree.entries()[static_cast<std::size_t>(id)].tasks == std::vector<index_t>{k});
    check_invariants(tree);
    if (expected_leaf_parent >= 0) {
      // the new entry sits in the old leaf or in a child grown from it
      index_t node = tree.leaf_of(id);
      while (node >= 0 && node != expected_leaf_parent) node = tree.nodes()[static_cast<std::size_t>(node)].parent;
      CHECK(node == expected_leaf_parent);
    }
  }
  CHECK(tree.size() == n);
  CHECK(tree.height() <= L);
}

TEST_CASE_TEMPLATE("storage budget merges the closest pair into their task-weighted mean", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t L = 2, D = 3;
  tree_options options;
  options.storage_budget = 3;
  task_tree<B, l1_similarity, median_split> tree(backend, L, D, options);
  const std::vector<std::vector<double>> values = {
      {0, 0, 0, 0, 0, 0}, {10, 10, 10, 10, 10, 10}, {0.1, 0, 0, 0, 0, 0}, {-10, 5, 0, 1, 1, 1}, {10, 10, 10, 10, 10, 10.3}};
  std::vector<index_t> holders;
  for (const auto& v : values) holders.push_back(tree.insert(host_vectors(backend, {v}, L, D).front()));
  // 4th insert: {0} and {2} are closest (0.1) -> merged into entry 0; 5th: {1} and {4} (0.3).
  REQUIRE(tree.size() == 3);
  CHECK(holders[2] == 2);
  CHECK(holders[3] == 2);
  CHECK(tree.entries()[0].tasks == std::vector<index_t>{0, 2});
  CHECK(tree.entries()[1].tasks == std::vector<index_t>{1, 4});
  CHECK(tree.entries()[2].tasks == std::vector<index_t>{3});
  CHECK(holders[4] == 1);
  const auto merged = tree.entries()[0].vector.to_host();
  CHECK(static_cast<double>(merged[0]) == doctest::Approx(0.05));
  const auto merged2 = tree.entries()[1].vector.to_host();
  CHECK(static_cast<double>(merged2[5]) == doctest::Approx(10.15));
  check_invariants(tree);
  // weighted: merging {0,2} (2 tasks at 0.05) with a new near-copy counts it twice
  tree.insert(host_vectors(backend, {{0.35, 0, 0, 0, 0, 0}}, L, D).front());
  REQUIRE(tree.size() == 3);
  CHECK(tree.entries()[0].tasks == std::vector<index_t>{0, 2, 5});
  CHECK(static_cast<double>(tree.entries()[0].vector.to_host()[0]) == doctest::Approx((2 * 0.05 + 0.35) / 3));
  check_invariants(tree);
}

TEST_CASE_TEMPLATE("text and Graphviz output name every node", B, TREELORA_TEST_BACKENDS) {
  B backend;
  task_tree<B> tree(backend, 2, 1);
  tree.build(host_vectors(backend, {{1, 4}, {2, 1}, {3, 2}}, 2, 1));
  const std::string text = tree.to_string();
  CHECK(text.find("Node(depth=0, tasks=[0, 1, 2], module=0") == 0);
  CHECK(text.find("  Leaf(depth=1") != std::string::npos);
  const std::string dot = tree.to_dot();
  CHECK(dot.find("digraph task_tree {") == 0);
  CHECK(dot.find("n0 -> n1") != std::string::npos);
  CHECK(dot.find("shape=box") != std::string::npos);
  CHECK(dot.back() == '\n');
}

TEST_CASE_TEMPLATE("drift vectors: G[0] = acc[0], G[k] = acc[k] - acc[k-1]", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const auto acc = host_vectors(backend, {{1, 2}, {4, 8}, {5, 5}}, 1, 2);
  const auto g = drift_vectors<B>(acc);
  REQUIRE(g.size() == 3);
  CHECK(testing::relative_error(g[0].to_host(), std::vector<double>{1, 2}) == 0);
  CHECK(testing::relative_error(g[1].to_host(), std::vector<double>{3, 6}) == 0);
  CHECK(testing::relative_error(g[2].to_host(), std::vector<double>{1, -3}) == 0);
}

TEST_CASE("adjusted Rand index against hand-computed values") {
  const std::vector<index_t> a = {0, 0, 0, 1, 1, 1}, b = {0, 0, 1, 1, 2, 2};
  CHECK(adjusted_rand_index(a, a) == doctest::Approx(1.0));
  CHECK(adjusted_rand_index(a, std::vector<index_t>{5, 5, 5, 2, 2, 2}) == doctest::Approx(1.0));
  // sum C(n_ij,2) = 2, rows 6, cols 3, C(6,2) = 15: (2 - 1.2) / (4.5 - 1.2)
  CHECK(adjusted_rand_index(a, b) == doctest::Approx(0.8 / 3.3));
  // crossing halves: (0 - 2/3) / (2 - 2/3) = -0.5
  CHECK(adjusted_rand_index(std::vector<index_t>{0, 0, 1, 1}, std::vector<index_t>{0, 1, 0, 1}) == doctest::Approx(-0.5));
  CHECK_THROWS_AS(adjusted_rand_index(a, std::vector<index_t>{0}), std::invalid_argument);
}

// Planted hierarchy: 8 tasks with secret codes c = perm[task] in 0..7; at module d the task's vector depends
// on bit d of the code (from the top): bit 0 -> 3u_d + 0.05 noise (tight, large), bit 1 -> u_d + 1.5 noise
// (loose, small). Every rule tested separates those two groups, so the tree's nodes at depth d+1 should
// be the planted groups (code >> (levels-1-d)).
TEST_CASE_TEMPLATE("trees on planted-hierarchy vectors recover the planted grouping at each level", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t levels = 3, L = levels, D = 256, n = 8;
  const std::vector<index_t> perm = {5, 2, 7, 0, 3, 6, 1, 4};
  random::generator gen(2024);
  std::vector<std::vector<double>> u(L, std::vector<double>(static_cast<std::size_t>(D)));
  for (auto& row : u)
    for (auto& x : row) x = gen.uniform() < 0.5 ? -1.0 : 1.0;
  std::vector<std::vector<double>> values(n, std::vector<double>(static_cast<std::size_t>(L * D)));
  for (index_t k = 0; k < n; ++k)
    for (index_t d = 0; d < L; ++d) {
      const bool loose = (perm[static_cast<std::size_t>(k)] >> (levels - 1 - d)) & 1;
      for (index_t j = 0; j < D; ++j)
        values[static_cast<std::size_t>(k)][static_cast<std::size_t>(d * D + j)] =
            loose ? u[static_cast<std::size_t>(d)][static_cast<std::size_t>(j)] + 1.5 * gen.normal()
                  : 3 * u[static_cast<std::size_t>(d)][static_cast<std::size_t>(j)] + 0.05 * gen.normal();
    }
  const auto vectors = host_vectors(backend, values, L, D);
  const auto recovered = [&]<class S, class P>(S, P) {
    task_tree<B, S, P> tree(backend, L, D);
    tree.build(vectors);
    for (index_t depth = 1; depth <= levels; ++depth) {
      std::vector<index_t> found(static_cast<std::size_t>(n), -1), planted(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < tree.nodes().size(); ++i)
        if (tree.nodes()[i].depth == depth)
          for (index_t k : tree.nodes()[i].tasks) found[static_cast<std::size_t>(k)] = static_cast<index_t>(i);
      for (index_t k = 0; k < n; ++k) planted[static_cast<std::size_t>(k)] = perm[static_cast<std::size_t>(k)] >> (levels - depth);
      const double ari = adjusted_rand_index(found, planted);
      CHECK_MESSAGE(ari >= 0.9, S::name() << " / " << P::name() << " depth " << depth << " ARI " << ari << "\n" << tree.to_string());
    }
  };
  recovered(dot_similarity{}, median_split{});
  recovered(dot_similarity{}, mean_split{});
  recovered(l1_similarity{}, median_split{});
  recovered(l1_similarity{}, mean_split{});
  recovered(cosine_similarity{}, median_split{});
  recovered(cosine_similarity{}, mean_split{});
}
