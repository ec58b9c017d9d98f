// treelora/strategy/tree_lora.hpp: the TreeLoRA strategy (Qian et al., ICML 2025), described with the released
// code's quirks in docs/treelora.md ("spec N" below is its section N).
//
// One set of LoRA adapters trains through all tasks (the model's); per step the bandit picks, for every module l,
// an earlier task ids[l], and a regulariser pulls the adapters toward it. Two modes:
//
// reference (spec 1, the released code, quirks kept):
//   X = [L, D] current VALUES of the LoRA-A matrices;  cur += L X / T        (quirk: the factor L)
//   reg_t = reg t / T (ramp restarting every epoch);   ids = softmax-distance-UCB selection over the RAW acc
//   R = -sum_l <X_l, acc[ids[l]]_l>;  reg_loss = R / (value(R) + 1e-5) * value(loss) * reg_t;  total = loss - reg_loss
//   => dA_l += -reg_t loss acc[ids[l]]_l / (S - 1e-5),  S = sum_j <X_j, acc[ids[j]]_j>
//   epoch start: cur = 0, bandit statistics = 0.  task end: acc[n] = cur; tree rebuilt from the drift G[k] = acc[k] - acc[k-1]
//
// paper (spec 2, the equations):
//   task vector g_n = mean over the task's steps of the REAL gradient of the loss w.r.t. A (optionally A and B)
//   ids = LCB descent of the task tree, residual xi = || g_n(t) - g_k ||_1 with g_n(t) the running mean so far
//   update: w <- w - alpha S[grad loss] - lambda grad || g_n - g_k ||_1. We read the last term to first order with the
//   Hessian taken as the identity: it adds lambda sign(g_n(t) - g_k) to the gradient of A (pulling this task's
//   gradient toward the similar task's). Task end: insert g_n into the tree (nearest leaf, depth-first), merging the
//   closest pair past the storage budget.
// Sparse rule (spec 3): applied to the adapters' gradients after the regulariser; the optimiser skips masked work.
#pragma once

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "treelora/bandit/lcb.hpp"
#include "treelora/bandit/softmax_distance_ucb.hpp"
#include "treelora/bandit/thompson_sampling.hpp"
#include "treelora/bandit/tree_bandit.hpp"
#include "treelora/sparse/sparse_rules.hpp"
#include "treelora/strategy/strategy.hpp"
#include "treelora/tree/task_tree.hpp"

namespace treelora {

enum class tree_lora_mode { reference, paper };

/// What paper mode's L1 pull acts on (the paper's update term lambda grad || g_n - g_k ||_1 admits both readings).
enum class pull_target {
  gradient,    ///< grad += lambda sign(g_n(t) - g_k): this task's running gradient toward the similar task's
  parameters,  ///< grad += lambda sign(w - w_k): the adapters toward their values when the similar task ended
};

struct tree_lora_config {
  /// Unset: the class's own mode (tree_lora_reference: reference, tree_lora_paper: paper, the generic tree_lora:
  /// reference). Setting it to the other mode of tree_lora_reference or tree_lora_paper is an error.
  std::optional<tree_lora_mode> mode = std::nullopt;
  double reference_strength = 0.5;  ///< reference: reg, the end of the per-epoch ramp (0.5 in every released script)
  double pull_strength = 1e-2;      ///< paper: lambda of the L1 pull (tuned on the planted stream, docs/strategies.md)
  bool include_b = true;        ///< paper: task vectors of A and B gradients (reference: A values only)
  pull_target pull = pull_target::parameters;  ///< paper: what the L1 pull acts on
  tree_options tree = {};       ///< paper: depth, layer map, storage budget (reference: the defaults)
  std::uint64_t seed = 0;       ///< the bandit's draws
};

template <Backend B, class Tree = task_tree<B>, class Policy = softmax_distance_ucb<float>, class Sparse = dense_rule>
class tree_lora {
  static_assert(SparseRule<Sparse, B>, "treelora::tree_lora: Sparse must model SparseRule (sparse/sparse_rules.hpp)");

 public:
  using scalar_type = typename B::scalar_type;

