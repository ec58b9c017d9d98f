// Transformer layers: LayerNorm, GELU, multi-head attention (against a naive host attention), the MLP and the
// pre-LN block, each backward pass checked against central finite differences in double, LoRA targets included.
#include <numbers>

#include "test_support.hpp"

#include "treelora/models/transformer/swiglu_mlp.hpp"
#include "treelora/models/transformer/transformer_block.hpp"

using namespace treelora;
using treelora::testing::finite_difference_error;
using treelora::testing::host_dot;
using treelora::testing::random_tensor;
using treelora::testing::relative_error;
using D = cpu_backend<double>;

static_assert(check_layer<layer_norm<D>>());
static_assert(check_layer<gelu<D>>());
static_assert(check_layer<multi_head_attention<D>>());
static_assert(check_layer<mlp_block<D>>());
static_assert(check_layer<transformer_block<cpu_backend<float>>>());
static_assert(LinearLike<optional_lora_linear<D>>);

namespace {

/// Worst finite-difference error of dx and of every trainable parameter's gradient, with loss = <layer(x), probe>.
template <class L>
double worst_gradient_error(L& layer, tensor<D>& x, const std::function<void()>& before_forward = [] {}) {
  // step 1e-5, not 1e-6: the loss sums every output, and its rounding over a 1e-6 step measured 1.3e-6 on a small
  // gradient entry of the block's attn.o.weight on an AVX-512 (Zen 5) machine; the truncation error at 1e-5 is ~1e-10.
  constexpr double step = 1e-5;
  D& backend = x.backend();
  const shape out_shape = layer.forward(x).shape();
  const auto probe = random_tensor(backend, out_shape, 99).to_host();
  auto loss = [&] {
    before_forward();
    return host_dot<D>(layer.forward(x), probe);
  };
  loss();
  auto params = parameters(layer);
  zero_gradients(params);
  const auto dx = layer.backward(tensor<D>::from_host(backend, out_shape, probe)).to_host();
  double worst = finite_difference_error(x, loss, dx, step);
  for (auto& p : params) {
    if (!p.trainable) continue;
    if (p.name.ends_with("k.bias")) {
      // softmax is invariant to a constant per score row and q . bk is one: the key bias gets exactly no gradient,
      // and finite differences would only measure round-off.
      for (double g : p.gradient->to_host()) CHECK(std::abs(g) < 1e-12);
      continue;
    }
    const double e = finite_difference_error(*p.value, loss, p.gradient->to_host(), step);
    INFO(p.name, " error ", e);
    CHECK(e < 1e-6);
    worst = std::max(worst, e);
  }
  MESSAGE("worst finite-difference error ", worst);
  return worst;
}

/// Every adapter's B gets random values so that the gradient of A is not identically zero.
void randomise_adapters(parameter_list<D> params) {
  std::uint64_t seed = 500;
  for (auto& p : params)
    if (p.name.ends_with("lora_b")) fill_normal<D>(*p.value, 0, 0.5, seed++);
}

std::vector<std::string> names(parameter_list<D> params) {
  std::vector<std::string> out;
  for (auto& p : params) out.push_back(p.name);
  return out;
}

}  // namespace

TEST_CASE("layer_norm layer: forward normalises rows, backward matches finite differences, frozen sends no gradient") {
  D backend;
  layer_norm<D> norm(backend, 6, 1e-5);
  fill_normal<D>(norm.gamma(), 1, 0.3, 1);
  fill_normal<D>(norm.beta(), 0, 0.3, 2);
  auto x = random_tensor(backend, shape{2, 3, 6}, 3, 2.0);
  CHECK(worst_gradient_error(norm, x) < 1e-6);
  CHECK(names(parameters(norm, "norm")) == std::vector<std::string>{"norm.weight", "norm.bias"});

  layer_norm<D> plain(backend, 6);
  const auto y = plain.forward(x).to_host();
  for (index_t r = 0; r < 6; ++r) {
    double mean = 0, square = 0;
    for (index_t c = 0; c < 6; ++c) mean += y[static_cast<std::size_t>(r * 6 + c)] / 6;
    for (index_t c = 0; c < 6; ++c) square += std::pow(y[static_cast<std::size_t>(r * 6 + c)] - mean, 2) / 6;
    CHECK(std::abs(mean) < 1e-12);
    CHECK(square == doctest::Approx(1.0).epsilon(1e-4));
  }

  norm.set_trainable(false);
  zero_gradients(parameters(norm));
  CHECK(worst_gradient_error(norm, x) < 1e-6);  // dx still exact
  for (double g : norm.gamma_gradient().to_host()) CHECK(g == 0.0);
  CHECK(trainable_parameter_count(parameters(norm)) == 0);
  CHECK_THROWS_WITH_AS(layer_norm<D>(backend, 6).backward(x), "treelora::layer_norm::backward: called before forward",
                       std::invalid_argument);
  tensor<D> wrong(backend, shape{2, 5});
  CHECK_THROWS_WITH_AS(norm.forward(wrong), "treelora::layer_norm::forward: input [2, 5] has last axis 5, expected 6",
                       std::invalid_argument);
}

