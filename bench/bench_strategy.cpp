// bench_strategy: what TreeLoRA costs on top of sequential LoRA, what each sparse rule saves, and one ViT training
// step at the demo size and at ViT-B/16 layer sizes. Each ratio is timed interleaved in the same benchmark (medians).
// The strategies have already finished 4 tasks, so the tree, the bandit and the regulariser all do their work.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include <treelora/treelora.hpp>

using namespace treelora;
using F = cpu_backend<float>;

namespace {

using bench::median;
using bench::now;


/// Times after_backward (the tree, the bandit and the regulariser) inside the step.
template <class S>
struct timed : S {
  using S::S;
  double seconds = 0;
  template <class M>
  double after_backward(M& model, const training_context& c) {
    const double start = now();
    const double value = S::after_backward(model, c);
    seconds += now() - start;
    return value;
  }
};

vit_config demo_config() {
  vit_config c;  // 28 x 28, patch 7, width 64, depth 4, heads 4 (the main job's model)
  c.mlp_ratio = 2.0;
  return c;
}
vit_config vit_b_config() {
  vit_config c;  // ViT-B/16 layer sizes: 224 x 224 x 3, patch 16 (197 tokens), width 768, 12 heads, MLP 3072
  c.image_height = c.image_width = 224, c.channels = 3, c.patch_size = 16, c.width = 768, c.heads = 12, c.mlp_ratio = 4.0;
  c.depth = 1;  // one block: a 2-core machine takes seconds per step for the full depth 12 (time scales linearly)
  return c;
}

/// A fixed layer-selective rule: the adapters of the lower half of the model (in model order, so the lower blocks)
/// compute no gradients and are not updated. Nothing below the lowest active adapter needs a gradient, so the ViT's
/// backward pass stops there: what the layer-selective rules save when their selection lies in the upper layers.
struct lower_half_off_rule {
  static constexpr std::string_view name() { return "lower-half-off"; }
  template <Backend B>
  void before_backward(std::vector<adapter_view<B>>& adapters, const training_context&, std::span<const double>) {
    for (std::size_t l = 0; l < adapters.size(); ++l) *adapters[l].gradients_enabled = 2 * l >= adapters.size();
  }
  template <Backend B>
  void after_backward(std::vector<adapter_view<B>>& adapters, const training_context&, sparse_update<B>& update) {
    update.clear();
    for (std::size_t l = 0; 2 * l < adapters.size(); ++l) {
      update.skipped.push_back(adapters[l].a);
      update.skipped.push_back(adapters[l].b);
    }
  }
};
static_assert(SparseRule<lower_half_off_rule, F>);

/// A model, a strategy, an optimiser and a batch, with the strategy `previous` tasks into the stream.
template <class S>
struct fixture {
  F backend;
  vit<F> model;
  S strategy;
  parameter_list<F> params;
  adam<F> optimizer;
  tensor<F> x, logits_gradient;
  std::vector<index_t> labels, classes = {8, 9};
  training_context context;

