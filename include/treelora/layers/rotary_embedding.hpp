// treelora/layers/rotary_embedding.hpp: rotary position embedding (RoPE, Su et al. 2021) as Hugging Face's Llama
// computes it: the half-split ("rotate_half") convention on [batch, tokens, heads * head_dim], applied to q and k.
//   inv_freq[i] = theta^(-2 i / head_dim), i < head_dim / 2 (then llama3 scaling when configured)
//   angle = position * inv_freq[i];  x'[i] = x[i] cos - x[i + h] sin,  x'[i + h] = x[i + h] cos + x[i] sin  (h = head_dim / 2)
// Backward is the transpose rotation (the angle negated). Positions are t + offset for token t (the offset is the
// length of a KV cache during generation). The cos and sin tables are computed once in double, then rounded.
// llama3 scaling (rope_scaling {"rope_type": "llama3", factor, low_freq_factor, high_freq_factor,
// original_max_position_embeddings}) changes inv_freq at every sequence length: wavelen = 2 pi / inv_freq; kept when
// wavelen < original / high_freq_factor, divided by factor when wavelen > original / low_freq_factor, else blended with
// s = (original / wavelen - low) / (high - low): inv = (1 - s) inv / factor + s inv.
#pragma once

#include <cmath>
#include <numbers>
#include <optional>
#include <vector>

#include "treelora/layers/layer.hpp"

namespace treelora {

struct rope_llama3_scaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192;
};

/// inv_freq of RoPE for `head_dim` (even) and `theta`, with llama3 scaling when given.
inline std::vector<double> rope_inverse_frequencies(index_t head_dim, double theta,
                                                    const std::optional<rope_llama3_scaling>& scaling = std::nullopt) {
  if (head_dim <= 0 || head_dim % 2 != 0)
    throw_invalid_argument("rope_inverse_frequencies", concat("head_dim ", head_dim, " must be positive and even"));
  if (!(theta > 1) || !std::isfinite(theta))
    throw_invalid_argument("rope_inverse_frequencies", concat("theta ", theta, " must be finite and > 1"));
  std::vector<double> inv(static_cast<std::size_t>(head_dim / 2));
  for (index_t i = 0; i < head_dim / 2; ++i) inv[std::size_t(i)] = std::pow(theta, -2.0 * double(i) / double(head_dim));
  if (!scaling) return inv;
  const auto& s = *scaling;
  if (!(s.factor >= 1) || !(s.low_freq_factor > 0) || !(s.high_freq_factor > s.low_freq_factor) ||
      !(s.original_max_position_embeddings > 0))
    throw_invalid_argument("rope_inverse_frequencies",
                           concat("llama3 scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and a positive "
                                  "original_max_position_embeddings; got ", s.factor, ", ", s.low_freq_factor, ", ",
                                  s.high_freq_factor, ", ", s.original_max_position_embeddings));
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (double& f : inv) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      f /= s.factor;
      continue;
    }
    const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    f = (1 - smooth) * f / s.factor + smooth * f;
  }
  return inv;
}

template <Backend B>
class rotary_embedding {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  /// Tables for positions [0, max_positions).
  rotary_embedding(B& backend, index_t heads, index_t head_dim, index_t max_positions, double theta = 10000.0,
                   const std::optional<rope_llama3_scaling>& scaling = std::nullopt)
      : backend_(&backend), heads_(heads), head_dim_(head_dim) {
    if (heads <= 0 || max_positions <= 0)
      throw_invalid_argument("rotary_embedding", concat("heads ", heads, " and max_positions ", max_positions, " must be positive"));
    inverse_frequencies_ = rope_inverse_frequencies(head_dim, theta, scaling);
    const index_t half = head_dim / 2;
    std::vector<scalar_type> c(static_cast<std::size_t>(max_positions * half)), s(c.size());
    for (index_t p = 0; p < max_positions; ++p)
      for (index_t i = 0; i < half; ++i) {
        const double angle = double(p) * inverse_frequencies_[std::size_t(i)];
        c[std::size_t(p * half + i)] = static_cast<scalar_type>(std::cos(angle));
        s[std::size_t(p * half + i)] = static_cast<scalar_type>(std::sin(angle));
      }
    cos_ = tensor<B>::from_host(backend, shape{max_positions, half}, c);
    sin_ = tensor<B>::from_host(backend, shape{max_positions, half}, s);
  }

  index_t heads() const { return heads_; }
  index_t head_dim() const { return head_dim_; }
  index_t max_positions() const { return cos_.rows(); }
  const std::vector<double>& inverse_frequencies() const { return inverse_frequencies_; }
  /// Token t of the next forward sits at position t + offset (the KV cache's length during generation).
  void set_position_offset(index_t offset) { offset_ = offset; }
  index_t position_offset() const { return offset_; }
  void release_buffers() { output_ = tensor<B>(), input_gradient_ = tensor<B>(); }

  /// x [batch, tokens, heads * head_dim] -> the rotated x.
  const_tensor_view<B> forward(const_tensor_view<B> x) {
    tokens_ = tokens_of(x, "rotary_embedding::forward");
    output_.resize(*backend_, x.shape());
    rotate_half<B>(x, tokens_, heads_, offset_, cos_, sin_, output_);
    return output_;
  }
  /// d(rotated) -> dx: the transpose rotation.
  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (tokens_ == 0) throw_invalid_argument("rotary_embedding::backward", "called before forward");
    input_gradient_.resize(*backend_, dy.shape());
    rotate_half<B>(dy, tokens_, heads_, offset_, cos_, sin_, input_gradient_, /*inverse=*/true);
    return input_gradient_;
  }
  void collect_parameters(parameter_list<B>&, std::string_view) {}

 private:
  index_t tokens_of(const_tensor_view<B> x, std::string_view where) const {
    if (x.shape().rank() != 3 || x.shape()[2] != heads_ * head_dim_)
      throw_invalid_argument(where, concat("input ", x.shape().to_string(), " should be [batch, tokens, ", heads_ * head_dim_, "]"));
    if (x.shape()[1] + offset_ > max_positions())
      throw_invalid_argument(where, concat(x.shape()[1], " tokens at offset ", offset_, " go past the ", max_positions(),
                                           " positions the tables hold"));
    return x.shape()[1];
  }

  B* backend_;
  index_t heads_, head_dim_, tokens_ = 0, offset_ = 0;
  std::vector<double> inverse_frequencies_;
  tensor<B> cos_, sin_, output_, input_gradient_;
};

}  // namespace treelora
