// treelora/tensor/eigen_interop.hpp: zero-copy views between CPU tensors and Eigen. Opt-in: the umbrella header
// does not include it, so that a program that never names Eigen does not parse it.
#pragma once

#include "treelora/core/eigen.hpp"

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/tensor/tensor.hpp"

namespace treelora {

/// Row-major Eigen maps of raw memory with a leading dimension: the zero-copy interop types.
template <class Scalar>
using eigen_matrix_map =
    Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class Scalar>
using const_eigen_matrix_map = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                                          Eigen::Unaligned, Eigen::OuterStride<>>;

/// An Eigen row-major map over a CPU tensor read as [rows, cols]. No copy: writes go to the tensor.
template <class Scalar>
auto as_eigen(tensor_view<cpu_backend<Scalar>> t) {
  return eigen_matrix_map<Scalar>(t.data(), t.rows(), t.cols(), Eigen::OuterStride<>(t.cols()));
}
template <class Scalar>
auto as_eigen(const_tensor_view<cpu_backend<Scalar>> t) {
  return const_eigen_matrix_map<Scalar>(t.data(), t.rows(), t.cols(), Eigen::OuterStride<>(t.cols()));
}
template <class Scalar>
auto as_eigen(tensor<cpu_backend<Scalar>>& t) { return as_eigen(t.view()); }
template <class Scalar>
auto as_eigen(const tensor<cpu_backend<Scalar>>& t) { return as_eigen(t.view()); }

/// A tensor view over memory an Eigen object already holds (a row-major matrix, or any vector).
/// The Eigen object must outlive the view and must be contiguous.
template <class Derived>
auto view_of(cpu_backend<typename Derived::Scalar>& backend, Eigen::PlainObjectBase<Derived>& m) {
  static_assert(Derived::IsRowMajor || Derived::IsVectorAtCompileTime,
                "treelora::view_of: treelora tensors are row-major; pass a RowMajor Eigen matrix or a vector");
  using B = cpu_backend<typename Derived::Scalar>;
  return tensor_view<B>(backend, m.data(), Derived::IsVectorAtCompileTime ? shape{m.size()} : shape{m.rows(), m.cols()});
}

}  // namespace treelora
