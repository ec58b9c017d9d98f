// treelora/backend/cuda/kernels.hpp: the CUDA kernels behind cuda_backend (nvcc only; see cuda_backend.hpp).
// One kernel per operation, each the device twin of the matching cpu_backend loop (same formulas, same order of
// operations where it matters). Elementwise kernels are grid-stride loops over index_t; row-wise kernels (softmax,
// LayerNorm) give one warp to a row; column sums give one 32-column tile to a block; reductions are two-pass and
// deterministic (fixed grid, fixed tree), accumulating in double.
#pragma once

#if !defined(__CUDACC__)
#error "treelora/backend/cuda/kernels.hpp must be compiled by nvcc (a .cu file)"
#endif

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "treelora/backend/backend.hpp"
#include "treelora/backend/random.hpp"

namespace treelora::cuda_kernels {

constexpr int block_size = 256;
constexpr unsigned full_mask = 0xffffffffu;

// ---------------------------------------------------------------- device math, overloaded on the scalar type
__device__ inline float device_exp(float x) { return expf(x); }
__device__ inline double device_exp(double x) { return exp(x); }
__device__ inline float device_erf(float x) { return erff(x); }
__device__ inline double device_erf(double x) { return erf(x); }
__device__ inline float device_tanh(float x) { return tanhf(x); }
__device__ inline double device_tanh(double x) { return tanh(x); }
__device__ inline float device_sqrt(float x) { return sqrtf(x); }
__device__ inline double device_sqrt(double x) { return sqrt(x); }
__device__ inline float device_max(float a, float b) { return fmaxf(a, b); }
__device__ inline double device_max(double a, double b) { return fmax(a, b); }

template <class T>
__device__ inline T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(full_mask, value, offset);
  return value;
}
template <class T>
__device__ inline T warp_max(T value) {
  for (int offset = 16; offset > 0; offset /= 2) value = device_max(value, __shfl_xor_sync(full_mask, value, offset));
  return value;
}

__device__ inline index_t global_thread() {
  return static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline index_t grid_threads() { return static_cast<index_t>(gridDim.x) * blockDim.x; }

// ---------------------------------------------------------------- fills
template <class Scalar>
__global__ void fill(Scalar* out, index_t n, Scalar value) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) out[i] = value;
}

// The seeded fills compute in double exactly as cpu_backend does; __dmul_rn / __dadd_rn forbid nvcc from fusing them
// into an FMA, so the values equal the CPU's wherever the host compiler does not contract either (see docs/gpu.md).
template <class Scalar>
__global__ void fill_uniform(Scalar* out, index_t n, double lo, double width, std::uint64_t seed, std::uint64_t offset) {
  for (index_t i = global_thread(); i < n; i += grid_threads())
    out[i] = static_cast<Scalar>(
        __dadd_rn(lo, __dmul_rn(width, random::uniform01(seed, offset + static_cast<std::uint64_t>(i)))));
}
template <class Scalar>
__global__ void fill_normal(Scalar* out, index_t n, double mean, double stddev, std::uint64_t seed, std::uint64_t offset) {
  for (index_t i = global_thread(); i < n; i += grid_threads())
    out[i] = static_cast<Scalar>(
        __dadd_rn(mean, __dmul_rn(stddev, random::standard_normal(seed, offset + static_cast<std::uint64_t>(i)))));
}
template <class Scalar>
__global__ void fill_bernoulli(Scalar* out, index_t n, double keep, Scalar kept_value, std::uint64_t seed,
                               std::uint64_t offset) {
  for (index_t i = global_thread(); i < n; i += grid_threads())
    out[i] = random::uniform01(seed, offset + static_cast<std::uint64_t>(i)) < keep ? kept_value : Scalar(0);
}

