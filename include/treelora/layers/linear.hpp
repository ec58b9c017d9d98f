// treelora/layers/linear.hpp: the fully connected layer y = x W^T + b (PyTorch's nn.Linear layout).
// x is read as [rows, in] (any leading axes), W is [out, in], b is [out].
#pragma once

#include <cmath>
#include <cstdint>

#include "treelora/layers/layer.hpp"

namespace treelora {

template <Backend B>
class linear {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  /// PyTorch's default initialisation: W and b uniform in +-1/sqrt(in) (Kaiming uniform with a = sqrt 5).
  linear(B& backend, index_t in_features, index_t out_features, bool with_bias = true, std::uint64_t seed = 0)
      : backend_(&backend), in_(in_features), out_(out_features), with_bias_(with_bias) {
    if (in_features <= 0 || out_features <= 0)
      throw_invalid_argument("linear", concat("features must be positive, got in ", in_features, ", out ", out_features));
    weight_ = tensor<B>(backend, shape{out_, in_});
    const auto bound = static_cast<scalar_type>(1.0 / std::sqrt(static_cast<double>(in_)));
    fill_uniform<B>(weight_, -bound, bound, seed);
    if (with_bias_) {
      bias_ = tensor<B>(backend, shape{out_});
      fill_uniform<B>(bias_, -bound, bound, seed, static_cast<std::uint64_t>(out_ * in_));
    }
    set_trainable(true);
  }

  index_t in_features() const { return in_; }
  index_t out_features() const { return out_; }
  tensor<B>& weight() { return weight_; }
  tensor<B>& bias() { return bias_; }
  bool trainable() const { return trainable_; }

  /// A frozen layer computes no weight or bias gradient (only the input gradient).
  /// Frees the forward output and the backward scratch (activation checkpointing: the next forward allocates them).
  void release_buffers() {
    output_ = tensor<B>(), input_gradient_ = tensor<B>();
    input_ = {};
  }
  void set_trainable(bool trainable) {
    trainable_ = trainable;
    if (trainable && weight_gradient_.empty()) {
      weight_gradient_ = tensor<B>(*backend_, weight_.shape());
      if (with_bias_) bias_gradient_ = tensor<B>(*backend_, bias_.shape());
    }
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    if (x.cols() != in_)
      throw_invalid_argument("linear::forward", concat("input ", x.shape().to_string(), " has last axis ", x.cols(),
                                                        ", expected in_features ", in_));
    input_ = x;
    output_.resize(*backend_, x.shape().with_last(out_));
    matmul<B>(x, transpose::no, weight_, transpose::yes, output_);  // y = x W^T
    if (with_bias_) add_row_vector<B>(bias_, output_);
    return output_;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (input_.data() == nullptr) throw_invalid_argument("linear::backward", "called before forward");
    if (dy.rows() != input_.rows() || dy.cols() != out_)
      throw_invalid_argument("linear::backward", concat("output gradient ", dy.shape().to_string(), " does not match output ",
                                                         input_.shape().with_last(out_).to_string()));
    if (trainable_) {
      matmul<B>(dy, transpose::yes, input_, transpose::no, weight_gradient_, 1, 1);  // dW += dy^T x
      if (with_bias_) sum_rows<B>(dy, bias_gradient_, 1);                            // db += sum_rows dy
    }
    input_gradient_.resize(*backend_, input_.shape());
    matmul<B>(dy, transpose::no, weight_, transpose::no, input_gradient_);  // dx = dy W
    return input_gradient_;
  }

  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    out.push_back({join_name(prefix, "weight"), &weight_, &weight_gradient_, trainable_});
    if (with_bias_) out.push_back({join_name(prefix, "bias"), &bias_, &bias_gradient_, trainable_});
  }

 private:
  B* backend_;
  index_t in_, out_;
  bool with_bias_;
  bool trainable_ = true;
  tensor<B> weight_, bias_, weight_gradient_, bias_gradient_;
  tensor<B> output_, input_gradient_;
  const_tensor_view<B> input_;
};

}  // namespace treelora