  fixture(const vit_config& config, index_t batch, S s, index_t previous = 4)
      : model(backend, config), strategy(std::move(s)), params(parameters(model)), optimizer(params, {}),
        x(backend, shape{batch, config.image_features()}) {
    fill_normal<F>(x, 0, 1, 7);
    model.set_input_gradient_needed(false);  // as run_stream does: nobody reads d images
    for (index_t i = 0; i < batch; ++i) labels.push_back(8 + i % 2);
    context = {.task = 0, .tasks = previous + 1, .epochs = 1, .steps_per_epoch = 100};
    for (index_t task = 0; task <= previous; ++task) {
      context.task = task;
      strategy.begin_task(model, context);
      strategy.begin_epoch(model, context);
      for (index_t t = 0; t < (task < previous ? 6 : 0); ++t) step(t);
      if (task < previous) strategy.end_task(model, context);
    }
  }
  void step(index_t t) {
    context.step = t % context.steps_per_epoch;
    train_step(model, strategy, optimizer, params, x, labels, classes, context, logits_gradient);
  }
};

template <class Baseline, class Candidate>
void compare(benchmark::State& state, const vit_config& config, index_t batch, Baseline baseline, Candidate candidate) {
  fixture<Baseline> a(config, batch, std::move(baseline));
  fixture<Candidate> b(config, batch, std::move(candidate));
  std::vector<double> ta, tb;
  index_t t = 0;
  for (auto _ : state) {
    double start = now();
    a.step(t);
    ta.push_back(now() - start);
    start = now();
    b.step(t);
    tb.push_back(now() - start);
    state.SetIterationTime(tb.back());
    ++t;
  }
  state.counters["baseline_ms"] = 1e3 * median(ta);
  state.counters["candidate_ms"] = 1e3 * median(tb);
  state.counters["ratio"] = median(tb) / median(ta);
  if constexpr (requires { b.strategy.seconds; })
    state.counters["selection_share"] = b.strategy.seconds / std::max(1e-12, [&] {
      double s = 0;
      for (double v : tb) s += v;
      return s;
    }());
}

void tree_lora_reference_vs_seq(benchmark::State& state) {
  compare(state, demo_config(), 64, seq_lora(), timed<tree_lora_reference<F>>());
}
void tree_lora_paper_vs_seq(benchmark::State& state) {
  compare(state, demo_config(), 64, seq_lora(), timed<tree_lora_paper<F>>(tree_lora_config{.mode = tree_lora_mode::paper}));
}
template <class Rule>
void sparse_rule_vs_dense(benchmark::State& state) {
  const tree_lora_config paper{.mode = tree_lora_mode::paper};
  compare(state, demo_config(), 64, tree_lora_paper<F>(paper), tree_lora_paper<F, Rule>(paper));
}
void lower_half_off_vs_dense(benchmark::State& state) {
  const tree_lora_config paper{.mode = tree_lora_mode::paper};
  compare(state, demo_config(), 64, tree_lora_paper<F>(paper), tree_lora_paper<F, lower_half_off_rule>(paper));
}
void vit_b_depth2_lower_half_off_vs_dense(benchmark::State& state) {
  vit_config c = vit_b_config();
  c.depth = 2;  // two ViT-B blocks: the rule switches off block 0's adapters, backward stops at block 1
  const tree_lora_config paper{.mode = tree_lora_mode::paper};
  compare(state, c, 4, tree_lora_paper<F>(paper), tree_lora_paper<F, lower_half_off_rule>(paper));
}
void vit_b_tree_lora_reference_vs_seq(benchmark::State& state) {
  compare(state, vit_b_config(), 4, seq_lora(), timed<tree_lora_reference<F>>());
}

void vit_training_step(benchmark::State& state, vit_config config, index_t batch) {
  fixture<seq_lora> f(config, batch, seq_lora(), 0);
  std::vector<double> times;
  index_t t = 0;
  for (auto _ : state) {
    const double start = now();
    f.step(t++);
    times.push_back(now() - start);
    state.SetIterationTime(times.back());
  }
  state.counters["step_ms"] = 1e3 * median(times);
  state.counters["images_per_s"] = double(batch) / median(times);
}

/// The time activation checkpointing costs: the same step with and without it, interleaved, medians and their ratio.
void vit_checkpointing_time(benchmark::State& state, vit_config config, index_t batch) {
  fixture<seq_lora> plain(config, batch, seq_lora(), 0), checkpointed(config, batch, seq_lora(), 0);
  checkpointed.model.set_activation_checkpointing(true);
  plain.step(0), checkpointed.step(0);
  std::vector<double> a, b;
  index_t t = 1;
  for (auto _ : state) {
    double start = now();
    plain.step(t);
    a.push_back(now() - start);
    start = now();
    checkpointed.step(t++);
    b.push_back(now() - start);
    state.SetIterationTime(a.back() + b.back());
  }
  state.counters["plain_ms"] = 1e3 * median(a);
  state.counters["checkpointed_ms"] = 1e3 * median(b);
  state.counters["ratio"] = median(b) / median(a);
}

/// Resident memory of this process from /proc/self/status ("VmRSS" now, "VmHWM" its peak), in bytes; 0 where
/// the file is missing.
double proc_status_bytes(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(status, line))
    if (line.rfind(key, 0) == 0) return 1024.0 * std::stod(line.substr(key.size()));  // "VmRSS:   1234 kB"
  return 0;
}

