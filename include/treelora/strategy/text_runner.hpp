// treelora/strategy/text_runner.hpp: the runner (strategy/runner.hpp) on text tasks: run_stream and run_joint read a
// token_stream (data/text_batches.hpp) and train a decoder-only language model (models/llama.hpp, models/gpt2.hpp)
// with any strategy, through the same loop, hooks, divergence guard and checkpoints as a classification stream.
//   a step:     the micro-batch's examples, left-padded (make_token_batch); forward_tokens; next-token
//               cross-entropy over the answer tokens and EOS only (TRACE's loss); backward; the strategy's hooks
//   scoring:    greedy answers to every test prompt (key/value cache), decoded and scored by the task's metric
//               (metrics/text_metrics.hpp), in [0, 1]. A language model reads only the prompt, so there is no
//               task-IL / class-IL distinction: both matrices hold the same score; task identity is not measured
//               (NaN).
//   held-out loss: the held_out_loss callback fills a second matrix, the answer loss (answer tokens and EOS, no
//               generation) of every test set after each task: on a model too small to answer correctly it still
//               shows what each task taught and what later tasks undid.
//   InfLoRA's passes (training_context::forward_training_set): no-grad forward_tokens over the task's training
//               examples in order, padded batches included (the padding rows' inputs enter the covariances too;
//               docs/text-benchmark.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "treelora/data/text_batches.hpp"
#include "treelora/metrics/text_evaluation.hpp"
#include "treelora/strategy/runner.hpp"

namespace treelora {

/// Throws std::invalid_argument naming the task, the set and the example when a token stream cannot be trained on:
/// no tasks, an empty set, an unknown metric, an id outside the vocabulary, a prompt starting with the pad id, an
/// empty answer (it must at least hold EOS), no decoder.
inline void validate_stream(const token_stream& stream, std::string_view where = "run_stream") {
  if (stream.tasks.empty()) throw_invalid_argument(where, concat("the token stream '", stream.name, "' has no tasks"));
  if (stream.vocabulary <= 0 || stream.pad_id < 0 || stream.pad_id >= stream.vocabulary || stream.eos_id < 0 ||
      stream.eos_id >= stream.vocabulary)
    throw_invalid_argument(where, concat("the token stream '", stream.name, "' has vocabulary ", stream.vocabulary, ", pad id ",
                                         stream.pad_id, ", EOS id ", stream.eos_id, " (the ids must lie in the vocabulary)"));
  if (!stream.decode) throw_invalid_argument(where, concat("the token stream '", stream.name, "' has no decoder"));
  if (stream.max_new_tokens <= 0)
    throw_invalid_argument(where, concat("the token stream '", stream.name, "' has max_new_tokens ", stream.max_new_tokens));
  for (std::size_t n = 0; n < stream.tasks.size(); ++n) {
    const auto& task = stream.tasks[n];
    const std::string name = concat("task ", n, " '", task.name, "'");
    if (std::find(text_metric_names.begin(), text_metric_names.end(), task.metric) == text_metric_names.end())
      throw_invalid_argument(where, concat(name, " has the unknown metric '", task.metric, "'"));
    if (task.train.empty() || task.test.empty())
      throw_invalid_argument(where, concat(name, " has ", task.train.size(), " training and ", task.test.size(),
                                           " test examples (both must be > 0)"));
    if (task.test_answers.size() != task.test.size())
      throw_invalid_argument(where, concat(name, " has ", task.test.size(), " test examples and ", task.test_answers.size(), " answers"));
    for (const auto* set : {&task.train, &task.test})
      for (std::size_t i = 0; i < set->size(); ++i) {
        const auto& e = (*set)[i];
        const std::string what = concat(name, set == &task.train ? " training" : " test", " example ", i);
        if (e.prompt.empty() || e.prompt.front() == stream.pad_id)
          throw_invalid_argument(where, concat(what, " has an empty prompt or one that starts with the pad id ", stream.pad_id));
        if (e.answer.empty()) throw_invalid_argument(where, concat(what, " has an empty answer (EOS at least)"));
        for (const auto* ids : {&e.prompt, &e.answer})
          for (index_t id : *ids)
            if (id < 0 || id >= stream.vocabulary)
              throw_invalid_argument(where, concat(what, " holds the id ", id, ", outside the vocabulary [0, ", stream.vocabulary, ")"));
      }
  }
}

/// FNV-1a-64 of a token stream's contents (names, metrics, ids, answers, budgets): a checkpoint resumes only on the
/// data it was trained on.
inline std::uint64_t stream_fingerprint(const token_stream& stream) {
  std::uint64_t h = fnv1a64(stream.name.data(), stream.name.size());
  const auto add_text = [&](const std::string& s) { h = fnv1a64(s.data(), s.size() + 1, h); };  // (+1: the terminator)
  const auto add_ids = [&](const std::vector<index_t>& ids) {
    const std::uint64_t n = ids.size();
    h = fnv1a64(&n, sizeof n, h);
    h = fnv1a64(ids.data(), ids.size() * sizeof(index_t), h);
  };
  for (index_t v : {stream.vocabulary, stream.pad_id, stream.eos_id, stream.max_new_tokens}) h = fnv1a64(&v, sizeof v, h);
  for (const auto& task : stream.tasks) {
    add_text(task.name), add_text(task.metric);
    for (const auto* set : {&task.train, &task.test}) {
      const std::uint64_t n = set->size();
      h = fnv1a64(&n, sizeof n, h);
      for (const auto& e : *set) add_ids(e.prompt), add_ids(e.answer);
    }
    for (const auto& a : task.test_answers) add_text(a);
  }
  return h;
}

/// A language model trained on a token stream (see the file comment).
template <Model M>
class stream_feed<token_stream, M> {
  using B = typename M::backend_type;

