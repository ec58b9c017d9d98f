// treelora/data/synthetic.hpp: a task stream with a planted task hierarchy, for fast tests of the whole loop.
// Tasks come in groups. Task k of group g labels x ~ N(0, I_d) by argmax_c (W_k x)_c with
//   W_k = W_root + group_scale * W_g + task_scale * E_k      (all entries standard normal)
// so tasks of one group share most of their decision rule. Task k owns classes [k C, (k + 1) C) of a shared
// label space, or (shared_classes) every task labels into the same C classes (domain-incremental: one head for
// all tasks, so the adapters' gradients of similar tasks are comparable). Tasks are ordered round-robin over groups (g0, g1, ..., g0, g1, ...) so that similar tasks
// are never neighbours in time.
#pragma once

#include <algorithm>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/data/dataset.hpp"

namespace treelora {

struct planted_hierarchy_config {
  index_t groups = 2;
  index_t tasks_per_group = 3;
  std::vector<index_t> group_sizes = {};  ///< tasks in each group; overrides groups x tasks_per_group when set
  index_t classes_per_task = 2;
  index_t inputs = 16;
  index_t train_per_task = 512;
  index_t test_per_task = 256;
  double root_scale = 0.0;
  double group_scale = 1.0;
  double task_scale = 0.25;
  bool shared_classes = false;  ///< every task uses classes [0, C) (domain-incremental); else task k owns [k C, (k+1) C)
  std::uint64_t seed = 0;
};

struct planted_hierarchy {
  task_stream stream;
  std::vector<index_t> group_of_task;  ///< the planted grouping, by task index in the stream
};

inline planted_hierarchy make_planted_hierarchy(planted_hierarchy_config c) {
  if (!c.group_sizes.empty()) {
    c.groups = static_cast<index_t>(c.group_sizes.size());
    c.tasks_per_group = 1;
    for (index_t size : c.group_sizes)
      if (size <= 0) throw_invalid_argument("make_planted_hierarchy", concat("group size ", size, " <= 0"));
  } else {
    c.group_sizes.assign(std::size_t(std::max<index_t>(c.groups, 0)), c.tasks_per_group);
  }
  if (c.groups <= 0 || c.tasks_per_group <= 0 || c.classes_per_task < 2 || c.inputs <= 0 || c.train_per_task <= 0 ||
      c.test_per_task <= 0)
    throw_invalid_argument("make_planted_hierarchy", concat("groups ", c.groups, ", tasks per group ", c.tasks_per_group,
                                                             ", classes per task ", c.classes_per_task, ", inputs ", c.inputs,
                                                             " must all be positive (classes >= 2)"));
  random::generator g(c.seed);
  const index_t weights = c.classes_per_task * c.inputs;
  auto draw = [&](double scale) {
    std::vector<double> w(static_cast<std::size_t>(weights));
    for (auto& v : w) v = scale * g.normal();
    return w;
  };
  const auto root = draw(c.root_scale);
  std::vector<std::vector<double>> group_weights;
  for (index_t k = 0; k < c.groups; ++k) group_weights.push_back(draw(c.group_scale));

  planted_hierarchy out;
  // Round-robin order over groups: g0, g1, ..., g0, g1, ... skipping groups that ran out of tasks.
  std::vector<index_t> order, left = c.group_sizes;
  for (bool any = true; any;) {
    any = false;
    for (index_t group = 0; group < c.groups; ++group)
      if (left[std::size_t(group)] > 0) {
        order.push_back(group);
        --left[std::size_t(group)];
        any = true;
      }
  }
  const index_t tasks = static_cast<index_t>(order.size());
  out.stream.name = "planted-hierarchy";
  out.stream.total_classes = c.shared_classes ? c.classes_per_task : tasks * c.classes_per_task;
  for (index_t k = 0; k < tasks; ++k) {
    const index_t group = order[std::size_t(k)];
    auto w = draw(c.task_scale);
    for (index_t i = 0; i < weights; ++i)
      w[std::size_t(i)] += root[std::size_t(i)] + group_weights[std::size_t(group)][std::size_t(i)];
    classification_task task;
    task.name = concat("task", k, "-group", group);
    for (index_t cls = 0; cls < c.classes_per_task; ++cls)
      task.classes.push_back((c.shared_classes ? 0 : k * c.classes_per_task) + cls);
    auto fill = [&](labelled_set& set, index_t n) {
      set.example_shape = shape{c.inputs};
      set.features.resize(std::size_t(n * c.inputs));
      set.labels.resize(std::size_t(n));
      for (index_t e = 0; e < n; ++e) {
        float* x = set.features.data() + e * c.inputs;
        for (index_t i = 0; i < c.inputs; ++i) x[i] = static_cast<float>(g.normal());
        index_t best = 0;
        double best_score = -1e300;
        for (index_t cls = 0; cls < c.classes_per_task; ++cls) {
          double score = 0;
          for (index_t i = 0; i < c.inputs; ++i) score += w[std::size_t(cls * c.inputs + i)] * x[i];
          if (score > best_score) { best_score = score; best = cls; }
        }
        set.labels[std::size_t(e)] = task.classes[std::size_t(best)];
      }
    };
    fill(task.train, c.train_per_task);
    fill(task.test, c.test_per_task);
    out.stream.tasks.push_back(std::move(task));
    out.group_of_task.push_back(group);
  }
  return out;
}

}  // namespace treelora
