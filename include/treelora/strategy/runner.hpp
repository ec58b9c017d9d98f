// treelora/strategy/runner.hpp: trains a model task after task and evaluates after each task.
//
//   for task n: strategy.begin_task; a fresh optimiser over the model's parameters
//     for epoch e: strategy.begin_epoch; a seeded permutation of the task's training set
//       for micro-batch t: zero gradients; copy the batch to the backend; forward; cross-entropy on the task's
//                          classes; backward; strategy.after_backward (regularisers); clip; strategy.update
//     strategy.end_task; evaluate every task -> row n of the accuracy matrices
// Task-IL accuracy restricts the argmax to the task's classes; class-IL to all classes seen so far; task
// identity counts a class-IL prediction that falls inside the right task's classes, or, for a strategy with an
// evaluation hook (adjust_logits: DualLoRA's calibration and task predictor), its predicted task.
#pragma once

#include <algorithm>
#include <cmath>
#include <deque>
#include <chrono>
#include <filesystem>
#include <initializer_list>
#include <numeric>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/data/batching.hpp"
#include "treelora/data/dataset.hpp"
#include "treelora/distributed/communicator.hpp"
#include "treelora/io/checkpoint.hpp"
#include "treelora/layers/cross_entropy.hpp"
#include "treelora/metrics/continual_metrics.hpp"
#include "treelora/metrics/run_result.hpp"
#include "treelora/optim/clip.hpp"
#include "treelora/strategy/strategy.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace treelora {

/// Stops a run whose training loss has run away without becoming NaN (a learning rate of 10 or 1e30 otherwise
/// finishes with chance accuracy and no error). A loss over k classes starts near ln k for an untrained head; the
/// guard throws when the mean loss of the last `window` steps of a task (of all its steps, when it has fewer)
/// exceeds `factor` * max(ln k, 1).
struct divergence_guard {
  bool enabled = false;
  double factor = 4;
  index_t window = 20;
};

struct runner_options {
  index_t epochs_per_task = 1;
  std::vector<index_t> epochs_schedule = {};  ///< per-task epochs; overrides epochs_per_task when not empty
  index_t batch_size = 32;
  index_t eval_batch_size = 256;
  double clip_norm = 0;                  ///< clip the global gradient norm to this (0: off)
  bool train_on_task_classes = true;     ///< mask the shared head to the current task's classes while training
  /// After each task n, score every later task too (true), or only task n + 1, the one forward transfer reads
  /// (false: rows of the matrices hold NaN beyond n + 1; a text stream's generations are the costly part of a run).
  bool score_later_tasks = true;
  std::uint64_t seed = 0;                ///< batch order
  divergence_guard guard = {};           ///< off by default; the main job turns it on
  /// After every task (its evaluation included) the run is saved here, atomically (io/checkpoint.hpp): the model's
  /// trained state, the strategy's per-task state, the results so far. Empty: no checkpoints.
  std::filesystem::path checkpoint = {};
  /// Continue from `checkpoint` when that file exists (a run stopped after task k resumes with task k + 1 and ends
  /// with the same results, bit for bit, as the run that did not stop); start from the beginning when it does not.
  bool resume = false;
  /// Also save every this many steps inside a task (0: between tasks only). A run stopped mid-task then repeats no
  /// step: the optimiser's moments, the position in the epoch and the strategy's running state are in the file.
  index_t checkpoint_every_steps = 0;
  /// Data-parallel training (distributed/communicator.hpp; docs/scaling.md): every rank runs the same run_stream,
  /// takes its contiguous share of every global batch (share_of), and the adapters' gradients and the loss are
  /// summed over the ranks, each weighted by its share, before the strategy and the optimiser see them, so that every
  /// rank holds the same model and strategy state. Rank 0 alone writes the checkpoint. The default: one process.
  any_communicator communicator = {};

  /// Throws std::invalid_argument naming the first bad setting.
  void validate(std::string_view where = "runner_options") const {
    if (epochs_per_task <= 0) throw_invalid_argument(where, concat("epochs_per_task ", epochs_per_task, " must be >= 1"));
    for (std::size_t i = 0; i < epochs_schedule.size(); ++i)
      if (epochs_schedule[i] <= 0)
        throw_invalid_argument(where, concat("epochs_schedule[", i, "] = ", epochs_schedule[i], " must be >= 1"));
    if (batch_size <= 0) throw_invalid_argument(where, concat("batch_size ", batch_size, " must be >= 1"));
    if (eval_batch_size <= 0) throw_invalid_argument(where, concat("eval_batch_size ", eval_batch_size, " must be >= 1"));
    if (!(clip_norm >= 0) || !std::isfinite(clip_norm))
      throw_invalid_argument(where, concat("clip_norm ", clip_norm, " must be finite and >= 0 (0: off)"));
    if (guard.enabled && (!(guard.factor > 1) || !std::isfinite(guard.factor) || guard.window <= 0))
      throw_invalid_argument(where, concat("divergence guard: factor ", guard.factor, " must be > 1 and finite, window ",
                                           guard.window, " >= 1"));
    if (resume && checkpoint.empty()) throw_invalid_argument(where, "resume is set but no checkpoint path is given");
    if (checkpoint_every_steps < 0 || (checkpoint_every_steps > 0 && checkpoint.empty()))
      throw_invalid_argument(where, concat("checkpoint_every_steps ", checkpoint_every_steps,
                                           " must be >= 0, and > 0 only with a checkpoint path"));
  }
};

/// OpenMP threads a run uses (1 without OpenMP).
inline index_t runner_threads() {
#if defined(_OPENMP)
  return static_cast<index_t>(omp_get_max_threads());
#else
  return 1;
#endif
}