 public:
  stream_feed(const token_stream& stream, M& model, const runner_options& options)
      : stream_(stream), model_(model), options_(options) {
    if (model.vocabulary() < stream.vocabulary)
      throw_invalid_argument("run_stream", concat("the token stream '", stream.name, "' has ", stream.vocabulary,
                                                  " ids, the model's vocabulary ", model.vocabulary()));
  }

  static void validate(const token_stream& stream, std::string_view where) { validate_stream(stream, where); }
  stream_identity identity() const {
    std::vector<index_t> sizes;
    for (const auto& task : stream_.tasks) sizes.push_back(index_t(task.train.size()));
    return stream_identity(stream_.name, stream_.vocabulary, stream_fingerprint(stream_), std::move(sizes));
  }
  index_t tasks() const { return index_t(stream_.tasks.size()); }
  const std::string& task_name(index_t n) const { return task(n).name; }
  index_t train_size(index_t n) const { return index_t(task(n).train.size()); }
  bool class_incremental() const { return false; }
  index_t chance_outputs(index_t) const { return stream_.vocabulary; }
  double score_before(index_t n) { return score(n); }

  template <class S, class Optimizer>
  double train(S& strategy, Optimizer& optimizer, const parameter_list<B>& params, index_t n, std::span<const index_t> rows,
               training_context& context) {
    std::vector<index_t> labels;  // empty for a data-parallel rank with no share of this batch
    if (!rows.empty()) {
      load(n, rows);
      labels = next_token_labels(batch_.ids, batch_.counted, batch_.tokens);
    }
    // a data-parallel rank's weight: the answer tokens its share counts (the loss is their mean)
    const double counted = double(std::count_if(labels.begin(), labels.end(), [](index_t l) { return l != ignored_label; }));
    return train_step_with(
        model_, strategy, optimizer, params, context, options_.clip_norm,
        [&] {
          if (labels.empty()) return 0.0;
          const auto logits = model_.forward_tokens(batch_.ids, left_padded_layout(batch_.ids, batch_.batch, batch_.tokens, stream_.pad_id));
          gradient_.resize(model_.backend(), logits.shape());
          const double loss = token_cross_entropy_loss<B>(logits, labels, gradient_);
          model_.backward(gradient_);
          return loss;
        },
        [&](double loss) { return detail::reduce_gradients(options_.communicator, params, loss, counted, reduced_); });
  }

