// The CUDA backend against the CPU backend on the same inputs: every kernel (float and double, per-type tolerance),
// seeded fills element by element, the gemm modes, the error path, the losses, predictions and clipping norm computed
// on the device against the host loops, a LoRA layer's forward and backward, and one ViT training step (forward,
// cross-entropy, backward, Adam). Without a device each case says so and passes.
#include "cuda_test_support.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "treelora/backend/cuda_backend.hpp"
#include "treelora/layers/cross_entropy.hpp"
#include "treelora/models/gpt2.hpp"
#include "treelora/models/llama.hpp"
#include "treelora/models/vit.hpp"
#include "treelora/optim/clip.hpp"

using namespace treelora;
using treelora::testing::relative_error;

namespace {

template <class Scalar>
constexpr double tol = treelora::testing::tolerance<Scalar>::value;

/// Seeded normal host data (the host generator, independent of either backend).
template <class Scalar>
std::vector<Scalar> host_normal(std::size_t n, std::uint64_t seed, double stddev = 1.0) {
  random::generator g(seed);
  std::vector<Scalar> v(n);
  for (auto& x : v) x = static_cast<Scalar>(stddev * g.normal());
  return v;
}

/// A CPU and a CUDA backend of one scalar type, and tensors on both made from the same host data.
template <class Scalar>
struct twin {
  using cpu = cpu_backend<Scalar>;
  using gpu = cuda_backend<Scalar>;
  cpu host_backend;
  gpu device_backend;

  struct pair {
    tensor<cpu> c;
    tensor<gpu> g;
  };
  pair make(shape s, std::uint64_t seed, double stddev = 1.0) {
    const auto h = host_normal<Scalar>(static_cast<std::size_t>(s.numel()), seed, stddev);
    return {tensor<cpu>::from_host(host_backend, s, h), tensor<gpu>::from_host(device_backend, s, h)};
  }
  pair make_filled(shape s, Scalar value) {
    const std::vector<Scalar> h(static_cast<std::size_t>(s.numel()), value);
    return {tensor<cpu>::from_host(host_backend, s, h), tensor<gpu>::from_host(device_backend, s, h)};
  }
};

template <class Scalar>
double error(const typename twin<Scalar>::pair& p) {
  return relative_error(p.g.to_host(), p.c.to_host());
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool bits_equal(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

}  // namespace

TEST_CASE("the error path names the call, the site and the CUDA or cuBLAS error (no device needed)") {
  try {
    TREELORA_CUDA_CHECK(cudaSetDevice(1 << 20));
    FAIL("expected a throw");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK(what.find("treelora::cuda: cudaSetDevice(1 << 20) failed at ") != std::string::npos);
    CHECK(what.find("test_cuda_backend.cu:") != std::string::npos);
    CHECK(what.find("cudaError") != std::string::npos);  // the error name, e.g. cudaErrorInvalidDevice
  }
  try {
    TREELORA_CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE);
    FAIL("expected a throw");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("CUBLAS_STATUS_INVALID_VALUE") != std::string::npos);
  }
  const int count = cuda_device_count();
  const std::string expected = concat("device ", count, " requested but ", count, " CUDA device(s) present");
  CHECK_THROWS_WITH_AS(cuda_context(count), doctest::Contains(expected.c_str()), std::runtime_error);
}

TEST_CASE_TEMPLATE("memory: round trips, device copies (overlap too), fills, moves", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  cuda_backend<S> backend;
  CHECK(backend.name() == (std::is_same_v<S, float> ? "cuda<float>" : "cuda<double>"));
  CHECK_FALSE(cuda_backend<S>::is_host_accessible);
  const auto h = host_normal<S>(1000, 1);
  auto buffer = backend.allocate(1000);
  CHECK(buffer.size() == 1000);
  backend.copy_from_host(h.data(), buffer.data(), 1000);
  std::vector<S> back(1000);
  backend.copy_to_host(buffer.data(), back.data(), 1000);
  CHECK(back == h);
  // memmove semantics in both directions, as std::memmove on the CPU backend
  auto expected = h;
  std::memmove(expected.data() + 10, expected.data(), 500 * sizeof(S));
  backend.copy(buffer.data(), buffer.data() + 10, 500);
  backend.copy_to_host(buffer.data(), back.data(), 1000);
  CHECK(back == expected);
  std::memmove(expected.data(), expected.data() + 7, 600 * sizeof(S));
  backend.copy(buffer.data() + 7, buffer.data(), 600);
  backend.copy_to_host(buffer.data(), back.data(), 1000);
  CHECK(back == expected);
  // moves transfer ownership; the moved-from buffer is empty
  auto moved = std::move(buffer);
  CHECK(buffer.data() == nullptr);
  CHECK(moved.size() == 1000);
  backend.fill(moved.data(), 1000, S(0));
  backend.copy_to_host(moved.data(), back.data(), 1000);
  CHECK(back == std::vector<S>(1000, S(0)));
  backend.fill(moved.data(), 999, S(-2.5));
  backend.copy_to_host(moved.data(), back.data(), 1000);
  CHECK(back[998] == S(-2.5));
  CHECK(back[999] == S(0));
  tensor<cuda_backend<S>> t(backend, shape{3, 4});  // zero-filled, like the CPU tensor
  CHECK(t.to_host() == std::vector<S>(12, S(0)));
  tensor<cuda_backend<S>> copy_of_t = t;  // deep copy on the device
  CHECK(copy_of_t.data() != t.data());
  backend.synchronize();
}

