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
#include <string_view>
#include <type_traits>
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

/// What the layered models (vit, llama, gpt2) share: each layer lists its projections as (name, module) pairs,
/// a module has_adapter() and adapter(). These helpers walk them in model order (layer 0's projections in their
/// order, then layer 1's, ...), so a model's adapters() and factorized_adapters() are one line each.
namespace model_detail {

/// The adapter views of `layers`, named "<prefix><i>.<projection>".
template <Backend B, class Layers>
std::vector<adapter_view<B>> adapter_views(Layers& layers, std::string_view prefix) {
  std::vector<adapter_view<B>> out;
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (auto& [name, module] : layers[i].projections()) {
      if (!module->has_adapter()) continue;
      auto& a = module->adapter();
      out.push_back({concat(prefix, i, ".", name), &a.a(), &a.a_gradient(), &a.b(), &a.b_gradient(), &a.gradients_enabled()});
    }
  return out;
}

/// The typed adapters of `layers` in the same order as adapter_views.
template <class Adapter, class Layers>
std::vector<Adapter*> typed_adapters(Layers& layers) {
  std::vector<Adapter*> out;
  for (auto& layer : layers)
    for (auto& [name, module] : layer.projections())
      if (module->has_adapter()) out.push_back(&module->adapter());
  return out;
}

/// Every adapter's checkpoint under the scope "<prefix><i>.<projection>" (io/checkpoint.hpp).
template <class Archive, class Layers>
void checkpoint_adapters(Archive& ar, Layers& layers, std::string_view prefix) {
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (auto& [name, module] : layers[i].projections())
      if (module->has_adapter()) module->adapter().checkpoint(ar.scope(concat(prefix, i, ".", name)));
}

/// The parameters of `all` that are not an adapter's (every adapter parameter's name contains ".lora_").
template <Backend B>
parameter_list<B> without_adapters(const parameter_list<B>& all) {
  parameter_list<B> out;
  for (const auto& p : all)
    if (p.name.find(".lora_") == std::string::npos) out.push_back(p);
  return out;
}

/// A model configuration's adapter configuration: standard LoRA's from config.lora(); another factorisation's
/// default with rank = config.lora_rank when it has a rank.
template <class AdapterConfig, class ModelConfig>
AdapterConfig default_adapter_config(const ModelConfig& config) {
  if constexpr (std::is_same_v<AdapterConfig, decltype(config.lora().lora)>) {
    return config.lora().lora;
  } else {
    AdapterConfig c{};
    if constexpr (requires { c.rank = config.lora_rank; }) c.rank = config.lora_rank;
    return c;
  }
}

}  // namespace model_detail

template <class M>
consteval bool check_model() {
  static_assert(check_layer<M>());
  static_assert(Model<M>,
                "treelora: not a Model: needs backend() returning B&, set_training(bool) and adapters() returning "
                "std::vector<adapter_view<B>> in model order");
  return true;
}

}  // namespace treelora