// ---------------------------------------------------------------- BLAS helpers
/// c[b][i, j] = beta == 0 ? 0 : beta c[b][i, j] for a strided batch of row-major m x n matrices (gemm with k = 0).
template <class Scalar>
__global__ void scale_matrices(index_t batch, index_t m, index_t n, Scalar beta, Scalar* c, index_t ldc,
                               index_t stride_c) {
  const index_t total = batch * m * n;
  for (index_t t = global_thread(); t < total; t += grid_threads()) {
    const index_t b = t / (m * n), i = (t / n) % m, j = t % n;
    Scalar& v = c[b * stride_c + i * ldc + j];
    v = beta == Scalar(0) ? Scalar(0) : beta * v;  // beta = 0 ignores C, NaN included (BLAS convention)
  }
}
template <class Source>
__global__ void to_bf16(index_t n, const Source* in, __nv_bfloat16* out) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) out[i] = __float2bfloat16_rn(in[i]);
}
template <class Scalar>
__global__ void axpy(index_t n, Scalar alpha, const Scalar* x, Scalar* y) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) y[i] += alpha * x[i];
}
template <class Scalar>
__global__ void scale(index_t n, Scalar alpha, Scalar* x) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) x[i] *= alpha;
}

// ---------------------------------------------------------------- elementwise
template <class Scalar>
__device__ inline Scalar apply_unary(unary_function f, Scalar x) {
  constexpr Scalar inv_sqrt2 = static_cast<Scalar>(0.7071067811865475244);
  constexpr Scalar inv_sqrt_2pi = static_cast<Scalar>(0.3989422804014327);
  constexpr Scalar sqrt_2_over_pi = static_cast<Scalar>(0.7978845608028654);
  switch (f) {
    case unary_function::gelu: return Scalar(0.5) * x * (Scalar(1) + device_erf(x * inv_sqrt2));
    case unary_function::gelu_derivative:
      return Scalar(0.5) * (Scalar(1) + device_erf(x * inv_sqrt2)) + x * inv_sqrt_2pi * device_exp(Scalar(-0.5) * x * x);
    case unary_function::exp: return device_exp(x);
    case unary_function::tanh: return device_tanh(x);
    case unary_function::relu: return x < Scalar(0) ? Scalar(0) : x;  // std::max(x, 0): NaN stays NaN
    case unary_function::relu_derivative: return x > Scalar(0) ? Scalar(1) : Scalar(0);
    case unary_function::sign: return static_cast<Scalar>((x > Scalar(0)) - (x < Scalar(0)));
    case unary_function::gelu_tanh:
      return Scalar(0.5) * x * (Scalar(1) + device_tanh(sqrt_2_over_pi * (x + Scalar(0.044715) * x * x * x)));
    case unary_function::gelu_tanh_derivative: {
      const Scalar t = device_tanh(sqrt_2_over_pi * (x + Scalar(0.044715) * x * x * x));
      return Scalar(0.5) * (Scalar(1) + t) +
             Scalar(0.5) * x * (Scalar(1) - t * t) * sqrt_2_over_pi * (Scalar(1) + Scalar(3 * 0.044715) * x * x);
    }
    case unary_function::silu: return x / (Scalar(1) + device_exp(-x));
    case unary_function::silu_derivative: {
      const Scalar s = Scalar(1) / (Scalar(1) + device_exp(-x));
      return s * (Scalar(1) + x * (Scalar(1) - s));
    }
  }
  return x;
}
template <class Scalar>
__global__ void map(unary_function f, index_t n, const Scalar* in, Scalar* out) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) out[i] = apply_unary(f, in[i]);
}
template <class Scalar>
__global__ void multiply(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) out[i] = a[i] * b[i];
}
template <class Scalar>
__global__ void multiply_add(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) out[i] += a[i] * b[i];
}
template <class Scalar>
__global__ void add_row_vector(index_t rows, index_t cols, const Scalar* vector, Scalar* out) {
  const index_t total = rows * cols;
  for (index_t i = global_thread(); i < total; i += grid_threads()) out[i] += vector[i % cols];
}

// ---------------------------------------------------------------- column sums: a block owns 32 columns
constexpr int tile_columns = 32, tile_rows = 8;  // blockDim = (32, 8)

/// out = beta out + sum_i in[i, :]
template <class Scalar>
__global__ void sum_rows(index_t rows, index_t cols, const Scalar* in, Scalar beta, Scalar* out) {
  __shared__ Scalar partial[tile_rows][tile_columns + 1];
  const index_t c = static_cast<index_t>(blockIdx.x) * tile_columns + threadIdx.x;
  Scalar s = 0;
  if (c < cols)
    for (index_t r = threadIdx.y; r < rows; r += tile_rows) s += in[r * cols + c];
  partial[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < tile_rows; ++k) s += partial[k][threadIdx.x];
    out[c] = (beta == Scalar(0) ? Scalar(0) : beta * out[c]) + s;  // beta = 0 ignores NaN, as setZero does
  }
}

