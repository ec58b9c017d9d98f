// GPM / DualGPM memory against closed forms: the energy rule on a matrix with known singular values, the threshold
// schedule, the DualGPM switch keeping the same subspace, the covariance path equal to the representation path, and
// the backend projector removing the old subspace exactly; the thin SVD on a rank-deficient matrix that Eigen's
// divide and conquer gets wrong (NaN) when compiled with FMA.
#include "test_support.hpp"

#include "treelora/core/eigen.hpp"  // first: see there

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include <filesystem>
#include <fstream>

#include "treelora/linalg/dense.hpp"
#include "treelora/memory/gpm.hpp"

using namespace treelora;
using matrix = Eigen::MatrixXd;

namespace {
/// An orthonormal [d, k] basis from a seeded Gaussian matrix.
matrix random_orthonormal(index_t d, index_t k, unsigned seed) {
  std::srand(seed);
  const matrix g = matrix::Random(d, k);
  Eigen::HouseholderQR<matrix> qr(g);
  return qr.householderQ() * matrix::Identity(d, k);
}
double projector_error(const matrix& a, const matrix& b) { return (a * a.transpose() - b * b.transpose()).norm(); }
}  // namespace

TEST_CASE("threshold schedule eps_t = eps_b + (1 - eps_b) t / T") {
  CHECK(gpm_threshold(0, 5) == doctest::Approx(0.95));
  CHECK(gpm_threshold(4, 5, 0.9) == doctest::Approx(0.9 + 0.1 * 4 / 5));
  CHECK_THROWS_AS(gpm_threshold(5, 5), std::invalid_argument);
}

TEST_CASE("energy rule keeps the fewest directions reaching eps ||R||^2") {
  // R = Q diag(s) V^T with s^2 = 50, 30, 15, 4, 1 (total 100).
  const index_t d = 12;
  const matrix q = random_orthonormal(d, 5, 1), v = random_orthonormal(20, 5, 2);
  Eigen::VectorXd s(5);
  s << std::sqrt(50.0), std::sqrt(30.0), std::sqrt(15.0), 2.0, 1.0;
  const matrix r = q * s.asDiagonal() * v.transpose();
  for (auto [eps, expected] : std::vector<std::pair<double, index_t>>{{0.49, 1}, {0.79, 2}, {0.94, 3}, {0.96, 4}, {1.0, 5}}) {
    gpm_memory memory(d, {.dual = false});
    CHECK(memory.update(r, eps) == expected);
    CHECK(projector_error(memory.basis(), q.leftCols(expected)) < 1e-10);
  }
  // Captured energy counts: after keeping the first direction, eps 0.79 needs only one more.
  gpm_memory memory(d, {.dual = false});
  memory.update(q.col(0) * s(0) * v.col(0).transpose(), 0.9);
  CHECK(memory.rank() == 1);
  CHECK(memory.update(r, 0.79) == 1);
  CHECK(projector_error(memory.basis(), q.leftCols(2)) < 1e-10);
  CHECK(memory.update(r, 0.5) == 0);  // already captured
  gpm_memory capped(d, {.max_new_bases = 2});
  CHECK(capped.update(r, 1.0) == 2);
}

TEST_CASE("covariance path equals the representation path; the InfLoRA quirk squares the spectrum") {
  const index_t d = 10;
  std::srand(7);
  const matrix r = matrix::Random(d, 40);
  gpm_memory a(d), b(d);
  a.update(r, 0.9);
  b.update_from_covariance(r * r.transpose(), 0.9);
  CHECK(a.rank() == b.rank());
  CHECK(projector_error(a.basis(), b.basis()) < 1e-8);
  gpm_memory quirk(d, {.rule = energy_rule::covariance_spectrum});
  quirk.update_from_covariance(r * r.transpose(), 0.9);
  CHECK(quirk.rank() <= a.rank());  // squared spectrum concentrates the energy
}

