// treelora/backend/cpu_backend.hpp: the CPU backend (its declaration; the kernels are in cpu_backend_kernels.hpp).
// GEMM goes through Eigen's blocked kernels, or through OpenBLAS's when TREELORA_USE_CBLAS is defined (CMake option
// TREELORA_BLAS), over tiles of C that OpenMP's threads share out; row-wise operations run rows in parallel;
// everything else is a vectorised Eigen array expression. No result depends on the thread count: every parallel
// loop writes disjoint outputs, each computed by the same code whichever thread runs it, the GEMM's tiles are fixed
// by the shape alone, and reductions run on one thread (docs/design.md, "Reproducibility across thread counts").
//
// This header does not include Eigen. Header-only (the default) it includes the kernels at its end; with
// TREELORA_COMPILED defined (CMake target treelora::compiled) cpu_backend<float> and cpu_backend<double> are declared
// `extern template` and their kernels come compiled from the library, so a program that never names Eigen itself
// parses none of it (docs/build_time.md).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <numbers>
#include <span>
#include <string_view>

#include "treelora/backend/backend.hpp"
#include "treelora/backend/calling_thread_only.hpp"
#include "treelora/backend/random.hpp"

// Rows or elements run in parallel only when there is enough work: on a shared machine a parallel region over a
// tiny loop waits for a descheduled thread far longer than the loop takes.
#define TREELORA_PRAGMA(text) _Pragma(#text)
#if defined(_OPENMP)
#include <omp.h>
#define TREELORA_PARALLEL_FOR_IF(work) TREELORA_PRAGMA(omp parallel for schedule(static) if ((work) >= (index_t(1) << 16)))
#else
#define TREELORA_PARALLEL_FOR_IF(work)
#endif

namespace treelora {

/// Bytes of host_buffer storage (every CPU tensor's) alive now, and the most alive at once since the last
/// reset_peak(): what a training step really holds, to set against the process's resident memory
/// (bench/bench_strategy.cpp, docs/benchmarks.md). Two relaxed atomic updates per allocation.
class host_memory {
 public:
  static std::size_t current() { return current_.load(std::memory_order_relaxed); }
  static std::size_t peak() { return peak_.load(std::memory_order_relaxed); }
  /// The peak restarts from what is alive now.
  static void reset_peak() { peak_.store(current(), std::memory_order_relaxed); }
  static void allocated(std::size_t bytes) {
    const std::size_t now = current_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    std::size_t seen = peak_.load(std::memory_order_relaxed);
    while (now > seen && !peak_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
  }
  static void freed(std::size_t bytes) { current_.fetch_sub(bytes, std::memory_order_relaxed); }

 private:
  static inline std::atomic<std::size_t> current_{0}, peak_{0};
};

/// Owning, 64-byte aligned host array. Moves, never copies implicitly.
template <class Scalar>
class host_buffer {
 public:
  host_buffer() = default;
  explicit host_buffer(index_t size) : size_(size) {
    if (size < 0) throw_invalid_argument("host_buffer", concat("negative size ", size));
    if (size > 0) {
      const std::size_t bytes = ((static_cast<std::size_t>(size) * sizeof(Scalar) + 63) / 64) * 64;
      data_ = std::unique_ptr<Scalar, free_deleter>(static_cast<Scalar*>(std::aligned_alloc(64, bytes)), free_deleter{bytes});
      if (!data_) throw std::bad_alloc();
      host_memory::allocated(bytes);
    }
  }
  Scalar* data() { return data_.get(); }
  const Scalar* data() const { return data_.get(); }
  index_t size() const { return size_; }

 private:
  struct free_deleter {
    std::size_t bytes = 0;  ///< what the allocation counted in host_memory
    void operator()(Scalar* p) const {
      host_memory::freed(bytes);
      std::free(p);
    }
  };
  std::unique_ptr<Scalar, free_deleter> data_;
  index_t size_ = 0;
};

/// The CPU backend. Stateless: one object may be shared by any number of layers and threads.
template <class Scalar>
class cpu_backend {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "treelora::cpu_backend: the scalar type is float or double");

 public:
  using scalar_type = Scalar;
  using buffer_type = host_buffer<Scalar>;
  static constexpr bool is_host_accessible = true;
  static constexpr std::string_view name() {
    if constexpr (std::is_same_v<Scalar, float>) return "cpu<float>";
    else return "cpu<double>";
  }