/// dgamma += sum_r dy xhat; dbeta += sum_r dy (the column part of LayerNorm's backward).
template <class Scalar>
__global__ void layer_norm_parameter_gradients(index_t rows, index_t cols, const Scalar* x, const Scalar* mean,
                                               const Scalar* rstd, const Scalar* dy, Scalar* dgamma, Scalar* dbeta) {
  __shared__ Scalar partial_gamma[tile_rows][tile_columns + 1];
  __shared__ Scalar partial_beta[tile_rows][tile_columns + 1];
  const index_t c = static_cast<index_t>(blockIdx.x) * tile_columns + threadIdx.x;
  Scalar sg = 0, sb = 0;
  if (c < cols)
    for (index_t r = threadIdx.y; r < rows; r += tile_rows) {
      const Scalar d = dy[r * cols + c];
      sg += d * ((x[r * cols + c] - mean[r]) * rstd[r]);
      sb += d;
    }
  partial_gamma[threadIdx.y][threadIdx.x] = sg;
  partial_beta[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < tile_rows; ++k) {
      sg += partial_gamma[k][threadIdx.x];
      sb += partial_beta[k][threadIdx.x];
    }
    dgamma[c] += sg;
    dbeta[c] += sb;
  }
}

// ---------------------------------------------------------------- row-wise: one warp per row
constexpr int warps_per_block = block_size / 32;

__device__ inline index_t warp_row() { return static_cast<index_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32; }
__device__ inline int lane() { return static_cast<int>(threadIdx.x % 32); }

template <class Scalar>
__global__ void softmax_rows(index_t rows, index_t cols, const Scalar* in, Scalar* out) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const Scalar* x = in + r * cols;
  Scalar* y = out + r * cols;
  Scalar top = -INFINITY;
  for (index_t c = lane(); c < cols; c += 32) top = device_max(top, x[c]);
  top = warp_max(top);
  Scalar total = 0;
  for (index_t c = lane(); c < cols; c += 32) total += device_exp(x[c] - top);
  total = warp_sum(total);
  for (index_t c = lane(); c < cols; c += 32) y[c] = device_exp(x[c] - top) / total;
}

/// dx = y * (dy - sum(dy * y)) per row.
template <class Scalar>
__global__ void softmax_rows_backward(index_t rows, index_t cols, const Scalar* y, const Scalar* dy, Scalar* dx) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const index_t base = r * cols;
  Scalar s = 0;
  for (index_t c = lane(); c < cols; c += 32) s += y[base + c] * dy[base + c];
  s = warp_sum(s);
  for (index_t c = lane(); c < cols; c += 32) dx[base + c] = y[base + c] * (dy[base + c] - s);
}

/// y = (x - mean) rstd gamma + beta; mean and rstd = 1 / sqrt(biased var + eps) saved per row (two-pass variance).
template <class Scalar>
__global__ void layer_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* beta,
                                   Scalar eps, Scalar* y, Scalar* mean, Scalar* rstd) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const Scalar* xr = x + r * cols;
  Scalar s = 0;
  for (index_t c = lane(); c < cols; c += 32) s += xr[c];
  const Scalar mu = warp_sum(s) / static_cast<Scalar>(cols);
  Scalar q = 0;
  for (index_t c = lane(); c < cols; c += 32) q += (xr[c] - mu) * (xr[c] - mu);
  const Scalar var = warp_sum(q) / static_cast<Scalar>(cols);
  const Scalar inv = Scalar(1) / device_sqrt(var + eps);
  if (lane() == 0) {
    mean[r] = mu;
    rstd[r] = inv;
  }
  for (index_t c = lane(); c < cols; c += 32) y[r * cols + c] = (xr[c] - mu) * inv * gamma[c] + beta[c];
}

/// dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma (assigned, not accumulated, as on the CPU).
template <class Scalar>
__global__ void layer_norm_input_gradient(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma,
                                          const Scalar* mean, const Scalar* rstd, const Scalar* dy, Scalar* dx) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const index_t base = r * cols;
  const Scalar mu = mean[r], inv = rstd[r];
  Scalar sg = 0, sgx = 0;
  for (index_t c = lane(); c < cols; c += 32) {
    const Scalar g = dy[base + c] * gamma[c];
    sg += g;
    sgx += g * ((x[base + c] - mu) * inv);
  }
  const Scalar g_mean = warp_sum(sg) / static_cast<Scalar>(cols);
  const Scalar gx_mean = warp_sum(sgx) / static_cast<Scalar>(cols);
  for (index_t c = lane(); c < cols; c += 32) {
    const Scalar g = dy[base + c] * gamma[c];
    dx[base + c] = inv * (g - g_mean - ((x[base + c] - mu) * inv) * gx_mean);
  }
}

/// Rotary position embedding (half-split); one thread per (row, head, i < head_dim / 2) pair.
template <class Scalar>
__global__ void rotate_half(index_t rows, index_t tokens, index_t heads, index_t head_dim, index_t offset, const Scalar* cos,
                            const Scalar* sin, const Scalar* in, Scalar* out, Scalar sign) {
  const index_t half = head_dim / 2, pairs = rows * heads * half;
  for (index_t t = global_thread(); t < pairs; t += grid_threads()) {
    const index_t i = t % half, h = (t / half) % heads, r = t / (half * heads);
    const index_t p = (r % tokens + offset) * half + i, base = r * heads * head_dim + h * head_dim;
    const Scalar a = in[base + i], b = in[base + i + half], c = cos[p], s = sign * sin[p];
    out[base + i] = a * c - b * s;
    out[base + i + half] = b * c + a * s;
  }
}

/// RMSNorm: y = x rstd gamma, rstd = 1 / sqrt(mean(x^2) + eps) saved per row.
template <class Scalar>
__global__ void rms_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, Scalar eps, Scalar* y,
                                 Scalar* rstd) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const Scalar* xr = x + r * cols;
  Scalar q = 0;
  for (index_t c = lane(); c < cols; c += 32) q += xr[c] * xr[c];
  const Scalar inv = Scalar(1) / device_sqrt(warp_sum(q) / static_cast<Scalar>(cols) + eps);
  if (lane() == 0) rstd[r] = inv;
  for (index_t c = lane(); c < cols; c += 32) y[r * cols + c] = xr[c] * inv * gamma[c];
}

/// dx = rstd (g - xhat mean(g xhat)) with g = dy gamma, xhat = x rstd (assigned, as on the CPU).
template <class Scalar>
__global__ void rms_norm_input_gradient(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma,
                                        const Scalar* rstd, const Scalar* dy, Scalar* dx) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const index_t base = r * cols;
  const Scalar inv = rstd[r];
  Scalar sgx = 0;
  for (index_t c = lane(); c < cols; c += 32) sgx += dy[base + c] * gamma[c] * (x[base + c] * inv);
  const Scalar gx_mean = warp_sum(sgx) / static_cast<Scalar>(cols);
  for (index_t c = lane(); c < cols; c += 32)
    dx[base + c] = inv * (dy[base + c] * gamma[c] - (x[base + c] * inv) * gx_mean);
}

/// dgamma += sum_r dy xhat (RMSNorm's column part).
template <class Scalar>
__global__ void rms_norm_parameter_gradient(index_t rows, index_t cols, const Scalar* x, const Scalar* rstd,
                                            const Scalar* dy, Scalar* dgamma) {
  __shared__ Scalar partial[tile_rows][tile_columns + 1];
  const index_t c = static_cast<index_t>(blockIdx.x) * tile_columns + threadIdx.x;
  Scalar s = 0;
  if (c < cols)
    for (index_t r = threadIdx.y; r < rows; r += tile_rows) s += dy[r * cols + c] * (x[r * cols + c] * rstd[r]);
  partial[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < tile_rows; ++k) s += partial[k][threadIdx.x];
    dgamma[c] += s;
  }
}

// ---------------------------------------------------------------- losses and predictions: one warp per row, in double
// The device twins of layers/cross_entropy.hpp's host loops. `labels` holds one label per row, negative for a row that
// does not count (its gradient row is zero, its loss 0); `allowed` (may be null) holds one flag per class, 0 for a
// class treated as z = -inf (zero probability, zero gradient).

