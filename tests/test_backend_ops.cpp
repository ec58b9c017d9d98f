// Every backend kernel against a naive double-precision loop, on every backend in the test list.
#include "test_support.hpp"

#include <treelora/tensor/eigen_interop.hpp>

#include <limits>
#include <numbers>

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace treelora;
using treelora::testing::random_tensor;
using treelora::testing::relative_error;
using treelora::testing::tolerance_v;

namespace {
template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  return {v.begin(), v.end()};
}
// Naive C = alpha op(A) op(B) + beta C on row-major host data.
std::vector<double> naive_gemm(bool ta, bool tb, index_t m, index_t n, index_t k, double alpha, const std::vector<double>& a,
                               const std::vector<double>& b, double beta, std::vector<double> c) {
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t p = 0; p < k; ++p) {
        const double av = ta ? a[static_cast<std::size_t>(p * m + i)] : a[static_cast<std::size_t>(i * k + p)];
        const double bv = tb ? b[static_cast<std::size_t>(j * k + p)] : b[static_cast<std::size_t>(p * n + j)];
        s += av * bv;
      }
      auto& cv = c[static_cast<std::size_t>(i * n + j)];
      cv = alpha * s + (beta == 0 ? 0.0 : beta * cv);
    }
  return c;
}
}  // namespace

TEST_CASE_TEMPLATE("gemm matches a naive loop for every transpose, alpha and beta", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t m = 7, n = 5, k = 9;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 1.0, -0.5}) {
        auto a = random_tensor(backend, ta ? shape{k, m} : shape{m, k}, 1);
        auto b = random_tensor(backend, tb ? shape{n, k} : shape{k, n}, 2);
        auto c = random_tensor(backend, shape{m, n}, 3);
        const auto expected = naive_gemm(ta, tb, m, n, k, 1.5, to_double(a.to_host()), to_double(b.to_host()), beta,
                                         to_double(c.to_host()));
        matmul<B>(a, transpose{ta}, b, transpose{tb}, c, 1.5, static_cast<typename B::scalar_type>(beta));
        CHECK(relative_error(c.to_host(), expected) < 10 * tolerance_v<B>);
      }
}