TEST_CASE_TEMPLATE("seeded fills equal the CPU backend's element by element", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  const index_t n = 100003;
  auto p = w.make(shape{n}, 0);
  // uniform and bernoulli: bit-equal (exact double arithmetic on both sides, no FMA contraction)
  w.host_backend.fill_uniform(p.c.data(), n, S(-2), S(3), 42, 17);
  w.device_backend.fill_uniform(p.g.data(), n, S(-2), S(3), 42, 17);
  CHECK(bits_equal(p.g.to_host(), p.c.to_host()));
  w.host_backend.fill_bernoulli(p.c.data(), n, S(0.7), S(1 / 0.7), 5, 3);
  w.device_backend.fill_bernoulli(p.g.data(), n, S(0.7), S(1 / 0.7), 5, 3);
  CHECK(bits_equal(p.g.to_host(), p.c.to_host()));
  // normal: CUDA's log and cos are within 1-2 ulp of glibc's, so allow a few ulps in double (equal in float
  // except where a double differing in its last bits rounds to the neighbouring float)
  w.host_backend.fill_normal(p.c.data(), n, S(1), S(2), 7, 0);
  w.device_backend.fill_normal(p.g.data(), n, S(1), S(2), 7, 0);
  const auto gc = p.g.to_host(), cc = p.c.to_host();
  std::size_t differing = 0;
  double worst = 0;
  for (std::size_t i = 0; i < gc.size(); ++i) {
    differing += gc[i] != cc[i];
    worst = std::max(worst, std::abs(double(gc[i]) - double(cc[i])) / std::max(1.0, std::abs(double(cc[i]))));
  }
  MESSAGE("fill_normal: ", differing, " of ", n, " values differ from the CPU's, worst relative ", worst);
  CHECK(worst <= 8 * std::numeric_limits<S>::epsilon());
}

