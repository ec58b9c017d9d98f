// treelora/tree/task_tree.hpp: the TreeLoRA task tree, a K-D-style tree over per-task [L, D] vectors.
//
// Each entry holds one stacked [L, D] vector on a backend (L modules, D = r * d_in values per module).
// A node at depth d splits its entries on module d (reference) or on layer_map[d] (paper): it averages
// the entries' module vectors into m, scores each entry against m with the SimilarityPolicy and cuts the
// scores with the SplitPolicy. Two ways to grow it:
//   build(vectors)  from scratch, as the released code does at the end of every task (docs/treelora.md 1.1);
//   insert(vector)  incrementally into the leaf the split rules route it to (paper, docs/treelora.md 2), with an
//                   optional storage budget that merges the closest pair of entries into one.
// The tree is only the data structure: the rules are the policies, and the bandits in bandit/ walk it.
#pragma once

#include <algorithm>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "treelora/tensor/ops.hpp"
#if defined(TREELORA_COMPILED)
#include "treelora/backend/cpu_backend.hpp"  // for the extern template declarations at the end
#endif
#include "treelora/tree/similarity.hpp"
#include "treelora/tree/split.hpp"
#include "treelora/tree/tree_node.hpp"

namespace treelora {

/// How a task tree is shaped. The defaults are the released code's (reference mode).
struct tree_options {
  /// Nodes at depth >= max_depth are leaves. -1: the number of modules L, or layer_map.size() if given.
  index_t max_depth = -1;
  /// Depth d splits on module layer_map[d] (paper: a configurable layer per level). Empty: module d.
  std::vector<index_t> layer_map = {};
  /// A node with at most leaf_size entries is a leaf (reference: 1).
  index_t leaf_size = 1;
  /// Paper: at most this many entries; inserting past it merges the closest pair. 0 = unlimited.
  index_t storage_budget = 0;
};

/// The per-task drift the reference tree is built on (docs/treelora.md 1.1): G[0] = acc[0], G[k] = acc[k] - acc[k-1].
/// (The tree sees drift; the bandit and the regulariser see the raw acc.)
template <Backend B>
std::vector<tensor<B>> drift_vectors(std::span<const tensor<B>> acc) {
  std::vector<tensor<B>> drift;
  drift.reserve(acc.size());
  for (std::size_t k = 0; k < acc.size(); ++k) {
    if (k > 0 && !(acc[k].shape() == acc[0].shape()))
      throw_invalid_argument("drift_vectors", concat("acc[", k, "] is ", acc[k].shape().to_string(), " but acc[0] is ",
                                                     acc[0].shape().to_string()));
    drift.push_back(acc[k]);
    if (k > 0) axpy<B>(-1, acc[k - 1], drift.back());  // G[k] -= acc[k-1], in the backend's precision
  }
  return drift;
}

template <Backend B, class Similarity = dot_similarity, class Split = lower_median_split>
class task_tree {
  static_assert(SimilarityPolicy<Similarity, B>,
                "treelora::task_tree: Similarity must provide `template <Backend B> scalar score(const_tensor_view<B> "
                "v, const_tensor_view<B> mean) const` and `static name()` (see tree/similarity.hpp)");
  static_assert(SplitPolicy<Split>,
                "treelora::task_tree: Split must provide `double threshold(std::span<const double>) const`, `bool "
                "goes_left(double score, double threshold) const` and `static name()` (see tree/split.hpp)");

 public:
  using scalar_type = typename B::scalar_type;

  /// One stored adapter vector [L, D] and the task ids it stands for (more than one after a merge).
  struct entry {
    tensor<B> vector;
    std::vector<index_t> tasks;
  };

