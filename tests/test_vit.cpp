// The reference ViT: models treelora::Model; patch embedding against a host Conv2d-style reference; the whole
// model's backward (input, backbone, adapters, head) against central finite differences in double on a tiny
// configuration; adapter order and parameter names; batch independence; backbone state round trip; bad configs.
#include "test_support.hpp"

#include "treelora/models/vit.hpp"

using namespace treelora;
using treelora::testing::finite_difference_error;
using treelora::testing::random_tensor;
using treelora::testing::relative_error;
using D = cpu_backend<double>;
using F = cpu_backend<float>;

static_assert(check_model<vit<F>>());
static_assert(check_model<vit<D>>());

namespace {

vit_config tiny_config() {
  return {.image_height = 8, .image_width = 8, .channels = 1, .patch_size = 4, .width = 8, .depth = 2, .heads = 2,
          .mlp_ratio = 2.0, .classes = 3, .lora_targets = {"q", "v"}, .lora_rank = 2, .lora_alpha = 4.0, .seed = 3};
}

std::vector<std::string> names(const parameter_list<D>& params) {
  std::vector<std::string> out;
  for (auto& p : params) out.push_back(p.name);
  return out;
}

/// Worst FD error of the input gradient and of every trainable parameter, with loss = cross-entropy.
double worst_model_error(vit<D>& model, tensor<D>& images, const std::vector<index_t>& labels) {
  D& backend = images.backend();
  tensor<D> gradient(backend, shape{images.shape()[0], model.classes()});
  auto loss = [&] { return cross_entropy_loss<D>(model.forward(images), labels, gradient); };
  loss();
  auto params = parameters(model);
  zero_gradients(params);
  const auto dx = model.backward(gradient).to_host();
  tensor<D> scratch(backend, gradient.shape());
  auto fd_loss = [&] { return cross_entropy_loss<D>(model.forward(images), labels, scratch); };
  double worst = finite_difference_error(images, fd_loss, dx);
  INFO("input gradient error ", worst);
  CHECK(worst < 1e-6);
  for (auto& p : params) {
    if (!p.trainable) continue;
    if (p.name.ends_with("attn.k.bias")) {  // exactly zero: softmax ignores a per-row constant
      for (double g : p.gradient->to_host()) CHECK(std::abs(g) < 1e-12);
      continue;
    }
    const double e = finite_difference_error(*p.value, fd_loss, p.gradient->to_host());
    INFO(p.name, " error ", e);
    CHECK(e < 1e-6);
    worst = std::max(worst, e);
  }
  MESSAGE("worst finite-difference error over the model ", worst);
  return worst;
}

}  // namespace

TEST_CASE_TEMPLATE("ViT patch embedding equals a host Conv2d(C, width, p, stride p) plus CLS and positions", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  vit_config config = tiny_config();
  config.channels = 2;
  config.image_width = 12;  // 2 x 3 patches of 4 x 4, two channels
  vit<B> model(backend, config);
  const index_t batch = 2, C = 2, H = 8, W = 12, p = 4, width = 8, columns = 3, tokens = 7;
  auto images = random_tensor(backend, shape{batch, C, H, W}, 1);
  const auto logits = model.forward(images);
  CHECK(logits.shape() == shape{batch, 3});
  const auto t = model.embedded_tokens().to_host();
  REQUIRE(t.size() == static_cast<std::size_t>(batch * tokens * width));
  const auto x = images.to_host(), w = model.patch_embedding().weight().to_host(),
             bias = model.patch_embedding().bias().to_host(), pos = model.position_embedding().to_host(),
             cls = model.cls_token().to_host();
  std::vector<double> expected;
  for (index_t b = 0; b < batch; ++b)
    for (index_t n = 0; n < tokens; ++n)
      for (index_t o = 0; o < width; ++o) {
        double s = pos[static_cast<std::size_t>(n * width + o)];
        if (n == 0) {
          s += cls[static_cast<std::size_t>(o)];
        } else {
          const index_t pr = (n - 1) / columns, pc = (n - 1) % columns;
          s += bias[static_cast<std::size_t>(o)];
          for (index_t c = 0; c < C; ++c)
            for (index_t i = 0; i < p; ++i)
              for (index_t j = 0; j < p; ++j)
                s += double(w[static_cast<std::size_t>(o * C * p * p + (c * p + i) * p + j)]) *
                     x[static_cast<std::size_t>(((b * C + c) * H + pr * p + i) * W + pc * p + j)];
        }
        expected.push_back(s);
      }
  CHECK(relative_error(t, expected) < 20 * treelora::testing::tolerance_v<B>);
  // [batch, C * H * W] is the same input.
  const auto again = model.forward(images.view().reshaped(shape{batch, C * H * W})).to_host();
  CHECK(again == model.forward(images).to_host());
}