TEST_CASE_TEMPLATE("gemm equals the CPU for every transpose and beta; beta = 0 ignores NaN; k = 0", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  for (auto [m, n, k] : {std::array<index_t, 3>{7, 5, 9}, std::array<index_t, 3>{67, 45, 130}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (double beta : {0.0, 1.0, -0.5}) {
          auto a = w.make(ta ? shape{k, m} : shape{m, k}, 1), b = w.make(tb ? shape{n, k} : shape{k, n}, 2);
          auto c = beta == 0.0 ? w.make_filled(shape{m, n}, std::numeric_limits<S>::quiet_NaN()) : w.make(shape{m, n}, 3);
          matmul<cpu_backend<S>>(a.c, transpose{ta}, b.c, transpose{tb}, c.c, S(1.5), S(beta));
          matmul<cuda_backend<S>>(a.g, transpose{ta}, b.g, transpose{tb}, c.g, S(1.5), S(beta));
          INFO("m n k ", m, " ", n, " ", k, " ta ", ta, " tb ", tb, " beta ", beta);
          CHECK(error<S>(c) < 10 * tol<S>);
        }
  // Leading dimensions wider than the columns: operands are sub-blocks of larger matrices.
  auto big_a = w.make(shape{6, 10}, 4), big_b = w.make(shape{8, 12}, 5), big_c = w.make(shape{6, 9}, 6);
  w.host_backend.gemm(transpose::no, transpose::no, 6, 7, 8, S(1), big_a.c.data(), 10, big_b.c.data(), 12, S(0.5),
                      big_c.c.data(), 9);
  w.device_backend.gemm(transpose::no, transpose::no, 6, 7, 8, S(1), big_a.g.data(), 10, big_b.g.data(), 12, S(0.5),
                        big_c.g.data(), 9);
  CHECK(error<S>(big_c) < 10 * tol<S>);
  // k = 0: C = beta C (0 when beta = 0, NaN included)
  auto c = w.make_filled(shape{3, 4}, std::numeric_limits<S>::quiet_NaN());
  w.device_backend.gemm(transpose::no, transpose::no, 3, 4, 0, S(1), nullptr, 0, nullptr, 4, S(0), c.g.data(), 4);
  CHECK(c.g.to_host() == std::vector<S>(12, S(0)));
  auto d = w.make(shape{3, 4}, 7);
  w.host_backend.gemm(transpose::no, transpose::no, 3, 4, 0, S(1), nullptr, 0, nullptr, 4, S(-2), d.c.data(), 4);
  w.device_backend.gemm(transpose::no, transpose::no, 3, 4, 0, S(1), nullptr, 0, nullptr, 4, S(-2), d.g.data(), 4);
  CHECK(d.g.to_host() == d.c.to_host());
}

TEST_CASE_TEMPLATE("strided batched gemm equals the CPU, including a broadcast operand (stride 0)", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  const index_t batch = 5, m = 13, n = 6, k = 33;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      auto a = w.make(ta ? shape{batch, k, m} : shape{batch, m, k}, 1);
      auto b = w.make(tb ? shape{batch, n, k} : shape{batch, k, n}, 2);
      auto c = w.make(shape{batch, m, n}, 3);
      batched_matmul<cpu_backend<S>>(a.c, transpose{ta}, b.c, transpose{tb}, c.c, S(0.5), S(1));
      batched_matmul<cuda_backend<S>>(a.g, transpose{ta}, b.g, transpose{tb}, c.g, S(0.5), S(1));
      CHECK(error<S>(c) < 10 * tol<S>);
    }
  auto a = w.make(shape{batch, m, k}, 4), b = w.make(shape{k, n}, 5);
  auto c = w.make_filled(shape{batch, m, n}, std::numeric_limits<S>::quiet_NaN());
  w.host_backend.gemm_strided_batched(transpose::no, transpose::no, m, n, k, S(1), a.c.data(), k, m * k, b.c.data(), n,
                                      0, S(0), c.c.data(), n, m * n, batch);
  w.device_backend.gemm_strided_batched(transpose::no, transpose::no, m, n, k, S(1), a.g.data(), k, m * k, b.g.data(),
                                        n, 0, S(0), c.g.data(), n, m * n, batch);
  CHECK(error<S>(c) < 10 * tol<S>);
}

TEST_CASE("gemm modes on float: TF32 and bf16 storage stay close to FP32 and differ from it") {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  using G = cuda_backend<float>;
  cuda_context context;
  G backend(context);
  CHECK(context.mode() == gemm_mode::fp32);
  const index_t m = 96, n = 80, k = 256, batch = 3;
  auto a = tensor<G>::from_host(backend, shape{batch, m, k}, host_normal<float>(std::size_t(batch * m * k), 1));
  auto b = tensor<G>::from_host(backend, shape{batch, n, k}, host_normal<float>(std::size_t(batch * n * k), 2));
  tensor<G> reference(backend, shape{batch, m, n}), c(backend, shape{batch, m, n});
  batched_matmul<G>(a, transpose::no, b, transpose::yes, reference);
  const auto ref = reference.to_host();
  for (auto [mode, bound] : {std::pair{gemm_mode::tf32, 5e-3}, std::pair{gemm_mode::bf16, 3e-2}}) {
    context.set_gemm_mode(mode);
    batched_matmul<G>(a, transpose::no, b, transpose::yes, c);  // strided batched Ex
    const double batched_error = relative_error(c.to_host(), ref);
    matmul<G>(a.view().reshaped(shape{batch * m, k}).row_range(0, m), transpose::no,
              b.view().reshaped(shape{batch * n, k}).row_range(0, n), transpose::yes,
              c.view().reshaped(shape{batch * m, n}).row_range(0, m));  // single GemmEx on batch 0
    const auto single = c.to_host();
    const double single_error =
        relative_error(std::vector<float>(single.begin(), single.begin() + m * n), std::vector<float>(ref.begin(), ref.begin() + m * n));
    MESSAGE("mode ", int(mode), ": batched error ", batched_error, ", single error ", single_error);
    CHECK(batched_error < bound);
    CHECK(single_error < bound);
    CHECK(batched_error > 1e-7);  // the reduced-precision path really ran
  }
  context.set_gemm_mode(gemm_mode::fp32);
  batched_matmul<G>(a, transpose::no, b, transpose::yes, c);
  CHECK(c.to_host() == ref);
}

TEST_CASE_TEMPLATE("axpy, scale, multiply, multiply_add, row vectors and column sums equal the CPU", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  auto x = w.make(shape{1000, 37}, 1), y = w.make(shape{1000, 37}, 2), z = w.make(shape{1000, 37}, 3);
  axpy<cpu_backend<S>>(S(2.5), x.c, y.c);
  axpy<cuda_backend<S>>(S(2.5), x.g, y.g);
  CHECK(error<S>(y) < tol<S>);
  scale<cpu_backend<S>>(S(-3), y.c);
  scale<cuda_backend<S>>(S(-3), y.g);
  CHECK(error<S>(y) < tol<S>);
  multiply<cpu_backend<S>>(x.c, y.c, z.c);
  multiply<cuda_backend<S>>(x.g, y.g, z.g);
  CHECK(error<S>(z) < tol<S>);
  multiply_add<cpu_backend<S>>(x.c, y.c, z.c);
  multiply_add<cuda_backend<S>>(x.g, y.g, z.g);
  CHECK(error<S>(z) < tol<S>);
  auto v = w.make(shape{37}, 4);
  add_row_vector<cpu_backend<S>>(v.c, z.c);
  add_row_vector<cuda_backend<S>>(v.g, z.g);
  CHECK(error<S>(z) < tol<S>);
  for (double beta : {0.0, 1.0, 0.5}) {
    auto s = beta == 0.0 ? w.make_filled(shape{37}, std::numeric_limits<S>::quiet_NaN()) : w.make(shape{37}, 5);
    sum_rows<cpu_backend<S>>(z.c, s.c, S(beta));
    sum_rows<cuda_backend<S>>(z.g, s.g, S(beta));
    CHECK(error<S>(s) < 100 * tol<S>);  // 1000-term sums in different orders
  }
}

TEST_CASE_TEMPLATE("every unary map equals the CPU", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  auto x = w.make(shape{4097}, 7, 3.0), y = w.make(shape{4097}, 8);
  for (auto f : {unary_function::gelu, unary_function::gelu_derivative, unary_function::exp, unary_function::tanh,
                 unary_function::relu, unary_function::relu_derivative, unary_function::sign}) {
    apply<cpu_backend<S>>(f, x.c, y.c);
    apply<cuda_backend<S>>(f, x.g, y.g);
    INFO("unary function ", int(f));
    CHECK(error<S>(y) < 10 * tol<S>);
  }
}

TEST_CASE_TEMPLATE("softmax rows and its backward equal the CPU (narrow and wide rows)", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  for (auto [rows, cols] : {std::pair<index_t, index_t>{5, 7}, std::pair<index_t, index_t>{300, 197},
                            std::pair<index_t, index_t>{3, 1000}}) {
    auto x = w.make(shape{rows, cols}, 1, 5.0), dy = w.make(shape{rows, cols}, 2);
    auto y = w.make(shape{rows, cols}, 3), dx = w.make(shape{rows, cols}, 4);
    softmax_rows<cpu_backend<S>>(x.c, y.c);
    softmax_rows<cuda_backend<S>>(x.g, y.g);
    CHECK(error<S>(y) < 10 * tol<S>);
    softmax_rows_backward<cpu_backend<S>>(y.c, dy.c, dx.c);
    softmax_rows_backward<cuda_backend<S>>(y.g, dy.g, dx.g);
    CHECK(error<S>(dx) < 10 * tol<S>);
  }
}

TEST_CASE_TEMPLATE("layer norm forward and backward equal the CPU; parameter gradients accumulate", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  for (auto [rows, cols] : {std::pair<index_t, index_t>{4, 6}, std::pair<index_t, index_t>{129, 768}}) {
    auto x = w.make(shape{rows, cols}, 1, 2.0), gamma = w.make(shape{cols}, 2), beta = w.make(shape{cols}, 3);
    auto y = w.make(shape{rows, cols}, 4), mean = w.make(shape{rows}, 5), rstd = w.make(shape{rows}, 6);
    layer_norm_forward<cpu_backend<S>>(x.c, gamma.c, beta.c, S(1e-5), y.c, mean.c, rstd.c);
    layer_norm_forward<cuda_backend<S>>(x.g, gamma.g, beta.g, S(1e-5), y.g, mean.g, rstd.g);
    CHECK(error<S>(y) < 10 * tol<S>);
    CHECK(error<S>(mean) < 10 * tol<S>);
    CHECK(error<S>(rstd) < 10 * tol<S>);
    auto dy = w.make(shape{rows, cols}, 7), dx = w.make(shape{rows, cols}, 8);
    auto dgamma = w.make(shape{cols}, 9), dbeta = w.make(shape{cols}, 10);  // non-zero: the kernel must add
    layer_norm_backward<cpu_backend<S>>(x.c, gamma.c, mean.c, rstd.c, dy.c, dx.c, dgamma.c, dbeta.c);
    layer_norm_backward<cuda_backend<S>>(x.g, gamma.g, mean.g, rstd.g, dy.g, dx.g, dgamma.g, dbeta.g);
    CHECK(error<S>(dx) < 10 * tol<S>);
    CHECK(error<S>(dgamma) < 50 * tol<S>);
    CHECK(error<S>(dbeta) < 50 * tol<S>);
  }
}

TEST_CASE_TEMPLATE("RMSNorm forward and backward equal the CPU; the weight's gradient accumulates", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  for (auto [rows, cols] : {std::pair<index_t, index_t>{4, 6}, std::pair<index_t, index_t>{129, 2048}}) {
    auto x = w.make(shape{rows, cols}, 1, 2.0), gamma = w.make(shape{cols}, 2);
    auto y = w.make(shape{rows, cols}, 4), rstd = w.make(shape{rows}, 6);
    rms_norm_forward<cpu_backend<S>>(x.c, gamma.c, S(1e-6), y.c, rstd.c);
    rms_norm_forward<cuda_backend<S>>(x.g, gamma.g, S(1e-6), y.g, rstd.g);
    CHECK(error<S>(y) < 10 * tol<S>);
    CHECK(error<S>(rstd) < 10 * tol<S>);
    auto dy = w.make(shape{rows, cols}, 7), dx = w.make(shape{rows, cols}, 8), dgamma = w.make(shape{cols}, 9);
    rms_norm_backward<cpu_backend<S>>(x.c, gamma.c, rstd.c, dy.c, dx.c, dgamma.c);
    rms_norm_backward<cuda_backend<S>>(x.g, gamma.g, rstd.g, dy.g, dx.g, dgamma.g);
    CHECK(error<S>(dx) < 10 * tol<S>);
    CHECK(error<S>(dgamma) < 50 * tol<S>);
  }
}

TEST_CASE_TEMPLATE("rotate_half (RoPE) equals the CPU, forward and inverse, at an offset", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  const index_t batch = 3, tokens = 17, heads = 4, head_dim = 64, offset = 5;
  auto x = w.make(shape{batch, tokens, heads * head_dim}, 1), y = w.make(shape{batch, tokens, heads * head_dim}, 2);
  auto cos_table = w.make(shape{tokens + offset, head_dim / 2}, 3), sin_table = w.make(shape{tokens + offset, head_dim / 2}, 4);
  for (bool inverse : {false, true}) {
    rotate_half<cpu_backend<S>>(x.c, tokens, heads, offset, cos_table.c, sin_table.c, y.c, inverse);
    rotate_half<cuda_backend<S>>(x.g, tokens, heads, offset, cos_table.g, sin_table.g, y.g, inverse);
    CHECK(error<S>(y) < 10 * tol<S>);
  }
}

TEST_CASE_TEMPLATE("gather and scatter-add rows equal the CPU: distinct, repeated, and many uploads", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  auto src = w.make(shape{50, 9}, 1);
  const std::vector<index_t> repeated = {4, 0, 4, 49, 4, 0};
  const std::vector<index_t> distinct = {3, 48, 0, 17};
  for (const auto* rows : {&repeated, &distinct}) {
    const auto count = static_cast<index_t>(rows->size());
    auto out = w.make(shape{count, 9}, 2);
    gather_rows<cpu_backend<S>>(src.c, *rows, out.c);
    gather_rows<cuda_backend<S>>(src.g, *rows, out.g);
    CHECK(out.g.to_host() == out.c.to_host());
    auto acc = w.make(shape{50, 9}, 3);
    scatter_add_rows<cpu_backend<S>>(out.c, *rows, acc.c);
    scatter_add_rows<cuda_backend<S>>(out.g, *rows, acc.g);
    CHECK(acc.g.to_host() == acc.c.to_host());  // the same additions in the same order
  }
  // Many index lists, larger than the staging ring, then many small ones: growth and wrap-around of the ring.
  auto big = w.make(shape{20000, 3}, 4);
  std::vector<index_t> permutation(20000);
  std::iota(permutation.begin(), permutation.end(), index_t(0));
  auto gathered = w.make(shape{20000, 3}, 5);
  for (int round = 0; round < 3; ++round) {
    std::reverse(permutation.begin(), permutation.end());
    gather_rows<cuda_backend<S>>(big.g, permutation, gathered.g);
    gather_rows<cpu_backend<S>>(big.c, permutation, gathered.c);
  }
  CHECK(gathered.g.to_host() == gathered.c.to_host());
  auto small = w.make(shape{7, 3}, 6);
  for (int round = 0; round < 5000; ++round) {
    const std::vector<index_t> rows = {index_t(round % 50), index_t((round * 7 + 1) % 50), 2, 3, 4, 5, 6};
    gather_rows<cuda_backend<S>>(src.g.view().reshaped(shape{150, 3}), rows, small.g);
    gather_rows<cpu_backend<S>>(src.c.view().reshaped(shape{150, 3}), rows, small.c);
    if (round % 1000 == 999) CHECK(small.g.to_host() == small.c.to_host());
  }
}

TEST_CASE_TEMPLATE("reductions equal the CPU (small, large, empty)", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  for (index_t n : {index_t(1), index_t(101), index_t(1000003)}) {
    auto x = w.make(shape{n}, 8), y = w.make(shape{n}, 9);
    const auto close = [&](S gpu, S cpu) {
      return std::abs(double(gpu) - double(cpu)) <= 10 * tol<S> * std::max(1.0, std::sqrt(double(n))) * std::max(1.0, std::abs(double(cpu)));
    };
    INFO("n = ", n);
    CHECK(close(sum<cuda_backend<S>>(x.g), sum<cpu_backend<S>>(x.c)));
    CHECK(close(dot<cuda_backend<S>>(x.g, y.g), dot<cpu_backend<S>>(x.c, y.c)));
    CHECK(close(l1_norm<cuda_backend<S>>(x.g), l1_norm<cpu_backend<S>>(x.c)));
    CHECK(close(l1_distance<cuda_backend<S>>(x.g, y.g), l1_distance<cpu_backend<S>>(x.c, y.c)));
    CHECK(close(squared_norm<cuda_backend<S>>(x.g), squared_norm<cpu_backend<S>>(x.c)));
    CHECK(max<cuda_backend<S>>(x.g) == max<cpu_backend<S>>(x.c));  // exact
  }
  cuda_backend<S>& g = w.device_backend;
  CHECK(g.sum(0, nullptr) == S(0));
  CHECK(g.max(0, nullptr) == -std::numeric_limits<S>::infinity());
}

static_assert(BackendDeviceLosses<cuda_backend<float>> && BackendDeviceLosses<cuda_backend<double>>,
              "the CUDA backend computes losses, predictions and the clipping norm on the device");
static_assert(!BackendDeviceLosses<cpu_backend<float>>);

TEST_CASE_TEMPLATE("losses, predictions and the clipping norm on the device equal the host loops", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  using C = cpu_backend<S>;
  using G = cuda_backend<S>;
  SUBCASE("class cross-entropy: every class, a subset, a wide head") {
    for (const auto& [rows, classes] : {std::pair<index_t, index_t>{7, 10}, {3, 5000}}) {
      auto logits = w.make(shape{rows, classes}, 31, 3.0);
      auto gc = w.make_filled(shape{rows, classes}, S(7)), gg = w.make_filled(shape{rows, classes}, S(7));
      std::vector<index_t> labels;
      for (index_t r = 0; r < rows; ++r) labels.push_back((r * 3 + 1) % 4 * 2);  // even classes 0..6
      for (const std::vector<index_t>& allowed : {std::vector<index_t>{}, std::vector<index_t>{6, 0, 2, 4, 9, 2}}) {
        INFO("rows ", rows, ", classes ", classes, ", allowed ", allowed.size());
        const double lc = cross_entropy_loss<C>(logits.c, labels, gc.c, allowed);
        const double lg = cross_entropy_loss<G>(logits.g, labels, gg.g, allowed);
        CHECK(lg == doctest::Approx(lc).epsilon(10 * tol<S>));
        CHECK(relative_error(gg.g.to_host(), gc.c.to_host()) < 10 * tol<S>);
      }
    }
  }
  SUBCASE("token cross-entropy: ignored rows, a vocabulary of 70000, a label of tiny probability") {
    const index_t rows = 6, vocabulary = 70000;
    auto logits = w.make(shape{rows, vocabulary}, 32, 2.0);
    std::vector<S> host = logits.c.to_host();
    host[2 * vocabulary + 5] = S(60);  // row 2's label 6 sits beside a logit that takes all the probability
    logits.c = tensor<C>::from_host(w.host_backend, shape{rows, vocabulary}, host);
    logits.g = tensor<G>::from_host(w.device_backend, shape{rows, vocabulary}, host);
    const std::vector<index_t> labels = {11, ignored_label, 6, 69999, ignored_label, 0};
    auto gc = w.make_filled(shape{rows, vocabulary}, S(7)), gg = w.make_filled(shape{rows, vocabulary}, S(7));
    const double lc = token_cross_entropy_loss<C>(logits.c, labels, gc.c);
    const double lg = token_cross_entropy_loss<G>(logits.g, labels, gg.g);
    CHECK(lg == doctest::Approx(lc).epsilon(10 * tol<S>));
    CHECK(lg > 10);  // row 2 alone adds about 60 / 4
    const auto dg = gg.g.to_host();
    CHECK(relative_error(dg, gc.c.to_host()) < 10 * tol<S>);
    for (index_t c = 0; c < vocabulary; ++c) {  // ignored rows: exactly zero
      REQUIRE(dg[static_cast<std::size_t>(vocabulary + c)] == S(0));
      REQUIRE(dg[static_cast<std::size_t>(4 * vocabulary + c)] == S(0));
    }
  }
  SUBCASE("a NaN logit and a bad label are refused as on the host") {
    std::vector<S> host(12, S(0.5));
    host[7] = std::numeric_limits<S>::quiet_NaN();
    const auto logits = tensor<G>::from_host(w.device_backend, shape{3, 4}, host);
    tensor<G> gradient(w.device_backend, shape{3, 4});
    const std::vector<index_t> labels = {0, 1, 2};
    CHECK_THROWS_AS(cross_entropy_loss<G>(logits, labels, gradient), std::runtime_error);
    CHECK_THROWS_AS(token_cross_entropy_loss<G>(logits, labels, gradient), std::runtime_error);
    const std::vector<index_t> bad = {0, 4, 1};
    CHECK_THROWS_AS(cross_entropy_loss<G>(logits, bad, gradient), std::invalid_argument);
    const std::vector<index_t> outside = {0, 1, 3};
    CHECK_THROWS_AS(cross_entropy_loss<G>(logits, outside, gradient, std::vector<index_t>{0, 1, 2}), std::invalid_argument);
  }
  SUBCASE("argmax: ties across lanes go to the lowest class, a subset of classes, rows of every width") {
    for (const index_t classes : {index_t(1), index_t(10), index_t(100), index_t(4097)}) {
      const index_t rows = 37;
      std::vector<S> host(static_cast<std::size_t>(rows * classes));
      random::generator g(40 + static_cast<std::uint64_t>(classes));
      for (auto& x : host) x = static_cast<S>(std::floor(4 * g.uniform()));  // few values: many ties
      const auto c = tensor<C>::from_host(w.host_backend, shape{rows, classes}, host);
      const auto d = tensor<G>::from_host(w.device_backend, shape{rows, classes}, host);
      INFO("classes ", classes);
      CHECK(argmax_rows<G>(d) == argmax_rows<C>(c));
      std::vector<index_t> allowed;
      for (index_t k = classes - 1; k >= 0; k -= 3) allowed.push_back(k);
      CHECK(argmax_rows<G>(d, allowed) == argmax_rows<C>(c, allowed));
    }
  }
  SUBCASE("the clipping norm: one read for every gradient, the same norm and the same clipped gradients") {
    std::vector<tensor<C>> cv, cg;
    std::vector<tensor<G>> gv, gg;
    const std::vector<index_t> sizes = {1, 300, 0, 70001, 33};
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      auto v = w.make(shape{std::max<index_t>(sizes[i], 1)}, 50 + i), g = w.make(shape{sizes[i]}, 60 + i);
      cv.push_back(std::move(v.c)), gv.push_back(std::move(v.g)), cg.push_back(std::move(g.c)), gg.push_back(std::move(g.g));
    }
    parameter_list<C> cp;
    parameter_list<G> gp;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const bool trainable = i != 1;  // a frozen one does not count
      cp.push_back({concat("p", i), &cv[i], &cg[i], trainable});
      gp.push_back({concat("p", i), &gv[i], &gg[i], trainable});
    }
    for (const double max_norm : {1e6, 3.0}) {
      const double nc = clip_gradient_norm(cp, max_norm);
      const double ng = clip_gradient_norm(gp, max_norm);
      INFO("max norm ", max_norm);
      CHECK(ng == doctest::Approx(nc).epsilon(10 * tol<S>));
      for (std::size_t i = 0; i < sizes.size(); ++i)
        CHECK(relative_error(gg[i].to_host(), cg[i].to_host()) < 10 * tol<S>);
    }
    CHECK(clip_gradient_norm(gp, 1.0) == doctest::Approx(3.0).epsilon(10 * tol<S>));  // clipped to 3 just before
  }
}