  // ---------------------------------------------------------------- memory
  buffer_type allocate(index_t n) { return buffer_type(n); }
  void copy_from_host(const Scalar* host, Scalar* out, index_t n) { copy(host, out, n); }
  void copy_to_host(const Scalar* in, Scalar* host, index_t n) { copy(in, host, n); }
  void copy(const Scalar* in, Scalar* out, index_t n) {
    if (n > 0 && in != out) std::memmove(out, in, static_cast<std::size_t>(n) * sizeof(Scalar));
  }
  void fill(Scalar* out, index_t n, Scalar value) { std::fill_n(out, n, value); }
  void fill_uniform(Scalar* out, index_t n, Scalar lo, Scalar hi, std::uint64_t seed, std::uint64_t offset) {
    const double width = static_cast<double>(hi) - static_cast<double>(lo);
    TREELORA_PARALLEL_FOR_IF(n)
    for (index_t i = 0; i < n; ++i)
      out[i] = static_cast<Scalar>(lo + width * random::uniform01(seed, offset + static_cast<std::uint64_t>(i)));
  }
  void fill_normal(Scalar* out, index_t n, Scalar mean, Scalar stddev, std::uint64_t seed, std::uint64_t offset) {
    TREELORA_PARALLEL_FOR_IF(n)
    for (index_t i = 0; i < n; ++i)
      out[i] = static_cast<Scalar>(mean + stddev * random::standard_normal(seed, offset + static_cast<std::uint64_t>(i)));
  }
  /// out_i = kept_value with probability keep, else 0 (a dropout mask already scaled by 1 / keep).
  void fill_bernoulli(Scalar* out, index_t n, Scalar keep, Scalar kept_value, std::uint64_t seed, std::uint64_t offset) {
    TREELORA_PARALLEL_FOR_IF(n)
    for (index_t i = 0; i < n; ++i)
      out[i] = random::uniform01(seed, offset + static_cast<std::uint64_t>(i)) < static_cast<double>(keep) ? kept_value
                                                                                                          : Scalar(0);
  }
  void synchronize() {}

  // ---------------------------------------------------------------- BLAS
  /// C[m x n] = alpha op(A) op(B) + beta C, row-major; op(A) is m x k, op(B) is k x n.
  /// C is cut into gemm_tiles(m, n, k) tiles of whole rows (or whole columns when C is wider than tall), fixed by the
  /// shape alone; each tile is one single-threaded product over all of k, and OpenMP's threads share out the tiles
  /// (in a parallel region already, or on one thread, the calling thread runs them in turn). So each element of C
  /// sees the same kernel and the same k-order on any number of threads. A cut that followed the thread count would
  /// not: the BLAS kernels pick their register tiles, edge code and blocking from the sub-problem's m and n
  /// (OpenBLAS 0.3.21's fp32 kernel on Zen works in tiles of 6 rows: a 2176 x 64 x 64 product cut at row 1088, a
  /// multiple of 16 but not of 6, rounded 9,995 of its 139,264 elements differently from one whole call).
  void gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha, const Scalar* a,
            index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c, index_t ldc);

  /// How many tiles gemm cuts C into: a power of two (2, 4, 8 threads share it out evenly), fixed by the shape
  /// alone. Each tile holds at least 2^17 multiply-adds (64^3 still gained from two threads; below that a fork, and
  /// a thread descheduled on a shared machine, cost more than they save) and at least 16 rows (boundaries fall on
  /// multiples of 16, a whole number of the kernels' register tiles along columns); past two tiles, at least 512
  /// rows each. Every tile packs the operand the tiles share again: on one thread, against one whole call, two
  /// tiles cost 1-2 % on large products and up to 15 % on 64^3 or a 64 x 64 x 1088 weight gradient, 256-row tiles
  /// of 1024^3 9 %, 512-row tiles of 2048^3 5 %. So a product under 2048 rows and columns is cut in two halves,
  /// one per thread on two threads (where a cut by the thread count cut it too); more threads than tiles idle.
  static index_t gemm_tiles(index_t m, index_t n, index_t k) {
    const index_t extent = std::max(m, n);
    const index_t limit = std::min({m * n * k >> 17, (extent + gemm_tile_unit - 1) / gemm_tile_unit,
                                    std::max<index_t>(2, extent / 512)});
    index_t tiles = 1;
    while (2 * tiles <= limit) tiles *= 2;
    return tiles;
  }

  /// batch independent gemms; operand i starts at base + i * stride. Batches run in parallel, each on one
  /// thread (gemm runs its tiles in turn inside a parallel region, so each product is the same as outside one).
  void gemm_strided_batched(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha,
                            const Scalar* a, index_t lda, index_t stride_a, const Scalar* b, index_t ldb,
                            index_t stride_b, Scalar beta, Scalar* c, index_t ldc, index_t stride_c, index_t batch);
  void axpy(index_t n, Scalar alpha, const Scalar* x, Scalar* y);
  void scale(index_t n, Scalar alpha, Scalar* x);

