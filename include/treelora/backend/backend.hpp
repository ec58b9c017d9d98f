// treelora/backend/backend.hpp: the Backend concept, the contract every tensor backend fulfils.
//
// A backend is an object (a context: the CPU one holds nothing, a GPU one holds its stream and library
// handles) whose member functions work on raw pointers into its own memory, BLAS-style. Shape checking
// lives one level up, in tensor/ops.hpp, so a backend author writes kernels and nothing else.
// Matrices are row-major; a leading dimension is the distance between consecutive rows.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/core/error.hpp"

namespace treelora {

/// Whether a gemm operand is used as stored or transposed.
enum class transpose : bool { no = false, yes = true };

/// Elementwise functions a transformer's forward and backward need.
enum class unary_function {
  gelu,             ///< 0.5 x (1 + erf(x / sqrt 2)), PyTorch's exact GELU
  gelu_derivative,  ///< Phi(x) + x phi(x)
  exp,
  tanh,
  relu,
  relu_derivative,  ///< 1 where x > 0, else 0
  sign,             ///< -1, 0 or 1 (the subgradient of |x| used by L1 pulls)
  gelu_tanh,        ///< 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), GPT-2's "gelu_new"
  gelu_tanh_derivative,  ///< 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2 / pi) (1 + 3 0.044715 x^2), t the tanh above
  silu,             ///< x sigmoid(x) (Llama's MLP activation, "swish")
  silu_derivative,  ///< sigmoid(x) (1 + x (1 - sigmoid(x)))
};

/// Memory: allocation, raw access, copies between host and backend memory, fills.
template <class B>
concept BackendMemory = requires(B& backend, typename B::buffer_type& buffer, typename B::scalar_type* out,
                                 const typename B::scalar_type* in, typename B::scalar_type value,
                                 index_t n, std::uint64_t seed) {
  typename B::scalar_type;
  typename B::buffer_type;
  requires std::floating_point<typename B::scalar_type>;
  { B::name() } -> std::convertible_to<std::string_view>;
  { B::is_host_accessible } -> std::convertible_to<bool>;
  { backend.allocate(n) } -> std::same_as<typename B::buffer_type>;
  { buffer.data() } -> std::same_as<typename B::scalar_type*>;
  { buffer.size() } -> std::convertible_to<index_t>;
  backend.copy_from_host(in, out, n);  // host -> backend
  backend.copy_to_host(in, out, n);    // backend -> host
  backend.copy(in, out, n);            // backend -> backend
  backend.fill(out, n, value);
  backend.fill_uniform(out, n, value, value, seed, seed);  // lo, hi, seed, counter offset
  backend.fill_normal(out, n, value, value, seed, seed);   // mean, std, seed, counter offset
  backend.fill_bernoulli(out, n, value, value, seed, seed); // keep probability, kept value, seed, offset
  backend.synchronize();
};

/// Dense linear algebra: gemm with transposes and alpha/beta, strided batched gemm, axpy, scale.
template <class B>
concept BackendBlas = requires(B& backend, typename B::scalar_type* out, const typename B::scalar_type* in,
                               typename B::scalar_type alpha, index_t n, transpose op) {
  backend.gemm(op, op, n, n, n, alpha, in, n, in, n, alpha, out, n);
  backend.gemm_strided_batched(op, op, n, n, n, alpha, in, n, n, in, n, n, alpha, out, n, n, n);
  backend.axpy(n, alpha, in, out);  // y += alpha x
  backend.scale(n, alpha, out);     // x *= alpha
};

/// Elementwise maps and row-wise operations (bias, softmax, LayerNorm, gather/scatter).
template <class B>
concept BackendElementwise = requires(B& backend, typename B::scalar_type* out,
                                      const typename B::scalar_type* in, typename B::scalar_type value,
                                      index_t n, unary_function f, std::span<const index_t> rows, bool flag) {
  backend.map(f, n, in, out);                  // out = f(in)
  backend.multiply(n, in, in, out);            // out = a * b
  backend.multiply_add(n, in, in, out);        // out += a * b
  backend.add_row_vector(n, n, in, out);       // out[i, :] += v
  backend.sum_rows(n, n, in, value, out);      // out = beta out + sum_i in[i, :]
  backend.softmax_rows(n, n, in, out);
  backend.softmax_rows_backward(n, n, in, in, out);  // y, dy -> dx
  backend.layer_norm_forward(n, n, in, in, in, value, out, out, out);   // x, gamma, beta, eps -> y, mean, rstd
  backend.layer_norm_backward(n, n, in, in, in, in, in, out, out, out); // x, gamma, mean, rstd, dy -> dx, +dgamma, +dbeta
  backend.rms_norm_forward(n, n, in, in, value, out, out);              // x, gamma, eps -> y, rstd
  backend.rms_norm_backward(n, n, in, in, in, in, out, out);            // x, gamma, rstd, dy -> dx, +dgamma
  backend.rotate_half(n, n, n, n, n, in, in, in, out, flag);            // RoPE: rows, tokens, heads, head dim, offset
  backend.gather_rows(rows, n, in, out);       // out[i, :] = in[rows[i], :]
  backend.scatter_add_rows(rows, n, in, out);  // out[rows[i], :] += in[i, :]
};

/// Reductions to a host scalar.
template <class B>
concept BackendReductions = requires(B& backend, const typename B::scalar_type* in, index_t n) {
  { backend.sum(n, in) } -> std::same_as<typename B::scalar_type>;
  { backend.dot(n, in, in) } -> std::same_as<typename B::scalar_type>;
  { backend.l1_norm(n, in) } -> std::same_as<typename B::scalar_type>;
  { backend.l1_distance(n, in, in) } -> std::same_as<typename B::scalar_type>;
  { backend.max(n, in) } -> std::same_as<typename B::scalar_type>;
  { backend.squared_norm(n, in) } -> std::same_as<typename B::scalar_type>;
};

/// Fused optimiser updates, with PyTorch's semantics (see optim/).
template <class B>
concept BackendOptimizerKernels = requires(B& backend, typename B::scalar_type* out,
                                           const typename B::scalar_type* in, typename B::scalar_type v,
                                           index_t n, bool flag, std::int64_t step, std::span<const index_t> indices) {
  backend.sgd_step(n, out, in, out, v, v, v, v, flag, flag);  // param, grad, momentum buffer, lr, momentum,
                                                             // dampening, weight decay, nesterov, first step
  backend.adam_step(n, out, in, out, out, v, v, v, v, v, flag, step);  // param, grad, m, v, lr, b1, b2, eps,
                                                                      // weight decay, decoupled, step
  backend.adam_step_indexed(indices, out, in, out, out, v, v, v, v, v, flag, step);  // the same at listed entries only
};

/// A tensor backend: everything above.
template <class B>
concept Backend = BackendMemory<B> && BackendBlas<B> && BackendElementwise<B> && BackendReductions<B> &&
                  BackendOptimizerKernels<B>;

/// Optional, beyond the contract: losses and predictions computed where the tensors live. A backend whose memory the
/// host cannot read (a GPU's) provides these so that a training step copies neither logits nor one norm per
/// parameter to the host; layers/cross_entropy.hpp and optim/clip.hpp use them when present and run host loops
/// otherwise. The CPU backend has no need of them. Semantics (cuda_backend implements them):
///   cross_entropy_rows(rows, cols, logits, labels, allowed, scale, gradient): per row r with labels[r] >= 0, the
///     softmax p over the allowed classes (empty list: all), gradient row = (p - onehot(label)) * scale, and the
///     returned double is the sum of log sum exp - z_label over those rows; a row with a negative label does not
///     count and gets a zero gradient row. The caller has checked every label and class.
///   argmax_rows(rows, cols, logits, allowed): the allowed class of each row's highest logit, the lowest on ties.
///   squared_norm_total(arrays, sizes): sum_i |x_i|^2 in double.
template <class B>
concept BackendDeviceLosses = requires(B& backend, const typename B::scalar_type* in, typename B::scalar_type* out,
                                       index_t n, std::span<const index_t> list, double scale,
                                       std::span<const typename B::scalar_type* const> arrays) {
  { backend.cross_entropy_rows(n, n, in, list, list, scale, out) } -> std::same_as<double>;
  { backend.argmax_rows(n, n, in, list) } -> std::same_as<std::vector<index_t>>;
  { backend.squared_norm_total(arrays, list) } -> std::same_as<double>;
};

/// Instantiate (for example `static_assert(check_backend<my_backend>())`) to learn which part of the
/// Backend contract a type misses, one readable message per part.
template <class B>
consteval bool check_backend() {
  static_assert(BackendMemory<B>,
                "treelora: not a Backend: needs scalar_type, buffer_type, name(), is_host_accessible, allocate, "
                "copy_from_host/copy_to_host/copy, fill, fill_uniform, fill_normal, fill_bernoulli, synchronize");
  static_assert(BackendBlas<B>, "treelora: not a Backend: needs gemm, gemm_strided_batched, axpy, scale");
  static_assert(BackendElementwise<B>,
                "treelora: not a Backend: needs map, multiply, multiply_add, add_row_vector, sum_rows, "
                "softmax_rows(_backward), layer_norm_forward/backward, rms_norm_forward/backward, rotate_half, gather_rows, "
                "scatter_add_rows");
  static_assert(BackendReductions<B>,
                "treelora: not a Backend: needs sum, dot, l1_norm, l1_distance, max, squared_norm");
  static_assert(BackendOptimizerKernels<B>, "treelora: not a Backend: needs sgd_step, adam_step and adam_step_indexed");
  return true;
}

}  // namespace treelora