TEST_CASE_TEMPLATE("SGD and Adam kernels equal the CPU (every option, dense and indexed)", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  const index_t n = 3001;
  struct sgd_case {
    double momentum, dampening, weight_decay;
    bool nesterov;
  };
  for (auto o : {sgd_case{0, 0, 0, false}, sgd_case{0.9, 0, 0, false}, sgd_case{0.9, 0.1, 1e-2, false},
                 sgd_case{0.9, 0, 1e-2, true}}) {
    auto p = w.make(shape{n}, 1), g = w.make(shape{n}, 2), buf = w.make(shape{n}, 3);
    for (int step = 0; step < 3; ++step) {
      w.host_backend.sgd_step(n, p.c.data(), g.c.data(), buf.c.data(), S(0.1), S(o.momentum), S(o.dampening),
                              S(o.weight_decay), o.nesterov, step == 0);
      w.device_backend.sgd_step(n, p.g.data(), g.g.data(), buf.g.data(), S(0.1), S(o.momentum), S(o.dampening),
                                S(o.weight_decay), o.nesterov, step == 0);
    }
    CHECK(error<S>(p) < 10 * tol<S>);
    if (o.momentum != 0) CHECK(error<S>(buf) < 10 * tol<S>);
  }
  for (bool decoupled : {false, true})
    for (double wd : {0.0, 1e-2}) {
      auto p = w.make(shape{n}, 4), g = w.make(shape{n}, 5), m = w.make_filled(shape{n}, S(0)), v = w.make_filled(shape{n}, S(0));
      for (std::int64_t step = 1; step <= 3; ++step) {
        w.host_backend.adam_step(n, p.c.data(), g.c.data(), m.c.data(), v.c.data(), S(1e-3), S(0.9), S(0.999), S(1e-8),
                                 S(wd), decoupled, step);
        w.device_backend.adam_step(n, p.g.data(), g.g.data(), m.g.data(), v.g.data(), S(1e-3), S(0.9), S(0.999),
                                   S(1e-8), S(wd), decoupled, step);
      }
      INFO("decoupled ", decoupled, " weight decay ", wd);
      CHECK(error<S>(p) < 10 * tol<S>);
      CHECK(error<S>(m) < 10 * tol<S>);
      CHECK(error<S>(v) < 10 * tol<S>);
      // indexed: distinct entries in parallel, then a list with a repeat (applied twice, in order)
      for (const std::vector<index_t>& entries : {std::vector<index_t>{5, 0, 3000, 17, 18}, std::vector<index_t>{9, 9, 2}}) {
        w.host_backend.adam_step_indexed(entries, p.c.data(), g.c.data(), m.c.data(), v.c.data(), S(1e-3), S(0.9),
                                         S(0.999), S(1e-8), S(wd), decoupled, 4);
        w.device_backend.adam_step_indexed(entries, p.g.data(), g.g.data(), m.g.data(), v.g.data(), S(1e-3), S(0.9),
                                           S(0.999), S(1e-8), S(wd), decoupled, 4);
        CHECK(error<S>(p) < 10 * tol<S>);
        CHECK(error<S>(m) < 10 * tol<S>);
        CHECK(error<S>(v) < 10 * tol<S>);
      }
    }
}