namespace detail {
/// Copies examples `rows` of `set` into `x` (explicit host -> backend copy) and their labels into `labels`.
template <Backend B>
void load_batch(const labelled_set& set, std::span<const index_t> rows, tensor<B>& x, std::vector<index_t>& labels,
                std::vector<typename B::scalar_type>& staging, B& backend) {
  const index_t width = set.example_size(), n = static_cast<index_t>(rows.size());
  staging.resize(static_cast<std::size_t>(n * width));
  labels.resize(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const auto src = set.features.begin() + rows[std::size_t(i)] * width;
    std::copy(src, src + width, staging.begin() + i * width);
    labels[std::size_t(i)] = set.labels[std::size_t(rows[std::size_t(i)])];
  }
  x.resize(backend, shape::batched(n, set.example_shape));
  backend.copy_from_host(staging.data(), x.data(), n * width);
}

/// Turns a model's input gradient off for a run and restores the setting afterwards (models without the setting:
/// nothing to do).
template <class M>
class input_gradient_scope {
 public:
  explicit input_gradient_scope(M& model) : model_(model) {
    if constexpr (requires { model.set_input_gradient_needed(false); }) {
      saved_ = model.input_gradient_needed();
      model.set_input_gradient_needed(false);
    }
  }
  ~input_gradient_scope() {
    if constexpr (requires { model_.set_input_gradient_needed(false); }) model_.set_input_gradient_needed(saved_);
  }
  input_gradient_scope(const input_gradient_scope&) = delete;
  input_gradient_scope& operator=(const input_gradient_scope&) = delete;

 private:
  M& model_;
  bool saved_ = true;
};

template <class Callback>
void notify_task_begin(Callback& c, const training_context& context) {
  if constexpr (requires { c.on_task_begin(context); }) c.on_task_begin(context);
}
template <class Callback>
void notify_step(Callback& c, const training_context& context, double regulariser) {
  if constexpr (requires { c.on_step(context, regulariser); }) c.on_step(context, regulariser);
}
template <class Callback>
void notify_task_end(Callback& c, const training_context& context, double seconds) {
  if constexpr (requires { c.on_task_end(context, seconds); }) c.on_task_end(context, seconds);
}
template <class Callback>
bool asks_to_stop(Callback& c, const training_context& context) {
  if constexpr (requires { { c.should_stop_epoch(context) } -> std::convertible_to<bool>; })
    return c.should_stop_epoch(context);
  else return false;
}
}  // namespace detail

/// What one pass over a test set measures.
struct evaluation {
  double task_il = 0;        ///< argmax over the task's own classes
  double class_il = 0;       ///< argmax over every class seen so far
  double task_identity = 0;  ///< the predicted task is the right one (see evaluate)
};

/// The evaluation hook that changes nothing (strategies without a calibration).
struct no_logit_adjustment {
  template <class View>
  void operator()(View, std::vector<index_t>&) const {}
};

/// One forward pass of `model` over `set` (evaluation mode), scored both ways. `seen_classes` empty: class-IL is
/// not scored (0). `adjust(logits, predicted_tasks)` may rewrite a copy of the logits (a calibration: class-IL is
/// scored on it, task-IL on the raw logits) and may write one predicted task per row; then task identity is the share
/// of rows predicted as `task`. Otherwise task identity is the share of class-IL predictions inside `task_classes`.
template <Model M, class Adjust = no_logit_adjustment>
evaluation evaluate(M& model, const labelled_set& set, std::span<const index_t> task_classes,
                    std::span<const index_t> seen_classes, index_t batch_size = 256, index_t task = -1,
                    Adjust&& adjust = {}) {
  using B = typename M::backend_type;
  constexpr bool adjusts = !std::is_same_v<std::remove_cvref_t<Adjust>, no_logit_adjustment>;
  if (set.size() == 0) throw_invalid_argument("evaluate", "empty evaluation set");
  if (batch_size <= 0) throw_invalid_argument("evaluate", concat("batch size ", batch_size, " must be >= 1"));
  if (set.features.size() != set.labels.size() * static_cast<std::size_t>(set.example_size()))
    throw_invalid_argument("evaluate", concat(set.features.size(), " feature values for ", set.size(),
                                              " examples of shape ", set.example_shape.to_string()));
  model.set_training(false);
  tensor<B> x, adjusted;
  std::vector<index_t> labels, rows, predicted_tasks;
  std::vector<typename B::scalar_type> staging;
  index_t task_correct = 0, class_correct = 0, inside = 0;
  for (index_t first = 0; first < set.size(); first += batch_size) {
    const index_t n = std::min(batch_size, set.size() - first);
    rows.resize(std::size_t(n));
    std::iota(rows.begin(), rows.end(), first);
    detail::load_batch(set, rows, x, labels, staging, model.backend());
    const auto logits = model.forward(x);
    if (logits.shape().rank() != 2 || logits.shape()[0] != n)
      throw_invalid_argument("evaluate", concat("the model returned logits of shape ", logits.shape().to_string(), " for a batch of ",
                                                n, " examples of shape ", set.example_shape.to_string(), " (expected [", n,
                                                ", classes])"));
    const auto within_task = argmax_rows<B>(logits, task_classes);  // task-IL: the raw logits
    for (index_t i = 0; i < n; ++i) task_correct += within_task[std::size_t(i)] == labels[std::size_t(i)];
    if (seen_classes.empty()) continue;
    const_tensor_view<B> class_scores = logits;  // class-IL: the adjusted logits, when the strategy adjusts them
    predicted_tasks.clear();
    if constexpr (adjusts) {
      adjusted.resize(model.backend(), logits.shape());
      copy<B>(logits, adjusted);
      adjust(tensor_view<B>(adjusted), predicted_tasks);
      class_scores = adjusted;
    }
    const auto within_seen = argmax_rows<B>(class_scores, seen_classes);
    const bool predicted = task >= 0 && static_cast<index_t>(predicted_tasks.size()) == n;
    for (index_t i = 0; i < n; ++i) {
      class_correct += within_seen[std::size_t(i)] == labels[std::size_t(i)];
      if (predicted) inside += predicted_tasks[std::size_t(i)] == task;
      else inside += std::find(task_classes.begin(), task_classes.end(), within_seen[std::size_t(i)]) != task_classes.end();
    }
  }
  model.set_training(true);
  const double total = double(set.size());
  return {double(task_correct) / total, double(class_correct) / total, double(inside) / total};
}

