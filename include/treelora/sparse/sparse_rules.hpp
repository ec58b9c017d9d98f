// treelora/sparse/sparse_rules.hpp: the sparse-update operator S[.] of TreeLoRA (docs/treelora.md section 3) as policies.
// The paper's update is w <- w - alpha S[grad] - ...; the released code has no S (dense). Each rule acts on the
// LoRA adapters' gradients and says which entries the optimiser step touches (sparse_update), so masked entries
// cost no optimiser work, and `selected_modules` also skips the adapter-gradient GEMMs of left-out modules.
//   before_backward(adapters, context, module_scores)  decide what backward computes (module_scores: one number
//                                                      per adapter from the strategy, larger = more in need)
//   after_backward(adapters, context, update)          sparsify gradients and fill the update mask
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/models/model.hpp"
#include "treelora/optim/sparse_update.hpp"
#include "treelora/core/training_context.hpp"

namespace treelora {

template <class R, class B>
concept SparseRule = Backend<B> && requires(R& rule, std::vector<adapter_view<B>>& adapters, const training_context& c,
                                            std::span<const double> scores, sparse_update<B>& update) {
  { R::name() } -> std::convertible_to<std::string_view>;
  rule.before_backward(adapters, c, scores);
  rule.after_backward(adapters, c, update);
};

namespace detail {
/// Host access to a gradient: the tensor itself on a host-accessible backend, else a copy (and a write-back).
template <Backend B, class F>
void with_host_values(tensor<B>& t, F&& f) {
  if constexpr (B::is_host_accessible) {
    f(std::span<typename B::scalar_type>(t.data(), static_cast<std::size_t>(t.numel())));
  } else {
    auto host = t.to_host();
    f(std::span<typename B::scalar_type>(host));
    t.backend().copy_from_host(host.data(), t.data(), t.numel());
  }
}
template <Backend B, class F>
void for_each_adapter_gradient(std::vector<adapter_view<B>>& adapters, F&& f) {
  for (auto& a : adapters) {
    f(*a.a, *a.a_gradient);
    f(*a.b, *a.b_gradient);
  }
}
}  // namespace detail

/// S = identity: every entry is updated (the released code's behaviour).
struct dense_rule {
  static constexpr std::string_view name() { return "dense"; }
  template <Backend B>
  void before_backward(std::vector<adapter_view<B>>&, const training_context&, std::span<const double>) {}
  template <Backend B>
  void after_backward(std::vector<adapter_view<B>>&, const training_context&, sparse_update<B>& update) {
    update.clear();
  }
};

/// Keeps the k = ceil(fraction * n) largest-magnitude gradient entries of each adapter matrix; the others are zeroed
/// and not updated.
struct top_k_rule {
  double fraction = 0.1;
  static constexpr std::string_view name() { return "top-k"; }
  template <Backend B>
  void before_backward(std::vector<adapter_view<B>>&, const training_context&, std::span<const double>) {
    if (!(fraction > 0 && fraction <= 1)) throw_invalid_argument("top_k_rule", concat("fraction ", fraction, " outside (0, 1]"));
  }
  template <Backend B>
  void after_backward(std::vector<adapter_view<B>>& adapters, const training_context&, sparse_update<B>& update) {
    update.clear();
    detail::for_each_adapter_gradient(adapters, [&](tensor<B>& value, tensor<B>& gradient) {
      detail::with_host_values(gradient, [&](auto g) {
        const auto n = static_cast<index_t>(g.size());
        const index_t k = std::min<index_t>(n, static_cast<index_t>(std::ceil(fraction * double(n))));
        std::vector<index_t> order(g.size());
        std::iota(order.begin(), order.end(), index_t(0));
        std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), [&](index_t a, index_t b) {
          return std::abs(g[std::size_t(a)]) > std::abs(g[std::size_t(b)]) || (std::abs(g[std::size_t(a)]) == std::abs(g[std::size_t(b)]) && a < b);
        });
        std::vector<index_t> kept(order.begin(), order.begin() + k);
        std::sort(kept.begin(), kept.end());
        index_t next = 0;
        for (index_t i = 0; i < n; ++i) {
          if (next < k && kept[std::size_t(next)] == i) ++next;
          else g[std::size_t(i)] = 0;
        }
        update.sparse.emplace_back(&value, std::move(kept));
      });
    });
  }
};

