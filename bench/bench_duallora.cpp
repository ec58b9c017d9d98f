// bench_duallora: what DualLoRA and the LoRA baselines cost per training step and per inference batch against
// SeqLoRA on the main job's ViT (28 x 28, patch 7, width 64, depth 4, LoRA on q and v, batch 64), after four
// finished tasks (so every frozen branch, basis and gate is in place). Timed interleaved in the same benchmark;
// the counters are medians and the ratio is candidate / SeqLoRA.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include <treelora/strategy/duallora.hpp>
#include <treelora/strategy/inflora.hpp>
#include <treelora/strategy/olora.hpp>
#include <treelora/treelora.hpp>

using namespace treelora;
using F = cpu_backend<float>;

namespace {

using bench::median;
using bench::now;


constexpr index_t batch = 64, tasks = 5;

/// Five tasks of random 28 x 28 images (two classes each, 128 training images): what the feature passes read.
const task_stream& random_stream() {
  static const task_stream stream = [] {
    task_stream s{"random images", 2 * tasks, {}};
    random::generator g(11);
    for (index_t t = 0; t < tasks; ++t) {
      classification_task task{concat("task ", t), {2 * t, 2 * t + 1}, {shape{28, 28}, {}, {}}, {shape{28, 28}, {}, {}}};
      for (index_t i = 0; i < 128; ++i) {
        for (index_t k = 0; k < 28 * 28; ++k) task.train.features.push_back(static_cast<float>(g.normal()));
        task.train.labels.push_back(2 * t + i % 2);
      }
      task.test = task.train;
      s.tasks.push_back(std::move(task));
    }
    return s;
  }();
  return stream;
}

vit_config demo_config() {
  vit_config c;
  c.mlp_ratio = 2.0;
  c.classes = 2 * tasks;
  return c;
}

/// A model and its strategy after `tasks - 1` finished tasks (six steps each), training the last task.
template <class Model, class Strategy>
struct fixture {
  F backend;
  Model model;
  Strategy strategy;
  parameter_list<F> params;
  adam<F> optimizer;
  tensor<F> x, logits_gradient;
  std::vector<index_t> labels, classes = {2 * tasks - 2, 2 * tasks - 1};
  training_context context;

  template <class Config>
  fixture(Config adapter, Strategy s)
      : model(backend, demo_config(), adapter), strategy(std::move(s)), params(parameters(model)), optimizer(params, {}),
        x(backend, shape{batch, 28 * 28}) {
    fill_normal<F>(x, 0, 1, 7);
    for (index_t i = 0; i < batch; ++i) labels.push_back(classes[std::size_t(i % 2)]);
    context = {.task = 0, .tasks = tasks, .epochs = 1, .steps_per_epoch = 100};
    for (index_t task = 0; task < tasks; ++task) {
      context.task = task;
      strategy.begin_task(model, context);
      params = parameters(model);
      optimizer = adam<F>(params, {});
      for (index_t t = 0; t < (task + 1 < tasks ? 6 : 0); ++t) step();
      if (task + 1 < tasks) strategy.end_task(model, context);
    }
  }
  void step() { train_step(model, strategy, optimizer, params, x, labels, classes, context, logits_gradient); }
  void infer() {
    model.set_training(false);
    benchmark::DoNotOptimize(model.forward(x).data());
    model.set_training(true);
  }
};

template <class Candidate>
void against_seq_lora(benchmark::State& state, Candidate& b) {
  fixture<vit<F>, seq_lora> a(demo_config().lora().lora, seq_lora());
  std::vector<double> ta, tb, ia, ib;
  for (auto _ : state) {
    double start = now();
    a.step();
    ta.push_back(now() - start);
    start = now();
    b.step();
    tb.push_back(now() - start);
    state.SetIterationTime(tb.back());
    start = now();
    a.infer();
    ia.push_back(now() - start);
    start = now();
    b.infer();
    ib.push_back(now() - start);
  }
  state.counters["seq_step_ms"] = 1e3 * median(ta);
  state.counters["step_ms"] = 1e3 * median(tb);
  state.counters["step_ratio"] = median(tb) / median(ta);
  state.counters["seq_infer_ms"] = 1e3 * median(ia);
  state.counters["infer_ms"] = 1e3 * median(ib);
  state.counters["infer_ratio"] = median(ib) / median(ia);
  state.counters["state_kB"] = double(b.strategy.state_bytes()) / 1e3;
}

void dual_lora_vs_seq(benchmark::State& state, dual_gate gate) {
  fixture<vit<F, dual_lora>, dual_lora_strategy<F>> b(dual_lora::config{.rank = 8, .gate = gate},
                                                      dual_lora_strategy<F>(random_stream()));
  against_seq_lora(state, b);
}
void dual_lora_shared_vs_seq(benchmark::State& state) {
  fixture<vit<F, dual_lora>, dual_lora_strategy<F>> b(dual_lora::config{.rank = 8, .orthogonal = dual_orthogonal::shared_projected},
                                                      dual_lora_strategy<F>(random_stream()));
  against_seq_lora(state, b);
}
void inflora_vs_seq(benchmark::State& state) {
  fixture<vit<F, inflora>, inflora_strategy> b(inflora::config{.rank = 8}, inflora_strategy(random_stream()));
  against_seq_lora(state, b);
}
void olora_vs_seq(benchmark::State& state) {
  fixture<vit<F, olora>, olora_strategy<F>> b(olora::config{.rank = 8}, olora_strategy<F>());
  against_seq_lora(state, b);
}

}  // namespace

BENCHMARK_CAPTURE(dual_lora_vs_seq, energy_gate, dual_gate::energy)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(dual_lora_vs_seq, top1_gate, dual_gate::top1)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(dual_lora_shared_vs_seq)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(inflora_vs_seq)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(olora_vs_seq)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