namespace detail {
/// One process: the loss and gradients are already the batch's.
struct no_reduction {
  double operator()(double loss) const { return loss; }
};

/// Data-parallel training: after this rank's backward on its share of the global batch (weight: its rows, or a text
/// batch's counted answer tokens), the trainable parameters' gradients and the loss become the global batch's mean,
/// the same on every rank. ONE all-reduce per step: the packed buffer holds every gradient times the rank's weight,
/// then loss x weight and the weight; after the sum, everything is divided by the summed weight. (The adapters'
/// gradients are small, so a collective's latency, not its bandwidth, is most of its cost: one, not three.) The loss
/// is summed in the scalar type, as the gradients are. One process: nothing happens.
template <Backend B>
double reduce_gradients(const any_communicator& communicator, const parameter_list<B>& params, double loss, double weight,
                        std::vector<typename B::scalar_type>& buffer) {
  using T = typename B::scalar_type;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "reduce_gradients: the communicator sums float or double");
  if (communicator.size() == 1) return loss;
  if (!(weight >= 0 && std::isfinite(weight)))
    throw_invalid_argument("run_stream", concat("data-parallel step: rank ", communicator.rank(), "'s batch weight ", weight,
                                                " must be finite and >= 0"));
  std::size_t n = 0;
  for (const auto& p : params)
    if (p.trainable && p.gradient && !p.gradient->empty()) n += std::size_t(p.gradient->numel());
  buffer.resize(n + 2);
  std::size_t offset = 0;
  for (const auto& p : params)
    if (p.trainable && p.gradient && !p.gradient->empty()) {
      p.gradient->backend().copy_to_host(p.gradient->data(), buffer.data() + offset, p.gradient->numel());
      offset += std::size_t(p.gradient->numel());
    }
  for (std::size_t i = 0; i < n; ++i) buffer[i] = T(double(buffer[i]) * weight);
  buffer[n] = T(weight > 0 ? loss * weight : 0.0);  // a rank without rows adds nothing
  buffer[n + 1] = T(weight);
  communicator.all_reduce_sum(std::span<T>(buffer));
  const double total = double(buffer[n + 1]);
  if (!(total > 0)) throw_runtime_error("run_stream", "data-parallel step: the global batch counts nothing on any rank");
  const double inverse = 1.0 / total;
  for (std::size_t i = 0; i < n; ++i) buffer[i] = T(double(buffer[i]) * inverse);
  offset = 0;
  for (const auto& p : params)
    if (p.trainable && p.gradient && !p.gradient->empty()) {
      p.gradient->backend().copy_from_host(buffer.data() + offset, p.gradient->data(), p.gradient->numel());
      offset += std::size_t(p.gradient->numel());
    }
  return double(buffer[n]) * inverse;
}

/// Data-parallel evaluation: task j is scored by rank j % size alone (owns_task); then row n's first `scored` entries
/// of the three matrices are summed over the ranks, the other ranks' entries set to 0 first (a NaN the owner left
/// stays NaN), so that every rank holds the whole row.
inline bool owns_task(const any_communicator& communicator, index_t j) { return j % communicator.size() == communicator.rank(); }
/// share_rows does it for any matrices (also held_out_loss's, strategy/text_runner.hpp).
inline void share_rows(const any_communicator& communicator, std::initializer_list<accuracy_matrix*> matrices, index_t n,
                       index_t scored) {
  if (communicator.size() == 1 || scored == 0) return;
  std::vector<double> row;
  for (auto* m : matrices)
    for (index_t j = 0; j < scored; ++j) row.push_back(owns_task(communicator, j) ? (*m)(n, j) : 0.0);
  communicator.all_reduce_sum(std::span<double>(row));
  std::size_t k = 0;
  for (auto* m : matrices)
    for (index_t j = 0; j < scored; ++j) (*m)(n, j) = row[k++];
}
inline void share_scores(const any_communicator& communicator, run_result& result, index_t n, index_t scored) {
  share_rows(communicator, {&result.task_il, &result.class_il, &result.task_identity}, n, scored);
}
}  // namespace detail


/// One training step around `forward_loss_backward` (which runs the forward pass, the task loss and the model's
/// backward, and returns the loss): zero the gradients, (strategy.before_backward), forward_loss_backward,
/// strategy.after_backward, clipping, then the strategy's update (or optimizer.step()). Sets context.loss; returns the
/// strategy's regulariser value. Every kind of stream trains through it (classification below, token streams in
/// strategy/text_runner.hpp). `reduce(loss)`, between the backward and the strategy, makes a data-parallel rank's loss
/// and gradients the global batch's (detail::reduce_gradients); by default nothing.
template <Model M, class S, class Optimizer, class ForwardLossBackward, class Reduce = detail::no_reduction>
  requires Strategy<S, M>
double train_step_with(M& model, S& strategy, Optimizer& optimizer, const parameter_list<typename M::backend_type>& params,
                       training_context& context, double clip_norm, ForwardLossBackward&& forward_loss_backward,
                       Reduce&& reduce = Reduce{}) {
  zero_gradients(params);
  if constexpr (requires { strategy.before_backward(model, context); }) strategy.before_backward(model, context);
  context.loss = reduce(forward_loss_backward());
  const double regulariser = strategy.after_backward(model, context);
  if (clip_norm > 0) clip_gradient_norm(params, clip_norm);
  if constexpr (requires { strategy.update(model, optimizer, context); }) strategy.update(model, optimizer, context);
  else optimizer.step();
  return regulariser;
}

/// One classification step, exactly as the runner takes it: train_step_with around forward, cross-entropy on
/// `classes` (all when empty) and backward. `logits_gradient` is scratch that keeps its memory between steps.
/// A data-parallel rank whose share of a batch is empty skips the forward pass (`labels` empty): its gradients stay
/// zero and it only takes part in the reduction.
template <Model M, class S, class Optimizer, class Reduce = detail::no_reduction>
  requires Strategy<S, M>
double train_step(M& model, S& strategy, Optimizer& optimizer, const parameter_list<typename M::backend_type>& params,
                  const_tensor_view<typename M::backend_type> x, std::span<const index_t> labels,
                  std::span<const index_t> classes, training_context& context,
                  tensor<typename M::backend_type>& logits_gradient, double clip_norm = 0, Reduce&& reduce = Reduce{}) {
  using B = typename M::backend_type;
  return train_step_with(
      model, strategy, optimizer, params, context, clip_norm,
      [&] {
        if (labels.empty()) return 0.0;
        const auto logits = model.forward(x);
        logits_gradient.resize(model.backend(), logits.shape());
        const double loss = cross_entropy_loss<B>(logits, labels, logits_gradient, classes);
        model.backward(logits_gradient);
        return loss;
      },
      std::forward<Reduce>(reduce));
}

