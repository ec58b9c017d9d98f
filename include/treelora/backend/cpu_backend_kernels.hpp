// treelora/backend/cpu_backend_kernels.hpp: the CPU backend's kernels (the class is declared in cpu_backend.hpp).
// Header-only, cpu_backend.hpp includes this file; with TREELORA_COMPILED the treelora::compiled library includes it
// once (src/cpu_backend.cpp) and instantiates cpu_backend<float> and cpu_backend<double> there. Everything in the
// library that needs Eigen's array expressions or OpenBLAS's header for the CPU tensors lives here.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "treelora/core/eigen.hpp"
#include <unsupported/Eigen/SpecialFunctions>  // erf for GELU

#include "treelora/backend/calling_thread_only.hpp"
#include "treelora/backend/cpu_backend.hpp"

#if defined(TREELORA_USE_CBLAS)
#include <cblas.h>  // OpenBLAS's, found by CMake through pkg-config (TREELORA_BLAS)
#endif

namespace treelora {
namespace detail::cpu {

// Row-major Eigen views of raw memory with a leading dimension, and flat arrays.
template <class Scalar>
using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Scalar>
using matrix_map = Eigen::Map<matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class Scalar>
using const_matrix_map = Eigen::Map<const matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class Scalar>
using array_map = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
template <class Scalar>
using const_array_map = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

template <class Scalar>
void scale_matrix(matrix_map<Scalar>& c, Scalar beta) {
  if (beta == Scalar(0)) c.setZero();  // beta = 0 ignores C, NaN included (BLAS convention)
  else if (beta != Scalar(1)) c *= beta;
}

template <class Scalar>
void eigen_gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha, const Scalar* a,
                index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c, index_t ldc) {
  matrix_map<Scalar> cm(c, m, n, Eigen::OuterStride<>(ldc));
  scale_matrix(cm, beta);
  if (k == 0) return;
  const index_t a_rows = trans_a == transpose::no ? m : k, a_cols = trans_a == transpose::no ? k : m;
  const index_t b_rows = trans_b == transpose::no ? k : n, b_cols = trans_b == transpose::no ? n : k;
  const_matrix_map<Scalar> am(a, a_rows, a_cols, Eigen::OuterStride<>(lda));
  const_matrix_map<Scalar> bm(b, b_rows, b_cols, Eigen::OuterStride<>(ldb));
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
inline bool cblas_applies(index_t m, index_t n, index_t k, index_t lda, index_t ldb, index_t ldc) {
  constexpr index_t int_max = std::numeric_limits<int>::max();
  return k > 0 && std::max({m, n, k, lda, ldb, ldc}) <= int_max && m * n * k >= (index_t(1) << 12);
}

template <class Scalar>
void cblas_call(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha, const Scalar* a,
                index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c, index_t ldc) {
  // Like the Eigen route (and BLAS), beta = 0 ignores what C held, NaN included.
  const auto ta = trans_a == transpose::no ? CblasNoTrans : CblasTrans;
  const auto tb = trans_b == transpose::no ? CblasNoTrans : CblasTrans;
  const auto i = [](index_t v) { return static_cast<int>(v); };
  // One row or one column of C is a matrix-vector product: GEMV reads the matrix once where GEMM would pack it
  // first (the one-token steps of generation).
  const auto gemv = [&](CBLAS_TRANSPOSE t, index_t rows, index_t cols, const Scalar* matrix, index_t ld, const Scalar* x,
                        index_t incx, Scalar* y, index_t incy) {
    if constexpr (std::is_same_v<Scalar, float>)
      cblas_sgemv(CblasRowMajor, t, i(rows), i(cols), alpha, matrix, i(ld), x, i(incx), beta, y, i(incy));
    else
      cblas_dgemv(CblasRowMajor, t, i(rows), i(cols), alpha, matrix, i(ld), x, i(incx), beta, y, i(incy));
  };
  if (m == 1) {  // c^T = op(a)^T-row op(b): y = op(b)^T x
    const index_t incx = trans_a == transpose::no ? 1 : lda;
    if (trans_b == transpose::no) return gemv(CblasTrans, k, n, b, ldb, a, incx, c, 1);  // b [k, n]
    return gemv(CblasNoTrans, n, k, b, ldb, a, incx, c, 1);                            // b [n, k]
  }
  if (n == 1) {  // c = op(a) x, x = op(b)'s column
    const index_t incx = trans_b == transpose::no ? ldb : 1;
    if (trans_a == transpose::no) return gemv(CblasNoTrans, m, k, a, lda, b, incx, c, ldc);  // a [m, k]
    return gemv(CblasTrans, k, m, a, lda, b, incx, c, ldc);                                  // a [k, m]
  }
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
inline void make_openblas_single_threaded() {
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
inline bool cblas_follows_openmp() {
#if defined(OPENBLAS_THREAD)
  return openblas_get_parallel() == OPENBLAS_OPENMP;
#else
  return true;
#endif
}
#endif

}  // namespace detail::cpu

// ---------------------------------------------------------------- BLAS
template <class Scalar>
void cpu_backend<Scalar>::gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha,
                               const Scalar* a, index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c,
                               index_t ldc) {
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
    detail::cpu::make_openblas_single_threaded();
#endif
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
    for (index_t t = 0; t < tiles; ++t) tile(t);
    return;
  }
#endif
  for (index_t t = 0; t < tiles; ++t) tile(t);
}

template <class Scalar>
void cpu_backend<Scalar>::gemm_strided_batched(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k,
                                               Scalar alpha, const Scalar* a, index_t lda, index_t stride_a,
                                               const Scalar* b, index_t ldb, index_t stride_b, Scalar beta, Scalar* c,
                                               index_t ldc, index_t stride_c, index_t batch) {
#if defined(TREELORA_USE_CBLAS)
  detail::cpu::make_openblas_single_threaded();
#endif
  TREELORA_PARALLEL_FOR_IF(batch * m * n * k / 4)
  for (index_t i = 0; i < batch; ++i)
    gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
}

/// One tile: a single-threaded product. OpenBLAS's pthread pool is kept at one thread; calling_thread_only keeps
/// an OpenMP build of a CBLAS, and Eigen, from threading it. Eigen threads a product only from 2 x 50,000
/// multiply-adds (Eigen/src/Core/products/Parallelizer.h), so products under 2^15 skip the scope (about 40 ns,
/// a sixth of an 8 x 8 x 8 product here).
template <class Scalar>
void cpu_backend<Scalar>::gemm_tile(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k,
                                    Scalar alpha, const Scalar* a, index_t lda, const Scalar* b, index_t ldb,
                                    Scalar beta, Scalar* c, index_t ldc) {
#if defined(TREELORA_USE_CBLAS)
  if (detail::cpu::cblas_applies(m, n, k, lda, ldb, ldc)) {
    detail::cpu::make_openblas_single_threaded();
    if (detail::cpu::cblas_follows_openmp()) {
      const calling_thread_only serial;
      detail::cpu::cblas_call(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
      detail::cpu::cblas_call(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    return;
  }
#endif
  if (m * n * k >= (index_t(1) << 15)) {
    const calling_thread_only serial;
    detail::cpu::eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    detail::cpu::eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

template <class Scalar>
void cpu_backend<Scalar>::axpy(index_t n, Scalar alpha, const Scalar* x, Scalar* y) {
  detail::cpu::array_map<Scalar>(y, n) += alpha * detail::cpu::const_array_map<Scalar>(x, n);
}
template <class Scalar>
void cpu_backend<Scalar>::scale(index_t n, Scalar alpha, Scalar* x) {
  detail::cpu::array_map<Scalar>(x, n) *= alpha;
}

// ---------------------------------------------------------------- elementwise
template <class Scalar>
void cpu_backend<Scalar>::map(unary_function f, index_t n, const Scalar* in, Scalar* out) {
  detail::cpu::const_array_map<Scalar> x(in, n);
  detail::cpu::array_map<Scalar> y(out, n);
  constexpr Scalar inv_sqrt2 = static_cast<Scalar>(1.0 / std::numbers::sqrt2);
  constexpr Scalar inv_sqrt_2pi = static_cast<Scalar>(0.3989422804014327);
  constexpr Scalar sqrt_2_over_pi = static_cast<Scalar>(0.7978845608028654);
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
    case unary_function::gelu_tanh:
      y = Scalar(0.5) * x * (Scalar(1) + (sqrt_2_over_pi * (x + Scalar(0.044715) * x * x * x)).tanh());
      break;
    case unary_function::gelu_tanh_derivative: {
      const auto t = (sqrt_2_over_pi * (x + Scalar(0.044715) * x * x * x)).tanh();
      y = Scalar(0.5) * (Scalar(1) + t) +
          Scalar(0.5) * x * (Scalar(1) - t * t) * sqrt_2_over_pi * (Scalar(1) + Scalar(3 * 0.044715) * x * x);
      break;
    }
    case unary_function::silu: y = x / (Scalar(1) + (-x).exp()); break;  // exp overflow for x << 0 gives x / inf = -0
    case unary_function::silu_derivative: {
      const auto s = Scalar(1) / (Scalar(1) + (-x).exp());
      y = s * (Scalar(1) + x * (Scalar(1) - s));
      break;
    }
  }
}
template <class Scalar>
void cpu_backend<Scalar>::multiply(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
  using namespace detail::cpu;
  array_map<Scalar>(out, n) = const_array_map<Scalar>(a, n) * const_array_map<Scalar>(b, n);
}
template <class Scalar>
void cpu_backend<Scalar>::multiply_add(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
  using namespace detail::cpu;
  array_map<Scalar>(out, n) += const_array_map<Scalar>(a, n) * const_array_map<Scalar>(b, n);
}
template <class Scalar>
void cpu_backend<Scalar>::add_row_vector(index_t rows, index_t cols, const Scalar* vector, Scalar* out) {
  using namespace detail::cpu;
  matrix_map<Scalar>(out, rows, cols, Eigen::OuterStride<>(cols)).rowwise() +=
      const_matrix_map<Scalar>(vector, 1, cols, Eigen::OuterStride<>(cols)).row(0);
}
template <class Scalar>
void cpu_backend<Scalar>::sum_rows(index_t rows, index_t cols, const Scalar* in, Scalar beta, Scalar* out) {
  using namespace detail::cpu;
  auto o = matrix_map<Scalar>(out, 1, cols, Eigen::OuterStride<>(cols));
  if (beta == Scalar(0)) o.setZero();
  else if (beta != Scalar(1)) o *= beta;
  o += const_matrix_map<Scalar>(in, rows, cols, Eigen::OuterStride<>(cols)).colwise().sum();
}

template <class Scalar>
void cpu_backend<Scalar>::softmax_rows(index_t rows, index_t cols, const Scalar* in, Scalar* out) {
  using namespace detail::cpu;
  TREELORA_PARALLEL_FOR_IF(rows * cols)
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> x(in + r * cols, cols);
    array_map<Scalar> y(out + r * cols, cols);
    y = (x - x.maxCoeff()).exp();
    y /= y.sum();
  }
}
template <class Scalar>
void cpu_backend<Scalar>::softmax_rows_backward(index_t rows, index_t cols, const Scalar* y, const Scalar* dy,
                                                Scalar* dx) {
  using namespace detail::cpu;
  TREELORA_PARALLEL_FOR_IF(rows * cols)
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> yr(y + r * cols, cols), dyr(dy + r * cols, cols);
    const Scalar s = (yr * dyr).sum();
    array_map<Scalar>(dx + r * cols, cols) = yr * (dyr - s);
  }
}

template <class Scalar>
void cpu_backend<Scalar>::layer_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma,
                                             const Scalar* beta, Scalar eps, Scalar* y, Scalar* mean, Scalar* rstd) {
  using namespace detail::cpu;
  const_array_map<Scalar> g(gamma, cols), b(beta, cols);
  TREELORA_PARALLEL_FOR_IF(rows * cols)
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> xr(x + r * cols, cols);
    const Scalar mu = xr.mean();
    const Scalar var = (xr - mu).square().mean();
    const Scalar s = Scalar(1) / std::sqrt(var + eps);
    mean[r] = mu;
    rstd[r] = s;
    array_map<Scalar>(y + r * cols, cols) = (xr - mu) * s * g + b;
  }
}
template <class Scalar>
void cpu_backend<Scalar>::layer_norm_backward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma,
                                              const Scalar* mean, const Scalar* rstd, const Scalar* dy, Scalar* dx,
                                              Scalar* dgamma, Scalar* dbeta) {
  using namespace detail::cpu;
  const_array_map<Scalar> gm(gamma, cols);
  TREELORA_PARALLEL_FOR_IF(rows * cols)
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> xr(x + r * cols, cols), dyr(dy + r * cols, cols);
    const auto xhat = (xr - mean[r]) * rstd[r];
    const Eigen::Array<Scalar, Eigen::Dynamic, 1> g = dyr * gm;
    const Scalar g_mean = g.mean();
    const Scalar gx_mean = (g * xhat).mean();
    array_map<Scalar>(dx + r * cols, cols) = rstd[r] * (g - g_mean - xhat * gx_mean);
  }
  array_map<Scalar> dg(dgamma, cols), db(dbeta, cols);
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> xr(x + r * cols, cols), dyr(dy + r * cols, cols);
    dg += dyr * (xr - mean[r]) * rstd[r];
    db += dyr;
  }
}