// With TREELORA_BLAS the CPU backend sends products from 16 x 16 x 16 up to OpenBLAS, split into blocks of
// rows (or of columns, when C is wider than tall) over the OpenMP threads, and keeps smaller ones in Eigen:
// the shapes below land on each side of that line and, with 2 threads (CTest's OMP_NUM_THREADS), on both
// kinds of split.
TEST_CASE_TEMPLATE("gemm with leading dimensions past the columns, every transpose and beta, small and large",
                   B, TREELORA_TEST_BACKENDS) {
  using S = typename B::scalar_type;
  B backend;
  struct dims {
    index_t m, n, k;
  };
  // one row or one column of C (GEMV on the CBLAS route), each operand strided, too
  for (const dims d : {dims{7, 5, 9}, dims{70, 50, 90}, dims{40, 200, 40}, dims{300, 8, 40}, dims{1, 300, 40},
                       dims{300, 1, 40}, dims{1, 1, 5000}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (double beta : {0.0, 1.0, -0.5}) {
          CAPTURE(d.m);
          CAPTURE(d.n);
          CAPTURE(ta);
          CAPTURE(tb);
          CAPTURE(beta);
          const index_t a_rows = ta ? d.k : d.m, a_cols = ta ? d.m : d.k, b_rows = tb ? d.n : d.k,
                        b_cols = tb ? d.k : d.n;
          // Leading dimensions past the columns: padding the product must not touch.
          const index_t lda = a_cols + 3, ldb = b_cols + 5, ldc = d.n + 2;
          auto a = random_tensor(backend, shape{a_rows, lda}, 11);
          auto b = random_tensor(backend, shape{b_rows, ldb}, 12);
          auto c = random_tensor(backend, shape{d.m, ldc}, 13);
          const auto ah = to_double(a.to_host()), bh = to_double(b.to_host()), ch = to_double(c.to_host());
          const auto packed = [](const std::vector<double>& v, index_t rows, index_t cols, index_t ld) {
            std::vector<double> out;
            for (index_t r = 0; r < rows; ++r)
              out.insert(out.end(), v.begin() + r * ld, v.begin() + r * ld + cols);
            return out;
          };
          const auto expected = naive_gemm(ta, tb, d.m, d.n, d.k, 1.5, packed(ah, a_rows, a_cols, lda),
                                           packed(bh, b_rows, b_cols, ldb), beta, packed(ch, d.m, d.n, ldc));
          backend.gemm(transpose{ta}, transpose{tb}, d.m, d.n, d.k, S(1.5), a.data(), lda, b.data(), ldb,
                       S(beta), c.data(), ldc);
          const auto result = to_double(c.to_host());
          CHECK(relative_error(packed(result, d.m, d.n, ldc), expected) < 10 * tolerance_v<B>);
          bool padding_kept = true;
          for (index_t r = 0; r < d.m; ++r)
            for (index_t j = d.n; j < ldc; ++j) padding_kept &= result[r * ldc + j] == ch[r * ldc + j];
          CHECK(padding_kept);
        }
}

TEST_CASE_TEMPLATE("gemm with beta = 0 ignores NaN already in the output", B, TREELORA_TEST_BACKENDS) {
  B backend;
  for (const index_t size : {3, 64}) {
    auto a = random_tensor(backend, shape{size, size + 1}, 1),
         b = random_tensor(backend, shape{size + 1, size}, 2);
    tensor<B> c(backend, shape{size, size});
    c.fill(std::numeric_limits<typename B::scalar_type>::quiet_NaN());
    matmul<B>(a, transpose::no, b, transpose::no, c);
    for (auto v : c.to_host()) CHECK(std::isfinite(static_cast<double>(v)));
  }
  auto row = random_tensor(backend, shape{1, 200}, 3), matrix = random_tensor(backend, shape{64, 200}, 4);
  tensor<B> out(backend, shape{1, 64});
  out.fill(std::numeric_limits<typename B::scalar_type>::quiet_NaN());
  matmul<B>(row, transpose::no, matrix, transpose::yes, out);  // a matrix-vector product
  for (auto v : out.to_host()) CHECK(std::isfinite(static_cast<double>(v)));
}

TEST_CASE_TEMPLATE("batched gemm matches per-batch naive loops", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t batch = 4, m = 6, n = 3, k = 5;
  for (bool tb : {false, true}) {
    auto a = random_tensor(backend, shape{batch, m, k}, 4);
    auto b = random_tensor(backend, tb ? shape{batch, n, k} : shape{batch, k, n}, 5);
    tensor<B> c(backend, shape{batch, m, n});
    batched_matmul<B>(a, transpose::no, b, transpose{tb}, c, 0.5);
    const auto ah = to_double(a.to_host()), bh = to_double(b.to_host());
    std::vector<double> expected;
    for (index_t i = 0; i < batch; ++i) {
      std::vector<double> ai(ah.begin() + i * m * k, ah.begin() + (i + 1) * m * k);
      std::vector<double> bi(bh.begin() + i * k * n, bh.begin() + (i + 1) * k * n);
      auto ci = naive_gemm(false, tb, m, n, k, 0.5, ai, bi, 0.0, std::vector<double>(static_cast<std::size_t>(m * n)));
      expected.insert(expected.end(), ci.begin(), ci.end());
    }
    CHECK(relative_error(c.to_host(), expected) < 10 * tolerance_v<B>);
  }
}

// Enough work for gemm_strided_batched to open an OpenMP region (2 threads under CTest): each thread then
// runs whole products on its own, through OpenBLAS when the library uses it.
TEST_CASE_TEMPLATE("batched gemm inside a parallel region matches per-batch naive loops", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t batch = 8, m = 48, n = 40, k = 56;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      auto a = random_tensor(backend, ta ? shape{batch, k, m} : shape{batch, m, k}, 6);
      auto b = random_tensor(backend, tb ? shape{batch, n, k} : shape{batch, k, n}, 7);
      auto c = random_tensor(backend, shape{batch, m, n}, 8);
      const auto ah = to_double(a.to_host()), bh = to_double(b.to_host()), ch = to_double(c.to_host());
      batched_matmul<B>(a, transpose{ta}, b, transpose{tb}, c, 0.5, 0.25);
      std::vector<double> expected;
      for (index_t i = 0; i < batch; ++i) {
        const auto slice = [i](const std::vector<double>& v, index_t size) {
          return std::vector<double>(v.begin() + i * size, v.begin() + (i + 1) * size);
        };
        auto ci =
            naive_gemm(ta, tb, m, n, k, 0.5, slice(ah, m * k), slice(bh, k * n), 0.25, slice(ch, m * n));
        expected.insert(expected.end(), ci.begin(), ci.end());
      }
      CHECK(relative_error(c.to_host(), expected) < 10 * tolerance_v<B>);
    }
}

#if defined(_OPENMP)
// A caller's own parallel region: every thread multiplies its own matrices at once (OpenBLAS is called
// concurrently, or Eigen is), and one OpenMP setting decides the thread count of everything.
TEST_CASE_TEMPLATE("gemm called from the caller's parallel region and on one thread", S, float, double) {
  using B = cpu_backend<S>;
  B backend;
  const index_t m = 96, n = 80, k = 64, threads = 4;
  std::vector<tensor<B>> as, bs, cs;
  std::vector<std::vector<double>> expected;
  for (index_t t = 0; t < threads; ++t) {
    as.push_back(random_tensor(backend, shape{m, k}, 20 + t));
    bs.push_back(random_tensor(backend, shape{n, k}, 30 + t));
    cs.emplace_back(backend, shape{m, n});
    expected.push_back(naive_gemm(false, true, m, n, k, 1.0, to_double(as[t].to_host()),
                                  to_double(bs[t].to_host()), 0.0,
                                  std::vector<double>(static_cast<std::size_t>(m * n))));
  }
#pragma omp parallel for num_threads(static_cast<int>(threads))
  for (index_t t = 0; t < threads; ++t)
    for (int repeat = 0; repeat < 20; ++repeat) matmul<B>(as[t], transpose::no, bs[t], transpose::yes, cs[t]);
  for (index_t t = 0; t < threads; ++t)
    CHECK(relative_error(cs[t].to_host(), expected[t]) < 10 * tolerance_v<B>);

  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);  // what --threads 1 does
  cs[0].fill(0);
  matmul<B>(as[0], transpose::no, bs[0], transpose::yes, cs[0]);
  CHECK(relative_error(cs[0].to_host(), expected[0]) < 10 * tolerance_v<B>);
#if defined(TREELORA_USE_CBLAS) && defined(OPENBLAS_THREAD)
  if (openblas_get_parallel() == OPENBLAS_THREAD) CHECK(openblas_get_num_threads() == 1);  // no second pool
#endif
  omp_set_num_threads(saved);
}
#endif

