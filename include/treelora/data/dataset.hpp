// treelora/data/dataset.hpp: labelled examples on the host and a continual-learning task stream.
// Data stays on the host; a training step copies one batch to the backend (an explicit, visible copy).
// class_sharing_of / meaningful_protocols say which evaluation protocols a stream supports: class-incremental
// streams (disjoint class sets, Split Fashion-MNIST) support all three, domain-incremental ones (every task the same
// classes, data/domain_incremental.hpp) only task-IL.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "treelora/tensor/shape.hpp"

namespace treelora {

/// n examples, each a row-major block of `example_shape` floats, with integer class labels.
struct labelled_set {
  shape example_shape;          ///< e.g. {28, 28} for an image, {d} for a vector
  std::vector<float> features;  ///< n * example_shape.numel()
  std::vector<index_t> labels;  ///< n; values in [0, total classes)

  index_t size() const { return static_cast<index_t>(labels.size()); }
  index_t example_size() const { return example_shape.numel(); }

  /// Throws std::invalid_argument whose message starts with `what` (e.g. "task 'T2' test set") unless the set is
  /// consistent: a non-empty example shape, features holding exactly size() examples, every label in [0, classes)
  /// (when classes > 0) and, when check_finite, every feature finite. The runner calls it once per set before
  /// training, so that a bad set fails at once instead of after hours (or by reading past the features).
  void validate(std::string_view what, index_t classes = 0, bool check_finite = true) const {
    constexpr std::string_view where = "labelled_set::validate";
    const index_t width = example_size();
    if (example_shape.rank() == 0 || width <= 0)
      throw_invalid_argument(where, concat(what, ": example shape ", example_shape.to_string(), " holds no values"));
    if (features.size() != labels.size() * static_cast<std::size_t>(width))
      throw_invalid_argument(where, concat(what, ": ", features.size(), " feature values for ", labels.size(),
                                           " labels of examples of shape ", example_shape.to_string(), " (expected ",
                                           labels.size() * static_cast<std::size_t>(width), ")"));
    for (std::size_t i = 0; i < labels.size(); ++i)
      if (labels[i] < 0 || (classes > 0 && labels[i] >= classes))
        throw_invalid_argument(where, concat(what, ": example ", i, " has label ", labels[i], ", outside [0, ", classes,
                                             ") (the head's classes)"));
    if (check_finite)
      for (std::size_t i = 0; i < features.size(); ++i)
        if (!std::isfinite(features[i]))
          throw_invalid_argument(where, concat(what, ": example ", i / static_cast<std::size_t>(width), " has a non-finite value (",
                                               features[i], ") at position ", i % static_cast<std::size_t>(width)));
  }
};

/// Examples without labels, viewed (not copied): what rotation pre-training reads. A labelled_set converts to it
/// (its labels are not part of the view), so pre-training never needs a copy with the labels cleared.
struct image_view {
  shape example_shape;
  std::span<const float> features;  ///< size() * example_shape.numel() values, row-major

  image_view(shape example, std::span<const float> values) : example_shape(example), features(values) {
    const index_t width = example_shape.numel();
    if (example_shape.rank() == 0 || width <= 0 || features.size() % static_cast<std::size_t>(width) != 0)
      throw_invalid_argument("image_view", concat(features.size(), " values are not a whole number of examples of shape ",
                                                  example_shape.to_string()));
  }
  image_view(const labelled_set& set)  // NOLINT(google-explicit-constructor): images of a labelled set, labels unread
      : image_view(set.example_shape, std::span<const float>(set.features)) {}

  index_t size() const { return static_cast<index_t>(features.size()) / example_size(); }
  index_t example_size() const { return example_shape.numel(); }
};

/// One task of a stream: its own classes (global label ids) and its train and test examples.
struct classification_task {
  std::string name;
  std::vector<index_t> classes;  ///< the global class ids this task uses
  labelled_set train;
  labelled_set test;
};

/// A sequence of tasks over one global label space of `total_classes` classes.
struct task_stream {
  std::string name;
  index_t total_classes = 0;
  std::vector<classification_task> tasks;
};

/// How the tasks' class sets relate.
enum class class_sharing {
  disjoint,     ///< no class belongs to two tasks (class-incremental; also a stream of 0 or 1 tasks)
  identical,    ///< every task has the same class set (domain-incremental)
  overlapping,  ///< some class is in two tasks, but not every task has the same set
};

/// Compares the tasks' class sets (order and repeats within a task ignored).
inline class_sharing class_sharing_of(const task_stream& stream) {
  std::vector<std::vector<index_t>> sets;
  for (const auto& task : stream.tasks) {
    auto classes = task.classes;
    std::sort(classes.begin(), classes.end());
    classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
    sets.push_back(std::move(classes));
  }
  if (sets.size() < 2) return class_sharing::disjoint;
  if (std::all_of(sets.begin(), sets.end(), [&](const auto& s) { return s == sets.front(); }) && !sets.front().empty())
    return class_sharing::identical;
  std::vector<index_t> all;
  for (const auto& s : sets) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  return std::adjacent_find(all.begin(), all.end()) == all.end() ? class_sharing::disjoint : class_sharing::overlapping;
}

/// Whether some class belongs to two tasks of the stream.
inline bool tasks_share_classes(const task_stream& stream) { return class_sharing_of(stream) != class_sharing::disjoint; }

/// Which of the runner's three scores say something about a stream.
struct stream_protocols {
  bool task_il = true;         ///< argmax over the task's own classes: always (domain-incremental: the domain-IL score)
  bool class_il = false;       ///< argmax over the classes seen so far: only with disjoint class sets (otherwise it
                               ///< is task-IL again, or mixes tasks whose classes coincide)
  bool task_identity = false;  ///< the prediction's class names the right task: only with disjoint class sets
};

/// Task-IL always; class-IL and task identity only when no class belongs to two tasks.
inline stream_protocols meaningful_protocols(const task_stream& stream) {
  const bool disjoint = !tasks_share_classes(stream);
  return {.task_il = true, .class_il = disjoint, .task_identity = disjoint};
}

}  // namespace treelora
