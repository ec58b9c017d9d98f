// treelora/optim/sgd.hpp: stochastic gradient descent with momentum, PyTorch's torch.optim.SGD semantics:
//   d = g + wd p;  buf = d (first step) or momentum buf + (1 - dampening) d;  d = nesterov ? d + momentum buf : buf
//   p -= lr d
#pragma once

#include <vector>

#include "treelora/layers/layer.hpp"

namespace treelora {

struct sgd_options {
  double learning_rate = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

template <Backend B>
class sgd {
 public:
  using scalar_type = typename B::scalar_type;

  sgd(parameter_list<B> params, sgd_options options = {}) : params_(std::move(params)), options_(options) {
    if (!(options.learning_rate >= 0)) throw_invalid_argument("sgd", concat("learning rate ", options.learning_rate, " < 0"));
    if (options.nesterov && (options.momentum <= 0 || options.dampening != 0))
      throw_invalid_argument("sgd", "Nesterov momentum needs momentum > 0 and dampening = 0");
    for (auto& p : params_)
      momentum_.emplace_back(p.trainable && options.momentum != 0 ? tensor<B>(p.value->backend(), p.value->shape())
                                                                  : tensor<B>());
  }

  void step() {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      if (!p.trainable) continue;
      p.value->backend().sgd_step(p.value->numel(), p.value->data(), p.gradient->data(),
                                  momentum_[i].empty() ? nullptr : momentum_[i].data(),
                                  static_cast<scalar_type>(options_.learning_rate), static_cast<scalar_type>(options_.momentum),
                                  static_cast<scalar_type>(options_.dampening),
                                  static_cast<scalar_type>(options_.weight_decay), options_.nesterov, steps_ == 0);
    }
    ++steps_;
  }
  void zero_grad() { zero_gradients(params_); }
  void set_learning_rate(double lr) { options_.learning_rate = lr; }
  const parameter_list<B>& parameters() const { return params_; }

  /// Checkpoints (io/checkpoint.hpp) mid-task: the step count and the momentum buffers, by parameter name.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("learning_rate", options_.learning_rate), ar.expect("momentum", options_.momentum);
    ar.expect("dampening", options_.dampening), ar.expect("weight_decay", options_.weight_decay);
    ar.expect("nesterov", options_.nesterov);
    ar.value("steps", steps_);
    ar.require(steps_ >= 0, "steps", "must be >= 0");
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (!momentum_[i].empty())
        ar.tensor_of_shape(params_[i].name + ".momentum", momentum_[i], params_[i].value->backend(), params_[i].value->shape());
  }

 private:
  parameter_list<B> params_;
  sgd_options options_;
  std::vector<tensor<B>> momentum_;
  std::int64_t steps_ = 0;
};

}  // namespace treelora
