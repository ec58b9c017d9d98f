// bench_cuda: the CUDA backend on one GPU.
//   gemm_throughput       cuBLAS gemm at 4096^3 in each gemm mode (fp32, tf32, bf16 storage), TFLOP/s
//   lora_versus_base      LoRA layer forward + backward (base frozen) against the two base GEMMs it cannot avoid
//                         (y = x W^T, dx = dy W), on the ViT-B projection shape 6304 x 768 x 768 (batch 32 x 197
//                         tokens) and on 4096 x 4096 x 4096, rank 8, in each gemm mode
//   vit_training_step     one ViT-B/16-sized training step (224x224x3, patch 16, width 768, depth 12, 12 heads,
//                         MLP 3072, LoRA r = 8 on q and v, batch 32): forward, cross-entropy, backward, AdamW
//   lm_lora_step          one LoRA step of a Llama-3.2-1B-shaped model (random weights: d 2048, 16 layers, 32 query
//                         and 8 key/value heads, MLP 8192, vocabulary 128256, tied head), batch 4 x 512 tokens, r = 8,
//                         alpha = 32 on q_proj and v_proj: zero gradients, forward, next-token cross-entropy over
//                         every token (on the device), backward, Adam on the adapters; tokens/s, and the FLOP rate it
//                         implies (4 N + 12 L d_q T per token, docs/language-models.md) against the bf16 dense peak
//                         TREELORA_PEAK_TFLOPS (default 989, the H100/H200 SXM datasheet figure)
// Times are CUDA events on the context's stream around each side (manual time; medians in the counters); the training
// steps also count how often the host waited for the device (cuda_context::host_waits: 1 per step, the loss). Both sides
// of a ratio are timed interleaved in the same benchmark. bench/gpu/pytorch_gpu_reference.py times the same shapes
// with torch + peft. Without a CUDA device the program says so and exits 0.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <treelora/treelora.hpp>

#include "../bench_support.hpp"
#include "../language_model_flops.hpp"
#include "treelora/backend/cuda_backend.hpp"
#include "treelora/models/llama.hpp"
#include "treelora/models/vit.hpp"
#include "treelora/optim/adam.hpp"

using namespace treelora;
using G = cuda_backend<float>;
using treelora::bench::median;