namespace {
/// Copies every parameter of `from` (CPU) into `to` (GPU) through the host: the two models then hold equal values.
template <class Scalar>
void copy_parameters(const parameter_list<cpu_backend<Scalar>>& from, const parameter_list<cuda_backend<Scalar>>& to) {
  REQUIRE(from.size() == to.size());
  for (std::size_t i = 0; i < from.size(); ++i) {
    REQUIRE(from[i].name == to[i].name);
    const auto h = from[i].value->to_host();
    to[i].value->backend().copy_from_host(h.data(), to[i].value->data(), static_cast<index_t>(h.size()));
  }
}
}  // namespace

TEST_CASE_TEMPLATE("a LoRA layer's forward and backward equal the CPU's (with dropout)", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  using C = cpu_backend<S>;
  using G = cuda_backend<S>;
  const standard_lora::config config{.rank = 8, .alpha = 16, .dropout = 0.1, .seed = 4};
  lora_layer<linear<C>> cpu_layer(w.host_backend, linear<C>(w.host_backend, 96, 80, true, 1), config);
  lora_layer<linear<G>> gpu_layer(w.device_backend, linear<G>(w.device_backend, 96, 80, true, 1), config);
  auto cpu_params = parameters(cpu_layer);
  auto gpu_params = parameters(gpu_layer);
  // Same seeds: the GPU initialisation already equals the CPU's (counter-based fills); B = 0 at start.
  CHECK(relative_error(gpu_params[0].value->to_host(), cpu_params[0].value->to_host()) == 0.0);
  fill_normal<C>(cpu_layer.adapter().b(), 0, S(0.1), 3);
  copy_parameters<S>(cpu_params, gpu_params);
  auto x = w.make(shape{4, 33, 96}, 5), dy = w.make(shape{4, 33, 80}, 6);
  zero_gradients(cpu_params);
  zero_gradients(gpu_params);
  const auto yc = cpu_layer.forward(x.c).to_host();
  const auto yg = gpu_layer.forward(x.g).to_host();
  CHECK(relative_error(yg, yc) < 20 * tol<S>);
  const auto dxc = cpu_layer.backward(dy.c).to_host();
  const auto dxg = gpu_layer.backward(dy.g).to_host();
  CHECK(relative_error(dxg, dxc) < 20 * tol<S>);
  for (std::size_t i = 0; i < cpu_params.size(); ++i) {
    if (!cpu_params[i].trainable) continue;
    INFO(cpu_params[i].name);
    CHECK(relative_error(gpu_params[i].gradient->to_host(), cpu_params[i].gradient->to_host()) < 100 * tol<S>);
  }
}

