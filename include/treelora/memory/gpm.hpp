// treelora/memory/gpm.hpp: Gradient Projection Memory (Saha et al., ICLR 2021) and its DualGPM storage (Liang & Li,
// InfLoRA, CVPR 2024): an orthonormal basis M [d, k] of the input subspace earlier tasks used, grown after each task.
//
// Growth rule (GPM), for a representation matrix R [d, n] of the new task:
//   R_hat = R - M M^T R;  R_hat = U S V^T;  keep the fewest leading columns U_r with
//   ||M M^T R||_F^2 + sum_{i<r} s_i^2 >= eps ||R||_F^2;   M <- [M, U_r]
// Threshold schedule (InfLoRA): eps_t = eps_b + (1 - eps_b) t / T.
// Gradient projection for later tasks: grad W <- grad W - grad W M M^T  (W [out, d]).
// DualGPM: when dim M > d / 2 store an orthonormal basis C of the complement instead (M M^T = I - C C^T); the same
// subspace, fewer numbers. The SVDs run on the host in double (linalg/dense.hpp), on the calling thread (Eigen's own
// threading would make the basis depend on the thread count: calling_thread_only); only the projector of a backend
// gradient (gpm_projector) lives on the backend.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "treelora/core/eigen.hpp"

#include "treelora/backend/calling_thread_only.hpp"
#include "treelora/linalg/dense.hpp"
#include "treelora/tensor/ops.hpp"

namespace treelora {

/// Which matrix the energy rule is applied to when the memory is fed a covariance C = R R^T.
enum class energy_rule {
  representation,       ///< the GPM rule on R (docs/strategies.md) (C's eigenvalues are R's s_i^2): the default
  covariance_spectrum,  ///< InfLoRA's released code: the rule applied to C itself, as if C were R (quirk)
};

struct gpm_options {
  bool dual = true;             ///< DualGPM: store the complement once dim M > d / 2
  index_t max_new_bases = 0;    ///< cap on the directions one update adds (0: no cap)
  energy_rule rule = energy_rule::representation;  ///< for update_from_covariance
  double tolerance = 1e-10;     ///< singular values below tolerance * s_max are treated as zero
};

/// eps_t = eps_b + (1 - eps_b) t / T  (InfLoRA's schedule; t 0-based task, T tasks).
inline double gpm_threshold(index_t task, index_t tasks, double base = 0.95) {
  if (tasks <= 0 || task < 0 || task >= tasks)
    throw_invalid_argument("gpm_threshold", concat("task ", task, " outside [0, ", tasks, ")"));
  if (!(base >= 0 && base <= 1)) throw_invalid_argument("gpm_threshold", concat("base ", base, " outside [0, 1]"));
  return base + (1 - base) * double(task) / double(tasks);
}

class gpm_memory {
 public:
  using matrix = Eigen::MatrixXd;  // column-major, columns are directions in R^d

  explicit gpm_memory(index_t dim, gpm_options options = {}) : dim_(dim), options_(options), stored_(dim, 0) {
    if (dim <= 0) throw_invalid_argument("gpm_memory", concat("dimension ", dim, " <= 0"));
    if (options.max_new_bases < 0) throw_invalid_argument("gpm_memory", concat("max_new_bases ", options.max_new_bases, " < 0"));
  }

  index_t dim() const { return dim_; }
  /// dim span(M).
  index_t rank() const { return complement_ ? dim_ - index_t(stored_.cols()) : index_t(stored_.cols()); }
  bool stores_complement() const { return complement_; }