template <class Scalar>
void cpu_backend<Scalar>::rotate_half(index_t rows, index_t tokens, index_t heads, index_t head_dim, index_t offset,
                                      const Scalar* cos, const Scalar* sin, const Scalar* in, Scalar* out, bool inverse) {
  const index_t half = head_dim / 2, width = heads * head_dim;
  const Scalar sign = inverse ? Scalar(-1) : Scalar(1);
  TREELORA_PARALLEL_FOR_IF(rows * width)
  for (index_t r = 0; r < rows; ++r) {
    const Scalar* c = cos + (r % tokens + offset) * half;
    const Scalar* s = sin + (r % tokens + offset) * half;
    for (index_t h = 0; h < heads; ++h) {
      const Scalar* x = in + r * width + h * head_dim;
      Scalar* y = out + r * width + h * head_dim;
      for (index_t i = 0; i < half; ++i) {
        const Scalar a = x[i], b = x[i + half], si = sign * s[i];
        y[i] = a * c[i] - b * si;
        y[i + half] = b * c[i] + a * si;
      }
    }
  }
}
template <class Scalar>
void cpu_backend<Scalar>::rms_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, Scalar eps,
                                           Scalar* y, Scalar* rstd) {
  using namespace detail::cpu;
  const_array_map<Scalar> g(gamma, cols);
  TREELORA_PARALLEL_FOR_IF(rows * cols)
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> xr(x + r * cols, cols);
    const Scalar s = Scalar(1) / std::sqrt(xr.square().mean() + eps);
    rstd[r] = s;
    array_map<Scalar>(y + r * cols, cols) = xr * s * g;
  }
}
template <class Scalar>
void cpu_backend<Scalar>::rms_norm_backward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma,
                                            const Scalar* rstd, const Scalar* dy, Scalar* dx, Scalar* dgamma) {
  using namespace detail::cpu;
  const_array_map<Scalar> gm(gamma, cols);
  TREELORA_PARALLEL_FOR_IF(rows * cols)
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> xr(x + r * cols, cols), dyr(dy + r * cols, cols);
    const auto xhat = xr * rstd[r];
    const Eigen::Array<Scalar, Eigen::Dynamic, 1> g = dyr * gm;
    const Scalar gx_mean = (g * xhat).mean();
    array_map<Scalar>(dx + r * cols, cols) = rstd[r] * (g - xhat * gx_mean);
  }
  array_map<Scalar> dg(dgamma, cols);
  for (index_t r = 0; r < rows; ++r) {
    const_array_map<Scalar> xr(x + r * cols, cols), dyr(dy + r * cols, cols);
    dg += dyr * xr * rstd[r];
  }
}

