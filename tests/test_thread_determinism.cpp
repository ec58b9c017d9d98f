// Results do not depend on the OpenMP thread count (docs/design.md, "Reproducibility across thread counts"), compared
// bit for bit: the CPU backend's GEMM on awkward shapes past its tiling threshold (every transpose, batched, and
// called from a caller's parallel region), its row kernels, fills and reductions past their parallel thresholds,
// GPM's host-side decompositions at d = 300 (where Eigen threads its products), a short rotation pre-training, and
// a small continual stream end to end with SeqLoRA, TreeLoRA paper mode and DualLoRA on a ViT whose products cross
// the thresholds. Every size is checked against the threshold it must cross, or the comparison would prove nothing.
#include "test_support.hpp"
#include "test_inflora_stream.hpp"

#include <cstring>
#include <initializer_list>

#include "treelora/models.hpp"
#include "treelora/strategy/duallora.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace treelora;
using F = cpu_backend<float>;
using treelora::testing::prototype_image_stream;

namespace {

/// The thread counts compared; the first is the reference.
const std::initializer_list<int> thread_counts = {1, 2, 3};

/// Calls `f` with the OpenMP thread count set to each of `counts` in turn (restored afterwards); returns the results.
template <class Function>
auto on_each_thread_count(Function&& f, std::initializer_list<int> counts = thread_counts) {
  std::vector<decltype(f())> results;
#if defined(_OPENMP)
  const int saved = omp_get_max_threads();
  for (const int threads : counts) {
    omp_set_num_threads(threads);
    results.push_back(f());
  }
  omp_set_num_threads(saved);
#else
  for (std::size_t i = 0; i < counts.size(); ++i) results.push_back(f());  // one thread each time
#endif
  return results;
}

/// How many elements differ in their bits (NaN and signed zeros included); a size mismatch counts every element.
template <class T>
std::size_t differing_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  std::size_t count = 0;
  for (std::size_t i = 0; i < a.size(); ++i) count += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return count;
}

/// Each later result against the first, bit for bit.
template <class T>
void check_same_bits(const std::vector<std::vector<T>>& results, std::initializer_list<int> counts = thread_counts) {
  REQUIRE(results.size() == counts.size());
  REQUIRE_FALSE(results.front().empty());
  for (std::size_t i = 1; i < results.size(); ++i) {
    INFO(*(counts.begin() + i), " threads against ", *counts.begin(), ": of ", results.front().size(), " values");
    CHECK(differing_bits(results[i], results.front()) == 0);
  }
}

/// The parallel threshold of the row kernels and fills (TREELORA_PARALLEL_FOR_IF in cpu_backend.hpp).
constexpr index_t parallel_work = index_t(1) << 16;

template <class T>
void append(std::vector<double>& out, const std::vector<T>& values) {
  out.insert(out.end(), values.begin(), values.end());
}

}  // namespace

TEST_CASE("the comparisons need OpenMP") {
#if defined(_OPENMP)
  // tests/CMakeLists.txt sets OMP_NUM_THREADS=2; the comparisons below set their thread counts themselves.
  MESSAGE("OpenMP on, ", omp_get_max_threads(), " threads by default");
#else
  MESSAGE("built without OpenMP: every comparison below runs on one thread and proves nothing");
#endif
}

TEST_CASE_TEMPLATE("gemm is bit-identical on 1, 2 and 3 threads: awkward shapes past the tiling threshold", S, float,
                   double) {
  using B = cpu_backend<S>;
  B backend;
  struct gemm_shape {
    index_t m, n, k;
  };
  // 2176 rows: a ViT batch of 128 x 17 tokens (the pre-training); 64 x 64 x 1088: a weight gradient; wider
  // than tall (tiles of columns); primes and sizes off every kernel's unroll.
  const std::vector<gemm_shape> shapes = {{2176, 64, 64}, {1088, 256, 64}, {64, 64, 1088}, {257, 129, 300},
                                          {33, 999, 77},  {1000, 37, 515}, {513, 65, 1025}, {96, 96, 600}};
  for (const auto [m, n, k] : shapes) {
    INFO(m, " x ", n, " x ", k, ": ", B::gemm_tiles(m, n, k), " tiles");
    REQUIRE(B::gemm_tiles(m, n, k) > 1);  // more than one tile: threads take part, or the test proves nothing
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        INFO("transposes ", ta, " ", tb);
        tensor<B> a(backend, ta ? shape{k, m} : shape{m, k}), b(backend, tb ? shape{n, k} : shape{k, n});
        fill_normal<B>(a, 0, 1, 11);
        fill_normal<B>(b, 0, 1, 12);
        const auto results = on_each_thread_count([&] {
          tensor<B> c(backend, shape{m, n});
          fill_normal<B>(c, 0, 1, 13);  // beta != 0 reads C
          backend.gemm(ta ? transpose::yes : transpose::no, tb ? transpose::yes : transpose::no, m, n, k, S(0.5),
                       a.data(), a.cols(), b.data(), b.cols(), S(0.25), c.data(), n);
          return c.to_host();
        });
        check_same_bits(results);
      }
  }
}

