// treelora/strategy/duallora.hpp: the DualLoRA strategy (Chen et al., arXiv 2411.00623; a reconstruction, see
// lora/duallora.hpp and docs/strategies.md) over a model whose adapters are the dual_lora factorisation
// (e.g. vit<B, dual_lora> with targets {"q", "v"}).
//   task start: one no-grad pass over the task's training set collects each adapter's CLS covariance C_t (and,
//               for drift compensation, holds the task's CLS features until the task ends);
//               choice A: A_o^t = top-r directions of (I - M M^T) C_t / sqrt 3 (M: earlier tasks' bases);
//               the memory grows by the GPM rule (eps_t = eps_b + (1 - eps_b) t / T, k_t <= max bases): the new
//               directions are U_t, the task's residual down-projection A_r^t = U_t^T (B_r^t = 0)
//   training:   B_o^t, B_r^t and the task's head rows train (task-local cross-entropy, the runner's);
//               choice B: the shared A_o's gradient is projected onto the complement of span(M_{t-1})
//   task end:   consolidation: B_o^t A_o^t merges into the frozen orthogonal history, B_r^t freezes; then (for the
//               statistics task score, the all-layers scores or a fitted temperature) one more no-grad pass over the
//               task's training set with the trained model: the kept class means follow the drift the task's
//               training caused on its own images, the task's class means of the CLS feature join them, its
//               within-class scatter the shared covariance, and tau_id may be refitted
//   inference:  one forward pass; a task score S_j(x) per seen task gives p(j | x) = softmax_j(S_j / tau_id),
//               confidence = max_j p. S_j (dual_task_score):
//               statistics (default): log p(x | task j) under Gaussian class statistics of the CLS features (class
//                                     means per task, one covariance per layer shared by all classes; LDA), the
//                                     distinct layers summed
//               energy:    s_j = ||U_j^T c||^2 / ||c||^2 (the first reconstruction; relative: s_j / e_j,
//                          dimension: s_j d / k_j), at the last adapter or averaged over the distinct layers
//               The class scores are then calibrated:
//               bayes (default): logit'_c = log_softmax within task j (c's task) + beta log p(j | x)
//               confident_task:  when the confidence >= threshold, only the predicted task's classes compete
//               none:            the raw logits
// Language models (a token stream, strategy/text_runner.hpp): the adapters gate every token by its own input
// (dual_lora::config::feature = every_token; a decoder has no CLS token), the strategy is built without a
// task_stream, its covariance pass goes through the runner (every token of the task's training examples, padding
// included), and the task score is the energy family at the last adapter, uncalibrated (no class labels; the
// constructor refuses options that need them).
// Replay-free: no image or per-sample feature is kept, only the bases, the adapters and per-task statistics (class
// means, and one shared covariance per layer used; a few KB per task).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/lora/duallora.hpp"
#include "treelora/linalg/dense.hpp"
#include "treelora/models/vit.hpp"
#include "treelora/strategy/inflora.hpp"