  explicit tree_lora(tree_lora_config config = {}, Policy policy = Policy(), Sparse sparse = Sparse())
      : tree_lora(config.mode.value_or(tree_lora_mode::reference), "tree_lora", std::move(config), std::move(policy),
                  std::move(sparse)) {}
  /// `tree_lora<...> s({})`: the defaults (without this overload `({})` is ambiguous with the copy constructor).
  explicit tree_lora(std::initializer_list<tree_lora_config> config)
      : tree_lora(single_config(config, "tree_lora")) {}

  std::string name() const {
    std::string n = mode_ == tree_lora_mode::reference ? "TreeLoRA-reference" : "TreeLoRA-paper";
    if (Sparse::name() != std::string_view("dense")) n += concat("+", Sparse::name());
    return n;
  }
  tree_lora_mode mode() const { return mode_; }

  // ---------------------------------------------------------------- hooks
  template <Model M>
  void begin_task(M& model, const training_context& context) {
    adapters_ = model.adapters();
    if (adapters_.empty()) throw_invalid_argument("tree_lora::begin_task", "the model has no LoRA adapters");
    modules_ = static_cast<index_t>(adapters_.size());
    // Modules of different sizes (grouped-query attention's narrower v_proj, LoRA on down_proj) are stacked as rows
    // of the largest size, zero-padded: the padding is zero in every task vector, gradient and anchor, so it adds
    // nothing to a distance and receives no pull.
    const index_t dim = largest_module(adapters_);
    if (dim_ != 0 && dim != dim_)
      throw_invalid_argument("tree_lora::begin_task", concat("module size changed from ", dim_, " to ", dim));
    dim_ = dim;
    B& backend = model.backend();
    backend_ = &backend;
    if (!tree_) tree_.emplace(backend, modules_, dim_, config_.tree);
    if (!bandit_) bandit_.emplace(backend, policy_, config_.seed);
    current_ = tensor<B>(backend, shape{modules_, dim_});
    stacked_ = tensor<B>(backend, shape{modules_, dim_});
    task_steps_ = 0;
    in_task_ = true;
    (void)context;
  }

  template <Model M>
  void begin_epoch(M&, const training_context& context) {
    if (mode_ == tree_lora_mode::reference) {
      current_.fill(0);  // cur = 0 every epoch (reference quirk: the task vector is the LAST epoch's)
      if (context.task > 0) bandit_->reset(std::span<const tensor<B>>(acc_), context.steps_per_epoch, tree_->nodes());
    } else if (context.task > 0 && context.epoch == 0) {
      std::vector<const_tensor_view<B>> arms;
      for (const auto& e : tree_->entries()) arms.push_back(e.vector.view());
      bandit_->reset(std::move(arms), context.steps_per_epoch, tree_->nodes());
    } else if (context.task > 0) {
      bandit_->reset();
    }
  }

  /// Sparse rules that decide before backward (selected modules) get the last step's per-module residuals.
  template <Model M>
  void before_backward(M&, const training_context& context) {
    sparse_.before_backward(adapters_, context, context.task > 0 && have_scores_ ? std::span<const double>(bandit_->losses())
                                                                                  : std::span<const double>());
  }

  template <Model M>
  double after_backward(M&, const training_context& context) {
    last_regulariser_ = 0;
    if (mode_ == tree_lora_mode::reference) reference_step(context);
    else paper_step(context);
    sparse_.after_backward(adapters_, context, update_);
    ++task_steps_;
    return last_regulariser_;
  }

  template <Model M, class Optimizer>
  void update(M&, Optimizer& optimizer, const training_context&) {
    if constexpr (requires { optimizer.step(update_); }) optimizer.step(update_);
    else optimizer.step();  // an optimiser without sparse steps: the rule's zeroed gradients still apply
  }

