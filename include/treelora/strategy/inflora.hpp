// treelora/strategy/inflora.hpp: the InfLoRA strategy (Liang & Li, CVPR 2024) over a model whose adapters are the
// inflora factorisation (e.g. vit<B, inflora> with targets {"k", "v"}, as the paper adapts W_k and W_v).
//   task start: one no-grad pass over the task's training set accumulates each adapter's input covariance C_t;
//               A_t = top-r left singular vectors of (I - M M^T) C_t, transposed, divided by sqrt 3; B_t = 0
//   training:   only B_t and the task's head rows train (the runner's task-local cross-entropy)
//   task end:   B_t A_t is frozen (merged); DualGPM grows with eps_t = eps_b + (1 - eps_b) t / T from the
//               covariance collected AFTER training (a second pass, as the released code does; option)
// Inference sums every branch (one merged delta) and takes the argmax over the concatenated heads (the runner).
// Also: the feature-collection pass and the FactorizedModel concept the DualLoRA and O-LoRA strategies share.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "treelora/lora/inflora.hpp"
#include "treelora/linalg/dense.hpp"
#include "treelora/models/vit.hpp"
#include "treelora/memory/gpm.hpp"
#include "treelora/strategy/runner.hpp"

namespace treelora {

#if defined(TREELORA_COMPILED)
// The float CPU ViT with inflora adapters is compiled once in treelora::compiled (src/models.cpp; docs/build_time.md).
extern template class optional_lora_linear<cpu_backend<float>, inflora>;
extern template class multi_head_attention<cpu_backend<float>, inflora>;
extern template class mlp_block<cpu_backend<float>, inflora>;
extern template class transformer_block<cpu_backend<float>, inflora>;
extern template class vit<cpu_backend<float>, inflora>;
#endif

namespace detail {
/// One no-grad forward pass over `set` in evaluation mode (what the adapters' collectors observe).
template <Model M>
void feature_pass(M& model, const labelled_set& set, index_t batch_size) {
  using B = typename M::backend_type;
  model.set_training(false);
  tensor<B> x;
  std::vector<index_t> labels, rows;
  std::vector<typename B::scalar_type> staging;
  for (index_t first = 0; first < set.size(); first += batch_size) {
    const index_t n = std::min(batch_size, set.size() - first);
    rows.resize(std::size_t(n));
    std::iota(rows.begin(), rows.end(), first);
    load_batch(set, rows, x, labels, staging, model.backend());
    (void)model.forward(x);
  }
  model.set_training(true);
}

/// The top-`rank` left singular vectors of (I - M M^T) C as rows [rank, d], projected once more so that directions
/// with zero singular value (a full memory) stay orthogonal to M too.
inline Eigen::MatrixXd projected_top_directions(const gpm_memory& memory, const Eigen::MatrixXd& covariance, index_t rank) {
  const calling_thread_only serial;  // the SVD's products, threaded by Eigen, would round by the thread count
  const Eigen::MatrixXd projected = memory.project_out(covariance);
  const Eigen::MatrixXd top = memory.project_out(linalg::thin_svd_left(projected).u.leftCols(rank));
  return top.transpose();
}
}  // namespace detail

namespace detail {
/// Checkpoints one GPM memory per adapter (InfLoRA's and DualLoRA's): "memories", then "memory.<i>". Loading
/// builds them for the model's adapters first (none before the first task). Returns their number.
template <class Archive, class M>
std::size_t checkpoint_memories(Archive& ar, M& model, std::vector<gpm_memory>& memories, const gpm_options& options) {
  std::size_t n = memories.size();
  ar.count("memories", n);
  if constexpr (Archive::loading()) {
    memories.clear();
    if (n > 0) {
      const auto adapters = model.factorized_adapters();
      ar.require(n == adapters.size(), "memories", concat("must be one per adapter (", adapters.size(), ")"));
      for (auto* a : adapters) memories.emplace_back(a->in_features(), options);
    }
  }
  for (std::size_t i = 0; i < n; ++i) memories[i].checkpoint(ar.scope(concat("memory.", i)));
  return n;
}
}  // namespace detail

struct inflora_options {
  double threshold_base = 0.95;       ///< eps_b of the schedule (0.98 for ImageNet-R in the paper)
  gpm_options memory = {};            ///< DualGPM storage, energy rule (representation; InfLoRA's code: covariance_spectrum)
  bool memory_after_training = true;  ///< true: a second pass after training feeds DualGPM (released code);
                                      ///< false: reuse the pre-training covariance (one pass per task)
  double a_scale = 1.0 / std::sqrt(3.0);  ///< A_t = scale * U_r^T (InfLoRA divides by sqrt 3)
  index_t collection_batch_size = 256;
};

class inflora_strategy {
 public:
  /// The passes over a task's training set go through the runner (training_context::forward_training_set), so any
  /// stream the runner reads works.
  explicit inflora_strategy(inflora_options options = {}) : options_(options) {
    if (options.collection_batch_size <= 0)
      throw_invalid_argument("inflora_strategy", concat("collection batch size ", options.collection_batch_size, " <= 0"));
  }
  /// `stream`: the classification stream the runner trains on, read when a hook is called outside a runner.
  explicit inflora_strategy(const task_stream& stream, inflora_options options = {}) : inflora_strategy(options) {
    stream_ = &stream;
  }