TEST_CASE_TEMPLATE("batched gemm, and gemm in a caller's parallel region, equal the plain gemm on any thread count", S,
                   float, double) {
  using B = cpu_backend<S>;
  B backend;
  const index_t batch = 6, m = 96, n = 80, k = 64;
  REQUIRE(B::gemm_tiles(m, n, k) > 1);              // each product is tiled ...
  REQUIRE(batch * m * n * k / 4 >= parallel_work);  // ... and the batch runs in a parallel region
  tensor<B> a(backend, shape{batch, m, k}), b(backend, shape{batch, n, k});
  fill_normal<B>(a, 0, 1, 21);
  fill_normal<B>(b, 0, 1, 22);
  auto plain = [&] {  // one product at a time, outside any parallel region
    tensor<B> c(backend, shape{batch, m, n});
    for (index_t i = 0; i < batch; ++i)
      backend.gemm(transpose::no, transpose::yes, m, n, k, S(1), a.data() + i * m * k, k, b.data() + i * n * k, k,
                   S(0), c.data() + i * m * n, n);
    return c.to_host();
  };
  const auto reference = on_each_thread_count(plain, {1}).front();
  const auto batched = on_each_thread_count([&] {
    tensor<B> c(backend, shape{batch, m, n});
    backend.gemm_strided_batched(transpose::no, transpose::yes, m, n, k, S(1), a.data(), k, m * k, b.data(), k, n * k,
                                 S(0), c.data(), n, m * n, batch);
    return c.to_host();
  });
  for (const auto& result : batched) CHECK(differing_bits(result, reference) == 0);
  for (const auto& result : on_each_thread_count(plain)) CHECK(differing_bits(result, reference) == 0);
#if defined(_OPENMP)
  tensor<B> c(backend, shape{batch, m, n});
#pragma omp parallel for num_threads(3)
  for (index_t i = 0; i < batch; ++i)
    backend.gemm(transpose::no, transpose::yes, m, n, k, S(1), a.data() + i * m * k, k, b.data() + i * n * k, k, S(0),
                 c.data() + i * m * n, n);
  CHECK(differing_bits(c.to_host(), reference) == 0);
#endif
}

