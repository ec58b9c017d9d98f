// Decoder-only language models (models/llama.hpp, models/gpt2.hpp): every backward pass against central finite
// differences in double (GQA with H != KV, llama3 RoPE scaling, tied and untied heads, LoRA on every module, left
// padding), a left-padded sequence computing what it computes alone, the token embedding, the causal mask, and
// greedy generation with the key/value cache equal to generation without it.
#include "test_support.hpp"

#include "treelora/models/gpt2.hpp"
#include "treelora/models/llama.hpp"

using namespace treelora;
using treelora::testing::finite_difference_error;
using treelora::testing::host_dot;
using treelora::testing::random_tensor;
using treelora::testing::relative_error;
using D = cpu_backend<double>;
using F32 = cpu_backend<float>;

static_assert(check_model<llama<D>>());
static_assert(check_model<gpt2<D>>());
static_assert(check_model<llama<F32>>());

namespace {

llama_config tiny_llama(bool tied, std::vector<std::string> targets) {
  llama_config c;
  c.vocab_size = 13, c.hidden_size = 16, c.intermediate_size = 12, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 64;
  c.rope_theta = 100.0, c.rope_scaling = rope_llama3_scaling{4.0, 1.0, 4.0, 32};  // all three regimes at head_dim 4
  c.tie_word_embeddings = tied, c.bos_token_id = 1, c.eos_token_ids = {2}, c.pad_token_id = 0;
  c.initializer_range = 0.5;  // large weights: every path matters in the finite differences
  c.lora_targets = std::move(targets), c.lora_rank = 2, c.lora_alpha = 4, c.seed = 7;
  return c;
}

gpt2_config tiny_gpt2(std::vector<std::string> targets) {
  gpt2_config c;
  c.vocab_size = 11, c.n_positions = 16, c.n_embd = 8, c.n_layer = 2, c.n_head = 2, c.n_inner = 12;
  c.bos_token_id = 1, c.eos_token_ids = {2}, c.pad_token_id = 0, c.initializer_range = 0.5;
  c.lora_targets = std::move(targets), c.lora_rank = 2, c.lora_alpha = 4, c.seed = 9;
  return c;
}

/// Two sequences of 5 tokens, the second left-padded by 2 (pad id 0).
const std::vector<index_t> batch_ids = {1, 5, 7, 3, 9, 0, 0, 1, 4, 6};

/// Worst finite-difference error over every trainable parameter of `model` for loss = <logits, probe>.
template <class M>
double worst_parameter_error(M& model, std::size_t* checked = nullptr) {
  D& backend = model.backend();
  const auto layout = left_padded_layout(batch_ids, 2, 5, 0);
  const shape out_shape = model.forward_tokens(batch_ids, layout).shape();
  const auto probe = random_tensor(backend, out_shape, 99).to_host();
  auto loss = [&] { return host_dot<D>(model.forward_tokens(batch_ids, layout), probe); };
  auto params = parameters(model);
  loss();
  zero_gradients(params);
  model.backward(tensor<D>::from_host(backend, out_shape, probe));
  double worst = 0;
  std::size_t n = 0;
  for (auto& p : params) {
    if (!p.trainable) continue;
    // step 1e-5: the loss sums every logit, and at 1e-6 its rounding (about 1e-14) over the step reaches 1e-5 of the
    // 1e-3 floor for the smallest gradient entries (seen at 1.5e-5 on an AVX-512 build); the truncation error stays
    // near 1e-10
    const double e = finite_difference_error(*p.value, loss, p.gradient->to_host(), 1e-5);
    INFO(p.name, " error ", e);
    CHECK(e < 1e-5);
    worst = std::max(worst, e);
    ++n;
  }
  if (checked) *checked = n;
  return worst;
}

void randomise_lora_b(parameter_list<D> params) {
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

TEST_CASE("token embedding: gather forward, scatter-add backward (repeated ids accumulate)") {
  D backend;
  embedding<D> table(backend, 5, 3, 1, 1.0);
  const std::vector<index_t> ids = {4, 1, 4, 0};
  const auto y = table.forward(ids).to_host(), w = table.weight().to_host();
  for (std::size_t r = 0; r < ids.size(); ++r)
    for (std::size_t c = 0; c < 3; ++c) CHECK(y[r * 3 + c] == w[std::size_t(ids[r]) * 3 + c]);
  table.weight_gradient().fill(0);
  auto dy = random_tensor(backend, shape{4, 3}, 2);
  table.backward(dy);
  const auto g = table.weight_gradient().to_host(), d = dy.to_host();
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(g[4 * 3 + c] == doctest::Approx(d[0 * 3 + c] + d[2 * 3 + c]));
    CHECK(g[1 * 3 + c] == doctest::Approx(d[1 * 3 + c]));
    CHECK(g[2 * 3 + c] == 0.0);
  }
  const std::vector<index_t> bad = {5};
  CHECK(testing::contains(testing::error_of([&] { table.forward(bad); }), "id 5 at position 0 is outside the vocabulary [0, 5)"));
}

TEST_CASE("causal mask: later tokens and left padding hidden; a padding token sees itself") {
  D backend;
  token_layout layout{2, 3, 1, {0, 2}};
  tensor<D> mask;
  causal_attention_mask<D>(layout, mask, backend);
  CHECK(mask.shape() == shape{2, 3, 4});
  const auto m = mask.to_host();
  const auto visible = [&](index_t b, index_t t, index_t j) { return m[std::size_t((b * 3 + t) * 4 + j)] == 0.0; };
  CHECK((visible(0, 0, 0) && visible(0, 0, 1) && !visible(0, 0, 2)));                    // past 1: token 0 is key 1
  CHECK((visible(0, 2, 3) && visible(0, 2, 0)));
  CHECK((visible(1, 0, 1) && !visible(1, 0, 0) && !visible(1, 0, 2)));                     // padding (key 1) sees itself
  CHECK((!visible(1, 1, 0) && !visible(1, 1, 1) && visible(1, 1, 2) && !visible(1, 1, 3)));  // first real token
  CHECK(layout.position(1, 1) == 0);
  CHECK(layout.position(0, 2) == 3);
}

TEST_CASE("Llama: every backward pass matches finite differences (GQA, llama3 RoPE, tied and untied, LoRA on every module, padding)") {
  D backend;
  SUBCASE("frozen base, LoRA on all seven modules, untied head") {
    llama<D> model(backend, tiny_llama(false, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}));
    CHECK(!model.backbone_trainable());
    randomise_lora_b(parameters(model));
    std::size_t checked = 0;
    worst_parameter_error(model, &checked);
    CHECK(checked == 2 * 7 * 2);  // A and B of 7 modules in 2 layers
    CHECK(model.adapters().size() == 14);
    CHECK(model.adapters()[0].name == "model.layers.0.self_attn.q_proj");
    CHECK(model.adapters()[6].name == "model.layers.0.mlp.down_proj");
  }
  SUBCASE("whole model trains, tied head (the embedding gets both gradients)") {
    llama<D> model(backend, tiny_llama(true, {}));
    CHECK(model.backbone_trainable());
    std::size_t checked = 0;
    worst_parameter_error(model, &checked);
    CHECK(checked == 1 + 2 * 9 + 1);  // embedding, 9 per layer (2 norms, 7 projections), final norm
  }
  SUBCASE("untied head trains with the backbone") {
    llama<D> model(backend, tiny_llama(false, {}));
    std::size_t checked = 0;
    worst_parameter_error(model, &checked);
    CHECK(checked == 1 + 2 * 9 + 2);
  }
}

