// treelora/layers/embedding.hpp: a token embedding table (PyTorch's nn.Embedding): row ids[i] of the weight
// [vocabulary, width] is output row i. Forward is a gather; backward scatters the output gradient back onto the rows
// it read (ids that repeat accumulate), so the weight's gradient is exact and nothing is returned for the ids.
// The same table may serve as a tied output head (logits = h W^T): the owning model multiplies by weight() directly
// and adds into weight_gradient().
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "treelora/layers/layer.hpp"

namespace treelora {

template <Backend B>
class embedding {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  /// Weights N(0, stddev) from `seed` (Hugging Face's initializer_range is 0.02).
  embedding(B& backend, index_t vocabulary, index_t width, std::uint64_t seed = 0, double stddev = 0.02)
      : backend_(&backend) {
    if (vocabulary <= 0 || width <= 0)
      throw_invalid_argument("embedding", concat("vocabulary ", vocabulary, " and width ", width, " must be positive"));
    weight_ = tensor<B>(backend, shape{vocabulary, width});
    fill_normal<B>(weight_, 0, static_cast<scalar_type>(stddev), seed);
    set_trainable(true);
  }

  index_t vocabulary() const { return weight_.rows(); }
  index_t width() const { return weight_.cols(); }
  tensor<B>& weight() { return weight_; }
  tensor<B>& weight_gradient() { return weight_gradient_; }
  bool trainable() const { return trainable_; }
  void set_trainable(bool trainable) {
    trainable_ = trainable;
    if (trainable && weight_gradient_.empty()) weight_gradient_ = tensor<B>(*backend_, weight_.shape());
  }
  void release_buffers() { output_ = tensor<B>(); }

  /// ids (each in [0, vocabulary)) -> [ids.size(), width]. The ids are copied: the caller's span may go away.
  const_tensor_view<B> forward(std::span<const index_t> ids) {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= vocabulary())
        throw_invalid_argument("embedding::forward", concat("id ", ids[i], " at position ", i, " is outside the vocabulary [0, ",
                                                            vocabulary(), ")"));
    ids_.assign(ids.begin(), ids.end());
    output_.resize(*backend_, shape{static_cast<index_t>(ids.size()), width()});
    gather_rows<B>(weight_, ids_, output_);
    return output_;
  }

  /// Adds the output gradient [ids, width] into the rows of the weight's gradient (when the table trains).
  void backward(const_tensor_view<B> dy) {
    if (dy.rows() != static_cast<index_t>(ids_.size()) || dy.cols() != width())
      throw_invalid_argument("embedding::backward", concat("output gradient ", dy.shape().to_string(), " does not match [",
                                                           ids_.size(), ", ", width(), "]"));
    if (trainable_) scatter_add_rows<B>(dy, ids_, weight_gradient_);
  }

  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    out.push_back({join_name(prefix, "weight"), &weight_, &weight_gradient_, trainable_});
  }

 private:
  B* backend_;
  bool trainable_ = true;
  tensor<B> weight_, weight_gradient_, output_;
  std::vector<index_t> ids_;
};

}  // namespace treelora