  std::string name() const { return "InfLoRA"; }
  const std::vector<gpm_memory>& memories() const { return memories_; }

  template <Model M>
  void begin_task(M& model, const training_context& context) {
    if constexpr (!uses_factorization<M, inflora>) {
      static_assert(uses_factorization<M, inflora>,
                    "inflora_strategy needs a model whose LoRA adapters are InfLoRA's (e.g. vit<B, inflora>), not another factorisation");
    } else {
      auto adapters = model.factorized_adapters();
      if (adapters.empty()) throw_invalid_argument("inflora_strategy::begin_task", "the model has no InfLoRA adapters");
      if (memories_.empty())
        for (auto* a : adapters) memories_.emplace_back(a->in_features(), options_.memory);
      collect(model, context);
      covariances_.clear();
      for (std::size_t i = 0; i < adapters.size(); ++i) {
        covariances_.push_back(adapters[i]->covariance().to_host());
        adapters[i]->start_task(options_.a_scale *
                                detail::projected_top_directions(memories_[i], covariances_.back(), adapters[i]->rank()));
      }
    }
  }

  template <Model M> void begin_epoch(M&, const training_context&) {}
  template <Model M> double after_backward(M&, const training_context&) { return 0.0; }

  template <Model M>
  void end_task(M& model, const training_context& context) {
    if constexpr (!uses_factorization<M, inflora>) {
    } else {
      auto adapters = model.factorized_adapters();
      for (auto* a : adapters) a->finish_task();
      if (options_.memory_after_training) collect(model, context);
      const double threshold = gpm_threshold(context.task, context.tasks, options_.threshold_base);
      for (std::size_t i = 0; i < adapters.size(); ++i)
        memories_[i].update_from_covariance(options_.memory_after_training ? adapters[i]->covariance().to_host() : covariances_[i],
                                            threshold);
      covariances_.clear();
      state_bytes_ = 0;
      for (std::size_t i = 0; i < adapters.size(); ++i) state_bytes_ += memories_[i].bytes() + adapters[i]->state_bytes();
    }
  }

  std::size_t state_bytes() const { return state_bytes_; }

  /// Checkpoints between tasks (io/checkpoint.hpp): the DualGPM memories (the adapters' branches are the model's).
  template <class Archive, Model M>
  void checkpoint(Archive ar, M& model) {
    ar.expect("name", name()), ar.expect("threshold_base", options_.threshold_base);
    ar.expect("memory_after_training", options_.memory_after_training), ar.expect("a_scale", options_.a_scale);
    ar.expect("collection_batch_size", options_.collection_batch_size);
    detail::checkpoint_memories(ar, model, memories_, options_.memory);
    ar.value("state_bytes", state_bytes_);
    std::size_t kept = covariances_.size();  // mid-task: the covariances collected before training
    ar.count("covariances", kept);
    if constexpr (Archive::loading()) covariances_.assign(kept, Eigen::MatrixXd());
    for (std::size_t i = 0; i < kept; ++i) ar.host_matrix(concat("covariance.", i), covariances_[i]);
  }

 private:
  template <Model M>
  void collect(M& model, const training_context& context) {
    if constexpr (!uses_factorization<M, inflora>) {
    } else {
      auto adapters = model.factorized_adapters();
      if (!context.forward_training_set && !stream_)
        throw_invalid_argument("inflora_strategy", "called outside a runner without the stream (construct it with the task_stream)");
      for (auto* a : adapters) a->covariance().collect(true);
      if (context.forward_training_set) {
        context.forward_training_set(options_.collection_batch_size);
        if (context.ranks > 1)  // data-parallel: each rank saw its batches
          for (auto* a : adapters) a->covariance().sum_over(context.sum_over_ranks);
      } else {
        detail::feature_pass(model, stream_->tasks.at(std::size_t(context.task)).train, options_.collection_batch_size);
      }
      for (auto* a : adapters) a->covariance().collect(false);
    }
  }

  const task_stream* stream_ = nullptr;
  inflora_options options_;
  std::vector<gpm_memory> memories_;
  std::vector<Eigen::MatrixXd> covariances_;
  std::size_t state_bytes_ = 0;
};

}  // namespace treelora