TEST_CASE_TEMPLATE("one ViT training step (forward, cross-entropy, backward, AdamW) equals the CPU's", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  using C = cpu_backend<S>;
  using G = cuda_backend<S>;
  const vit_config config{.image_height = 28, .image_width = 28, .channels = 1, .patch_size = 7, .width = 32,
                          .depth = 2, .heads = 4, .mlp_ratio = 2.0, .classes = 10, .lora_targets = {"q", "v", "fc1"},
                          .lora_rank = 4, .lora_alpha = 8.0, .lora_dropout = 0.1, .seed = 11};
  vit<C> cpu_model(w.host_backend, config);
  vit<G> gpu_model(w.device_backend, config);
  auto cpu_params = parameters(cpu_model);
  auto gpu_params = parameters(gpu_model);
  for (auto& p : cpu_params)  // non-zero LoRA B so the adapters take part
    if (p.name.ends_with("lora_b")) fill_normal<C>(*p.value, 0, S(0.05), std::hash<std::string>{}(p.name));
  copy_parameters<S>(cpu_params, gpu_params);
  const index_t batch = 6;
  auto images = w.make(shape{batch, 28, 28}, 21);
  const std::vector<index_t> labels = {0, 3, 3, 9, 1, 5};
  auto cpu_optimizer = make_adamw<C>(cpu_params);
  auto gpu_optimizer = make_adamw<G>(gpu_params);
  tensor<C> cpu_logits_gradient(w.host_backend, shape{batch, 10});
  tensor<G> gpu_logits_gradient(w.device_backend, shape{batch, 10});
  for (int step = 0; step < 2; ++step) {
    zero_gradients(cpu_params);
    zero_gradients(gpu_params);
    const auto cpu_logits = cpu_model.forward(images.c);
    const auto gpu_logits = gpu_model.forward(images.g);
    CHECK(relative_error(gpu_logits.to_host(), cpu_logits.to_host()) < 100 * tol<S>);
    const double cpu_loss = cross_entropy_loss<C>(cpu_logits, labels, cpu_logits_gradient);
    const double gpu_loss = cross_entropy_loss<G>(gpu_logits, labels, gpu_logits_gradient);
    CHECK(gpu_loss == doctest::Approx(cpu_loss).epsilon(100 * tol<S>));
    const auto dxc = cpu_model.backward(cpu_logits_gradient).to_host();
    const auto dxg = gpu_model.backward(gpu_logits_gradient).to_host();
    CHECK(relative_error(dxg, dxc) < 1000 * tol<S>);
    for (std::size_t i = 0; i < cpu_params.size(); ++i) {
      if (!cpu_params[i].trainable) continue;
      INFO(cpu_params[i].name);
      CHECK(relative_error(gpu_params[i].gradient->to_host(), cpu_params[i].gradient->to_host()) < 1000 * tol<S>);
    }
    cpu_optimizer.step();
    gpu_optimizer.step();
    for (std::size_t i = 0; i < cpu_params.size(); ++i) {
      INFO(cpu_params[i].name);
      CHECK(relative_error(gpu_params[i].value->to_host(), cpu_params[i].value->to_host()) < 1000 * tol<S>);
    }
  }
}

