// treelora/data/batching.hpp: subsets of a labelled_set, class-incremental task splits, and seeded batching.
//   class_order         the fixed order 0..n-1 or a seeded shuffle (Fisher-Yates on random::generator)
//   split_by_classes    consecutive groups of `classes_per_task` classes of that order become the tasks
//   epoch_permutation   a seeded shuffle per (seed, epoch): the same batches on every platform
//   batch_loader        copies the examples of one batch to the backend (the one visible host -> backend copy)
#pragma once

#include <algorithm>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/data/dataset.hpp"
#include "treelora/tensor/tensor.hpp"

namespace treelora {

/// Fisher-Yates shuffle of `values` driven by `generator`.
template <class T>
void shuffle(std::vector<T>& values, random::generator& generator) {
  for (std::size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[generator.below(i)]);
}

/// 0, 1, ..., n - 1, or a seeded permutation of it.
inline std::vector<index_t> class_order(index_t classes, std::optional<std::uint64_t> shuffle_seed = std::nullopt) {
  std::vector<index_t> order(static_cast<std::size_t>(classes));
  std::iota(order.begin(), order.end(), index_t(0));
  if (shuffle_seed) {
    random::generator generator(random::mix64(*shuffle_seed ^ 0xc1a55e5ULL));
    shuffle(order, generator);
  }
  return order;
}

/// The permutation of [0, n) used for epoch `epoch` of a run seeded with `seed`.
inline std::vector<index_t> epoch_permutation(index_t n, std::uint64_t seed, index_t epoch) {
  std::vector<index_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), index_t(0));
  random::generator generator(random::mix64(seed ^ random::mix64(static_cast<std::uint64_t>(epoch) + 0xe90cULL)));
  shuffle(order, generator);
  return order;
}

/// The examples at `indices`, in that order.
inline labelled_set subset(const labelled_set& set, std::span<const index_t> indices) {
  labelled_set out;
  out.example_shape = set.example_shape;
  const index_t size = set.example_size();
  if (set.features.size() != set.labels.size() * static_cast<std::size_t>(size))
    throw_invalid_argument("subset", concat("the set has ", set.features.size(), " feature values for ", set.labels.size(),
                                            " examples of shape ", set.example_shape.to_string()));
  out.features.reserve(indices.size() * static_cast<std::size_t>(size));
  out.labels.reserve(indices.size());
  for (index_t i : indices) {
    if (i < 0 || i >= set.size()) throw_invalid_argument("subset", concat("index ", i, " outside a set of ", set.size()));
    const auto first = set.features.begin() + i * size;
    out.features.insert(out.features.end(), first, first + size);
    out.labels.push_back(set.labels[static_cast<std::size_t>(i)]);
  }
  return out;
}

/// The indices of the examples whose label is in `classes`, keeping at most `per_class` of each class (0: all),
/// chosen by a seeded shuffle; returned in increasing order.
inline std::vector<index_t> indices_of_classes(const labelled_set& set, std::span<const index_t> classes,
                                               index_t per_class = 0, std::uint64_t seed = 0) {
  std::vector<index_t> out;
  for (index_t c : classes) {
    std::vector<index_t> members;
    for (index_t i = 0; i < set.size(); ++i)
      if (set.labels[static_cast<std::size_t>(i)] == c) members.push_back(i);
    if (per_class > 0 && static_cast<index_t>(members.size()) > per_class) {
      random::generator generator(random::mix64(seed ^ random::mix64(static_cast<std::uint64_t>(c) + 0x5ab5ULL)));
      shuffle(members, generator);
      members.resize(static_cast<std::size_t>(per_class));
    }
    out.insert(out.end(), members.begin(), members.end());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// How a labelled data set becomes a class-incremental task stream.
struct split_options {
  index_t classes_per_task = 2;
  std::optional<std::uint64_t> shuffle_seed = std::nullopt;  ///< none: classes in the order 0, 1, 2, ...; else a seeded order
  index_t train_per_class = 0;                ///< keep at most this many training examples per class (0: all)
  index_t test_per_class = 0;                 ///< the same for test examples
  std::uint64_t subsample_seed = 0;
};

/// Tasks of `classes_per_task` consecutive classes of class_order(total_classes, shuffle_seed). Labels stay global.
inline task_stream split_by_classes(const labelled_set& train, const labelled_set& test, index_t total_classes,
                                    const split_options& options = {}, std::string name = "split") {
  if (options.classes_per_task <= 0 || total_classes <= 0 || total_classes % options.classes_per_task != 0)
    throw_invalid_argument("split_by_classes", concat(total_classes, " classes do not split into tasks of ",
                                                      options.classes_per_task));
  if (!(train.example_shape == test.example_shape))
    throw_invalid_argument("split_by_classes", concat("train examples ", train.example_shape.to_string(),
                                                      " vs test examples ", test.example_shape.to_string()));
  for (const labelled_set* set : {&train, &test})
    for (index_t label : set->labels)
      if (label < 0 || label >= total_classes)
        throw_invalid_argument("split_by_classes", concat("label ", label, " outside [0, ", total_classes, ")"));
  const auto order = class_order(total_classes, options.shuffle_seed);
  task_stream stream;
  stream.name = std::move(name);
  stream.total_classes = total_classes;
  for (index_t t = 0; t < total_classes / options.classes_per_task; ++t) {
    classification_task task;
    task.classes.assign(order.begin() + t * options.classes_per_task, order.begin() + (t + 1) * options.classes_per_task);
    task.name = concat("task ", t, " (classes");
    for (index_t c : task.classes) task.name += concat(" ", c);
    task.name += ")";
    task.train = subset(train, indices_of_classes(train, task.classes, options.train_per_class, options.subsample_seed));
    task.test = subset(test, indices_of_classes(test, task.classes, options.test_per_class, options.subsample_seed + 1));
    stream.tasks.push_back(std::move(task));
  }
  return stream;
}

/// Copies batches of a labelled_set to the backend: features [batch, example size] and the labels on the host.
/// The staging buffers are reused: after the largest batch has been seen, loading allocates nothing.
template <Backend B>
class batch_loader {
 public:
  using scalar_type = typename B::scalar_type;

  explicit batch_loader(B& backend) : backend_(&backend) {}

  /// Loads the examples `indices` of `set`; returns the features on the backend.
  const tensor<B>& load(const labelled_set& set, std::span<const index_t> indices) {
    const index_t size = set.example_size(), batch = static_cast<index_t>(indices.size());
    staging_.resize(static_cast<std::size_t>(batch * size));
    labels_.resize(indices.size());
    for (index_t r = 0; r < batch; ++r) {
      const index_t i = indices[static_cast<std::size_t>(r)];
      if (i < 0 || i >= static_cast<index_t>(set.features.size()) / std::max<index_t>(size, 1))
        throw_invalid_argument("batch_loader::load", concat("index ", i, " outside the set"));
      std::copy_n(set.features.begin() + i * size, size, staging_.begin() + r * size);
      labels_[static_cast<std::size_t>(r)] = i < set.size() ? set.labels[static_cast<std::size_t>(i)] : -1;
    }
    features_.resize(*backend_, shape{batch, size});
    if (batch * size > 0) backend_->copy_from_host(staging_.data(), features_.data(), batch * size);
    return features_;
  }
  const tensor<B>& features() const { return features_; }
  /// The labels of the last batch (-1 where the set has no labels).
  std::span<const index_t> labels() const { return labels_; }

 private:
  B* backend_;
  std::vector<scalar_type> staging_;
  std::vector<index_t> labels_;
  tensor<B> features_;
};

}  // namespace treelora