/// Checks a stream before training: at least one task, each with training and test examples of one example shape,
/// consistent sizes, labels inside the head (stream.total_classes) and inside the task's classes, finite features.
/// Throws std::invalid_argument naming the task, the set and the sizes.
inline void validate_stream(const task_stream& stream, std::string_view where = "run_stream") {
  if (stream.tasks.empty()) throw_invalid_argument(where, concat("the task stream '", stream.name, "' has no tasks"));
  if (stream.total_classes <= 0)
    throw_invalid_argument(where, concat("the task stream '", stream.name, "' has total_classes ", stream.total_classes));
  const shape example = stream.tasks.front().train.example_shape;
  for (std::size_t n = 0; n < stream.tasks.size(); ++n) {
    const auto& task = stream.tasks[n];
    const std::string name = concat("task ", n, " '", task.name, "'");
    if (task.classes.empty()) throw_invalid_argument(where, concat(name, " lists no classes"));
    for (index_t c : task.classes)
      if (c < 0 || c >= stream.total_classes)
        throw_invalid_argument(where, concat(name, " lists class ", c, ", outside the stream's ", stream.total_classes, " classes"));
    if (task.train.size() == 0 || task.test.size() == 0)
      throw_invalid_argument(where, concat(name, " has ", task.train.size(), " training and ", task.test.size(),
                                           " test examples (both must be > 0)"));
    for (const auto* set : {&task.train, &task.test}) {
      const std::string what = concat(name, set == &task.train ? " training set" : " test set");
      if (set->example_shape != example)
        throw_invalid_argument(where, concat(what, " has examples of shape ", set->example_shape.to_string(),
                                             ", the stream's first task ", example.to_string()));
      set->validate(what, stream.total_classes);
      for (std::size_t i = 0; i < set->labels.size(); ++i)
        if (std::find(task.classes.begin(), task.classes.end(), set->labels[i]) == task.classes.end())
          throw_invalid_argument(where, concat(what, ": example ", i, " has label ", set->labels[i],
                                               ", which is not one of the task's classes"));
    }
  }
}

namespace detail {
/// Runs `step` and, when it throws, throws the same kind of error with where the run was in front.
template <class Step>
decltype(auto) with_run_position(std::string_view task_name, const training_context& context, Step&& step) {
  try {
    return step();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(concat("task ", context.task, " '", task_name, "', epoch ", context.epoch, ", step ",
                                       context.step, ": ", e.what()));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(concat("task ", context.task, " '", task_name, "', epoch ", context.epoch, ", step ",
                                    context.step, ": ", e.what()));
  }
}
}  // namespace detail

/// FNV-1a-64 of a stream's contents (names, classes, shapes, features and labels): a checkpoint resumes only on
/// the data it was trained on.
inline std::uint64_t stream_fingerprint(const task_stream& stream) {
  std::uint64_t h = fnv1a64(stream.name.data(), stream.name.size());
  const auto add = [&](const auto& values) { h = fnv1a64(values.data(), values.size() * sizeof(values[0]), h); };
  for (const auto& task : stream.tasks) {
    h = fnv1a64(task.name.data(), task.name.size(), h);
    add(task.classes);
    for (const auto* set : {&task.train, &task.test}) {
      const std::string dims = set->example_shape.to_string();
      h = fnv1a64(dims.data(), dims.size(), h);
      add(set->features), add(set->labels);
    }
  }
  return h;
}

/// A model and a strategy whose state a checkpoint can hold (each has checkpoint(archive[, model])).
template <class M, class S>
concept Checkpointable = requires(M& model, S& strategy, checkpoint_writer w, checkpoint_reader r) {
  model.checkpoint(w);
  model.checkpoint(r);
  strategy.checkpoint(w, model);
  strategy.checkpoint(r, model);
};

/// An optimiser whose moments a mid-task checkpoint can hold (adam and sgd have checkpoint(archive)).
template <class O>
concept CheckpointableOptimizer = requires(O& optimizer, checkpoint_writer w, checkpoint_reader r) {
  optimizer.checkpoint(w);
  optimizer.checkpoint(r);
};

/// What a checkpoint records of the stream it was trained on (compared on resume): its name, its number of tasks and
/// of outputs (a classification stream's classes, a token stream's vocabulary), its contents' fingerprint and each
/// task's training-set size.
struct stream_identity {
  std::string name;
  index_t tasks = 0, outputs = 0;
  std::uint64_t fingerprint = 0;
  std::vector<index_t> train_sizes;

  stream_identity(std::string name_, index_t outputs_, std::uint64_t fingerprint_, std::vector<index_t> train_sizes_)
      : name(std::move(name_)), tasks(index_t(train_sizes_.size())), outputs(outputs_), fingerprint(fingerprint_),
        train_sizes(std::move(train_sizes_)) {}
  stream_identity(const task_stream& stream, std::uint64_t fingerprint_)
      : name(stream.name), tasks(index_t(stream.tasks.size())), outputs(stream.total_classes), fingerprint(fingerprint_) {
    for (const auto& task : stream.tasks) train_sizes.push_back(task.train.size());
  }
};