TEST_CASE_TEMPLATE("axpy, scale, multiply and multiply_add", B, TREELORA_TEST_BACKENDS) {
  B backend;
  auto x = random_tensor(backend, shape{37}, 1), y = random_tensor(backend, shape{37}, 2);
  const auto xh = to_double(x.to_host()), yh = to_double(y.to_host());
  std::vector<double> e(xh.size());
  axpy<B>(2.5, x, y);
  for (std::size_t i = 0; i < e.size(); ++i) e[i] = yh[i] + 2.5 * xh[i];
  CHECK(relative_error(y.to_host(), e) < tolerance_v<B>);
  scale<B>(-3, y);
  for (auto& v : e) v *= -3;
  CHECK(relative_error(y.to_host(), e) < tolerance_v<B>);
  tensor<B> z(backend, shape{37});
  multiply<B>(x, y, z);
  for (std::size_t i = 0; i < e.size(); ++i) e[i] *= xh[i];
  CHECK(relative_error(z.to_host(), e) < tolerance_v<B>);
  multiply_add<B>(x, x, z);
  for (std::size_t i = 0; i < e.size(); ++i) e[i] += xh[i] * xh[i];
  CHECK(relative_error(z.to_host(), e) < tolerance_v<B>);
}

TEST_CASE_TEMPLATE("elementwise maps match the scalar formulas", B, TREELORA_TEST_BACKENDS) {
  B backend;
  auto x = random_tensor(backend, shape{64}, 7, 2.0);
  tensor<B> y(backend, shape{64});
  const auto xh = to_double(x.to_host());
  const auto phi = [](double v) { return std::exp(-0.5 * v * v) / std::sqrt(2 * std::numbers::pi); };
  const auto Phi = [](double v) { return 0.5 * (1 + std::erf(v / std::sqrt(2.0))); };
  const std::vector<std::pair<unary_function, std::function<double(double)>>> cases = {
      {unary_function::gelu, [&](double v) { return v * Phi(v); }},
      {unary_function::gelu_derivative, [&](double v) { return Phi(v) + v * phi(v); }},
      {unary_function::exp, [](double v) { return std::exp(v); }},
      {unary_function::tanh, [](double v) { return std::tanh(v); }},
      {unary_function::relu, [](double v) { return v > 0 ? v : 0.0; }},
      {unary_function::relu_derivative, [](double v) { return v > 0 ? 1.0 : 0.0; }},
      {unary_function::sign, [](double v) { return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0); }},
      // GPT-2's gelu_new and Llama's SiLU; the derivatives written in another algebraic form (sech^2 = 1 / cosh^2,
      // the quotient rule) than the backends use (1 - tanh^2, s (1 + x (1 - s))).
      {unary_function::gelu_tanh,
       [](double v) { return 0.5 * v * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (v + 0.044715 * v * v * v))); }},
      {unary_function::gelu_tanh_derivative,
       [](double v) {
         const double c = std::sqrt(2 / std::numbers::pi), u = c * (v + 0.044715 * v * v * v);
         return 0.5 * (1 + std::tanh(u)) + 0.5 * v * c * (1 + 3 * 0.044715 * v * v) / (std::cosh(u) * std::cosh(u));
       }},
      {unary_function::silu, [](double v) { return v / (1 + std::exp(-v)); }},
      {unary_function::silu_derivative,
       [](double v) { return (1 + std::exp(-v) + v * std::exp(-v)) / ((1 + std::exp(-v)) * (1 + std::exp(-v))); }},
  };
  for (const auto& [f, reference] : cases) {
    apply<B>(f, x, y);
    std::vector<double> e;
    for (double v : xh) e.push_back(reference(v));
    CHECK(relative_error(y.to_host(), e) < 10 * tolerance_v<B>);
  }
}