  /// One no-grad, evaluation-mode forward pass over task n's training examples, in order (every layer reads every
  /// token; the head only the last ones: nothing reads the logits).
  void forward_pass(index_t n, index_t batch_size) {
    model_.set_training(false);
    std::vector<index_t> rows;
    const index_t ranks = options_.communicator.size(), stride = batch_size * ranks;  // data-parallel: this rank's batches
    for (index_t first = batch_size * options_.communicator.rank(); first < train_size(n); first += stride) {
      rows.resize(std::size_t(std::min(batch_size, train_size(n) - first)));
      std::iota(rows.begin(), rows.end(), first);
      load(n, rows);
      (void)model_.forward_tokens(batch_.ids, left_padded_layout(batch_.ids, batch_.batch, batch_.tokens, stream_.pad_id), true);
    }
    model_.set_training(true);
  }

  /// Row n: every task's score (task-IL and class-IL alike); task identity stays NaN.
  template <class S>
  void score_after(S&, index_t n, run_result& result) {
    index_t scored = 0;
    for (index_t j = 0; j < tasks(); ++j) {
      if (j > n + 1 && !options_.score_later_tasks) break;
      scored = j + 1;
      if (!detail::owns_task(options_.communicator, j)) continue;  // another data-parallel rank scores it
      const double s = score(j);
      result.task_il(n, j) = s;
      if (j <= n) result.class_il(n, j) = s, result.task_identity(n, j) = std::numeric_limits<double>::quiet_NaN();
    }
    detail::share_scores(options_.communicator, result, n, scored);
  }

  /// Task j's test score: greedy answers, decoded, scored by the task's metric.
  double score(index_t j) {
    const auto& t = task(j);
    model_.set_training(false);
    const double s = evaluate_text_prompts(model_, std::span<const tokenized_example>(t.test), std::span<const std::string>(t.test_answers),
                                           t.metric, stream_.eos_id, stream_.decode, options_.eval_batch_size,
                                           stream_.max_new_tokens)
                         .score;
    model_.set_training(true);
    return s;
  }

 private:
  const token_task& task(index_t n) const { return stream_.tasks[std::size_t(n)]; }
  void load(index_t n, std::span<const index_t> rows) {
    pointers_.clear();
    for (index_t r : rows) pointers_.push_back(&task(n).train[std::size_t(r)]);
    batch_ = make_token_batch(pointers_, stream_.pad_id);
  }

  const token_stream& stream_;
  M& model_;
  const runner_options& options_;
  std::vector<const tokenized_example*> pointers_;
  token_batch batch_;
  tensor<B> gradient_;
  std::vector<typename B::scalar_type> reduced_;  // the packed gradients of a data-parallel step
};

/// The held-out answer loss of a token stream's test sets after each task (a runner callback, strategy/callbacks.hpp):
/// row n, column j = the mean next-token cross-entropy over task j's test answers and EOS once task n has trained
/// (metrics/text_evaluation.hpp, answer_loss_tokens), for j <= n + 1 or for every j (`all_tasks`). Forward passes
/// only, in evaluation mode, after the strategy's end_task and outside the timed training. The rows travel with the
/// run's checkpoint: a resumed run (given the callback again) holds every row an uninterrupted run would.
/// Data-parallel runs (`communicator` of size N, the run's own): as the runner's scores, task j's loss is computed by
/// rank j % N alone and one sum per row gives every rank the whole row.
template <Model M>
class held_out_loss {
 public:
  held_out_loss(M& model, const token_stream& stream, index_t batch_size = 32, bool all_tasks = false,
                any_communicator communicator = {})
      : model_(model), stream_(stream), batch_size_(batch_size), all_tasks_(all_tasks),
        communicator_(std::move(communicator)), losses_(index_t(stream.tasks.size())) {
    if (batch_size <= 0) throw_invalid_argument("held_out_loss", concat("batch size ", batch_size, " must be positive"));
    validate_stream(stream, "held_out_loss");
  }

