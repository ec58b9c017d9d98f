// tests/fuzz/fuzz_checkpoint.cpp: libFuzzer harness for checkpoint_reader (io/checkpoint.hpp), the reader of
// continual-learning checkpoints, and for every checkpoint() function a resumed run calls behind it
// (docs/fuzzing.md). Each input has its checksum re-stamped first (restamp_checkpoint_checksum: a fuzzer cannot
// forge an FNV-1a checksum while a crafted file can; an input where it finds no checksum field is read as it is),
// then opened from memory. When it opens, it is loaded the way run_stream resumes (detail::load_checkpoint: "run"
// through detail::checkpoint_run, "model", "strategy"; inside a task, the optimiser's state; finish) into fresh
// tiny models and strategies (checkpoint_runs.hpp: a ViT with standard LoRA under SeqLoRA, TreeLoRA reference and
// paper; InfLoRA, O-LoRA and DualLoRA ViTs with their strategies; an MLP under TreeLoRA paper): every variant whose
// strategy wrote the file's "run.method", each on a fresh reader, or one picked by the input's last byte when none
// did. A load may fail only with checkpoint_error (the reader's documented exception: the file, the field and the
// fault).
// A checkpoint that loads must then be usable as a resumed run uses it:
//   1. saved again, it loads into fresh objects and saves to the same bytes;
//   2. the model's forward pass on 2 test examples of every task (the runner's evaluate, without a strategy):
//      the shapes inside the model must fit together (a tensor of a shape the model cannot use must be refused
//      when loaded);
//   3. the strategy's part: between tasks, the evaluation with its calibration (DualLoRA's adjust_logits); then,
//      when tasks remain, what the resumed run does next (the task it stopped in, from its position and with its
//      optimiser, or the next task's begin_task), one training step and end_task, then the evaluation again.
// In 1 and 2 any exception is a finding. In 3 the library's own documented failures of a run are allowed
// (core/error.hpp: std::invalid_argument from a check of its input, std::runtime_error for numerical breakdown
// such as a NaN loss, each "treelora::<where>: <what>"): a checkpoint may hold non-finite values (the format writes
// them), and the strategies' hooks check their state again as they use it. Any other exception (std::out_of_range,
// std::length_error, std::bad_alloc, a checkpoint_error, ...), a crash, a leak, undefined behaviour or an
// allocation over -malloc_limit_mb is a finding anywhere.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint_runs.hpp"

namespace {

using namespace treelora;
using F = fuzzing::checkpoint_backend;

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_checkpoint: %s: %s\n", what, detail.c_str());
  std::abort();
}

template <class S>
run_result fresh_result(const S& strategy, const task_stream& stream) {
  const index_t tasks = index_t(stream.tasks.size());
  run_result result{strategy.name(), accuracy_matrix(tasks), accuracy_matrix(tasks), accuracy_matrix(tasks)};
  result.seed = fuzzing::checkpoint_run_options().seed;
  result.threads = runner_threads();
  return result;
}

/// A run as a checkpoint restores it: the results so far, the tasks done, the position inside a task and, for a
/// checkpoint taken inside one, the optimiser.
struct restored {
  run_result result;
  index_t tasks_done = 0;
  detail::run_position at;
  std::optional<adam<F>> optimizer;
};

/// What run_stream does on resume: detail::load_checkpoint, then, inside a task, the optimiser's state; then finish.
template <class M, class S>
void load(checkpoint_reader& ar, M& model, S& strategy, const task_stream& stream, restored& run) {
  run.tasks_done = detail::load_checkpoint(ar, model, strategy, stream, stream_fingerprint(stream),
                                           fuzzing::checkpoint_run_options(), run.result, run.at);
  if (run.at.in_task) {
    run.optimizer.emplace(parameters(model), fuzzing::checkpoint_adam_options());
    run.optimizer->checkpoint(ar.scope("optimizer"));
  }
  ar.finish();
}

