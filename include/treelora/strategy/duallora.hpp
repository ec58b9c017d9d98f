// treelora/strategy/duallora.hpp: the DualLoRA strategy (Chen et al., arXiv 2411.00623; a reconstruction, see
// lora/duallora.hpp and docs/strategies.md) over a model whose adapters are the dual_lora factorisation
// (e.g. vit<B, dual_lora> with targets {"q", "v"}).
//   task start: one no-grad pass over the task's training set collects each adapter's CLS covariance C_t;
//               choice A: A_o^t = top-r directions of (I - M M^T) C_t / sqrt 3 (M: earlier tasks' bases);
//               the memory grows by the GPM rule (eps_t = eps_b + (1 - eps_b) t / T, k_t <= max bases): the new
//               directions are U_t, the task's residual down-projection A_r^t = U_t^T (B_r^t = 0)
//   training:   B_o^t, B_r^t and the task's head rows train (task-local cross-entropy, the runner's);
//               choice B: the shared A_o's gradient is projected onto the complement of span(M_{t-1})
//   task end:   consolidation: B_o^t A_o^t merges into the frozen orthogonal history, B_r^t freezes
//   inference:  one forward pass; at the last adapter s_j = ||U_j^T c||^2 / ||c||^2 gives
//               p(j | x) = softmax_j(s_j / tau_id), confidence = max_j p; the class scores are calibrated:
//               bayes (default): logit'_c = log_softmax within task j (c's task) + beta log p(j | x)
//               confident_task:  when the confidence >= threshold, only the predicted task's classes compete
//               none:            the raw logits
// Replay-free: no image or feature is stored, only the bases and the adapters.
#pragma once

#include <cmath>
#include <algorithm>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/lora/duallora.hpp"
#include "treelora/strategy/inflora.hpp"