  /// Checkpoints (io/checkpoint.hpp): the options are compared, the stored bases restored exactly.
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.expect("dim", dim_), ar.expect("dual", options_.dual), ar.expect("max_new_bases", options_.max_new_bases);
    ar.expect("rule", options_.rule), ar.expect("tolerance", options_.tolerance);
    ar.value("complement", complement_);
    ar.host_matrix("stored", stored_);
    ar.require(stored_.rows() == dim_ && stored_.cols() <= dim_, "stored", concat("must be [", dim_, ", k <= ", dim_, "]"));
    ar.host_matrix("last_added", last_added_);
    ar.require(last_added_.size() == 0 || last_added_.rows() == dim_, "last_added", concat("must have ", dim_, " rows"));
  }
  /// What is stored: M, or C (the complement basis) after the DualGPM switch.
  const matrix& stored() const { return stored_; }
  /// The directions the last update added (U_r, [d, r]); a task's own basis (DualLoRA's U_t).
  const matrix& last_added() const { return last_added_; }
  /// Bytes of the stored basis (as float, what a device copy costs).
  std::size_t bytes() const { return std::size_t(stored_.size()) * sizeof(float); }

  /// M [d, k], orthonormal (computed from C when the complement is stored).
  matrix basis() const {
    if (!complement_) return stored_;
    return complement_of(stored_);
  }

  /// (I - M M^T) x, column by column.
  matrix project_out(const matrix& x) const {
    check_rows(x, "gpm_memory::project_out");
    const calling_thread_only serial;
    if (complement_) return stored_ * (stored_.transpose() * x);
    return x - stored_ * (stored_.transpose() * x);
  }

  /// GPM growth from a representation matrix R [d, n]; eps in [0, 1]. Returns the number of directions added.
  index_t update(const matrix& representation, double threshold) {
    check_rows(representation, "gpm_memory::update");
    if (!(threshold >= 0 && threshold <= 1))
      throw_invalid_argument("gpm_memory::update", concat("threshold ", threshold, " outside [0, 1]"));
    const calling_thread_only serial;
    const double total = representation.squaredNorm();
    const matrix residual = project_out(representation);
    last_added_.resize(dim_, 0);
    if (total <= 0) return 0;
    const double captured = total - residual.squaredNorm();  // ||M M^T R||^2 (Pythagoras)
    const linalg::left_singular svd = linalg::thin_svd_left(residual);
    const auto& s = svd.s;
    const double floor = options_.tolerance * (s.size() > 0 ? s(0) : 0.0);
    index_t keep = 0;
    double energy = captured;
    while (energy < threshold * total && keep < s.size() && s(keep) > floor && keep < dim_ - rank()) {
      energy += s(keep) * s(keep);
      ++keep;
    }
    if (options_.max_new_bases > 0) keep = std::min(keep, options_.max_new_bases);
    if (keep == 0) return 0;
    last_added_ = svd.u.leftCols(keep);
    grow(last_added_);
    return keep;
  }

  /// The same rule fed a covariance C [d, d] = R R^T accumulated over the task (no need to keep R): with the
  /// representation rule it is exactly update(R) (any R' with R' R'^T = C gives the same U and s); with the
  /// covariance_spectrum rule it is update(C), InfLoRA's released behaviour.
  index_t update_from_covariance(const matrix& covariance, double threshold) {
    check_rows(covariance, "gpm_memory::update_from_covariance");
    if (covariance.cols() != dim_)
      throw_invalid_argument("gpm_memory::update_from_covariance", concat("covariance is ", covariance.rows(), " x ",
                                                                           covariance.cols(), ", expected square"));
    if (options_.rule == energy_rule::covariance_spectrum) return update(covariance, threshold);
    return update(square_root_factor(covariance), threshold);
  }

  /// R' = V sqrt(max(L, 0)) with C = V L V^T: a factor with R' R'^T = C.
  static matrix square_root_factor(const matrix& covariance) {
    const calling_thread_only serial;
    const linalg::symmetric_eigen eigen = linalg::symmetric_eigendecomposition(0.5 * (covariance + covariance.transpose()));
    return eigen.vectors * eigen.values.cwiseMax(0.0).cwiseSqrt().asDiagonal();
  }

  /// An orthonormal basis of span(columns of m)'s orthogonal complement in R^d (m orthonormal).
  static matrix complement_of(const matrix& m) { return linalg::orthonormal_complement(m); }

 private:
  void check_rows(const matrix& x, const char* where) const {
    if (x.rows() != dim_) throw_invalid_argument(where, concat("rows ", x.rows(), " != memory dimension ", dim_));
  }

