// treelora/backend/cuda_backend.hpp: the CUDA backend: cuBLAS for gemm, small kernels of our own for the rest.
//
// Include it only from a translation unit that nvcc compiles (a .cu file): the kernels are templates in this
// header-only library, so they are compiled where they are used. Link CUDA::cudart and CUDA::cublas.
//
//   treelora::cuda_context context(/*device*/ 0, treelora::gemm_mode::fp32);
//   treelora::cuda_backend<float> backend(context);   // or `cuda_backend<float> backend;` owning its own context
//   treelora::vit<treelora::cuda_backend<float>> model(backend, config);   // the same templates as on the CPU
//
// Semantics: every kernel computes what cpu_backend computes (backend/cpu_backend.hpp is the reference), within a
// per-type tolerance: the order of floating-point additions differs (trees instead of loops). Seeded fills use the
// same counter-based generator, so they equal the CPU's element by element (see docs/gpu.md for the exact claim).
// Synchronisation: work is queued on the context's stream. Only these wait for the device: copy_to_host, the
// reductions (sum, dot, ... return a host scalar through one device->host copy of a double), the loss and prediction
// members (cross_entropy_rows returns the loss, argmax_rows the predicted classes, squared_norm_total a norm: one
// read each) and synchronize().
// gather_rows, scatter_add_rows and adam_step_indexed take host index lists, as the Backend concept says; each list
// is copied to the device explicitly (cuda_context::upload_indices) before its kernel runs.
#pragma once

#if !defined(__CUDACC__)
#error "treelora/backend/cuda_backend.hpp must be compiled by nvcc (include it from a .cu file)"
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "treelora/backend/backend.hpp"
#include "treelora/backend/cuda/check.hpp"
#include "treelora/backend/cuda/context.hpp"
#include "treelora/backend/cuda/kernels.hpp"

namespace treelora {

template <class Scalar>
class cuda_backend {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "treelora: cuda_backend supports float and double");

 public:
  using scalar_type = Scalar;
  using buffer_type = device_buffer<Scalar>;
  static constexpr bool is_host_accessible = false;
  static constexpr std::string_view name() {
    if constexpr (std::is_same_v<Scalar, float>) return "cuda<float>";
    else return "cuda<double>";
  }

  /// Owns a context on device 0 (throws std::runtime_error when there is no CUDA device).
  cuda_backend() : owned_(std::make_unique<cuda_context>()), context_(owned_.get()) {}
  /// Uses `context`, which must outlive the backend (buffers themselves may outlive both).
  explicit cuda_backend(cuda_context& context) : context_(&context) {}
  // Tensors and layers keep pointers to their backend: it never moves.
  cuda_backend(const cuda_backend&) = delete;
  cuda_backend& operator=(const cuda_backend&) = delete;

  cuda_context& context() { return *context_; }