TEST_CASE_TEMPLATE("rotate_half (RoPE) matches a host loop, in place too, and its inverse undoes it", B, TREELORA_TEST_BACKENDS) {
  B backend;
  using S = typename B::scalar_type;
  const index_t batch = 2, tokens = 5, heads = 3, head_dim = 8, half = 4, offset = 2, positions = 8;
  auto x = random_tensor(backend, shape{batch, tokens, heads * head_dim}, 1);
  std::vector<S> c(std::size_t(positions * half)), s(c.size());
  for (index_t p = 0; p < positions; ++p)
    for (index_t i = 0; i < half; ++i) {
      c[std::size_t(p * half + i)] = static_cast<S>(std::cos(0.3 * double(p) * double(i + 1)));
      s[std::size_t(p * half + i)] = static_cast<S>(std::sin(0.3 * double(p) * double(i + 1)));
    }
  auto cos_table = tensor<B>::from_host(backend, shape{positions, half}, c), sin_table = tensor<B>::from_host(backend, shape{positions, half}, s);
  tensor<B> y(backend, x.shape());
  rotate_half<B>(x, tokens, heads, offset, cos_table, sin_table, y);
  const auto xh = to_double(x.to_host());
  std::vector<double> expected(xh.size());
  for (index_t r = 0; r < batch * tokens; ++r)
    for (index_t h = 0; h < heads; ++h)
      for (index_t i = 0; i < half; ++i) {
        const std::size_t p = std::size_t((r % tokens + offset) * half + i), base = std::size_t(r * heads * head_dim + h * head_dim);
        expected[base + std::size_t(i)] = xh[base + std::size_t(i)] * double(c[p]) - xh[base + std::size_t(i + half)] * double(s[p]);
        expected[base + std::size_t(i + half)] = xh[base + std::size_t(i + half)] * double(c[p]) + xh[base + std::size_t(i)] * double(s[p]);
      }
  CHECK(relative_error(y.to_host(), expected) < 10 * tolerance_v<B>);
  tensor<B> z = tensor<B>::from_host(backend, y.shape(), y.to_host());
  rotate_half<B>(z, tokens, heads, offset, cos_table, sin_table, z, /*inverse=*/true);  // in place
  CHECK(relative_error(z.to_host(), xh) < 10 * tolerance_v<B>);
  tensor<B> odd(backend, shape{batch, tokens, 9});
  CHECK_THROWS_AS(rotate_half<B>(odd, tokens, heads, offset, cos_table, sin_table, odd), std::invalid_argument);
}