// ---------------------------------------------------------------- reductions
template <class Scalar>
Scalar cpu_backend<Scalar>::sum(index_t n, const Scalar* x) {
  return n ? detail::cpu::const_array_map<Scalar>(x, n).sum() : Scalar(0);
}
template <class Scalar>
Scalar cpu_backend<Scalar>::dot(index_t n, const Scalar* x, const Scalar* y) {
  using namespace detail::cpu;
  return n ? (const_array_map<Scalar>(x, n) * const_array_map<Scalar>(y, n)).sum() : Scalar(0);
}
template <class Scalar>
Scalar cpu_backend<Scalar>::l1_norm(index_t n, const Scalar* x) {
  return n ? detail::cpu::const_array_map<Scalar>(x, n).abs().sum() : Scalar(0);
}
template <class Scalar>
Scalar cpu_backend<Scalar>::l1_distance(index_t n, const Scalar* x, const Scalar* y) {
  using namespace detail::cpu;
  return n ? (const_array_map<Scalar>(x, n) - const_array_map<Scalar>(y, n)).abs().sum() : Scalar(0);
}
template <class Scalar>
Scalar cpu_backend<Scalar>::max(index_t n, const Scalar* x) {
  return n ? detail::cpu::const_array_map<Scalar>(x, n).maxCoeff() : -std::numeric_limits<Scalar>::infinity();
}
template <class Scalar>
Scalar cpu_backend<Scalar>::squared_norm(index_t n, const Scalar* x) {
  return n ? detail::cpu::const_array_map<Scalar>(x, n).square().sum() : Scalar(0);
}