namespace {


/// Seconds between two events recorded on the stream around `work` (waits for the stop event).
class event_timer {
 public:
  event_timer() {
    TREELORA_CUDA_CHECK(cudaEventCreate(&start_));
    TREELORA_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~event_timer() {
    (void)cudaEventDestroy(start_);
    (void)cudaEventDestroy(stop_);
  }
  event_timer(const event_timer&) = delete;
  event_timer& operator=(const event_timer&) = delete;
  template <class Work>
  double seconds(cudaStream_t stream, Work&& work) {
    TREELORA_CUDA_CHECK(cudaEventRecord(start_, stream));
    work();
    TREELORA_CUDA_CHECK(cudaEventRecord(stop_, stream));
    TREELORA_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    TREELORA_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return 1e-3 * ms;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

/// Times `step` once per benchmark iteration after one warm-up call (allocations, cuBLAS's heuristics), with CUDA
/// events on the context's stream; sets the manual iteration times and the counter host_waits_per_step.
template <class Step>
std::vector<double> time_training_steps(benchmark::State& state, cuda_context& context, Step& step) {
  step();
  event_timer timer;
  std::vector<double> times;
  const std::uint64_t waits = context.host_waits();
  for (auto _ : state) {
    const double s = timer.seconds(context.stream(), step);
    times.push_back(s);
    state.SetIterationTime(s);
  }
  state.counters["host_waits_per_step"] = double(context.host_waits() - waits) / double(std::max<std::size_t>(times.size(), 1));
  return times;
}

constexpr gemm_mode modes[] = {gemm_mode::fp32, gemm_mode::tf32, gemm_mode::bf16};
const char* mode_name(gemm_mode m) { return m == gemm_mode::fp32 ? "fp32" : m == gemm_mode::tf32 ? "tf32" : "bf16"; }

void gemm_throughput(benchmark::State& state) {
  const index_t n = state.range(0);
  const gemm_mode mode = modes[state.range(1)];
  cuda_context context(0, mode);
  G backend(context);
  tensor<G> a(backend, shape{n, n}), b(backend, shape{n, n}), c(backend, shape{n, n});
  fill_uniform<G>(a, -1, 1, 1);
  fill_uniform<G>(b, -1, 1, 2);
  matmul<G>(a, transpose::no, b, transpose::no, c);  // warm-up: cuBLAS heuristics, bf16 scratch
  event_timer timer;
  std::vector<double> times;
  for (auto _ : state) {
    const double s = timer.seconds(context.stream(), [&] { matmul<G>(a, transpose::no, b, transpose::no, c); });
    times.push_back(s);
    state.SetIterationTime(s);
  }
  state.counters["TFLOPs"] = 2.0 * double(n) * double(n) * double(n) / median(times) / 1e12;
  state.SetLabel(mode_name(mode));
}

void lora_versus_base(benchmark::State& state) {
  const index_t rows = state.range(0), width = state.range(1), rank = state.range(2);
  const gemm_mode mode = modes[state.range(3)];
  cuda_context context(0, mode);
  G backend(context);
  lora_layer<linear<G>> layer(backend, linear<G>(backend, width, width, false, 1), {.rank = rank, .alpha = 16, .seed = 2});
  fill_normal<G>(layer.adapter().b(), 0, 0.01f, 3);
  tensor<G> x(backend, shape{rows, width}), dy(backend, shape{rows, width});
  tensor<G> y(backend, shape{rows, width}), dx(backend, shape{rows, width});
  fill_normal<G>(x, 0, 1, 4);
  fill_normal<G>(dy, 0, 1, 5);
  tensor<G>& w = layer.base().weight();
  const auto base_step = [&] {
    matmul<G>(x, transpose::no, w, transpose::yes, y);   // forward
    matmul<G>(dy, transpose::no, w, transpose::no, dx);  // input gradient
  };
  const auto lora_step = [&] {
    layer.forward(x);
    layer.backward(dy);
  };
  base_step();  // warm-up
  lora_step();
  event_timer timer;
  std::vector<double> base_times, lora_times;
  for (auto _ : state) {
    base_times.push_back(timer.seconds(context.stream(), base_step));
    const double lora = timer.seconds(context.stream(), lora_step);
    lora_times.push_back(lora);
    state.SetIterationTime(lora);
  }
  const double base_ms = 1e3 * median(base_times), lora_ms = 1e3 * median(lora_times);
  state.counters["base_ms"] = base_ms;
  state.counters["lora_ms"] = lora_ms;
  state.counters["lora_over_base"] = lora_ms / base_ms;
  state.SetLabel(mode_name(mode));
}

void vit_training_step(benchmark::State& state) {
  const index_t batch = state.range(0);
  const gemm_mode mode = modes[state.range(1)];
  cuda_context context(0, mode);
  G backend(context);
  const vit_config config{.image_height = 224, .image_width = 224, .channels = 3, .patch_size = 16, .width = 768,
                          .depth = 12, .heads = 12, .mlp_ratio = 4.0, .classes = 10, .lora_targets = {"q", "v"},
                          .lora_rank = 8, .lora_alpha = 16.0, .seed = 1};
  vit<G> model(backend, config);
  auto params = parameters(model);
  auto optimizer = make_adamw<G>(params);
  tensor<G> images(backend, shape{batch, 3, 224, 224}), logits_gradient(backend, shape{batch, 10});
  fill_normal<G>(images, 0, 1, 7);
  std::vector<index_t> labels(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<index_t>(i % 2);  // two classes of the head
  const std::vector<index_t> classes = {0, 1};
  double loss = 0;
  const auto step = [&] {
    zero_gradients(params);
    loss = cross_entropy_loss<G>(model.forward(images), labels, logits_gradient, classes);
    model.backward(logits_gradient);
    optimizer.step();
  };
  const std::vector<double> times = time_training_steps(state, context, step);
  state.counters["step_ms"] = 1e3 * median(times);
  state.counters["images_per_s"] = double(batch) / median(times);
  state.counters["loss"] = loss;
  state.SetLabel(mode_name(mode));
}

void lm_lora_step(benchmark::State& state) {
  const index_t batch = state.range(0), tokens = state.range(1);
  const gemm_mode mode = modes[state.range(2)];
  cuda_context context(0, mode);
  G backend(context);
  llama_config c = llama_config::llama_3_2_1b();
  c.tie_word_embeddings = true;
  c.lora_targets = {"q_proj", "v_proj"}, c.lora_rank = 8, c.lora_alpha = 32;
  llama<G> model(backend, c);
  parameter_list<G> trainable;
  for (auto& p : parameters(model))
    if (p.trainable) trainable.push_back(p);
  adam<G> optimiser(trainable, {.learning_rate = 1e-4});
  std::vector<index_t> ids(static_cast<std::size_t>(batch * tokens));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = index_t((i * 7919 + 13) % std::size_t(c.vocab_size));
  const auto layout = left_padded_layout(ids, batch, tokens, -1);
  std::vector<index_t> labels(ids.size(), ignored_label);
  for (std::size_t i = 0; i + 1 < ids.size(); ++i)
    if ((i + 1) % static_cast<std::size_t>(tokens) != 0) labels[i] = ids[i + 1];
  tensor<G> gradient;
  double loss = 0;
  const auto step = [&] {
    zero_gradients(trainable);
    const auto logits = model.forward_tokens(ids, layout);
    gradient.resize(backend, logits.shape());
    loss = token_cross_entropy_loss<G>(logits, labels, gradient);
    model.backward(gradient);
    optimiser.step();
  };
  const std::vector<double> times = time_training_steps(state, context, step);
  const char* peak = std::getenv("TREELORA_PEAK_TFLOPS");
  const double t = median(times), tokens_per_s = double(batch * tokens) / t;
  const double tflops = tokens_per_s * treelora::bench::lora_step_flops_per_token(c, tokens) / 1e12;
  state.counters["step_ms"] = 1e3 * t;
  state.counters["tokens_per_s"] = tokens_per_s;
  state.counters["TFLOP_per_s"] = tflops;
  state.counters["share_of_bf16_peak"] = tflops / (peak ? std::atof(peak) : 989.0);
  state.counters["loss"] = loss;
  state.SetLabel(mode_name(mode));
}

}  // namespace

BENCHMARK(gemm_throughput)->ArgsProduct({{4096}, {0, 1, 2}})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(lora_versus_base)
    ->ArgsProduct({{6304}, {768}, {8}, {0, 1, 2}})
    ->Args({4096, 4096, 8, 0})
    ->Args({4096, 4096, 8, 1})
    ->Args({4096, 4096, 8, 2})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(vit_training_step)->ArgsProduct({{32}, {0, 1, 2}})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK(lm_lora_step)->ArgsProduct({{4}, {512}, {0, 1, 2}})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::printf("bench_cuda: no CUDA device (or no usable driver) on this machine; nothing to benchmark\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