namespace detail {
/// Where a run stands inside a task (a mid-task checkpoint's position).
struct run_position {
  bool in_task = false;       ///< the checkpoint was taken during task `tasks_done`
  index_t epoch = 0, step = 0;  ///< the next step to take
  bool epoch_started = false;   ///< false: `epoch` starts afresh (begin_epoch is called on resume)
  double epoch_loss_sum = 0;
  index_t epoch_loss_count = 0;
  std::vector<double> recent_losses = {};  ///< the divergence guard's window
  double task_seconds = 0;                 ///< training time of the task so far
};

/// The run's part of a checkpoint: its configuration (compared on resume), the results so far and the position.
template <class Archive>
void checkpoint_run(Archive ar, const stream_identity& stream, const runner_options& options, run_result& result,
                    index_t& tasks_done, run_position& at) {
  const index_t tasks = stream.tasks;
  ar.expect("stream", stream.name), ar.expect("tasks", tasks), ar.expect("total_classes", stream.outputs);
  ar.expect("stream_fingerprint", stream.fingerprint);
  ar.expect("epochs_per_task", options.epochs_per_task), ar.expect("epochs_schedule", options.epochs_schedule);
  ar.expect("batch_size", options.batch_size), ar.expect("eval_batch_size", options.eval_batch_size);
  ar.expect("clip_norm", options.clip_norm), ar.expect("train_on_task_classes", options.train_on_task_classes);
  ar.expect("score_later_tasks", options.score_later_tasks);
  ar.expect("seed", options.seed), ar.expect("guard.enabled", options.guard.enabled);
  ar.expect("guard.factor", options.guard.factor), ar.expect("guard.window", options.guard.window);
  ar.expect("method", result.method);
  ar.value("tasks_done", tasks_done), ar.value("in_task", at.in_task);
  ar.require(at.in_task ? tasks_done >= 0 && tasks_done < tasks : tasks_done >= 1 && tasks_done <= tasks, "tasks_done",
             concat("must be in [1, ", tasks, "] between tasks, [0, ", tasks, ") during one"));
  if (at.in_task) {
    ar.value("epoch", at.epoch), ar.value("step", at.step), ar.value("epoch_started", at.epoch_started);
    ar.value("epoch_loss_sum", at.epoch_loss_sum), ar.value("epoch_loss_count", at.epoch_loss_count);
    ar.value("recent_losses", at.recent_losses), ar.value("task_seconds", at.task_seconds);
    const index_t epochs = options.epochs_schedule.empty() ? options.epochs_per_task
                                                           : options.epochs_schedule[std::size_t(std::min(tasks_done, tasks - 1))];
    const index_t steps = (stream.train_sizes[std::size_t(std::min(tasks_done, tasks - 1))] + options.batch_size - 1) /
                          options.batch_size;
    ar.require(at.epoch >= 0 && at.epoch < epochs && at.step >= 0 && at.step < steps && (at.epoch_started || at.step == 0) &&
                   at.epoch_loss_count >= 0,
               "step", concat("the position must lie inside the task (", epochs, " epochs of ", steps, " steps)"));
  }
  for (auto [name, matrix] : {std::pair{"task_il", &result.task_il}, std::pair{"class_il", &result.class_il},
                              std::pair{"task_identity", &result.task_identity}}) {
    std::vector<double> values;
    for (index_t i = 0; i < tasks; ++i)
      for (index_t j = 0; j < tasks; ++j) values.push_back((*matrix)(i, j));
    ar.value(name, values);
    ar.require(values.size() == std::size_t(tasks * tasks), name, concat("must hold ", tasks, " x ", tasks, " values"));
    for (index_t i = 0; i < tasks; ++i)
      for (index_t j = 0; j < tasks; ++j) (*matrix)(i, j) = values[std::size_t(i * tasks + j)];
  }
  ar.value("before", result.before), ar.value("train_seconds", result.train_seconds);
  ar.value("checkpoint_seconds", result.checkpoint_seconds);
  ar.value("final_loss", result.final_loss), ar.value("peak_bytes", result.peak_bytes);
  ar.value("state_bytes", result.state_bytes);
  ar.require(result.before.size() == std::size_t(tasks), "before", concat("must hold ", tasks, " values"));
  for (std::size_t size : {result.train_seconds.size(), result.final_loss.size(), result.peak_bytes.size(),
                           result.state_bytes.size(), result.checkpoint_seconds.size() + (at.in_task ? 0 : 1)})
    ar.require(size == std::size_t(tasks_done), "train_seconds",
               "the per-task lists must hold one value per task done (checkpoint_seconds: all but the last)");
  ar.value("trainable_parameters", result.trainable_parameters), ar.value("steps", result.steps);
  ar.value("seconds", result.seconds), ar.value("threads", result.threads);
}

/// The same for a classification stream.
template <class Archive>
void checkpoint_run(Archive ar, const task_stream& stream, std::uint64_t fingerprint, const runner_options& options,
                    run_result& result, index_t& tasks_done, run_position& at) {
  checkpoint_run(ar, stream_identity(stream, fingerprint), options, result, tasks_done, at);
}

/// The same for a caller that has no use for the position (between tasks).
template <class Archive>
void checkpoint_run(Archive ar, const task_stream& stream, std::uint64_t fingerprint, const runner_options& options,
                    run_result& result, index_t& tasks_done) {
  run_position at;
  checkpoint_run(ar, stream, fingerprint, options, result, tasks_done, at);
}

/// The callbacks that keep state across a resume: those with checkpoint(archive) (strategy/callbacks.hpp), each
/// under "callback<k>", k counting only such callbacks in the order they were passed (so a run resumed with the same
/// stateful callbacks, whatever else it passes, reads each one's part back).
template <class Archive, class... Callbacks>
void checkpoint_callbacks(const Archive& ar, Callbacks&... callbacks) {
  index_t k = 0;
  [[maybe_unused]] const auto one = [&](auto& callback) {  // (unused when no callback is passed)
    if constexpr (requires { callback.checkpoint(ar.scope("")); }) callback.checkpoint(ar.scope(concat("callback", k++)));
  };
  (one(callbacks), ...);
}

/// Writes the checkpoint of a run after `tasks_done` tasks, or during task `tasks_done` with its optimiser
/// (atomically), with the state of its stateful callbacks.
template <class M, class S, class Optimizer, class... Callbacks>
void save_checkpoint(M& model, S& strategy, const stream_identity& stream, const runner_options& options,
                     run_result& result, index_t tasks_done, run_position at, Optimizer* optimizer, Callbacks&... callbacks) {
  checkpoint_writer ar;
  checkpoint_run(ar.scope("run"), stream, options, result, tasks_done, at);
  model.checkpoint(ar.scope("model"));
  strategy.checkpoint(ar.scope("strategy"), model);
  if constexpr (CheckpointableOptimizer<Optimizer>)
    if (optimizer) optimizer->checkpoint(ar.scope("optimizer"));
  checkpoint_callbacks(ar, callbacks...);
  ar.write(options.checkpoint);
}

/// Restores a run from its checkpoint; returns the number of tasks it had done (a mid-task checkpoint: the task under
/// way, and `at` says where; its optimiser is read later from `ar`, which the caller then finishes). Stateful
/// callbacks read their part back.
template <class M, class S, class... Callbacks>
index_t load_checkpoint(checkpoint_reader& ar, M& model, S& strategy, const stream_identity& stream,
                        const runner_options& options, run_result& result, run_position& at, Callbacks&... callbacks) {
  index_t tasks_done = 0;
  checkpoint_run(ar.scope("run"), stream, options, result, tasks_done, at);
  model.checkpoint(ar.scope("model"));
  strategy.checkpoint(ar.scope("strategy"), model);
  checkpoint_callbacks(ar, callbacks...);
  return tasks_done;
}

/// The same for a classification stream.
template <class M, class S>
index_t load_checkpoint(checkpoint_reader& ar, M& model, S& strategy, const task_stream& stream, std::uint64_t fingerprint,
                        const runner_options& options, run_result& result, run_position& at) {
  return load_checkpoint(ar, model, strategy, stream_identity(stream, fingerprint), options, result, at);
}
}  // namespace detail

