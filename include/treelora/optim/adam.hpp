// treelora/optim/adam.hpp: Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019) with PyTorch's semantics:
//   Adam:  g += wd p                      AdamW: p *= 1 - lr wd
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
#pragma once

#include <cmath>
#include <vector>

#include "treelora/layers/layer.hpp"
#include "treelora/optim/sparse_update.hpp"

namespace treelora {

struct adam_options {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  ///< true: AdamW
};

template <Backend B>
class adam {
 public:
  using scalar_type = typename B::scalar_type;

  adam(parameter_list<B> params, adam_options options = {}) : params_(std::move(params)), options_(options) {
    if (!(options.learning_rate >= 0) || !std::isfinite(options.learning_rate))
      throw_invalid_argument("adam", concat("learning rate ", options.learning_rate, " must be finite and >= 0"));
    if (!(options.epsilon > 0) || !std::isfinite(options.epsilon))
      throw_invalid_argument("adam", concat("epsilon ", options.epsilon, " must be finite and > 0 (it keeps the update's "
                                                                         "denominator away from zero)"));
    if (!(options.weight_decay >= 0) || !std::isfinite(options.weight_decay))
      throw_invalid_argument("adam", concat("weight decay ", options.weight_decay, " must be finite and >= 0"));
    if (!(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1))
      throw_invalid_argument("adam", concat("betas (", options.beta1, ", ", options.beta2, ") must be in [0, 1)"));
    for (auto& p : params_) {
      first_.emplace_back(p.trainable ? tensor<B>(p.value->backend(), p.value->shape()) : tensor<B>());
      second_.emplace_back(p.trainable ? tensor<B>(p.value->backend(), p.value->shape()) : tensor<B>());
    }
  }

  void step() {
    ++steps_;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      if (!p.trainable) continue;
      p.value->backend().adam_step(p.value->numel(), p.value->data(), p.gradient->data(), first_[i].data(),
                                   second_[i].data(), static_cast<scalar_type>(options_.learning_rate),
                                   static_cast<scalar_type>(options_.beta1), static_cast<scalar_type>(options_.beta2),
                                   static_cast<scalar_type>(options_.epsilon),
                                   static_cast<scalar_type>(options_.weight_decay), options_.decoupled_weight_decay,
                                   steps_);
    }
  }
  /// One step that skips work: parameters in `mask.skipped` are not touched; those in `mask.sparse` are updated
  /// only at their listed entries (the others' moments stay as they are); the rest get the dense update.
  void step(const sparse_update<B>& mask) {
    ++steps_;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      if (!p.trainable || mask.skips(p.value)) continue;
      const auto s = [](double v) { return static_cast<scalar_type>(v); };
      if (const auto* entries = mask.entries_of(p.value))
        p.value->backend().adam_step_indexed(*entries, p.value->data(), p.gradient->data(), first_[i].data(), second_[i].data(),
                                             s(options_.learning_rate), s(options_.beta1), s(options_.beta2),
                                             s(options_.epsilon), s(options_.weight_decay),
                                             options_.decoupled_weight_decay, steps_);
      else
        p.value->backend().adam_step(p.value->numel(), p.value->data(), p.gradient->data(), first_[i].data(),
                                     second_[i].data(), s(options_.learning_rate), s(options_.beta1), s(options_.beta2),
                                     s(options_.epsilon), s(options_.weight_decay), options_.decoupled_weight_decay, steps_);
    }
  }
  void zero_grad() { zero_gradients(params_); }

  /// Checkpoints (io/checkpoint.hpp) mid-task: the step count and both moments of every trainable parameter, by name.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("learning_rate", options_.learning_rate), ar.expect("beta1", options_.beta1), ar.expect("beta2", options_.beta2);
    ar.expect("epsilon", options_.epsilon), ar.expect("weight_decay", options_.weight_decay);
    ar.expect("decoupled_weight_decay", options_.decoupled_weight_decay);
    ar.value("steps", steps_);
    ar.require(steps_ >= 0, "steps", "must be >= 0");
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (!params_[i].trainable) continue;
      auto& backend = params_[i].value->backend();
      ar.tensor_of_shape(params_[i].name + ".m", first_[i], backend, params_[i].value->shape());
      ar.tensor_of_shape(params_[i].name + ".v", second_[i], backend, params_[i].value->shape());
    }
  }
  void set_learning_rate(double lr) { options_.learning_rate = lr; }
  std::int64_t steps() const { return steps_; }
  const parameter_list<B>& parameters() const { return params_; }

 private:
  parameter_list<B> params_;
  adam_options options_;
  std::vector<tensor<B>> first_, second_;
  std::int64_t steps_ = 0;
};

/// AdamW: Adam with decoupled weight decay (PyTorch's default weight decay 0.01).
template <Backend B>
adam<B> make_adamw(parameter_list<B> params, adam_options options = {.learning_rate = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
                                                                     .epsilon = 1e-8, .weight_decay = 1e-2,
                                                                     .decoupled_weight_decay = true}) {
  options.decoupled_weight_decay = true;
  return adam<B>(std::move(params), options);
}

}  // namespace treelora