namespace treelora {

/// What p(j | x) is a softmax of.
enum class dual_task_score {
  energy,    ///< s_j = ||U_j^T c||^2 / ||c||^2 at the last adapter (the reconstruction's default)
  relative,  ///< s_j / e_j, e_j = the share of task j's own CLS energy U_j captured at its feature pass
};

enum class dual_calibration {
  bayes,           ///< logit' = log_softmax within the class's task + beta log p(task | x) (default)
  confident_task,  ///< restrict to the predicted task when its confidence reaches the threshold
  none,            ///< the raw logits (class-IL = argmax over every seen class)
};

struct dual_lora_options {
  double threshold_base = 0.95;  ///< eps_b of the GPM threshold schedule
  gpm_options memory = {.dual = false, .max_new_bases = 32};  ///< k_j cap = max_new_bases (default 32, docs/strategies.md)
  double a_scale = 1.0 / std::sqrt(3.0);  ///< choice A: A_o^t = scale * top-r directions
  double task_temperature = 0.05;         ///< tau_id of p(j | x) = softmax(s / tau_id)
  dual_task_score task_score = dual_task_score::energy;
  dual_calibration calibration = dual_calibration::bayes;
  double beta = 1.0;                      ///< weight of log p(j | x) in the bayes calibration
  double confidence_threshold = 0.5;      ///< confident_task calibration
  index_t collection_batch_size = 256;
};

/// A predicted task for one sample: argmax_j p(j | x), its confidence max_j p, and p itself.
struct task_prediction {
  index_t task = -1;
  double confidence = 0;
  std::vector<double> probabilities = {};
};

/// p(j | x) = softmax_j(s_j / temperature) and its argmax from one sample's scores s_j.
inline task_prediction predict_task(std::span<const double> scores, double temperature) {
  task_prediction p;
  if (scores.empty()) return p;
  p.probabilities.resize(scores.size());
  const double top = *std::max_element(scores.begin(), scores.end());
  double total = 0;
  for (std::size_t j = 0; j < scores.size(); ++j) total += p.probabilities[j] = std::exp((scores[j] - top) / temperature);
  for (std::size_t j = 0; j < scores.size(); ++j) {
    p.probabilities[j] /= total;
    if (p.probabilities[j] > p.confidence) p.confidence = p.probabilities[j], p.task = index_t(j);
  }
  return p;
}

/// Calibrates one sample's class scores in place; `task_classes[j]` lists task j's classes (the tasks p covers).
/// Tasks may share classes (a domain-incremental stream): confident_task then keeps every class of the predicted task
/// (a class is masked only when no confident task lists it), and bayes sums over the tasks that list a class,
///   logit'_c = log sum_{j lists c} p(j | x)^beta softmax_j(logits)_c,
/// which is log_softmax within c's task + beta log p(task | x) when every class has one task. Classes that no task
/// lists are left as they are.
template <class Scalar>
void calibrate_logits(std::span<Scalar> row, const std::vector<std::vector<index_t>>& task_classes,
                      const task_prediction& p, const dual_lora_options& options) {
  if (task_classes.size() < p.probabilities.size())
    throw_invalid_argument("calibrate_logits", concat(p.probabilities.size(), " task probabilities for ", task_classes.size(), " tasks"));
  const std::size_t tasks = p.probabilities.size();
  for (std::size_t j = 0; j < tasks; ++j)
    for (index_t c : task_classes[j])
      if (c < 0 || c >= index_t(row.size()))
        throw_invalid_argument("calibrate_logits", concat("class ", c, " outside ", row.size(), " scores"));
  switch (options.calibration) {
    case dual_calibration::none: break;
    case dual_calibration::confident_task: {
      if (tasks == 0 || p.task < 0 || p.confidence < options.confidence_threshold) break;
      const auto& kept = task_classes[std::size_t(p.task)];
      for (std::size_t j = 0; j < tasks; ++j)
        if (index_t(j) != p.task)
          for (index_t c : task_classes[j])
            if (std::find(kept.begin(), kept.end(), c) == kept.end()) row[std::size_t(c)] = -std::numeric_limits<Scalar>::infinity();
      break;
    }
    case dual_calibration::bayes: {
      // log-sum-exp per class over the tasks that list it, of log_softmax_j(c) + beta log p(j | x)
      std::vector<double> best(row.size(), -std::numeric_limits<double>::infinity());
      std::vector<std::vector<double>> terms(row.size());
      for (std::size_t j = 0; j < tasks; ++j) {
        double top = -std::numeric_limits<double>::infinity(), total = 0;
        for (index_t c : task_classes[j]) top = std::max(top, double(row[std::size_t(c)]));
        for (index_t c : task_classes[j]) total += std::exp(double(row[std::size_t(c)]) - top);
        const double shift = -top - std::log(total) +
                             options.beta * std::log(std::max(p.probabilities[j], std::numeric_limits<double>::min()));
        for (index_t c : task_classes[j]) {
          const double term = double(row[std::size_t(c)]) + shift;
          terms[std::size_t(c)].push_back(term);
          best[std::size_t(c)] = std::max(best[std::size_t(c)], term);
        }
      }
      for (std::size_t c = 0; c < row.size(); ++c) {
        if (terms[c].empty()) continue;
        if (terms[c].size() == 1) {
          row[c] = static_cast<Scalar>(terms[c][0]);
          continue;
        }
        double total = 0;
        for (double t : terms[c]) total += std::exp(t - best[c]);
        row[c] = static_cast<Scalar>(best[c] + std::log(total));
      }
      break;
    }
  }
}

template <Backend B>
class dual_lora_strategy {
 public:
  /// `stream` must be the stream the runner trains on (the feature pass reads each task's training set, and the
  /// calibration each task's classes).
  explicit dual_lora_strategy(const task_stream& stream, dual_lora_options options = {}) : stream_(&stream), options_(options) {
    if (options.collection_batch_size <= 0)
      throw_invalid_argument("dual_lora_strategy", concat("collection batch size ", options.collection_batch_size, " <= 0"));
    if (!(options.task_temperature > 0 && std::isfinite(options.task_temperature)))
      throw_invalid_argument("dual_lora_strategy", concat("task temperature ", options.task_temperature, " must be positive"));
    if (!std::isfinite(options.beta) || !(options.confidence_threshold >= 0 && options.confidence_threshold <= 1))
      throw_invalid_argument("dual_lora_strategy", concat("beta ", options.beta, " must be finite and the confidence "
                                                          "threshold ", options.confidence_threshold, " in [0, 1]"));
  }

