// tests/fuzz/checkpoint_runs.hpp: the tiny continual-learning runs whose checkpoints fuzz_checkpoint reads and
// make_seeds writes (docs/fuzzing.md). Both sides build the same models, strategies, streams and runner options,
// so that a seed checkpoint passes every configuration check and its mutations reach the state behind them.
// Variant I (0 <= I < checkpoint_variants) builds its model and strategy and hands them to a visitor.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../test_inflora_stream.hpp"
#include "treelora/models/mlp.hpp"
#include "treelora/models/vit.hpp"
#include "treelora/optim/adam.hpp"
#include "treelora/strategy/duallora.hpp"
#include "treelora/strategy/inflora.hpp"
#include "treelora/strategy/olora.hpp"
#include "treelora/strategy/runner.hpp"
#include "treelora/strategy/seq_lora.hpp"
#include "treelora/strategy/tree_lora.hpp"

namespace treelora::fuzzing {

using checkpoint_backend = cpu_backend<float>;

/// 2 tasks of 8x8 images (classes 0, 1 and 2, 3), 4 training and 2 test examples per class.
inline const task_stream& checkpoint_image_stream() {
  static const task_stream stream = treelora::testing::prototype_image_stream(2, 4, 2);
  return stream;
}
/// The same examples as flat vectors of 64 features (the MLP's input).
inline const task_stream& checkpoint_vector_stream() {
  static const task_stream stream = [] {
    task_stream s = checkpoint_image_stream();
    s.name = "prototype vectors";
    for (auto& task : s.tasks) task.train.example_shape = task.test.example_shape = shape{64};
    return s;
  }();
  return stream;
}

/// What the seed runs use (the harness compares a checkpoint's "run.*" configuration against it): 2 epochs of 2
/// steps per task, so that a run with checkpoint_every_steps = 1 writes checkpoints inside an epoch and between two.
inline runner_options checkpoint_run_options() { return {.epochs_per_task = 2, .batch_size = 4, .eval_batch_size = 8, .seed = 1}; }
/// The optimiser of the seed runs (a mid-task checkpoint holds its state).
inline adam_options checkpoint_adam_options() { return {.learning_rate = 1e-2}; }

/// A ViT of one block, width 8, 2 heads, rank-2 adapters on `targets`, 4 classes (2 tasks of 2).
inline vit_config checkpoint_vit(std::vector<std::string> targets) {
  return {.image_height = 8, .image_width = 8, .channels = 1, .patch_size = 4, .width = 8, .depth = 1, .heads = 2,
          .mlp_ratio = 1.0, .classes = 4, .lora_targets = std::move(targets), .lora_rank = 2, .seed = 5};
}

inline constexpr std::size_t checkpoint_variants = 10;

/// A name for variant `i` (seed file names).
inline std::string checkpoint_variant_name(std::size_t i) {
  static const char* const names[checkpoint_variants] = {
      "vit_seqlora",         "vit_treelora_reference", "vit_treelora_paper", "vit_inflora_merged",
      "vit_inflora_kept",    "vit_olora_merged",       "vit_olora_kept",     "vit_duallora",
      "vit_duallora_energy", "mlp_treelora_paper"};
  return i < checkpoint_variants ? names[i] : "unknown";
}

/// Builds variant I's model and strategy on `backend` and calls visit(model, strategy, stream).
template <std::size_t I, class Visit>
void with_checkpoint_variant(checkpoint_backend& backend, Visit&& visit) {
  using F = checkpoint_backend;
  const task_stream& images = checkpoint_image_stream();
  if constexpr (I == 0) {
    vit<F> model(backend, checkpoint_vit({"q", "v"}));
    seq_lora strategy;
    visit(model, strategy, images);
  } else if constexpr (I == 1) {
    vit<F> model(backend, checkpoint_vit({"q", "v"}));
    tree_lora_reference<F> strategy;
    visit(model, strategy, images);
  } else if constexpr (I == 2) {
    vit<F> model(backend, checkpoint_vit({"q", "v"}));
    tree_lora_paper<F> strategy;
    visit(model, strategy, images);
  } else if constexpr (I == 3 || I == 4) {
    vit<F, inflora> model(backend, checkpoint_vit({"k", "v"}), inflora::config{.rank = 2, .merge_finished = I == 3});
    inflora_strategy strategy(images);
    visit(model, strategy, images);
  } else if constexpr (I == 5 || I == 6) {
    vit<F, olora> model(backend, checkpoint_vit({"q", "v"}), olora::config{.rank = 2, .merge_finished = I == 5});
    olora_strategy<F> strategy(olora_options{.l2 = 1e-4});
    visit(model, strategy, images);
  } else if constexpr (I == 7) {
    vit<F, dual_lora> model(backend, checkpoint_vit({"q", "v"}), dual_lora::config{.rank = 2});
    dual_lora_strategy<F> strategy(images);
    visit(model, strategy, images);
  } else if constexpr (I == 8) {
    vit<F, dual_lora> model(backend, checkpoint_vit({"q", "v"}),
                            dual_lora::config{.rank = 2, .orthogonal = dual_orthogonal::shared_projected});
    dual_lora_strategy<F> strategy(images, {.task_score = dual_task_score::energy, .fit_temperature = true});
    visit(model, strategy, images);
  } else if constexpr (I == 9) {
    mlp_classifier<F> model(backend, {.inputs = 64, .hidden = 8, .hidden_layers = 2, .classes = 4, .lora_rank = 2, .seed = 3});
    tree_lora_paper<F> strategy;
    visit(model, strategy, checkpoint_vector_stream());
  } else {
    static_assert(I < checkpoint_variants, "no such checkpoint variant");
  }
}

/// with_checkpoint_variant<i> for a run-time i (< checkpoint_variants).
template <class Visit>
void with_checkpoint_variant(std::size_t i, checkpoint_backend& backend, Visit&& visit) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((i == I ? (with_checkpoint_variant<I>(backend, visit), 0) : 0), ...);
  }(std::make_index_sequence<checkpoint_variants>{});
}

}  // namespace treelora::fuzzing
