// treelora/strategy/olora.hpp: the O-LoRA strategy (Wang et al. 2023) over a model whose adapters are the olora
// factorisation (e.g. vit<B, olora>): a new LoRA per task, earlier ones frozen and summed at inference, and
//   loss += lambda1 sum_{modules} sum_{i<t} sum |A_i A_t^T|  (+ lambda2 sum (||A_t||_F + ||B_t||_F), off by default)
// added in after_backward (value returned, gradients accumulated into A_t and B_t).
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "treelora/lora/olora.hpp"
#include "treelora/models/vit.hpp"
#include "treelora/strategy/inflora.hpp"

namespace treelora {

#if defined(TREELORA_COMPILED)
// The float CPU ViT with olora adapters is compiled once in treelora::compiled (src/models.cpp; docs/build_time.md).
extern template class optional_lora_linear<cpu_backend<float>, olora>;
extern template class multi_head_attention<cpu_backend<float>, olora>;
extern template class mlp_block<cpu_backend<float>, olora>;
extern template class transformer_block<cpu_backend<float>, olora>;
extern template class vit<cpu_backend<float>, olora>;
#endif

struct olora_options {
  double orthogonality = 0.5;  ///< lambda1 (O-LoRA's scripts use 0.5)
  double l2 = 0.0;             ///< lambda2 on the new LoRA (O-LoRA's scripts use 0)
};

template <Backend B>
class olora_strategy {
 public:
  explicit olora_strategy(olora_options options = {}) : options_(options) {
    if (!(options.orthogonality >= 0) || !(options.l2 >= 0))
      throw_invalid_argument("olora_strategy", concat("lambda1 ", options.orthogonality, " and lambda2 ", options.l2,
                                                      " must be >= 0"));
  }

  std::string name() const { return "O-LoRA"; }

  template <Model M>
  void begin_task(M& model, const training_context& context) {
    if constexpr (!uses_factorization<M, olora>) {
      static_assert(uses_factorization<M, olora>,
                    "olora_strategy needs a model whose LoRA adapters are O-LoRA's (e.g. vit<B, olora>), not another factorisation");
    } else {
      static_assert(std::is_same_v<typename M::adapter_type, olora::adapter<B>>, "olora_strategy: the model's adapters must be olora");
      adapters_ = model.factorized_adapters();  // cached: no allocation per step
      if (adapters_.empty()) throw_invalid_argument("olora_strategy::begin_task", "the model has no O-LoRA adapters");
      for (auto* a : adapters_) a->start_task(context.task);
    }
  }
  template <Model M> void begin_epoch(M&, const training_context&) {}

  template <Model M>
  double after_backward(M&, const training_context&) {
    if constexpr (!uses_factorization<M, olora>) {
    } else {
      double value = 0;
      for (auto* a : adapters_)
        value += a->add_orthogonality_gradient(options_.orthogonality) + a->add_l2_gradient(options_.l2);
      return value;
    }
  }

  template <Model M>
  void end_task(M& model, const training_context&) {
    if constexpr (!uses_factorization<M, olora>) {
    } else {
      state_bytes_ = 0;
      for (auto* a : model.factorized_adapters()) {
        a->finish_task();
        state_bytes_ += a->state_bytes();
      }
    }
  }

  std::size_t state_bytes() const { return state_bytes_; }

  /// Checkpoints (io/checkpoint.hpp): the options are compared (the per-task adapters are the model's).
  template <class Archive, class M>
  void checkpoint(Archive ar, M& model) {
    ar.expect("name", name()), ar.expect("orthogonality", options_.orthogonality), ar.expect("l2", options_.l2);
    ar.value("state_bytes", state_bytes_);
    if constexpr (Archive::loading() && uses_factorization<M, olora>) adapters_ = model.factorized_adapters();
  }

 private:
  olora_options options_;
  std::vector<olora::adapter<B>*> adapters_;
  std::size_t state_bytes_ = 0;
};

}  // namespace treelora