TEST_CASE_TEMPLATE("RMSNorm forward and backward match a naive host loop", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t rows = 5, cols = 37;  // more columns than a warp, not a multiple of one
  auto x = random_tensor(backend, shape{rows, cols}, 1, 2.0), gamma = random_tensor(backend, shape{cols}, 2);
  auto dy = random_tensor(backend, shape{rows, cols}, 3);
  tensor<B> y(backend, x.shape()), rstd(backend, shape{rows}), dx(backend, x.shape()), dgamma(backend, shape{cols});
  dgamma.fill(typename B::scalar_type(0.5));  // accumulates
  rms_norm_forward<B>(x, gamma, typename B::scalar_type(1e-6), y, rstd);
  rms_norm_backward<B>(x, gamma, rstd, dy, dx, dgamma);
  const auto xh = to_double(x.to_host()), gh = to_double(gamma.to_host()), dyh = to_double(dy.to_host());
  std::vector<double> ey, edx, edg(std::size_t(cols), 0.5);
  for (index_t r = 0; r < rows; ++r) {
    double ms = 0, gx = 0;
    for (index_t c = 0; c < cols; ++c) ms += xh[std::size_t(r * cols + c)] * xh[std::size_t(r * cols + c)] / double(cols);
    const double s = 1 / std::sqrt(ms + 1e-6);
    for (index_t c = 0; c < cols; ++c) {
      const std::size_t i = std::size_t(r * cols + c);
      ey.push_back(xh[i] * s * gh[std::size_t(c)]);
      gx += dyh[i] * gh[std::size_t(c)] * xh[i] * s / double(cols);
      edg[std::size_t(c)] += dyh[i] * xh[i] * s;
    }
    for (index_t c = 0; c < cols; ++c) {
      const std::size_t i = std::size_t(r * cols + c);
      edx.push_back(s * (dyh[i] * gh[std::size_t(c)] - xh[i] * s * gx));
    }
  }
  CHECK(relative_error(y.to_host(), ey) < 10 * tolerance_v<B>);
  CHECK(relative_error(dx.to_host(), edx) < 10 * tolerance_v<B>);
  CHECK(relative_error(dgamma.to_host(), edg) < 10 * tolerance_v<B>);
}

TEST_CASE_TEMPLATE("the language models' activations stay finite at extreme inputs", B, TREELORA_TEST_BACKENDS) {
  B backend;
  using S = typename B::scalar_type;
  const std::vector<S> extremes = {S(-1e4), S(-100), S(-30), S(0), S(30), S(100), S(1e4)};
  auto x = tensor<B>::from_host(backend, shape{index_t(extremes.size())}, extremes);
  tensor<B> y(backend, x.shape());
  for (auto f : {unary_function::gelu_tanh, unary_function::gelu_tanh_derivative, unary_function::silu,
                 unary_function::silu_derivative}) {
    apply<B>(f, x, y);
    const auto v = y.to_host();
    for (std::size_t i = 0; i < v.size(); ++i) {
      INFO("function ", int(f), " at ", extremes[i]);
      CHECK(std::isfinite(double(v[i])));
    }
  }
  apply<B>(unary_function::silu, x, y);
  CHECK(double(y.to_host().front()) == 0.0);   // x sigmoid(x) -> 0 from below
  CHECK(double(y.to_host().back()) == 1e4);    // -> x
  apply<B>(unary_function::gelu_tanh, x, y);
  CHECK(double(y.to_host().front()) == 0.0);
  CHECK(double(y.to_host().back()) == 1e4);
}

TEST_CASE_TEMPLATE("row vector add and column sums", B, TREELORA_TEST_BACKENDS) {
  B backend;
  auto x = random_tensor(backend, shape{2, 3, 4}, 1), v = random_tensor(backend, shape{4}, 2);
  auto xh = to_double(x.to_host());
  const auto vh = to_double(v.to_host());
  add_row_vector<B>(v, x);
  for (std::size_t i = 0; i < xh.size(); ++i) xh[i] += vh[i % 4];
  CHECK(relative_error(x.to_host(), xh) < tolerance_v<B>);
  auto s = random_tensor(backend, shape{4}, 3);
  auto e = to_double(s.to_host());
  for (auto& val : e) val *= 0.5;
  for (std::size_t i = 0; i < xh.size(); ++i) e[i % 4] += xh[i];
  sum_rows<B>(x, s, 0.5);
  CHECK(relative_error(s.to_host(), e) < tolerance_v<B>);
}