  template <Model M>
  void end_task(M&, const training_context& context) {
    acc_.push_back(current_);  // acc[n] = cur (a copy)
    if (mode_ == tree_lora_mode::reference) {
      tree_->build(drift_vectors<B>(acc_));  // the tree sees per-task drift; the bandit keeps the raw acc
    } else {
      // Which entry held each earlier task before the insert (a budget can merge any pair of entries).
      std::vector<index_t> old_entry_of_task(static_cast<std::size_t>(context.task + 1), -1);
      for (std::size_t e = 0; e < tree_->entries().size(); ++e)
        for (index_t task : tree_->entries()[e].tasks) old_entry_of_task[std::size_t(task)] = static_cast<index_t>(e);
      tree_->insert(current_);
      // Adapter values now, at the end of this task: the parameter anchor of its entry.
      const index_t width = largest_anchor(adapters_);
      tensor<B> values(*backend_, shape{modules_, width});  // zero-padded rows
      for (index_t l = 0; l < modules_; ++l) {
        const auto& a = adapters_[std::size_t(l)];
        backend_->copy(a.a->data(), values.data() + l * width, a.a->numel());
        backend_->copy(a.b->data(), values.data() + l * width + a.a->numel(), a.b->numel());
      }
      // Each entry's anchor is the task-weighted mean of its tasks' anchors (merged entries average).
      std::vector<tensor<B>> anchors;
      for (const auto& entry : tree_->entries()) {
        tensor<B> anchor(*backend_, values.shape());
        const auto weight = static_cast<scalar_type>(1.0 / double(entry.tasks.size()));
        for (index_t task : entry.tasks)
          axpy<B>(weight, task == context.task ? values : snapshots_[std::size_t(old_entry_of_task[std::size_t(task)])], anchor);
        anchors.push_back(std::move(anchor));
      }
      snapshots_ = std::move(anchors);
    }
    have_scores_ = false;
    in_task_ = false;
    if (bandit_) bandit_->forget_epoch();
  }

  std::size_t state_bytes() const {
    std::size_t entries = 0;
    if (tree_) entries = tree_->entries().size();
    const std::size_t per_vector = static_cast<std::size_t>(modules_ * dim_) * sizeof(scalar_type);
    std::size_t snapshot_bytes = 0;
    for (const auto& t : snapshots_) snapshot_bytes += static_cast<std::size_t>(t.numel()) * sizeof(scalar_type);
    return (acc_.size() + entries + 1) * per_vector + snapshot_bytes;
  }

  /// Checkpoints between tasks (io/checkpoint.hpp): the stored task vectors (acc, which are also the tree's inserts
  /// in order), the paper mode's parameter anchors and the bandit generator's position. The tree is rebuilt from
  /// the vectors exactly as end_task built it (reference: from the drift; paper: the same inserts in the same order).
  template <class Archive, Model M>
  void checkpoint(Archive ar, M& model) {
    ar.expect("name", name());
    ar.expect("mode", mode_), ar.expect("reference_strength", config_.reference_strength);
    ar.expect("pull_strength", config_.pull_strength), ar.expect("include_b", config_.include_b), ar.expect("pull", config_.pull);
    ar.expect("tree.max_depth", config_.tree.max_depth), ar.expect("tree.layer_map", config_.tree.layer_map);
    ar.expect("tree.leaf_size", config_.tree.leaf_size), ar.expect("tree.storage_budget", config_.tree.storage_budget);
    ar.expect("seed", config_.seed), ar.expect("policy", std::string(Policy::name()));
    B& backend = model.backend();
    ar.value("modules", modules_), ar.value("dim", dim_);
    ar.tensors("acc", acc_, backend);
    ar.tensors("snapshots", snapshots_, backend);
    // mid-task: the running task vector, the steps so far, the last choice (the bandit's epoch is replayed below)
    ar.value("in_task", in_task_), ar.value("task_steps", task_steps_), ar.value("selection", selection_);
    ar.value("have_scores", have_scores_), ar.tensor("current", current_, backend);
    if constexpr (!Archive::loading()) {
      if (bandit_) bandit_->checkpoint(ar.scope("bandit"));
      else {
        tree_bandit<B, Policy>(backend, policy_, config_.seed).checkpoint(ar.scope("bandit"));
      }
    }
    if constexpr (Archive::loading()) {
      ar.require(modules_ >= 0 && dim_ >= 0 && (acc_.empty() || (modules_ > 0 && dim_ > 0)), "modules", "must be positive");
      // After a task, [modules, dim] is the model's [L, D] (begin_task's stack) and a paper-mode anchor is every
      // module's A and B values, [L, |A| + |B|]: the bandit and the pull read them row by row.
      const auto adapters = model.adapters();
      const index_t model_modules = index_t(adapters.size()), model_dim = largest_module(adapters);
      const index_t anchor = largest_anchor(adapters);
      ar.require((modules_ == 0 && dim_ == 0) || (modules_ == model_modules && dim_ == model_dim), "modules",
                 concat("modules ", modules_, " and dim ", dim_, " must be 0 before the first task, then the model's ",
                        model_modules, " adapters of ", model_dim, " entries"));
      for (const auto& v : acc_) ar.require(v.shape() == shape{modules_, dim_}, "acc", concat("must be [", modules_, ", ", dim_, "]"));
      for (const auto& s : snapshots_)
        ar.require(s.shape() == shape{modules_, anchor}, "snapshots", concat("must be [", modules_, ", ", anchor, "]"));
      if (mode_ == tree_lora_mode::paper) ar.require(snapshots_.size() <= acc_.size(), "snapshots", "at most one per task");
      backend_ = &backend;
      tree_.reset(), bandit_.reset();
      if (!acc_.empty()) {
        tree_.emplace(backend, modules_, dim_, config_.tree);
        if (mode_ == tree_lora_mode::reference) tree_->build(drift_vectors<B>(acc_));
        else
          for (const auto& v : acc_) tree_->insert(v);
        if (mode_ == tree_lora_mode::paper)
          ar.require(snapshots_.size() == tree_->entries().size(), "snapshots", "must be one per tree entry");
      }
      ar.require(current_.empty() || current_.shape() == shape{modules_, dim_}, "current", "must be [modules, dim]");
      bandit_.emplace(backend, policy_, config_.seed);
      std::vector<const_tensor_view<B>> arms;  // what begin_epoch gave the bandit, when a task is under way
      if (in_task_ && !acc_.empty()) {
        if (mode_ == tree_lora_mode::reference)
          for (const auto& a : acc_) arms.push_back(a.view());
        else
          for (const auto& e : tree_->entries()) arms.push_back(e.vector.view());
      }
      bandit_->checkpoint(ar.scope("bandit"), std::move(arms), tree_ ? std::span<const tree_node>(tree_->nodes())
                                                                     : std::span<const tree_node>());
      if (in_task_) {
        adapters_ = model.adapters();
        ar.require(index_t(adapters_.size()) == modules_ && !current_.empty(), "modules",
                   "a checkpoint taken during a task must fit the model's adapters");
        stacked_ = tensor<B>(backend, shape{modules_, dim_});
        if (!tree_) tree_.emplace(backend, modules_, dim_, config_.tree);  // as begin_task made it
      }
    }
  }

