// tests/test_support.hpp: what every backend-generic test shares: the backend type list, a tolerance
// trait per scalar type, naive reference helpers and a central finite-difference gradient checker.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "treelora/treelora.hpp"

// The backends every generic test runs on. tests/gpu/generic_prelude.hpp recompiles these tests with the CUDA
// backends instead (where a GPU is visible, or with -DTREELORA_CUDA_GENERIC_TESTS=ON).
#define TREELORA_TEST_BACKENDS treelora::cpu_backend<float>, treelora::cpu_backend<double>

namespace treelora::testing {

/// The message of the std::invalid_argument `f` throws (fails the test when it throws nothing or something else).
template <class Function>
std::string error_of(Function&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  FAIL("expected std::invalid_argument");
  return {};
}

/// Whether `text` contains `part` (for checking error messages).
inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// Relative tolerance for comparing a backend's result with a naive double-precision loop.
template <class Scalar>
struct tolerance;
template <>
struct tolerance<float> {
  static constexpr double value = 2e-5;
};
template <>
struct tolerance<double> {
  static constexpr double value = 1e-12;
};
template <class B>
inline constexpr double tolerance_v = tolerance<typename B::scalar_type>::value;

/// max_i |a_i - b_i| / max(1, max_i |b_i|): a scale-aware error that does not blow up near zero.
template <class T, class U>
double relative_error(const std::vector<T>& a, const std::vector<U>& b) {
  REQUIRE(a.size() == b.size());
  double scale = 1.0, worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return worst / scale;
}

/// A tensor filled with seeded normal values.
template <class B>
tensor<B> random_tensor(B& backend, shape s, std::uint64_t seed, double stddev = 1.0) {
  tensor<B> t(backend, s);
  fill_normal<B>(t, 0, static_cast<typename B::scalar_type>(stddev), seed);
  return t;
}

/// Central finite differences of a scalar function with respect to every element of `x` (double only),
/// compared with `analytic`. Returns max |fd - analytic| / max(|fd|, |analytic|, floor) over elements.
inline double finite_difference_error(tensor<cpu_backend<double>>& x, const std::function<double()>& loss,
                                      const std::vector<double>& analytic, double step = 1e-6, double floor = 1e-3) {
  REQUIRE(static_cast<index_t>(analytic.size()) == x.numel());
  double worst = 0.0;
  for (index_t i = 0; i < x.numel(); ++i) {
    const double saved = x.data()[i];
    x.data()[i] = saved + step;
    const double up = loss();
    x.data()[i] = saved - step;
    const double down = loss();
    x.data()[i] = saved;
    const double fd = (up - down) / (2 * step);
    const double a = analytic[static_cast<std::size_t>(i)];
    worst = std::max(worst, std::abs(fd - a) / std::max({std::abs(fd), std::abs(a), floor}));
  }
  return worst;
}

/// <a, b> in double on the host: the "loss" used by backward checks (loss = <output, probe>).
template <class B>
double host_dot(const_tensor_view<B> a, const std::vector<typename B::scalar_type>& b) {
  auto h = a.to_host();
  REQUIRE(h.size() == b.size());
  double s = 0;
  for (std::size_t i = 0; i < h.size(); ++i) s += static_cast<double>(h[i]) * static_cast<double>(b[i]);
  return s;
}

}  // namespace treelora::testing
