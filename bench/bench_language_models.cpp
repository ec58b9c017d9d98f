// bench/bench_language_models.cpp: the decoder-only language models (models/llama.hpp) on this machine.
//   lm_lora_step:  one LoRA training step (zero gradients, forward, next-token cross-entropy over every token,
//                  backward, Adam on the adapters) on random weights: tokens per second, the FLOP rate it implies
//                  (4 N + 12 L d_q T FLOPs per token, docs/language-models.md), and its share of the machine's
//                  fp32 peak given as --peak_gflops (a benchmark argument here: TREELORA_PEAK_GFLOPS, default 157,
//                  the 2-core machine of docs/benchmarks.md).
//   lm_generate:   greedy generation, tokens per second with the key/value cache and without it (same run, ratio).
// Shapes: the tiny benchmark model (5.5 M), SmolLM-135M (d 576, 30 layers, 9/3 heads, V 49152) at sequence 256,
// LoRA r = 8, alpha = 32 on q_proj and v_proj (the paper's setting). bench/pytorch_lm_reference.py times the same
// step in PyTorch with the same threads.
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "bench_support.hpp"
#include "language_model_flops.hpp"
#include "treelora/models/llama.hpp"
#include "treelora/optim/adam.hpp"

using namespace treelora;
using treelora::bench::median;
using treelora::bench::now;
using F32 = cpu_backend<float>;

namespace {

double peak_gflops() {
  if (const char* v = std::getenv("TREELORA_PEAK_GFLOPS")) return std::atof(v);
  return 157.0;
}

llama_config named(const std::string& name) {
  llama_config c = name == "smollm_135m" ? llama_config::smollm_135m() : llama_config::tiny();
  c.lora_targets = {"q_proj", "v_proj"}, c.lora_rank = 8, c.lora_alpha = 32;
  return c;
}

void lm_lora_step(benchmark::State& state, const std::string& config_name, index_t batch, index_t tokens) {
  F32 backend;
  const llama_config c = named(config_name);
  llama<F32> model(backend, c);
  auto params = parameters(model);
  parameter_list<F32> trainable;
  for (auto& p : params)
    if (p.trainable) trainable.push_back(p);
  adam<F32> optimiser(trainable, {.learning_rate = 1e-4});
  std::vector<index_t> ids(std::size_t(batch * tokens));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = index_t((i * 7919 + 13) % std::size_t(c.vocab_size));
  const auto layout = left_padded_layout(ids, batch, tokens, -1);
  std::vector<index_t> labels(ids.size(), ignored_label);
  for (std::size_t i = 0; i + 1 < ids.size(); ++i)
    if ((i + 1) % std::size_t(tokens) != 0) labels[i] = ids[i + 1];
  tensor<F32> gradient;
  std::vector<double> times, forward_times, loss_times, backward_times;
  for (auto _ : state) {
    const double start = now();
    zero_gradients(trainable);
    const auto logits = model.forward_tokens(ids, layout);
    const double forwarded = now();
    gradient.resize(backend, logits.shape());
    benchmark::DoNotOptimize(token_cross_entropy_loss<F32>(logits, labels, gradient));
    const double lossed = now();
    model.backward(gradient);
    const double backwarded = now();
    optimiser.step();
    const double seconds = now() - start;
    forward_times.push_back(forwarded - start), loss_times.push_back(lossed - forwarded), backward_times.push_back(backwarded - lossed);
    state.SetIterationTime(seconds);
    times.push_back(seconds);
  }
  const double t = median(times), tokens_per_s = double(batch * tokens) / t;
  const double flops = treelora::bench::lora_step_flops_per_token(c, tokens);
  state.counters["step_ms"] = 1e3 * t;
  state.counters["forward_ms"] = 1e3 * median(forward_times);
  state.counters["loss_ms"] = 1e3 * median(loss_times);
  state.counters["backward_ms"] = 1e3 * median(backward_times);
  state.counters["tokens_per_s"] = tokens_per_s;
  state.counters["GFLOP_per_s"] = tokens_per_s * flops / 1e9;
  state.counters["limit_tokens_per_s"] = peak_gflops() * 1e9 / flops;
  state.counters["share_of_limit"] = tokens_per_s * flops / (peak_gflops() * 1e9);
}

void lm_generate(benchmark::State& state, const std::string& config_name, index_t prompt, index_t new_tokens) {
  F32 backend;
  llama_config c = named(config_name);
  c.eos_token_ids = {c.vocab_size - 1};
  llama<F32> model(backend, c);
  std::vector<index_t> p(static_cast<std::size_t>(prompt));
  for (index_t i = 0; i < prompt; ++i) p[std::size_t(i)] = index_t((i * 31 + 5) % (c.vocab_size - 1));
  std::vector<double> cached, recomputed;
  for (auto _ : state) {
    generation_options options{.max_new_tokens = new_tokens, .stop_ids = {c.vocab_size - 1}, .use_cache = true};
    double start = now();
    const auto a = generate_greedy(model, {p}, options);
    cached.push_back(now() - start);
    options.use_cache = false;
    start = now();
    const auto b = generate_greedy(model, {p}, options);
    recomputed.push_back(now() - start);
    if (a.tokens != b.tokens) state.SkipWithError("the cache changed the generated tokens");
    state.SetIterationTime(cached.back());
    state.counters["generated"] = double(a.tokens[0].size());
  }
  const double n = state.counters["generated"];
  state.counters["cached_tokens_per_s"] = n / median(cached);
  state.counters["recomputed_tokens_per_s"] = n / median(recomputed);
  state.counters["cache_speedup"] = median(recomputed) / median(cached);
}

}  // namespace

BENCHMARK_CAPTURE(lm_lora_step, tiny_batch8_seq256, std::string("tiny"), 8, 256)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK_CAPTURE(lm_lora_step, smollm_135m_seq256, std::string("smollm_135m"), 1, 256)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK_CAPTURE(lm_generate, tiny_prompt32_new64, std::string("tiny"), 32, 64)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(lm_generate, smollm_135m_prompt32_new32, std::string("smollm_135m"), 32, 32)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
