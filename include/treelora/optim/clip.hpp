// treelora/optim/clip.hpp: gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_:
//   total = sqrt(sum over trainable gradients of |g|^2);  if total > max: g *= max / (total + 1e-6)
#pragma once

#include <cmath>

#include "treelora/layers/layer.hpp"

namespace treelora {

/// Returns the norm before clipping. Throws std::runtime_error if it is NaN or infinite (a diverged step).
template <Backend B>
double clip_gradient_norm(const parameter_list<B>& params, double max_norm) {
  if (!(max_norm > 0)) throw_invalid_argument("clip_gradient_norm", concat("max_norm ", max_norm, " must be > 0"));
  double total = 0;
  for (const auto& p : params)
    if (p.trainable) total += static_cast<double>(squared_norm<B>(*p.gradient));
  total = std::sqrt(total);
  require_finite(total, "clip_gradient_norm", "gradient norm");
  const double coefficient = max_norm / (total + 1e-6);
  if (coefficient < 1)
    for (const auto& p : params)
      if (p.trainable) scale<B>(static_cast<typename B::scalar_type>(coefficient), *p.gradient);
  return total;
}

}  // namespace treelora