  /// An empty tree for [n_modules, dim] vectors. Throws when the depth or layer map leaves [0, L).
  task_tree(B& backend, index_t n_modules, index_t dim, tree_options options = {}, Similarity similarity = {},
            Split split = {})
      : backend_(&backend), n_modules_(n_modules), dim_(dim), options_(std::move(options)),
        similarity_(similarity), split_(split) {
    if (n_modules <= 0 || dim <= 0)
      throw_invalid_argument("task_tree", concat("needs n_modules > 0 and dim > 0, got ", n_modules, " and ", dim));
    for (std::size_t d = 0; d < options_.layer_map.size(); ++d)
      if (options_.layer_map[d] < 0 || options_.layer_map[d] >= n_modules)
        throw_invalid_argument("task_tree", concat("layer_map[", d, "] = ", options_.layer_map[d],
                                                   " is outside the ", n_modules, " modules"));
    if (options_.max_depth < 0)
      options_.max_depth = options_.layer_map.empty() ? n_modules : static_cast<index_t>(options_.layer_map.size());
    if (options_.layer_map.empty() && options_.max_depth > n_modules)
      throw_invalid_argument("task_tree", concat("max_depth ", options_.max_depth, " exceeds the ", n_modules,
                                                 " modules (depth d uses module d; pass a layer_map)"));
    if (!options_.layer_map.empty() && options_.max_depth > static_cast<index_t>(options_.layer_map.size()))
      throw_invalid_argument("task_tree", concat("max_depth ", options_.max_depth, " exceeds the layer map's ",
                                                 options_.layer_map.size(), " levels"));
    if (options_.leaf_size < 1)
      throw_invalid_argument("task_tree", concat("leaf_size must be >= 1, got ", options_.leaf_size));
    if (options_.storage_budget < 0)
      throw_invalid_argument("task_tree", concat("storage_budget must be >= 0, got ", options_.storage_budget));
  }

  /// Reference (docs/treelora.md 1.1): replaces everything by the tree built from scratch over `vectors`
  /// (entry k = task k). The released code passes the drift vectors (drift_vectors()).
  void build(std::vector<tensor<B>> vectors) {
    for (std::size_t k = 0; k < vectors.size(); ++k) require_shape("task_tree::build", vectors[k], k);
    entries_.clear();
    for (std::size_t k = 0; k < vectors.size(); ++k)
      entries_.push_back(entry{std::move(vectors[k]), {static_cast<index_t>(k)}});
    next_task_ = static_cast<index_t>(entries_.size());
    rebuild();
    refresh_pair_distances();
  }

  /// Paper (docs/treelora.md 2): stores `vector` as task `next_task_id()` and routes it from the root to a leaf by
  /// the split rules (depth-first, one score per level: O(depth * D)); a leaf that outgrows leaf_size
  /// below max_depth is split. Internal means and thresholds are not refreshed (K-D tree practice).
  /// With a storage budget, an insert past it merges the closest pair of entries (L1 over [L, D]) into
  /// their task-weighted mean. Returns the id of the entry that holds the new task afterwards.
  index_t insert(tensor<B> vector) {
    require_shape("task_tree::insert", vector, entries_.size());
    const index_t id = static_cast<index_t>(entries_.size());
    entries_.push_back(entry{std::move(vector), {next_task_++}});
    if (nodes_.empty()) {
      nodes_.push_back(tree_node{{id}, 0, -1, true, 0.0, -1, -1, -1});
      means_.emplace_back();
    } else {
      index_t node = 0;
      for (;;) {
        nodes_[static_cast<std::size_t>(node)].tasks.push_back(id);
        const tree_node& current = nodes_[static_cast<std::size_t>(node)];
        if (current.leaf) break;
        const double s = score(id, current.module, means_[static_cast<std::size_t>(node)]);
        node = split_.goes_left(s, current.threshold) ? current.left : current.right;
      }
      grow(node);
    }
    if (options_.storage_budget > 0) {
      append_pair_distances(id);
      if (static_cast<index_t>(entries_.size()) > options_.storage_budget) return merge_closest(id);
    }
    return id;
  }

