// treelora/models/transformer/causal_attention.hpp: the core of a decoder's self-attention, after the projections:
// causal, grouped-query (GQA), with an optional key/value cache for generation.
//   q [batch, tokens, H hd] (query head h = columns h hd .. (h + 1) hd), k and v [batch, tokens, KV hd]
//   query head h reads key/value head g = h / (H / KV)           (GQA; H = KV is ordinary multi-head attention)
//   S_bh = q_bh k_bg^T / sqrt(hd) + M_b,  P_bh = softmax_rows(S_bh),  c_bh = P_bh v_bg     c [batch, tokens, H hd]
// M_b [tokens, keys] is the additive mask (0 or -inf) the model builds once per forward for every layer
// (causal_attention_mask): it hides later tokens and a sequence's left padding.
// The operands are read in place through (pointer, leading dimension): q, k and v may be separate projections'
// outputs (Llama) or column blocks of one fused projection (GPT-2's c_attn), and the gradients are written the same
// way, so neither model copies heads around. Each product is ONE strided batched gemm over the batch per head.
// With the cache on (generation; no backward), each forward appends its keys and values at the cache's length and
// attends over everything cached: a step costs O(length), not O(length^2).
// Backward: dP = dc v^T;  dv_g = sum over its query heads of P^T dc;  dS = P * (dP - rowsum(dP P));
// dq = dS k / sqrt(hd);  dk_g = sum over its query heads of dS^T q / sqrt(hd).
#pragma once

#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "treelora/layers/layer.hpp"

namespace treelora {

/// Where a batch's tokens sit: `left_padding[b]` leading tokens of sequence b are padding; the cache (when on)
/// already holds `past` tokens of every sequence. Token t of sequence b is at position past + t - left_padding[b]
/// (padding at position 0): a left-padded sequence computes what it computes alone.
struct token_layout {
  index_t batch = 0, tokens = 0, past = 0;
  std::vector<index_t> left_padding;  ///< one per sequence, each < past + tokens

  index_t keys() const { return past + tokens; }
  index_t position(index_t b, index_t t) const {
    const index_t p = past + t - left_padding[std::size_t(b)];
    return p < 0 ? 0 : p;
  }
  /// The position of every token, [batch * tokens] row-major.
  std::vector<index_t> positions() const {
    std::vector<index_t> out(std::size_t(batch * tokens));
    for (index_t b = 0; b < batch; ++b)
      for (index_t t = 0; t < tokens; ++t) out[std::size_t(b * tokens + t)] = position(b, t);
    return out;
  }
};

/// The additive mask [batch, tokens, keys]: key j is visible to token t of sequence b when it is not padding
/// (j >= left_padding[b]) and not later (j <= past + t). A padding token sees only itself, so that no row is empty
/// (its output is never read: its label is ignored and nothing later attends to it).
template <Backend B>
void causal_attention_mask(const token_layout& layout, tensor<B>& mask, B& backend) {
  using scalar_type = typename B::scalar_type;
  const index_t keys = layout.keys();
  std::vector<scalar_type> host(std::size_t(layout.batch * layout.tokens * keys), -std::numeric_limits<scalar_type>::infinity());
  for (index_t b = 0; b < layout.batch; ++b) {
    const index_t pad = layout.left_padding[std::size_t(b)];
    for (index_t t = 0; t < layout.tokens; ++t) {
      scalar_type* row = host.data() + (b * layout.tokens + t) * keys;
      const index_t self = layout.past + t;
      if (self < pad) {
        row[self] = 0;
        continue;
      }
      for (index_t j = pad; j <= self; ++j) row[j] = 0;
    }
  }
  mask = tensor<B>::from_host(backend, shape{layout.batch, layout.tokens, keys}, host);
}

template <Backend B>
class causal_attention {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  /// One operand of the core: a [batch, tokens, heads hd] block read (or written) with leading dimension `ld`.
  struct operand {
    scalar_type* data;
    index_t ld;
  };
  struct const_operand {
    const scalar_type* data;
    index_t ld;
  };

  causal_attention(B& backend, index_t heads, index_t kv_heads, index_t head_dim)
      : backend_(&backend), heads_(heads), kv_heads_(kv_heads), head_dim_(head_dim) {
    if (heads <= 0 || kv_heads <= 0 || head_dim <= 0 || heads % kv_heads != 0)
      throw_invalid_argument("causal_attention", concat(heads, " query heads, ", kv_heads, " key/value heads of width ",
                                                        head_dim, ": the counts must be positive and the query heads a "
                                                        "multiple of the key/value heads"));
  }

  index_t heads() const { return heads_; }
  index_t kv_heads() const { return kv_heads_; }
  index_t head_dim() const { return head_dim_; }
  /// The attention probabilities of the last forward, [batch, heads, tokens, keys].
  const_tensor_view<B> probabilities() const { return probabilities_; }

