// treelora/models/mlp.hpp: a small MLP classifier with LoRA on every hidden layer: the synthetic benchmark's
// model, and the smallest complete example of the Model concept.
//   h_0 = relu(input(x));  h_{i+1} = relu(lora_i(h_i));  logits = head(h_L)
// input: frozen random projection inputs -> hidden; lora_i: hidden x hidden frozen base + adapter (all adapters
// the same size, as TreeLoRA's [L, D] stack needs); head: trainable.
#pragma once

#include <string>
#include <vector>

#include "treelora/lora/lora_layer.hpp"
#include "treelora/layers/linear.hpp"
#include "treelora/models/model.hpp"

namespace treelora {

struct mlp_config {
  index_t inputs = 16;
  index_t hidden = 64;
  index_t hidden_layers = 2;
  index_t classes = 10;
  index_t lora_rank = 4;
  double lora_alpha = 8;
  std::uint64_t seed = 0;
};

template <Backend B>
class mlp_classifier {
 public:
  using backend_type = B;
  using layer_type = lora_layer<linear<B>>;

  mlp_classifier(B& backend, const mlp_config& c)
      : backend_(&backend), config_(c), input_(backend, c.inputs, c.hidden, true, c.seed + 2000),
        head_(backend, c.hidden, c.classes, true, c.seed + 1000) {
    input_.set_trainable(false);
    if (c.hidden_layers <= 0) throw_invalid_argument("mlp_classifier", concat("hidden_layers ", c.hidden_layers, " <= 0"));
    for (index_t i = 0; i < c.hidden_layers; ++i)
      hidden_.emplace_back(backend, linear<B>(backend, c.hidden, c.hidden, true, c.seed + std::uint64_t(i)),
                           typename layer_type::config{.rank = c.lora_rank, .alpha = c.lora_alpha,
                                                       .seed = c.seed + 100 + std::uint64_t(i)});
    activations_.resize(std::size_t(c.hidden_layers) + 1);
    pre_activations_.resize(std::size_t(c.hidden_layers) + 1);
  }

  B& backend() { return *backend_; }
  const mlp_config& config() const { return config_; }
  linear<B>& head() { return head_; }
  void set_training(bool training) {
    for (auto& layer : hidden_) layer.set_training(training);
  }

  const_tensor_view<B> forward(const_tensor_view<B> x) {
    if (x.shape().rank() < 2 || x.shape().cols() != config_.inputs)
      throw_invalid_argument("mlp_classifier::forward", concat("input ", x.shape().to_string(), " is not a batch of ",
                                                                config_.inputs, " features ([rows, ", config_.inputs, "])"));
    const_tensor_view<B> h = x.reshaped(shape{x.numel() / config_.inputs, config_.inputs});
    for (std::size_t i = 0; i <= hidden_.size(); ++i) {
      pre_activations_[i] = i == 0 ? input_.forward(h) : hidden_[i - 1].forward(h);
      activations_[i].resize(*backend_, pre_activations_[i].shape());
      apply<B>(unary_function::relu, pre_activations_[i], activations_[i]);
      h = activations_[i];
    }
    return head_.forward(h);
  }

  const_tensor_view<B> backward(const_tensor_view<B> dlogits) {
    const_tensor_view<B> g = head_.backward(dlogits);
    for (std::size_t k = hidden_.size() + 1; k-- > 0;) {
      derivative_.resize(*backend_, pre_activations_[k].shape());
      gradient_.resize(*backend_, pre_activations_[k].shape());
      apply<B>(unary_function::relu_derivative, pre_activations_[k], derivative_);
      multiply<B>(derivative_, g, gradient_);  // d relu(z) = relu'(z) * g
      g = k == 0 ? input_.backward(gradient_) : hidden_[k - 1].backward(gradient_);
    }
    return g;
  }

  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    input_.collect_parameters(out, join_name(prefix, "input"));
    for (std::size_t i = 0; i < hidden_.size(); ++i) hidden_[i].collect_parameters(out, join_name(prefix, "hidden." + std::to_string(i)));
    head_.collect_parameters(out, join_name(prefix, "head"));
  }

  /// Checkpoints (io/checkpoint.hpp): the configuration is compared; every weight outside the adapters is saved
  /// (the model is small) and every adapter's state.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("inputs", config_.inputs), ar.expect("hidden", config_.hidden), ar.expect("hidden_layers", config_.hidden_layers);
    ar.expect("classes", head_.out_features()), ar.expect("lora_rank", config_.lora_rank), ar.expect("lora_alpha", config_.lora_alpha);
    ar.expect("seed", config_.seed);
    parameter_list<B> all;
    collect_parameters(all, "");
    for (auto& p : all)
      if (p.name.find(".lora_") == std::string::npos) ar.tensor_of_shape(p.name, *p.value, *backend_, p.value->shape());
    for (std::size_t i = 0; i < hidden_.size(); ++i) hidden_[i].adapter().checkpoint(ar.scope(concat("hidden.", i)));
  }

  std::vector<adapter_view<B>> adapters() {
    std::vector<adapter_view<B>> out;
    for (std::size_t i = 0; i < hidden_.size(); ++i) {
      auto& a = hidden_[i].adapter();
      out.push_back({"hidden." + std::to_string(i), &a.a(), &a.a_gradient(), &a.b(), &a.b_gradient(), &a.gradients_enabled()});
    }
    return out;
  }

 private:
  B* backend_;
  mlp_config config_;
  linear<B> input_;
  std::vector<layer_type> hidden_;
  linear<B> head_;
  std::vector<const_tensor_view<B>> pre_activations_;
  std::vector<tensor<B>> activations_;
  tensor<B> derivative_, gradient_;
};

}  // namespace treelora