  // ---------------------------------------------------------------- observation
  std::span<const index_t> last_selection() const { return selection_; }
  double last_regulariser() const { return last_regulariser_; }
  const std::vector<tensor<B>>& stored_vectors() const { return acc_; }
  const Tree& tree() const { return *tree_; }
  const tree_bandit<B, Policy>& bandit() const { return *bandit_; }
  const Sparse& sparse_rule() const { return sparse_; }
  const sparse_update<B>& last_update() const { return update_; }

 protected:
  /// The mode is `mode`; `who` names the class in errors (the aliases below fix their mode through here).
  tree_lora(tree_lora_mode mode, std::string_view who, tree_lora_config config, Policy policy, Sparse sparse)
      : config_(std::move(config)), mode_(mode), policy_(std::move(policy)), sparse_(std::move(sparse)) {
    if (config_.mode && *config_.mode != mode)
      throw_invalid_argument(who, concat("runs ", mode == tree_lora_mode::paper ? "paper" : "reference",
                                         " mode but the config asks for ",
                                         *config_.mode == tree_lora_mode::paper ? "paper" : "reference",
                                         " mode: use tree_lora_paper<B> for paper mode, tree_lora_reference<B> for the "
                                         "released behaviour, or leave .mode unset"));
    config_.mode = mode;
    if (!(config_.reference_strength >= 0) || !(config_.pull_strength >= 0) || !std::isfinite(config_.reference_strength) ||
        !std::isfinite(config_.pull_strength))
      throw_invalid_argument(who, concat("regulariser strengths must be finite and >= 0, got reference ",
                                         config_.reference_strength, " and pull ", config_.pull_strength));
  }
  static tree_lora_config single_config(std::initializer_list<tree_lora_config> config, std::string_view who) {
    if (config.size() > 1) throw_invalid_argument(who, concat(config.size(), " configs given, expected at most one"));
    return config.size() ? *config.begin() : tree_lora_config{};
  }

