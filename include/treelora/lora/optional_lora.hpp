// treelora/lora/optional_lora.hpp: a linear projection that carries a LoRA-style adapter or not, decided at
// construction. A transformer block is built from these so that the set of adapted modules ("q", "v", ... ) is
// configuration, not type:  y = x W^T + b  (+ the adapter's delta(x) when the adapter is present).
// The adapter is F::adapter<B> for a Factorization F (standard_lora by default; InfLoRA, O-LoRA and DualLoRA plug in
// the same way); this class adds no LoRA maths of its own. The adapter receives the input with its shape, so a
// [batch, tokens, width] input tells a per-sample adapter (DualLoRA's gate) which row is each sample's CLS token.
// Unlike lora_layer, the base is not frozen here: the owner (the ViT) decides which parameters train.
#pragma once

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/layers/linear.hpp"
#include "treelora/lora/standard_lora.hpp"

namespace treelora {

/// Which modules of a transformer get adapters, and how the adapters are configured (their seed is derived
/// per module from `lora.seed`). Config is a factorisation's config (it needs a `seed` member).
template <class Config>
struct basic_lora_targets {
  std::vector<std::string> modules = {"q", "v"};  ///< any of q, k, v, o, fc1, fc2
  Config lora = {};

  static constexpr std::array<std::string_view, 6> known_modules = {"q", "k", "v", "o", "fc1", "fc2"};

  bool contains(std::string_view module) const { return std::find(modules.begin(), modules.end(), module) != modules.end(); }

  /// Throws std::invalid_argument naming an unknown or repeated module (known: the ViT's module names, or `known`).
  void validate(std::string_view where) const { validate(where, known_modules); }
  template <std::size_t N>
  void validate(std::string_view where, const std::array<std::string_view, N>& known) const {
    for (std::size_t i = 0; i < modules.size(); ++i) {
      if (std::find(known.begin(), known.end(), modules[i]) == known.end()) {
        std::string list;
        for (std::string_view k : known) list += (list.empty() ? "" : ", ") + std::string(k);
        throw_invalid_argument(where, concat("unknown LoRA target \"", modules[i], "\" (known: ", list, ")"));
      }
      if (std::find(modules.begin(), modules.begin() + static_cast<std::ptrdiff_t>(i), modules[i]) !=
          modules.begin() + static_cast<std::ptrdiff_t>(i))
        throw_invalid_argument(where, concat("LoRA target \"", modules[i], "\" listed twice"));
    }
  }

  /// The adapter configuration of `module` with its own seed `stream`, or nothing when it is not a target.
  std::optional<Config> for_module(std::string_view module, std::uint64_t stream) const {
    if (!contains(module)) return std::nullopt;
    Config c = lora;
    c.seed = random::mix64(lora.seed ^ random::mix64(stream));
    return c;
  }
};

/// Standard LoRA targets (what vit_config::lora() returns).
using lora_targets = basic_lora_targets<standard_lora::config>;

template <Backend B, class F = standard_lora>
  requires Factorization<F, B>
class optional_lora_linear {
 public:
  using backend_type = B;
  using scalar_type = typename B::scalar_type;
  using factorization = F;
  using adapter_type = typename F::template adapter<B>;

  optional_lora_linear(B& backend, index_t in_features, index_t out_features, std::uint64_t seed,
                       const std::optional<typename F::config>& lora, bool with_bias = true)
      : base_(backend, in_features, out_features, with_bias, seed) {
    if (lora) adapter_.emplace(backend, in_features, out_features, *lora);
  }

  index_t in_features() const { return base_.in_features(); }
  index_t out_features() const { return base_.out_features(); }
  linear<B>& base() { return base_; }
  tensor<B>& weight() { return base_.weight(); }
  bool has_adapter() const { return adapter_.has_value(); }
  /// The adapter; throws std::invalid_argument when this module has none.
  adapter_type& adapter() {
    if (!adapter_) throw_invalid_argument("optional_lora_linear::adapter", "this module has no LoRA adapter");
    return *adapter_;
  }
  /// Frees the forward and backward buffers of the base layer and of the adapter when it can (activation
  /// checkpointing; an adapter without release_buffers keeps its rank-sized scratch).
  void release_buffers() {
    base_.release_buffers();
    if constexpr (requires(adapter_type& a) { a.release_buffers(); })
      if (adapter_) adapter_->release_buffers();
  }
  /// Where the adapter's dropout stream is (0 without an adapter or without dropout), and setting it back.
  std::uint64_t dropout_position() const {
    if constexpr (requires(const adapter_type& a) { a.dropout_position(); })
      if (adapter_) return adapter_->dropout_position();
    return 0;
  }
  void set_dropout_position(std::uint64_t position) {
    if constexpr (requires(adapter_type& a) { a.set_dropout_position(std::uint64_t{}); })
      if (adapter_) adapter_->set_dropout_position(position);
  }
  /// Whether the base weight and bias train (the adapter, when present, always does).
  void set_trainable(bool trainable) { base_.set_trainable(trainable); }
  void set_training(bool training) {
    if (adapter_) adapter_->set_training(training);
  }

  /// y = x W^T + b (+ delta(x))
  const_tensor_view<B> forward(const_tensor_view<B> x) {
    const_tensor_view<B> y = base_.forward(x);
    if (adapter_) adapter_->forward_add(x, writable(y));  // linear is LinearLike: its output buffer may be added to
    return y;
  }

  const_tensor_view<B> backward(const_tensor_view<B> dy) {
    const_tensor_view<B> dx = base_.backward(dy);
    if (adapter_) adapter_->backward_add(dy, writable(dx));
    return dx;
  }

  /// "weight", "bias", then "lora_a", "lora_b" when adapted.
  void collect_parameters(parameter_list<B>& out, std::string_view prefix) {
    base_.collect_parameters(out, prefix);
    if (adapter_) adapter_->collect_parameters(out, prefix);
  }

 private:
  static tensor_view<B> writable(const_tensor_view<B> v) { return {*v.backend(), const_cast<scalar_type*>(v.data()), v.shape()}; }
  linear<B> base_;
  std::optional<adapter_type> adapter_;
};

}  // namespace treelora
