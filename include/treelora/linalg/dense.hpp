// treelora/linalg/dense.hpp: the host dense decompositions the library needs (thin SVD, symmetric eigensolver,
// orthonormal complement, Cholesky solve), in double, on the calling thread.
//
// Every decomposition of the library goes through these four functions, so Eigen's decompositions (BDCSVD alone is
// about 25 s of compiling and most of the main job's 2 GB of compiler memory) are instantiated in one place:
// header-only, this header includes their definitions (linalg/dense_impl.hpp, `inline`); with TREELORA_COMPILED
// (CMake target treelora::compiled) they come compiled from the library (src/linalg.cpp) and a program parses
// Eigen/Core only (docs/build_time.md). Results do not depend on the thread count: each runs inside a
// calling_thread_only scope (Eigen would otherwise thread the products inside the decompositions).
#pragma once

#include "treelora/core/eigen.hpp"

// Header-only the functions are `inline` (defined below, in every translation unit); compiled, they are ordinary
// functions of the library.
#if defined(TREELORA_COMPILED) || defined(TREELORA_BUILDING_COMPILED_LIBRARY)
#define TREELORA_LINALG_API
#else
#define TREELORA_LINALG_API inline
#endif

namespace treelora::linalg {

/// The left half of a thin SVD: a = U diag(s) V^T with U [m, min(m, n)] orthonormal, s descending and >= 0.
/// Throws std::invalid_argument for a matrix with NaN or infinite entries.
struct left_singular {
  Eigen::MatrixXd u;
  Eigen::VectorXd s;
};
TREELORA_LINALG_API left_singular thin_svd_left(const Eigen::MatrixXd& a);

/// a = V diag(values) V^T for symmetric a (only its lower triangle is read); values ascending, V orthonormal.
struct symmetric_eigen {
  Eigen::VectorXd values;
  Eigen::MatrixXd vectors;
};
TREELORA_LINALG_API symmetric_eigen symmetric_eigendecomposition(const Eigen::MatrixXd& a);

/// An orthonormal basis [d, d - k] of the orthogonal complement of span(m) in R^d, for m [d, k] orthonormal
/// (Householder QR of m: the last d - k columns of Q).
TREELORA_LINALG_API Eigen::MatrixXd orthonormal_complement(const Eigen::MatrixXd& m);

/// x with a x = b for symmetric positive definite a (Cholesky). Throws std::invalid_argument when the
/// factorisation fails (a not numerically positive definite).
TREELORA_LINALG_API Eigen::MatrixXd cholesky_solve(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b);

}  // namespace treelora::linalg

#if !defined(TREELORA_COMPILED) && !defined(TREELORA_BUILDING_COMPILED_LIBRARY)
#include "treelora/linalg/dense_impl.hpp"
#endif
