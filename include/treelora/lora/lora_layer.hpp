// treelora/lora/lora_layer.hpp: wraps any linear-like layer with a LoRA-style adapter.
//   y = base(x) + adapter(x); the base is frozen (no weight gradient), the adapter trains.
// The factorisation policy decides what the adapter is (standard LoRA by default).
#pragma once

#include <utility>

#include "treelora/lora/factorization.hpp"
#include "treelora/lora/standard_lora.hpp"

namespace treelora {

// (F, not Factorization: nvcc 13 drops the treelora:: qualifier of a concept named like a template parameter.)
template <LinearLike Base, class F = standard_lora>
  requires treelora::Factorization<F, typename Base::backend_type>
class lora_layer {
 public:
  using backend_type = typename Base::backend_type;
  using scalar_type = typename backend_type::scalar_type;
  using adapter_type = typename F::template adapter<backend_type>;
  using config = typename F::config;

  lora_layer(backend_type& backend, Base base, const config& c = {})
      : base_(std::move(base)), adapter_(backend, base_.in_features(), base_.out_features(), c) {
    base_.set_trainable(false);
  }

  Base& base() { return base_; }
  adapter_type& adapter() { return adapter_; }
  index_t in_features() const { return base_.in_features(); }
  index_t out_features() const { return base_.out_features(); }
  bool merged() const { return merged_; }
  /// Training mode enables the adapter's dropout.
  void set_training(bool training) { adapter_.set_training(training); }

  const_tensor_view<backend_type> forward(const_tensor_view<backend_type> x) {
    const_tensor_view<backend_type> y = base_.forward(x);
    if (!merged_) adapter_.forward_add(x, writable(y));  // LinearLike: the base's output buffer is ours to add to
    return y;
  }

  const_tensor_view<backend_type> backward(const_tensor_view<backend_type> dy) {
    if (merged_) throw_invalid_argument("lora_layer::backward", "the adapter is merged into the base weight: unmerge before training");
    const_tensor_view<backend_type> dx = base_.backward(dy);
    adapter_.backward_add(dy, writable(dx));
    return dx;
  }

  /// W0 += delta: inference then costs one GEMM. Merging twice throws.
  void merge() {
    if (merged_) throw_invalid_argument("lora_layer::merge", "already merged");
    adapter_.merge_into(base_.weight(), scalar_type(1));
    merged_ = true;
  }
  void unmerge() {
    if (!merged_) throw_invalid_argument("lora_layer::unmerge", "not merged");
    adapter_.merge_into(base_.weight(), scalar_type(-1));
    merged_ = false;
  }

  /// The base's parameters (frozen) and the adapter's, e.g. "q.weight", "q.lora_a".
  void collect_parameters(parameter_list<backend_type>& out, std::string_view prefix) {
    base_.collect_parameters(out, prefix);
    adapter_.collect_parameters(out, prefix);
  }

 private:
  static tensor_view<backend_type> writable(const_tensor_view<backend_type> v) {
    return {*v.backend(), const_cast<scalar_type*>(v.data()), v.shape()};
  }
  Base base_;
  adapter_type adapter_;
  bool merged_ = false;
};

}  // namespace treelora