TEST_CASE("DualGPM switches to the complement past d/2 and keeps the same subspace") {
  const index_t d = 8;
  const matrix q = random_orthonormal(d, d, 3);
  gpm_memory plain(d, {.dual = false}), dual(d, {.dual = true});
  for (index_t task = 0; task < 3; ++task) {
    const matrix r = q.middleCols(task * 2, 2) * matrix::Random(2, 6) * 5.0;  // two new directions per task
    plain.update(r, 0.999);
    dual.update(r, 0.999);
    CHECK(plain.rank() == 2 * (task + 1));
    CHECK(dual.rank() == plain.rank());
    CHECK(projector_error(plain.basis(), dual.basis()) < 1e-9);
    CHECK(projector_error(dual.last_added(), plain.last_added()) < 1e-9);
  }
  CHECK(dual.stores_complement());
  CHECK(dual.stored().cols() == 2);
  CHECK(!plain.stores_complement());
  // (I - M M^T) x in both storages
  const matrix x = matrix::Random(d, 3);
  CHECK((plain.project_out(x) - dual.project_out(x)).norm() < 1e-9);
  CHECK((plain.basis().transpose() * dual.project_out(x)).norm() < 1e-9);
}

TEST_CASE_TEMPLATE("the backend projector removes the old subspace: g (I - M M^T) M = 0 and g M_perp unchanged", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t d = 9, out = 4;
  for (bool dual : {false, true}) {
    gpm_memory memory(d, {.dual = dual});
    const matrix q = random_orthonormal(d, d, 11);
    memory.update(q.leftCols(6) * matrix::Random(6, 30), 1.0);
    REQUIRE(memory.rank() == 6);
    CHECK(memory.stores_complement() == dual);
    auto g = treelora::testing::random_tensor(backend, shape{out, d}, 5);
    const auto before = g.to_host();
    gpm_projector<B> projector(backend, memory);
    projector.project_out(g);
    const auto after = g.to_host();
    matrix gb(out, d), ga(out, d);
    for (index_t i = 0; i < out; ++i)
      for (index_t j = 0; j < d; ++j) gb(i, j) = before[std::size_t(i * d + j)], ga(i, j) = after[std::size_t(i * d + j)];
    const matrix m = memory.basis();
    const matrix expected = gb - gb * m * m.transpose();  // closed form
    CHECK((ga - expected).norm() / gb.norm() < 50 * treelora::testing::tolerance_v<B>);
    CHECK((ga * m).norm() / gb.norm() < 50 * treelora::testing::tolerance_v<B>);
  }
}

TEST_CASE("the thin SVD of a rank-deficient matrix that Eigen's BDCSVD returns as NaN under FMA is exact and finite") {
  // Recorded from a DualGPM update in complement mode (C - u u^T C: 64 x 21, rank 15) during a data-parallel text
  // run: 1344 little-endian doubles, column-major.
  const auto path = std::filesystem::path(TREELORA_TEST_DATA_DIR) / "linalg" / "rank_deficient_64x21.f64";
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  matrix a(64, 21);
  in.read(reinterpret_cast<char*>(a.data()), std::streamsize(a.size() * sizeof(double)));
  REQUIRE(in.gcount() == std::streamsize(a.size() * sizeof(double)));
  const linalg::left_singular svd = linalg::thin_svd_left(a);
  REQUIRE(svd.u.allFinite());
  REQUIRE(svd.s.allFinite());
  CHECK((svd.u.transpose() * svd.u - matrix::Identity(21, 21)).norm() < 1e-12);  // orthonormal
  for (Eigen::Index i = 1; i < svd.s.size(); ++i) CHECK(svd.s(i) <= svd.s(i - 1));
  // the singular values are the square roots of a^T a's eigenvalues (an independent solver): fifteen 1s (21 columns
  // of an orthonormal basis less the 6 directions the update removed), then six zeros
  Eigen::SelfAdjointEigenSolver<matrix> gram(a.transpose() * a);
  for (Eigen::Index i = 0; i < 15; ++i) {
    CHECK(svd.s(i) == doctest::Approx(std::sqrt(gram.eigenvalues()(20 - i))).epsilon(1e-10));
    CHECK(svd.s(i) == doctest::Approx(1.0).epsilon(1e-10));
  }
  for (Eigen::Index i = 15; i < 21; ++i) {
    CHECK(svd.s(i) < 1e-12);
    CHECK(std::abs(gram.eigenvalues()(20 - i)) < 1e-14);
  }
  // a lies in the span of the 15 leading columns
  const matrix u = svd.u.leftCols(15);
  CHECK((a - u * (u.transpose() * a)).norm() < 1e-12);
  // non-finite input is refused, not decomposed into garbage
  matrix bad = a;
  bad(3, 4) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(linalg::thin_svd_left(bad), std::invalid_argument);
}