namespace treelora {

#if defined(TREELORA_COMPILED)
// The float CPU ViT with dual_lora adapters is compiled once in treelora::compiled (src/models.cpp; docs/build_time.md).
extern template class optional_lora_linear<cpu_backend<float>, dual_lora>;
extern template class multi_head_attention<cpu_backend<float>, dual_lora>;
extern template class mlp_block<cpu_backend<float>, dual_lora>;
extern template class transformer_block<cpu_backend<float>, dual_lora>;
extern template class vit<cpu_backend<float>, dual_lora>;
#endif

/// What p(j | x) is a softmax of.
enum class dual_task_score {
  statistics,  ///< (R, default) Gaussian class statistics of the CLS feature: log-likelihood of task j (LDA)
  energy,      ///< s_j = ||U_j^T c||^2 / ||c||^2 (the reconstruction's first default)
  relative,    ///< s_j / e_j, e_j = the share of task j's own CLS energy U_j captured at its feature pass
  dimension,   ///< s_j d / k_j: s_j per basis direction, relative to an isotropic feature (0 when k_j = 0)
};

/// How the kept class means follow the drift of the features as later tasks train (statistics task score).
enum class dual_drift {
  local,  ///< (default) each mean moves by the displacement of the current task's images that look like its class
  mean,   ///< every mean moves by the current task's mean displacement
  none,   ///< the means stay where their task measured them
};

/// Which adapters' CLS features the task score reads.
enum class dual_task_layers {
  all,   ///< (default) every adapter whose CLS input varies with the image, each distinct input once
  last,  ///< the last adapter only (the first reconstruction)
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
  double task_temperature = 0;            ///< tau_id of p(j | x) = softmax(S / tau_id); 0: 1 for statistics, 0.05 else
  dual_task_score task_score = dual_task_score::statistics;
  dual_task_layers task_layers = dual_task_layers::all;
  bool fit_temperature = false;           ///< refit tau_id at each task end on that task's training data only
  double statistics_shrinkage = 1e-3;     ///< statistics: Sigma + shrinkage * trace(Sigma) / d * I
  dual_drift drift_compensation = dual_drift::local;  ///< statistics: how the kept means follow the features' drift
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

/// The temperature tau that minimises the mean negative log-likelihood of `task` under softmax_j(S_j / tau) over the
/// rows of `scores` [samples, tasks] (every row's true task is `task`: the current task's training data), by
/// golden-section search on log tau in [low, high]. The NLL is infinite at tau -> 0 once a row is misranked and
/// tends to log(tasks) as tau grows; when every row ranks `task` first the search ends at `low`.
inline double fit_task_temperature(const Eigen::MatrixXd& scores, index_t task, double low = 1e-4, double high = 1e4) {
  if (task < 0 || task >= index_t(scores.cols()) || scores.rows() == 0)
    throw_invalid_argument("fit_task_temperature", concat("task ", task, " outside the ", scores.cols(), " score columns of ",
                                                          scores.rows(), " rows"));
  if (!(low > 0 && high > low)) throw_invalid_argument("fit_task_temperature", concat("bad range [", low, ", ", high, "]"));
  const auto nll = [&](double log_tau) {
    const double tau = std::exp(log_tau);
    double total = 0;
    for (index_t i = 0; i < scores.rows(); ++i) {
      const double top = scores.row(i).maxCoeff();
      double sum = 0;
      for (index_t j = 0; j < scores.cols(); ++j) sum += std::exp((scores(i, j) - top) / tau);
      total += (top - scores(i, task)) / tau + std::log(sum);
    }
    return total / double(scores.rows());
  };
  const double golden = (std::sqrt(5.0) - 1) / 2;
  double a = std::log(low), b = std::log(high);
  double x1 = b - golden * (b - a), x2 = a + golden * (b - a), f1 = nll(x1), f2 = nll(x2);
  for (int iteration = 0; iteration < 80; ++iteration) {
    if (f1 <= f2) b = x2, x2 = x1, f2 = f1, x1 = b - golden * (b - a), f1 = nll(x1);
    else a = x1, x1 = x2, f1 = f2, x2 = a + golden * (b - a), f2 = nll(x2);
  }
  return std::exp((a + b) / 2);
}

/// One layer's energy-family task scores from its s_j [samples, tasks]: s_j (energy), s_j / e_j (relative; e_j the
/// share of task j's own CLS energy its basis holds), s_j d / k_j (dimension; 1 for an isotropic feature). A task
/// without basis (k_j = 0 or e_j = 0) scores 0.
inline Eigen::MatrixXd energy_task_scores(dual_task_score score, const Eigen::MatrixXd& energies, std::span<const double> own_energy,
                                          std::span<const index_t> basis_sizes, index_t dim) {
  if (score == dual_task_score::statistics)
    throw_invalid_argument("energy_task_scores", "the statistics score is not an energy score");
  if (std::size_t(energies.cols()) > own_energy.size() || std::size_t(energies.cols()) > basis_sizes.size())
    throw_invalid_argument("energy_task_scores", concat(energies.cols(), " tasks, ", own_energy.size(), " own energies, ",
                                                        basis_sizes.size(), " basis sizes"));
  Eigen::MatrixXd out = energies;
  for (index_t j = 0; j < energies.cols(); ++j) {
    double scale = 1;
    if (score == dual_task_score::relative) {
      const double e = own_energy[std::size_t(j)];
      scale = e > 0 ? 1 / e : 0.0;
    } else if (score == dual_task_score::dimension) {
      const index_t k = basis_sizes[std::size_t(j)];
      scale = k > 0 ? double(dim) / double(k) : 0.0;
    }
    out.col(j) *= scale;
  }
  return out;
}

/// Per-task Gaussian statistics of CLS features, the numbers HiDe-PET's task-identity inference keeps (no sample is
/// kept): for each task j and each of its classes c a mean mu_jc per layer, and per layer ONE within-class covariance
/// Sigma shared by every class of every task (the within-class scatters pooled over the tasks seen). The task score is
/// the log-likelihood of task j with uniform class priors inside it (linear discriminant analysis):
///   S_j(x) = log (1 / n_j) sum_{c in j} exp( sum_l [ mu_jc^T S_l^-1 x_l - mu_jc^T S_l^-1 mu_jc / 2 ] ),
///   S_l = Sigma_l + shrinkage * trace(Sigma_l) / d * I
/// (-x^T S^-1 x / 2 is the same for every task and is left out; several layers add as if independent).
class gaussian_task_statistics {
 public:
  gaussian_task_statistics() = default;
  /// One entry of `dims` per layer (its feature dimension).
  explicit gaussian_task_statistics(std::vector<index_t> dims, double shrinkage = 1e-3) : shrinkage_(shrinkage) {
    if (dims.empty()) throw_invalid_argument("gaussian_task_statistics", "needs at least one layer");
    if (!(shrinkage >= 0 && std::isfinite(shrinkage)))
      throw_invalid_argument("gaussian_task_statistics", concat("shrinkage ", shrinkage, " must be >= 0"));
    for (index_t d : dims) {
      if (d <= 0) throw_invalid_argument("gaussian_task_statistics", concat("layer dimension ", d, " <= 0"));
      layers_.push_back({Eigen::MatrixXd::Zero(d, d), Eigen::MatrixXd(d, 0), {}, {}});
    }
  }

  index_t layers() const { return index_t(layers_.size()); }
  /// The feature dimension of layer l.
  index_t dimension(index_t layer) const { return index_t(layers_.at(std::size_t(layer)).scatter.rows()); }
  index_t tasks() const { return index_t(task_offsets_.size()) - 1; }
  /// Class means kept for task j (its classes that had samples).
  index_t task_classes(index_t task) const { return task_offsets_.at(std::size_t(task) + 1) - task_offsets_.at(std::size_t(task)); }
  /// mu_jc of layer l, class slot `slot` of task j (slots in the order of the task's class list, empty classes left out).
  Eigen::VectorXd mean(index_t layer, index_t task, index_t slot) const {
    return layers_.at(std::size_t(layer)).means.col(task_offsets_.at(std::size_t(task)) + slot);
  }
  /// The pooled within-class covariance Sigma of layer l (before shrinkage).
  Eigen::MatrixXd covariance(index_t layer) const {
    return layers_.at(std::size_t(layer)).scatter / std::max(1.0, samples_ - double(task_offsets_.back()));
  }