TEST_CASE("gelu layer: exact GELU forward and finite-difference backward") {
  D backend;
  gelu<D> activation(backend);
  auto x = random_tensor(backend, shape{4, 5}, 1, 2.0);
  const auto y = activation.forward(x).to_host();
  const auto xh = x.to_host();
  for (std::size_t i = 0; i < xh.size(); ++i)
    CHECK(y[i] == doctest::Approx(0.5 * xh[i] * (1 + std::erf(xh[i] / std::sqrt(2.0)))).epsilon(1e-14));
  CHECK(worst_gradient_error(activation, x) < 1e-6);
}

TEST_CASE("RMSNorm (Llama): forward against the formula, finite-difference backward, frozen and trainable") {
  D backend;
  rms_norm<D> norm(backend, 6, 1e-5);
  fill_normal<D>(norm.weight(), 1, 0.3, 4);
  auto x = random_tensor(backend, shape{2, 3, 6}, 1, 2.0);
  const auto y = norm.forward(x).to_host();
  const auto xh = x.to_host(), w = norm.weight().to_host();
  for (index_t r = 0; r < 6; ++r) {
    double ms = 0;
    for (index_t c = 0; c < 6; ++c) ms += xh[std::size_t(r * 6 + c)] * xh[std::size_t(r * 6 + c)] / 6;
    for (index_t c = 0; c < 6; ++c)
      CHECK(y[std::size_t(r * 6 + c)] == doctest::Approx(xh[std::size_t(r * 6 + c)] / std::sqrt(ms + 1e-5) * w[std::size_t(c)]).epsilon(1e-13));
  }
  CHECK(worst_gradient_error(norm, x) < 1e-6);
  norm.set_trainable(false);
  norm.weight_gradient().fill(0);
  CHECK(worst_gradient_error(norm, x) < 1e-6);  // dx still exact, and the frozen weight gets nothing
  for (double g : norm.weight_gradient().to_host()) CHECK(g == 0);
  auto wrong = random_tensor(backend, shape{2, 5}, 2);
  CHECK_THROWS_WITH_AS(norm.forward(wrong), "treelora::rms_norm::forward: input [2, 5] has last axis 5, expected 6",
                       std::invalid_argument);
}