/// How run_stream reads one kind of stream: one specialisation per kind (task_stream below; token_stream, the text
/// tasks a language model learns, in strategy/text_runner.hpp). A feed knows the tasks' names and sizes, trains on a
/// micro-batch of a task's training set, scores the model before training and after each task, and runs the
/// no-grad pass over a task's training set that strategies collecting input statistics ask for
/// (training_context::forward_training_set).
template <class Stream, class M>
class stream_feed;

/// Classification: examples and labels (data/dataset.hpp), cross-entropy on the task's classes, the three accuracies.
template <Model M>
class stream_feed<task_stream, M> {
  using B = typename M::backend_type;

 public:
  stream_feed(const task_stream& stream, M& model, const runner_options& options)
      : stream_(stream), model_(model), options_(options) {}

  static void validate(const task_stream& stream, std::string_view where) { validate_stream(stream, where); }
  stream_identity identity() const { return stream_identity(stream_, stream_fingerprint(stream_)); }
  index_t tasks() const { return index_t(stream_.tasks.size()); }
  const std::string& task_name(index_t n) const { return task(n).name; }
  index_t train_size(index_t n) const { return task(n).train.size(); }
  bool class_incremental() const { return !tasks_share_classes(stream_); }
  /// What the divergence guard compares with: ln of the classes the loss is over.
  index_t chance_outputs(index_t n) const {
    return options_.train_on_task_classes ? index_t(task(n).classes.size()) : stream_.total_classes;
  }
  /// Task n's score before any training (task-IL accuracy).
  double score_before(index_t n) { return evaluate(model_, task(n).test, task(n).classes, {}, options_.eval_batch_size).task_il; }

  template <class S, class Optimizer>
  double train(S& strategy, Optimizer& optimizer, const parameter_list<B>& params, index_t n, std::span<const index_t> rows,
               training_context& context) {
    // a data-parallel rank with no share of this batch loads an empty one (x_ must be a tensor even then: UBSan
    // caught a view of the never-loaded x_ when a rank's first batch was empty)
    detail::load_batch(task(n).train, rows, x_, labels_, staging_, model_.backend());
    const std::span<const index_t> classes =
        options_.train_on_task_classes ? std::span<const index_t>(task(n).classes) : std::span<const index_t>();
    return train_step(model_, strategy, optimizer, params, x_, labels_, classes, context, logits_gradient_, options_.clip_norm,
                      [&](double loss) {
                        return detail::reduce_gradients(options_.communicator, params, loss, double(rows.size()), reduced_);
                      });
  }

  /// One no-grad, evaluation-mode forward pass over task n's training set, in order.
  void forward_pass(index_t n, index_t batch_size) {
    const labelled_set& set = task(n).train;
    model_.set_training(false);
    std::vector<index_t> rows;
    const index_t ranks = options_.communicator.size(), stride = batch_size * ranks;  // data-parallel: this rank's batches
    for (index_t first = batch_size * options_.communicator.rank(); first < set.size(); first += stride) {
      rows.resize(std::size_t(std::min(batch_size, set.size() - first)));
      std::iota(rows.begin(), rows.end(), first);
      detail::load_batch(set, rows, x_, labels_, staging_, model_.backend());
      (void)model_.forward(x_);
    }
    model_.set_training(true);
  }

  /// Row n of the matrices after task n: every task's test set; class-IL and task identity over the classes of
  /// tasks 0..n, for the tasks already seen.
  template <class S>
  void score_after(S& strategy, index_t n, run_result& result) {
    std::vector<index_t> seen_classes;
    for (index_t j = 0; j <= n; ++j) seen_classes.insert(seen_classes.end(), task(j).classes.begin(), task(j).classes.end());
    index_t scored = 0;
    for (index_t j = 0; j < tasks(); ++j) {
      if (j > n + 1 && !options_.score_later_tasks) break;
      scored = j + 1;
      if (!detail::owns_task(options_.communicator, j)) continue;  // another data-parallel rank scores it
      const auto& other = task(j);
      const std::span<const index_t> seen = j <= n ? std::span<const index_t>(seen_classes) : std::span<const index_t>();
      evaluation scores;
      if constexpr (requires(tensor_view<B> logits, std::vector<index_t>& predicted) {
                      strategy.adjust_logits(model_, logits, predicted);
                    })
        scores = evaluate(model_, other.test, other.classes, seen, options_.eval_batch_size, j,
                          [&](tensor_view<B> logits, std::vector<index_t>& predicted) {
                            strategy.adjust_logits(model_, logits, predicted);
                          });
      else
        scores = evaluate(model_, other.test, other.classes, seen, options_.eval_batch_size, j);
      result.task_il(n, j) = scores.task_il;
      if (j <= n) {  // class-IL over the classes seen so far is defined for tasks already seen
        result.class_il(n, j) = scores.class_il;
        result.task_identity(n, j) = scores.task_identity;
      }
    }
    detail::share_scores(options_.communicator, result, n, scored);
  }

 private:
  const classification_task& task(index_t n) const { return stream_.tasks[std::size_t(n)]; }

  const task_stream& stream_;
  M& model_;
  const runner_options& options_;
  tensor<B> x_, logits_gradient_;
  std::vector<index_t> labels_;
  std::vector<typename B::scalar_type> staging_, reduced_;  // reduced_: the packed gradients of a data-parallel step
};

/// Trains `model` on every task of `stream` in order with `strategy`; `make_optimizer(parameter_list)` builds
/// a fresh optimiser per task. Callbacks are optional observers (strategy/callbacks.hpp). With
/// options.checkpoint the run is saved after every task, and with options.resume it continues from that file; a
/// callback with checkpoint(archive) is saved with it (a resumed run passes the same stateful callbacks).
/// `stream` is a task_stream (classification) or, with strategy/text_runner.hpp, a token_stream (text tasks for a
/// language model): any type with a stream_feed.
template <Model M, class Stream, class S, class OptimizerFactory, class... Callbacks>
  requires Strategy<S, M>