TEST_CASE_TEMPLATE("softmax rows and its backward", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t rows = 5, cols = 7;
  auto x = random_tensor(backend, shape{rows, cols}, 3, 3.0), dy = random_tensor(backend, shape{rows, cols}, 4);
  tensor<B> y(backend, shape{rows, cols}), dx(backend, shape{rows, cols});
  softmax_rows<B>(x, y);
  softmax_rows_backward<B>(y, dy, dx);
  const auto xh = to_double(x.to_host()), dyh = to_double(dy.to_host());
  std::vector<double> ey(xh.size()), edx(xh.size());
  for (index_t r = 0; r < rows; ++r) {
    double mx = -1e300, z = 0, s = 0;
    for (index_t c = 0; c < cols; ++c) mx = std::max(mx, xh[static_cast<std::size_t>(r * cols + c)]);
    for (index_t c = 0; c < cols; ++c) z += std::exp(xh[static_cast<std::size_t>(r * cols + c)] - mx);
    for (index_t c = 0; c < cols; ++c) ey[static_cast<std::size_t>(r * cols + c)] = std::exp(xh[static_cast<std::size_t>(r * cols + c)] - mx) / z;
    for (index_t c = 0; c < cols; ++c) s += ey[static_cast<std::size_t>(r * cols + c)] * dyh[static_cast<std::size_t>(r * cols + c)];
    // Jacobian-vector product written out: dx_c = sum_j (delta_cj y_c - y_c y_j) dy_j.
    for (index_t c = 0; c < cols; ++c) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      edx[i] = ey[i] * (dyh[i] - s);
    }
  }
  CHECK(relative_error(y.to_host(), ey) < 10 * tolerance_v<B>);
  CHECK(relative_error(dx.to_host(), edx) < 10 * tolerance_v<B>);
}

TEST_CASE_TEMPLATE("layer norm forward matches the formula", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t rows = 4, cols = 6;
  auto x = random_tensor(backend, shape{rows, cols}, 5), g = random_tensor(backend, shape{cols}, 6),
       b = random_tensor(backend, shape{cols}, 7);
  tensor<B> y(backend, shape{rows, cols}), mean(backend, shape{rows}), rstd(backend, shape{rows});
  layer_norm_forward<B>(x, g, b, 1e-5, y, mean, rstd);
  const auto xh = to_double(x.to_host()), gh = to_double(g.to_host()), bh = to_double(b.to_host());
  std::vector<double> e;
  for (index_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (index_t c = 0; c < cols; ++c) mu += xh[static_cast<std::size_t>(r * cols + c)] / cols;
    for (index_t c = 0; c < cols; ++c) var += std::pow(xh[static_cast<std::size_t>(r * cols + c)] - mu, 2) / cols;
    for (index_t c = 0; c < cols; ++c)
      e.push_back((xh[static_cast<std::size_t>(r * cols + c)] - mu) / std::sqrt(var + 1e-5) * gh[static_cast<std::size_t>(c)] + bh[static_cast<std::size_t>(c)]);
  }
  CHECK(relative_error(y.to_host(), e) < 10 * tolerance_v<B>);
}

TEST_CASE_TEMPLATE("gather and scatter-add rows", B, TREELORA_TEST_BACKENDS) {
  B backend;
  auto src = random_tensor(backend, shape{5, 3}, 1);
  const std::vector<index_t> rows = {4, 0, 4};
  tensor<B> out(backend, shape{3, 3});
  gather_rows<B>(src, rows, out);
  const auto sh = to_double(src.to_host());
  std::vector<double> e;
  for (index_t r : rows)
    for (index_t c = 0; c < 3; ++c) e.push_back(sh[static_cast<std::size_t>(r * 3 + c)]);
  CHECK(relative_error(out.to_host(), e) < tolerance_v<B>);
  tensor<B> acc(backend, shape{5, 3});
  scatter_add_rows<B>(out, rows, acc);
  std::vector<double> ea(15, 0.0);
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (index_t c = 0; c < 3; ++c) ea[static_cast<std::size_t>(rows[i] * 3 + c)] += e[i * 3 + static_cast<std::size_t>(c)];
  CHECK(relative_error(acc.to_host(), ea) < tolerance_v<B>);
  const std::vector<index_t> bad = {5};
  tensor<B> one(backend, shape{1, 3});
  CHECK_THROWS_WITH_AS(gather_rows<B>(src, bad, one), doctest::Contains("row 5 outside [5, 3]"), std::invalid_argument);
}