  std::string name() const { return "DualLoRA"; }
  const dual_lora_options& options() const { return options_; }
  /// One memory per adapter, in model order (span(M) = [U_1 .. U_t]).
  const std::vector<gpm_memory>& memories() const { return memories_; }
  /// e_j per task: the share of task j's CLS energy (last adapter) its basis captured at its feature pass.
  const std::vector<double>& own_energy() const { return own_energy_; }
  /// Tasks whose training has finished.
  index_t finished_tasks() const { return finished_; }

  template <Model M>
  void begin_task(M& model, const training_context& context) {
    if constexpr (!uses_factorization<M, dual_lora>) {
      static_assert(uses_factorization<M, dual_lora>,
                    "dual_lora_strategy needs a model whose LoRA adapters are DualLoRA's (e.g. vit<B, dual_lora>), not another factorisation");
    } else {
      static_assert(std::is_same_v<typename M::adapter_type, dual_lora::adapter<B>>,
                    "dual_lora_strategy: the model's adapters must be dual_lora");
      adapters_ = model.factorized_adapters();  // cached for after_backward: no allocation per step
      const auto& adapters = adapters_;
      if (adapters.empty()) throw_invalid_argument("dual_lora_strategy::begin_task", "the model has no DualLoRA adapters");
      if (memories_.empty())
        for (auto* a : adapters) memories_.emplace_back(a->in_features(), options_.memory);
      if (memories_.size() != adapters.size())
        throw_invalid_argument("dual_lora_strategy::begin_task", concat("the model has ", adapters.size(), " adapters, the strategy ",
                                                                        memories_.size(), " memories: one strategy per model"));
      for (auto* a : adapters) a->covariance().collect(true, /*cls_only=*/true);
      detail::feature_pass(model, stream_->tasks.at(std::size_t(context.task)).train, options_.collection_batch_size);
      for (auto* a : adapters) a->covariance().collect(false);
      const double threshold = gpm_threshold(context.task, context.tasks, options_.threshold_base);
      projectors_.clear();
      for (std::size_t i = 0; i < adapters.size(); ++i) {
        auto& a = *adapters[i];
        const Eigen::MatrixXd covariance = a.covariance().to_host();
        if (a.settings().orthogonal == dual_orthogonal::per_task_fixed_a)
          a.start_orthogonal_task(options_.a_scale * detail::projected_top_directions(memories_[i], covariance, a.rank()));
        else
          projectors_.emplace_back(model.backend(), memories_[i]);  // complement of span(M_{t-1})
        memories_[i].update_from_covariance(covariance, threshold);
        const Eigen::MatrixXd& u = memories_[i].last_added();
        a.add_residual_task(u.transpose());  // A_r^t = U_t^T
        if (i + 1 == adapters.size()) {       // e_t = trace(U^T C U) / trace(C): the relative task score's scale
          const calling_thread_only serial;  // Eigen's threaded product would round by the thread count
          const double total = covariance.trace();
          own_energy_.push_back(total > 0 && u.cols() > 0 ? (u.transpose() * covariance * u).trace() / total : 0.0);
        }
      }
    }
  }

  template <Model M> void begin_epoch(M&, const training_context&) {}

  /// Choice B: A_o's gradient loses its component in span(M_{t-1}); choice A needs nothing (A_o is fixed).
  template <Model M>
  double after_backward(M&, const training_context&) {
    if constexpr (!uses_factorization<M, dual_lora>) {
    } else {
      for (std::size_t i = 0; i < projectors_.size(); ++i) projectors_[i].project_out(adapters_[i]->a_gradient());
      return 0.0;
    }
  }

  template <Model M>
  void end_task(M& model, const training_context&) {
    if constexpr (!uses_factorization<M, dual_lora>) {
    } else {
      state_bytes_ = 0;
      auto adapters = model.factorized_adapters();
      for (std::size_t i = 0; i < adapters.size(); ++i) {
        adapters[i]->finish_task();
        state_bytes_ += memories_[i].bytes() + adapters[i]->state_bytes();
      }
      ++finished_;
    }
  }

