// treelora/backend/cpu_backend.hpp: the CPU backend on Eigen.
// GEMM goes through Eigen's blocked kernels, or through OpenBLAS's when TREELORA_USE_CBLAS is defined (CMake option
// TREELORA_BLAS), over tiles of C that OpenMP's threads share out; row-wise operations run rows in parallel;
// everything else is a vectorised Eigen array expression. No result depends on the thread count: every parallel
// loop writes disjoint outputs, each computed by the same code whichever thread runs it, the GEMM's tiles are fixed
// by the shape alone, and reductions run on one thread (docs/design.md, "Reproducibility across thread counts").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <numbers>
#include <span>
#include <string_view>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>  // erf for GELU

#include "treelora/backend/backend.hpp"
#include "treelora/backend/calling_thread_only.hpp"
#include "treelora/backend/random.hpp"

#if defined(TREELORA_USE_CBLAS)
#include <cblas.h>  // OpenBLAS's, found by CMake through pkg-config (TREELORA_BLAS)
#endif

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

/// Owning, 64-byte aligned host array. Moves, never copies implicitly.
template <class Scalar>
class host_buffer {
 public:
  host_buffer() = default;
  explicit host_buffer(index_t size) : size_(size) {
    if (size < 0) throw_invalid_argument("host_buffer", concat("negative size ", size));
    if (size > 0) {
      const std::size_t bytes = ((static_cast<std::size_t>(size) * sizeof(Scalar) + 63) / 64) * 64;
      data_.reset(static_cast<Scalar*>(std::aligned_alloc(64, bytes)));
      if (!data_) throw std::bad_alloc();
    }
  }
  Scalar* data() { return data_.get(); }
  const Scalar* data() const { return data_.get(); }
  index_t size() const { return size_; }

 private:
  struct free_deleter {
    void operator()(Scalar* p) const { std::free(p); }
  };
  std::unique_ptr<Scalar, free_deleter> data_;
  index_t size_ = 0;
};

/// The CPU backend. Stateless: one object may be shared by any number of layers and threads.
template <class Scalar>
class cpu_backend {
 public:
  using scalar_type = Scalar;
  using buffer_type = host_buffer<Scalar>;
  static constexpr bool is_host_accessible = true;
  static constexpr std::string_view name() {
    if constexpr (std::is_same_v<Scalar, float>) return "cpu<float>";
    else return "cpu<double>";
  }

