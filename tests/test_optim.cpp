// Optimiser steps against values computed by hand from PyTorch's update rules, and gradient clipping.
#include "test_support.hpp"

using namespace treelora;
using D = cpu_backend<double>;

namespace {
struct one_parameter {
  D backend;
  tensor<D> value = tensor<D>::from_host(backend, shape{2}, std::vector<double>{1.0, -2.0});
  tensor<D> gradient = tensor<D>(backend, shape{2});
  parameter_list<D> list() { return {{"p", &value, &gradient, true}}; }
  void set_gradient(double a, double b) { gradient = tensor<D>::from_host(backend, shape{2}, std::vector<double>{a, b}); }
};
}  // namespace

TEST_CASE("SGD with momentum, dampening and weight decay follows torch.optim.SGD") {
  one_parameter p;
  sgd<D> opt(p.list(), {.learning_rate = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
  p.set_gradient(0.5, 1.0);
  opt.step();
  // step 1: d = g + 0.01 p = (0.51, 0.98); buf = d; p -= 0.1 d
  CHECK(p.value.to_host()[0] == doctest::Approx(1.0 - 0.051));
  CHECK(p.value.to_host()[1] == doctest::Approx(-2.0 - 0.098));
  const double p0 = 0.949, p1 = -2.098;
  p.set_gradient(-1.0, 0.0);
  opt.step();
  // step 2: d = g + 0.01 p; buf = 0.9 buf + 0.9 d; p -= 0.1 buf
  const double d0 = -1.0 + 0.01 * p0, d1 = 0.0 + 0.01 * p1;
  const double b0 = 0.9 * 0.51 + 0.9 * d0, b1 = 0.9 * 0.98 + 0.9 * d1;
  CHECK(p.value.to_host()[0] == doctest::Approx(p0 - 0.1 * b0));
  CHECK(p.value.to_host()[1] == doctest::Approx(p1 - 0.1 * b1));
}

TEST_CASE("SGD Nesterov and plain SGD") {
  one_parameter p;
  sgd<D> opt(p.list(), {.learning_rate = 0.5, .momentum = 0.5, .nesterov = true});
  p.set_gradient(1.0, 2.0);
  opt.step();  // buf = g; d = g + 0.5 buf = 1.5 g
  CHECK(p.value.to_host()[0] == doctest::Approx(1.0 - 0.75));
  CHECK(p.value.to_host()[1] == doctest::Approx(-2.0 - 1.5));
  one_parameter q;
  sgd<D> plain(q.list(), {.learning_rate = 0.25});
  q.set_gradient(4.0, -4.0);
  plain.step();
  CHECK(q.value.to_host() == std::vector<double>{0.0, -1.0});
  CHECK_THROWS_AS(sgd<D>(q.list(), {.momentum = 0.0, .nesterov = true}), std::invalid_argument);
}

TEST_CASE("Adam follows torch.optim.Adam over two steps, L2 weight decay included") {
  one_parameter p;
  adam<D> opt(p.list(), {.learning_rate = 0.1, .beta1 = 0.9, .beta2 = 0.99, .epsilon = 1e-8, .weight_decay = 0.1});
  double x = 1.0, m = 0, v = 0;
  for (int t = 1; t <= 2; ++t) {
    const double g = (t == 1 ? 0.5 : -0.25);
    p.set_gradient(g, 0.0);
    opt.step();
    const double gd = g + 0.1 * x;
    m = 0.9 * m + 0.1 * gd;
    v = 0.99 * v + 0.01 * gd * gd;
    const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.99, t);
    x -= 0.1 / bc1 * m / (std::sqrt(v) / std::sqrt(bc2) + 1e-8);
    CHECK(p.value.to_host()[0] == doctest::Approx(x).epsilon(1e-12));
  }
}

TEST_CASE("AdamW decays the weight before the Adam update") {
  one_parameter p;
  auto opt = make_adamw<D>(p.list(), {.learning_rate = 0.01, .weight_decay = 0.5});
  p.set_gradient(2.0, 0.0);
  opt.step();
  // p = 1 * (1 - 0.01 * 0.5); m = 0.2, v = 0.004; bias-corrected m/sqrt(v) = 2/2 = 1; p -= 0.01 * 1
  CHECK(p.value.to_host()[0] == doctest::Approx(0.995 - 0.01).epsilon(1e-7));
  // zero gradient: only the decay moves it
  CHECK(p.value.to_host()[1] == doctest::Approx(-2.0 * 0.995).epsilon(1e-7));
}

TEST_CASE("gradient clipping by global norm matches clip_grad_norm_") {
  one_parameter p;
  p.set_gradient(3.0, 4.0);
  const double norm = clip_gradient_norm(p.list(), 1.0);
  CHECK(norm == doctest::Approx(5.0));
  CHECK(p.gradient.to_host()[0] == doctest::Approx(3.0 / (5.0 + 1e-6)));
  CHECK(p.gradient.to_host()[1] == doctest::Approx(4.0 / (5.0 + 1e-6)));
  p.set_gradient(0.3, 0.4);
  CHECK(clip_gradient_norm(p.list(), 1.0) == doctest::Approx(0.5));
  CHECK(p.gradient.to_host()[0] == 0.3);  // under the limit: untouched
  p.set_gradient(std::numeric_limits<double>::infinity(), 0.0);
  CHECK_THROWS_WITH_AS(clip_gradient_norm(p.list(), 1.0), doctest::Contains("gradient norm is not finite"),
                       std::runtime_error);
}
