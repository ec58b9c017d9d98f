// LoRA: equals its base at B = 0, backward by finite differences (with and without dropout), merge/unmerge,
// scaling rules, initialisation, parameter names and bad configurations.
#include "test_support.hpp"

using namespace treelora;
using treelora::testing::finite_difference_error;
using treelora::testing::host_dot;
using treelora::testing::random_tensor;
using treelora::testing::relative_error;
using D = cpu_backend<double>;

TEST_CASE_TEMPLATE("LoRA with B = 0 equals its base, and merged equals unmerged", B, TREELORA_TEST_BACKENDS) {
  B backend;
  linear<B> reference(backend, 16, 12, true, 5);
  lora_layer<linear<B>> layer(backend, linear<B>(backend, 16, 12, true, 5), {.rank = 4, .alpha = 8, .seed = 9});
  auto x = random_tensor(backend, shape{3, 7, 16}, 1);
  const auto base_out = reference.forward(x).to_host();
  CHECK(layer.forward(x).to_host() == base_out);  // B starts at zero: exactly the base
  fill_normal<B>(layer.adapter().b(), 0, 1, 3);
  const auto adapted = layer.forward(x).to_host();
  CHECK(relative_error(adapted, base_out) > 1e-3);  // the adapter now changes the output
  layer.merge();
  CHECK(layer.merged());
  CHECK(relative_error(layer.forward(x).to_host(), adapted) < 20 * treelora::testing::tolerance_v<B>);
  CHECK_THROWS_AS(layer.merge(), std::invalid_argument);
  CHECK_THROWS_WITH_AS(layer.backward(x), doctest::Contains("unmerge before training"), std::invalid_argument);
  layer.unmerge();
  CHECK(relative_error(layer.base().weight().to_host(), reference.weight().to_host()) < 20 * treelora::testing::tolerance_v<B>);
}

TEST_CASE("LoRA backward matches finite differences for x, A and B; the base gets no gradient") {
  D backend;
  lora_layer<linear<D>> layer(backend, linear<D>(backend, 7, 5, true, 1), {.rank = 3, .alpha = 6, .seed = 2});
  fill_normal<D>(layer.adapter().b(), 0, 1, 3);
  auto x = random_tensor(backend, shape{4, 7}, 4);
  const auto probe = random_tensor(backend, shape{4, 5}, 5).to_host();
  auto loss = [&] { return host_dot<D>(layer.forward(x), probe); };
  loss();
  auto params = parameters(layer);
  zero_gradients(params);
  const auto dx = layer.backward(tensor<D>::from_host(backend, shape{4, 5}, probe)).to_host();
  REQUIRE(params.size() == 4);
  CHECK(params[0].name == "weight");
  CHECK_FALSE(params[0].trainable);
  CHECK(params[2].name == "lora_a");
  CHECK(params[3].name == "lora_b");
  CHECK(trainable_parameter_count(params) == 3 * 7 + 5 * 3);
  CHECK(finite_difference_error(x, loss, dx) < 1e-6);
  CHECK(finite_difference_error(layer.adapter().a(), loss, layer.adapter().a_gradient().to_host()) < 1e-6);
  CHECK(finite_difference_error(layer.adapter().b(), loss, layer.adapter().b_gradient().to_host()) < 1e-6);
  for (auto g : params[0].gradient->to_host()) CHECK(g == 0.0);
}

TEST_CASE("LoRA with dropout: backward matches finite differences under the same mask") {
  D backend;
  lora_layer<linear<D>> layer(backend, linear<D>(backend, 6, 4, false, 1),
                              {.rank = 2, .alpha = 4, .dropout = 0.4, .seed = 2});
  fill_normal<D>(layer.adapter().b(), 0, 1, 3);
  auto x = random_tensor(backend, shape{5, 6}, 4);
  const auto probe = random_tensor(backend, shape{5, 4}, 5).to_host();
  const auto position = layer.adapter().dropout_position();
  auto loss = [&] {
    layer.adapter().set_dropout_position(position);  // the same mask for every evaluation
    return host_dot<D>(layer.forward(x), probe);
  };
  loss();
  const auto dx = layer.backward(tensor<D>::from_host(backend, shape{5, 4}, probe)).to_host();
  CHECK(finite_difference_error(x, loss, dx) < 1e-6);
  CHECK(finite_difference_error(layer.adapter().a(), loss, layer.adapter().a_gradient().to_host()) < 1e-6);
  // Evaluation mode switches dropout off: output = base + s B A x exactly.
  layer.set_training(false);
  const auto eval_out = layer.forward(x).to_host();
  lora_layer<linear<D>> no_dropout(backend, linear<D>(backend, 6, 4, false, 1), {.rank = 2, .alpha = 4, .seed = 2});
  copy<D>(layer.adapter().b(), no_dropout.adapter().b());
  CHECK(relative_error(eval_out, no_dropout.forward(x).to_host()) < 1e-12);
}

TEST_CASE("LoRA scaling, rsLoRA and Kaiming-uniform A") {
  D backend;
  lora_layer<linear<D>> plain(backend, linear<D>(backend, 64, 32), {.rank = 8, .alpha = 32});
  lora_layer<linear<D>> stabilized(backend, linear<D>(backend, 64, 32), {.rank = 8, .alpha = 32, .rank_stabilized = true});
  CHECK(plain.adapter().scaling() == doctest::Approx(4.0));
  CHECK(stabilized.adapter().scaling() == doctest::Approx(32.0 / std::sqrt(8.0)));
  const auto a = plain.adapter().a().to_host();
  double lo = 1, hi = -1;
  for (double v : a) { lo = std::min(lo, v); hi = std::max(hi, v); }
  CHECK(hi <= 1.0 / 8.0);  // bound 1/sqrt(64)
  CHECK(lo >= -1.0 / 8.0);
  CHECK(hi > 0.9 / 8.0);   // and the range is used
  for (double v : plain.adapter().b().to_host()) CHECK(v == 0.0);
}

TEST_CASE("bad LoRA configurations throw with a message") {
  D backend;
  CHECK_THROWS_WITH_AS((lora_layer<linear<D>>(backend, linear<D>(backend, 4, 16), {.rank = 8})),
                       "treelora::standard_lora: rank 8 must be in [1, min(in 4, out 16)]", std::invalid_argument);
  CHECK_THROWS_AS((lora_layer<linear<D>>(backend, linear<D>(backend, 4, 16), {.rank = 0})), std::invalid_argument);
  CHECK_THROWS_WITH_AS((lora_layer<linear<D>>(backend, linear<D>(backend, 8, 8), {.rank = 2, .dropout = 1.0})),
                       doctest::Contains("dropout 1 outside [0, 1)"), std::invalid_argument);
}