TEST_CASE("a ViT training step is one stream of kernels: the host waits once per step, for the loss (twice with clipping)") {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  using G = cuda_backend<float>;
  cuda_context context(0, gemm_mode::fp32);
  G backend(context);
  const vit_config config{.image_height = 28, .image_width = 28, .channels = 1, .patch_size = 7, .width = 32,
                          .depth = 2, .heads = 4, .mlp_ratio = 2.0, .classes = 10, .lora_targets = {"q", "v", "fc1"},
                          .lora_rank = 4, .lora_alpha = 8.0, .lora_dropout = 0.1, .seed = 11};
  vit<G> model(backend, config);
  auto params = parameters(model);
  auto optimizer = make_adamw<G>(params);
  const index_t batch = 8;
  tensor<G> images(backend, shape{batch, 28, 28}), logits_gradient(backend, shape{batch, 10});
  fill_normal<G>(images, 0, 1, 3);
  const std::vector<index_t> labels = {0, 1, 2, 3, 3, 2, 1, 0};
  const std::vector<index_t> classes = {0, 1, 2, 3};  // a task's classes on the shared head
  const auto step = [&](bool clip) {
    zero_gradients(params);
    const double loss = cross_entropy_loss<G>(model.forward(images), labels, logits_gradient, classes);
    model.backward(logits_gradient);
    if (clip) clip_gradient_norm(params, 1.0);
    optimizer.step();
    return loss;
  };
  step(true);  // warm-up: allocations, cuBLAS's workspace, the index staging ring's size
  const int steps = 20;
  for (const bool clip : {false, true}) {
    const std::uint64_t before = context.host_waits();
    for (int i = 0; i < steps; ++i) REQUIRE(std::isfinite(step(clip)));
    const std::uint64_t waits = context.host_waits() - before, per_step = clip ? 2 : 1;
    INFO("clipping: ", clip, ", host waits in ", steps, " steps: ", waits);
    CHECK(waits >= per_step * steps);
    CHECK(waits <= per_step * steps + 2);  // a wrap of the index staging ring waits once per lap
  }
}