/// The L1 proximal step on the gradient: g <- sign(g) max(|g| - lambda, 0); entries that become zero are not updated.
struct soft_threshold_rule {
  double lambda = 1e-4;
  static constexpr std::string_view name() { return "soft-threshold"; }
  template <Backend B>
  void before_backward(std::vector<adapter_view<B>>&, const training_context&, std::span<const double>) {
    if (!(lambda >= 0)) throw_invalid_argument("soft_threshold_rule", concat("lambda ", lambda, " < 0"));
  }
  template <Backend B>
  void after_backward(std::vector<adapter_view<B>>& adapters, const training_context&, sparse_update<B>& update) {
    update.clear();
    using S = typename B::scalar_type;
    detail::for_each_adapter_gradient(adapters, [&](tensor<B>& value, tensor<B>& gradient) {
      detail::with_host_values(gradient, [&](auto g) {
        std::vector<index_t> kept;
        for (std::size_t i = 0; i < g.size(); ++i) {
          const S shrunk = std::max(std::abs(g[i]) - static_cast<S>(lambda), S(0));
          g[i] = std::copysign(shrunk, g[i]);
          if (shrunk > 0) kept.push_back(static_cast<index_t>(i));
        }
        update.sparse.emplace_back(&value, std::move(kept));
      });
    });
  }
};

/// A fresh random mask of fixed density every step (seeded by (seed, global step)): each entry is kept with
/// probability `density`.
struct random_mask_rule {
  double density = 0.1;
  std::uint64_t seed = 0;
  static constexpr std::string_view name() { return "random-mask"; }
  template <Backend B>
  void before_backward(std::vector<adapter_view<B>>&, const training_context&, std::span<const double>) {
    if (!(density > 0 && density <= 1)) throw_invalid_argument("random_mask_rule", concat("density ", density, " outside (0, 1]"));
  }
  template <Backend B>
  void after_backward(std::vector<adapter_view<B>>& adapters, const training_context& c, sparse_update<B>& update) {
    update.clear();
    std::uint64_t stream = 0;
    detail::for_each_adapter_gradient(adapters, [&](tensor<B>& value, tensor<B>& gradient) {
      const std::uint64_t key = random::mix64(seed ^ random::mix64(std::uint64_t(c.global_step) * 64 + stream++));
      detail::with_host_values(gradient, [&](auto g) {
        std::vector<index_t> kept;
        for (std::size_t i = 0; i < g.size(); ++i) {
          if (random::uniform01(key, i) < density) kept.push_back(static_cast<index_t>(i));
          else g[i] = 0;
        }
        update.sparse.emplace_back(&value, std::move(kept));
      });
    });
  }
};

/// Layer-selective: each step only the `fraction` of adapters with the largest module score (for TreeLoRA: the L1
/// residual between the current and the selected earlier task, i.e. where this task differs most) compute
/// gradients and are updated; the others skip their dA/dB GEMMs and their optimiser step. With no scores (the
/// first task) every module is updated.
struct selected_modules_rule {
  double fraction = 0.5;
  static constexpr std::string_view name() { return "selected-modules"; }
  template <Backend B>
  void before_backward(std::vector<adapter_view<B>>& adapters, const training_context&, std::span<const double> scores) {
    if (!(fraction > 0 && fraction <= 1))
      throw_invalid_argument("selected_modules_rule", concat("fraction ", fraction, " outside (0, 1]"));
    const auto n = adapters.size();
    active_.assign(n, true);
    if (!scores.empty()) {
      if (scores.size() != n)
        throw_invalid_argument("selected_modules_rule", concat(scores.size(), " module scores for ", n, " adapters"));
      const std::size_t keep = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(fraction * double(n))));
      std::vector<std::size_t> order(n);
      std::iota(order.begin(), order.end(), std::size_t(0));
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
      active_.assign(n, false);
      for (std::size_t i = 0; i < keep; ++i) active_[order[i]] = true;
    }
    for (std::size_t l = 0; l < n; ++l) {
      if (!adapters[l].gradients_enabled)
        throw_invalid_argument("selected_modules_rule", concat("adapter '", adapters[l].name, "' cannot switch its gradients off"));
      *adapters[l].gradients_enabled = active_[l];
    }
  }
  template <Backend B>
  void after_backward(std::vector<adapter_view<B>>& adapters, const training_context&, sparse_update<B>& update) {
    update.clear();
    for (std::size_t l = 0; l < adapters.size(); ++l)
      if (l < active_.size() && !active_[l]) {
        update.skipped.push_back(adapters[l].a);
        update.skipped.push_back(adapters[l].b);
      }
  }
  const std::vector<bool>& active() const { return active_; }

  std::vector<bool> active_ = {};  ///< this step's modules (state; public so the rule stays an aggregate)
};

}  // namespace treelora
