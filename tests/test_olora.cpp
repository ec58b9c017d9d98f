// O-LoRA: the orthogonality loss and its gradient against a host closed form and central finite differences
// (double), the optional L2 term likewise, the adapter's backward with frozen earlier LoRAs, and the strategy end to
// end on a tiny ViT (lambda1 > 0 makes the new A's more orthogonal to the old ones than lambda1 = 0).
#include "test_support.hpp"
#include "test_inflora_stream.hpp"

#include "treelora/strategy/olora.hpp"

using namespace treelora;
using treelora::testing::relative_error;
using D = cpu_backend<double>;
using F = cpu_backend<float>;

TEST_CASE("orthogonality loss lambda1 sum |A_old A_t^T| and its gradient (closed form and finite differences)") {
  D backend;
  olora::adapter<D> adapter(backend, 7, 5, {.rank = 2, .seed = 3});
  for (index_t task = 0; task < 3; ++task) {  // two finished tasks, then the current one
    adapter.start_task(task);
    fill_normal<D>(adapter.b(), 0, 1, std::uint64_t(40 + task));
    if (task < 2) adapter.finish_task();
  }
  REQUIRE(adapter.previous_a().rows() == 4);
  const double lambda = 0.7;
  auto loss = [&] {
    const auto old = adapter.previous_a().to_host(), a = adapter.a().to_host();
    double s = 0;
    for (index_t i = 0; i < 4; ++i)
      for (index_t j = 0; j < 2; ++j) {
        double p = 0;
        for (index_t k = 0; k < 7; ++k) p += old[std::size_t(i * 7 + k)] * a[std::size_t(j * 7 + k)];
        s += std::abs(p);
      }
    return lambda * s;
  };
  adapter.a_gradient().fill(0);
  const double value = adapter.add_orthogonality_gradient(lambda);
  CHECK(value == doctest::Approx(loss()).epsilon(1e-12));
  const double error = treelora::testing::finite_difference_error(adapter.a(), loss, adapter.a_gradient().to_host());
  MESSAGE("O-LoRA orthogonality gradient FD error: ", error);
  CHECK(error < 1e-6);

  adapter.a_gradient().fill(0);
  adapter.b_gradient().fill(0);
  auto l2 = [&] { return 0.3 * (std::sqrt(squared_norm<D>(adapter.a())) + std::sqrt(squared_norm<D>(adapter.b()))); };
  CHECK(adapter.add_l2_gradient(0.3) == doctest::Approx(l2()));
  CHECK(treelora::testing::finite_difference_error(adapter.a(), l2, adapter.a_gradient().to_host()) < 1e-6);
  CHECK(treelora::testing::finite_difference_error(adapter.b(), l2, adapter.b_gradient().to_host()) < 1e-6);
  olora::adapter<D> fresh(backend, 7, 5, {.rank = 2});
  CHECK(fresh.add_orthogonality_gradient(lambda) == 0.0);  // nothing to be orthogonal to on the first task
}

TEST_CASE("O-LoRA adapter backward with frozen earlier LoRAs, by finite differences (double)") {
  for (bool merge : {true, false}) {
    D backend;
    lora_layer<linear<D>, olora> layer(backend, linear<D>(backend, 6, 5, true, 1), {.rank = 2, .alpha = 3, .merge_finished = merge});
    auto& adapter = layer.adapter();
    auto x = treelora::testing::random_tensor(backend, shape{2, 3, 6}, 3);
    double worst = 0;
    for (index_t task = 0; task < 3; ++task) {
      adapter.start_task(task);
      fill_normal<D>(adapter.b(), 0, 1, std::uint64_t(20 + task));
      auto probe = treelora::testing::random_tensor(backend, shape{2, 3, 5}, 9);
      const auto probe_host = probe.to_host();
      auto loss = [&] { return treelora::testing::host_dot<D>(layer.forward(x), probe_host); };
      adapter.a_gradient().fill(0);
      adapter.b_gradient().fill(0);
      (void)layer.forward(x);
      const auto dx = layer.backward(probe).to_host();
      const auto da = adapter.a_gradient().to_host(), db = adapter.b_gradient().to_host();
      worst = std::max({worst, treelora::testing::finite_difference_error(adapter.a(), loss, da),
                        treelora::testing::finite_difference_error(adapter.b(), loss, db),
                        treelora::testing::finite_difference_error(x, loss, dx)});
      adapter.finish_task();
    }
    MESSAGE("O-LoRA backward FD worst error (merge ", merge, "): ", worst);
    CHECK(worst < 1e-6);
  }
}

TEST_CASE("O-LoRA end to end: lambda1 > 0 keeps the new A's closer to orthogonal to the earlier ones") {
  const auto stream = treelora::testing::prototype_image_stream(4, 48, 24);
  std::vector<double> overlap;
  for (double lambda : {0.0, 0.5}) {
    F backend;
    vit<F, olora> model(backend, treelora::testing::tiny_vit(stream.total_classes, {"q", "v"}));
    olora_strategy<F> strategy({.orthogonality = lambda, .l2 = lambda > 0 ? 1e-4 : 0.0});
    auto result = run_stream(model, stream, strategy,
                             [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-2}); },
                             {.epochs_per_task = 2, .batch_size = 16});
    CHECK(result.task_il(0, 0) > 0.8);
    CHECK(final_average_accuracy(result.task_il) > 0.8);
    CHECK(result.state_bytes.back() > 0);
    // sum over modules of |A_old A_last^T| normalised by the norms: the last task's A is in previous_a's last rows.
    double s = 0;
    for (auto* a : model.factorized_adapters()) {
      const auto all = a->previous_a().to_host();
      const index_t r = a->rank(), in = a->previous_a().cols(), rows = a->previous_a().rows();
      for (index_t i = 0; i < rows - r; ++i)
        for (index_t j = rows - r; j < rows; ++j) {
          double p = 0, ni = 0, nj = 0;
          for (index_t k = 0; k < in; ++k) {
            p += all[std::size_t(i * in + k)] * all[std::size_t(j * in + k)];
            ni += all[std::size_t(i * in + k)] * all[std::size_t(i * in + k)];
            nj += all[std::size_t(j * in + k)] * all[std::size_t(j * in + k)];
          }
          s += std::abs(p) / std::sqrt(ni * nj);
        }
    }
    overlap.push_back(s);
    MESSAGE("O-LoRA lambda1 ", lambda, ": ACC ", final_average_accuracy(result.task_il), " BWT ",
            backward_transfer(result.task_il), " class-IL ", final_average_accuracy(result.class_il), " task-id ",
            final_average_accuracy(result.task_identity), " overlap ", s, ", ", result.seconds, " s");
  }
  CHECK(overlap[1] < 0.7 * overlap[0]);
}