TEST_CASE("Llama: Hugging Face parameter names") {
  D backend;
  llama<D> model(backend, tiny_llama(false, {"q_proj", "v_proj"}));
  const auto n = names(parameters(model));
  CHECK(n.front() == "model.embed_tokens.weight");
  CHECK(n[1] == "model.layers.0.input_layernorm.weight");
  CHECK(n[2] == "model.layers.0.self_attn.q_proj.weight");
  CHECK(n[3] == "model.layers.0.self_attn.q_proj.lora_a");
  CHECK(n[4] == "model.layers.0.self_attn.q_proj.lora_b");
  CHECK(std::find(n.begin(), n.end(), "model.layers.1.mlp.down_proj.weight") != n.end());
  CHECK(n[n.size() - 2] == "model.norm.weight");
  CHECK(n.back() == "lm_head.weight");
  llama<D> tied(backend, tiny_llama(true, {}));
  CHECK(names(parameters(tied)).back() == "model.norm.weight");
  auto bad = tiny_llama(true, {"q"});
  CHECK(testing::contains(testing::error_of([&] { llama<D> m(backend, bad); }), "unknown LoRA target \"q\" (known: q_proj, k_proj"));
  bad = tiny_llama(true, {});
  bad.num_key_value_heads = 3;
  CHECK(testing::contains(testing::error_of([&] { llama<D> m(backend, bad); }), "multiple of num_key_value_heads 3"));
}

