// task_tree: build TreeLoRA's task tree two ways on 8 tasks drawn from a planted hierarchy, print both,
// and write them as Graphviz DOT (render with `dot -Tsvg task_tree_reference.dot -o tree.svg`).
//   reference: the released code, rebuilt from scratch on per-task drift, dot product + lower median;
//   paper:     tasks inserted one by one (L1 distance + median), with a budget of 6 stored adapters.
#include <cstdio>
#include <fstream>
#include <iostream>

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/tree.hpp"

using namespace treelora;
using backend_type = cpu_backend<float>;

int main() {
  backend_type backend;
  const index_t tasks = 8, L = 3, D = 64;
  // Planted hierarchy: task k has a secret 3-bit code; at module d, bit d picks a tight large prototype
  // (3 u_d) or a loose small one (u_d + noise). Codes are shuffled so the order of tasks tells nothing.
  const index_t code[tasks] = {5, 2, 7, 0, 3, 6, 1, 4};
  random::generator gen(1);
  std::vector<std::vector<float>> u(L, std::vector<float>(D));
  for (auto& row : u)
    for (auto& x : row) x = gen.uniform() < 0.5 ? -1.f : 1.f;
  std::vector<tensor<backend_type>> acc;  // the running per-task accumulations the reference stores
  std::vector<tensor<backend_type>> vectors;
  std::vector<float> running(static_cast<std::size_t>(L * D), 0.f);
  for (index_t k = 0; k < tasks; ++k) {
    std::vector<float> v(static_cast<std::size_t>(L * D));
    for (index_t d = 0; d < L; ++d) {
      const bool loose = (code[k] >> (L - 1 - d)) & 1;
      for (index_t j = 0; j < D; ++j)
        v[static_cast<std::size_t>(d * D + j)] = loose ? u[d][j] + 1.5f * static_cast<float>(gen.normal()) : 3 * u[d][j];
    }
    vectors.push_back(tensor<backend_type>::from_host(backend, shape{L, D}, v));
    for (std::size_t i = 0; i < v.size(); ++i) running[i] += v[i];  // acc[k] = sum of the task vectors so far
    acc.push_back(tensor<backend_type>::from_host(backend, shape{L, D}, running));
  }
  std::printf("planted codes:");
  for (index_t k = 0; k < tasks; ++k) std::printf(" task %lld=%lld%lld%lld", static_cast<long long>(k), (long long)(code[k] >> 2 & 1), (long long)(code[k] >> 1 & 1), (long long)(code[k] & 1));

  // Reference mode: the tree sees drift G[k] = acc[k] - acc[k-1] (here: the task vectors again).
  task_tree<backend_type> reference(backend, L, D);
  reference.build(drift_vectors<backend_type>(acc));
  std::printf("\n\nreference tree (dot product with the group mean, lower median, >= goes left):\n%s",
              reference.to_string().c_str());

  // Paper mode: incremental inserts; past 6 entries the two closest merge into their mean.
  tree_options options;
  options.storage_budget = 6;
  task_tree<backend_type, l1_similarity, median_split> paper(backend, L, D, options);
  for (const auto& v : vectors) {
    const index_t entry = paper.insert(v);
    std::printf("inserted task %lld -> entry %lld (%lld entries)\n", static_cast<long long>(paper.next_task_id() - 1),
                static_cast<long long>(entry), static_cast<long long>(paper.size()));
  }
  std::printf("\npaper tree (L1 distance to the group mean, median; entries, not tasks):\n%s", paper.to_string().c_str());
  for (index_t e = 0; e < paper.size(); ++e) {
    std::printf("entry %lld holds tasks", static_cast<long long>(e));
    for (index_t t : paper.entries()[static_cast<std::size_t>(e)].tasks) std::printf(" %lld", static_cast<long long>(t));
    std::printf("\n");
  }
  std::ofstream("task_tree_reference.dot") << reference.to_dot("reference");
  std::ofstream("task_tree_paper.dot") << paper.to_dot("paper");
  std::printf("\nwrote task_tree_reference.dot and task_tree_paper.dot\n");
}