TEST_CASE_TEMPLATE("reductions", B, TREELORA_TEST_BACKENDS) {
  B backend;
  auto x = random_tensor(backend, shape{101}, 8), y = random_tensor(backend, shape{101}, 9);
  const auto xh = to_double(x.to_host()), yh = to_double(y.to_host());
  double s = 0, d = 0, l1 = 0, l1d = 0, mx = -1e300, sq = 0;
  for (std::size_t i = 0; i < xh.size(); ++i) {
    s += xh[i]; d += xh[i] * yh[i]; l1 += std::abs(xh[i]); l1d += std::abs(xh[i] - yh[i]);
    mx = std::max(mx, xh[i]); sq += xh[i] * xh[i];
  }
  const double tol = 10 * tolerance_v<B>;
  CHECK(std::abs(sum<B>(x) - s) < tol * 101);
  CHECK(std::abs(dot<B>(x, y) - d) < tol * 101);
  CHECK(std::abs(l1_norm<B>(x) - l1) < tol * 101);
  CHECK(std::abs(l1_distance<B>(x, y) - l1d) < tol * 101);
  CHECK(max<B>(x) == doctest::Approx(mx));
  CHECK(std::abs(squared_norm<B>(x) - sq) < tol * 101);
}

TEST_CASE_TEMPLATE("seeded fills are deterministic, offset-addressable and have the right moments", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  tensor<B> a(backend, shape{20000}), b(backend, shape{20000}), tail(backend, shape{100});
  fill_uniform<B>(a, -2, 3, 42);
  fill_uniform<B>(b, -2, 3, 42);
  CHECK(a.to_host() == b.to_host());
  fill_uniform<B>(tail, -2, 3, 42, 19900);  // counter offset: the last 100 values of the same stream
  const auto ah = a.to_host();
  CHECK(std::vector<typename B::scalar_type>(ah.end() - 100, ah.end()) == tail.to_host());
  double mean = 0, lo = 1e9, hi = -1e9;
  for (auto v : ah) { mean += v / 20000.0; lo = std::min(lo, double(v)); hi = std::max(hi, double(v)); }
  CHECK(mean == doctest::Approx(0.5).epsilon(0.05));
  CHECK(lo >= -2);
  CHECK(hi < 3);
  fill_normal<B>(a, 1, 2, 7);
  double m1 = 0, m2 = 0;
  for (auto v : a.to_host()) { m1 += v / 20000.0; m2 += double(v) * v / 20000.0; }
  CHECK(m1 == doctest::Approx(1).epsilon(0.05));
  CHECK(std::sqrt(m2 - m1 * m1) == doctest::Approx(2).epsilon(0.05));
}