  /// span(M) += span(u), u orthonormal and orthogonal to M.
  void grow(const matrix& u) {
    if (!complement_) {
      matrix next(dim_, stored_.cols() + u.cols());
      next << stored_, u;
      stored_ = std::move(next);
      if (options_.dual && 2 * stored_.cols() > dim_) {  // DualGPM switch: keep the smaller of M and its complement
        stored_ = complement_of(stored_);
        complement_ = true;
      }
      return;
    }
    // Complement mode: C <- an orthonormal basis of (I - u u^T) C, which has rank dim C - r.
    const index_t remaining = index_t(stored_.cols()) - index_t(u.cols());
    const matrix reduced = stored_ - u * (u.transpose() * stored_);
    if (remaining <= 0) {
      stored_.resize(dim_, 0);
      return;
    }
    stored_ = linalg::thin_svd_left(reduced).u.leftCols(remaining);
  }

  index_t dim_;
  gpm_options options_;
  matrix stored_;
  matrix last_added_;
  bool complement_ = false;
};

/// A backend copy of a memory's stored basis, to project gradients without leaving the backend:
///   grad W <- grad W - grad W M M^T    (or grad W C C^T when the complement is stored).
template <Backend B>
class gpm_projector {
 public:
  using scalar_type = typename B::scalar_type;

  gpm_projector() = default;
  gpm_projector(B& backend, const gpm_memory& memory) { assign(backend, memory); }

  /// Copies the memory's stored basis to the backend (one host -> backend copy, at a task boundary).
  void assign(B& backend, const gpm_memory& memory) {
    backend_ = &backend;
    complement_ = memory.stores_complement();
    dim_ = memory.dim();
    const index_t k = index_t(memory.stored().cols());
    std::vector<scalar_type> host(std::size_t(k * dim_));
    for (index_t i = 0; i < k; ++i)  // rows of basis_ are the stored directions
      for (index_t j = 0; j < dim_; ++j) host[std::size_t(i * dim_ + j)] = static_cast<scalar_type>(memory.stored()(j, i));
    basis_ = k > 0 ? tensor<B>::from_host(backend, shape{k, dim_}, host) : tensor<B>();
  }

  bool empty_memory() const { return !complement_ && basis_.empty(); }

  /// Checkpoints (io/checkpoint.hpp): the basis exactly as assign() copied it.
  template <class Archive>
  void checkpoint(Archive ar, B& backend) {
    backend_ = &backend;
    ar.value("complement", complement_), ar.value("dim", dim_);
    ar.tensor("basis", basis_, backend);
    ar.require(dim_ > 0 && (basis_.empty() || (basis_.shape().rank() == 2 && basis_.cols() == dim_ && basis_.rows() <= dim_)),
               "basis", "must be [k <= dim, dim]");
  }

  /// gradient [out, d] <- gradient (I - M M^T), in place.
  void project_out(tensor_view<B> gradient) {
    if (gradient.cols() != dim_)
      throw_invalid_argument("gpm_projector::project_out", concat("gradient ", gradient.shape().to_string(),
                                                                 " does not have ", dim_, " columns"));
    if (basis_.empty()) {
      if (complement_) gradient.backend()->fill(gradient.data(), gradient.numel(), scalar_type(0));  // M is all of R^d
      return;
    }
    coefficients_.resize(*backend_, shape{gradient.rows(), basis_.rows()});
    matmul<B>(gradient, transpose::no, basis_, transpose::yes, coefficients_);  // g S^T
    if (complement_) matmul<B>(coefficients_, transpose::no, basis_, transpose::no, gradient);  // g C C^T
    else matmul<B>(coefficients_, transpose::no, basis_, transpose::no, gradient, scalar_type(-1), scalar_type(1));
  }

 private:
  B* backend_ = nullptr;
  bool complement_ = false;
  index_t dim_ = 0;
  tensor<B> basis_, coefficients_;
};

}  // namespace treelora