  /// Turns the key/value cache on for `batch` sequences of up to `capacity` tokens (emptying it), or off
  /// (capacity 0). With the cache on, forward appends and backward is refused.
  void set_cache(index_t batch, index_t capacity) {
    cache_length_ = 0;
    cache_capacity_ = capacity;
    if (capacity <= 0) {
      key_cache_ = tensor<B>(), value_cache_ = tensor<B>();
      cache_capacity_ = 0;
      return;
    }
    key_cache_.resize(*backend_, shape{batch, capacity, kv_heads_ * head_dim_});
    value_cache_.resize(*backend_, key_cache_.shape());
    cache_batch_ = batch;
  }
  bool cache_on() const { return cache_capacity_ > 0; }
  index_t cache_length() const { return cache_length_; }

  void release_buffers() {
    for (tensor<B>* t : {&scores_, &probabilities_, &context_, &probability_gradient_, &score_gradient_}) *t = tensor<B>();
    batch_ = 0;
  }

  /// c [batch, tokens, H hd] from q (ld q.ld) and k, v (ld kv.ld) with the model's mask [batch, tokens, keys].
  const_tensor_view<B> forward(const_operand q, const_operand k, const_operand v, index_t batch, index_t tokens,
                               const_tensor_view<B> mask) {
    const index_t past = cache_on() ? cache_length_ : 0, keys = past + tokens;
    if (batch <= 0 || tokens <= 0 || q.ld < heads_ * head_dim_ || k.ld < kv_heads_ * head_dim_ || v.ld != k.ld)
      throw_invalid_argument("causal_attention::forward",
                             concat("batch ", batch, ", tokens ", tokens, ", leading dimensions ", q.ld, ", ", k.ld, ", ",
                                    v.ld, " do not fit ", heads_, " and ", kv_heads_, " heads of ", head_dim_));
    if (!(mask.shape() == shape{batch, tokens, keys}))
      throw_invalid_argument("causal_attention::forward", concat("mask ", mask.shape().to_string(), " should be [", batch,
                                                                 ", ", tokens, ", ", keys, "]"));
    batch_ = batch, tokens_ = tokens, keys_ = keys;
    q_ = q, k_ = k, v_ = v;
    const scalar_type* key_base = k.data;
    const scalar_type* value_base = v.data;
    index_t key_ld = k.ld, key_stride = tokens * k.ld;
    if (cache_on()) {
      if (batch != cache_batch_ || keys > cache_capacity_)
        throw_invalid_argument("causal_attention::forward",
                               concat(batch, " sequences of ", keys, " tokens do not fit the cache's ", cache_batch_,
                                      " of ", cache_capacity_));
      append_to_cache(k, key_cache_), append_to_cache(v, value_cache_);
      cache_length_ = keys;
      key_base = key_cache_.data(), value_base = value_cache_.data();
      key_ld = kv_heads_ * head_dim_, key_stride = cache_capacity_ * key_ld;
    }
    scores_.resize(*backend_, shape{batch, heads_, tokens, keys});
    probabilities_.resize(*backend_, scores_.shape());
    context_.resize(*backend_, shape{batch, tokens, heads_ * head_dim_});
    const auto scale = static_cast<scalar_type>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
    const index_t group = heads_ / kv_heads_, ldc = heads_ * head_dim_;
    for (index_t h = 0; h < heads_; ++h) {  // S_bh = q_bh k_bg^T / sqrt(hd)
      const index_t g = h / group;
      product(transpose::no, transpose::yes, tokens, keys, head_dim_, scale, q.data + h * head_dim_, q.ld, tokens * q.ld,
              key_base + g * head_dim_, key_ld, key_stride, scores_.data() + h * tokens * keys, keys, heads_ * tokens * keys);
    }
    for (index_t b = 0; b < batch; ++b)  // + M_b, the same for every head
      add_row_vector<B>(mask.reshaped(shape{batch, tokens * keys}).row_range(b, 1).reshaped(shape{tokens * keys}),
                        scores_.view().reshaped(shape{batch, heads_ * tokens * keys}).row_range(b, 1).reshaped(shape{heads_, tokens * keys}));
    softmax_rows<B>(scores_.view().reshaped(shape{batch * heads_ * tokens, keys}),
                    probabilities_.view().reshaped(shape{batch * heads_ * tokens, keys}));
    for (index_t h = 0; h < heads_; ++h) {  // c_bh = P_bh v_bg
      const index_t g = h / group;
      product(transpose::no, transpose::no, tokens, head_dim_, keys, scalar_type(1), probabilities_.data() + h * tokens * keys,
              keys, heads_ * tokens * keys, value_base + g * head_dim_, key_ld, key_stride, context_.data() + h * head_dim_,
              ldc, tokens * ldc);
    }
    return context_;
  }