TEST_CASE_TEMPLATE("shape mismatches throw and name the operation and both shapes", B, TREELORA_TEST_BACKENDS) {
  B backend;
  tensor<B> a(backend, shape{2, 3}), b(backend, shape{4, 5}), c(backend, shape{2, 5});
  CHECK_THROWS_WITH_AS(matmul<B>(a, transpose::no, b, transpose::no, c),
                       "treelora::matmul: inner dimensions differ: a [2, 3] vs b [4, 5]", std::invalid_argument);
  tensor<B> b2(backend, shape{3, 5}), c2(backend, shape{5, 2});
  CHECK_THROWS_WITH_AS(matmul<B>(a, transpose::no, b2, transpose::no, c2),
                       doctest::Contains("output [5, 2] should be [2, 5]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(axpy<B>(1, a, b), "treelora::axpy: sizes differ: [2, 3] vs [4, 5]", std::invalid_argument);
  CHECK_THROWS_WITH_AS(softmax_rows<B>(a, c), "treelora::softmax_rows: shapes differ: [2, 3] vs [2, 5]",
                       std::invalid_argument);
  CHECK_THROWS_AS(a.view().reshaped(shape{4}), std::invalid_argument);
  CHECK_THROWS_AS((tensor<B>::from_host(backend, shape{2, 2}, std::vector<typename B::scalar_type>(3))), std::invalid_argument);
  CHECK_THROWS_AS((shape{1, 2, 3, 4, 5}), std::invalid_argument);
}

TEST_CASE("shape: numel checks its product for overflow, extents are never negative") {
  CHECK(shape{}.numel() == 1);
  CHECK(shape{2, 3, 4}.numel() == 24);
  CHECK(shape{3037000499, 3037000499}.numel() == index_t(3037000499) * 3037000499);  // just below 2^63
  // Extents that files and the API can reach: their product used to overflow index_t (undefined behaviour).
  const index_t two32 = index_t(1) << 32;
  CHECK_THROWS_WITH_AS(shape({two32, two32}).numel(),
                       "treelora::shape: [4294967296, 4294967296] has more than 2^63 - 1 elements",
                       std::invalid_argument);
  CHECK_THROWS_AS(shape({3037000500, 3037000500}).numel(), std::invalid_argument);
  CHECK_THROWS_AS(shape({2, 2, 2, std::numeric_limits<index_t>::max()}).numel(), std::invalid_argument);
  CHECK_THROWS_AS(shape::batched(two32, shape{two32}).rows(), std::invalid_argument);
  CHECK(shape({two32, two32, 0}).numel() == 0);  // an empty tensor is empty, however long its other axes
  CHECK_THROWS_AS(shape({two32, two32, 0}).with_last(1).numel(), std::invalid_argument);
  // Every way to make a shape refuses a negative extent.
  CHECK_THROWS_WITH_AS(shape({2, -1}), doctest::Contains("negative extent -1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(shape::batched(-1, shape{2}), doctest::Contains("negative extent -1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(shape{2}.with_last(-3), doctest::Contains("negative extent -3"),
                       std::invalid_argument);
}

TEST_CASE("Eigen interop is zero-copy in both directions") {
  cpu_backend<float> backend;
  tensor<cpu_backend<float>> t(backend, shape{2, 3});
  as_eigen(t)(1, 2) = 5.0f;
  CHECK(t.to_host()[5] == 5.0f);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(2, 2);
  m << 1, 2, 3, 4;
  auto v = view_of(backend, m);
  CHECK(v.data() == m.data());
  CHECK(v.shape() == shape{2, 2});
  scale<cpu_backend<float>>(2, v);
  CHECK(m(1, 0) == 6.0f);
}

TEST_CASE("host_memory counts every CPU buffer alive and the peak since a reset") {
  const std::size_t base = host_memory::current();
  host_memory::reset_peak();
  {
    host_buffer<float> a(10);  // 40 bytes, rounded up to 64
    CHECK(host_memory::current() == base + 64);
    host_buffer<double> b(100);  // 800 bytes, rounded up to 832
    CHECK(host_memory::current() == base + 64 + 832);
    host_buffer<float> moved = std::move(a);  // a move allocates nothing and frees nothing
    CHECK(host_memory::current() == base + 64 + 832);
  }
  CHECK(host_memory::current() == base);
  CHECK(host_memory::peak() == base + 64 + 832);
  host_memory::reset_peak();
  CHECK(host_memory::peak() == base);
  host_buffer<float> empty(0);  // nothing allocated, nothing counted
  CHECK(host_memory::current() == base);
}

TEST_CASE("an empty (default-constructed) tensor used as data throws, naming the operation, instead of dereferencing null") {
  tensor<cpu_backend<float>> empty;
  CHECK(empty.empty());
  const auto message = doctest::Contains("the tensor is empty (default-constructed)");
  CHECK_THROWS_WITH_AS(empty.view(), message, std::invalid_argument);
  CHECK_THROWS_WITH_AS(std::as_const(empty).view(), doctest::Contains("tensor::view"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(empty.backend(), doctest::Contains("tensor::backend"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(empty.to_host(), message, std::invalid_argument);
  CHECK_THROWS_WITH_AS(empty.fill(1.0f), doctest::Contains("tensor::fill"), std::invalid_argument);
  cpu_backend<float> backend;
  empty.resize(backend, shape{0, 3});  // a tensor of no elements, on a backend, is a tensor
  CHECK(empty.view().numel() == 0);
  CHECK(empty.to_host().empty());
}