  // ---------------------------------------------------------------- inspection
  /// The nodes, root first (empty for an empty tree). Children indices point into this array.
  const std::vector<tree_node>& nodes() const { return nodes_; }
  const tree_node& root() const {
    if (nodes_.empty()) throw_invalid_argument("task_tree::root", "the tree is empty");
    return nodes_.front();
  }
  /// The group mean m of internal node i at its module ([1, D]); empty for leaves.
  const tensor<B>& mean(index_t node) const { return means_.at(static_cast<std::size_t>(node)); }
  const std::vector<entry>& entries() const { return entries_; }
  /// The stored [L, D] vectors, entry by entry (for a bandit's arms).
  std::vector<const_tensor_view<B>> vectors() const {
    std::vector<const_tensor_view<B>> out;
    for (const auto& e : entries_) out.push_back(e.vector.view());
    return out;
  }
  index_t size() const { return static_cast<index_t>(entries_.size()); }
  index_t n_modules() const { return n_modules_; }
  index_t dim() const { return dim_; }
  index_t next_task_id() const { return next_task_; }
  const tree_options& options() const { return options_; }
  /// The module that depth d splits on.
  index_t module_at(index_t depth) const {
    return options_.layer_map.empty() ? depth : options_.layer_map[static_cast<std::size_t>(depth)];
  }
  /// Index of the leaf that holds entry `id`.
  index_t leaf_of(index_t id) const {
    if (id < 0 || id >= size()) throw_invalid_argument("task_tree::leaf_of", concat("entry ", id, " of ", size()));
    index_t node = 0;
    while (!nodes_[static_cast<std::size_t>(node)].leaf) {
      const auto& left = nodes_[static_cast<std::size_t>(nodes_[static_cast<std::size_t>(node)].left)].tasks;
      node = std::find(left.begin(), left.end(), id) != left.end() ? nodes_[static_cast<std::size_t>(node)].left
                                                                   : nodes_[static_cast<std::size_t>(node)].right;
    }
    return node;
  }
  /// Height of the tree (0 for a single leaf).
  index_t height() const {
    index_t h = 0;
    for (const auto& n : nodes_) h = std::max(h, n.depth);
    return h;
  }

  /// Indented text, one node per line, in the released code's format:
  /// "Node(depth=0, tasks=[..], module=0, threshold=..)" / "Leaf(depth=1, tasks=[..])".
  std::string to_string() const {
    std::ostringstream out;
    if (!nodes_.empty()) print(out, 0, 0);
    return out.str();
  }
  /// Graphviz DOT: internal nodes as ellipses (module, threshold), leaves as boxes (their tasks).
  std::string to_dot(std::string_view graph_name = "task_tree") const {
    std::ostringstream out;
    out << "digraph " << graph_name << " {\n  node [fontname=\"Helvetica\"];\n";
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      const auto& n = nodes_[i];
      out << "  n" << i << " [shape=" << (n.leaf ? "box" : "ellipse") << ", label=\"" << task_list(n.tasks, i);
      if (!n.leaf) out << "\\nmodule " << n.module << ", " << Split::name() << " " << n.threshold;
      out << "\"];\n";
      if (!n.leaf) {
        out << "  n" << i << " -> n" << n.left << " [label=\"" << Similarity::name() << " >=\"];\n";
        out << "  n" << i << " -> n" << n.right << ";\n";
      }
    }
    out << "}\n";
    return out.str();
  }

 private:
  void require_shape(std::string_view where, const tensor<B>& v, std::size_t k) const {
    if (v.empty() || !(v.shape() == shape{n_modules_, dim_}))
      throw_invalid_argument(where, concat("vector ", k, " is ", v.empty() ? std::string("empty") : v.shape().to_string(),
                                           ", expected [", n_modules_, ", ", dim_, "]"));
  }
  const_tensor_view<B> row(index_t id, index_t module) const {
    return entries_[static_cast<std::size_t>(id)].vector.view().row_range(module, 1);
  }
  double score(index_t id, index_t module, const tensor<B>& mean) const {
    return static_cast<double>(similarity_.template score<B>(row(id, module), mean.view()));
  }

  /// Builds the whole node array again from the entries.
  void rebuild() {
    nodes_.clear();
    means_.clear();
    if (entries_.empty()) return;
    std::vector<index_t> all(entries_.size());
    for (std::size_t k = 0; k < all.size(); ++k) all[k] = static_cast<index_t>(k);
    nodes_.push_back(tree_node{std::move(all), 0, -1, true, 0.0, -1, -1, -1});
    means_.emplace_back();
    grow(0);
  }

