// treelora/optim/clip.hpp: gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_:
//   total = sqrt(sum over trainable gradients of |g|^2);  if total > max: g *= max / (total + 1e-6)
// On a backend with BackendDeviceLosses (the CUDA one) the squared norms are summed on the device and read once.
#pragma once

#include <cmath>
#include <vector>

#include "treelora/layers/layer.hpp"

namespace treelora {

/// Returns the norm before clipping. Throws std::runtime_error if it is NaN or infinite (a diverged step).
template <Backend B>
double clip_gradient_norm(const parameter_list<B>& params, double max_norm) {
  if (!(max_norm > 0)) throw_invalid_argument("clip_gradient_norm", concat("max_norm ", max_norm, " must be > 0"));
  double total = 0;
  if constexpr (!B::is_host_accessible && BackendDeviceLosses<B>) {  // one device->host read instead of one per tensor
    thread_local std::vector<const typename B::scalar_type*> arrays;
    thread_local std::vector<index_t> sizes;
    arrays.clear();
    sizes.clear();
    B* backend = nullptr;
    for (const auto& p : params)
      if (p.trainable) {
        arrays.push_back(p.gradient->data());
        sizes.push_back(p.gradient->numel());
        backend = &p.gradient->backend();
      }
    if (backend) total = backend->squared_norm_total(arrays, sizes);
  } else {
    for (const auto& p : params)
      if (p.trainable) total += static_cast<double>(squared_norm<B>(*p.gradient));
  }
  total = std::sqrt(total);
  require_finite(total, "clip_gradient_norm", "gradient norm");
  const double coefficient = max_norm / (total + 1e-6);
  if (coefficient < 1)
    for (const auto& p : params)
      if (p.trainable) scale<B>(static_cast<typename B::scalar_type>(coefficient), *p.gradient);
  return total;
}

}  // namespace treelora
