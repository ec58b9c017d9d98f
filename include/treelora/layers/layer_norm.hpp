// treelora/layers/layer_norm.hpp: LayerNorm over the last axis (PyTorch's nn.LayerNorm with elementwise affine).
//   y = (x - mean) / sqrt(var + eps) * gamma + beta,  var biased, per row of the [rows, features] reading of x.
// gamma ("weight", ones) and beta ("bias", zeros) are trainable or frozen; a frozen LayerNorm still returns dx.
#pragma once

#include "treelora/layers/layer.hpp"

namespace treelora {

template <Backend B>
class layer_norm {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;

  layer_norm(B& backend, index_t features, double epsilon = 1e-5)
      : backend_(&backend), features_(features), epsilon_(static_cast<scalar_type>(epsilon)) {
    if (features <= 0) throw_invalid_argument("layer_norm", concat("features must be positive, got ", features));
    if (!(epsilon > 0)) throw_invalid_argument("layer_norm", concat("epsilon ", epsilon, " must be positive"));
    gamma_ = tensor<B>(backend, shape{features});
    gamma_.fill(scalar_type(1));
    beta_ = tensor<B>(backend, shape{features});
    gamma_gradient_ = tensor<B>(backend, shape{features});
    beta_gradient_ = tensor<B>(backend, shape{features});
  }

  index_t features() const { return features_; }
  tensor<B>& gamma() { return gamma_; }
  tensor<B>& beta() { return beta_; }
  tensor<B>& gamma_gradient() { return gamma_gradient_; }
  tensor<B>& beta_gradient() { return beta_gradient_; }
  bool trainable() const { return trainable_; }
  void set_trainable(bool trainable) { trainable_ = trainable; }
  /// Frees the forward output, the row statistics and the backward scratch (activation checkpointing).
  void release_buffers() {
    output_ = tensor<B>(), mean_ = tensor<B>(), rstd_ = tensor<B>(), input_gradient_ = tensor<B>(), discarded_ = tensor<B>();
    input_ = {};
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    if (x.cols() != features_)
      throw_invalid_argument("layer_norm::forward",
                             concat("input ", x.shape().to_string(), " has last axis ", x.cols(), ", expected ", features_));
    input_ = x;
    output_.resize(*backend_, x.shape());
    mean_.resize(*backend_, shape{x.rows()});
    rstd_.resize(*backend_, shape{x.rows()});
    layer_norm_forward<B>(x, gamma_, beta_, epsilon_, output_, mean_, rstd_);
    return output_;
  }

  /// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma; dgamma += sum_rows dy xhat; dbeta += sum_rows dy.
  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    if (input_.data() == nullptr) throw_invalid_argument("layer_norm::backward", "called before forward");
    if (!(dy.shape() == input_.shape()))
      throw_invalid_argument("layer_norm::backward", concat("output gradient ", dy.shape().to_string(),
                                                             " does not match output ", input_.shape().to_string()));
    input_gradient_.resize(*backend_, input_.shape());
    if (trainable_) {
      layer_norm_backward<B>(input_, gamma_, mean_, rstd_, dy, input_gradient_, gamma_gradient_, beta_gradient_);
    } else {
      // The kernel always accumulates parameter gradients: a frozen LayerNorm sends them to scratch.
      discarded_.resize(*backend_, shape{2, features_});
      discarded_.fill(scalar_type(0));
      layer_norm_backward<B>(input_, gamma_, mean_, rstd_, dy, input_gradient_, discarded_.view().row_range(0, 1),
                             discarded_.view().row_range(1, 1));
    }
    return input_gradient_;
  }

  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    out.push_back({join_name(prefix, "weight"), &gamma_, &gamma_gradient_, trainable_});
    out.push_back({join_name(prefix, "bias"), &beta_, &beta_gradient_, trainable_});
  }

 private:
  B* backend_;
  index_t features_;
  scalar_type epsilon_;
  bool trainable_ = true;
  tensor<B> gamma_, beta_, gamma_gradient_, beta_gradient_;
  tensor<B> output_, mean_, rstd_, input_gradient_, discarded_;
  const_tensor_view<B> input_;
};

}  // namespace treelora
