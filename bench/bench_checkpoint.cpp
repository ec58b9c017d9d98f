// bench_checkpoint: what a continual-learning checkpoint costs (io/checkpoint.hpp, runner_options::checkpoint).
// Each strategy trains the main job's ViT (28 x 28 images, patch 7, width 64, depth 4, 4 heads, LoRA r = 8 on q and v;
// InfLoRA on k and v) on 4 tasks of 2 classes (600 synthetic prototype images per class, batch 64, 2 epochs: 38 steps
// per task, half of the main job's default 76) with a checkpoint written after every task. Reported per strategy, as
// medians over the tasks: the task's training time, the checkpoint's write time, their ratio (the share the
// checkpoint adds to a task), the file's size, and the time to load the last checkpoint (resume_ms).
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <treelora/strategy/duallora.hpp>
#include <treelora/strategy/inflora.hpp>
#include <treelora/strategy/olora.hpp>
#include <treelora/treelora.hpp>

using namespace treelora;
using F = cpu_backend<float>;
namespace fs = std::filesystem;

namespace {

using bench::median;
using bench::now;

/// 4 tasks x 2 classes of 28 x 28 images: a fixed random prototype per class plus Gaussian noise.
const task_stream& stream() {
  static const task_stream s = [] {
    const index_t tasks = 4, per_class = 600, test_per_class = 100, pixels = 28 * 28;
    random::generator g(7);
    std::vector<std::vector<float>> prototypes(std::size_t(2 * tasks), std::vector<float>(std::size_t(pixels)));
    for (auto& p : prototypes)
      for (auto& v : p) v = static_cast<float>(g.normal());
    task_stream out{"bench prototypes", 2 * tasks, {}};
    for (index_t t = 0; t < tasks; ++t) {
      classification_task task{concat("task ", t), {2 * t, 2 * t + 1}, {shape{28, 28}, {}, {}}, {shape{28, 28}, {}, {}}};
      for (auto [set, n] : {std::pair{&task.train, per_class}, std::pair{&task.test, test_per_class}})
        for (index_t i = 0; i < n; ++i)
          for (index_t c : task.classes) {
            for (index_t k = 0; k < pixels; ++k)
              set->features.push_back(prototypes[std::size_t(c)][std::size_t(k)] + static_cast<float>(0.8 * g.normal()));
            set->labels.push_back(c);
          }
      out.tasks.push_back(std::move(task));
    }
    return out;
  }();
  return s;
}

vit_config demo_vit(std::vector<std::string> targets = {"q", "v"}) {
  return {.patch_size = 7, .width = 64, .depth = 4, .heads = 4, .mlp_ratio = 2.0, .classes = 8,
          .lora_targets = std::move(targets), .lora_rank = 8, .lora_alpha = 16, .seed = 1};
}

template <class M, class S>
void measure(benchmark::State& state, M& model, S& strategy, const std::string& name) {
  const fs::path path = fs::temp_directory_path() / concat("treelora-bench-checkpoint-", ::getpid(), "-", name, ".safetensors");
  const runner_options options{.epochs_per_task = 2, .batch_size = 64, .seed = 1, .checkpoint = path};
  run_result result;
  for (auto _ : state) {
    result = run_stream(model, stream(), strategy, [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-3}); },
                        options);
    state.SetIterationTime(result.seconds);
  }
  std::vector<double> share;
  for (std::size_t t = 0; t < result.train_seconds.size(); ++t) share.push_back(result.checkpoint_seconds[t] / result.train_seconds[t]);
  state.counters["task_s"] = median(result.train_seconds);
  state.counters["checkpoint_ms"] = 1e3 * median(result.checkpoint_seconds);
  state.counters["share_pct"] = 100 * median(share);
  state.counters["file_kB"] = double(fs::file_size(path)) / 1e3;
  const double begin = now();
  checkpoint_reader reader(path);
  (void)reader;
  state.counters["open_ms"] = 1e3 * (now() - begin);
  fs::remove(path);
}

void seq(benchmark::State& state) {
  F backend;
  vit<F> model(backend, demo_vit());
  seq_lora strategy;
  measure(state, model, strategy, "seq");
}
void tree_reference(benchmark::State& state) {
  F backend;
  vit<F> model(backend, demo_vit());
  tree_lora_reference<F> strategy;
  measure(state, model, strategy, "tree-reference");
}
void tree_paper(benchmark::State& state) {
  F backend;
  vit<F> model(backend, demo_vit());
  tree_lora_paper<F> strategy;
  measure(state, model, strategy, "tree-paper");
}
void inflora_run(benchmark::State& state) {
  F backend;
  vit<F, inflora> model(backend, demo_vit({"k", "v"}), {.rank = 8});
  inflora_strategy strategy(stream());
  measure(state, model, strategy, "inflora");
}
void olora_run(benchmark::State& state) {
  F backend;
  vit<F, olora> model(backend, demo_vit(), {.rank = 8});
  olora_strategy<F> strategy;
  measure(state, model, strategy, "olora");
}
void duallora_run(benchmark::State& state) {
  F backend;
  vit<F, dual_lora> model(backend, demo_vit(), {.rank = 8});
  dual_lora_strategy<F> strategy(stream());
  measure(state, model, strategy, "duallora");
}

}  // namespace

BENCHMARK(seq)->Name("checkpoint/SeqLoRA")->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(tree_reference)->Name("checkpoint/TreeLoRA-reference")->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(tree_paper)->Name("checkpoint/TreeLoRA-paper")->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(inflora_run)->Name("checkpoint/InfLoRA")->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(olora_run)->Name("checkpoint/O-LoRA")->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(duallora_run)->Name("checkpoint/DualLoRA")->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