/// What detail::save_checkpoint writes, as bytes.
template <class M, class S>
std::string save(M& model, S& strategy, const task_stream& stream, restored& run) {
  checkpoint_writer ar;
  detail::checkpoint_run(ar.scope("run"), stream, stream_fingerprint(stream), fuzzing::checkpoint_run_options(), run.result,
                         run.tasks_done, run.at);
  model.checkpoint(ar.scope("model"));
  strategy.checkpoint(ar.scope("strategy"), model);
  if (run.optimizer) run.optimizer->checkpoint(ar.scope("optimizer"));
  return ar.serialize();
}

/// The first `n` examples of `set`.
labelled_set first_examples(const labelled_set& set, index_t n) {
  labelled_set out{set.example_shape, {}, {}};
  const auto width = std::size_t(set.example_size());
  out.features.assign(set.features.begin(), set.features.begin() + std::ptrdiff_t(std::size_t(n) * width));
  out.labels.assign(set.labels.begin(), set.labels.begin() + n);
  return out;
}

/// The runner's evaluation of every task (class-IL over the classes of the first `seen_tasks` tasks) on 2 test
/// examples each, with the strategy's calibration when `calibrate` and the strategy has one.
template <class M, class S>
void evaluate_tasks(M& model, S& strategy, const task_stream& stream, index_t seen_tasks, bool calibrate) {
  using B = typename M::backend_type;
  std::vector<index_t> seen;
  for (index_t j = 0; j < seen_tasks; ++j)
    seen.insert(seen.end(), stream.tasks[std::size_t(j)].classes.begin(), stream.tasks[std::size_t(j)].classes.end());
  for (index_t j = 0; j < index_t(stream.tasks.size()); ++j) {
    const auto& task = stream.tasks[std::size_t(j)];
    const labelled_set few = first_examples(task.test, 2);
    const std::span<const index_t> classes_seen = j < seen_tasks ? std::span<const index_t>(seen) : std::span<const index_t>();
    if constexpr (requires(tensor_view<B> logits, std::vector<index_t>& predicted) {
                    strategy.adjust_logits(model, logits, predicted);
                  }) {
      if (calibrate) {
        evaluate(model, few, task.classes, classes_seen, 8, j, [&](tensor_view<B> logits, std::vector<index_t>& predicted) {
          strategy.adjust_logits(model, logits, predicted);
        });
        continue;
      }
    }
    evaluate(model, few, task.classes, classes_seen, 8, j);
  }
}

/// An exception a run of the library documents (core/error.hpp): "treelora::<where>: <what>", thrown as
/// std::invalid_argument (a check of its input) or std::runtime_error (numerical breakdown), not a checkpoint_error.
bool documented_run_failure(const std::exception& e) {
  if (dynamic_cast<const checkpoint_error*>(&e)) return false;
  if (!dynamic_cast<const std::invalid_argument*>(&e) && !dynamic_cast<const std::runtime_error*>(&e)) return false;
  return std::string_view(e.what()).starts_with("treelora::");
}

/// What the resumed run does next, cut to one step on 2 examples: the task it stopped in (from its position, with its
/// optimiser) or the next one (begin_task, a fresh optimiser), begin_epoch unless it stopped inside an epoch, one
/// training step, end_task.
template <class M, class S>
void continue_run(M& model, S& strategy, const task_stream& stream, restored& run) {
  using B = typename M::backend_type;
  const runner_options options = fuzzing::checkpoint_run_options();
  const index_t n = run.tasks_done;
  const auto& task = stream.tasks[std::size_t(n)];
  detail::input_gradient_scope<M> skip_input_gradient(model);
  model.set_training(true);
  const bool mid_epoch = run.at.in_task && run.at.epoch_started;
  training_context context{.task = n, .tasks = index_t(stream.tasks.size()), .epoch = run.at.in_task ? run.at.epoch : 0,
                           .epochs = options.epochs_per_task, .step = mid_epoch ? run.at.step : 0,
                           .steps_per_epoch = (task.train.size() + options.batch_size - 1) / options.batch_size,
                           .global_step = run.result.steps};
  if (!run.at.in_task) strategy.begin_task(model, context);
  auto params = parameters(model);
  if (!run.optimizer) run.optimizer.emplace(params, fuzzing::checkpoint_adam_options());
  if (!mid_epoch) strategy.begin_epoch(model, context);
  tensor<B> x, logits_gradient;
  std::vector<index_t> labels, rows = {0, 1};
  std::vector<typename B::scalar_type> staging;
  detail::load_batch(task.train, rows, x, labels, staging, model.backend());
  train_step(model, strategy, *run.optimizer, params, x, labels, task.classes, context, logits_gradient);
  strategy.end_task(model, context);
}