TEST_CASE_TEMPLATE("row kernels, bias sums, reductions and fills are bit-identical on 1, 2 and 3 threads", S, float,
                   double) {
  using B = cpu_backend<S>;
  B backend;
  const index_t rows = 1031, cols = 96, n = rows * cols;
  REQUIRE(rows * cols >= parallel_work);
  tensor<B> x(backend, shape{rows, cols}), dy(backend, shape{rows, cols}), gamma(backend, shape{cols}),
      beta(backend, shape{cols});
  fill_normal<B>(x, 0, 2, 31);
  fill_normal<B>(dy, 0, 1, 32);
  fill_normal<B>(gamma, 1, 0.2, 33);
  fill_normal<B>(beta, 0, 0.2, 34);
  const auto results = on_each_thread_count([&] {
    std::vector<double> out;
    tensor<B> y(backend, shape{rows, cols}), dx(backend, shape{rows, cols}), mean(backend, shape{rows}),
        rstd(backend, shape{rows}), dgamma(backend, shape{cols}), dbeta(backend, shape{cols}),
        sums(backend, shape{cols});
    backend.softmax_rows(rows, cols, x.data(), y.data());
    backend.softmax_rows_backward(rows, cols, y.data(), dy.data(), dx.data());
    append(out, y.to_host());
    append(out, dx.to_host());
    backend.layer_norm_forward(rows, cols, x.data(), gamma.data(), beta.data(), S(1e-6), y.data(), mean.data(),
                               rstd.data());
    dgamma.fill(0);
    dbeta.fill(0);
    backend.layer_norm_backward(rows, cols, x.data(), gamma.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                                dgamma.data(), dbeta.data());
    for (const auto* t : {&y, &dx, &mean, &rstd, &dgamma, &dbeta}) append(out, t->to_host());
    backend.sum_rows(rows, cols, dy.data(), S(0), sums.data());  // a bias gradient
    append(out, sums.to_host());
    out.push_back(backend.sum(n, x.data()));
    out.push_back(backend.dot(n, x.data(), dy.data()));
    out.push_back(backend.squared_norm(n, x.data()));
    out.push_back(backend.l1_norm(n, x.data()));
    out.push_back(backend.l1_distance(n, x.data(), dy.data()));
    out.push_back(backend.max(n, x.data()));
    backend.fill_normal(y.data(), n, S(0), S(1), 35, 7);
    append(out, y.to_host());
    backend.fill_uniform(y.data(), n, S(-1), S(1), 36, 7);
    append(out, y.to_host());
    backend.fill_bernoulli(y.data(), n, S(0.7), S(1 / 0.7), 37, 7);
    append(out, y.to_host());
    return out;
  });
  check_same_bits(results);
}

TEST_CASE("GPM's host-side decompositions are bit-identical on 1, 2 and 3 threads at d = 300") {
  // d = 300 > 250: Eigen, left to thread its products, blocks their inner dimension differently on 2 threads.
  const index_t d = 300, samples = 400;
  auto covariance = [&](std::uint64_t seed) {  // R R^T of a seeded R [d, samples] with a decaying spectrum
    random::generator g(seed);
    Eigen::MatrixXd r(d, samples);
    for (index_t i = 0; i < d; ++i)
      for (index_t j = 0; j < samples; ++j) r(i, j) = g.normal() / (1.0 + 0.05 * double(i));
    const calling_thread_only serial;
    return Eigen::MatrixXd(r * r.transpose());
  };
  const Eigen::MatrixXd first = covariance(41), second = covariance(42), probe = covariance(43);
  const auto results = on_each_thread_count([&] {
    std::vector<double> out;
    gpm_memory memory(d, {.dual = true});
    memory.update_from_covariance(first, 0.6);
    out.push_back(double(memory.rank()));
    memory.update_from_covariance(second, 0.9);  // past d / 2: the DualGPM complement
    out.push_back(double(memory.rank()));
    out.push_back(double(memory.stores_complement()));
    const Eigen::MatrixXd stored = memory.stored(), projected = memory.project_out(probe);
    out.insert(out.end(), stored.data(), stored.data() + stored.size());
    out.insert(out.end(), projected.data(), projected.data() + projected.size());
    const Eigen::MatrixXd top = detail::projected_top_directions(memory, probe, 8);  // InfLoRA's and DualLoRA's A
    out.insert(out.end(), top.data(), top.data() + top.size());
    return out;
  });
  check_same_bits(results);
}

