// Sparse-update rules against brute force; the indexed Adam against the dense one; skipped modules do no work.
#include "test_support.hpp"

#include <numeric>

#include "treelora/models/mlp.hpp"
#include "treelora/sparse/sparse_rules.hpp"

using namespace treelora;
using treelora::testing::random_tensor;
using D = cpu_backend<double>;

namespace {
struct fixture {
  D backend;
  mlp_classifier<D> model{backend, {.inputs = 6, .hidden = 12, .hidden_layers = 2, .classes = 3, .lora_rank = 2, .seed = 1}};
  std::vector<adapter_view<D>> adapters = model.adapters();
  fixture() {
    for (auto& a : adapters) {
      fill_normal<D>(*a.a_gradient, 0, 1, 10 + a.a_gradient->numel());
      fill_normal<D>(*a.b_gradient, 0, 1, 20 + a.b_gradient->numel());
    }
  }
};
}  // namespace

TEST_CASE("top-k keeps exactly the k largest magnitudes of each adapter matrix") {
  fixture f;
  const auto before = f.adapters[0].a_gradient->to_host();
  top_k_rule rule{.fraction = 0.25};
  sparse_update<D> update;
  training_context context;
  rule.before_backward(f.adapters, context, {});
  rule.after_backward(f.adapters, context, update);
  REQUIRE(update.sparse.size() == 2 * f.adapters.size());
  // brute force: sort all magnitudes
  std::vector<std::size_t> order(before.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return std::abs(before[a]) > std::abs(before[b]); });
  const auto k = static_cast<std::size_t>(std::ceil(0.25 * double(before.size())));
  std::vector<index_t> expected;  // filled by a loop: the range constructor trips GCC 12's -Wfree-nonheap-object
  for (std::size_t i = 0; i < k; ++i) expected.push_back(index_t(order[i]));
  std::sort(expected.begin(), expected.end());
  CHECK(*update.entries_of(f.adapters[0].a) == expected);
  const auto after = f.adapters[0].a_gradient->to_host();
  for (std::size_t i = 0; i < after.size(); ++i) {
    const bool kept = std::binary_search(expected.begin(), expected.end(), index_t(i));
    CHECK(after[i] == (kept ? before[i] : 0.0));
  }
}

TEST_CASE("soft threshold is the L1 proximal map and keeps only the non-zero entries") {
  fixture f;
  const auto before = f.adapters[1].b_gradient->to_host();
  soft_threshold_rule rule{.lambda = 0.5};
  sparse_update<D> update;
  training_context context;
  rule.after_backward(f.adapters, context, update);
  const auto after = f.adapters[1].b_gradient->to_host();
  std::vector<index_t> nonzero;
  for (std::size_t i = 0; i < before.size(); ++i) {
    const double expected = before[i] > 0.5 ? before[i] - 0.5 : (before[i] < -0.5 ? before[i] + 0.5 : 0.0);
    CHECK(after[i] == doctest::Approx(expected));
    if (expected != 0) nonzero.push_back(index_t(i));
  }
  CHECK(*update.entries_of(f.adapters[1].b) == nonzero);
}

TEST_CASE("random mask has the requested density, is seeded, and changes with the step") {
  D backend;
  tensor<D> a(backend, shape{100, 100}), ga(backend, shape{100, 100}), b(backend, shape{1, 1}), gb(backend, shape{1, 1});
  std::vector<adapter_view<D>> adapters{{"big", &a, &ga, &b, &gb}};
  random_mask_rule rule{.density = 0.2, .seed = 5};
  sparse_update<D> first, again, later;
  training_context context;
  ga.fill(1);
  rule.after_backward(adapters, context, first);
  ga.fill(1);
  rule.after_backward(adapters, context, again);
  context.global_step = 1;
  ga.fill(1);
  rule.after_backward(adapters, context, later);
  const auto kept = double(first.entries_of(&a)->size()) / 10000.0;
  CHECK(kept == doctest::Approx(0.2).epsilon(0.1));
  CHECK(*first.entries_of(&a) == *again.entries_of(&a));
  CHECK(*first.entries_of(&a) != *later.entries_of(&a));
  CHECK(sum<D>(ga) == doctest::Approx(double(later.entries_of(&a)->size())));
}

TEST_CASE("indexed Adam equals dense Adam at the listed entries and leaves the others untouched") {
  D backend;
  auto p1 = random_tensor(backend, shape{20}, 1), p2 = p1, g = random_tensor(backend, shape{20}, 2);
  parameter_list<D> dense_list{{"p", &p1, &g, true}}, sparse_list{{"p", &p2, &g, true}};
  adam<D> dense(dense_list, {.learning_rate = 0.1, .weight_decay = 0.01});
  adam<D> sparse(sparse_list, {.learning_rate = 0.1, .weight_decay = 0.01});
  sparse_update<D> all, some, none;
  std::vector<index_t> every(20);
  std::iota(every.begin(), every.end(), index_t(0));
  all.sparse.emplace_back(&p2, every);
  dense.step();
  sparse.step(all);
  // The same formula: equal up to where the compiler fused a multiply-add (the dense step is Eigen's vectorised
  // expression, the indexed one a scalar loop; with AVX-512 they part in the last bit).
  CHECK(treelora::testing::relative_error(p1.to_host(), p2.to_host()) < 1e-15);
  const auto before = p2.to_host();
  some.sparse.emplace_back(&p2, std::vector<index_t>{3, 7});
  sparse.step(some);
  const auto after = p2.to_host();
  for (index_t i = 0; i < 20; ++i) CHECK((after[std::size_t(i)] != before[std::size_t(i)]) == (i == 3 || i == 7));
  none.skipped.push_back(&p2);
  sparse.step(none);
  CHECK(p2.to_host() == after);
}

TEST_CASE("selected modules: left-out adapters compute no gradient, pass the input gradient, and are not updated") {
  D backend;
  mlp_classifier<D> model(backend, {.inputs = 6, .hidden = 12, .hidden_layers = 3, .classes = 3, .lora_rank = 2, .seed = 1});
  auto adapters = model.adapters();
  for (auto& a : adapters) fill_normal<D>(*a.b, 0, 1, 3);
  auto x = random_tensor(backend, shape{5, 6}, 4), dlogits = random_tensor(backend, shape{5, 3}, 5);
  model.forward(x);
  const auto dx_all = model.backward(dlogits).to_host();
  selected_modules_rule rule{.fraction = 0.3};  // ceil(0.3 * 3) = 1 module
  training_context context;
  const std::vector<double> scores = {0.1, 5.0, 0.2};  // only module 1 is kept
  rule.before_backward(adapters, context, scores);
  CHECK(rule.active() == std::vector<bool>{false, true, false});
  zero_gradients(parameters(model));
  model.forward(x);
  const auto dx_selected = model.backward(dlogits).to_host();
  CHECK(dx_selected == dx_all);  // the input gradient does not depend on which adapters compute theirs
  CHECK(squared_norm<D>(*adapters[0].a_gradient) == 0.0);
  CHECK(squared_norm<D>(*adapters[2].b_gradient) == 0.0);
  CHECK(squared_norm<D>(*adapters[1].a_gradient) > 0.0);
  sparse_update<D> update;
  rule.after_backward(adapters, context, update);
  CHECK(update.skips(adapters[0].a));
  CHECK_FALSE(update.skips(adapters[1].a));
  CHECK_THROWS_AS(rule.before_backward(adapters, context, std::vector<double>{1.0}), std::invalid_argument);
}