run_result run_stream(M& model, const Stream& stream, S& strategy, OptimizerFactory make_optimizer,
                      const runner_options& options, Callbacks&... callbacks) {
  using Feed = stream_feed<Stream, M>;
  options.validate("run_stream");
  Feed::validate(stream, "run_stream");
  Feed feed(stream, model, options);
  const index_t tasks = feed.tasks();
  if (!options.epochs_schedule.empty() && static_cast<index_t>(options.epochs_schedule.size()) != tasks)
    throw_invalid_argument("run_stream", concat("epochs schedule has ", options.epochs_schedule.size(), " entries for ",
                                                 tasks, " tasks"));
  run_result result{strategy.name(), accuracy_matrix(tasks), accuracy_matrix(tasks), accuracy_matrix(tasks)};
  result.seed = options.seed;
  result.threads = runner_threads();
  result.class_incremental = feed.class_incremental();
  index_t first_task = 0;
  std::optional<stream_identity> identity;
  std::optional<checkpoint_reader> resumed;  // a mid-task checkpoint, until the optimiser's state is read from it
  detail::run_position position;
  if (!options.checkpoint.empty()) {
    if constexpr (!Checkpointable<M, S>) {
      throw_invalid_argument("run_stream", concat("checkpoints need checkpoint(archive) on the model and checkpoint(archive, "
                                                  "model) on the strategy; ", strategy.name(), " on this model has not both"));
    } else {
      require_writable_folder(options.checkpoint.parent_path().empty() ? std::filesystem::path(".") : options.checkpoint.parent_path(),
                              "checkpoint folder");
      identity.emplace(feed.identity());
      if (options.resume && std::filesystem::exists(options.checkpoint)) {
        resumed.emplace(options.checkpoint);
        first_task = detail::load_checkpoint(*resumed, model, strategy, *identity, options, result, position, callbacks...);
        result.threads = runner_threads();
        if (!position.in_task) {
          resumed->finish();
          resumed.reset();
          result.checkpoint_seconds.push_back(std::nan(""));  // the stopped run wrote it; its time was not recorded
        }
      }
    }
  }
  if (result.before.empty()) {  // (a resumed run has them from its checkpoint)
    for (index_t n = 0; n < tasks; ++n)  // data-parallel: each rank scores its tasks, then every rank holds them all
      result.before.push_back(detail::owns_task(options.communicator, n) ? feed.score_before(n) : 0.0);
    options.communicator.all_reduce_sum(std::span<double>(result.before));
  }

  // Training never reads d(input): a model that can skip it (vit) stops its backward at the lowest layer that needs
  // a gradient (sparse updates and upper-layer adapters then save the frozen layers' backward).
  // The setting is restored when the run ends (or throws).
  detail::input_gradient_scope<M> skip_input_gradient(model);
  training_context context{.tasks = tasks, .rank = options.communicator.rank(), .ranks = options.communicator.size()};
  context.global_step = result.steps;
  context.forward_training_set = [&](index_t batch_size) {
    if (batch_size <= 0) throw_invalid_argument("run_stream", concat("forward_training_set: batch size ", batch_size, " must be >= 1"));
    feed.forward_pass(context.task, batch_size);
  };
  context.sum_over_ranks = [&](std::span<double> values) { options.communicator.all_reduce_sum(values); };
  model.set_training(true);
  for (index_t n = first_task; n < tasks; ++n) {
    context.task = n;
    context.epochs = options.epochs_schedule.empty() ? options.epochs_per_task : options.epochs_schedule[std::size_t(n)];
    context.steps_per_epoch = (feed.train_size(n) + options.batch_size - 1) / options.batch_size;
    const bool continuing = position.in_task && n == first_task;  // resumed from a checkpoint taken inside this task
    if (!continuing) strategy.begin_task(model, context);
    auto params = parameters(model);
    result.trainable_parameters = trainable_parameter_count(params);
    auto optimizer = make_optimizer(params);
    if constexpr (!CheckpointableOptimizer<decltype(optimizer)>)
      if (options.checkpoint_every_steps > 0 || continuing)
        throw_invalid_argument("run_stream", "checkpoints inside a task need an optimiser with checkpoint(archive) (adam, sgd)");
    if (continuing) {
      if constexpr (CheckpointableOptimizer<decltype(optimizer)>) optimizer.checkpoint(resumed->scope("optimizer"));
      resumed->finish();
      resumed.reset();
    }
    (detail::notify_task_begin(callbacks, context), ...);
    const auto start = std::chrono::steady_clock::now();
    double paused = continuing ? -position.task_seconds : 0;  // time not spent training (mid-task checkpoints), minus earlier time
    const double guard_limit = options.guard.factor * std::max(std::log(double(feed.chance_outputs(n))), 1.0);
    std::deque<double> recent_losses;
    double recent_sum = 0, epoch_loss_sum = 0;
    index_t epoch_loss_count = 0;
    if (continuing)
      for (double loss : position.recent_losses) recent_losses.push_back(loss), recent_sum += loss;
    for (index_t epoch = continuing ? position.epoch : 0; epoch < context.epochs; ++epoch) {
      const bool mid_epoch = continuing && epoch == position.epoch && position.epoch_started;
      epoch_loss_sum = mid_epoch ? position.epoch_loss_sum : 0, epoch_loss_count = mid_epoch ? position.epoch_loss_count : 0;
      context.epoch = epoch;
      context.step = 0;
      if (!mid_epoch) strategy.begin_epoch(model, context);
      const auto order = epoch_permutation(feed.train_size(n), random::mix64(options.seed ^ random::mix64(std::uint64_t(n))), epoch);
      for (index_t t = mid_epoch ? position.step : 0; t < context.steps_per_epoch; ++t) {
        context.step = t;
        const index_t first = t * options.batch_size, count = std::min(options.batch_size, feed.train_size(n) - first);
        // this rank's share of the global batch (all of it in one process)
        const row_share share = share_of(count, options.communicator.rank(), options.communicator.size());
        const auto rows = std::span<const index_t>(order).subspan(std::size_t(first + share.first), std::size_t(share.count));
        [[maybe_unused]] const double regulariser = detail::with_run_position(feed.task_name(n), context, [&] {
          return feed.train(strategy, optimizer, params, n, rows, context);
        });
        epoch_loss_sum += context.loss, ++epoch_loss_count;
        if (options.guard.enabled) {
          recent_losses.push_back(context.loss), recent_sum += context.loss;
          if (static_cast<index_t>(recent_losses.size()) > options.guard.window)
            recent_sum -= recent_losses.front(), recent_losses.pop_front();
          const double mean_loss = recent_sum / double(recent_losses.size());
          // a full window, or every step of a task shorter than the window
          const index_t needed = std::min(options.guard.window, context.epochs * context.steps_per_epoch);
          if (static_cast<index_t>(recent_losses.size()) >= needed && mean_loss > guard_limit)
            throw_runtime_error("run_stream", concat("training diverged in task ", n, " '", feed.task_name(n), "', epoch ", epoch,
                                                     ", step ", t, ": the mean loss of the last ", options.guard.window,
                                                     " steps is ", mean_loss, ", above the divergence guard's limit ",
                                                     guard_limit, " (", options.guard.factor, " x max(ln ",
                                                     feed.chance_outputs(n), " classes, 1)); lower the learning rate"));
        }
        (detail::notify_step(callbacks, context, regulariser), ...);
        ++context.global_step;
        ++result.steps;
        bool stop = false;
        ((stop = stop || detail::asks_to_stop(callbacks, context)), ...);
        if (stop) break;
        if constexpr (Checkpointable<M, S> && CheckpointableOptimizer<decltype(optimizer)>) {
          const bool epoch_ends = t + 1 == context.steps_per_epoch, task_ends = epoch_ends && epoch + 1 == context.epochs;
          if (options.checkpoint_every_steps > 0 && result.steps % options.checkpoint_every_steps == 0 && !task_ends) {
            const auto begin = std::chrono::steady_clock::now();
            detail::run_position at{.in_task = true, .epoch = epoch_ends ? epoch + 1 : epoch, .step = epoch_ends ? 0 : t + 1,
                                    .epoch_started = !epoch_ends, .epoch_loss_sum = epoch_loss_sum,
                                    .epoch_loss_count = epoch_loss_count,
                                    .recent_losses = std::vector<double>(recent_losses.begin(), recent_losses.end()),
                                    .task_seconds = std::chrono::duration<double>(begin - start).count() - paused};
            if (options.communicator.rank() == 0)  // every rank holds the same state; one writes it
              detail::save_checkpoint(model, strategy, *identity, options, result, n, at, &optimizer, callbacks...);
            options.communicator.barrier();
            paused += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
          }
        }
      }
    }
    position.in_task = false;
    result.final_loss.push_back(epoch_loss_count ? epoch_loss_sum / double(epoch_loss_count) : std::nan(""));
    strategy.end_task(model, context);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() - paused;
    result.train_seconds.push_back(seconds);
    result.seconds += seconds;
    (detail::notify_task_end(callbacks, context, seconds), ...);

    feed.score_after(strategy, n, result);
    result.peak_bytes.push_back(peak_resident_bytes());
    result.state_bytes.push_back(strategy.state_bytes());
    if constexpr (Checkpointable<M, S>)
      if (!options.checkpoint.empty()) {
        const auto begin = std::chrono::steady_clock::now();
        if (options.communicator.rank() == 0)  // every rank holds the same state; one writes it
          detail::save_checkpoint(model, strategy, *identity, options, result, n + 1, {}, static_cast<int*>(nullptr), callbacks...);
        options.communicator.barrier();
        result.checkpoint_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count());
      }
  }
  return result;
}