namespace {

/// A ViT whose products cross the tiling threshold: 8 x 8 images in 2 x 2 patches give 17 tokens, so a batch of 64
/// is 1088 rows of width 64 (and the layer norms' 1088 x 64 cross the row kernels' threshold).
vit_config crossing_vit(index_t classes, std::vector<std::string> targets) {
  return {.image_height = 8, .image_width = 8, .channels = 1, .patch_size = 2, .width = 64, .depth = 2, .heads = 2,
          .mlp_ratio = 2.0, .classes = classes, .lora_targets = std::move(targets), .lora_rank = 4, .seed = 5};
}
constexpr index_t crossing_batch = 64;

void require_crossing(const vit_config& c) {
  const index_t rows = crossing_batch * c.tokens();
  REQUIRE(F::gemm_tiles(rows, c.width, c.width) > 1);      // q, k, v, o and their input gradients
  REQUIRE(F::gemm_tiles(c.width, c.width, rows) > 1);      // their weight gradients
  REQUIRE(F::gemm_tiles(rows, c.lora_rank, c.width) > 1);  // x A^T of an adapter
  REQUIRE(rows * c.width >= parallel_work);                // layer norm rows in parallel
}

/// What a run leaves that rounding reaches, in three parts compared one by one: the three accuracy matrices, the
/// last epoch's mean losses, and the final value of every parameter (then anything the strategy kept).
struct run_outcome {
  std::vector<double> accuracies, losses, state;
};
template <class Model>
run_outcome outcome_of(const run_result& result, Model& model) {
  run_outcome out;
  for (const accuracy_matrix* m : {&result.task_il, &result.class_il, &result.task_identity})
    for (index_t i = 0; i < m->tasks(); ++i)
      for (index_t j = 0; j < m->tasks(); ++j) out.accuracies.push_back((*m)(i, j));
  out.losses = result.final_loss;
  for (auto& p : parameters(model)) append(out.state, p.value->to_host());
  return out;
}

/// Runs `run` (returning a run_outcome) on 1 and on 2 threads and compares each part bit for bit.
template <class Run>
void check_same_outcome(Run&& run) {
  const std::initializer_list<int> counts = {1, 2};
  const auto outcomes = on_each_thread_count(run, counts);
  auto part = [&](std::vector<double> run_outcome::*member) {
    std::vector<std::vector<double>> values;
    for (const auto& o : outcomes) values.push_back(o.*member);
    return values;
  };
  {
    INFO("accuracy matrices (task-IL, class-IL, task identity)");
    check_same_bits(part(&run_outcome::accuracies), counts);
  }
  {
    INFO("final losses");
    check_same_bits(part(&run_outcome::losses), counts);
  }
  {
    INFO("parameters and strategy state");
    check_same_bits(part(&run_outcome::state), counts);
  }
}

auto adam_factory() {
  return [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-2}); };
}

}  // namespace

TEST_CASE("a short rotation pre-training gives bit-identical parameters on 1, 2 and 3 threads") {
  const vit_config config = crossing_vit(4, {});
  require_crossing(config);
  const auto stream = prototype_image_stream(2, 128, 1);
  const labelled_set& images = stream.tasks[0].train;  // 256 images of 8 x 8; their labels are not read
  const pretrain_settings settings{.epochs = 1, .batch_size = crossing_batch, .learning_rate = 1e-3, .warmup_steps = 2,
                                   .seed = 3, .progress = nullptr};
  const auto results = on_each_thread_count([&] {
    F backend;
    std::vector<double> out;
    for (const auto& p : pretrain_backbone(backend, config, images, settings)) append(out, p.values);
    return out;
  });
  check_same_bits(results);
}

TEST_CASE("a continual stream end to end is bit-identical on 1 and 2 threads: SeqLoRA, TreeLoRA paper, DualLoRA") {
  const auto stream = prototype_image_stream(3, 64, 16);  // 3 tasks of 128 training images: 2 steps per epoch
  const runner_options options{.epochs_per_task = 2, .batch_size = crossing_batch, .seed = 7};
  const vit_config config = crossing_vit(stream.total_classes, {"q", "v"});
  require_crossing(config);
  SUBCASE("SeqLoRA") {
    check_same_outcome([&] {
      F backend;
      vit<F> model(backend, config);
      seq_lora strategy;
      return outcome_of(run_stream(model, stream, strategy, adam_factory(), options), model);
    });
  }
  SUBCASE("TreeLoRA paper mode") {
    check_same_outcome([&] {
      F backend;
      vit<F> model(backend, config);
      tree_lora_paper<F> strategy({.seed = 9});
      return outcome_of(run_stream(model, stream, strategy, adam_factory(), options), model);
    });
  }
  SUBCASE("DualLoRA") {
    check_same_outcome([&] {
      F backend;
      vit<F, dual_lora> model(backend, config, dual_lora::config{.rank = 4});
      dual_lora_strategy<F> strategy(stream);
      auto out = outcome_of(run_stream(model, stream, strategy, adam_factory(), options), model);
      for (const auto& m : strategy.memories()) out.state.push_back(double(m.rank()));  // basis vectors kept
      return out;
    });
  }
}