 private:
  index_t module_size(const adapter_view<B>& a) const {
    return a.a->numel() + (mode_ == tree_lora_mode::paper && config_.include_b ? a.b->numel() : 0);
  }
  /// D: the row width of the stacked [L, D] task vectors (the largest module).
  index_t largest_module(const std::vector<adapter_view<B>>& adapters) const {
    index_t d = 0;
    for (const auto& a : adapters) d = std::max(d, module_size(a));
    return d;
  }
  /// The row width of a paper-mode anchor: the largest |A| + |B|.
  static index_t largest_anchor(const std::vector<adapter_view<B>>& adapters) {
    index_t d = 0;
    for (const auto& a : adapters) d = std::max(d, a.a->numel() + a.b->numel());
    return d;
  }

  /// stacked_[l] = A_l values (reference) or the gradients of A_l (and B_l) (paper), flattened row-major.
  void stack(bool gradients) {
    for (index_t l = 0; l < modules_; ++l) {
      const auto& a = adapters_[std::size_t(l)];
      scalar_type* row = stacked_.data() + l * dim_;
      const tensor<B>& first = gradients ? *a.a_gradient : *a.a;
      backend_->copy(first.data(), row, first.numel());
      if (gradients && config_.include_b) backend_->copy(a.b_gradient->data(), row + first.numel(), a.b_gradient->numel());
    }
  }

  void reference_step(const training_context& c) {
    if (config_.reference_strength <= 0) return;  // the released loop does all of this only when reg > 0
    const double reg_t = config_.reference_strength * double(c.step) / double(c.steps_per_epoch);  // ramp
    stack(false);                                                                                // X = A values
    axpy<B>(static_cast<scalar_type>(double(modules_) / double(c.steps_per_epoch)), stacked_, current_);  // cur += L X / T
    if (c.task == 0) return;
    const auto ids = bandit_->step(current_, c.step);
    selection_.assign(ids.begin(), ids.end());
    have_scores_ = true;
    // S = sum_l <X_l, acc[ids[l]]_l>
    double s = 0;
    for (index_t l = 0; l < modules_; ++l)
      s += static_cast<double>(backend_->dot(dim_, stacked_.data() + l * dim_, stored_row(selection_[std::size_t(l)], l)));
    const double r = -s;
    last_regulariser_ = r / (r + 1e-5) * c.loss * reg_t;  // reg_loss (subtracted from the loss)
    const double coefficient = -reg_t * c.loss / (s - 1e-5);  // d(loss - reg_loss)/dX_l = coefficient * acc[ids[l]]_l
    require_finite(coefficient, "tree_lora (reference regulariser)", "gradient coefficient");
    if (coefficient == 0) return;
    for (index_t l = 0; l < modules_; ++l)
      backend_->axpy(adapters_[std::size_t(l)].a->numel(), static_cast<scalar_type>(coefficient),
                     stored_row(selection_[std::size_t(l)], l), adapters_[std::size_t(l)].a_gradient->data());
  }

  void paper_step(const training_context& c) {
    stack(true);  // the real gradient of the task loss
    // g_n(t): running mean of the gradients seen in this task
    const double steps = double(task_steps_ + 1);
    scale<B>(static_cast<scalar_type>(double(task_steps_) / steps), current_);
    axpy<B>(static_cast<scalar_type>(1.0 / steps), stacked_, current_);
    if (c.task == 0 || tree_->size() == 0) return;
    const auto ids = bandit_->step(current_, c.step);
    selection_.assign(ids.begin(), ids.end());
    have_scores_ = true;
    double pull = 0;
    for (double xi : bandit_->losses()) pull += xi;
    last_regulariser_ = config_.pull_strength * pull;  // lambda sum_l || g_n(t)_l - g_k_l ||_1
    if (config_.pull_strength == 0) return;
    for (index_t l = 0; l < modules_; ++l) {
      const auto& a = adapters_[std::size_t(l)];
      const index_t entry = selection_[std::size_t(l)], na = a.a->numel(), nb = a.b->numel();
      if (config_.pull == pull_target::gradient) {
        // grad A_l += lambda sign(g_n(t)_l - g_k_l)   (first-order reading of lambda grad || g_n - g_k ||_1)
        const auto& target = tree_->entries()[std::size_t(entry)].vector;
        pull_sign(current_.data() + l * dim_, target.data() + l * dim_, na, a.a_gradient->data());
        if (config_.include_b)
          pull_sign(current_.data() + l * dim_ + na, target.data() + l * dim_ + na, nb, a.b_gradient->data());
      } else {
        // grad w_l += lambda sign(w_l - w_k,l): the adapters toward where they were when the similar task ended
        const auto& snapshot = snapshots_[std::size_t(entry)];
        const index_t width = snapshot.shape()[1];
        pull_sign(a.a->data(), snapshot.data() + l * width, na, a.a_gradient->data());
        pull_sign(a.b->data(), snapshot.data() + l * width + na, nb, a.b_gradient->data());
      }
    }
  }