  /// A new task: `features[l]` [samples, d_l] of its training images, `labels` their classes, `classes` the task's.
  void add_task(const std::vector<const Eigen::MatrixXd*>& features, std::span<const index_t> labels,
                std::span<const index_t> classes) {
    if (features.size() != layers_.size())
      throw_invalid_argument("gaussian_task_statistics::add_task", concat(features.size(), " feature matrices for ", layers_.size(), " layers"));
    const calling_thread_only serial;  // Eigen's threaded products would round by the thread count
    index_t kept = 0;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Eigen::MatrixXd& x = *features[l];
      auto& layer = layers_[l];
      if (x.rows() != index_t(labels.size()) || x.cols() != layer.scatter.rows())
        throw_invalid_argument("gaussian_task_statistics::add_task",
                               concat("layer ", l, ": features ", x.rows(), " x ", x.cols(), " for ", labels.size(),
                                      " labels of dimension ", layer.scatter.rows()));
      std::vector<Eigen::VectorXd> means;
      for (index_t c : classes) {
        Eigen::VectorXd sum = Eigen::VectorXd::Zero(x.cols());
        index_t count = 0;
        for (std::size_t i = 0; i < labels.size(); ++i)
          if (labels[i] == c) sum += x.row(index_t(i)).transpose(), ++count;
        if (count == 0) continue;
        means.push_back(sum / double(count));
        for (std::size_t i = 0; i < labels.size(); ++i)
          if (labels[i] == c) {
            const Eigen::VectorXd centred = x.row(index_t(i)).transpose() - means.back();
            layer.scatter.noalias() += centred * centred.transpose();
          }
      }
      Eigen::MatrixXd all(x.cols(), layer.means.cols() + index_t(means.size()));
      all.leftCols(layer.means.cols()) = layer.means;
      for (std::size_t c = 0; c < means.size(); ++c) all.col(layer.means.cols() + index_t(c)) = means[c];
      layer.means = std::move(all);
      kept = index_t(means.size());
    }
    for (std::size_t i = 0; i < labels.size(); ++i)
      samples_ += std::find(classes.begin(), classes.end(), labels[i]) != classes.end();
    task_offsets_.push_back(task_offsets_.back() + kept);
    refresh();
  }

  /// Semantic drift compensation (after Yu et al., CVPR 2020) from the current task's training features before
  /// (`before[l]`, with the model as it was when the task started) and after its training (`after[l]`, the same images
  /// in the same order): every kept mean moves by a weighted mean of the displacements,
  ///   mu_c += sum_i w_ic (after_i - before_i) / sum_i w_ic,
  /// with w_ic = p(c | before_i) under the kept statistics (the softmax over the kept classes of the discriminant
  /// scores, every layer given; `local`: the images that look like class c carry its drift), or w_ic = 1 (every
  /// mean moves by the mean displacement). No sample is kept.
  void compensate_drift(const std::vector<const Eigen::MatrixXd*>& before, const std::vector<const Eigen::MatrixXd*>& after,
                        bool local) {
    if (before.size() != layers_.size() || after.size() != layers_.size())
      throw_invalid_argument("gaussian_task_statistics::compensate_drift",
                             concat(before.size(), " and ", after.size(), " feature matrices for ", layers_.size(), " layers"));
    for (std::size_t l = 0; l < layers_.size(); ++l)
      if (!before[l] || !after[l] || before[l]->rows() != after[l]->rows() || before[l]->cols() != after[l]->cols() ||
          before[l]->rows() != before[0]->rows())
        throw_invalid_argument("gaussian_task_statistics::compensate_drift", concat("layer ", l, ": the features before and after "
                                                                                    "differ in shape"));
    if (tasks() == 0 || before[0]->rows() == 0) return;
    const calling_thread_only serial;
    Eigen::MatrixXd weights = Eigen::MatrixXd::Ones(before[0]->rows(), task_offsets_.back());
    if (local) {
      weights = class_scores(before);
      for (index_t i = 0; i < weights.rows(); ++i) {
        weights.row(i).array() -= weights.row(i).maxCoeff();
        weights.row(i) = weights.row(i).array().exp().matrix();
        weights.row(i) /= weights.row(i).sum();
      }
    }
    const Eigen::RowVectorXd totals = weights.colwise().sum();
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Eigen::MatrixXd displacement = *after[l] - *before[l];
      for (index_t c = 0; c < weights.cols(); ++c)
        if (totals(c) > 0) layers_[l].means.col(c) += displacement.transpose() * weights.col(c) / totals(c);
    }
    refresh();
  }

  /// S_j for every row, [samples, tasks()]; `features[l]` nullptr leaves layer l out.
  Eigen::MatrixXd scores(const std::vector<const Eigen::MatrixXd*>& features) const {
    const calling_thread_only serial;
    const Eigen::MatrixXd classes = class_scores(features);
    const index_t rows = index_t(classes.rows());
    Eigen::MatrixXd out(rows, tasks());
    for (index_t j = 0; j < tasks(); ++j) {
      const index_t first = task_offsets_[std::size_t(j)], count = task_classes(j);
      for (index_t i = 0; i < rows; ++i) {
        if (count == 0) {
          out(i, j) = -std::numeric_limits<double>::infinity();
          continue;
        }
        const double top = classes.row(i).segment(first, count).maxCoeff();
        out(i, j) = top + std::log((classes.row(i).segment(first, count).array() - top).exp().sum() / double(count));
      }
    }
    return out;
  }

