// The language models against an independent PyTorch implementation (tests/data/language_models/make_golden.py,
// written from the architecture description with Hugging Face's parameter names): from the same safetensors
// checkpoint and PEFT adapter, the logits, the loss and every LoRA gradient of a left-padded batch agree (fp32,
// relative 1e-5; the LoRA gradients 2e-5), and so does the loss before each of ten Adam steps on the adapters. Configurations: Llama with GQA (4 query,
// 2 key/value heads), llama3 RoPE scaling and an untied head; Llama with a tied head and LoRA on all seven modules;
// GPT-2 with its Conv1D layout and LoRA on c_attn and both c_proj. The PEFT export of the loaded adapters equals the
// file it came from. TREELORA_LM_GOLDEN_DIR points the test at freshly generated data (the CTest run
// language_model_oracle_regenerated does, where PyTorch is installed).
#include <cstdlib>
#include <filesystem>

#include "test_support.hpp"

#include "treelora/models/hf_causal_lm.hpp"

using namespace treelora;
using treelora::testing::relative_error;
using F32 = cpu_backend<float>;

namespace {

std::filesystem::path golden_dir() {
  if (const char* dir = std::getenv("TREELORA_LM_GOLDEN_DIR"); dir && *dir) return dir;
  return std::filesystem::path(TREELORA_TEST_DATA_DIR) / "language_models";
}

template <class M>
void check_against_pytorch(M& model, const std::filesystem::path& folder) {
  const auto adapter = read_peft_adapter(folder / "adapter");
  load_peft_adapter_lm(model, adapter);
  // the export of what was loaded is the file, tensor for tensor
  const auto exported = make_peft_adapter_lm(model);
  CHECK(exported.tensors.size() == adapter.tensors.size());
  for (const auto& [name, t] : adapter.tensors) {
    REQUIRE(exported.tensors.contains(name));
    CHECK(exported.tensors.at(name).shape == t.shape);
    CHECK(exported.tensors.at(name).values == t.values);
  }
  for (const char* key : {"r", "lora_alpha", "target_modules", "fan_in_fan_out", "task_type"}) {
    INFO(key);
    CHECK(exported.config.at(key) == adapter.config.at(key));
  }

  const auto golden = read_safetensors_tensors(folder / "golden.safetensors");
  const auto& ids_f = golden.at("input_ids");
  const index_t batch = ids_f.shape[0], tokens = ids_f.shape[1];
  std::vector<index_t> ids(ids_f.values.begin(), ids_f.values.end());
  std::vector<unsigned char> counted;
  for (float c : golden.at("counted").values) counted.push_back(c > 0);
  const auto layout = left_padded_layout(ids, batch, tokens, 0);
  const auto labels = next_token_labels(ids, counted, tokens);

  auto params = parameters(model);
  parameter_list<F32> trainable;
  for (auto& p : params)
    if (p.trainable) trainable.push_back(p);
  CHECK(trainable.size() == adapter.tensors.size());
  zero_gradients(params);
  const auto logits = model.forward_tokens(ids, layout);
  CHECK(relative_error(logits.to_host(), golden.at("logits").values) < 1e-5);
  tensor<F32> gradient(model.backend(), logits.shape());
  const double loss = token_cross_entropy_loss<F32>(logits, labels, gradient);
  CHECK(loss == doctest::Approx(golden.at("loss").values[0]).epsilon(1e-5));
  model.backward(gradient);
  for (const auto& view : model.adapters())
    for (char which : {'A', 'B'}) {
      const std::string key = concat("base_model.model.", view.name, ".lora_", which, ".weight.grad");
      INFO(key);
      REQUIRE(golden.contains(key));
      const tensor<F32>& g = which == 'A' ? *view.a_gradient : *view.b_gradient;
      // float gradients, the first layer's passed back through every later one: 2e-5 (1.3e-5 seen on an AVX-512
      // build, whose sums run 16 wide, against PyTorch's)
      CHECK(relative_error(g.to_host(), golden.at(key).values) < 2e-5);
    }

  adam<F32> optimiser(trainable, {.learning_rate = 1e-2});
  const auto& expected = golden.at("losses").values;
  for (std::size_t step = 0; step < expected.size(); ++step) {
    zero_gradients(params);
    const auto out = model.forward_tokens(ids, layout);
    tensor<F32> g(model.backend(), out.shape());
    const double l = token_cross_entropy_loss<F32>(out, labels, g);
    INFO("step ", step);
    CHECK(l == doctest::Approx(expected[step]).epsilon(1e-5));
    model.backward(g);
    optimiser.step();
  }
}

}  // namespace

