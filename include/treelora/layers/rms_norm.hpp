// treelora/layers/rms_norm.hpp: RMSNorm (Zhang & Sennrich 2019), the Llama family's normalisation, over the last axis:
//   y = x / sqrt(mean(x^2) + eps) * weight          (no mean subtraction, no bias; Hugging Face's LlamaRMSNorm)
// Backward, with xhat = x rstd and g = dy weight:  dx = rstd (g - xhat mean(g xhat));  dweight += sum_rows dy xhat.
// The statistics are computed in the backend's scalar type (float or double: at least the fp32 transformers uses).
#pragma once

#include <cmath>

#include "treelora/layers/layer.hpp"

namespace treelora {

template <Backend B>
class rms_norm {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  rms_norm(B& backend, index_t features, double epsilon = 1e-6)
      : backend_(&backend), features_(features), epsilon_(static_cast<scalar_type>(epsilon)) {
    if (features <= 0) throw_invalid_argument("rms_norm", concat("features ", features, " must be positive"));
    if (!(epsilon > 0) || !std::isfinite(epsilon)) throw_invalid_argument("rms_norm", concat("epsilon ", epsilon, " must be > 0"));
    weight_ = tensor<B>(backend, shape{features});
    weight_.fill(scalar_type(1));
    weight_gradient_ = tensor<B>(backend, shape{features});
  }

  index_t features() const { return features_; }
  tensor<B>& weight() { return weight_; }
  tensor<B>& weight_gradient() { return weight_gradient_; }
  bool trainable() const { return trainable_; }
  void set_trainable(bool trainable) { trainable_ = trainable; }
  /// Frees the forward output, the row statistics and the backward scratch (activation checkpointing).
  void release_buffers() {
    output_ = tensor<B>(), rstd_ = tensor<B>(), input_gradient_ = tensor<B>(), discarded_ = tensor<B>();
    input_ = {};
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    if (x.cols() != features_)
      throw_invalid_argument("rms_norm::forward",
                             concat("input ", x.shape().to_string(), " has last axis ", x.cols(), ", expected ", features_));
    input_ = x;
    output_.resize(*backend_, x.shape());
    rstd_.resize(*backend_, shape{x.rows()});
    rms_norm_forward<B>(x, weight_, epsilon_, output_, rstd_);
    return output_;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (input_.data() == nullptr) throw_invalid_argument("rms_norm::backward", "called before forward");
    if (!(dy.shape() == input_.shape()))
      throw_invalid_argument("rms_norm::backward", concat("output gradient ", dy.shape().to_string(), " does not match output ",
                                                           input_.shape().to_string()));
    input_gradient_.resize(*backend_, input_.shape());
    if (trainable_) {
      rms_norm_backward<B>(input_, weight_, rstd_, dy, input_gradient_, weight_gradient_);
    } else {  // the kernel accumulates the weight's gradient: a frozen RMSNorm sends it to scratch
      discarded_.resize(*backend_, shape{features_});
      discarded_.fill(scalar_type(0));
      rms_norm_backward<B>(input_, weight_, rstd_, dy, input_gradient_, discarded_);
    }
    return input_gradient_;
  }

  /// "weight" (Hugging Face's name: model.layers.<i>.input_layernorm.weight and the like).
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    out.push_back({join_name(prefix, "weight"), &weight_, &weight_gradient_, trainable_});
  }

 private:
  B* backend_;
  index_t features_;
  scalar_type epsilon_;
  bool trainable_ = true;
  tensor<B> weight_, weight_gradient_, output_, rstd_, input_gradient_, discarded_;
  const_tensor_view<B> input_;
};

}  // namespace treelora
