// InfLoRA: the adapter's backward by finite differences (with a frozen history, merged or branched), merged and
// branched histories agree, the new branch leaves old-task outputs unchanged for inputs in the old subspace (closed
// form), and the strategy end to end on a tiny ViT over the planted stream for each option.
#include "test_support.hpp"
#include "test_inflora_stream.hpp"

#include "treelora/models/vit.hpp"
#include "treelora/strategy/inflora.hpp"

using namespace treelora;
using treelora::testing::relative_error;
using D = cpu_backend<double>;
using F = cpu_backend<float>;
using matrix = Eigen::MatrixXd;

using treelora::testing::orthonormal;
using treelora::testing::random_matrix;

namespace {
/// loss = <layer(x), probe>; checks d loss / d B and d loss / d x against central differences.
template <class Layer>
void check_gradients(D& backend, Layer& layer, tensor<D>& x, std::vector<double>& worst) {
  auto probe = treelora::testing::random_tensor(backend, shape{x.rows(), layer.out_features()}, 77);
  const auto probe_host = probe.to_host();
  auto loss = [&] { return treelora::testing::host_dot<D>(layer.forward(x), probe_host); };
  auto& adapter = layer.adapter();
  adapter.b_gradient().fill(0);
  (void)layer.forward(x);
  const auto dx = layer.backward(probe).to_host();
  const auto db = adapter.b_gradient().to_host();
  worst.push_back(treelora::testing::finite_difference_error(adapter.b(), loss, db));
  worst.push_back(treelora::testing::finite_difference_error(x, loss, dx));
}
}  // namespace

TEST_CASE("InfLoRA adapter backward by finite differences (double), merged and branched history") {
  for (bool merge : {true, false}) {
    D backend;
    lora_layer<linear<D>, inflora> layer(backend, linear<D>(backend, 6, 5, true, 1), {.rank = 2, .merge_finished = merge});
    auto& adapter = layer.adapter();
    std::vector<double> worst;
    auto x = treelora::testing::random_tensor(backend, shape{2, 3, 6}, 3);
    for (int task = 0; task < 3; ++task) {
      adapter.start_task(random_matrix(2, 6, unsigned(10 + task)));
      fill_normal<D>(adapter.b(), 0, 1, std::uint64_t(20 + task));  // as if trained
      check_gradients(backend, layer, x, worst);
      adapter.finish_task();
    }
    CHECK(adapter.history().tasks() == 3);
    for (double w : worst) CHECK(w < 1e-6);
    MESSAGE("InfLoRA FD worst relative error (merge ", merge, "): ", *std::max_element(worst.begin(), worst.end()));
  }
}

TEST_CASE("merged and branched histories give the same outputs and the same merge_into") {
  D backend;
  lora_layer<linear<D>, inflora> merged(backend, linear<D>(backend, 6, 5, true, 1), {.rank = 2, .merge_finished = true});
  lora_layer<linear<D>, inflora> branched(backend, linear<D>(backend, 6, 5, true, 1), {.rank = 2, .merge_finished = false});
  for (int task = 0; task < 3; ++task)
    for (auto* layer : {&merged.adapter(), &branched.adapter()}) {
      layer->start_task(random_matrix(2, 6, unsigned(10 + task)));
      fill_normal<D>(layer->b(), 0, 1, std::uint64_t(20 + task));
      layer->finish_task();
    }
  auto x = treelora::testing::random_tensor(backend, shape{4, 6}, 3);
  const auto a = merged.forward(x).to_host(), b = branched.forward(x).to_host();
  CHECK(relative_error(a, b) < 1e-12);
  merged.merge();
  CHECK(relative_error(merged.base().forward(x).to_host(), b) < 1e-12);
}