/// What one training step must keep between its forward and its backward pass, by the mathematics alone, for the
/// pre-LN ViT with a frozen backbone and LoRA (rank r) on q and v, per block: the block input and LN1's output
/// (LN1's backward, the adapters' dA), q, k and v and the attention probabilities (attention's backward), the
/// residual h (LN2's backward), fc1's pre-activation (GELU's derivative), the adapters' A x (their dB).
double activations_needed_bytes(const vit_config& c, index_t batch) {
  const double n = double(batch * c.tokens()), d = double(c.width), m = double(c.mlp_hidden());
  const double per_block = 6 * n * d + n * m + double(batch * c.heads) * double(c.tokens() * c.tokens()) +
                           2 * n * double(c.lora_rank);
  return sizeof(float) * double(c.depth) * per_block;
}

/// Memory of one training step: the tensor storage alive at its peak (host_memory), split into what was alive
/// before the step (parameters, optimiser moments, the buffers earlier steps left) and what the step added, against
/// what the mathematics needs; and the process's resident memory.
void vit_step_memory(benchmark::State& state, vit_config config, index_t batch, bool checkpointing = false) {
  fixture<seq_lora> f(config, batch, seq_lora(), 0);
  f.model.set_activation_checkpointing(checkpointing);  // per block: keep inputs and outputs, recompute in backward
  f.step(0);  // buffers sized
  std::ofstream("/proc/self/clear_refs") << "5";  // restart VmHWM here (Linux), where allowed
  const double before = double(host_memory::current());
  host_memory::reset_peak();
  index_t t = 1;
  for (auto _ : state) {
    const double start = now();
    f.step(t++);
    state.SetIterationTime(now() - start);
  }
  std::size_t parameter_bytes = 0;
  for (const auto& p : f.params) parameter_bytes += sizeof(float) * std::size_t(p.value->numel());
  state.counters["parameters_MiB"] = double(parameter_bytes) / (1 << 20);
  state.counters["alive_before_step_MiB"] = before / (1 << 20);
  state.counters["tensor_peak_MiB"] = double(host_memory::peak()) / (1 << 20);
  state.counters["activations_needed_MiB"] = activations_needed_bytes(config, batch) / (1 << 20);
  state.counters["rss_MiB"] = proc_status_bytes("VmRSS") / (1 << 20);
  state.counters["rss_peak_MiB"] = proc_status_bytes("VmHWM") / (1 << 20);
}

}  // namespace

BENCHMARK_CAPTURE(vit_step_memory, demo_batch64, demo_config(), 64)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(vit_step_memory, vit_b_layers_depth2_batch4, [] {
  vit_config c = vit_b_config();
  c.depth = 2;
  return c;
}(), 4)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK_CAPTURE(vit_checkpointing_time, demo_batch64, demo_config(), 64)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(15);
BENCHMARK_CAPTURE(vit_checkpointing_time, vit_b_layers_depth2_batch4, [] {
  vit_config c = vit_b_config();
  c.depth = 2;
  return c;
}(), 4)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(7);
BENCHMARK_CAPTURE(vit_step_memory, demo_batch64_checkpointed, demo_config(), 64, true)
    ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(vit_step_memory, vit_b_layers_depth2_batch4_checkpointed, [] {
  vit_config c = vit_b_config();
  c.depth = 2;
  return c;
}(), 4, true)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(tree_lora_reference_vs_seq)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(tree_lora_paper_vs_seq)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK(sparse_rule_vs_dense<top_k_rule>)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(sparse_rule_vs_dense<soft_threshold_rule>)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(sparse_rule_vs_dense<random_mask_rule>)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(sparse_rule_vs_dense<selected_modules_rule>)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(lower_half_off_vs_dense)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(vit_b_depth2_lower_half_off_vs_dense)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(6);
BENCHMARK(vit_b_tree_lora_reference_vs_seq)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(6);
BENCHMARK_CAPTURE(vit_training_step, demo_batch64, demo_config(), 64)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(vit_training_step, vit_b_layers_depth1_batch4, vit_b_config(), 4)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(6);