  /// What is kept, counted as float: the class means and one covariance per layer (the discriminant weights are
  /// derived from them at each task end).
  /// Checkpoints (io/checkpoint.hpp): every layer's scatter, means and derived classifier, exactly.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("shrinkage", shrinkage_);
    std::size_t n = layers_.size();
    ar.count("layers", n);
    if constexpr (Archive::loading()) layers_.assign(n, layer_statistics{});
    ar.value("task_offsets", task_offsets_), ar.value("samples", samples_);
    bool valid = !task_offsets_.empty() && task_offsets_.front() == 0;
    for (std::size_t j = 1; j < task_offsets_.size(); ++j) valid = valid && task_offsets_[j] >= task_offsets_[j - 1];
    ar.require(valid, "task_offsets", "must start at 0 and never decrease");
    for (std::size_t l = 0; l < n; ++l) {
      auto& layer = layers_[l];
      const std::string at = concat("layer.", l, ".");
      ar.host_matrix(at + "scatter", layer.scatter), ar.host_matrix(at + "means", layer.means);
      ar.host_matrix(at + "weights", layer.weights), ar.host_matrix(at + "bias", layer.bias);
      const auto d = layer.scatter.rows();
      ar.require(d > 0 && layer.scatter.cols() == d && layer.means.rows() == d && layer.means.cols() == task_offsets_.back() &&
                     layer.weights.rows() == (layer.weights.size() ? d : 0) && layer.weights.cols() == (layer.weights.size() ? layer.means.cols() : 0) &&
                     layer.bias.size() == layer.weights.cols(),
                 at + "scatter", "the layer's matrices do not fit together");
    }
  }

  std::size_t bytes() const {
    std::size_t n = 0;
    for (const auto& l : layers_) n += std::size_t(l.means.size() + l.scatter.size());
    return n * sizeof(float);
  }

 private:
  /// The discriminant score of every kept class, sum_l [mu_c^T S_l^-1 x_l - mu_c^T S_l^-1 mu_c / 2], [samples, slots].
  Eigen::MatrixXd class_scores(const std::vector<const Eigen::MatrixXd*>& features) const {
    if (features.size() != layers_.size())
      throw_invalid_argument("gaussian_task_statistics::scores", concat(features.size(), " feature matrices for ", layers_.size(), " layers"));
    index_t rows = -1;
    for (const auto* x : features)
      if (x) rows = index_t(x->rows());
    if (rows < 0) throw_invalid_argument("gaussian_task_statistics::scores", "no layer given");
    Eigen::MatrixXd classes = Eigen::MatrixXd::Zero(rows, task_offsets_.back());
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      if (!features[l]) continue;
      if (features[l]->rows() != rows || features[l]->cols() != layers_[l].scatter.rows())
        throw_invalid_argument("gaussian_task_statistics::scores", concat("layer ", l, ": features ", features[l]->rows(), " x ",
                                                                          features[l]->cols(), ", expected ", rows, " x ",
                                                                          layers_[l].scatter.rows()));
      if (layers_[l].weights.cols() == 0) continue;
      classes.noalias() += *features[l] * layers_[l].weights;
      classes.rowwise() += layers_[l].bias.transpose();
    }
    return classes;
  }

  /// W_l = S_l^-1 M_l and b_l = -diag(M_l^T W_l) / 2 from the means and the pooled covariance.
  void refresh() {
    const calling_thread_only serial;
    for (auto& layer : layers_) {
      const index_t d = index_t(layer.scatter.rows());
      Eigen::MatrixXd sigma = layer.scatter / std::max(1.0, samples_ - double(task_offsets_.back()));
      const double ridge = shrinkage_ * sigma.trace() / double(d);
      sigma.diagonal().array() += ridge > 0 ? ridge : 1e-12;
      layer.weights = linalg::cholesky_solve(sigma, layer.means);
      layer.bias = -0.5 * (layer.means.array() * layer.weights.array()).colwise().sum().transpose();
    }
  }

  struct layer_statistics {
    Eigen::MatrixXd scatter, means;  // pooled within-class scatter [d, d]; class means [d, class slots]
    Eigen::MatrixXd weights;         // derived: S^-1 means
    Eigen::VectorXd bias;            // derived
  };
  std::vector<layer_statistics> layers_;
  std::vector<index_t> task_offsets_ = {0};  // task j's class slots [offsets[j], offsets[j + 1])
  double samples_ = 0, shrinkage_ = 1e-3;
};

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
  /// `stream` must be the stream the runner trains on (the feature passes read each task's training set, and the
  /// calibration each task's classes).
  explicit dual_lora_strategy(const task_stream& stream, dual_lora_options options = {}) : stream_(&stream), options_(options) {
    validate(options);
  }
  /// Without a classification stream (a language model on a token stream): the covariance pass goes through the
  /// runner (training_context::forward_training_set); the options must not need class labels or a task-end feature
  /// pass: an energy-family task score read at the last adapter, no fitted temperature, no calibration (checked here).
  explicit dual_lora_strategy(dual_lora_options options) : options_(options) {
    validate(options);
    require_stream_free_options();
  }

 private:
  static void validate(const dual_lora_options& options) {
    if (options.collection_batch_size <= 0)
      throw_invalid_argument("dual_lora_strategy", concat("collection batch size ", options.collection_batch_size, " <= 0"));
    if (!(options.task_temperature >= 0 && std::isfinite(options.task_temperature)))
      throw_invalid_argument("dual_lora_strategy", concat("task temperature ", options.task_temperature,
                                                          " must be positive (0: the task score's own)"));
    if (!std::isfinite(options.beta) || !(options.confidence_threshold >= 0 && options.confidence_threshold <= 1))
      throw_invalid_argument("dual_lora_strategy", concat("beta ", options.beta, " must be finite and the confidence "
                                                          "threshold ", options.confidence_threshold, " in [0, 1]"));
    if (!(options.statistics_shrinkage >= 0 && std::isfinite(options.statistics_shrinkage)))
      throw_invalid_argument("dual_lora_strategy", concat("statistics shrinkage ", options.statistics_shrinkage, " must be >= 0"));
  }

 public:
  std::string name() const { return "DualLoRA"; }
  const dual_lora_options& options() const { return options_; }
  /// One memory per adapter, in model order (span(M) = [U_1 .. U_t]).
  const std::vector<gpm_memory>& memories() const { return memories_; }
  /// e_j per task: the share of task j's CLS energy (last adapter) its basis captured at its feature pass.
  const std::vector<double>& own_energy() const {
    static const std::vector<double> none;
    return own_energy_.empty() ? none : own_energy_.back();
  }
  /// e_j per task at adapter `layer`.
  const std::vector<double>& own_energy(index_t layer) const { return own_energy_.at(std::size_t(layer)); }
  /// Tasks whose training has finished.
  index_t finished_tasks() const { return finished_; }
  /// The per-task Gaussian statistics (statistics task score; no layers before the first task end).
  const gaussian_task_statistics& statistics() const { return statistics_; }
  /// The adapters the statistics are kept for, in model order.
  const std::vector<index_t>& statistics_layers() const { return statistics_layers_; }
  /// The adapters whose CLS input varies with the image, each distinct input once (known after the first task end
  /// pass; until then every adapter).
  std::vector<index_t> distinct_layers() const {
    if (!distinct_layers_.empty()) return distinct_layers_;
    std::vector<index_t> all(adapters_.size());
    std::iota(all.begin(), all.end(), index_t(0));
    return all;
  }
  /// The adapters a task score reads for `layers`.
  std::vector<index_t> prediction_layers(dual_task_layers layers) const {
    if (layers == dual_task_layers::all) return distinct_layers();
    if (adapters_.empty()) return {};
    return {index_t(adapters_.size()) - 1};
  }
  /// tau_id in use: the fitted one (fit_temperature, after a fit), else task_temperature, else the score's own.
  double temperature() const {
    if (options_.fit_temperature && fitted_temperature_ > 0) return fitted_temperature_;
    if (options_.task_temperature > 0) return options_.task_temperature;
    return options_.task_score == dual_task_score::statistics ? 1.0 : 0.05;
  }

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
      if (memories_.empty()) {
        for (auto* a : adapters) memories_.emplace_back(a->in_features(), options_.memory);
        own_energy_.resize(adapters.size());
        basis_sizes_.resize(adapters.size());
      }
      if (memories_.size() != adapters.size())
        throw_invalid_argument("dual_lora_strategy::begin_task", concat("the model has ", adapters.size(), " adapters, the strategy ",
                                                                        memories_.size(), " memories: one strategy per model"));
      if (!stream_ && !context.forward_training_set)
        throw_invalid_argument("dual_lora_strategy", "called outside a runner without the stream (construct it with the task_stream)");
      // each sample's CLS row, or every row when the adapters gate every token
      const bool cls_only = adapters.front()->settings().feature == dual_feature::first_token;
      for (auto* a : adapters) a->covariance().collect(true, cls_only);
      before_.clear();
      if (stream_ && options_.task_score == dual_task_score::statistics && options_.drift_compensation != dual_drift::none &&
          !statistics_layers_.empty()) {  // the same pass also keeps the task's features for the drift compensation
        auto features = features_pass(model, stream_->tasks.at(std::size_t(context.task)).train, context);
        for (index_t l : statistics_layers_) before_.push_back(std::move(features.cls[std::size_t(l)]));
        if (context.ranks > 1)  // data-parallel: the covariances saw this rank's batches only
          for (auto* a : adapters) a->covariance().sum_over(context.sum_over_ranks);
      } else if (!stream_ || context.ranks > 1) {  // through the runner (data-parallel: this rank's batches)
        context.forward_training_set(options_.collection_batch_size);
        if (context.ranks > 1)
          for (auto* a : adapters) a->covariance().sum_over(context.sum_over_ranks);
      } else {
        detail::feature_pass(model, stream_->tasks.at(std::size_t(context.task)).train, options_.collection_batch_size);
      }
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
        basis_sizes_[i].push_back(index_t(u.cols()));
        // e_t = trace(U^T C U) / trace(C): the relative task score's scale
        const calling_thread_only serial;  // Eigen's threaded product would round by the thread count
        const double total = covariance.trace();
        own_energy_[i].push_back(total > 0 && u.cols() > 0 ? (u.transpose() * covariance * u).trace() / total : 0.0);
      }
    }
  }

  /// Every adapter's CLS features and energies of `set`'s images (in order) and their labels, one no-grad pass. In a
  /// data-parallel run (context.ranks > 1) each rank forwards batches rank, rank + ranks, ... and leaves the other
  /// rows zero; one sum over the ranks then gives every rank every row, exactly (each entry is one rank's value plus
  /// zeros), so the statistics built from them are one process's.
  struct pass_features {
    std::vector<Eigen::MatrixXd> cls, energies;
    std::vector<index_t> labels;
  };
  template <Model M>
  pass_features features_pass(M& model, const labelled_set& set, const training_context& context) const {
    const auto adapters = model.factorized_adapters();
    const index_t n = set.size();
    pass_features out{std::vector<Eigen::MatrixXd>(adapters.size()), std::vector<Eigen::MatrixXd>(adapters.size()),
                      std::vector<index_t>(static_cast<std::size_t>(n))};
    for (std::size_t i = 0; i < adapters.size(); ++i) {
      out.cls[i].setZero(n, adapters[i]->in_features());
      out.energies[i].setZero(n, adapters[i]->residual_tasks());
    }
    const index_t ranks = std::max<index_t>(context.ranks, 1), batch = options_.collection_batch_size;
    if (ranks > 1 && !context.sum_over_ranks)
      throw_invalid_argument("dual_lora_strategy", concat(ranks, " data-parallel ranks but no sum_over_ranks in the training context"));
    std::vector<index_t> batch_labels, rows;
    std::vector<typename B::scalar_type> staging;
    tensor<B> x;
    model.set_training(false);
    for (index_t first = batch * context.rank; first < n; first += batch * ranks) {
      const index_t m = std::min(batch, n - first);
      rows.resize(std::size_t(m));
      std::iota(rows.begin(), rows.end(), first);
      detail::load_batch(set, rows, x, batch_labels, staging, model.backend());
      (void)model.forward(x);
      std::copy(batch_labels.begin(), batch_labels.end(), out.labels.begin() + first);
      for (std::size_t i = 0; i < adapters.size(); ++i) {
        out.cls[i].middleRows(first, m) = adapters[i]->cls_features();
        out.energies[i].middleRows(first, m) = adapters[i]->scores();
      }
    }
    model.set_training(true);
    if (ranks > 1) {  // every rank's rows to every rank, packed into one sum
      std::vector<double> packed;
      for (const auto* group : {&out.cls, &out.energies})
        for (const auto& m : *group) packed.insert(packed.end(), m.data(), m.data() + m.size());
      for (index_t label : out.labels) packed.push_back(double(label));
      context.sum_over_ranks(std::span<double>(packed));
      std::size_t k = 0;
      for (auto* group : {&out.cls, &out.energies})
        for (auto& m : *group) std::copy_n(packed.begin() + std::ptrdiff_t(k), m.size(), m.data()), k += std::size_t(m.size());
      for (index_t& label : out.labels) label = index_t(packed[k++]);
    }
    return out;
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
  void end_task(M& model, const training_context& context) {
    if constexpr (!uses_factorization<M, dual_lora>) {
    } else {
      auto adapters = model.factorized_adapters();
      for (std::size_t i = 0; i < adapters.size(); ++i) adapters[i]->finish_task();
      if (stream_ && (options_.task_score == dual_task_score::statistics || options_.task_layers == dual_task_layers::all ||
                      options_.fit_temperature))
        task_end_pass(model, context);
      state_bytes_ = statistics_.bytes();
      for (std::size_t i = 0; i < adapters.size(); ++i) state_bytes_ += memories_[i].bytes() + adapters[i]->state_bytes();
      ++finished_;
    }
  }

  std::size_t state_bytes() const { return state_bytes_; }

  /// Checkpoints between tasks (io/checkpoint.hpp): the memories, the task-score scales and basis sizes, the
  /// distinct layers, the class statistics and the fitted temperature (the adapters' bases and branches are the
  /// model's).
  template <class Archive, Model M>
  void checkpoint(Archive ar, M& model) {
    ar.expect("name", name()), ar.expect("threshold_base", options_.threshold_base), ar.expect("a_scale", options_.a_scale);
    ar.expect("task_temperature", options_.task_temperature), ar.expect("task_score", options_.task_score);
    ar.expect("task_layers", options_.task_layers), ar.expect("fit_temperature", options_.fit_temperature);
    ar.expect("statistics_shrinkage", options_.statistics_shrinkage), ar.expect("drift_compensation", options_.drift_compensation);
    ar.expect("calibration", options_.calibration), ar.expect("beta", options_.beta);
    ar.expect("confidence_threshold", options_.confidence_threshold);
    ar.expect("collection_batch_size", options_.collection_batch_size);
    const std::size_t n = detail::checkpoint_memories(ar, model, memories_, options_.memory);
    ar.value("own_energy", own_energy_), ar.value("basis_sizes", basis_sizes_);
    ar.require(own_energy_.size() == n && basis_sizes_.size() == n, "own_energy", "must be one list per memory");
    ar.value("same_input", same_input_), ar.value("distinct_layers", distinct_layers_);
    ar.value("statistics_layers", statistics_layers_);
    for (const auto* list : {&same_input_, &distinct_layers_, &statistics_layers_})
      for (index_t l : *list) ar.require(l >= 0 && std::size_t(l) < n, "statistics_layers", concat("layer ", l, " outside [0, ", n, ")"));
    statistics_.checkpoint(ar.scope("statistics"));
    ar.value("fitted_temperature", fitted_temperature_), ar.value("finished", finished_), ar.value("state_bytes", state_bytes_);
    if constexpr (Archive::loading()) {  // everything against the model (loaded first) and the stream
      const auto adapters = model.factorized_adapters();
      ar.require(finished_ >= 0 && (!stream_ || std::size_t(finished_) <= stream_->tasks.size()), "finished",
                 concat("must be in [0, ", stream_ ? stream_->tasks.size() : std::size_t(0), "] (the stream's tasks)"));
      ar.require(same_input_.empty() || same_input_.size() == n, "same_input", "must be empty or one per memory");
      for (std::size_t i = 0; i < n; ++i) {
        const index_t tasks = adapters[i]->residual_tasks();
        ar.require(own_energy_[i].size() == std::size_t(tasks) && basis_sizes_[i].size() == std::size_t(tasks) &&
                       tasks >= finished_,
                   concat("own_energy.", i), concat("must hold one value per residual task of adapter ", i, " (", tasks, ")"));
        for (index_t j = 0; j < tasks; ++j)
          ar.require(basis_sizes_[i][std::size_t(j)] == adapters[i]->basis_size(j), concat("basis_sizes.", i),
                     concat("task ", j, "'s basis has ", adapters[i]->basis_size(j), " directions in the model"));
      }
      ar.require(statistics_.layers() == index_t(statistics_layers_.size()) || statistics_.layers() == 0, "statistics.layers",
                 "must be one per statistics layer");
      for (index_t k = 0; k < statistics_.layers(); ++k)
        ar.require(std::size_t(k) < statistics_layers_.size() &&
                       statistics_.dimension(k) == adapters.at(std::size_t(statistics_layers_[std::size_t(k)]))->in_features(),
                   "statistics.layers", concat("layer ", k, " must have its adapter's input dimension"));
      ar.require(statistics_.tasks() <= finished_, "statistics.task_offsets", "holds more tasks than have finished");
    }
    // mid-task: choice B's projectors (the memories before this task's update) and the features kept for the drift
    std::size_t projectors = projectors_.size(), before = before_.size();
    ar.count("projectors", projectors), ar.count("before", before);
    if constexpr (Archive::loading()) {
      projectors_.assign(projectors, gpm_projector<B>());
      before_.assign(before, Eigen::MatrixXd());
      adapters_ = model.factorized_adapters();
      ar.require(projectors == 0 || projectors == adapters_.size(), "projectors", "must be none or one per adapter");
    }
    for (std::size_t i = 0; i < projectors; ++i) projectors_[i].checkpoint(ar.scope(concat("projector.", i)), model.backend());
    for (std::size_t i = 0; i < before; ++i) ar.host_matrix(concat("before.", i), before_[i]);
  }

  /// The task scores S_j [samples, tasks] of the last forward pass of `model` for `score` from the adapters `layers`
  /// (model order): the energy scores for every task with a residual adapter (the finished ones and the one
  /// training), statistics for the tasks whose statistics are kept (the finished ones).
  template <Model M>
  Eigen::MatrixXd task_scores(M& model, dual_task_score score, const std::vector<index_t>& layers) const {
    if constexpr (!uses_factorization<M, dual_lora>) {
      return {};
    } else {
      auto adapters = model.factorized_adapters();
      if (adapters.empty()) throw_invalid_argument("dual_lora_strategy::task_scores", "the model has no adapters");
      std::vector<const Eigen::MatrixXd*> cls, energies;
      for (auto* a : adapters) cls.push_back(&a->cls_features()), energies.push_back(&a->scores());
      if (layers.empty()) return combined_scores(score, {index_t(adapters.size()) - 1}, cls, energies);  // before any task
      return combined_scores(score, layers, cls, energies);
    }
  }

  /// p(j | x) from the last forward pass of `model`, for the tasks its task score covers (see task_scores).
  template <Model M>
  std::vector<task_prediction> last_task_predictions(M& model) const {
    const Eigen::MatrixXd s = task_scores(model, options_.task_score, prediction_layers(options_.task_layers));
    std::vector<task_prediction> out(std::size_t(s.rows()));
    std::vector<double> row(std::size_t(s.cols()));
    const double tau = temperature();
    for (index_t i = 0; i < s.rows(); ++i) {
      for (index_t j = 0; j < s.cols(); ++j) row[std::size_t(j)] = s(i, j);
      out[std::size_t(i)] = predict_task(row, tau);
    }
    return out;
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
  /// Without a stream nothing may need class labels or a task-end pass over the task's examples.
  void require_stream_free_options() const {
    if (options_.task_score == dual_task_score::statistics || options_.task_layers == dual_task_layers::all ||
        options_.fit_temperature || options_.calibration != dual_calibration::none)
      throw_invalid_argument("dual_lora_strategy",
                             "without a task_stream (e.g. on a token stream) the options need task_score energy, relative or "
                             "dimension, task_layers last, fit_temperature false and calibration none (the statistics score, "
                             "the all-layers scores, the fitted temperature and the calibration read class-labelled examples)");
  }

  /// S_j from per-adapter CLS features and energies (pointers indexed by adapter), over `layers`.
  Eigen::MatrixXd combined_scores(dual_task_score score, const std::vector<index_t>& layers,
                                  const std::vector<const Eigen::MatrixXd*>& cls,
                                  const std::vector<const Eigen::MatrixXd*>& energies) const {
    if (layers.empty()) throw_invalid_argument("dual_lora_strategy::task_scores", "no layer to read");
    for (index_t l : layers)
      if (l < 0 || l >= index_t(energies.size()))
        throw_invalid_argument("dual_lora_strategy::task_scores", concat("layer ", l, " outside the ", energies.size(), " adapters"));
    if (score == dual_task_score::statistics) {
      const index_t rows = index_t(cls[std::size_t(layers.front())]->rows());
      if (statistics_.tasks() == 0) return Eigen::MatrixXd(rows, 0);
      std::vector<const Eigen::MatrixXd*> features(statistics_layers_.size(), nullptr);
      for (index_t l : layers) {  // a layer that shares its input with a kept one reads the kept one's statistics
        const index_t kept = same_input_.empty() ? l : same_input_[std::size_t(l)];
        const auto at = std::find(statistics_layers_.begin(), statistics_layers_.end(), kept);
        if (at == statistics_layers_.end())
          throw_invalid_argument("dual_lora_strategy::task_scores", concat("no statistics are kept for layer ", l));
        features[std::size_t(at - statistics_layers_.begin())] = cls[std::size_t(l)];
      }
      return statistics_.scores(features);
    }
    const Eigen::MatrixXd& first = *energies[std::size_t(layers.front())];
    Eigen::MatrixXd out = Eigen::MatrixXd::Zero(first.rows(), first.cols());
    if (first.cols() == 0) return out;  // before the first task
    for (index_t l : layers) {  // the mean over the layers
      const Eigen::MatrixXd& s = *energies[std::size_t(l)];
      if (s.rows() != out.rows() || s.cols() != out.cols())
        throw_invalid_argument("dual_lora_strategy::task_scores", concat("layer ", l, " has ", s.rows(), " x ", s.cols(),
                                                                         " scores, layer ", layers.front(), " ", out.rows(), " x ",
                                                                         out.cols()));
      out += energy_task_scores(score, s, own_energy_.at(std::size_t(l)), basis_sizes_.at(std::size_t(l)),
                                memories_.at(std::size_t(l)).dim()) / double(layers.size());
    }
    return out;
  }

  /// After task t's training: one no-grad pass over its training set with the trained model. The first one finds
  /// the distinct, varying layers; the kept means follow the drift the task's training caused on its own images; the
  /// task's statistics join the kept ones; tau_id may be refitted on this task's rows (true task t). The pass's
  /// features, and the ones kept since the task started, live only until this function returns.
  template <Model M>
  void task_end_pass(M& model, const training_context& context) {
    const index_t task = context.task;
    const auto& t = stream_->tasks.at(std::size_t(task));
    const auto adapters = model.factorized_adapters();
    const pass_features pass = features_pass(model, t.train, context);
    if (same_input_.empty()) find_distinct_layers(pass.cls);
    if (options_.task_score == dual_task_score::statistics) {
      if (statistics_layers_.empty()) {
        statistics_layers_ = options_.task_layers == dual_task_layers::all ? distinct_layers_
                                                                            : std::vector<index_t>{same_input_.back()};
        std::vector<index_t> dims;
        for (index_t l : statistics_layers_) dims.push_back(adapters[std::size_t(l)]->in_features());
        statistics_ = gaussian_task_statistics(dims, options_.statistics_shrinkage);
      }
      std::vector<const Eigen::MatrixXd*> features, before;
      for (index_t l : statistics_layers_) features.push_back(&pass.cls[std::size_t(l)]);
      for (const auto& b : before_) before.push_back(&b);
      if (before.size() == features.size() && statistics_.tasks() > 0)
        statistics_.compensate_drift(before, features, options_.drift_compensation == dual_drift::local);
      before_.clear();
      statistics_.add_task(features, pass.labels, t.classes);
    }
    if (options_.fit_temperature && task > 0) {
      std::vector<const Eigen::MatrixXd*> cls_view, energy_view;
      for (std::size_t i = 0; i < adapters.size(); ++i) cls_view.push_back(&pass.cls[i]), energy_view.push_back(&pass.energies[i]);
      const Eigen::MatrixXd s = combined_scores(options_.task_score, prediction_layers(options_.task_layers), cls_view, energy_view);
      if (s.cols() > task) fitted_temperature_ = fit_task_temperature(s, task);
    }
  }

  /// Layer i shares its input with an earlier one when their CLS features are equal on every row (q and v of one
  /// block); it varies when its within-pass CLS variance is above 1e-10 of its mean square (block 0's CLS input is
  /// the same for every image).
  void find_distinct_layers(const std::vector<Eigen::MatrixXd>& cls) {
    same_input_.assign(cls.size(), 0);
    distinct_layers_.clear();
    for (std::size_t i = 0; i < cls.size(); ++i) {
      same_input_[i] = index_t(i);
      for (std::size_t k = 0; k < i; ++k)
        if (same_input_[k] == index_t(k) && cls[k].rows() == cls[i].rows() && cls[k].cols() == cls[i].cols() && cls[k] == cls[i]) {
          same_input_[i] = index_t(k);
          break;
        }
      if (same_input_[i] != index_t(i) || cls[i].rows() == 0) continue;
      const double square = cls[i].squaredNorm();
      const double spread = (cls[i].rowwise() - cls[i].colwise().mean()).squaredNorm();
      if (spread > 1e-10 * square) distinct_layers_.push_back(index_t(i));
    }
    if (distinct_layers_.empty()) distinct_layers_.push_back(same_input_.back());
  }

  const task_stream* stream_ = nullptr;
  dual_lora_options options_;
  std::vector<gpm_memory> memories_;
  std::vector<gpm_projector<B>> projectors_;
  std::vector<dual_lora::adapter<B>*> adapters_;
  mutable std::vector<std::vector<index_t>> task_classes_;
  std::vector<std::vector<double>> own_energy_;   // [adapter][task] e_j
  std::vector<std::vector<index_t>> basis_sizes_;  // [adapter][task] k_j
  std::vector<index_t> same_input_, distinct_layers_, statistics_layers_;
  gaussian_task_statistics statistics_;
  std::vector<Eigen::MatrixXd> before_;  // the current task's features at the statistics layers before its training
  double fitted_temperature_ = 0;
  index_t finished_ = 0;
  std::size_t state_bytes_ = 0;
};

}  // namespace treelora