  /// d c [batch, tokens, H hd] -> dq, dk, dv written (not added) through their operands.
  void backward(const_tensor_view<B> dc, operand dq, operand dk, operand dv) {
    if (batch_ == 0) throw_invalid_argument("causal_attention::backward", "called before forward");
    if (cache_on()) throw_invalid_argument("causal_attention::backward", "the key/value cache is on (generation has no backward)");
    if (!(dc.shape() == context_.shape()))
      throw_invalid_argument("causal_attention::backward",
                             concat("gradient ", dc.shape().to_string(), " does not match the output ", context_.shape().to_string()));
    const index_t tokens = tokens_, keys = keys_, group = heads_ / kv_heads_, ldc = heads_ * head_dim_;
    const index_t score_stride = heads_ * tokens * keys;
    probability_gradient_.resize(*backend_, probabilities_.shape());
    score_gradient_.resize(*backend_, probabilities_.shape());
    const scalar_type one(1), zero(0);
    for (index_t h = 0; h < heads_; ++h) {
      const index_t g = h / group;
      const scalar_type* p = probabilities_.data() + h * tokens * keys;
      // dP_bh = dc_bh v_bg^T
      product(transpose::no, transpose::yes, tokens, keys, head_dim_, one, dc.data() + h * head_dim_, ldc, tokens * ldc,
              v_.data + g * head_dim_, v_.ld, tokens * v_.ld, probability_gradient_.data() + h * tokens * keys, keys,
              score_stride);
      // dv_bg (+)= P_bh^T dc_bh
      product(transpose::yes, transpose::no, keys, head_dim_, tokens, one, p, keys, score_stride, dc.data() + h * head_dim_,
              ldc, tokens * ldc, dv.data + g * head_dim_, dv.ld, tokens * dv.ld, h % group == 0 ? zero : one);
    }
    softmax_rows_backward<B>(probabilities_.view().reshaped(shape{batch_ * heads_ * tokens, keys}),
                             probability_gradient_.view().reshaped(shape{batch_ * heads_ * tokens, keys}),
                             score_gradient_.view().reshaped(shape{batch_ * heads_ * tokens, keys}));
    const auto scale = static_cast<scalar_type>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
    for (index_t h = 0; h < heads_; ++h) {
      const index_t g = h / group;
      const scalar_type* ds = score_gradient_.data() + h * tokens * keys;
      // dq_bh = dS_bh k_bg / sqrt(hd)
      product(transpose::no, transpose::no, tokens, head_dim_, keys, scale, ds, keys, score_stride, k_.data + g * head_dim_,
              k_.ld, tokens * k_.ld, dq.data + h * head_dim_, dq.ld, tokens * dq.ld, zero);
      // dk_bg (+)= dS_bh^T q_bh / sqrt(hd)
      product(transpose::yes, transpose::no, keys, head_dim_, tokens, scale, ds, keys, score_stride, q_.data + h * head_dim_,
              q_.ld, tokens * q_.ld, dk.data + g * head_dim_, dk.ld, tokens * dk.ld, h % group == 0 ? zero : one);
    }
  }

 private:
  /// Rows t of every sequence go to cache row cache_length + t (a scatter of [batch tokens] rows of KV hd).
  void append_to_cache(const_operand x, tensor<B>& cache) {
    const index_t width = kv_heads_ * head_dim_;
    staging_.resize(*backend_, shape{batch_ * tokens_, width});
    // The operand may be strided (a fused projection's columns): then one copy per row, which only the prompt's step
    // of a fused model pays (a generation step has one row per sequence).
    if (x.ld == width) {
      backend_->copy(x.data, staging_.data(), batch_ * tokens_ * width);
    } else {
      for (index_t r = 0; r < batch_ * tokens_; ++r) backend_->copy(x.data + r * x.ld, staging_.data() + r * width, width);
    }
    rows_.resize(std::size_t(batch_ * tokens_));
    for (index_t b = 0; b < batch_; ++b)
      for (index_t t = 0; t < tokens_; ++t) rows_[std::size_t(b * tokens_ + t)] = b * cache_capacity_ + cache_length_ + t;
    // Overwrite: zero the destination rows first so that scatter-add writes them exactly.
    for (index_t b = 0; b < batch_; ++b)
      backend_->fill(cache.data() + (b * cache_capacity_ + cache_length_) * width, tokens_ * width, scalar_type(0));
    scatter_add_rows<B>(staging_, rows_, cache.view().reshaped(shape{cache_batch_ * cache_capacity_, width}));
  }

  void product(transpose ta, transpose tb, index_t m, index_t n, index_t k, scalar_type alpha, const scalar_type* a,
               index_t lda, index_t stride_a, const scalar_type* b, index_t ldb, index_t stride_b, scalar_type* c,
               index_t ldc, index_t stride_c, scalar_type beta = 0) {
    backend_->gemm_strided_batched(ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, batch_);
  }

  B* backend_;
  index_t heads_, kv_heads_, head_dim_;
  index_t batch_ = 0, tokens_ = 0, keys_ = 0;
  const_operand q_{}, k_{}, v_{};
  tensor<B> scores_, probabilities_, context_, probability_gradient_, score_gradient_;
  tensor<B> key_cache_, value_cache_, staging_;
  index_t cache_batch_ = 0, cache_capacity_ = 0, cache_length_ = 0;
  std::vector<index_t> rows_;
};

}  // namespace treelora