  std::size_t state_bytes() const { return state_bytes_; }

  /// p(j | x) from the last forward pass of `model` (scores of its last adapter), for the tasks seen so far
  /// (the finished ones, or the one training).
  template <Model M>
  std::vector<task_prediction> last_task_predictions(M& model) const {
    if constexpr (!uses_factorization<M, dual_lora>) {
    } else {
      auto adapters = model.factorized_adapters();
      if (adapters.empty()) throw_invalid_argument("dual_lora_strategy::last_task_predictions", "the model has no adapters");
      const Eigen::MatrixXd& s = adapters.back()->scores();
      std::vector<task_prediction> out(std::size_t(s.rows()));
      std::vector<double> row(std::size_t(s.cols()));
      for (index_t i = 0; i < s.rows(); ++i) {
        for (index_t j = 0; j < s.cols(); ++j)
          row[std::size_t(j)] = options_.task_score == dual_task_score::energy ? s(i, j)
                                : own_energy_.at(std::size_t(j)) > 0       ? s(i, j) / own_energy_[std::size_t(j)]
                                                                           : 0.0;
        out[std::size_t(i)] = predict_task(row, options_.task_temperature);
      }
      return out;
    }
  }

  /// The predicted task of each image of `x` (one evaluation-mode forward pass).
  template <Model M>
  std::vector<task_prediction> predict_tasks(M& model, const_tensor_view<B> x) {
    if constexpr (!uses_factorization<M, dual_lora>) {
    } else {
      model.set_training(false);
      (void)model.forward(x);
      model.set_training(true);
      return last_task_predictions(model);
    }
  }

  /// The runner's evaluation hook: calibrates `logits` [samples, classes] in place after model.forward and writes
  /// each sample's predicted task (the task-identity measure). Does nothing before the first task.
  template <Model M>
  void adjust_logits(M& model, tensor_view<B> logits, std::vector<index_t>& predicted_tasks) const {
    if constexpr (!uses_factorization<M, dual_lora>) {
    } else {
      const auto predictions = last_task_predictions(model);
      if (predictions.empty() || predictions.front().probabilities.empty()) return;
      const index_t tasks = index_t(predictions.front().probabilities.size());
      predicted_tasks.resize(predictions.size());
      for (std::size_t i = 0; i < predictions.size(); ++i) predicted_tasks[i] = predictions[i].task;
      if (options_.calibration == dual_calibration::none) return;
      if (index_t(predictions.size()) != logits.rows())
        throw_invalid_argument("dual_lora_strategy::adjust_logits", concat(logits.rows(), " logit rows for ", predictions.size(),
                                                                           " samples in the last forward pass"));
      if (index_t(stream_->tasks.size()) < tasks)
        throw_invalid_argument("dual_lora_strategy::adjust_logits", concat(tasks, " tasks predicted, the stream has ", stream_->tasks.size()));
      task_classes_.resize(std::size_t(tasks));
      for (index_t j = 0; j < tasks; ++j) task_classes_[std::size_t(j)] = stream_->tasks[std::size_t(j)].classes;
      auto host = logits.to_host();
      const index_t classes = logits.cols();
      for (index_t i = 0; i < logits.rows(); ++i)
        calibrate_logits(std::span(host).subspan(std::size_t(i * classes), std::size_t(classes)), task_classes_,
                         predictions[std::size_t(i)], options_);
      logits.backend()->copy_from_host(host.data(), logits.data(), logits.numel());
    }
  }

 private:
  const task_stream* stream_;
  dual_lora_options options_;
  std::vector<gpm_memory> memories_;
  std::vector<gpm_projector<B>> projectors_;
  std::vector<dual_lora::adapter<B>*> adapters_;
  mutable std::vector<std::vector<index_t>> task_classes_;
  std::vector<double> own_energy_;
  index_t finished_ = 0;
  std::size_t state_bytes_ = 0;
};

}  // namespace treelora
