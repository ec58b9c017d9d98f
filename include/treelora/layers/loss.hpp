// treelora/layers/loss.hpp: losses that return their value and write d loss / d prediction.
#pragma once

#include "treelora/tensor/ops.hpp"

namespace treelora {

/// Mean squared error: mean over all elements of (p - t)^2; gradient 2 (p - t) / numel.
/// Throws std::runtime_error when the loss is not finite (a diverged model), naming the loss.
template <Backend B>
double mse_loss(const_tensor_view<B> prediction, const_tensor_view<B> target, tensor_view<B> gradient) {
  if (!(prediction.shape() == target.shape()) || !(prediction.shape() == gradient.shape()))
    throw_invalid_argument("mse_loss", concat("prediction ", prediction.shape().to_string(), ", target ",
                                               target.shape().to_string(), ", gradient ", gradient.shape().to_string()));
  copy<B>(prediction, gradient);
  axpy<B>(-1, target, gradient);
  const double n = static_cast<double>(prediction.numel());
  const double value = static_cast<double>(squared_norm<B>(gradient)) / n;
  require_finite(value, "mse_loss", "loss");
  scale<B>(static_cast<typename B::scalar_type>(2.0 / n), gradient);
  return value;
}

}  // namespace treelora
