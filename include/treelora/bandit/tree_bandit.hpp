// treelora/bandit/tree_bandit.hpp: runs a BanditPolicy over stored task vectors on a backend.
//
// The engine's per-micro-batch call. Arms are stored [L, D] vectors (reference: the RAW acc[0..n-1];
// paper: the task tree's entries); the policy picks one arm per module, this class computes the observed
// losses xi_l = || cur_l - arm[ids[l]]_l ||_1 on the backend (one O(D) distance per module; the
// Exhaustive policy gets all n L of them first) and feeds them back. The arms are borrowed views: the
// tensors must outlive the bandit or the next reset.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"
#include "treelora/tensor/ops.hpp"

namespace treelora {

template <Backend B, class Policy>
class tree_bandit {
  static_assert(BanditPolicy<Policy>,
                "treelora::tree_bandit: Policy must be a BanditPolicy: reset(const bandit_setup&), select(index_t, "
                "random::generator&) -> span<const index_t>, update(span<const index_t>, span<const double>), "
                "static name() (see bandit/bandit_policy.hpp)");

 public:
  explicit tree_bandit(B& backend, Policy policy = Policy(), std::uint64_t seed = 0)
      : backend_(&backend), policy_(std::move(policy)), generator_(seed) {}

  /// Starts over on `arms` (each [L, D]) with T = horizon micro-batches per epoch and an optional tree
  /// over the arms (copied). Throws when there is no arm or the shapes differ.
  void reset(std::vector<const_tensor_view<B>> arms, index_t horizon, std::span<const tree_node> hierarchy = {}) {
    if (arms.empty()) throw_invalid_argument("tree_bandit::reset", "needs at least one arm (n_tasks == 0)");
    for (std::size_t k = 0; k < arms.size(); ++k)
      if (!(arms[k].shape() == arms[0].shape()) || arms[k].shape().rank() != 2)
        throw_invalid_argument("tree_bandit::reset", concat("arm ", k, " is ", arms[k].shape().to_string(),
                                                            ", expected [L, D] like arm 0 ", arms[0].shape().to_string()));
    arms_ = std::move(arms);
    hierarchy_.assign(hierarchy.begin(), hierarchy.end());
    horizon_ = horizon;
    reset();
  }
  /// Same, from owning tensors (for example the stored acc).
  void reset(std::span<const tensor<B>> arms, index_t horizon, std::span<const tree_node> hierarchy = {}) {
    std::vector<const_tensor_view<B>> views;
    for (const auto& a : arms) views.push_back(a.view());
    reset(std::move(views), horizon, hierarchy);
  }
  /// Epoch start: the same arms and tree, every statistic back to zero.
  void reset() {
    if (arms_.empty()) throw_invalid_argument("tree_bandit::reset", "no arms yet");
    policy_.reset(bandit_setup{n_arms(), n_modules(), horizon_, hierarchy_});
    losses_.assign(static_cast<std::size_t>(n_modules()), 0.0);
    draws_at_reset_ = generator_.counter();
    log_steps_.clear(), log_ids_.clear(), log_losses_.clear(), log_all_losses_.clear();
    replayed_from_outside_ = false;
  }

  /// The epoch (and the task) is over: its log is no longer needed (a checkpoint between tasks replays nothing).
  void forget_epoch() {
    draws_at_reset_ = generator_.counter();
    log_steps_.clear(), log_ids_.clear(), log_losses_.clear(), log_all_losses_.clear();
  }

  /// Checkpoints (io/checkpoint.hpp) mid-epoch: the generator's position, and the epoch's steps so far (t, the ids
  /// chosen, the losses observed). Reading one needs the arms first (`arms`, `hierarchy`: what the epoch was reset
  /// with); it then resets and replays the steps: the policy's statistics and the generator end where they were, for
  /// every policy, without one line of policy-specific code. The replayed choices are checked against the logged ones.
  template <class Archive>
  void checkpoint(Archive ar, std::vector<const_tensor_view<B>> arms = {}, std::span<const tree_node> hierarchy = {}) {
    if constexpr (!Archive::loading())
      if (replayed_from_outside_)
        throw_invalid_argument("tree_bandit::checkpoint", "an epoch driven by step_replayed cannot be checkpointed");
    std::uint64_t draws = generator_.counter(), at_reset = draws_at_reset_;
    ar.value("draws", draws), ar.value("draws_at_reset", at_reset), ar.value("horizon", horizon_);
    ar.value("log.steps", log_steps_), ar.value("log.ids", log_ids_), ar.value("log.losses", log_losses_);
    ar.value("log.all_losses", log_all_losses_);
    if constexpr (Archive::loading()) {
      ar.require(horizon_ >= 1, "horizon", "must be >= 1");
      if (arms.empty()) {  // between epochs: nothing to replay
        ar.require(log_steps_.empty(), "log.steps", "a logged epoch needs its arms");
        generator_.set_counter(draws);
        return;
      }
      const auto steps = log_steps_;
      const auto ids = log_ids_;
      const auto losses = log_losses_;
      const auto all = log_all_losses_;
      const std::size_t modules = std::size_t(arms.front().rows()), n = steps.size();
      ar.require(ids.size() == n * modules && losses.size() == n * modules &&
                     all.size() == (FullInformationPolicy<Policy> ? n * modules * arms.size() : 0),
                 "log.steps", "the log's lists do not fit together");
      generator_.set_counter(at_reset);
      reset(std::move(arms), horizon_, hierarchy);
      for (std::size_t s = 0; s < n; ++s) {
        if constexpr (FullInformationPolicy<Policy>) {
          all_losses_.assign(all.begin() + std::ptrdiff_t(s * modules * std::size_t(n_arms())),
                             all.begin() + std::ptrdiff_t((s + 1) * modules * std::size_t(n_arms())));
          policy_.observe_all(all_losses_);
        }
        const auto chosen = policy_.select(steps[s], generator_);
        ar.require(std::equal(chosen.begin(), chosen.end(), ids.begin() + std::ptrdiff_t(s * modules)), "log.ids",
                   concat("step ", s, " of the epoch replays to other choices than it made"));
        ids_.assign(chosen.begin(), chosen.end());
        losses_.assign(losses.begin() + std::ptrdiff_t(s * modules), losses.begin() + std::ptrdiff_t((s + 1) * modules));
        policy_.update(ids_, losses_);
        record(steps[s]);
      }
      ar.require(generator_.counter() == draws, "draws", "the replayed epoch drew another number of random values");
    }
  }