namespace detail {
/// A joint run's training record (seed, threads, losses, times, memory, sizes, steps), from the inner one-task run.
inline void copy_training_record(const run_result& inner, run_result& result) {
  result.seed = inner.seed;
  result.threads = inner.threads;
  result.final_loss = inner.final_loss;
  result.train_seconds = inner.train_seconds;
  result.peak_bytes = inner.peak_bytes;
  result.state_bytes = inner.state_bytes;
  result.trainable_parameters = inner.trainable_parameters;
  result.steps = inner.steps;
  result.seconds = inner.seconds;
}
}  // namespace detail

/// The joint-training upper bound: one task holding every task's training data (all classes), trained through
/// the same loop, then evaluated per task. Only the last row of the matrices is meaningful (the others are NaN).
template <Model M, class S, class OptimizerFactory, class... Callbacks>
  requires Strategy<S, M>
run_result run_joint(M& model, const task_stream& stream, S& strategy, OptimizerFactory make_optimizer,
                     runner_options options, Callbacks&... callbacks) {
  options.validate("run_joint");
  validate_stream(stream, "run_joint");
  task_stream joint{stream.name + " (joint)", stream.total_classes, {classification_task{"joint", {}, {}, {}}}};
  auto& all = joint.tasks[0];
  for (const auto& task : stream.tasks) {
    all.classes.insert(all.classes.end(), task.classes.begin(), task.classes.end());
    all.train.example_shape = all.test.example_shape = task.train.example_shape;
    all.train.features.insert(all.train.features.end(), task.train.features.begin(), task.train.features.end());
    all.train.labels.insert(all.train.labels.end(), task.train.labels.begin(), task.train.labels.end());
    all.test.features.insert(all.test.features.end(), task.test.features.begin(), task.test.features.end());
    all.test.labels.insert(all.test.labels.end(), task.test.labels.begin(), task.test.labels.end());
  }
  if (options.epochs_schedule.size() > 0) {
    index_t total = 0;
    for (auto e : options.epochs_schedule) total = std::max(total, e);
    options.epochs_per_task = total;
    options.epochs_schedule.clear();
  }
  {  // a class shared by several tasks (a domain-incremental stream) is one class of the joint task
    auto& c = all.classes;
    std::sort(c.begin(), c.end());
    c.erase(std::unique(c.begin(), c.end()), c.end());
  }
  auto inner = run_stream(model, joint, strategy, make_optimizer, options, callbacks...);
  const index_t tasks = static_cast<index_t>(stream.tasks.size());
  run_result result{"Joint", accuracy_matrix(tasks), accuracy_matrix(tasks), accuracy_matrix(tasks)};
  for (index_t j = 0; j < tasks; ++j) {
    const auto& task = stream.tasks[std::size_t(j)];
    const auto scores = evaluate(model, task.test, task.classes, all.classes, options.eval_batch_size);
    result.task_il(tasks - 1, j) = scores.task_il;
    result.class_il(tasks - 1, j) = scores.class_il;
    result.task_identity(tasks - 1, j) = scores.task_identity;
  }
  detail::copy_training_record(inner, result);
  result.class_incremental = !tasks_share_classes(stream);
  return result;
}

}  // namespace treelora