TEST_CASE("Llama (GQA, llama3 RoPE scaling, untied head, LoRA on q_proj and v_proj) equals the PyTorch oracle") {
  F32 backend;
  const auto folder = golden_dir() / "llama_gqa_untied";
  const auto [targets, lora] = peft_lm_lora_config(read_peft_adapter(folder / "adapter"));
  llama_config defaults;
  defaults.lora_targets = targets, defaults.lora_rank = lora.rank, defaults.lora_alpha = lora.alpha, defaults.pad_token_id = 0;
  hf_lm_load_report report;
  auto model = load_hf_llama_folder<F32>(backend, folder, defaults, &report);
  CHECK(model.config().num_key_value_heads == 2);
  CHECK(model.config().rope_scaling.has_value());
  CHECK(!model.config().tie_word_embeddings);
  CHECK(report.loaded.size() == 1 + 2 * 9 + 2);
  check_against_pytorch(model, folder);
}

TEST_CASE("Llama (tied head, LoRA on all seven modules, two EOS ids) equals the PyTorch oracle") {
  F32 backend;
  const auto folder = golden_dir() / "llama_tied_all_modules";
  const auto [targets, lora] = peft_lm_lora_config(read_peft_adapter(folder / "adapter"));
  llama_config defaults;
  defaults.lora_targets = targets, defaults.lora_rank = lora.rank, defaults.lora_alpha = lora.alpha, defaults.pad_token_id = 0;
  auto model = load_hf_llama_folder<F32>(backend, folder, defaults);
  CHECK(model.config().tie_word_embeddings);
  CHECK(model.config().eos_token_ids == std::vector<index_t>{2, 3});
  CHECK(model.adapters().size() == 14);
  check_against_pytorch(model, folder);
}

TEST_CASE("GPT-2 (Conv1D layout transposed, LoRA on c_attn and both c_proj) equals the PyTorch oracle") {
  F32 backend;
  const auto folder = golden_dir() / "gpt2";
  const auto [targets, lora] = peft_lm_lora_config(read_peft_adapter(folder / "adapter"));
  gpt2_config defaults;
  defaults.lora_targets = targets, defaults.lora_rank = lora.rank, defaults.lora_alpha = lora.alpha, defaults.pad_token_id = 0;
  auto model = load_hf_gpt2_folder<F32>(backend, folder, defaults);
  CHECK(model.adapters().size() == 6);
  check_against_pytorch(model, folder);
}