TEST_CASE("RoPE inverse frequencies: theta^(-2i/d), and llama3 scaling in its three regimes (Llama-3.2-1B's values)") {
  const auto plain = rope_inverse_frequencies(8, 10000.0);
  REQUIRE(plain.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(plain[i] == doctest::Approx(1 / std::pow(10000.0, 2.0 * double(i) / 8)).epsilon(1e-15));
  // Hugging Face's _compute_llama3_parameters, restated: low_freq_wavelen = 8192 / 1, high_freq_wavelen = 8192 / 4
  const rope_llama3_scaling s{.factor = 32, .low_freq_factor = 1, .high_freq_factor = 4, .original_max_position_embeddings = 8192};
  const auto scaled = rope_inverse_frequencies(64, 500000.0, s);
  int kept = 0, divided = 0, blended = 0;
  for (std::size_t i = 0; i < 32; ++i) {
    const double f = std::pow(500000.0, -double(2 * i) / 64), wavelen = 2 * std::numbers::pi / f;
    double expected;
    if (wavelen < 8192.0 / 4) expected = f, ++kept;
    else if (wavelen > 8192.0 / 1) expected = f / 32, ++divided;
    else {
      const double smooth = (8192.0 / wavelen - 1) / (4 - 1);
      expected = (1 - smooth) * f / 32 + smooth * f, ++blended;
    }
    CHECK(scaled[i] == doctest::Approx(expected).epsilon(1e-14));
  }
  CHECK((kept > 0 && divided > 0 && blended > 0));
  CHECK_THROWS_AS(rope_inverse_frequencies(7, 10000.0), std::invalid_argument);
}

TEST_CASE("rotary embedding: forward against the half-split formula at an offset, finite-difference backward") {
  D backend;
  const index_t batch = 2, tokens = 3, heads = 2, head_dim = 6, offset = 4;
  rotary_embedding<D> rope(backend, heads, head_dim, 16, 10000.0);
  rope.set_position_offset(offset);
  auto x = random_tensor(backend, shape{batch, tokens, heads * head_dim}, 1);
  const auto y = rope.forward(x).to_host();
  const auto xh = x.to_host();
  for (index_t b = 0; b < batch; ++b)
    for (index_t t = 0; t < tokens; ++t)
      for (index_t h = 0; h < heads; ++h)
        for (index_t i = 0; i < head_dim / 2; ++i) {
          const double angle = double(t + offset) * std::pow(10000.0, -2.0 * double(i) / double(head_dim));
          const std::size_t base = std::size_t(((b * tokens + t) * heads + h) * head_dim);
          const double a = xh[base + std::size_t(i)], c = xh[base + std::size_t(i + head_dim / 2)];
          CHECK(y[base + std::size_t(i)] == doctest::Approx(a * std::cos(angle) - c * std::sin(angle)).epsilon(1e-13));
          CHECK(y[base + std::size_t(i + head_dim / 2)] == doctest::Approx(c * std::cos(angle) + a * std::sin(angle)).epsilon(1e-13));
        }
  CHECK(worst_gradient_error(rope, x) < 1e-6);
  rope.set_position_offset(14);  // 3 tokens at 14 pass the 16 positions
  CHECK_THROWS_WITH_AS(rope.forward(x), doctest::Contains("go past the 16 positions"), std::invalid_argument);
}

TEST_CASE("gelu_tanh and silu layers: forward formulas and finite-difference backward") {
  D backend;
  auto x = random_tensor(backend, shape{4, 5}, 1, 3.0);
  const auto xh = x.to_host();
  gelu_tanh<D> gelu_new(backend);
  silu<D> swish(backend);
  const auto y = gelu_new.forward(x).to_host();
  const auto z = swish.forward(x).to_host();
  for (std::size_t i = 0; i < xh.size(); ++i) {
    const double v = xh[i];
    CHECK(y[i] == doctest::Approx(0.5 * v * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (v + 0.044715 * v * v * v))))
                      .epsilon(1e-14));
    CHECK(z[i] == doctest::Approx(v / (1 + std::exp(-v))).epsilon(1e-14));
  }
  CHECK(worst_gradient_error(gelu_new, x) < 1e-6);
  CHECK(worst_gradient_error(swish, x) < 1e-6);
}

TEST_CASE("SwiGLU MLP (Llama): forward against a host loop, finite-difference backward with LoRA on every projection") {
  D backend;
  const index_t width = 6, hidden = 10;
  swiglu_mlp<D> plain(backend, width, hidden, 3);
  auto x = random_tensor(backend, shape{2, 3, width}, 1);
  // forward: an explicit loop over W_gate, W_up, W_down (no bias)
  const auto y = plain.forward(x).to_host();
  const auto xh = x.to_host(), wg = plain.gate_proj().weight().to_host(), wu = plain.up_proj().weight().to_host(),
             wd = plain.down_proj().weight().to_host();
  CHECK(plain.gate_proj().base().bias().empty());
  for (index_t r = 0; r < 6; ++r) {
    std::vector<double> h(static_cast<std::size_t>(hidden));
    for (index_t j = 0; j < hidden; ++j) {
      double g = 0, u = 0;
      for (index_t i = 0; i < width; ++i) {
        g += xh[std::size_t(r * width + i)] * wg[std::size_t(j * width + i)];
        u += xh[std::size_t(r * width + i)] * wu[std::size_t(j * width + i)];
      }
      h[std::size_t(j)] = g / (1 + std::exp(-g)) * u;
    }
    for (index_t o = 0; o < width; ++o) {
      double s = 0;
      for (index_t j = 0; j < hidden; ++j) s += h[std::size_t(j)] * wd[std::size_t(o * hidden + j)];
      CHECK(y[std::size_t(r * width + o)] == doctest::Approx(s).epsilon(1e-12));
    }
  }
  CHECK(worst_gradient_error(plain, x) < 1e-6);
  // LoRA on gate_proj, up_proj and down_proj (random B so that every A gets a gradient), biases on
  swiglu_mlp<D> adapted(backend, width, hidden, 3,
                        lora_targets{{"gate_proj", "up_proj", "down_proj"}, {.rank = 2, .alpha = 4, .seed = 5}}, true);
  auto params = parameters(adapted);
  randomise_adapters(params);
  std::size_t adapters = 0;
  for (const auto& p : params) adapters += p.name.ends_with("lora_a");
  CHECK(adapters == 3);
  CHECK(worst_gradient_error(adapted, x) < 1e-6);
}

