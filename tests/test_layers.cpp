// Linear, LayerNorm/softmax/GELU backward passes and the loss against central finite differences (double).
#include "test_support.hpp"

using namespace treelora;
using treelora::testing::finite_difference_error;
using treelora::testing::host_dot;
using treelora::testing::random_tensor;
using treelora::testing::relative_error;
using D = cpu_backend<double>;

static_assert(check_layer<linear<D>>());
static_assert(LinearLike<linear<cpu_backend<float>>>);

TEST_CASE_TEMPLATE("linear forward matches x W^T + b", B, TREELORA_TEST_BACKENDS) {
  B backend;
  linear<B> layer(backend, 5, 3, true, 11);
  auto x = random_tensor(backend, shape{2, 4, 5}, 1);
  auto y = layer.forward(x);
  CHECK(y.shape() == shape{2, 4, 3});
  const auto xh = x.to_host(), wh = layer.weight().to_host(), bh = layer.bias().to_host();
  std::vector<double> e;
  for (index_t r = 0; r < 8; ++r)
    for (index_t o = 0; o < 3; ++o) {
      double s = bh[static_cast<std::size_t>(o)];
      for (index_t i = 0; i < 5; ++i) s += double(xh[static_cast<std::size_t>(r * 5 + i)]) * wh[static_cast<std::size_t>(o * 5 + i)];
      e.push_back(s);
    }
  CHECK(relative_error(y.to_host(), e) < 10 * treelora::testing::tolerance_v<B>);
  // PyTorch's default init bound 1/sqrt(in).
  for (auto w : wh) CHECK(std::abs(w) <= 1.0 / std::sqrt(5.0));
}

TEST_CASE("linear backward matches finite differences for x, W and b") {
  D backend;
  linear<D> layer(backend, 6, 4, true, 3);
  auto x = random_tensor(backend, shape{5, 6}, 1);
  auto probe = random_tensor(backend, shape{5, 4}, 2).to_host();
  auto loss = [&] { return host_dot<D>(layer.forward(x), probe); };
  loss();
  auto dy = tensor<D>::from_host(backend, shape{5, 4}, probe);
  auto dx = layer.backward(dy).to_host();
  auto params = parameters(layer);
  CHECK(params[0].name == "weight");
  CHECK(params[1].name == "bias");
  const auto dw = params[0].gradient->to_host(), db = params[1].gradient->to_host();
  CHECK(finite_difference_error(x, loss, dx) < 1e-6);
  CHECK(finite_difference_error(layer.weight(), loss, dw) < 1e-6);
  CHECK(finite_difference_error(layer.bias(), loss, db) < 1e-6);
}

TEST_CASE("linear gradients accumulate and a frozen linear computes none") {
  D backend;
  linear<D> layer(backend, 3, 2, true, 3);
  auto x = random_tensor(backend, shape{4, 3}, 1), dy = random_tensor(backend, shape{4, 2}, 2);
  layer.forward(x);
  layer.backward(dy);
  auto once = parameters(layer)[0].gradient->to_host();
  layer.forward(x);
  layer.backward(dy);
  auto twice = parameters(layer)[0].gradient->to_host();
  for (std::size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[i]));
  zero_gradients(parameters(layer));
  layer.set_trainable(false);
  layer.forward(x);
  layer.backward(dy);
  for (auto g : parameters(layer)[0].gradient->to_host()) CHECK(g == 0.0);
  CHECK(trainable_parameter_count(parameters(layer)) == 0);
}

TEST_CASE("linear rejects bad shapes with a message") {
  D backend;
  CHECK_THROWS_WITH_AS(linear<D>(backend, 0, 3), doctest::Contains("features must be positive"), std::invalid_argument);
  linear<D> layer(backend, 3, 2);
  tensor<D> x(backend, shape{4, 5});
  CHECK_THROWS_WITH_AS(layer.forward(x), "treelora::linear::forward: input [4, 5] has last axis 5, expected in_features 3",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(layer.backward(x), "treelora::linear::backward: called before forward", std::invalid_argument);
}

TEST_CASE("layer norm backward matches finite differences for x, gamma and beta") {
  D backend;
  const index_t rows = 3, cols = 5;
  auto x = random_tensor(backend, shape{rows, cols}, 1), gamma = random_tensor(backend, shape{cols}, 2),
       beta = random_tensor(backend, shape{cols}, 3);
  const auto probe = random_tensor(backend, shape{rows, cols}, 4).to_host();
  tensor<D> y(backend, shape{rows, cols}), mean(backend, shape{rows}), rstd(backend, shape{rows});
  auto loss = [&] {
    layer_norm_forward<D>(x, gamma, beta, 1e-5, y, mean, rstd);
    return host_dot<D>(y, probe);
  };
  loss();
  auto dy = tensor<D>::from_host(backend, shape{rows, cols}, probe);
  tensor<D> dx(backend, shape{rows, cols}), dgamma(backend, shape{cols}), dbeta(backend, shape{cols});
  layer_norm_backward<D>(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  CHECK(finite_difference_error(x, loss, dx.to_host()) < 1e-6);
  CHECK(finite_difference_error(gamma, loss, dgamma.to_host()) < 1e-6);
  CHECK(finite_difference_error(beta, loss, dbeta.to_host()) < 1e-6);
}

TEST_CASE("softmax backward and the GELU derivative match finite differences") {
  D backend;
  auto x = random_tensor(backend, shape{3, 6}, 1, 2.0);
  const auto probe = random_tensor(backend, shape{3, 6}, 2).to_host();
  tensor<D> y(backend, shape{3, 6});
  auto softmax_loss = [&] {
    softmax_rows<D>(x, y);
    return host_dot<D>(y, probe);
  };
  softmax_loss();
  auto dy = tensor<D>::from_host(backend, shape{3, 6}, probe);
  tensor<D> dx(backend, shape{3, 6});
  softmax_rows_backward<D>(y, dy, dx);
  CHECK(finite_difference_error(x, softmax_loss, dx.to_host()) < 1e-6);

  auto gelu_loss = [&] {
    apply<D>(unary_function::gelu, x, y);
    return host_dot<D>(y, probe);
  };
  tensor<D> derivative(backend, shape{3, 6});
  apply<D>(unary_function::gelu_derivative, x, derivative);
  multiply<D>(derivative, dy, dx);
  CHECK(finite_difference_error(x, gelu_loss, dx.to_host()) < 1e-6);
}

TEST_CASE("mse loss: value, gradient by finite differences, and a NaN loss throws") {
  D backend;
  auto p = random_tensor(backend, shape{4, 3}, 1), t = random_tensor(backend, shape{4, 3}, 2);
  tensor<D> g(backend, shape{4, 3});
  auto loss = [&] { return mse_loss<D>(p, t, g); };
  loss();
  const auto grad = g.to_host();
  double expected = 0;
  const auto ph = p.to_host(), th = t.to_host();
  for (std::size_t i = 0; i < ph.size(); ++i) expected += (ph[i] - th[i]) * (ph[i] - th[i]) / 12.0;
  CHECK(loss() == doctest::Approx(expected));
  CHECK(finite_difference_error(p, loss, grad) < 1e-6);
  p.data()[0] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(loss(), doctest::Contains("treelora::mse_loss: loss is not finite"), std::runtime_error);
}