  /// Spec 1.1 node(tasks, depth): leaf if depth >= max_depth or |tasks| <= leaf_size; otherwise
  /// m = mean of V = G[tasks, module(depth), :], s_i = score(V_i, m), t = threshold(s), left = tasks
  /// with goes_left(s_i, t) in original order, right = the rest; if a side is empty (the released
  /// code's positional fallback) left = first floor(|tasks| / 2), right = the rest.
  void grow(index_t index) {
    auto& node = nodes_[static_cast<std::size_t>(index)];
    node.leaf = true;
    node.module = -1;
    node.left = node.right = -1;
    means_[static_cast<std::size_t>(index)] = tensor<B>();
    const index_t n = static_cast<index_t>(node.tasks.size());
    if (node.depth >= options_.max_depth || n <= options_.leaf_size) return;
    const index_t module = module_at(node.depth);
    tensor<B> mean(*backend_, shape{1, dim_});
    for (index_t id : node.tasks) axpy<B>(1, row(id, module), mean);
    scale<B>(static_cast<scalar_type>(1) / static_cast<scalar_type>(n), mean);
    std::vector<double> scores;
    scores.reserve(static_cast<std::size_t>(n));
    for (index_t id : node.tasks) scores.push_back(score(id, module, mean));
    const double threshold = split_.threshold(scores);
    std::vector<index_t> left, right;
    for (index_t i = 0; i < n; ++i)
      (split_.goes_left(scores[static_cast<std::size_t>(i)], threshold) ? left : right)
          .push_back(node.tasks[static_cast<std::size_t>(i)]);
    if (left.empty() || right.empty()) {  // fidelity: the released code's positional fallback
      left.assign(node.tasks.begin(), node.tasks.begin() + n / 2);
      right.assign(node.tasks.begin() + n / 2, node.tasks.end());
    }
    node.leaf = false;
    node.module = module;
    node.threshold = threshold;
    const index_t depth = node.depth;
    means_[static_cast<std::size_t>(index)] = std::move(mean);
    // push_back may move nodes_: no reference to `node` past this point.
    const index_t left_index = static_cast<index_t>(nodes_.size());
    nodes_.push_back(tree_node{std::move(left), depth + 1, -1, true, 0.0, -1, -1, index});
    means_.emplace_back();
    const index_t right_index = static_cast<index_t>(nodes_.size());
    nodes_.push_back(tree_node{std::move(right), depth + 1, -1, true, 0.0, -1, -1, index});
    means_.emplace_back();
    nodes_[static_cast<std::size_t>(index)].left = left_index;
    nodes_[static_cast<std::size_t>(index)].right = right_index;
    grow(left_index);
    grow(right_index);
  }