  // ---------------------------------------------------------------- elementwise
  void map(unary_function f, index_t n, const Scalar* in, Scalar* out);
  void multiply(index_t n, const Scalar* a, const Scalar* b, Scalar* out);
  void multiply_add(index_t n, const Scalar* a, const Scalar* b, Scalar* out);
  void add_row_vector(index_t rows, index_t cols, const Scalar* vector, Scalar* out);
  void sum_rows(index_t rows, index_t cols, const Scalar* in, Scalar beta, Scalar* out);
  void softmax_rows(index_t rows, index_t cols, const Scalar* in, Scalar* out);
  /// dx = y * (dy - sum(dy * y)) per row.
  void softmax_rows_backward(index_t rows, index_t cols, const Scalar* y, const Scalar* dy, Scalar* dx);
  /// y = (x - mean) * rstd * gamma + beta per row; saves mean and rstd = 1 / sqrt(var + eps) (biased var).
  void layer_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* beta,
                          Scalar eps, Scalar* y, Scalar* mean, Scalar* rstd);
  /// dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy * gamma; dgamma += sum dy xhat; dbeta += sum dy.
  void layer_norm_backward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* mean,
                           const Scalar* rstd, const Scalar* dy, Scalar* dx, Scalar* dgamma, Scalar* dbeta);
  /// Rotary position embedding, half-split (rotate_half) convention: `in` is [rows, heads * head_dim] with row r at
  /// position r % tokens + offset; for i < head_dim / 2, with c, s = cos, sin [position, i] (tables [positions,
  /// head_dim / 2]):  out[i] = in[i] c - in[i + h] s,  out[i + h] = in[i + h] c + in[i] s  (h = head_dim / 2);
  /// `inverse` applies the transpose rotation (the backward pass). `out` may be `in`.
  void rotate_half(index_t rows, index_t tokens, index_t heads, index_t head_dim, index_t offset, const Scalar* cos,
                   const Scalar* sin, const Scalar* in, Scalar* out, bool inverse);
  /// y = x * rstd * gamma per row, rstd = 1 / sqrt(mean(x^2) + eps) saved (RMSNorm, Zhang & Sennrich 2019).
  void rms_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, Scalar eps, Scalar* y, Scalar* rstd);
  /// dx = rstd (g - xhat mean(g xhat)) with g = dy * gamma, xhat = x rstd; dgamma += sum dy xhat.
  void rms_norm_backward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* rstd,
                         const Scalar* dy, Scalar* dx, Scalar* dgamma);
  void gather_rows(std::span<const index_t> rows, index_t cols, const Scalar* in, Scalar* out) {
    for (std::size_t i = 0; i < rows.size(); ++i)
      copy(in + rows[i] * cols, out + static_cast<index_t>(i) * cols, cols);
  }
  void scatter_add_rows(std::span<const index_t> rows, index_t cols, const Scalar* in, Scalar* out) {
    for (std::size_t i = 0; i < rows.size(); ++i) axpy(cols, Scalar(1), in + static_cast<index_t>(i) * cols, out + rows[i] * cols);
  }

  // ---------------------------------------------------------------- reductions
  Scalar sum(index_t n, const Scalar* x);
  Scalar dot(index_t n, const Scalar* x, const Scalar* y);
  Scalar l1_norm(index_t n, const Scalar* x);
  Scalar l1_distance(index_t n, const Scalar* x, const Scalar* y);
  Scalar max(index_t n, const Scalar* x);
  Scalar squared_norm(index_t n, const Scalar* x);

  // ---------------------------------------------------------------- optimiser kernels (PyTorch semantics)
  void sgd_step(index_t n, Scalar* param, const Scalar* grad, Scalar* momentum_buffer, Scalar lr, Scalar momentum,
                Scalar dampening, Scalar weight_decay, bool nesterov, bool first_step);
  void adam_step(index_t n, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v, Scalar lr, Scalar beta1,
                 Scalar beta2, Scalar eps, Scalar weight_decay, bool decoupled, std::int64_t step);
  /// Adam at the listed entries only ("lazy" Adam: the moments of other entries do not decay). Costs O(|indices|).
  void adam_step_indexed(std::span<const index_t> indices, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v,
                         Scalar lr, Scalar beta1, Scalar beta2, Scalar eps, Scalar weight_decay, bool decoupled,
                         std::int64_t step);

 private:
  static constexpr index_t gemm_tile_unit = 16;  // tile boundaries fall on multiples of 16 rows or columns
  static void gemm_tile(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha,
                        const Scalar* a, index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c,
                        index_t ldc);
};

static_assert(check_backend<cpu_backend<float>>());
static_assert(check_backend<cpu_backend<double>>());

#if defined(TREELORA_COMPILED)
// The kernels of both scalar types are compiled once, in the treelora::compiled library (src/cpu_backend.cpp).
extern template class cpu_backend<float>;
extern template class cpu_backend<double>;
#endif

}  // namespace treelora

#if !defined(TREELORA_COMPILED)
#include "treelora/backend/cpu_backend_kernels.hpp"
#endif
