// treelora/tensor/ops.hpp: shape-checked tensor operations over any Backend.
// Each function checks shapes, then calls one backend kernel. A tensor of any rank is read as a
// [rows, cols] matrix (rows = product of the leading axes), which is how layers treat [batch, tokens, d].
// Every mismatch throws std::invalid_argument naming the operation and both shapes.
#pragma once

#include <span>
#include <string_view>

#include "treelora/tensor/tensor.hpp"

namespace treelora {

namespace detail {
template <Backend B, bool C1, bool C2>
void require_same_numel(std::string_view op, const basic_tensor_view<B, C1>& a, const basic_tensor_view<B, C2>& b) {
  if (a.numel() != b.numel())
    throw_invalid_argument(op, concat("sizes differ: ", a.shape().to_string(), " vs ", b.shape().to_string()));
}
template <Backend B, bool C1, bool C2>
void require_same_shape(std::string_view op, const basic_tensor_view<B, C1>& a, const basic_tensor_view<B, C2>& b) {
  if (!(a.shape() == b.shape()))
    throw_invalid_argument(op, concat("shapes differ: ", a.shape().to_string(), " vs ", b.shape().to_string()));
}
}  // namespace detail

/// c = alpha op(a) op(b) + beta c, reading each operand as a [rows, cols] matrix.
template <Backend B>
void matmul(const_tensor_view<B> a, transpose trans_a, const_tensor_view<B> b, transpose trans_b, tensor_view<B> c,
            typename B::scalar_type alpha = 1, typename B::scalar_type beta = 0) {
  const index_t m = trans_a == transpose::no ? a.rows() : a.cols();
  const index_t k = trans_a == transpose::no ? a.cols() : a.rows();
  const index_t kb = trans_b == transpose::no ? b.rows() : b.cols();
  const index_t n = trans_b == transpose::no ? b.cols() : b.rows();
  if (k != kb)
    throw_invalid_argument("matmul", concat("inner dimensions differ: a ", a.shape().to_string(),
                                             trans_a == transpose::yes ? "^T" : "", " vs b ", b.shape().to_string(),
                                             trans_b == transpose::yes ? "^T" : ""));
  if (c.rows() != m || c.cols() != n)
    throw_invalid_argument("matmul", concat("output ", c.shape().to_string(), " should be [", m, ", ", n,
                                             "] for a ", a.shape().to_string(), " and b ", b.shape().to_string()));
  a.backend()->gemm(trans_a, trans_b, m, n, k, alpha, a.data(), a.cols(), b.data(), b.cols(), beta, c.data(), c.cols());
}

/// Batched matmul over rank-3 tensors [batch, rows, cols]: c[i] = alpha op(a[i]) op(b[i]) + beta c[i].
template <Backend B>
void batched_matmul(const_tensor_view<B> a, transpose trans_a, const_tensor_view<B> b, transpose trans_b,
                    tensor_view<B> c, typename B::scalar_type alpha = 1, typename B::scalar_type beta = 0) {
  if (a.shape().rank() != 3 || b.shape().rank() != 3 || c.shape().rank() != 3)
    throw_invalid_argument("batched_matmul", concat("needs rank-3 tensors, got ", a.shape().to_string(), ", ",
                                                     b.shape().to_string(), ", ", c.shape().to_string()));
  const index_t batch = a.shape()[0];
  const index_t ar = a.shape()[1], ac = a.shape()[2], br = b.shape()[1], bc = b.shape()[2];
  const index_t m = trans_a == transpose::no ? ar : ac, k = trans_a == transpose::no ? ac : ar;
  const index_t kb = trans_b == transpose::no ? br : bc, n = trans_b == transpose::no ? bc : br;
  if (b.shape()[0] != batch || c.shape()[0] != batch || k != kb || c.shape()[1] != m || c.shape()[2] != n)
    throw_invalid_argument("batched_matmul", concat("shapes do not agree: a ", a.shape().to_string(), " b ",
                                                     b.shape().to_string(), " c ", c.shape().to_string()));
  a.backend()->gemm_strided_batched(trans_a, trans_b, m, n, k, alpha, a.data(), ac, ar * ac, b.data(), bc, br * bc,
                                    beta, c.data(), n, m * n, batch);
}

/// y += alpha x
template <Backend B>
void axpy(typename B::scalar_type alpha, const_tensor_view<B> x, tensor_view<B> y) {
  detail::require_same_numel("axpy", x, y);
  x.backend()->axpy(x.numel(), alpha, x.data(), y.data());
}
/// x *= alpha
template <Backend B>
void scale(typename B::scalar_type alpha, tensor_view<B> x) {
  x.backend()->scale(x.numel(), alpha, x.data());
}
/// dst = src (same element count)
template <Backend B>
void copy(const_tensor_view<B> src, tensor_view<B> dst) {
  detail::require_same_numel("copy", src, dst);
  src.backend()->copy(src.data(), dst.data(), src.numel());
}
/// out = f(in)
template <Backend B>
void apply(unary_function f, const_tensor_view<B> in, tensor_view<B> out) {
  detail::require_same_numel("apply", in, out);
  in.backend()->map(f, in.numel(), in.data(), out.data());
}
/// out = a * b (elementwise)
template <Backend B>
void multiply(const_tensor_view<B> a, const_tensor_view<B> b, tensor_view<B> out) {
  detail::require_same_numel("multiply", a, b);
  detail::require_same_numel("multiply", a, out);
  a.backend()->multiply(a.numel(), a.data(), b.data(), out.data());
}
/// out += a * b (elementwise)
template <Backend B>
void multiply_add(const_tensor_view<B> a, const_tensor_view<B> b, tensor_view<B> out) {
  detail::require_same_numel("multiply_add", a, b);
  detail::require_same_numel("multiply_add", a, out);
  a.backend()->multiply_add(a.numel(), a.data(), b.data(), out.data());
}
/// y[i, :] += v for every row i of y.
template <Backend B>
void add_row_vector(const_tensor_view<B> v, tensor_view<B> y) {
  if (v.numel() != y.cols())
    throw_invalid_argument("add_row_vector", concat("vector ", v.shape().to_string(), " vs rows of ", y.shape().to_string()));
  v.backend()->add_row_vector(y.rows(), y.cols(), v.data(), y.data());
}
/// out = beta out + sum over rows of x (a column sum: the bias gradient).
template <Backend B>
void sum_rows(const_tensor_view<B> x, tensor_view<B> out, typename B::scalar_type beta = 0) {
  if (out.numel() != x.cols())
    throw_invalid_argument("sum_rows", concat("output ", out.shape().to_string(), " vs columns of ", x.shape().to_string()));
  x.backend()->sum_rows(x.rows(), x.cols(), x.data(), beta, out.data());
}
template <Backend B>
void softmax_rows(const_tensor_view<B> x, tensor_view<B> y) {
  detail::require_same_shape("softmax_rows", x, y);
  x.backend()->softmax_rows(x.rows(), x.cols(), x.data(), y.data());
}
template <Backend B>
void softmax_rows_backward(const_tensor_view<B> y, const_tensor_view<B> dy, tensor_view<B> dx) {
  detail::require_same_shape("softmax_rows_backward", y, dy);
  detail::require_same_shape("softmax_rows_backward", y, dx);
  y.backend()->softmax_rows_backward(y.rows(), y.cols(), y.data(), dy.data(), dx.data());
}
/// LayerNorm over the last axis; mean and rstd get one value per row.
template <Backend B>
void layer_norm_forward(const_tensor_view<B> x, const_tensor_view<B> gamma, const_tensor_view<B> beta,
                        typename B::scalar_type eps, tensor_view<B> y, tensor_view<B> mean, tensor_view<B> rstd) {
  detail::require_same_shape("layer_norm_forward", x, y);
  if (gamma.numel() != x.cols() || beta.numel() != x.cols() || mean.numel() != x.rows() || rstd.numel() != x.rows())
    throw_invalid_argument("layer_norm_forward", concat("x ", x.shape().to_string(), " needs gamma/beta of ", x.cols(),
                                                         " and mean/rstd of ", x.rows(), "; got ", gamma.shape().to_string(),
                                                         ", ", beta.shape().to_string(), ", ", mean.shape().to_string(),
                                                         ", ", rstd.shape().to_string()));
  x.backend()->layer_norm_forward(x.rows(), x.cols(), x.data(), gamma.data(), beta.data(), eps, y.data(), mean.data(),
                                  rstd.data());
}
template <Backend B>
void layer_norm_backward(const_tensor_view<B> x, const_tensor_view<B> gamma, const_tensor_view<B> mean,
                         const_tensor_view<B> rstd, const_tensor_view<B> dy, tensor_view<B> dx,
                         tensor_view<B> dgamma, tensor_view<B> dbeta) {
  detail::require_same_shape("layer_norm_backward", x, dy);
  detail::require_same_shape("layer_norm_backward", x, dx);
  if (gamma.numel() != x.cols() || dgamma.numel() != x.cols() || dbeta.numel() != x.cols() ||
      mean.numel() != x.rows() || rstd.numel() != x.rows())
    throw_invalid_argument("layer_norm_backward", concat("parameter or statistics sizes do not match x ", x.shape().to_string()));
  x.backend()->layer_norm_backward(x.rows(), x.cols(), x.data(), gamma.data(), mean.data(), rstd.data(), dy.data(),
                                   dx.data(), dgamma.data(), dbeta.data());
}
/// Rotary position embedding (half-split) of x [batch, tokens, heads * head_dim] (or [rows, heads * head_dim] with
/// `tokens` given) at positions t + offset, t the token index; cos and sin are [positions, head_dim / 2] tables.
template <Backend B>
void rotate_half(const_tensor_view<B> x, index_t tokens, index_t heads, index_t offset, const_tensor_view<B> cos,
                 const_tensor_view<B> sin, tensor_view<B> out, bool inverse = false) {
  detail::require_same_shape("rotate_half", x, out);
  const index_t width = x.cols(), rows = x.rows();
  if (heads <= 0 || width % heads != 0 || (width / heads) % 2 != 0 || tokens <= 0 || rows % tokens != 0 || offset < 0)
    throw_invalid_argument("rotate_half", concat("x ", x.shape().to_string(), " is not rows of ", heads,
                                                 " heads of an even width over sequences of ", tokens, " tokens (offset ",
                                                 offset, ")"));
  const index_t half = width / heads / 2;
  if (cos.cols() != half || sin.shape() != cos.shape() || cos.rows() < tokens + offset)
    throw_invalid_argument("rotate_half", concat("tables ", cos.shape().to_string(), " and ", sin.shape().to_string(),
                                                 " must be [at least ", tokens + offset, " positions, ", half, "]"));
  x.backend()->rotate_half(rows, tokens, heads, width / heads, offset, cos.data(), sin.data(), x.data(), out.data(), inverse);
}

/// RMSNorm over the last axis; rstd gets one value per row.
template <Backend B>
void rms_norm_forward(const_tensor_view<B> x, const_tensor_view<B> gamma, typename B::scalar_type eps, tensor_view<B> y,
                      tensor_view<B> rstd) {
  detail::require_same_shape("rms_norm_forward", x, y);
  if (gamma.numel() != x.cols() || rstd.numel() != x.rows())
    throw_invalid_argument("rms_norm_forward", concat("x ", x.shape().to_string(), " needs gamma of ", x.cols(), " and rstd of ",
                                                       x.rows(), "; got ", gamma.shape().to_string(), ", ", rstd.shape().to_string()));
  x.backend()->rms_norm_forward(x.rows(), x.cols(), x.data(), gamma.data(), eps, y.data(), rstd.data());
}
template <Backend B>
void rms_norm_backward(const_tensor_view<B> x, const_tensor_view<B> gamma, const_tensor_view<B> rstd,
                       const_tensor_view<B> dy, tensor_view<B> dx, tensor_view<B> dgamma) {
  detail::require_same_shape("rms_norm_backward", x, dy);
  detail::require_same_shape("rms_norm_backward", x, dx);
  if (gamma.numel() != x.cols() || dgamma.numel() != x.cols() || rstd.numel() != x.rows())
    throw_invalid_argument("rms_norm_backward", concat("parameter or statistics sizes do not match x ", x.shape().to_string()));
  x.backend()->rms_norm_backward(x.rows(), x.cols(), x.data(), gamma.data(), rstd.data(), dy.data(), dx.data(), dgamma.data());
}
/// out[i, :] = in[rows[i], :]
template <Backend B>
void gather_rows(const_tensor_view<B> in, std::span<const index_t> rows, tensor_view<B> out) {
  if (out.rows() != static_cast<index_t>(rows.size()) || out.cols() != in.cols())
    throw_invalid_argument("gather_rows", concat(rows.size(), " rows of ", in.shape().to_string(), " into ", out.shape().to_string()));
  for (index_t r : rows)
    if (r < 0 || r >= in.rows()) throw_invalid_argument("gather_rows", concat("row ", r, " outside ", in.shape().to_string()));
  in.backend()->gather_rows(rows, in.cols(), in.data(), out.data());
}
/// out[rows[i], :] += in[i, :]
template <Backend B>
void scatter_add_rows(const_tensor_view<B> in, std::span<const index_t> rows, tensor_view<B> out) {
  if (in.rows() != static_cast<index_t>(rows.size()) || out.cols() != in.cols())
    throw_invalid_argument("scatter_add_rows", concat(in.shape().to_string(), " by ", rows.size(), " rows into ", out.shape().to_string()));
  for (index_t r : rows)
    if (r < 0 || r >= out.rows()) throw_invalid_argument("scatter_add_rows", concat("row ", r, " outside ", out.shape().to_string()));
  in.backend()->scatter_add_rows(rows, in.cols(), in.data(), out.data());
}

template <Backend B> typename B::scalar_type sum(const_tensor_view<B> x) { return x.backend()->sum(x.numel(), x.data()); }
template <Backend B> typename B::scalar_type max(const_tensor_view<B> x) { return x.backend()->max(x.numel(), x.data()); }
template <Backend B> typename B::scalar_type l1_norm(const_tensor_view<B> x) { return x.backend()->l1_norm(x.numel(), x.data()); }
template <Backend B> typename B::scalar_type squared_norm(const_tensor_view<B> x) { return x.backend()->squared_norm(x.numel(), x.data()); }
template <Backend B>
typename B::scalar_type dot(const_tensor_view<B> x, const_tensor_view<B> y) {
  detail::require_same_numel("dot", x, y);
  return x.backend()->dot(x.numel(), x.data(), y.data());
}
template <Backend B>
typename B::scalar_type l1_distance(const_tensor_view<B> x, const_tensor_view<B> y) {
  detail::require_same_numel("l1_distance", x, y);
  return x.backend()->l1_distance(x.numel(), x.data(), y.data());
}

/// Seeded fills: element i gets the value for counter (offset + i) of the seed's stream.
template <Backend B>
void fill_uniform(tensor_view<B> x, typename B::scalar_type lo, typename B::scalar_type hi, std::uint64_t seed,
                  std::uint64_t offset = 0) {
  if (!(lo <= hi)) throw_invalid_argument("fill_uniform", concat("empty range [", lo, ", ", hi, ")"));
  x.backend()->fill_uniform(x.data(), x.numel(), lo, hi, seed, offset);
}
template <Backend B>
void fill_normal(tensor_view<B> x, typename B::scalar_type mean, typename B::scalar_type stddev, std::uint64_t seed,
                 std::uint64_t offset = 0) {
  if (!(stddev >= 0)) throw_invalid_argument("fill_normal", concat("negative standard deviation ", stddev));
  x.backend()->fill_normal(x.data(), x.numel(), mean, stddev, seed, offset);
}

/// Dropout mask: each element is 1 / keep with probability keep, else 0.
template <Backend B>
void fill_dropout_mask(tensor_view<B> x, double keep, std::uint64_t seed, std::uint64_t offset = 0) {
  if (!(keep > 0 && keep <= 1)) throw_invalid_argument("fill_dropout_mask", concat("keep probability ", keep, " outside (0, 1]"));
  using S = typename B::scalar_type;
  x.backend()->fill_bernoulli(x.data(), x.numel(), static_cast<S>(keep), static_cast<S>(1.0 / keep), seed, offset);
}

}  // namespace treelora