TEST_CASE("ViT backward matches finite differences: whole backbone trainable, LoRA on every projection") {
  D backend;
  vit_config config = tiny_config();
  config.lora_targets = {"q", "k", "v", "o", "fc1", "fc2"};
  vit<D> model(backend, config);
  model.set_backbone_trainable(true);
  std::uint64_t seed = 50;
  for (auto& a : model.adapters()) fill_normal<D>(*a.b, 0, 0.5, seed++);  // B = 0 would make dA vanish
  fill_normal<D>(model.final_norm().gamma(), 1, 0.2, 7);
  auto images = random_tensor(backend, shape{2, 64}, 1);
  CHECK(worst_model_error(model, images, {2, 0}) < 1e-6);
}

TEST_CASE("ViT with the default LoRA targets: frozen backbone, adapters and head train; FD on the trainable part") {
  D backend;
  vit<D> model(backend, tiny_config());
  CHECK_FALSE(model.backbone_trainable());
  for (auto& a : model.adapters()) fill_normal<D>(*a.b, 0, 0.5, 9);
  auto images = random_tensor(backend, shape{3, 8, 8}, 2);
  CHECK(worst_model_error(model, images, {1, 2, 0}) < 1e-6);
  auto params = parameters(model);
  std::vector<std::string> trainable;
  for (auto& p : params)
    if (p.trainable) trainable.push_back(p.name);
  CHECK(trainable == std::vector<std::string>{"blocks.0.attn.q.lora_a", "blocks.0.attn.q.lora_b", "blocks.0.attn.v.lora_a",
                                              "blocks.0.attn.v.lora_b", "blocks.1.attn.q.lora_a", "blocks.1.attn.q.lora_b",
                                              "blocks.1.attn.v.lora_a", "blocks.1.attn.v.lora_b", "head.weight",
                                              "head.bias"});
  // A frozen backbone receives no gradient.
  for (auto& p : params)
    if (!p.trainable && !p.gradient->empty())
      for (double g : p.gradient->to_host()) CHECK(g == 0.0);
}

TEST_CASE("ViT adapters come in model order and alias the parameters; parameter names are stable") {
  D backend;
  vit<D> model(backend, tiny_config());
  const auto adapters = model.adapters();
  REQUIRE(adapters.size() == 4);
  CHECK(adapters[0].name == "blocks.0.attn.q");
  CHECK(adapters[1].name == "blocks.0.attn.v");
  CHECK(adapters[2].name == "blocks.1.attn.q");
  CHECK(adapters[3].name == "blocks.1.attn.v");
  auto params = parameters(model);
  for (auto& a : adapters) {
    auto find = [&](const std::string& name) {
      for (auto& p : params)
        if (p.name == name) return p;
      FAIL("no parameter ", name);
      return params.front();
    };
    CHECK(find(a.name + ".lora_a").value == a.a);
    CHECK(find(a.name + ".lora_a").gradient == a.a_gradient);
    CHECK(find(a.name + ".lora_b").value == a.b);
    CHECK(a.a->shape() == shape{2, 8});
    CHECK(a.b->shape() == shape{8, 2});
  }
  const auto n = names(params);
  CHECK(std::vector<std::string>(n.begin(), n.begin() + 6) ==
        std::vector<std::string>{"patch_embed.weight", "patch_embed.bias", "cls_token", "position_embedding",
                                 "blocks.0.norm1.weight", "blocks.0.norm1.bias"});
  CHECK(std::vector<std::string>(n.end() - 4, n.end()) ==
        std::vector<std::string>{"norm.weight", "norm.bias", "head.weight", "head.bias"});
  CHECK(std::find(n.begin(), n.end(), "blocks.1.mlp.fc2.weight") != n.end());
  // Adapters with distinct seeds start different.
  CHECK(adapters[0].a->to_host() != adapters[1].a->to_host());
  // A model without LoRA has no adapters and a trainable backbone.
  vit_config plain = tiny_config();
  plain.lora_targets.clear();
  vit<D> no_lora(backend, plain);
  CHECK(no_lora.adapters().empty());
  CHECK(no_lora.backbone_trainable());
}

TEST_CASE_TEMPLATE("ViT rows are independent of the batch they are in, and batch sizes may change", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  vit<B> model(backend, tiny_config());
  auto images = random_tensor(backend, shape{3, 64}, 4);
  const auto all = model.forward(images).to_host();
  for (index_t r = 0; r < 3; ++r) {
    const auto one = model.forward(images.view().row_range(r, 1)).to_host();
    const std::vector<typename B::scalar_type> row(all.begin() + r * 3, all.begin() + (r + 1) * 3);
    CHECK(relative_error(one, row) < 20 * treelora::testing::tolerance_v<B>);
  }
}