TEST_CASE_TEMPLATE("the new task's branch leaves old-task outputs unchanged for inputs in the old subspace", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t d = 12, out = 7, rank = 3;
  lora_layer<linear<B>, inflora> layer(backend, linear<B>(backend, d, out, true, 1), {.rank = rank});
  auto& adapter = layer.adapter();
  // Task 0: inputs in a 4-dimensional subspace S0.
  const matrix basis0 = orthonormal(d, 4, 1);
  auto to_tensor = [&](const matrix& rows) {
    tensor<B> t;
    assign_from_host(t, backend, rows);
    return t;
  };
  const auto x0 = to_tensor((basis0 * random_matrix(4, 64, 2)).transpose());
  gpm_memory memory(d);
  adapter.covariance().collect(true);
  (void)layer.forward(x0);
  adapter.covariance().collect(false);
  adapter.start_task(detail::projected_top_directions(memory, adapter.covariance().to_host(), rank) / std::sqrt(3.0));
  fill_normal<B>(adapter.b(), 0, 1, 4);  // task 0 "trained"
  adapter.finish_task();
  memory.update_from_covariance(adapter.covariance().to_host(), 0.999);
  CHECK(memory.rank() == 4);
  const auto probe = to_tensor((basis0 * random_matrix(4, 10, 3)).transpose());  // old-subspace inputs
  const auto before = layer.forward(probe).to_host();
  // Task 1: generic inputs; A_1 from the projected covariance; B_1 trained (random here).
  const auto x1 = to_tensor(random_matrix(64, d, 5));
  adapter.covariance().collect(true);
  (void)layer.forward(x1);
  adapter.covariance().collect(false);
  adapter.start_task(detail::projected_top_directions(memory, adapter.covariance().to_host(), rank) / std::sqrt(3.0));
  fill_normal<B>(adapter.b(), 0, 10, 6);
  const auto after = layer.forward(probe).to_host();
  const double change = relative_error(after, before);
  MESSAGE("old-subspace output change after task 1 (", B::name(), "): ", change);
  CHECK(change < 100 * treelora::testing::tolerance_v<B>);
  // A generic input does change (the check above is not vacuous).
  const auto generic = to_tensor(random_matrix(10, d, 8));
  adapter.b().fill(0);
  const auto g0 = layer.forward(generic).to_host();
  fill_normal<B>(adapter.b(), 0, 10, 6);
  CHECK(relative_error(layer.forward(generic).to_host(), g0) > 0.1);
}

TEST_CASE("InfLoRA end to end on a tiny ViT for each option") {
  const auto stream = treelora::testing::prototype_image_stream(4, 48, 24);
  struct variant {
    const char* name;
    inflora::config adapter;
    inflora_options options;
  };
  const std::vector<variant> variants = {
      {"default (merged, DualGPM, representation rule, memory after training)", {.rank = 4}, {}},
      {"branches kept", {.rank = 4, .merge_finished = false}, {}},
      {"released energy quirk, no DualGPM, one pass per task", {.rank = 4},
       {.memory = {.dual = false, .rule = energy_rule::covariance_spectrum}, .memory_after_training = false}},
  };
  for (const auto& v : variants) {
    F backend;
    vit<F, inflora> model(backend, treelora::testing::tiny_vit(stream.total_classes, {"k", "v"}), v.adapter);
    inflora_strategy strategy(stream, v.options);
    auto result = run_stream(model, stream, strategy,
                             [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-2}); },
                             {.epochs_per_task = 2, .batch_size = 16});
    const index_t n = result.task_il.tasks();
    REQUIRE(n == 4);
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j <= i; ++j) CHECK(std::isfinite(result.task_il(i, j)));
    CHECK(result.task_il(0, 0) > 0.8);
    CHECK(final_average_accuracy(result.task_il) > 0.8);
    CHECK(result.state_bytes.back() > 0);
    for (const auto& m : strategy.memories()) CHECK(m.rank() > 0);
    MESSAGE("InfLoRA [", std::string(v.name), "]: ACC ", final_average_accuracy(result.task_il), " BWT ",
            backward_transfer(result.task_il), " class-IL ", final_average_accuracy(result.class_il), " task-id ",
            final_average_accuracy(result.task_identity), " state ", result.state_bytes.back(), " B, ", result.seconds, " s");
  }
}