  // ---------------------------------------------------------------- memory
  buffer_type allocate(index_t n) { return context_->allocate<Scalar>(n); }
  /// host -> device. The host data may be reused as soon as this returns (a pageable source is staged by the driver
  /// before the call returns; a pinned source must stay unchanged until synchronize()).
  void copy_from_host(const Scalar* host, Scalar* out, index_t n) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    TREELORA_CUDA_CHECK(cudaMemcpyAsync(out, host, bytes(n), cudaMemcpyHostToDevice, stream()));
  }
  /// device -> host; waits for the stream, so the host data is ready when this returns.
  void copy_to_host(const Scalar* in, Scalar* host, index_t n) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    TREELORA_CUDA_CHECK(cudaMemcpyAsync(host, in, bytes(n), cudaMemcpyDeviceToHost, stream()));
    context_->synchronize();
  }
  /// device -> device, overlapping ranges allowed (memmove semantics, like the CPU backend).
  void copy(const Scalar* in, Scalar* out, index_t n) {
    if (n <= 0 || in == out) return;
    device_guard guard(context_->device());
    if (in < out + n && out < in + n) {
      Scalar* staged = context_->scratch<Scalar>(cuda_context::scratch_slot::overlap, n);
      TREELORA_CUDA_CHECK(cudaMemcpyAsync(staged, in, bytes(n), cudaMemcpyDeviceToDevice, stream()));
      in = staged;
    }
    TREELORA_CUDA_CHECK(cudaMemcpyAsync(out, in, bytes(n), cudaMemcpyDeviceToDevice, stream()));
  }
  void fill(Scalar* out, index_t n, Scalar value) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    if (value == Scalar(0) && !std::signbit(value)) {
      TREELORA_CUDA_CHECK(cudaMemsetAsync(out, 0, bytes(n), stream()));  // +0.0 is all zero bits
    } else {
      cuda_kernels::fill<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(out, n, value);
      TREELORA_CUDA_CHECK_LAUNCH();
    }
  }
  void fill_uniform(Scalar* out, index_t n, Scalar lo, Scalar hi, std::uint64_t seed, std::uint64_t offset) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    const double width = static_cast<double>(hi) - static_cast<double>(lo);
    cuda_kernels::fill_uniform<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(out, n, static_cast<double>(lo), width,
                                                                                 seed, offset);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void fill_normal(Scalar* out, index_t n, Scalar mean, Scalar stddev, std::uint64_t seed, std::uint64_t offset) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::fill_normal<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(
        out, n, static_cast<double>(mean), static_cast<double>(stddev), seed, offset);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// out_i = kept_value with probability keep, else 0 (a dropout mask already scaled by 1 / keep).
  void fill_bernoulli(Scalar* out, index_t n, Scalar keep, Scalar kept_value, std::uint64_t seed, std::uint64_t offset) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::fill_bernoulli<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(
        out, n, static_cast<double>(keep), kept_value, seed, offset);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void synchronize() { context_->synchronize(); }

  // ---------------------------------------------------------------- BLAS
  /// C[m x n] = alpha op(A) op(B) + beta C, row-major; op(A) is m x k, op(B) is k x n. beta = 0 ignores C.
  void gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha, const Scalar* a,
            index_t lda, const Scalar* b, index_t ldb, Scalar beta, Scalar* c, index_t ldc) {
    run_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
  }
  /// batch independent gemms; operand i starts at base + i * stride.
  void gemm_strided_batched(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha,
                            const Scalar* a, index_t lda, index_t stride_a, const Scalar* b, index_t ldb,
                            index_t stride_b, Scalar beta, Scalar* c, index_t ldc, index_t stride_c, index_t batch) {
    run_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, batch);
  }
  void axpy(index_t n, Scalar alpha, const Scalar* x, Scalar* y) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::axpy<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(n, alpha, x, y);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void scale(index_t n, Scalar alpha, Scalar* x) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::scale<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(n, alpha, x);
    TREELORA_CUDA_CHECK_LAUNCH();
  }

  // ---------------------------------------------------------------- elementwise
  void map(unary_function f, index_t n, const Scalar* in, Scalar* out) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::map<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(f, n, in, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void multiply(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::multiply<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(n, a, b, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void multiply_add(index_t n, const Scalar* a, const Scalar* b, Scalar* out) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::multiply_add<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(n, a, b, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void add_row_vector(index_t rows, index_t cols, const Scalar* vector, Scalar* out) {
    if (rows <= 0 || cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::add_row_vector<<<grid(rows * cols), cuda_kernels::block_size, 0, stream()>>>(rows, cols, vector, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// out = beta out + sum_i in[i, :] (beta = 0 ignores out).
  void sum_rows(index_t rows, index_t cols, const Scalar* in, Scalar beta, Scalar* out) {
    if (cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::sum_rows<<<column_tiles(cols), column_tile(), 0, stream()>>>(rows, cols, in, beta, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void softmax_rows(index_t rows, index_t cols, const Scalar* in, Scalar* out) {
    if (rows <= 0 || cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::softmax_rows<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(rows, cols, in, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// dx = y * (dy - sum(dy * y)) per row.
  void softmax_rows_backward(index_t rows, index_t cols, const Scalar* y, const Scalar* dy, Scalar* dx) {
    if (rows <= 0 || cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::softmax_rows_backward<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(rows, cols, y, dy, dx);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// y = (x - mean) * rstd * gamma + beta per row; saves mean and rstd = 1 / sqrt(var + eps) (biased var).
  void layer_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* beta,
                          Scalar eps, Scalar* y, Scalar* mean, Scalar* rstd) {
    if (rows <= 0 || cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::layer_norm_forward<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(
        rows, cols, x, gamma, beta, eps, y, mean, rstd);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy * gamma; dgamma += sum dy xhat; dbeta += sum dy.
  void layer_norm_backward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* mean,
                           const Scalar* rstd, const Scalar* dy, Scalar* dx, Scalar* dgamma, Scalar* dbeta) {
    if (rows <= 0 || cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::layer_norm_input_gradient<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(
        rows, cols, x, gamma, mean, rstd, dy, dx);
    TREELORA_CUDA_CHECK_LAUNCH();
    cuda_kernels::layer_norm_parameter_gradients<<<column_tiles(cols), column_tile(), 0, stream()>>>(
        rows, cols, x, mean, rstd, dy, dgamma, dbeta);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// Rotary position embedding, half-split (cpu_backend::rotate_half).
  void rotate_half(index_t rows, index_t tokens, index_t heads, index_t head_dim, index_t offset, const Scalar* cos,
                   const Scalar* sin, const Scalar* in, Scalar* out, bool inverse) {
    const index_t pairs = rows * heads * (head_dim / 2);
    if (pairs <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::rotate_half<<<grid(pairs), cuda_kernels::block_size, 0, stream()>>>(
        rows, tokens, heads, head_dim, offset, cos, sin, in, out, inverse ? Scalar(-1) : Scalar(1));
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// y = x rstd gamma per row; saves rstd = 1 / sqrt(mean(x^2) + eps) (RMSNorm).
  void rms_norm_forward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, Scalar eps, Scalar* y, Scalar* rstd) {
    if (rows <= 0 || cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::rms_norm_forward<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(rows, cols, x, gamma, eps,
                                                                                                  y, rstd);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// dx = rstd (g - xhat mean(g xhat)) with g = dy * gamma; dgamma += sum dy xhat.
  void rms_norm_backward(index_t rows, index_t cols, const Scalar* x, const Scalar* gamma, const Scalar* rstd,
                         const Scalar* dy, Scalar* dx, Scalar* dgamma) {
    if (rows <= 0 || cols <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::rms_norm_input_gradient<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(
        rows, cols, x, gamma, rstd, dy, dx);
    TREELORA_CUDA_CHECK_LAUNCH();
    cuda_kernels::rms_norm_parameter_gradient<<<column_tiles(cols), column_tile(), 0, stream()>>>(rows, cols, x, rstd,
                                                                                                   dy, dgamma);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// out[i, :] = in[rows[i], :]; the host index list is copied to the device first.
  void gather_rows(std::span<const index_t> rows, index_t cols, const Scalar* in, Scalar* out) {
    const auto count = static_cast<index_t>(rows.size());
    if (count == 0 || cols <= 0) return;
    device_guard guard(context_->device());
    const index_t* device_rows = context_->upload_indices(rows);
    cuda_kernels::gather_rows<<<grid(count * cols), cuda_kernels::block_size, 0, stream()>>>(count, device_rows, cols,
                                                                                           in, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// out[rows[i], :] += in[i, :]. Distinct rows run fully parallel; a list with repeats runs one thread per column
  /// over the list in order (race-free, the CPU's order of additions).
  void scatter_add_rows(std::span<const index_t> rows, index_t cols, const Scalar* in, Scalar* out) {
    const auto count = static_cast<index_t>(rows.size());
    if (count == 0 || cols <= 0) return;
    device_guard guard(context_->device());
    const bool distinct = all_distinct(rows);
    const index_t* device_rows = context_->upload_indices(rows);
    if (distinct)
      cuda_kernels::scatter_add_distinct_rows<<<grid(count * cols), cuda_kernels::block_size, 0, stream()>>>(
          count, device_rows, cols, in, out);
    else
      cuda_kernels::scatter_add_rows_in_order<<<grid(cols), cuda_kernels::block_size, 0, stream()>>>(count, device_rows,
                                                                                                    cols, in, out);
    TREELORA_CUDA_CHECK_LAUNCH();
  }

  // ---------------------------------------------------------------- reductions (each returns through one
  // device->host copy of a double and so synchronises the stream)
  Scalar sum(index_t n, const Scalar* x) { return reduce<cuda_kernels::reduction::sum>(n, x, x); }
  Scalar dot(index_t n, const Scalar* x, const Scalar* y) { return reduce<cuda_kernels::reduction::dot>(n, x, y); }
  Scalar l1_norm(index_t n, const Scalar* x) { return reduce<cuda_kernels::reduction::l1_norm>(n, x, x); }
  Scalar l1_distance(index_t n, const Scalar* x, const Scalar* y) {
    return reduce<cuda_kernels::reduction::l1_distance>(n, x, y);
  }
  /// -infinity for n = 0, like the CPU backend.
  Scalar max(index_t n, const Scalar* x) {
    if (n <= 0) return -std::numeric_limits<Scalar>::infinity();
    return reduce<cuda_kernels::reduction::max>(n, x, x);
  }
  Scalar squared_norm(index_t n, const Scalar* x) { return reduce<cuda_kernels::reduction::squared_norm>(n, x, x); }

  // ---------------------------------------------------------------- losses and predictions on the device
  // The optional BackendDeviceLosses members (backend/backend.hpp): layers/cross_entropy.hpp and optim/clip.hpp call
  // them instead of copying logits or one norm per parameter to the host. The callers validate the labels and classes.

  /// Softmax cross-entropy of a rows x cols block of logits: `labels` one per row (negative: the row does not count),
  /// `allowed_classes` the classes taking part (empty: all). Writes gradient = (p - onehot) * scale and returns the
  /// sum of the counted rows' losses, through one device->host read.
  double cross_entropy_rows(index_t rows, index_t cols, const Scalar* logits, std::span<const index_t> labels,
                            std::span<const index_t> allowed_classes, double scale, Scalar* gradient) {
    if (rows <= 0 || cols <= 0) return 0.0;
    device_guard guard(context_->device());
    const index_t* device_list = upload_labels_and_classes(rows, cols, labels, allowed_classes);
    double* row_loss = context_->scratch<double>(cuda_context::scratch_slot::operand_a, rows);
    cuda_kernels::cross_entropy_rows<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(
        rows, cols, logits, device_list, allowed_classes.empty() ? nullptr : device_list + rows, scale, gradient,
        row_loss);
    TREELORA_CUDA_CHECK_LAUNCH();
    return reduce_to_double<cuda_kernels::reduction::sum>(rows, row_loss, row_loss);
  }
  /// The allowed class of each row's highest logit (the lowest index on ties; -1 when none is allowed), copied to the
  /// host: rows indices instead of rows x cols logits.
  std::vector<index_t> argmax_rows(index_t rows, index_t cols, const Scalar* logits,
                                   std::span<const index_t> allowed_classes) {
    std::vector<index_t> best(static_cast<std::size_t>(std::max<index_t>(rows, 0)), -1);
    if (rows <= 0 || cols <= 0) return best;
    device_guard guard(context_->device());
    const index_t* device_list = upload_labels_and_classes(0, cols, {}, allowed_classes);
    auto* device_best = context_->scratch<index_t>(cuda_context::scratch_slot::operand_a, rows);
    cuda_kernels::argmax_rows<<<row_blocks(rows), cuda_kernels::block_size, 0, stream()>>>(rows, cols, logits,
                                                                                         device_list, device_best);
    TREELORA_CUDA_CHECK_LAUNCH();
    TREELORA_CUDA_CHECK(cudaMemcpyAsync(best.data(), device_best, best.size() * sizeof(index_t),
                                        cudaMemcpyDeviceToHost, stream()));
    context_->synchronize();
    return best;
  }
  /// sum_i |x_i|^2 over several arrays (x_i of sizes[i] elements), in double, through one device->host read: the
  /// global norm of gradient clipping without one synchronisation per parameter.
  double squared_norm_total(std::span<const Scalar* const> arrays, std::span<const index_t> sizes) {
    if (arrays.size() != sizes.size())
      throw_invalid_argument("cuda_backend::squared_norm_total", concat(arrays.size(), " arrays, ", sizes.size(), " sizes"));
    index_t total_blocks = 0;
    for (const index_t n : sizes) total_blocks += reduction_blocks(n);
    if (total_blocks == 0) return 0.0;
    device_guard guard(context_->device());
    double* partials = context_->scratch<double>(cuda_context::scratch_slot::reduction, total_blocks + 1);
    index_t offset = 0;
    for (std::size_t i = 0; i < arrays.size(); ++i) {
      const int blocks = reduction_blocks(sizes[i]);
      if (blocks == 0) continue;
      cuda_kernels::reduce_partials<cuda_kernels::reduction::squared_norm>
          <<<blocks, cuda_kernels::block_size, 0, stream()>>>(sizes[i], arrays[i], arrays[i], partials + offset);
      TREELORA_CUDA_CHECK_LAUNCH();
      offset += blocks;
    }
    if (total_blocks > std::numeric_limits<int>::max())
      throw_invalid_argument("cuda_backend::squared_norm_total", concat(total_blocks, " partial sums"));
    cuda_kernels::reduce_final<cuda_kernels::reduction::sum>
        <<<1, cuda_kernels::block_size, 0, stream()>>>(static_cast<int>(total_blocks), partials);
    TREELORA_CUDA_CHECK_LAUNCH();
    return context_->read_result(partials + total_blocks);
  }

  // ---------------------------------------------------------------- optimiser kernels (PyTorch semantics)
  void sgd_step(index_t n, Scalar* param, const Scalar* grad, Scalar* momentum_buffer, Scalar lr, Scalar momentum,
                Scalar dampening, Scalar weight_decay, bool nesterov, bool first_step) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::sgd_step<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(
        n, param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, first_step);
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  void adam_step(index_t n, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v, Scalar lr, Scalar beta1,
                 Scalar beta2, Scalar eps, Scalar weight_decay, bool decoupled, std::int64_t step) {
    if (n <= 0) return;
    device_guard guard(context_->device());
    cuda_kernels::adam_step<<<grid(n), cuda_kernels::block_size, 0, stream()>>>(
        n, static_cast<const index_t*>(nullptr), param, grad, m, v,
        adam_constants(lr, beta1, beta2, eps, weight_decay, decoupled, step));
    TREELORA_CUDA_CHECK_LAUNCH();
  }
  /// Adam at the listed entries only ("lazy" Adam). A list with repeats is applied in order by one thread, as on the
  /// CPU (each repeat is one more step of that entry).
  void adam_step_indexed(std::span<const index_t> indices, Scalar* param, const Scalar* grad, Scalar* m, Scalar* v,
                         Scalar lr, Scalar beta1, Scalar beta2, Scalar eps, Scalar weight_decay, bool decoupled,
                         std::int64_t step) {
    const auto n = static_cast<index_t>(indices.size());
    if (n == 0) return;
    device_guard guard(context_->device());
    const bool distinct = all_distinct(indices);
    const index_t* device_indices = context_->upload_indices(indices);
    cuda_kernels::adam_step<<<distinct ? grid(n) : 1, distinct ? cuda_kernels::block_size : 1, 0, stream()>>>(
        n, device_indices, param, grad, m, v, adam_constants(lr, beta1, beta2, eps, weight_decay, decoupled, step));
    TREELORA_CUDA_CHECK_LAUNCH();
  }

 private:
  cudaStream_t stream() const { return context_->stream(); }
  static std::size_t bytes(index_t n) { return static_cast<std::size_t>(n) * sizeof(Scalar); }

  /// Blocks for a grid-stride loop over n elements: enough to fill the device, no more.
  unsigned grid(index_t n) const {
    const index_t wanted = (n + cuda_kernels::block_size - 1) / cuda_kernels::block_size;
    const index_t cap = static_cast<index_t>(context_->multiprocessors()) * 32;
    return static_cast<unsigned>(std::max<index_t>(1, std::min(wanted, cap)));
  }
  /// One warp per row.
  static unsigned row_blocks(index_t rows) {
    const index_t blocks = (rows + cuda_kernels::warps_per_block - 1) / cuda_kernels::warps_per_block;
    if (blocks > std::numeric_limits<int>::max())
      throw_invalid_argument("cuda_backend", concat(rows, " rows exceed one grid of warps"));
    return static_cast<unsigned>(blocks);
  }
  static unsigned column_tiles(index_t cols) {
    return static_cast<unsigned>((cols + cuda_kernels::tile_columns - 1) / cuda_kernels::tile_columns);
  }
  static dim3 column_tile() { return dim3(cuda_kernels::tile_columns, cuda_kernels::tile_rows); }

  static bool all_distinct(std::span<const index_t> list) {
    thread_local std::vector<unsigned char> seen;
    index_t top = 0;
    for (const index_t r : list) top = std::max(top, r);
    seen.assign(static_cast<std::size_t>(top) + 1, 0);
    for (const index_t r : list) {
      auto& s = seen[static_cast<std::size_t>(r)];
      if (s) return false;
      s = 1;
    }
    return true;
  }

  static cuda_kernels::adam_constants<Scalar> adam_constants(Scalar lr, Scalar beta1, Scalar beta2, Scalar eps,
                                                             Scalar weight_decay, bool decoupled, std::int64_t step) {
    // The same host-side constants as cpu_backend's adam_step.
    const Scalar bc1 = Scalar(1) - std::pow(beta1, static_cast<Scalar>(step));
    const Scalar bc2 = Scalar(1) - std::pow(beta2, static_cast<Scalar>(step));
    return {.beta1 = beta1,
            .beta2 = beta2,
            .eps = eps,
            .weight_decay = weight_decay,
            .decay_factor = Scalar(1) - lr * weight_decay,
            .step_size = lr / bc1,
            .sqrt_bc2 = std::sqrt(bc2),
            .decoupled = decoupled,
            .apply_decay = weight_decay != Scalar(0)};
  }

  template <cuda_kernels::reduction R>
  Scalar reduce(index_t n, const Scalar* x, const Scalar* y) {
    return static_cast<Scalar>(reduce_to_double<R>(n, x, y));
  }
  /// Blocks of the first reduction pass over n elements (0 for none).
  static int reduction_blocks(index_t n) {
    if (n <= 0) return 0;
    return static_cast<int>(std::min<index_t>((n + cuda_kernels::block_size - 1) / cuda_kernels::block_size, 1024));
  }
  template <cuda_kernels::reduction R, class T>
  double reduce_to_double(index_t n, const T* x, const T* y) {
    if (n <= 0) return 0.0;
    device_guard guard(context_->device());
    const int blocks = reduction_blocks(n);
    double* partials = context_->scratch<double>(cuda_context::scratch_slot::reduction, blocks + 1);
    cuda_kernels::reduce_partials<R><<<blocks, cuda_kernels::block_size, 0, stream()>>>(n, x, y, partials);
    TREELORA_CUDA_CHECK_LAUNCH();
    cuda_kernels::reduce_final<R><<<1, cuda_kernels::block_size, 0, stream()>>>(blocks, partials);
    TREELORA_CUDA_CHECK_LAUNCH();
    return context_->read_result(partials + blocks);  // the one device->host copy
  }
  /// One upload of [labels (rows of them), one flag per class (cols, only when allowed_classes is non-empty)]: a
  /// second upload could grow the staging ring and free the first list before its kernel ran.
  const index_t* upload_labels_and_classes(index_t rows, index_t cols, std::span<const index_t> labels,
                                           std::span<const index_t> allowed_classes) {
    thread_local std::vector<index_t> list;
    list.assign(labels.begin(), labels.end());
    list.resize(static_cast<std::size_t>(rows), 0);
    if (!allowed_classes.empty()) {
      list.resize(static_cast<std::size_t>(rows + cols), 0);
      for (const index_t c : allowed_classes) list[static_cast<std::size_t>(rows + c)] = 1;
    }
    return context_->upload_indices(list);
  }

  static int blas_int(index_t value, const char* what) {
    if (value < 0 || value > std::numeric_limits<int>::max())
      throw_invalid_argument("cuda_backend::gemm", concat(what, " = ", value, " does not fit cuBLAS's int"));
    return static_cast<int>(value);
  }
  static cublasOperation_t blas_op(transpose t) { return t == transpose::yes ? CUBLAS_OP_T : CUBLAS_OP_N; }

  /// bf16 copy of a row-major operand region (all batches), in context scratch; returns nullptr when n = 0.
  const __nv_bfloat16* bf16_operand(cuda_context::scratch_slot slot, const float* operand, index_t rows, index_t cols,
                                    index_t ld, index_t stride, index_t batch) {
    const index_t span = (batch - 1) * stride + (rows - 1) * ld + cols;
    auto* converted = context_->scratch<__nv_bfloat16>(slot, span);
    cuda_kernels::to_bf16<<<grid(span), cuda_kernels::block_size, 0, stream()>>>(span, operand, converted);
    TREELORA_CUDA_CHECK_LAUNCH();
    return converted;
  }

  // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS gets (op_b, op_a, n, m, k, B, A) and sees each row-major
  // operand, stored with its leading dimension, as its transpose.
  void run_gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, Scalar alpha, const Scalar* a,
                index_t lda, index_t stride_a, const Scalar* b, index_t ldb, index_t stride_b, Scalar beta, Scalar* c,
                index_t ldc, index_t stride_c, index_t batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    device_guard guard(context_->device());
    if (k <= 0) {  // C = beta C; cuBLAS would reject the zero leading dimensions of empty operands
      cuda_kernels::scale_matrices<<<grid(batch * m * n), cuda_kernels::block_size, 0, stream()>>>(batch, m, n, beta, c,
                                                                                                 ldc, stride_c);
      TREELORA_CUDA_CHECK_LAUNCH();
      return;
    }
    const int bm = blas_int(m, "m"), bn = blas_int(n, "n"), bk = blas_int(k, "k");
    const int blda = blas_int(lda, "lda"), bldb = blas_int(ldb, "ldb"), bldc = blas_int(ldc, "ldc");
    const int bbatch = blas_int(batch, "batch");
    const cublasOperation_t op_a = blas_op(trans_a), op_b = blas_op(trans_b);
    cublasHandle_t handle = context_->blas();
    if constexpr (std::is_same_v<Scalar, double>) {
      if (batch == 1)
        TREELORA_CUBLAS_CHECK(cublasDgemm(handle, op_b, op_a, bn, bm, bk, &alpha, b, bldb, a, blda, &beta, c, bldc));
      else
        TREELORA_CUBLAS_CHECK(cublasDgemmStridedBatched(handle, op_b, op_a, bn, bm, bk, &alpha, b, bldb, stride_b, a,
                                                        blda, stride_a, &beta, c, bldc, stride_c, bbatch));
    } else {
      const gemm_mode mode = context_->mode();
      if (mode == gemm_mode::fp32) {
        if (batch == 1)
          TREELORA_CUBLAS_CHECK(cublasSgemm(handle, op_b, op_a, bn, bm, bk, &alpha, b, bldb, a, blda, &beta, c, bldc));
        else
          TREELORA_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, op_b, op_a, bn, bm, bk, &alpha, b, bldb, stride_b, a,
                                                          blda, stride_a, &beta, c, bldc, stride_c, bbatch));
        return;
      }
      const void* a_operand = a;
      const void* b_operand = b;
      cudaDataType_t operand_type = CUDA_R_32F;
      cublasComputeType_t compute = CUBLAS_COMPUTE_32F_FAST_TF32;
      if (mode == gemm_mode::bf16) {
        const index_t a_rows = trans_a == transpose::no ? m : k, a_cols = trans_a == transpose::no ? k : m;
        const index_t b_rows = trans_b == transpose::no ? k : n, b_cols = trans_b == transpose::no ? n : k;
        a_operand = bf16_operand(cuda_context::scratch_slot::operand_a, a, a_rows, a_cols, lda, stride_a, batch);
        b_operand = bf16_operand(cuda_context::scratch_slot::operand_b, b, b_rows, b_cols, ldb, stride_b, batch);
        operand_type = CUDA_R_16BF;
        compute = CUBLAS_COMPUTE_32F;
      }
      if (batch == 1)
        TREELORA_CUBLAS_CHECK(cublasGemmEx(handle, op_b, op_a, bn, bm, bk, &alpha, b_operand, operand_type, bldb,
                                           a_operand, operand_type, blda, &beta, c, CUDA_R_32F, bldc, compute,
                                           CUBLAS_GEMM_DEFAULT));
      else
        TREELORA_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, op_b, op_a, bn, bm, bk, &alpha, b_operand, operand_type,
                                                         bldb, stride_b, a_operand, operand_type, blda, stride_a, &beta,
                                                         c, CUDA_R_32F, bldc, stride_c, bbatch, compute,
                                                         CUBLAS_GEMM_DEFAULT));
    }
  }

  std::unique_ptr<cuda_context> owned_;
  cuda_context* context_;
};

static_assert(check_backend<cuda_backend<float>>());
static_assert(check_backend<cuda_backend<double>>());

}  // namespace treelora