TEST_CASE("Hugging Face loading: GPT-2 names without the transformer. prefix, and every problem listed at once") {
  F32 backend;
  const auto folder = std::filesystem::path(TREELORA_TEST_DATA_DIR) / "language_models" / "gpt2";
  auto checkpoint = read_hf_checkpoint(folder);
  gpt2_config defaults;
  defaults.lora_targets = {};
  gpt2<F32> reference(backend, hf_gpt2_config(checkpoint.config, defaults));
  load_hf_gpt2(reference, checkpoint.tensors);
  // the original GPT-2 files name tensors without "transformer.", and some carry the attn.bias buffer
  host_tensor_map bare;
  for (auto& [name, t] : checkpoint.tensors) bare[name.substr(std::string("transformer.").size())] = t;
  bare["h.0.attn.bias"] = host_tensor{{1, 1, 32, 32}, std::vector<float>(32 * 32, 1.0f)};
  gpt2<F32> model(backend, hf_gpt2_config(checkpoint.config, defaults));
  const auto report = load_hf_gpt2(model, bare);
  CHECK(report.ignored == std::vector<std::string>{"h.0.attn.bias"});
  const std::vector<index_t> ids = {1, 5, 9, 2};
  const auto layout = left_padded_layout(ids, 1, 4, -1);
  CHECK(relative_error(model.forward_tokens(ids, layout).to_host(), reference.forward_tokens(ids, layout).to_host()) == 0);
  // damage: one missing, one mis-shaped, one non-finite, one unexpected
  auto damaged = checkpoint.tensors;
  damaged.erase("transformer.h.1.ln_2.bias");
  damaged["transformer.h.0.attn.c_attn.bias"].shape = {3, 32};
  damaged["transformer.wpe.weight"].values[7] = std::numeric_limits<float>::quiet_NaN();
  damaged["transformer.h.9.mlp.c_fc.weight"] = host_tensor{{1}, {0.0f}};
  const auto message = testing::error_of([&] { load_hf_gpt2(model, damaged); });
  CHECK(testing::contains(message, "4 problems"));
  CHECK(testing::contains(message, "missing: transformer.h.1.ln_2.bias [32]"));
  CHECK(testing::contains(message, "mis-shaped: transformer.h.0.attn.c_attn.bias: expected [96], found [3, 32]"));
  CHECK(testing::contains(message, "malformed: transformer.wpe.weight: value 7 is nan"));
  CHECK(testing::contains(message, "unexpected: transformer.h.9.mlp.c_fc.weight [1]"));
  // config.json problems name the field
  auto config = checkpoint.config;
  config["activation_function"] = "relu";
  CHECK(testing::contains(testing::error_of([&] { hf_gpt2_config(config); }), "activation_function \"relu\" is not \"gelu_new\""));
  auto llama_json = read_hf_checkpoint(std::filesystem::path(TREELORA_TEST_DATA_DIR) / "language_models" / "llama_gqa_untied").config;
  llama_json["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}};
  CHECK(testing::contains(testing::error_of([&] { hf_llama_config(llama_json); }), "is not llama3 scaling"));
  llama_json["rope_scaling"] = nullptr;
  llama_json["num_key_value_heads"] = "two";
  CHECK(testing::contains(testing::error_of([&] { hf_llama_config(llama_json); }), "num_key_value_heads \"two\" is not an integer"));
  // the newer "rope_parameters" spelling
  llama_json["num_key_value_heads"] = 2;
  llama_json["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                                   {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const auto parsed = hf_llama_config(llama_json);
  CHECK(parsed.rope_theta == 500000.0);
  REQUIRE(parsed.rope_scaling.has_value());
  CHECK(parsed.rope_scaling->factor == 32.0);
}

TEST_CASE("PEFT export of a language model: keys are the module paths, the config says CAUSAL_LM") {
  F32 backend;
  llama_config c = llama_config::tiny();
  c.vocab_size = 50, c.num_hidden_layers = 2, c.hidden_size = 32, c.intermediate_size = 40, c.num_attention_heads = 4,
  c.num_key_value_heads = 2;
  llama<F32> model(backend, c);
  const auto adapter = make_peft_adapter_lm(model, {.base_model_name_or_path = "HuggingFaceTB/SmolLM-135M"});
  CHECK(adapter.tensors.size() == 8);
  CHECK(adapter.tensors.at("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight").shape == std::vector<std::int64_t>{16, 8});
  CHECK(adapter.config.at("target_modules") == nlohmann::json({"q_proj", "v_proj"}));
  CHECK(adapter.config.at("task_type") == "CAUSAL_LM");
  CHECK(adapter.config.at("fan_in_fan_out") == false);
  CHECK(adapter.config.at("lora_alpha") == 32.0);
  // a model of another rank refuses the adapter, naming the module
  c.lora_rank = 4;
  llama<F32> other(backend, c);
  CHECK(testing::contains(testing::error_of([&] { load_peft_adapter_lm(other, adapter); }),
                          "model.layers.0.self_attn.q_proj: the model's adapter has rank 4, alpha 32, the file's r 8"));
}
