// treelora/models/model.hpp: the Model concept, what the continual-learning engine needs of a network.
//
// A model is a Layer from inputs to class logits [rows, classes] that also
//   backend()           the backend its tensors live on,
//   set_training(bool)  switches train-only behaviour (dropout),
//   adapters()          lists its LoRA adapters IN MODEL ORDER (block0.q, block0.v, block1.q, ...): this order
//                       is the module index l of TreeLoRA (docs/treelora.md) (L = adapters().size()).
// The engine reads and regularises the adapters through these views; it never needs the model's type.
#pragma once

#include <string>
#include <vector>

#include "treelora/layers/layer.hpp"

namespace treelora {

/// One LoRA adapter of a model: A [r, in] and B [out, r] with their gradients.
template <Backend B>
struct adapter_view {
  std::string name;
  tensor<B>* a = nullptr;
  tensor<B>* a_gradient = nullptr;
  tensor<B>* b = nullptr;
  tensor<B>* b_gradient = nullptr;
  bool* gradients_enabled = nullptr;  ///< when set: false makes the adapter skip its A/B gradient GEMMs
};

template <class M>
concept Model = Layer<M> && requires(M& model, bool training) {
  { model.backend() } -> std::same_as<typename M::backend_type&>;
  model.set_training(training);
  { model.adapters() } -> std::convertible_to<std::vector<adapter_view<typename M::backend_type>>>;
};

template <class M>
consteval bool check_model() {
  static_assert(check_layer<M>());
  static_assert(Model<M>,
                "treelora: not a Model: needs backend() returning B&, set_training(bool) and adapters() returning "
                "std::vector<adapter_view<B>> in model order");
  return true;
}

}  // namespace treelora