TEST_CASE("ViT backbone state round trip, head reset, and bad configurations") {
  D backend;
  vit_config plain = tiny_config();
  plain.lora_targets.clear();
  vit<D> pretrained(backend, plain);
  pretrained.reset_head(4, 1);  // a rotation head
  CHECK(pretrained.classes() == 4);
  auto images = random_tensor(backend, shape{2, 64}, 5);
  CHECK(pretrained.forward(images).shape() == shape{2, 4});
  const auto state = pretrained.backbone_state();
  CHECK(state.front().name == "patch_embed.weight");
  CHECK(state.back().name == "norm.bias");

  vit_config adapted = tiny_config();
  adapted.seed = 77;  // a different initialisation, overwritten by the state
  vit<D> model(backend, adapted);
  model.load_backbone_state(state);
  CHECK(model.backbone_state().size() == state.size());
  for (std::size_t i = 0; i < state.size(); ++i) CHECK(model.backbone_state()[i].values == state[i].values);
  // The adapted model embeds like the pre-trained one (the state is float, this model double: float rounding).
  model.forward(images);
  pretrained.forward(images);
  CHECK(relative_error(model.embedded_tokens().to_host(), pretrained.embedded_tokens().to_host()) < 1e-6);

  auto broken = state;
  broken[1].value_shape = shape{3};
  CHECK_THROWS_WITH_AS(model.load_backbone_state(broken), doctest::Contains("parameter 1 is patch_embed.bias [3]"),
                       std::invalid_argument);
  broken.pop_back();
  CHECK_THROWS_WITH_AS(model.load_backbone_state(broken), doctest::Contains("parameters given"), std::invalid_argument);

  vit_config bad = tiny_config();
  bad.patch_size = 3;
  CHECK_THROWS_WITH_AS(vit<D>(backend, bad), doctest::Contains("not divisible into patches of 3"), std::invalid_argument);
  bad = tiny_config();
  bad.heads = 3;
  CHECK_THROWS_WITH_AS(vit<D>(backend, bad), doctest::Contains("divisible into 3 heads"), std::invalid_argument);
  bad = tiny_config();
  bad.lora_targets = {"qkv"};
  CHECK_THROWS_WITH_AS(vit<D>(backend, bad), doctest::Contains("unknown LoRA target \"qkv\""), std::invalid_argument);
  bad = tiny_config();
  bad.lora_rank = 9;
  CHECK_THROWS_WITH_AS(vit<D>(backend, bad), doctest::Contains("rank 9 must be in"), std::invalid_argument);
  tensor<D> wrong(backend, shape{2, 63});
  CHECK_THROWS_WITH_AS(model.forward(wrong), "treelora::vit::forward: input [2, 63] is not a batch of 1 x 8 x 8 images",
                       std::invalid_argument);
  vit<D> fresh(backend, tiny_config());
  tensor<D> dy(backend, shape{2, 3});
  CHECK_THROWS_WITH_AS(fresh.backward(dy), "treelora::vit::backward: called before forward", std::invalid_argument);
}

TEST_CASE_TEMPLATE("a backward that stops early: adapters only on upper layers give the dense gradients, lower blocks skipped",
                   B, TREELORA_TEST_BACKENDS) {
  B backend;
  vit_config config = tiny_config();
  config.depth = 4;
  vit<B> model(backend, config);
  auto adapters = model.adapters();  // blocks.0.q, blocks.0.v, blocks.1.q, ..., 8 in all
  REQUIRE(adapters.size() == 8);
  for (std::size_t l = 0; l < 4; ++l) *adapters[l].gradients_enabled = false;  // the lower two blocks: off
  for (auto& a : adapters) fill_normal<B>(*a.b, 0, 0.1f, 7 + a.b->numel());        // B != 0: real A-gradients
  auto images = testing::random_tensor(backend, shape{3, 64}, 11);
  const std::vector<index_t> labels = {0, 2, 1};
  auto params = parameters(model);
  const auto gradients = [&](bool input_gradient) {
    model.set_input_gradient_needed(input_gradient);
    tensor<B> gradient(backend, shape{3, model.classes()});
    cross_entropy_loss<B>(model.forward(images), labels, gradient);
    zero_gradients(params);
    const auto dx = model.backward(gradient);
    CHECK((dx.data() == nullptr) == !input_gradient);
    std::vector<std::vector<typename B::scalar_type>> out;
    for (auto& p : params)
      if (p.trainable) out.push_back(p.gradient->to_host());
    return out;
  };
  CHECK(model.blocks()[1].needs_gradient() == false);
  CHECK(model.blocks()[2].needs_gradient() == true);
  const auto dense = gradients(true), early = gradients(false);
  REQUIRE(dense.size() == early.size());
  for (std::size_t i = 0; i < dense.size(); ++i) CHECK(dense[i] == early[i]);  // bit for bit
  // the frozen lower adapters got no gradient either way
  for (std::size_t l = 0; l < 4; ++l)
    for (auto v : adapters[l].a_gradient->to_host()) CHECK(v == 0);
}
