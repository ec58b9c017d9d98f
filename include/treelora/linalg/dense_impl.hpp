// treelora/linalg/dense_impl.hpp: the definitions of linalg/dense.hpp (included by it header-only; compiled once in
// the treelora::compiled library otherwise).
#pragma once

#include "treelora/core/eigen.hpp"  // first: see there

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>

#include "treelora/backend/calling_thread_only.hpp"
#include "treelora/core/error.hpp"
#include "treelora/linalg/dense.hpp"

namespace treelora::linalg {

TREELORA_LINALG_API left_singular thin_svd_left(const Eigen::MatrixXd& a) {
  if (!a.allFinite())
    throw_invalid_argument("linalg::thin_svd_left", concat("the ", a.rows(), " x ", a.cols(), " matrix has NaN or infinite entries"));
  const calling_thread_only serial;
  Eigen::BDCSVD<Eigen::MatrixXd> svd(a, Eigen::ComputeThinU);
  if (svd.matrixU().allFinite() && svd.singularValues().allFinite()) return {svd.matrixU(), svd.singularValues()};
  // Eigen 3.4.0's divide and conquer returns NaN for some rank-deficient matrices once compiled with FMA
  // (-march=native on an AVX2 or AVX-512 machine; SSE2 code gets them right): seen on a 64 x 21 matrix of rank 15 in a
  // DualGPM update (tests/data/linalg). One-sided Jacobi, slower and robust, takes over for those.
  Eigen::JacobiSVD<Eigen::MatrixXd> jacobi(a, Eigen::ComputeThinU);
  return {jacobi.matrixU(), jacobi.singularValues()};
}

TREELORA_LINALG_API symmetric_eigen symmetric_eigendecomposition(const Eigen::MatrixXd& a) {
  if (a.rows() != a.cols())
    throw_invalid_argument("linalg::symmetric_eigendecomposition", concat("matrix is ", a.rows(), " x ", a.cols()));
  const calling_thread_only serial;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(a);
  if (eigen.info() != Eigen::Success)
    throw_invalid_argument("linalg::symmetric_eigendecomposition", "the eigensolver did not converge (NaN or Inf?)");
  return {eigen.eigenvalues(), eigen.eigenvectors()};
}

TREELORA_LINALG_API Eigen::MatrixXd orthonormal_complement(const Eigen::MatrixXd& m) {
  const Eigen::Index d = m.rows(), k = m.cols();
  if (k == 0) return Eigen::MatrixXd::Identity(d, d);
  if (k > d) throw_invalid_argument("linalg::orthonormal_complement", concat(k, " columns in R^", d));
  const calling_thread_only serial;
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(m);
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(d, d);
  return q.rightCols(d - k);
}

TREELORA_LINALG_API Eigen::MatrixXd cholesky_solve(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  if (a.rows() != a.cols() || b.rows() != a.rows())
    throw_invalid_argument("linalg::cholesky_solve", concat("a is ", a.rows(), " x ", a.cols(), ", b has ", b.rows(),
                                                            " rows"));
  const calling_thread_only serial;
  const Eigen::LLT<Eigen::MatrixXd> llt(a);
  if (llt.info() != Eigen::Success)
    throw_invalid_argument("linalg::cholesky_solve", "the matrix is not numerically positive definite");
  return llt.solve(b);
}

}  // namespace treelora::linalg