/// gradient[r, c] = (p_rc - [c = label_r]) * scale with p the softmax over the allowed classes;
/// row_loss[r] = log sum_allowed exp(z_r) - z_r,label_r.
template <class Scalar>
__global__ void cross_entropy_rows(index_t rows, index_t cols, const Scalar* logits, const index_t* labels,
                                   const index_t* allowed, double scale, Scalar* gradient, double* row_loss) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const Scalar* z = logits + r * cols;
  Scalar* g = gradient + r * cols;
  const index_t label = labels[r];
  if (label < 0) {
    for (index_t c = lane(); c < cols; c += 32) g[c] = Scalar(0);
    if (lane() == 0) row_loss[r] = 0.0;
    return;
  }
  double top = -INFINITY;
  for (index_t c = lane(); c < cols; c += 32)
    if (!allowed || allowed[c]) top = fmax(top, static_cast<double>(z[c]));
  top = warp_max(top);
  double normaliser = 0;
  for (index_t c = lane(); c < cols; c += 32)
    if (!allowed || allowed[c]) normaliser += exp(static_cast<double>(z[c]) - top);
  normaliser = warp_sum(normaliser);
  for (index_t c = lane(); c < cols; c += 32) {
    const double p = (!allowed || allowed[c]) ? exp(static_cast<double>(z[c]) - top) / normaliser : 0.0;
    g[c] = static_cast<Scalar>((p - (c == label ? 1.0 : 0.0)) * scale);
  }
  if (lane() == 0) row_loss[r] = log(normaliser) - (static_cast<double>(z[label]) - top);
}

/// best[r] = the allowed class of the highest logit in row r, the lowest index on ties; -1 when no class is allowed.
template <class Scalar>
__global__ void argmax_rows(index_t rows, index_t cols, const Scalar* logits, const index_t* allowed, index_t* best) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const Scalar* z = logits + r * cols;
  index_t index = -1;
  Scalar value = Scalar(0);
  for (index_t c = lane(); c < cols; c += 32)  // each lane's own columns ascend: a strict > keeps the lowest on ties
    if ((!allowed || allowed[c]) && (index < 0 || z[c] > value)) index = c, value = z[c];
  for (int offset = 16; offset > 0; offset /= 2) {
    const index_t other_index = __shfl_xor_sync(full_mask, index, offset);
    const Scalar other_value = __shfl_xor_sync(full_mask, value, offset);
    if (other_index >= 0 && (index < 0 || other_value > value || (other_value == value && other_index < index)))
      index = other_index, value = other_value;
  }
  if (lane() == 0) best[r] = index;
}

// ---------------------------------------------------------------- gather / scatter (device index lists)
template <class Scalar>
__global__ void gather_rows(index_t count, const index_t* rows, index_t cols, const Scalar* in, Scalar* out) {
  const index_t total = count * cols;
  for (index_t t = global_thread(); t < total; t += grid_threads()) {
    const index_t i = t / cols, c = t % cols;
    out[t] = in[rows[i] * cols + c];
  }
}
/// Distinct target rows: every (row, column) is written by one thread.
template <class Scalar>
__global__ void scatter_add_distinct_rows(index_t count, const index_t* rows, index_t cols, const Scalar* in, Scalar* out) {
  const index_t total = count * cols;
  for (index_t t = global_thread(); t < total; t += grid_threads()) {
    const index_t i = t / cols, c = t % cols;
    out[rows[i] * cols + c] += in[t];
  }
}
/// Repeated target rows: one thread per column walks the list in order, so the sums are race-free and added in the
/// CPU backend's order.
template <class Scalar>
__global__ void scatter_add_rows_in_order(index_t count, const index_t* rows, index_t cols, const Scalar* in, Scalar* out) {
  for (index_t c = global_thread(); c < cols; c += grid_threads())
    for (index_t i = 0; i < count; ++i) out[rows[i] * cols + c] += in[i * cols + c];
}

// ---------------------------------------------------------------- reductions to one double
enum class reduction { sum, dot, l1_norm, l1_distance, max, squared_norm };