TEST_CASE_TEMPLATE("attention forward matches a naive host implementation", B, TREELORA_TEST_BACKENDS) {
  B backend;
  const index_t batch = 2, tokens = 3, width = 4, heads = 2, dh = 2;
  multi_head_attention<B> attention(backend, width, heads, 7);
  auto x = random_tensor(backend, shape{batch, tokens, width}, 1);
  const auto y = attention.forward(x).to_host();
  REQUIRE(attention.forward(x).shape() == shape{batch, tokens, width});

  // The reference: every product an explicit loop in double.
  const auto xh = x.to_host();
  auto project = [&](optional_lora_linear<B>& p, const std::vector<double>& in) {
    const auto w = p.weight().to_host(), b = p.base().bias().to_host();
    std::vector<double> out(static_cast<std::size_t>(batch * tokens * width));
    for (index_t r = 0; r < batch * tokens; ++r)
      for (index_t o = 0; o < width; ++o) {
        double s = b[static_cast<std::size_t>(o)];
        for (index_t i = 0; i < width; ++i)
          s += in[static_cast<std::size_t>(r * width + i)] * double(w[static_cast<std::size_t>(o * width + i)]);
        out[static_cast<std::size_t>(r * width + o)] = s;
      }
    return out;
  };
  const std::vector<double> xd(xh.begin(), xh.end());
  const auto q = project(attention.q(), xd), k = project(attention.k(), xd), v = project(attention.v(), xd);
  std::vector<double> context(q.size(), 0.0);
  auto at = [&](const std::vector<double>& m, index_t b, index_t t, index_t h, index_t j) {
    return m[static_cast<std::size_t>((b * tokens + t) * width + h * dh + j)];
  };
  for (index_t b = 0; b < batch; ++b)
    for (index_t h = 0; h < heads; ++h)
      for (index_t i = 0; i < tokens; ++i) {
        std::vector<double> score(static_cast<std::size_t>(tokens));
        double top = -1e300, total = 0;
        for (index_t j = 0; j < tokens; ++j) {
          double s = 0;
          for (index_t e = 0; e < dh; ++e) s += at(q, b, i, h, e) * at(k, b, j, h, e);
          score[static_cast<std::size_t>(j)] = s / std::sqrt(double(dh));
          top = std::max(top, score[static_cast<std::size_t>(j)]);
        }
        for (auto& s : score) total += (s = std::exp(s - top));
        for (index_t j = 0; j < tokens; ++j)
          for (index_t e = 0; e < dh; ++e)
            context[static_cast<std::size_t>((b * tokens + i) * width + h * dh + e)] +=
                score[static_cast<std::size_t>(j)] / total * at(v, b, j, h, e);
      }
  const auto expected = project(attention.o(), context);
  CHECK(relative_error(y, expected) < 20 * treelora::testing::tolerance_v<B>);
  // Probabilities are rows of a softmax.
  const auto p = attention.probabilities().to_host();
  for (index_t r = 0; r < batch * heads * tokens; ++r) {
    double s = 0;
    for (index_t j = 0; j < tokens; ++j) s += p[static_cast<std::size_t>(r * tokens + j)];
    CHECK(s == doctest::Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("attention backward matches finite differences, plain and with LoRA on q, k, v, o") {
  D backend;
  auto x = random_tensor(backend, shape{2, 5, 6}, 1);
  multi_head_attention<D> plain(backend, 6, 3, 2);
  CHECK(worst_gradient_error(plain, x) < 1e-6);

  lora_targets all{{"q", "k", "v", "o"}, {.rank = 2, .alpha = 4}};
  multi_head_attention<D> adapted(backend, 6, 2, 3, all);
  randomise_adapters(parameters(adapted));
  adapted.set_trainable(false);  // base frozen: only the adapters and dx are checked
  CHECK(trainable_parameter_count(parameters(adapted)) == 4 * (2 * 6 + 6 * 2));
  CHECK(worst_gradient_error(adapted, x) < 1e-6);
  CHECK(names(parameters(adapted, "attn")) ==
        std::vector<std::string>{"attn.q.weight", "attn.q.bias", "attn.q.lora_a", "attn.q.lora_b", "attn.k.weight",
                                 "attn.k.bias", "attn.k.lora_a", "attn.k.lora_b", "attn.v.weight", "attn.v.bias",
                                 "attn.v.lora_a", "attn.v.lora_b", "attn.o.weight", "attn.o.bias", "attn.o.lora_a",
                                 "attn.o.lora_b"});
  CHECK_THROWS_WITH_AS(multi_head_attention<D>(backend, 6, 4), doctest::Contains("width 6 is not divisible into 4 heads"),
                       std::invalid_argument);
  tensor<D> flat(backend, shape{10, 6});
  CHECK_THROWS_WITH_AS(plain.forward(flat), doctest::Contains("input [10, 6] should be [batch, tokens, 6]"),
                       std::invalid_argument);
}

TEST_CASE("attention with adapter dropout: backward matches finite differences under a replayed mask") {
  D backend;
  auto x = random_tensor(backend, shape{2, 3, 4}, 1);
  multi_head_attention<D> attention(backend, 4, 2, 5, {{"q", "v"}, {.rank = 2, .alpha = 2, .dropout = 0.3}});
  randomise_adapters(parameters(attention));
  const auto q_position = attention.q().adapter().dropout_position();
  const auto v_position = attention.v().adapter().dropout_position();
  CHECK(worst_gradient_error(attention, x, [&] {
          attention.q().adapter().set_dropout_position(q_position);
          attention.v().adapter().set_dropout_position(v_position);
        }) < 1e-6);
}

TEST_CASE("mlp backward matches finite differences, with LoRA on fc1 and fc2") {
  D backend;
  auto x = random_tensor(backend, shape{3, 2, 4}, 1);
  mlp_block<D> block(backend, 4, 8, 1, {{"fc1", "fc2"}, {.rank = 2, .alpha = 4}});
  randomise_adapters(parameters(block));
  CHECK(worst_gradient_error(block, x) < 1e-6);
  CHECK(names(parameters(block)) == std::vector<std::string>{"fc1.weight", "fc1.bias", "fc1.lora_a", "fc1.lora_b",
                                                             "fc2.weight", "fc2.bias", "fc2.lora_a", "fc2.lora_b"});
}

TEST_CASE("transformer block backward matches finite differences for x and every parameter") {
  D backend;
  auto x = random_tensor(backend, shape{2, 5, 8}, 1);
  const transformer_block_options options{.width = 8, .heads = 2, .mlp_hidden = 16, .seed = 4};
  transformer_block<D> plain(backend, options);
  fill_normal<D>(plain.norm1().gamma(), 1, 0.2, 7);
  fill_normal<D>(plain.norm2().beta(), 0, 0.2, 8);
  CHECK(worst_gradient_error(plain, x) < 1e-6);

  transformer_block<D> adapted(backend, options, {{"q", "k", "v", "o", "fc1", "fc2"}, {.rank = 2, .alpha = 4}});
  randomise_adapters(parameters(adapted));
  CHECK(worst_gradient_error(adapted, x) < 1e-6);  // base and adapters together
  const auto n = names(parameters(adapted, "blocks.0"));
  CHECK(n.front() == "blocks.0.norm1.weight");
  CHECK(std::find(n.begin(), n.end(), "blocks.0.attn.q.lora_a") != n.end());
  CHECK(std::find(n.begin(), n.end(), "blocks.0.mlp.fc2.lora_b") != n.end());
  CHECK(n.back() == "blocks.0.mlp.fc2.lora_b");

  // A block with B = 0 adapters computes exactly what the same block without adapters computes.
  transformer_block<D> fresh(backend, options, {{"q", "v"}, {.rank = 2}});
  CHECK(relative_error(fresh.forward(x).to_host(), transformer_block<D>(backend, options).forward(x).to_host()) == 0.0);
  CHECK_THROWS_WITH_AS(transformer_block<D>(backend, options, {{"q", "w"}, {}}),
                       doctest::Contains("unknown LoRA target \"w\""), std::invalid_argument);
  CHECK_THROWS_WITH_AS(transformer_block<D>(backend, options, {{"q", "q"}, {}}),
                       doctest::Contains("LoRA target \"q\" listed twice"), std::invalid_argument);
}

TEST_CASE("transformer block gradients accumulate over two backward passes") {
  D backend;
  auto x = random_tensor(backend, shape{1, 3, 4}, 1), dy = random_tensor(backend, shape{1, 3, 4}, 2);
  transformer_block<D> block(backend, {.width = 4, .heads = 2, .mlp_hidden = 8});
  auto params = parameters(block);
  zero_gradients(params);
  block.forward(x);
  block.backward(dy);
  std::vector<std::vector<double>> once;
  for (auto& p : params) once.push_back(p.gradient->to_host());
  block.forward(x);
  block.backward(dy);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto twice = params[i].gradient->to_host();
    for (std::size_t j = 0; j < twice.size(); ++j) CHECK(twice[j] == doctest::Approx(2 * once[i][j]));
  }
}