  // Row-major Eigen views of raw memory with a leading dimension: the zero-copy interop type.
  using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using matrix_map = Eigen::Map<matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
  using const_matrix_map = Eigen::Map<const matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
  using array_map = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
  using const_array_map = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

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
            index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c, index_t ldc) {
    if (m == 0 || n == 0) return;
    const index_t tiles = gemm_tiles(m, n, k);
    if (tiles == 1) return gemm_tile(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    const bool split_rows = m >= n;
    const index_t extent = split_rows ? m : n, units = (extent + gemm_tile_unit - 1) / gemm_tile_unit;
    auto tile = [&](index_t t) {
      const index_t lo = std::min(extent, units * t / tiles * gemm_tile_unit);
      const index_t hi = std::min(extent, units * (t + 1) / tiles * gemm_tile_unit);
      if (split_rows)
        gemm_tile(trans_a, trans_b, hi - lo, n, k, alpha, trans_a == transpose::no ? a + lo * lda : a + lo, lda, b,
                  ldb, beta, c + lo * ldc, ldc);
      else
        gemm_tile(trans_a, trans_b, m, hi - lo, k, alpha, a, lda, trans_b == transpose::no ? b + lo : b + lo * ldb,
                  ldb, beta, c + lo, ldc);
    };
#if defined(_OPENMP)
    const index_t threads = omp_in_parallel() ? 1 : std::min<index_t>(tiles, omp_get_max_threads());
    if (threads > 1) {
#if defined(TREELORA_USE_CBLAS)
      make_openblas_single_threaded();
#endif
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
      for (index_t t = 0; t < tiles; ++t) tile(t);
      return;
    }
#endif
    for (index_t t = 0; t < tiles; ++t) tile(t);
  }

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
                            index_t stride_b, Scalar beta, Scalar* c, index_t ldc, index_t stride_c, index_t batch) {
#if defined(TREELORA_USE_CBLAS)
    make_openblas_single_threaded();
#endif
    TREELORA_PARALLEL_FOR_IF(batch * m * n * k / 4)
    for (index_t i = 0; i < batch; ++i)
      gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c,
           ldc);
  }

  void axpy(index_t n, Scalar alpha, const Scalar* x, Scalar* y) {
    array_map(y, n) += alpha * const_array_map(x, n);
  }
  void scale(index_t n, Scalar alpha, Scalar* x) { array_map(x, n) *= alpha; }

  // ---------------------------------------------------------------- elementwise
  void map(unary_function f, index_t n, const Scalar* in, Scalar* out) {
    const_array_map x(in, n);
    array_map y(out, n);
    constexpr Scalar inv_sqrt2 = static_cast<Scalar>(1.0 / std::numbers::sqrt2);
    constexpr Scalar inv_sqrt_2pi = static_cast<Scalar>(0.3989422804014327);
    switch (f) {
      case unary_function::gelu: y = Scalar(0.5) * x * (Scalar(1) + (x * inv_sqrt2).erf()); break;
      case unary_function::gelu_derivative:
        y = Scalar(0.5) * (Scalar(1) + (x * inv_sqrt2).erf()) + x * inv_sqrt_2pi * (Scalar(-0.5) * x * x).exp();
        break;
      case unary_function::exp: y = x.exp(); break;
      case unary_function::tanh: y = x.tanh(); break;
      case unary_function::relu: y = x.max(Scalar(0)); break;
      case unary_function::relu_derivative: y = (x > Scalar(0)).template cast<Scalar>(); break;
      case unary_function::sign: y = x.sign(); break;
    }
  }
  void multiply(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
    array_map(out, n) = const_array_map(a, n) * const_array_map(b, n);
  }
  void multiply_add(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
    array_map(out, n) += const_array_map(a, n) * const_array_map(b, n);
  }
  void add_row_vector(index_t rows, index_t cols, const Scalar* vector, Scalar* out) {
    matrix_map(out, rows, cols, Eigen::OuterStride<>(cols)).rowwise() +=
        const_matrix_map(vector, 1, cols, Eigen::OuterStride<>(cols)).row(0);
  }
  void sum_rows(index_t rows, index_t cols, const Scalar* in, Scalar beta, Scalar* out) {
    auto o = matrix_map(out, 1, cols, Eigen::OuterStride<>(cols));
    if (beta == Scalar(0)) o.setZero();
    else if (beta != Scalar(1)) o *= beta;
    o += const_matrix_map(in, rows, cols, Eigen::OuterStride<>(cols)).colwise().sum();
  }

  void softmax_rows(index_t rows, index_t cols, const Scalar* in, Scalar* out) {
    TREELORA_PARALLEL_FOR_IF(rows * cols)
    for (index_t r = 0; r < rows; ++r) {
      const_array_map x(in + r * cols, cols);
      array_map y(out + r * cols, cols);
      y = (x - x.maxCoeff()).exp();
      y /= y.sum();
    }
  }
  /// dx = y * (dy - sum(dy * y)) per row.
  void softmax_rows_backward(index_t rows, index_t cols, const Scalar* y, const Scalar* dy, Scalar* dx) {
    TREELORA_PARALLEL_FOR_IF(rows * cols)
    for (index_t r = 0; r < rows; ++r) {
      const_array_map yr(y + r * cols, cols), dyr(dy + r * cols, cols);
      const Scalar s = (yr * dyr).sum();
      array_map(dx + r * cols, cols) = yr * (dyr - s);
    }
  }

  /// y = (x - mean) * rstd * gamma + beta per row; saves mean and rstd = 1 / sqrt(var + eps) (biased var).
  void layer_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* beta,
                          Scalar eps, Scalar* y, Scalar* mean, Scalar* rstd) {
    const_array_map g(gamma, cols), b(beta, cols);
    TREELORA_PARALLEL_FOR_IF(rows * cols)
    for (index_t r = 0; r < rows; ++r) {
      const_array_map xr(x + r * cols, cols);
      const Scalar mu = xr.mean();
      const Scalar var = (xr - mu).square().mean();
      const Scalar s = Scalar(1) / std::sqrt(var + eps);
      mean[r] = mu;
      rstd[r] = s;
      array_map(y + r * cols, cols) = (xr - mu) * s * g + b;
    }
  }
  /// dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy * gamma; dgamma += sum dy xhat; dbeta += sum dy.
  void layer_norm_backward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* mean,
                           const Scalar* rstd, const Scalar* dy, Scalar* dx, Scalar* dgamma, Scalar* dbeta) {
    const_array_map gm(gamma, cols);
    TREELORA_PARALLEL_FOR_IF(rows * cols)
    for (index_t r = 0; r < rows; ++r) {
      const_array_map xr(x + r * cols, cols), dyr(dy + r * cols, cols);
      const auto xhat = (xr - mean[r]) * rstd[r];
      const Eigen::Array<Scalar, Eigen::Dynamic, 1> g = dyr * gm;
      const Scalar g_mean = g.mean();
      const Scalar gx_mean = (g * xhat).mean();
      array_map(dx + r * cols, cols) = rstd[r] * (g - g_mean - xhat * gx_mean);
    }
    array_map dg(dgamma, cols), db(dbeta, cols);
    for (index_t r = 0; r < rows; ++r) {
      const_array_map xr(x + r * cols, cols), dyr(dy + r * cols, cols);
      dg += dyr * (xr - mean[r]) * rstd[r];
      db += dyr;
    }
  }

  void gather_rows(std::span<const index_t> rows, index_t cols, const Scalar* in, Scalar* out) {
    for (std::size_t i = 0; i < rows.size(); ++i)
      copy(in + rows[i] * cols, out + static_cast<index_t>(i) * cols, cols);
  }
  void scatter_add_rows(std::span<const index_t> rows, index_t cols, const Scalar* in, Scalar* out) {
    for (std::size_t i = 0; i < rows.size(); ++i) axpy(cols, Scalar(1), in + static_cast<index_t>(i) * cols, out + rows[i] * cols);
  }

  // ---------------------------------------------------------------- reductions
  Scalar sum(index_t n, const Scalar* x) { return n ? const_array_map(x, n).sum() : Scalar(0); }
  Scalar dot(index_t n, const Scalar* x, const Scalar* y) {
    return n ? (const_array_map(x, n) * const_array_map(y, n)).sum() : Scalar(0);
  }
  Scalar l1_norm(index_t n, const Scalar* x) { return n ? const_array_map(x, n).abs().sum() : Scalar(0); }
  Scalar l1_distance(index_t n, const Scalar* x, const Scalar* y) {
    return n ? (const_array_map(x, n) - const_array_map(y, n)).abs().sum() : Scalar(0);
  }
  Scalar max(index_t n, const Scalar* x) {
    return n ? const_array_map(x, n).maxCoeff() : -std::numeric_limits<Scalar>::infinity();
  }
  Scalar squared_norm(index_t n, const Scalar* x) { return n ? const_array_map(x, n).square().sum() : Scalar(0); }

  // ---------------------------------------------------------------- optimiser kernels (PyTorch semantics)
  void sgd_step(index_t n, Scalar* param, const Scalar* grad, Scalar* momentum_buffer, Scalar lr, Scalar momentum,
                Scalar dampening, Scalar weight_decay, bool nesterov, bool first_step) {
    array_map p(param, n);
    const_array_map g(grad, n);
    Eigen::Array<Scalar, Eigen::Dynamic, 1> d = weight_decay != Scalar(0) ? (g + weight_decay * p).eval() : g.eval();
    if (momentum != Scalar(0)) {
      array_map buf(momentum_buffer, n);
      if (first_step) buf = d;
      else buf = momentum * buf + (Scalar(1) - dampening) * d;
      if (nesterov) d += momentum * buf;
      else d = buf;
    }
    p -= lr * d;
  }
  void adam_step(index_t n, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v, Scalar lr, Scalar beta1,
                 Scalar beta2, Scalar eps, Scalar weight_decay, bool decoupled, std::int64_t step) {
    array_map p(param, n), mm(m, n), vv(v, n);
    const_array_map g(grad, n);
    const Scalar bc1 = Scalar(1) - std::pow(beta1, static_cast<Scalar>(step));
    const Scalar bc2 = Scalar(1) - std::pow(beta2, static_cast<Scalar>(step));
    if (decoupled) {
      if (weight_decay != Scalar(0)) p *= Scalar(1) - lr * weight_decay;  // AdamW
      mm = beta1 * mm + (Scalar(1) - beta1) * g;
      vv = beta2 * vv + (Scalar(1) - beta2) * g.square();
    } else {
      const auto gd = g + weight_decay * p;  // Adam's L2 penalty folded into the gradient
      mm = beta1 * mm + (Scalar(1) - beta1) * gd;
      vv = beta2 * vv + (Scalar(1) - beta2) * gd.square();
    }
    p -= (lr / bc1) * mm / (vv.sqrt() / std::sqrt(bc2) + eps);
  }
  /// Adam at the listed entries only ("lazy" Adam: the moments of other entries do not decay). Costs O(|indices|).
  void adam_step_indexed(std::span<const index_t> indices, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v,
                         Scalar lr, Scalar beta1, Scalar beta2, Scalar eps, Scalar weight_decay, bool decoupled,
                         std::int64_t step) {
    const Scalar bc1 = Scalar(1) - std::pow(beta1, static_cast<Scalar>(step));
    const Scalar sqrt_bc2 = std::sqrt(Scalar(1) - std::pow(beta2, static_cast<Scalar>(step)));
    for (const index_t i : indices) {
      Scalar g = grad[i];
      if (decoupled) param[i] *= Scalar(1) - lr * weight_decay;
      else g += weight_decay * param[i];
      m[i] = beta1 * m[i] + (Scalar(1) - beta1) * g;
      v[i] = beta2 * v[i] + (Scalar(1) - beta2) * g * g;
      param[i] -= (lr / bc1) * m[i] / (std::sqrt(v[i]) / sqrt_bc2 + eps);
    }
  }

 private:
  static constexpr index_t gemm_tile_unit = 16;  // tile boundaries fall on multiples of 16 rows or columns

  /// One tile: a single-threaded product. OpenBLAS's pthread pool is kept at one thread; calling_thread_only keeps
  /// an OpenMP build of a CBLAS, and Eigen, from threading it. Eigen threads a product only from 2 x 50,000
  /// multiply-adds (Eigen/src/Core/products/Parallelizer.h), so products under 2^15 skip the scope (about 40 ns,
  /// a sixth of an 8 x 8 x 8 product here).
  static void gemm_tile(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha,
                        const Scalar* a, index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c,
                        index_t ldc) {
#if defined(TREELORA_USE_CBLAS)
    if (cblas_applies(m, n, k, lda, ldb, ldc)) {
      make_openblas_single_threaded();
      if (cblas_follows_openmp()) {
        const calling_thread_only serial;
        cblas_call(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      } else {
        cblas_call(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      }
      return;
    }
#endif
    if (m * n * k >= (index_t(1) << 15)) {
      const calling_thread_only serial;
      eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
      eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
  }

  static void eigen_gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha,
                         const Scalar* a, index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c,
                         index_t ldc) {
    matrix_map cm(c, m, n, Eigen::OuterStride<>(ldc));
    scale_matrix(cm, beta);
    if (k == 0) return;
    const index_t a_rows = trans_a == transpose::no ? m : k, a_cols = trans_a == transpose::no ? k : m;
    const index_t b_rows = trans_b == transpose::no ? k : n, b_cols = trans_b == transpose::no ? n : k;
    const_matrix_map am(a, a_rows, a_cols, Eigen::OuterStride<>(lda));
    const_matrix_map bm(b, b_rows, b_cols, Eigen::OuterStride<>(ldb));
    // One Eigen product per transpose combination; each dispatches to the same blocked kernel.
    if (trans_a == transpose::no && trans_b == transpose::no) cm.noalias() += alpha * am * bm;
    else if (trans_a == transpose::no) cm.noalias() += alpha * am * bm.transpose();
    else if (trans_b == transpose::no) cm.noalias() += alpha * am.transpose() * bm;
    else cm.noalias() += alpha * am.transpose() * bm.transpose();
  }

#if defined(TREELORA_USE_CBLAS)
  // OpenBLAS's kernel reaches 95-99 % of peak where Eigen's reaches 56-68 % (docs/benchmarks.md). Its own
  // thread pool is kept at one thread and OpenMP's threads share each product out by tiles of C instead: one
  // thread setting (OMP_NUM_THREADS, omp_set_num_threads) for everything, and no second pool spinning on the
  // cores OpenMP's threads wait on (measured: OpenBLAS's threads and OpenMP's, taking turns, ran GEMMs 1.5x
  // slower).

  /// Eigen keeps what CBLAS cannot take (k = 0, dimensions past int) and the tiny products it does faster
  /// (8 x 8 x 8: 0.1 us against 0.2 us). From 16 x 16 x 16 up OpenBLAS was as fast or faster on one thread;
  /// on two, Eigen won a few skinny rank-8 products by 2-25 % but lost the rest, with no simple rule between
  /// them. The choice depends on the tile's shape alone, never on the thread count or on a parallel region.
  static bool cblas_applies(index_t m, index_t n, index_t k, index_t lda, index_t ldb, index_t ldc) {
    constexpr index_t int_max = std::numeric_limits<int>::max();
    return k > 0 && std::max({m, n, k, lda, ldb, ldc}) <= int_max && m * n * k >= (index_t(1) << 12);
  }

  static void cblas_call(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha,
                         const Scalar* a, index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c,
                         index_t ldc) {
    // Like the Eigen route (and BLAS), beta = 0 ignores what C held, NaN included.
    const auto ta = trans_a == transpose::no ? CblasNoTrans : CblasTrans;
    const auto tb = trans_b == transpose::no ? CblasNoTrans : CblasTrans;
    const auto i = [](index_t v) { return static_cast<int>(v); };
    if constexpr (std::is_same_v<Scalar, float>)
      cblas_sgemm(CblasRowMajor, ta, tb, i(m), i(n), i(k), alpha, a, i(lda), b, i(ldb), beta, c, i(ldc));
    else
      cblas_dgemm(CblasRowMajor, ta, tb, i(m), i(n), i(k), alpha, a, i(lda), b, i(ldb), beta, c, i(ldc));
  }

  /// OpenBLAS built on pthreads keeps its own pool; with OpenMP the library's threads are OpenMP's, so that pool is
  /// set to one thread: once, before the first product (thread-safe, even when that product runs in a caller's
  /// parallel region), and again outside parallel regions should the program have raised it since (a no-op while it
  /// is one). OpenBLAS built on OpenMP follows calling_thread_only; a sequential build needs nothing. Without OpenMP
  /// OpenBLAS's pool is the only one and follows OPENBLAS_NUM_THREADS (and may then split a product by its own thread
  /// count). Another CBLAS with a thread pool of its own is not covered.
  static void make_openblas_single_threaded() {
#if defined(_OPENMP) && defined(OPENBLAS_THREAD)
    static const bool first = [] {
      if (openblas_get_parallel() == OPENBLAS_THREAD) openblas_set_num_threads(1);
      return true;
    }();
    (void)first;
    if (!omp_in_parallel() && openblas_get_parallel() == OPENBLAS_THREAD && openblas_get_num_threads() != 1)
      openblas_set_num_threads(1);
#endif
  }
  /// Whether the CBLAS takes its thread count from OpenMP (an OpenMP build of OpenBLAS; any CBLAS but OpenBLAS is
  /// assumed to, as MKL's and BLIS's OpenMP builds do).
  static bool cblas_follows_openmp() {
#if defined(OPENBLAS_THREAD)
    return openblas_get_parallel() == OPENBLAS_OPENMP;
#else
    return true;
#endif
  }
#endif

  static void scale_matrix(matrix_map& c, Scalar beta) {
    if (beta == Scalar(0)) c.setZero();  // beta = 0 ignores C, NaN included (BLAS convention)
    else if (beta != Scalar(1)) c *= beta;
  }
};

static_assert(check_backend<cpu_backend<float>>());
static_assert(check_backend<cpu_backend<double>>());

}  // namespace treelora