// ---------------------------------------------------------------- optimiser kernels (PyTorch semantics)
template <class Scalar>
void cpu_backend<Scalar>::sgd_step(index_t n, Scalar* param, const Scalar* grad, Scalar* momentum_buffer, Scalar lr,
                                   Scalar momentum, Scalar dampening, Scalar weight_decay, bool nesterov,
                                   bool first_step) {
  using namespace detail::cpu;
  array_map<Scalar> p(param, n);
  const_array_map<Scalar> g(grad, n);
  Eigen::Array<Scalar, Eigen::Dynamic, 1> d = weight_decay != Scalar(0) ? (g + weight_decay * p).eval() : g.eval();
  if (momentum != Scalar(0)) {
    array_map<Scalar> buf(momentum_buffer, n);
    if (first_step) buf = d;
    else buf = momentum * buf + (Scalar(1) - dampening) * d;
    if (nesterov) d += momentum * buf;
    else d = buf;
  }
  p -= lr * d;
}
template <class Scalar>
void cpu_backend<Scalar>::adam_step(index_t n, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v, Scalar lr,
                                    Scalar beta1, Scalar beta2, Scalar eps, Scalar weight_decay, bool decoupled,
                                    std::int64_t step) {
  using namespace detail::cpu;
  array_map<Scalar> p(param, n), mm(m, n), vv(v, n);
  const_array_map<Scalar> g(grad, n);
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
template <class Scalar>
void cpu_backend<Scalar>::adam_step_indexed(std::span<const index_t> indices, Scalar* param, const Scalar* grad,
                                            Scalar* m, Scalar* v, Scalar lr, Scalar beta1, Scalar beta2, Scalar eps,
                                            Scalar weight_decay, bool decoupled, std::int64_t step) {
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

}  // namespace treelora