  // ---------------------------------------------------------------- storage budget
  double pair_distance(index_t a, index_t b) const {
    return static_cast<double>(l1_distance<B>(entries_[static_cast<std::size_t>(a)].vector,
                                              entries_[static_cast<std::size_t>(b)].vector));
  }
  void refresh_pair_distances() {
    distances_.clear();
    if (options_.storage_budget <= 0) return;
    for (index_t a = 0; a < size(); ++a) append_pair_distances(a);
  }
  /// distances_[a] holds the L1 distances from entry a to entries 0..a-1.
  void append_pair_distances(index_t id) {
    distances_.resize(static_cast<std::size_t>(id + 1));
    auto& row_d = distances_[static_cast<std::size_t>(id)];
    row_d.assign(static_cast<std::size_t>(id), 0.0);
    for (index_t b = 0; b < id; ++b) row_d[static_cast<std::size_t>(b)] = pair_distance(id, b);
  }
  /// Merges the closest pair (a < b) into a: v_a = (w_a v_a + w_b v_b) / (w_a + w_b) with w the task
  /// counts; b disappears and later ids shift down by one. a keeps its place in the tree; a leaf left
  /// empty by b makes its parent's subtree be rebuilt. Returns the entry that now holds task `added`.
  index_t merge_closest(index_t added) {
    index_t best_a = 0, best_b = 1;
    double best = std::numeric_limits<double>::infinity();
    for (index_t b = 1; b < size(); ++b)
      for (index_t a = 0; a < b; ++a)
        if (distances_[static_cast<std::size_t>(b)][static_cast<std::size_t>(a)] < best) {
          best = distances_[static_cast<std::size_t>(b)][static_cast<std::size_t>(a)];
          best_a = a;
          best_b = b;
        }
    auto& ea = entries_[static_cast<std::size_t>(best_a)];
    auto& eb = entries_[static_cast<std::size_t>(best_b)];
    const double wa = static_cast<double>(ea.tasks.size()), wb = static_cast<double>(eb.tasks.size());
    scale<B>(static_cast<scalar_type>(wa / (wa + wb)), ea.vector);
    axpy<B>(static_cast<scalar_type>(wb / (wa + wb)), eb.vector, ea.vector);
    ea.tasks.insert(ea.tasks.end(), eb.tasks.begin(), eb.tasks.end());
    std::sort(ea.tasks.begin(), ea.tasks.end());
    entries_.erase(entries_.begin() + best_b);
    // Drop b from the tree and renumber; remember the deepest node that lost its last entry.
    index_t emptied = -1;
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      auto& tasks = nodes_[i].tasks;
      const auto before = tasks.size();
      std::erase(tasks, best_b);
      for (auto& id : tasks)
        if (id > best_b) --id;
      if (tasks.empty() && before > 0 && (emptied < 0 || nodes_[i].depth > nodes_[static_cast<std::size_t>(emptied)].depth))
        emptied = static_cast<index_t>(i);
    }
    if (emptied >= 0) regrow_and_compact(nodes_[static_cast<std::size_t>(emptied)].parent);
    // Distances: drop b's row and column, recompute a's row and the column entries pointing at a.
    distances_.erase(distances_.begin() + best_b);
    for (auto& r : distances_)
      if (static_cast<index_t>(r.size()) > best_b) r.erase(r.begin() + best_b);
    append_row_for(best_a);
    for (index_t c = best_a + 1; c < size(); ++c)
      distances_[static_cast<std::size_t>(c)][static_cast<std::size_t>(best_a)] = pair_distance(c, best_a);
    const index_t holder = added == best_b ? best_a : (added > best_b ? added - 1 : added);
    return holder;
  }
  void append_row_for(index_t a) {
    auto& r = distances_[static_cast<std::size_t>(a)];
    for (index_t b = 0; b < a; ++b) r[static_cast<std::size_t>(b)] = pair_distance(a, b);
  }
  /// Rebuilds the subtree under `index` from its entries (the root when index < 0), then drops the
  /// unreachable nodes and renumbers the rest in depth-first order.
  void regrow_and_compact(index_t index) {
    if (index < 0) {
      rebuild();
      return;
    }
    grow(index);
    std::vector<tree_node> nodes;
    std::vector<tensor<B>> means;
    copy_subtree(0, -1, nodes, means);
    nodes_ = std::move(nodes);
    means_ = std::move(means);
  }
  index_t copy_subtree(index_t from, index_t parent, std::vector<tree_node>& nodes, std::vector<tensor<B>>& means) {
    const index_t to = static_cast<index_t>(nodes.size());
    nodes.push_back(nodes_[static_cast<std::size_t>(from)]);
    means.push_back(std::move(means_[static_cast<std::size_t>(from)]));
    nodes.back().parent = parent;
    if (!nodes.back().leaf) {
      const index_t l = copy_subtree(nodes_[static_cast<std::size_t>(from)].left, to, nodes, means);
      const index_t r = copy_subtree(nodes_[static_cast<std::size_t>(from)].right, to, nodes, means);
      nodes[static_cast<std::size_t>(to)].left = l;
      nodes[static_cast<std::size_t>(to)].right = r;
    }
    return to;
  }

  // ---------------------------------------------------------------- printing
  static std::string task_list(const std::vector<index_t>& tasks, std::size_t) {
    std::string s = "[";
    for (std::size_t i = 0; i < tasks.size(); ++i) s += (i ? ", " : "") + std::to_string(tasks[i]);
    return s + "]";
  }
  void print(std::ostringstream& out, index_t index, int level) const {
    const auto& n = nodes_[static_cast<std::size_t>(index)];
    out << std::string(static_cast<std::size_t>(2 * level), ' ');
    if (n.leaf) {
      out << "Leaf(depth=" << n.depth << ", tasks=" << task_list(n.tasks, 0) << ")\n";
      return;
    }
    out << "Node(depth=" << n.depth << ", tasks=" << task_list(n.tasks, 0) << ", module=" << n.module << ", "
        << Split::name() << "=" << n.threshold << ")\n";
    print(out, n.left, level + 1);
    print(out, n.right, level + 1);
  }

  B* backend_;
  index_t n_modules_, dim_;
  tree_options options_;
  Similarity similarity_;
  Split split_;
  std::vector<entry> entries_;
  std::vector<tree_node> nodes_;
  std::vector<tensor<B>> means_;
  std::vector<std::vector<double>> distances_;
  index_t next_task_ = 0;
};

#if defined(TREELORA_COMPILED)
// The two trees the library's TreeLoRA modes use, on the float CPU backend, are compiled once in treelora::compiled
// (src/tree.cpp): reference mode (dot similarity, lower median) and paper mode (L1, median). docs/build_time.md.
extern template class task_tree<cpu_backend<float>>;
extern template class task_tree<cpu_backend<float>, l1_similarity, median_split>;
#endif

}  // namespace treelora
