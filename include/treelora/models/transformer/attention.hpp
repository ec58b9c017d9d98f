// treelora/models/transformer/attention.hpp: multi-head self-attention (Vaswani et al. 2017) over x [batch, tokens, width].
//   q = x Wq^T + bq, k = x Wk^T + bk, v = x Wv^T + bv     (each projection may carry a LoRA adapter)
//   per batch element b and head h (columns h dh .. (h + 1) dh of q, k, v; dh = width / heads):
//     S_bh = q_bh k_bh^T / sqrt(dh),  P_bh = softmax_rows(S_bh),  c_bh = P_bh v_bh
//   y = c Wo^T + bo
// The heads are read in place: head h of q is a [tokens, dh] matrix with leading dimension `width`, and the batch
// axis is a constant stride of tokens * width, so each product is ONE strided batched gemm over the batch per head,
// with no permute copies. Scores and probabilities are kept as [batch, heads, tokens, tokens].
#pragma once

#include <cmath>

#include "treelora/lora/optional_lora.hpp"

namespace treelora {

template <Backend B, class F = standard_lora>
class multi_head_attention {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using projection = optional_lora_linear<B, F>;
  using targets = basic_lora_targets<typename F::config>;

  /// Projections are seeded from `seed`; LoRA adapters go on the targets among "q", "k", "v", "o".
  multi_head_attention(B& backend, index_t width, index_t heads, std::uint64_t seed = 0, const targets& lora = {{}, {}})
      : backend_(&backend),
        width_(width),
        heads_(heads),
        head_width_(heads > 0 ? width / heads : 0),
        q_(backend, width, width, random::mix64(seed + 1), lora.for_module("q", seed * 8 + 1)),
        k_(backend, width, width, random::mix64(seed + 2), lora.for_module("k", seed * 8 + 2)),
        v_(backend, width, width, random::mix64(seed + 3), lora.for_module("v", seed * 8 + 3)),
        o_(backend, width, width, random::mix64(seed + 4), lora.for_module("o", seed * 8 + 4)) {
    if (heads <= 0 || width % heads != 0)
      throw_invalid_argument("multi_head_attention", concat("width ", width, " is not divisible into ", heads, " heads"));
  }

  index_t width() const { return width_; }
  index_t heads() const { return heads_; }
  projection& q() { return q_; }
  projection& k() { return k_; }
  projection& v() { return v_; }
  projection& o() { return o_; }
  /// The attention probabilities P of the last forward, [batch, heads, tokens, tokens].
  const_tensor_view<B> probabilities() const { return probabilities_; }

  void set_trainable(bool trainable) {
    for (projection* p : {&q_, &k_, &v_, &o_}) p->set_trainable(trainable);
  }
  /// Frees every activation and backward buffer (activation checkpointing: the next forward allocates them again).
  void release_buffers() {
    for (projection* p : {&q_, &k_, &v_, &o_}) p->release_buffers();
    for (tensor<B>* t : {&scores_, &probabilities_, &context_, &probability_gradient_, &score_gradient_, &q_gradient_,
                         &k_gradient_, &v_gradient_, &input_gradient_})
      *t = tensor<B>();
    q_out_ = k_out_ = v_out_ = {};
  }
  void set_training(bool training) {
    for (projection* p : {&q_, &k_, &v_, &o_}) p->set_training(training);
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    if (x.shape().rank() != 3 || x.shape()[2] != width_)
      throw_invalid_argument("multi_head_attention::forward",
                             concat("input ", x.shape().to_string(), " should be [batch, tokens, ", width_, "]"));
    batch_ = x.shape()[0];
    tokens_ = x.shape()[1];
    q_out_ = q_.forward(x);
    k_out_ = k_.forward(x);
    v_out_ = v_.forward(x);
    scores_.resize(*backend_, shape{batch_, heads_, tokens_, tokens_});
    probabilities_.resize(*backend_, scores_.shape());
    context_.resize(*backend_, x.shape());
    const auto scale = static_cast<scalar_type>(1.0 / std::sqrt(static_cast<double>(head_width_)));
    for (index_t h = 0; h < heads_; ++h)  // S_bh = q_bh k_bh^T / sqrt(dh)
      head_product(transpose::no, transpose::yes, tokens_, tokens_, head_width_, scale, q_out_.data() + h * head_width_,
                   width_, token_stride(), k_out_.data() + h * head_width_, width_, token_stride(),
                   scores_.data() + h * tokens_ * tokens_, tokens_, score_stride());
    softmax_rows<B>(scores_, probabilities_);
    for (index_t h = 0; h < heads_; ++h)  // c_bh = P_bh v_bh
      head_product(transpose::no, transpose::no, tokens_, head_width_, tokens_, scalar_type(1),
                   probabilities_.data() + h * tokens_ * tokens_, tokens_, score_stride(),
                   v_out_.data() + h * head_width_, width_, token_stride(), context_.data() + h * head_width_, width_,
                   token_stride());
    return o_.forward(context_);
  }

