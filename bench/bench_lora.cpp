// bench_lora: the CPU backend's GEMM throughput against the machine's fp32 peak, and the LoRA layer's
// forward + backward against the two GEMMs of its frozen base that it cannot avoid (y = x W^T, dx = dy W).
// Both sides of a ratio are timed interleaved in the same benchmark, and medians are reported.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <utility>
#include <vector>

#include <treelora/treelora.hpp>
#include <treelora/tensor/eigen_interop.hpp>

using namespace treelora;
using B = cpu_backend<float>;

namespace {

using bench::median;

// 2 cores x AVX2 FMA (2 x 8 fp32 lanes x 2 flops) x 2.45 GHz = 156.8 GFLOP/s (docs/benchmarks.md).
double peak_gflops() {
  if (const char* env = std::getenv("TREELORA_PEAK_GFLOPS")) return std::atof(env);
  return 156.8;
}


template <class F>
double seconds(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The backend's gemm (OpenBLAS when built with TREELORA_BLAS, else Eigen) and Eigen's product on the same
// operands, interleaved: eigen_GFLOPs and backend_over_eigen compare the two routes in one run.
void gemm_throughput(benchmark::State& state) {
  B backend;
  const index_t n = state.range(0);
  tensor<B> a(backend, shape{n, n}), b(backend, shape{n, n}), c(backend, shape{n, n});
  fill_uniform<B>(a, -1, 1, 1);
  fill_uniform<B>(b, -1, 1, 2);
  auto cm = as_eigen(c);
  const auto am = as_eigen(std::as_const(a)), bm = as_eigen(std::as_const(b));
  std::vector<double> times, eigen_times;
  for (auto _ : state) {
    const double s = seconds([&] { matmul<B>(a, transpose::no, b, transpose::no, c); });
    eigen_times.push_back(seconds([&] { cm.noalias() = am * bm; }));
    times.push_back(s);
    state.SetIterationTime(s);
  }
  const double flops = 2.0 * double(n) * double(n) * double(n);
  const double gflops = flops / median(times) / 1e9, eigen_gflops = flops / median(eigen_times) / 1e9;
  state.counters["GFLOPs"] = gflops;
  state.counters["peak_fraction"] = gflops / peak_gflops();
  state.counters["eigen_GFLOPs"] = eigen_gflops;
  state.counters["eigen_peak_fraction"] = eigen_gflops / peak_gflops();
  state.counters["backend_over_eigen"] = gflops / eigen_gflops;
}

// LoRA forward+backward (base frozen) vs the base's forward GEMM + input-gradient GEMM, same shapes.
void lora_versus_base(benchmark::State& state) {
  B backend;
  const index_t rows = state.range(0), width = state.range(1), rank = state.range(2);
  lora_layer<linear<B>> layer(backend, linear<B>(backend, width, width, false, 1), {.rank = rank, .alpha = 16, .seed = 2});
  fill_normal<B>(layer.adapter().b(), 0, 0.01f, 3);
  tensor<B> x(backend, shape{rows, width}), dy(backend, shape{rows, width});
  tensor<B> y(backend, shape{rows, width}), dx(backend, shape{rows, width});
  fill_normal<B>(x, 0, 1, 4);
  fill_normal<B>(dy, 0, 1, 5);
  tensor<B>& w = layer.base().weight();
  std::vector<double> base_times, lora_times;
  for (auto _ : state) {
    const double base = seconds([&] {
      matmul<B>(x, transpose::no, w, transpose::yes, y);   // forward
      matmul<B>(dy, transpose::no, w, transpose::no, dx);  // input gradient
    });
    const double lora = seconds([&] {
      benchmark::DoNotOptimize(layer.forward(x).data());
      benchmark::DoNotOptimize(layer.backward(dy).data());
    });
    base_times.push_back(base);
    lora_times.push_back(lora);
    state.SetIterationTime(lora);
  }
  const double base_ms = 1e3 * median(base_times), lora_ms = 1e3 * median(lora_times);
  state.counters["base_ms"] = base_ms;
  state.counters["lora_ms"] = lora_ms;
  state.counters["ratio"] = lora_ms / base_ms;
  state.counters["base_GFLOPs"] = 2 * 2.0 * double(rows) * double(width) * double(width) / (base_ms * 1e6);
}

}  // namespace

BENCHMARK(gemm_throughput)->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)->UseManualTime()->Unit(benchmark::kMillisecond);
// ViT-B: 32 images x 197 tokens, 768 x 768, r = 8.  LLM-like: 512 tokens, 2048 x 2048, r = 8.
BENCHMARK(lora_versus_base)->Args({32 * 197, 768, 8})->Args({512, 2048, 8})->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