template <std::size_t I>
void try_variant(const std::string& bytes, std::optional<checkpoint_reader>& opened) {
  F backend;
  fuzzing::with_checkpoint_variant<I>(backend, [&](auto& model, auto& strategy, const task_stream& stream) {
    restored run{fresh_result(strategy, stream)};
    try {
      checkpoint_reader ar = opened ? std::move(*opened) : checkpoint_reader(bytes, "fuzz input");
      opened.reset();
      load(ar, model, strategy, stream, run);
    } catch (const checkpoint_error&) {
      return;
    }
    const std::string where = concat("variant ", fuzzing::checkpoint_variant_name(I), ", after a successful load");
    try {  // saved again, it loads into fresh objects and saves to the same bytes
      const std::string saved = save(model, strategy, stream, run);
      F backend2;
      fuzzing::with_checkpoint_variant<I>(backend2, [&](auto& model2, auto& strategy2, const task_stream&) {
        restored again{fresh_result(strategy2, stream)};
        checkpoint_reader reader(saved, "saved again");
        load(reader, model2, strategy2, stream, again);
        if (again.tasks_done != run.tasks_done || save(model2, strategy2, stream, again) != saved)
          finding("round trip", concat(where, ": the state saved, loaded and saved again changed"));
      });
    } catch (const std::exception& e) {
      finding("exception", concat(where, ", saving it again: ", e.what()));
    }
    try {  // the model alone: its forward pass
      evaluate_tasks(model, strategy, stream, run.tasks_done, false);
    } catch (const std::exception& e) {
      finding("exception", concat(where, ", in the model's forward pass: ", e.what()));
    }
    try {  // the strategy's part (its calibration is the runner's between tasks only)
      if (!run.at.in_task) evaluate_tasks(model, strategy, stream, run.tasks_done, true);
      if (run.tasks_done < index_t(stream.tasks.size())) {
        continue_run(model, strategy, stream, run);
        evaluate_tasks(model, strategy, stream, run.tasks_done + 1, true);
      }
    } catch (const std::exception& e) {
      if (!documented_run_failure(e)) finding("exception", concat(where, ", resuming the run: ", e.what()));
    }
  });
}

/// The method each variant's strategy writes as "run.method".
const std::vector<std::string>& variant_methods() {
  static const std::vector<std::string> methods = [] {
    std::vector<std::string> out;
    F backend;
    for (std::size_t i = 0; i < fuzzing::checkpoint_variants; ++i)
      fuzzing::with_checkpoint_variant(i, backend, [&](auto&, auto& strategy, const task_stream&) { out.push_back(strategy.name()); });
    return out;
  }();
  return methods;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string bytes = input;
  if (!restamp_checkpoint_checksum(bytes)) bytes = input;
  std::optional<checkpoint_reader> opened;
  try {
    opened.emplace(bytes, "fuzz input");
  } catch (const checkpoint_error&) {
    return 0;
  }
  std::string method;
  const auto& config = opened->document().at("config");
  if (const auto it = config.find("run.method"); it != config.end() && it->is_string()) method = it->template get<std::string>();
  const auto& methods = variant_methods();
  std::vector<std::size_t> chosen;
  for (std::size_t i = 0; i < methods.size(); ++i)
    if (methods[i] == method) chosen.push_back(i);
  if (chosen.empty()) chosen.push_back(size ? data[size - 1] % fuzzing::checkpoint_variants : 0);
  for (const std::size_t i : chosen) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((i == I ? (try_variant<I>(bytes, opened), 0) : 0), ...);
    }(std::make_index_sequence<fuzzing::checkpoint_variants>{});
  }
  return 0;
}