  /// gradient += lambda sign(current - target), on the backend.
  void pull_sign(const scalar_type* current, const scalar_type* target, index_t n, scalar_type* gradient) {
    scratch_.resize(*backend_, shape{n});
    backend_->copy(current, scratch_.data(), n);
    backend_->axpy(n, scalar_type(-1), target, scratch_.data());
    backend_->map(unary_function::sign, n, scratch_.data(), scratch_.data());
    backend_->axpy(n, static_cast<scalar_type>(config_.pull_strength), scratch_.data(), gradient);
  }

  const scalar_type* stored_row(index_t task, index_t module) const {
    return acc_[std::size_t(task)].data() + module * dim_;
  }

  tree_lora_config config_;
  tree_lora_mode mode_;
  Policy policy_;
  Sparse sparse_;
  B* backend_ = nullptr;
  std::vector<adapter_view<B>> adapters_;
  index_t modules_ = 0, dim_ = 0, task_steps_ = 0;
  std::optional<Tree> tree_;
  std::optional<tree_bandit<B, Policy>> bandit_;
  std::vector<tensor<B>> acc_, snapshots_;
  tensor<B> current_, stacked_, scratch_;
  std::vector<index_t> selection_;
  sparse_update<B> update_;
  double last_regulariser_ = 0;
  bool have_scores_ = false;
  bool in_task_ = false;
};

/// Reference mode as released: dot-product tree with the lower-median split, softmax-distance-UCB, dense updates.
/// Always reference mode (a config asking for paper mode is an error).
template <Backend B>
class tree_lora_reference
    : public tree_lora<B, task_tree<B, dot_similarity, lower_median_split>, softmax_distance_ucb<float>, dense_rule> {
  using base = tree_lora<B, task_tree<B, dot_similarity, lower_median_split>, softmax_distance_ucb<float>, dense_rule>;

 public:
  explicit tree_lora_reference(tree_lora_config config = {})
      : base(tree_lora_mode::reference, "tree_lora_reference", std::move(config), {}, {}) {}
  explicit tree_lora_reference(std::initializer_list<tree_lora_config> config)
      : tree_lora_reference(base::single_config(config, "tree_lora_reference")) {}
};

/// Paper mode: L1 tree with the median split, deterministic LCB descent, a sparse rule of your choice.
/// Always paper mode (a config asking for reference mode is an error).
template <Backend B, class Sparse = dense_rule>
class tree_lora_paper : public tree_lora<B, task_tree<B, l1_similarity, median_split>, lcb, Sparse> {
  using base = tree_lora<B, task_tree<B, l1_similarity, median_split>, lcb, Sparse>;

 public:
  explicit tree_lora_paper(tree_lora_config config = {}, Sparse sparse = Sparse())
      : base(tree_lora_mode::paper, "tree_lora_paper", std::move(config), lcb(), std::move(sparse)) {}
  explicit tree_lora_paper(std::initializer_list<tree_lora_config> config)
      : tree_lora_paper(base::single_config(config, "tree_lora_paper")) {}
};

/// Paper mode with Gaussian Thompson sampling (bandit/thompson_sampling.hpp) in place of the LCB: a variant no
/// paper has, with lower regret than the LCB in the bandit benchmarks (docs/benchmarks.md). `scale`: the standard
/// deviation of the sampled means for an arm pulled once, in units of the bandit's loss (the L1 residuals).
template <Backend B, class Sparse = dense_rule>
class tree_lora_thompson : public tree_lora<B, task_tree<B, l1_similarity, median_split>, thompson_sampling, Sparse> {
  using base = tree_lora<B, task_tree<B, l1_similarity, median_split>, thompson_sampling, Sparse>;

 public:
  explicit tree_lora_thompson(tree_lora_config config = {}, double scale = 0.2, Sparse sparse = Sparse())
      : base(tree_lora_mode::paper, "tree_lora_thompson", std::move(config), thompson_sampling(scale), std::move(sparse)) {}
};

}  // namespace treelora