  /// dc = do Wo;  dP = dc v^T;  dv = P^T dc;  dS = softmax'(P) dP;  dq = dS k / sqrt(dh);  dk = dS^T q / sqrt(dh);
  /// dx = dq Wq + dk Wk + dv Wv (plus the adapters' terms).
  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (batch_ == 0) throw_invalid_argument("multi_head_attention::backward", "called before forward");
    if (dy.rows() != batch_ * tokens_ || dy.cols() != width_)
      throw_invalid_argument("multi_head_attention::backward",
                             concat("output gradient ", dy.shape().to_string(), " does not match output [", batch_, ", ",
                                    tokens_, ", ", width_, "]"));
    const_tensor_view<B> context_gradient = o_.backward(dy);
    const shape activations{batch_, tokens_, width_};
    probability_gradient_.resize(*backend_, probabilities_.shape());
    score_gradient_.resize(*backend_, probabilities_.shape());
    q_gradient_.resize(*backend_, activations);
    k_gradient_.resize(*backend_, activations);
    v_gradient_.resize(*backend_, activations);
    const scalar_type one(1), zero(0);
    for (index_t h = 0; h < heads_; ++h) {
      const index_t column = h * head_width_;
      scalar_type* probability_gradient = probability_gradient_.data() + h * tokens_ * tokens_;
      const scalar_type* probability = probabilities_.data() + h * tokens_ * tokens_;
      // dP_bh = dc_bh v_bh^T
      head_product(transpose::no, transpose::yes, tokens_, tokens_, head_width_, one, context_gradient.data() + column,
                   width_, token_stride(), v_out_.data() + column, width_, token_stride(), probability_gradient, tokens_,
                   score_stride(), zero);
      // dv_bh = P_bh^T dc_bh
      head_product(transpose::yes, transpose::no, tokens_, head_width_, tokens_, one, probability, tokens_,
                   score_stride(), context_gradient.data() + column, width_, token_stride(), v_gradient_.data() + column,
                   width_, token_stride(), zero);
    }
    softmax_rows_backward<B>(probabilities_, probability_gradient_, score_gradient_);  // dS = P * (dP - rowsum(dP P))
    const auto scale = static_cast<scalar_type>(1.0 / std::sqrt(static_cast<double>(head_width_)));
    for (index_t h = 0; h < heads_; ++h) {
      const index_t column = h * head_width_;
      const scalar_type* score_gradient = score_gradient_.data() + h * tokens_ * tokens_;
      // dq_bh = dS_bh k_bh / sqrt(dh)
      head_product(transpose::no, transpose::no, tokens_, head_width_, tokens_, scale, score_gradient, tokens_,
                   score_stride(), k_out_.data() + column, width_, token_stride(), q_gradient_.data() + column, width_,
                   token_stride(), zero);
      // dk_bh = dS_bh^T q_bh / sqrt(dh)
      head_product(transpose::yes, transpose::no, tokens_, head_width_, tokens_, scale, score_gradient, tokens_,
                   score_stride(), q_out_.data() + column, width_, token_stride(), k_gradient_.data() + column, width_,
                   token_stride(), zero);
    }
    input_gradient_.resize(*backend_, activations);
    copy<B>(q_.backward(q_gradient_), input_gradient_);
    axpy<B>(one, k_.backward(k_gradient_), input_gradient_);
    axpy<B>(one, v_.backward(v_gradient_), input_gradient_);
    return input_gradient_;
  }

  /// "q.weight", "q.bias", "q.lora_a", ..., "o.bias".
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    q_.collect_parameters(out, join_name(prefix, "q"));
    k_.collect_parameters(out, join_name(prefix, "k"));
    v_.collect_parameters(out, join_name(prefix, "v"));
    o_.collect_parameters(out, join_name(prefix, "o"));
  }

 private:
  index_t token_stride() const { return tokens_ * width_; }
  index_t score_stride() const { return heads_ * tokens_ * tokens_; }
  /// One gemm per batch element b: C_b = alpha op(A_b) op(B_b) + beta C_b, operand b at base + b * stride.
  void head_product(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, scalar_type alpha,
                    const scalar_type* a, index_t lda, index_t stride_a, const scalar_type* b, index_t ldb,
                    index_t stride_b, scalar_type* c, index_t ldc, index_t stride_c, scalar_type beta = 0) {
    backend_->gemm_strided_batched(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                                   stride_c, batch_);
  }

  B* backend_;
  index_t width_, heads_, head_width_;
  index_t batch_ = 0, tokens_ = 0;
  projection q_, k_, v_, o_;
  const_tensor_view<B> q_out_, k_out_, v_out_;
  tensor<B> scores_, probabilities_, context_, probability_gradient_, score_gradient_, q_gradient_, k_gradient_, v_gradient_, input_gradient_;
};

}  // namespace treelora
