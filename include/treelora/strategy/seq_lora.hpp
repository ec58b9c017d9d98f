// treelora/strategy/seq_lora.hpp: SeqLoRA, the sequential fine-tuning baseline: one set of LoRA adapters
// trained through all tasks with no regulariser and no per-task state (TreeLoRA's reference adapter set-up
// without the tree). The joint-training upper bound runs this strategy through run_joint.
#pragma once

#include <string>

#include "treelora/strategy/strategy.hpp"

namespace treelora {

class seq_lora {
 public:
  std::string name() const { return "SeqLoRA"; }
  template <class M> void begin_task(M&, const training_context&) {}
  template <class M> void begin_epoch(M&, const training_context&) {}
  template <class M> double after_backward(M&, const training_context&) { return 0.0; }
  template <class M> void end_task(M&, const training_context&) {}
  std::size_t state_bytes() const { return 0; }
  /// Checkpoints (io/checkpoint.hpp): no state of its own (the model's adapters are the model's).
  template <class Archive, class M> void checkpoint(Archive ar, M&) { ar.expect("name", name()); }
};

}  // namespace treelora