  /// One micro-batch: ids[l] for every module given the running accumulation `current` [L, D] at step t
  /// (0-based within the epoch); the policy's statistics are updated with the observed residuals.
  std::span<const index_t> step(const_tensor_view<B> current, index_t t) {
    require_current(current);
    if constexpr (FullInformationPolicy<Policy>) {
      all_losses_.resize(static_cast<std::size_t>(n_arms() * n_modules()));
      for (index_t k = 0; k < n_arms(); ++k)
        for (index_t l = 0; l < n_modules(); ++l)
          all_losses_[static_cast<std::size_t>(k * n_modules() + l)] = residual(current, k, l);
      policy_.observe_all(all_losses_);
    }
    const auto ids = observe(current, policy_.select(t, generator_));
    record(t);
    return ids;
  }
  /// The same step with the draws given from outside (policies with select_replayed, such as the
  /// reference softmax_distance_ucb): follows a recorded path exactly.
  std::span<const index_t> step_replayed(const_tensor_view<B> current, index_t t, index_t first,
                                         std::span<const index_t> chosen)
    requires requires(Policy& p) { p.select_replayed(t, first, chosen); }
  {
    require_current(current);
    replayed_from_outside_ = true;
    return observe(current, policy_.select_replayed(t, first, chosen));
  }

  /// xi_l of the last step, per module.
  std::span<const double> losses() const { return losses_; }
  std::span<const index_t> last_ids() const { return ids_; }
  Policy& policy() { return policy_; }
  const Policy& policy() const { return policy_; }
  random::generator& generator() { return generator_; }
  index_t n_arms() const { return static_cast<index_t>(arms_.size()); }
  index_t n_modules() const { return arms_.empty() ? 0 : arms_.front().rows(); }

 private:
  void require_current(const_tensor_view<B> current) const {
    if (arms_.empty()) throw_invalid_argument("tree_bandit::step", "reset() was not called");
    if (!(current.shape() == arms_.front().shape()))
      throw_invalid_argument("tree_bandit::step", concat("current is ", current.shape().to_string(), " but the arms are ",
                                                         arms_.front().shape().to_string()));
  }
  double residual(const_tensor_view<B> current, index_t arm, index_t module) const {
    return static_cast<double>(l1_distance<B>(current.row_range(module, 1),
                                              arms_[static_cast<std::size_t>(arm)].row_range(module, 1)));
  }
  /// Appends the step just taken to the epoch's log (what a checkpoint replays).
  void record(index_t t) {
    log_steps_.push_back(t);
    log_ids_.insert(log_ids_.end(), ids_.begin(), ids_.end());
    log_losses_.insert(log_losses_.end(), losses_.begin(), losses_.end());
    if constexpr (FullInformationPolicy<Policy>) log_all_losses_.insert(log_all_losses_.end(), all_losses_.begin(), all_losses_.end());
  }
  std::span<const index_t> observe(const_tensor_view<B> current, std::span<const index_t> ids) {
    ids_.assign(ids.begin(), ids.end());
    for (index_t l = 0; l < n_modules(); ++l) {
      const index_t k = ids_[static_cast<std::size_t>(l)];
      losses_[static_cast<std::size_t>(l)] = FullInformationPolicy<Policy>
                                                 ? all_losses_[static_cast<std::size_t>(k * n_modules() + l)]
                                                 : residual(current, k, l);
    }
    policy_.update(ids_, losses_);
    return ids_;
  }

  B* backend_;
  Policy policy_;
  random::generator generator_;
  std::vector<const_tensor_view<B>> arms_;
  std::vector<tree_node> hierarchy_;
  index_t horizon_ = 1;
  std::vector<double> losses_, all_losses_;
  std::vector<index_t> ids_;
  std::uint64_t draws_at_reset_ = 0;
  std::vector<index_t> log_steps_, log_ids_;  // this epoch's steps: t, then the ids chosen (n_modules per step)
  std::vector<double> log_losses_, log_all_losses_;  // the losses observed (and every arm's, full information)
  bool replayed_from_outside_ = false;
};

}  // namespace treelora