TEST_CASE_TEMPLATE("language models on the GPU equal the CPU: Llama (GQA, llama3 RoPE, untied) and GPT-2 (fused c_attn), "
                   "a left-padded batch's logits, loss and LoRA gradients, and cached generation", S, float, double) {
  TREELORA_SKIP_WITHOUT_CUDA_DEVICE();
  twin<S> w;
  using C = cpu_backend<S>;
  using G = cuda_backend<S>;
  llama_config lc;
  lc.vocab_size = 50, lc.hidden_size = 32, lc.intermediate_size = 40, lc.num_hidden_layers = 2, lc.num_attention_heads = 4;
  lc.num_key_value_heads = 2, lc.max_position_embeddings = 64, lc.rope_scaling = rope_llama3_scaling{8.0, 1.0, 4.0, 16};
  lc.tie_word_embeddings = false, lc.pad_token_id = 0, lc.initializer_range = 0.2, lc.lora_targets = {"q_proj", "v_proj", "down_proj"};
  gpt2_config gc;
  gc.vocab_size = 50, gc.n_positions = 32, gc.n_embd = 32, gc.n_layer = 2, gc.n_head = 4, gc.pad_token_id = 0;
  gc.initializer_range = 0.2, gc.lora_targets = {"c_attn", "c_proj"};
  const std::vector<index_t> ids = {1, 5, 9, 13, 7, 2, 0, 0, 1, 4, 22, 2};
  const std::vector<unsigned char> counted = {0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1};
  const auto labels = next_token_labels(ids, counted, 6);
  const auto check_model = [&](auto& cpu_model, auto& gpu_model) {
    auto cpu_params = parameters(cpu_model);
    auto gpu_params = parameters(gpu_model);
    for (auto& p : cpu_params)
      if (p.name.ends_with("lora_b")) fill_normal<C>(*p.value, 0, S(0.1), std::hash<std::string>{}(p.name));
    copy_parameters<S>(cpu_params, gpu_params);
    zero_gradients(cpu_params), zero_gradients(gpu_params);
    const auto layout = left_padded_layout(ids, 2, 6, 0);
    const auto cpu_logits = cpu_model.forward_tokens(ids, layout);
    const auto gpu_logits = gpu_model.forward_tokens(ids, layout);
    CHECK(relative_error(gpu_logits.to_host(), cpu_logits.to_host()) < 100 * tol<S>);
    tensor<C> cg(w.host_backend, cpu_logits.shape());
    tensor<G> gg(w.device_backend, gpu_logits.shape());
    const double cpu_loss = token_cross_entropy_loss<C>(cpu_logits, labels, cg);
    const double gpu_loss = token_cross_entropy_loss<G>(gpu_logits, labels, gg);
    CHECK(gpu_loss == doctest::Approx(cpu_loss).epsilon(100 * tol<S>));
    cpu_model.backward(cg), gpu_model.backward(gg);
    for (std::size_t i = 0; i < cpu_params.size(); ++i) {
      if (!cpu_params[i].trainable) continue;
      INFO(cpu_params[i].name);
      CHECK(relative_error(gpu_params[i].gradient->to_host(), cpu_params[i].gradient->to_host()) < 1000 * tol<S>);
    }
    const std::vector<std::vector<index_t>> prompts = {{1, 5, 9}, {1, 4}};
    const generation_options options{.max_new_tokens = 6, .stop_ids = {2}};
    CHECK(generate_greedy(gpu_model, prompts, options).tokens == generate_greedy(cpu_model, prompts, options).tokens);
  };
  llama<C> cpu_llama(w.host_backend, lc);
  llama<G> gpu_llama(w.device_backend, lc);
  check_model(cpu_llama, gpu_llama);
  gpt2<C> cpu_gpt2(w.host_backend, gc);
  gpt2<G> gpu_gpt2(w.device_backend, gc);
  check_model(cpu_gpt2, gpu_gpt2);
}
