// Tree and bandit costs on the CPU backend (float): one selection step per policy as the number of
// previous tasks N, modules L and vector size D grow (a sparse grid, not the full product), and the cost
// of building the reference tree and of the paper's incremental insert (with and without a budget).
// A step = select one arm per module + compute the observed L1 residuals + update (tree_bandit::step).
#include <benchmark/benchmark.h>

#include <memory>

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/bandit.hpp"
#include "treelora/tree.hpp"

using namespace treelora;
using backend_type = cpu_backend<float>;

namespace {

std::vector<tensor<backend_type>> random_tasks(backend_type& backend, index_t n, index_t L, index_t D, std::uint64_t seed) {
  std::vector<tensor<backend_type>> out;
  for (index_t k = 0; k < n; ++k) {
    out.emplace_back(backend, shape{L, D});
    fill_normal<backend_type>(out.back(), 0, 1, seed, static_cast<std::uint64_t>(k * L * D));
  }
  return out;
}

struct lcb_path : lcb {
  lcb_path() : lcb(2.0, 0.0, lcb_refresh::path) {}
  static constexpr std::string_view name() { return "lcb_path"; }
};

/// args: N, L, D. Arms on a paper-style task tree (l1 / median, depth up to L) for the tree-aware policies.
template <class Policy>
void selection_step(benchmark::State& state) {
  backend_type backend;
  const index_t n = state.range(0), L = state.range(1), D = state.range(2);
  const auto arms = random_tasks(backend, n, L, D, 1);
  task_tree<backend_type, l1_similarity, median_split> tree(backend, L, D);
  tree.build(arms);
  tensor<backend_type> current(backend, shape{L, D});
  fill_normal<backend_type>(current, 0, 1, 2);
  const index_t T = 1 << 20;
  tree_bandit<backend_type, Policy> bandit(backend, Policy(), 3);
  bandit.reset(std::span<const tensor<backend_type>>(arms), T, tree.nodes());
  index_t t = 0;
  for (auto _ : state) {
    if (t == T) bandit.reset(), t = 0;
    benchmark::DoNotOptimize(bandit.step(current, t++).data());
  }
  state.counters["N"] = static_cast<double>(n);
  state.counters["tree_height"] = static_cast<double>(tree.height());
  state.SetItemsProcessed(state.iterations());
}

// Sparse grid: N sweep at (L 16, D 64) for every policy; D sweep at (N 64, L 8); L sweep at (N 64, D 64).
void n_sweep(benchmark::internal::Benchmark* b) {
  for (index_t n : {4, 16, 64, 256, 1024}) b->Args({n, 16, 64});
}
void d_and_l_sweep(benchmark::internal::Benchmark* b) {
  for (index_t d : {64, 4096, 65536}) b->Args({64, 8, d});
  b->Args({64, 64, 64});
}

}  // namespace

BENCHMARK(selection_step<softmax_distance_ucb<float>>)->Name("step/reference_softmax_ucb")->Apply(n_sweep)->Apply(d_and_l_sweep);
BENCHMARK(selection_step<lcb>)->Name("step/lcb_exact")->Apply(n_sweep)->Apply(d_and_l_sweep);
BENCHMARK(selection_step<lcb_path>)->Name("step/lcb_path")->Apply(n_sweep)->Apply(d_and_l_sweep);
BENCHMARK(selection_step<ucb1>)->Name("step/ucb1")->Apply(n_sweep);
BENCHMARK(selection_step<thompson_sampling>)->Name("step/thompson")->Apply(n_sweep);
BENCHMARK(selection_step<epsilon_greedy>)->Name("step/epsilon_greedy")->Apply(n_sweep);
BENCHMARK(selection_step<uniform_policy>)->Name("step/uniform")->Apply(n_sweep);
BENCHMARK(selection_step<exhaustive>)->Name("step/exhaustive")->Apply(n_sweep)->Apply(d_and_l_sweep);

/// Reference end of task: drift of N stored [L, D] vectors and a rebuild from scratch.
static void tree_build(benchmark::State& state) {
  backend_type backend;
  const index_t n = state.range(0), L = state.range(1), D = state.range(2);
  const auto acc = random_tasks(backend, n, L, D, 4);
  for (auto _ : state) {
    task_tree<backend_type> tree(backend, L, D);
    tree.build(drift_vectors<backend_type>(acc));
    benchmark::DoNotOptimize(tree.nodes().data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(tree_build)->Name("tree/build_reference")->Args({16, 16, 1024})->Args({128, 16, 1024})->Args({1024, 16, 1024})
    ->Args({128, 16, 16384})->Unit(benchmark::kMillisecond);

/// Paper end of task: N inserts one by one (items = inserts); arg 3 = storage budget (0 = none).
static void tree_insert(benchmark::State& state) {
  backend_type backend;
  const index_t n = state.range(0), L = state.range(1), D = state.range(2), budget = state.range(3);
  const auto tasks = random_tasks(backend, n, L, D, 5);
  for (auto _ : state) {
    task_tree<backend_type, l1_similarity, median_split> tree(backend, L, D, tree_options{-1, {}, 1, budget});
    for (const auto& v : tasks) tree.insert(v);
    benchmark::DoNotOptimize(tree.nodes().data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(tree_insert)->Name("tree/insert_paper")->Args({16, 16, 1024, 0})->Args({128, 16, 1024, 0})
    ->Args({1024, 16, 1024, 0})->Args({128, 16, 1024, 32})->Unit(benchmark::kMillisecond);
