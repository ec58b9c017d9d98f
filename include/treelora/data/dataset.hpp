// treelora/data/dataset.hpp: labelled examples on the host and a continual-learning task stream.
// Data stays on the host; a training step copies one batch to the backend (an explicit, visible copy).
#pragma once

#include <string>
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

}  // namespace treelora