TEST_CASE("GPT-2: every backward pass matches finite differences (fused c_attn, gelu_new, tied head, padding)") {
  D backend;
  SUBCASE("frozen base, LoRA on c_attn, c_proj (both) and c_fc") {
    gpt2<D> model(backend, tiny_gpt2({"c_attn", "c_proj", "c_fc"}));
    randomise_lora_b(parameters(model));
    std::size_t checked = 0;
    worst_parameter_error(model, &checked);
    CHECK(checked == 2 * 4 * 2);
    CHECK(model.adapters()[1].name == "transformer.h.0.attn.c_proj");
    CHECK(model.adapters()[3].name == "transformer.h.0.mlp.c_proj");
  }
  SUBCASE("whole model trains") {
    gpt2<D> model(backend, tiny_gpt2({}));
    std::size_t checked = 0;
    worst_parameter_error(model, &checked);
    CHECK(checked == 2 + 2 * 12 + 2);  // wte, wpe; per layer 2 norms x 2 + 4 projections x 2; ln_f
    const auto n = names(parameters(model));
    CHECK(n[0] == "transformer.wte.weight");
    CHECK(n[2] == "transformer.h.0.ln_1.weight");
    CHECK(n[4] == "transformer.h.0.attn.c_attn.weight");
    CHECK(n.back() == "transformer.ln_f.bias");
  }
}

TEST_CASE_TEMPLATE("a left-padded sequence computes what it computes alone (Llama and GPT-2)", M, llama<D>, gpt2<D>) {
  D backend;
  auto make = [&] {
    if constexpr (std::is_same_v<M, llama<D>>) return M(backend, tiny_llama(true, {"q_proj", "v_proj"}));
    else return M(backend, tiny_gpt2({"c_attn"}));
  };
  M model = make();  // a moved model: the tied head must follow its embedding
  randomise_lora_b(parameters(model));
  const auto batched = model.forward_tokens(batch_ids, left_padded_layout(batch_ids, 2, 5, 0)).to_host();
  const std::vector<index_t> alone = {1, 4, 6};
  const auto single = model.forward_tokens(alone, left_padded_layout(alone, 1, 3, 0)).to_host();
  const index_t v = model.vocabulary();
  const std::vector<double> padded_rows(batched.begin() + (5 + 2) * v, batched.end());
  CHECK(relative_error(padded_rows, single) < 1e-12);
  // the Layer entry point (ids as scalars) infers the same padding
  std::vector<double> as_scalars(batch_ids.begin(), batch_ids.end());
  const auto via_layer = model.forward(tensor<D>::from_host(backend, shape{2, 5}, as_scalars)).to_host();
  CHECK(relative_error(via_layer, batched) < 1e-15);
  std::vector<double> bad = {1, 2.5};
  CHECK(testing::contains(testing::error_of([&] { model.forward(tensor<D>::from_host(backend, shape{1, 2}, bad)); }),
                          "token id 2.5 at position 1 is not an id"));
}

TEST_CASE_TEMPLATE("greedy generation: the key/value cache gives the same tokens and logits as recomputing", M, llama<F32>, gpt2<F32>) {
  F32 backend;
  auto make = [&] {
    if constexpr (std::is_same_v<M, llama<F32>>) {
      auto c = tiny_llama(false, {"q_proj", "v_proj"});
      c.vocab_size = 40, c.initializer_range = 0.3;
      return M(backend, c);
    } else {
      auto c = tiny_gpt2({"c_attn"});
      c.vocab_size = 40, c.n_positions = 32, c.initializer_range = 0.3;
      return M(backend, c);
    }
  };
  M model = make();
  const std::vector<std::vector<index_t>> prompts = {{1, 5, 7, 3}, {1, 9}, {1, 11, 12}};
  generation_options options{.max_new_tokens = 12, .stop_ids = {2}, .use_cache = true, .keep_logits = true};
  const auto cached = generate_greedy(model, prompts, options);
  options.use_cache = false;
  const auto recomputed = generate_greedy(model, prompts, options);
  CHECK(cached.tokens == recomputed.tokens);
  REQUIRE(cached.step_logits.size() == recomputed.step_logits.size());
  for (std::size_t s = 0; s < cached.step_logits.size(); ++s) CHECK(relative_error(cached.step_logits[s], recomputed.step_logits[s]) < 1e-5);
  // a prompt generates alone what it generates in the batch (left padding is invisible)
  options.use_cache = true;
  const auto alone = generate_greedy(model, {prompts[1]}, options);
  std::vector<index_t> expected = cached.tokens[1];
  CHECK(alone.tokens[0] == expected);
  for (const auto& t : cached.tokens) {
    CHECK(!t.empty());
    CHECK(static_cast<index_t>(t.size()) <= 12);
  }
  // generation computes only the last logits, which backward refuses; the cache is off again afterwards: training works
  tensor<F32> some_gradient(backend, shape{3, model.vocabulary()});
  CHECK(testing::contains(testing::error_of([&] { model.backward(some_gradient); }), "called before a (whole-sequence) forward"));
  model.forward_tokens(batch_ids, left_padded_layout(batch_ids, 2, 5, 0));
  CHECK(testing::contains(testing::error_of([&] { generate_greedy(model, {{}}, options); }), "prompt 0 is empty"));
}