  void on_task_end(const training_context& context, double) { record(context.task); }

  /// Row n now (what on_task_end does; also for a joint run's last row).
  void record(index_t n) {
    if (n < 0 || n >= losses_.tasks())
      throw_invalid_argument("held_out_loss", concat("task ", n, " outside the stream's ", losses_.tasks(), " tasks"));
    index_t scored = 0;
    for (index_t j = 0; j < losses_.tasks(); ++j) {
      if (j > n + 1 && !all_tasks_) break;
      scored = j + 1;
      if (detail::owns_task(communicator_, j)) losses_(n, j) = loss(j);  // else another data-parallel rank's
    }
    detail::share_rows(communicator_, {&losses_}, n, scored);
  }

  /// Task j's held-out answer loss for the model as it is.
  double loss(index_t j) {
    const auto& task = stream_.tasks.at(std::size_t(j));
    model_.set_training(false);
    const double l = answer_loss_tokens(model_, std::span<const tokenized_example>(task.test), stream_.pad_id, batch_size_);
    model_.set_training(true);
    return l;
  }

  const accuracy_matrix& losses() const { return losses_; }

  /// The rows recorded so far travel with the run's checkpoint (run_stream saves and restores them), so a resumed
  /// run's matrix equals an uninterrupted run's.
  template <class Archive>
  void checkpoint(Archive ar) {
    const index_t n = losses_.tasks();
    std::vector<double> values;
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < n; ++j) values.push_back(losses_(i, j));
    ar.value("losses", values);
    ar.require(values.size() == std::size_t(n * n), "losses", concat("must hold ", n, " x ", n, " values"));
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < n; ++j) losses_(i, j) = values[std::size_t(i * n + j)];
  }

 private:
  M& model_;
  const token_stream& stream_;
  index_t batch_size_;
  bool all_tasks_;
  any_communicator communicator_;
  accuracy_matrix losses_;
};

/// The multi-task upper bound on a token stream: one task holding every task's training examples, trained through
/// the same loop (epochs: the largest of a schedule), then every task scored; only the last row of the matrices is
/// meaningful (the others are NaN).
template <Model M, class S, class OptimizerFactory, class... Callbacks>
  requires Strategy<S, M>
run_result run_joint(M& model, const token_stream& stream, S& strategy, OptimizerFactory make_optimizer, runner_options options,
                     Callbacks&... callbacks) {
  options.validate("run_joint");
  validate_stream(stream, "run_joint");
  token_stream joint = stream;
  joint.name = stream.name + " (joint)";
  joint.tasks.assign(1, token_task{"joint", stream.tasks.front().metric, {}, {}, {}});
  for (const auto& task : stream.tasks) {
    joint.tasks[0].train.insert(joint.tasks[0].train.end(), task.train.begin(), task.train.end());
    // the inner run scores its one task on a test example of each task (its matrices are discarded; every task is
    // scored in full below)
    joint.tasks[0].test.push_back(task.test.front());
    joint.tasks[0].test_answers.push_back(task.test_answers.front());
  }
  if (!options.epochs_schedule.empty()) {
    options.epochs_per_task = *std::max_element(options.epochs_schedule.begin(), options.epochs_schedule.end());
    options.epochs_schedule.clear();
  }
  auto inner = run_stream(model, joint, strategy, make_optimizer, options, callbacks...);
  const index_t tasks = index_t(stream.tasks.size());
  run_result result{"Joint", accuracy_matrix(tasks), accuracy_matrix(tasks), accuracy_matrix(tasks)};
  stream_feed<token_stream, M> feed(stream, model, options);
  for (index_t j = 0; j < tasks; ++j) {
    result.task_il(tasks - 1, j) = result.class_il(tasks - 1, j) = feed.score(j);
    result.task_identity(tasks - 1, j) = std::numeric_limits<double>::quiet_NaN();
  }
  detail::copy_training_record(inner, result);
  result.class_incremental = false;
  return result;
}

}  // namespace treelora
