// tests/mpi/mpi_test_support.hpp: what the data-parallel tests share: a model's trainable values in order, their
// relative difference, and whether two accuracy matrices are equal entry by entry (NaN where the other has NaN).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "treelora/treelora.hpp"

namespace treelora::testing {

template <class M>
std::vector<double> trained_values(M& model) {
  std::vector<double> out;
  for (auto& p : parameters(model))
    if (p.trainable)
      for (double v : p.value->to_host()) out.push_back(v);
  return out;
}

inline double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

inline bool same_matrix(const accuracy_matrix& a, const accuracy_matrix& b) {
  if (a.tasks() != b.tasks()) return false;
  for (index_t i = 0; i < a.tasks(); ++i)
    for (index_t j = 0; j < a.tasks(); ++j)
      if (std::isnan(a(i, j)) ? !std::isnan(b(i, j)) : a(i, j) != b(i, j)) return false;
  return true;
}

}  // namespace treelora::testing
