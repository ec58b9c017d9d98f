// treelora/tree/similarity.hpp: how a task tree scores one task vector against its group's mean.
//
// A SimilarityPolicy turns (v, m) -- one task's vector at the node's module and the mean of the node's
// vectors -- into a scalar score; the SplitPolicy (split.hpp) then cuts the group at a threshold on
// those scores. The score runs on the backend (O(D) work); the policy is bound to the backend type
// only when the tree runs (a member template), so one policy object serves every backend.
#pragma once

#include <cmath>
#include <concepts>
#include <string_view>

#include "treelora/tensor/ops.hpp"

namespace treelora {

/// A similarity rule usable by task_tree<B, ...>: `score(v, mean)` on backend B, and a name.
template <class S, class B>
concept SimilarityPolicy = Backend<B> && requires(const S& s, const_tensor_view<B> v, const_tensor_view<B> m) {
  { s.template score<B>(v, m) } -> std::convertible_to<double>;
  { S::name() } -> std::convertible_to<std::string_view>;
};

/// Reference (released code): s_i = <V_i, m>, the dot product with the group mean (torch.mv).
struct dot_similarity {
  static constexpr std::string_view name() { return "dot"; }
  template <Backend B>
  typename B::scalar_type score(const_tensor_view<B> v, const_tensor_view<B> mean) const {
    return dot<B>(v, mean);
  }
};

/// Paper: s_i = || V_i - m ||_1, the L1 distance to the group mean (a distance: larger = farther).
struct l1_similarity {
  static constexpr std::string_view name() { return "l1"; }
  template <Backend B>
  typename B::scalar_type score(const_tensor_view<B> v, const_tensor_view<B> mean) const {
    return l1_distance<B>(v, mean);
  }
};

/// s_i = <V_i, m> / (||V_i|| ||m|| + eps): the cosine with the group mean (eps = 1e-12 keeps zeros finite).
struct cosine_similarity {
  static constexpr std::string_view name() { return "cosine"; }
  template <Backend B>
  typename B::scalar_type score(const_tensor_view<B> v, const_tensor_view<B> mean) const {
    using scalar = typename B::scalar_type;
    const scalar norms = std::sqrt(squared_norm<B>(v)) * std::sqrt(squared_norm<B>(mean));
    return dot<B>(v, mean) / (norms + static_cast<scalar>(1e-12));
  }
};

}  // namespace treelora