template <reduction R>
__device__ inline double reduction_identity() {
  return R == reduction::max ? -INFINITY : 0.0;
}
template <reduction R>
__device__ inline double reduction_combine(double a, double b) {
  return R == reduction::max ? fmax(a, b) : a + b;
}
template <reduction R, class Scalar>
__device__ inline double reduction_term(const Scalar* x, const Scalar* y, index_t i) {
  const double a = static_cast<double>(x[i]);
  if constexpr (R == reduction::dot) return a * static_cast<double>(y[i]);
  else if constexpr (R == reduction::l1_norm) return fabs(a);
  else if constexpr (R == reduction::l1_distance) return fabs(a - static_cast<double>(y[i]));
  else if constexpr (R == reduction::squared_norm) return a * a;
  else return a;  // sum, max
}
template <reduction R>
__device__ inline double block_reduce(double value) {
  __shared__ double warp_results[block_size / 32];
  for (int offset = 16; offset > 0; offset /= 2)
    value = reduction_combine<R>(value, __shfl_xor_sync(full_mask, value, offset));
  if (threadIdx.x % 32 == 0) warp_results[threadIdx.x / 32] = value;
  __syncthreads();
  value = threadIdx.x < block_size / 32 ? warp_results[threadIdx.x] : reduction_identity<R>();
  if (threadIdx.x < 32)
    for (int offset = 16; offset > 0; offset /= 2)
      value = reduction_combine<R>(value, __shfl_xor_sync(full_mask, value, offset));
  return value;  // valid in thread 0
}
/// Pass 1: one partial per block (launched with block_size threads).
template <reduction R, class Scalar>
__global__ void reduce_partials(index_t n, const Scalar* x, const Scalar* y, double* partials) {
  double acc = reduction_identity<R>();
  for (index_t i = global_thread(); i < n; i += grid_threads()) acc = reduction_combine<R>(acc, reduction_term<R>(x, y, i));
  acc = block_reduce<R>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}
/// Pass 2: one block folds the partials into partials[count].
template <reduction R>
__global__ void reduce_final(int count, double* partials) {
  double acc = reduction_identity<R>();
  for (int i = static_cast<int>(threadIdx.x); i < count; i += block_size) acc = reduction_combine<R>(acc, partials[i]);
  acc = block_reduce<R>(acc);
  if (threadIdx.x == 0) partials[count] = acc;
}

// ---------------------------------------------------------------- optimiser steps (PyTorch semantics)
template <class Scalar>
__global__ void sgd_step(index_t n, Scalar* param, const Scalar* grad, Scalar* momentum_buffer, Scalar lr,
                         Scalar momentum, Scalar dampening, Scalar weight_decay, bool nesterov, bool first_step) {
  for (index_t i = global_thread(); i < n; i += grid_threads()) {
    Scalar d = weight_decay != Scalar(0) ? grad[i] + weight_decay * param[i] : grad[i];
    if (momentum != Scalar(0)) {
      const Scalar buf = first_step ? d : momentum * momentum_buffer[i] + (Scalar(1) - dampening) * d;
      momentum_buffer[i] = buf;
      d = nesterov ? d + momentum * buf : buf;
    }
    param[i] -= lr * d;
  }
}

/// Adam / AdamW on every entry (indices == nullptr) or on the listed ones. The host computes the step's constants:
/// decay_factor = 1 - lr wd (AdamW), step_size = lr / (1 - b1^t), sqrt_bc2 = sqrt(1 - b2^t).
template <class Scalar>
struct adam_constants {
  Scalar beta1, beta2, eps, weight_decay, decay_factor, step_size, sqrt_bc2;
  bool decoupled, apply_decay;
};
template <class Scalar>
__global__ void adam_step(index_t n, const index_t* indices, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v,
                          adam_constants<Scalar> k) {
  for (index_t j = global_thread(); j < n; j += grid_threads()) {
    const index_t i = indices ? indices[j] : j;
    Scalar g = grad[i];
    Scalar p = param[i];
    if (k.decoupled) {
      if (k.apply_decay) p *= k.decay_factor;  // AdamW
    } else {
      g += k.weight_decay * p;  // Adam's L2 penalty folded into the gradient
    }
    const Scalar mi = k.beta1 * m[i] + (Scalar(1) - k.beta1) * g;
    const Scalar vi = k.beta2 * v[i] + (Scalar(1) - k.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - k.step_size * mi / (device_sqrt(vi) / k.sqrt_bc2 + k.eps);
  }
}

}  // namespace treelora::cuda_kernels
