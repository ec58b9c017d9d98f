// Hugging Face ViT checkpoints into vit<B> (treelora/models/hf_vit.hpp): two tiny random checkpoints
// (ViTModel and ViTForImageClassification naming, tests/data/hf_vit/make_golden.py) reproduce a float64 numpy
// transcription of transformers' modeling_vit.py; config.json mapping and each way it is rejected; one error
// naming every missing, unexpected and mis-shaped tensor; config shapes that disagree with the weights.
#include "test_support.hpp"

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <unistd.h>

#include "treelora/io/json.hpp"
#include "treelora/models/hf_vit.hpp"

using namespace treelora;
using treelora::testing::contains;
using treelora::testing::error_of;
using treelora::testing::relative_error;
using F = cpu_backend<float>;

static_assert(std::endian::native == std::endian::little, "weights.bin is little-endian float32");

namespace {

std::string data_path(const std::string& name) {
  return std::string(TREELORA_TEST_DATA_DIR) + "/hf_vit/" + name;
}

nlohmann::json read_json(const std::string& name) {
  return treelora::json::parse_file(data_path(name));
}

/// weights.json + weights.bin: the checkpoint's tensors, without the safetensors reader.
host_tensor_map read_weights(const std::string& folder) {
  std::ifstream in(data_path(folder + "/weights.bin"), std::ios::binary);
  REQUIRE(in);
  const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  host_tensor_map out;
  std::size_t total = 0;
  const nlohmann::json index = read_json(folder + "/weights.json");
  for (const auto& entry : index.at("tensors")) {
    host_tensor t;
    t.shape = entry.at("shape").get<std::vector<std::int64_t>>();
    std::size_t numel = 1;
    for (auto d : t.shape) numel *= static_cast<std::size_t>(d);
    const auto offset = entry.at("offset").get<std::size_t>();
    REQUIRE((offset + numel) * sizeof(float) <= bytes.size());
    t.values.resize(numel);
    std::memcpy(t.values.data(), bytes.data() + offset * sizeof(float), numel * sizeof(float));
    total += numel;
    out.emplace(entry.at("name").get<std::string>(), std::move(t));
  }
  REQUIRE(total * sizeof(float) == bytes.size());
  return out;
}

struct golden {
  std::vector<std::int64_t> image_shape;
  std::vector<double> images;
  std::string output;
  std::vector<std::int64_t> expected_shape;
  std::vector<double> expected;
};

golden read_golden(const std::string& folder) {
  const auto g = read_json(folder + "/golden.json");
  return {g.at("images").at("shape").get<std::vector<std::int64_t>>(),
          g.at("images").at("values").get<std::vector<double>>(), g.at("output").get<std::string>(),
          g.at("expected").at("shape").get<std::vector<std::int64_t>>(),
          g.at("expected").at("values").get<std::vector<double>>()};
}

template <class B>
tensor<B> host_values(B& backend, shape s, const std::vector<double>& values) {
  const std::vector<typename B::scalar_type> converted(values.begin(), values.end());
  return tensor<B>::from_host(backend, s, converted);
}

/// The model's outputs for the golden images.
template <class B>
std::vector<double> run(vit<B>& model, const golden& g) {
  B& backend = model.backend();
  auto images = host_values(
      backend, shape{g.image_shape[0], g.image_shape[1], g.image_shape[2], g.image_shape[3]}, g.images);
  const auto out = model.forward(images).to_host();
  return {out.begin(), out.end()};
}


}  // namespace

TEST_CASE("hf_vit_config maps config.json onto vit_config") {
  vit_config defaults;
  defaults.lora_targets = {"q", "k"};
  defaults.lora_rank = 3;
  defaults.seed = 77;
  defaults.classes = 5;

  const vit_config plain = hf_vit_config(read_json("vit_model/config.json"), defaults);
  CHECK(plain.image_height == 8);
  CHECK(plain.image_width == 8);
  CHECK(plain.channels == 3);
  CHECK(plain.patch_size == 4);
  CHECK(plain.width == 16);
  CHECK(plain.depth == 2);
  CHECK(plain.heads == 2);
  CHECK(plain.mlp_hidden() == 64);
  CHECK(plain.layer_norm_epsilon == 1e-12);
  CHECK(plain.classes == 5);  // no id2label: the caller's
  CHECK(plain.lora_targets == std::vector<std::string>{"q", "k"});
  CHECK(plain.lora_rank == 3);
  CHECK(plain.seed == 77);
  CHECK(hf_vit_load_options_from(read_json("vit_model/config.json")).qkv_bias);

  const vit_config classifier = hf_vit_config(read_json("vit_classifier/config.json"), defaults);
  CHECK(classifier.image_height == 8);  // image_size [height, width]
  CHECK(classifier.image_width == 12);
  CHECK(classifier.tokens() == 7);
  CHECK(classifier.heads == 4);
  CHECK(classifier.mlp_hidden() == 48);
  CHECK(classifier.layer_norm_epsilon == 1e-6);
  CHECK(classifier.classes == 3);  // id2label
  CHECK_FALSE(hf_vit_load_options_from(read_json("vit_classifier/config.json")).qkv_bias);

  // Absent fields take transformers' ViTConfig defaults (ViT-B/16 at 224 x 224).
  const vit_config base = hf_vit_config(nlohmann::json::object());
  CHECK(base.image_height == 224);
  CHECK(base.image_width == 224);
  CHECK(base.patch_size == 16);
  CHECK(base.channels == 3);
  CHECK(base.width == 768);
  CHECK(base.depth == 12);
  CHECK(base.heads == 12);
  CHECK(base.mlp_hidden() == 3072);
  CHECK(base.layer_norm_epsilon == 1e-12);
  CHECK(base.tokens() == 197);
  CHECK(hf_vit_load_options_from(nlohmann::json::object()).qkv_bias);

  auto labels = nlohmann::json::parse(R"({"num_labels": 7})");
  CHECK(hf_vit_config(labels).classes == 7);
  labels = nlohmann::json::parse(
      R"({"num_labels": 2, "id2label": {"1": "b", "0": "a"}, "hidden_act": "gelu_python"})");
  CHECK(hf_vit_config(labels).classes == 2);
}

TEST_CASE("hf_vit_config rejects what the library's ViT cannot compute, naming the field and the value") {
  const nlohmann::json good = read_json("vit_model/config.json");
  const auto rejected = [&](const std::string& patch_text) {
    nlohmann::json c = good;
    c.merge_patch(nlohmann::json::parse(patch_text));
    return error_of([&] { (void)hf_vit_config(c); });
  };
  struct expectation {
    const char* patch;
    std::vector<const char*> parts;
  };
  const std::vector<expectation> cases = {
      {R"({"hidden_act": "gelu_new"})", {"hidden_act", "\"gelu_new\"", "not supported", "exact erf GELU"}},
      {R"({"hidden_act": "quick_gelu"})", {"hidden_act", "\"quick_gelu\""}},
      {R"({"hidden_act": "relu"})", {"hidden_act", "\"relu\""}},
      {R"({"hidden_act": 3})", {"hidden_act", "3", "not a string"}},
      {R"({"model_type": "deit"})", {"model_type", "\"deit\""}},
      {R"({"model_type": 7})", {"model_type", "7", "is not \"vit\""}},
      {R"({"patch_size": [4, 2]})", {"patch_size", "[4,2]", "not square"}},
      {R"({"image_size": 10})", {"image_size 10 x 10", "patch_size 4"}},
      {R"({"image_size": [8, 9]})", {"image_size 8 x 9"}},
      {R"({"image_size": [8, 8, 8]})", {"image_size", "[8,8,8]"}},
      {R"({"image_size": [8, "8"]})", {"image_size[1]", "\"8\"", "not an integer"}},
      {R"({"hidden_size": 15})", {"hidden_size 15", "num_attention_heads 2"}},
      {R"({"hidden_size": 16.5})", {"hidden_size", "16.5", "not an integer"}},
      {R"({"hidden_size": -16})", {"hidden_size", "-16", "at least 1"}},
      {R"({"hidden_size": 0})", {"hidden_size", "0", "at least 1"}},
      {R"({"hidden_size": 1099511627776})", {"hidden_size", "1099511627776", "larger than"}},
      {R"({"hidden_size": 18446744073709551615})", {"hidden_size", "18446744073709551615", "larger than"}},
      {R"({"num_attention_heads": 0})", {"num_attention_heads", "at least 1"}},
      {R"({"num_channels": true})", {"num_channels", "true", "not an integer"}},
      {R"({"intermediate_size": "64"})", {"intermediate_size", "\"64\""}},
      {R"({"num_hidden_layers": -1})", {"num_hidden_layers", "-1", "at least 0"}},
      {R"({"layer_norm_eps": 0})", {"layer_norm_eps", "0", "positive"}},
      {R"({"layer_norm_eps": -1e-6})", {"layer_norm_eps", "-1e-06", "positive"}},
      {R"({"layer_norm_eps": "1e-6"})", {"layer_norm_eps", "\"1e-6\"", "not a number"}},
      {R"({"qkv_bias": 1})", {"qkv_bias", "1", "true or false"}},
      {R"({"pruned_heads": {"0": [1]}})", {"pruned_heads", "{\"0\":[1]}", "not supported"}},
      {R"({"id2label": {"0": "a", "2": "b"}})", {"id2label key \"2\"", "0 .. 1"}},
      {R"({"id2label": {"0": "a", "01": "b"}})", {"id2label key \"01\""}},
      {R"({"id2label": {"0": 5}})", {"id2label[\"0\"]", "5", "not a string"}},
      {R"({"id2label": ["a"]})", {"id2label", "[\"a\"]", "not an object"}},
      {R"({"id2label": {"0": "a"}, "num_labels": 2})", {"num_labels", "2", "id2label's 1 labels"}},
  };
  for (const auto& c : cases) {
    const std::string message = rejected(c.patch);
    INFO(c.patch, " -> ", message);
    CHECK(message.starts_with("treelora::hf_vit_config: config.json: "));
    for (const char* part : c.parts) CHECK(contains(message, part));
  }
  CHECK(contains(error_of([] { (void)hf_vit_config(nlohmann::json::array()); }), "not a JSON object"));
  CHECK(contains(
      error_of([] { (void)hf_vit_load_options_from(nlohmann::json::parse(R"({"qkv_bias": null})")); }),
      "hf_vit_load_options_from: config.json: qkv_bias null"));
}

TEST_CASE("the Hugging Face ViT name map covers every backbone parameter exactly once") {
  for (const auto naming : {hf_vit_naming::vit_model, hf_vit_naming::vit_for_image_classification}) {
    F backend;
    vit_config config = hf_vit_config(read_json("vit_classifier/config.json"));
    config.lora_targets = {"q", "v", "fc1"};
    vit<F> model(backend, config);
    parameter_list<F> params;
    model.collect_parameters(params, "");
    std::map<std::string, index_t> ours;
    for (auto& p : params)
      if (!contains(p.name, ".lora_")) ours[p.name] = p.value->numel();
    std::map<std::string, int> hits;
    for (const auto& t : hf_vit_tensor_names(config, naming, true)) {
      INFO(t.name);
      const bool prefixed = t.name.starts_with("vit.");
      CHECK(prefixed ==
            (naming == hf_vit_naming::vit_for_image_classification && !t.name.starts_with("classifier.")));
      if (t.parameter.empty()) {
        CHECK((contains(t.name, "pooler.dense.") || contains(t.name, "embeddings.mask_token")));
        continue;
      }
      REQUIRE(ours.contains(t.parameter));
      index_t numel = 1;
      for (auto d : t.shape) numel *= d;
      CHECK(numel == ours[t.parameter]);
      ++hits[t.parameter];
    }
    for (const auto& [name, numel] : ours) {
      INFO(name);
      // Every parameter once; the head only from ViTForImageClassification's classifier.
      CHECK(hits[name] == (name.starts_with("head.") && naming == hf_vit_naming::vit_model ? 0 : 1));
    }
  }
  const vit_config config = hf_vit_config(read_json("vit_classifier/config.json"));
  const auto with = hf_vit_tensor_names(config, hf_vit_naming::vit_model, true);
  const auto without = hf_vit_tensor_names(config, hf_vit_naming::vit_model, false);
  CHECK(with.size() - without.size() ==
        static_cast<std::size_t>(3 * config.depth));  // query, key, value biases
}

TEST_CASE_TEMPLATE("a ViTModel checkpoint reproduces transformers' final CLS hidden state", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  const auto config_json = read_json("vit_model/config.json");
  vit_config defaults;
  defaults.lora_targets = {};
  defaults.classes = 16;  // the head becomes the identity below: logits = LayerNorm(CLS row)
  defaults.seed = 5;
  vit<B> model(backend, hf_vit_config(config_json, defaults));
  const auto tensors = read_weights("vit_model");
  const auto report = load_hf_vit(model, tensors, config_json);
  CHECK(report.naming == hf_vit_naming::vit_model);
  CHECK(report.loaded.size() == tensors.size() - 2);
  CHECK(report.ignored == std::vector<std::string>{"pooler.dense.weight", "pooler.dense.bias"});
  CHECK_FALSE(report.head_loaded);
  // Reshapes only: the Conv2d weight and the position embeddings arrive value for value.
  const auto patch = model.patch_embedding().weight().to_host();
  const auto& conv = tensors.at("embeddings.patch_embeddings.projection.weight").values;
  CHECK(std::equal(conv.begin(), conv.end(), patch.begin(), patch.end()));
  CHECK(model.position_embedding().shape() == shape{5, 16});

  std::vector<double> identity(16 * 16, 0.0);
  for (int i = 0; i < 16; ++i) identity[static_cast<std::size_t>(i * 17)] = 1.0;
  model.head().weight() = host_values(backend, shape{16, 16}, identity);
  model.head().bias() = host_values(backend, shape{16}, std::vector<double>(16, 0.0));

  const auto g = read_golden("vit_model");
  REQUIRE(g.output == "cls_hidden_state");
  const auto out = run(model, g);
  const double error = relative_error(out, g.expected);
  MESSAGE("ViTModel CLS hidden state, ",
          std::string(sizeof(typename B::scalar_type) == 4 ? "float" : "double"), ": max relative error ",
          error);
  CHECK(error < (sizeof(typename B::scalar_type) == 4 ? 1e-5 : 1e-12));

  // The comparison can fail: the same weights with two tensors exchanged miss the reference by far.
  auto swapped = tensors;
  std::swap(swapped.at("encoder.layer.0.attention.attention.query.weight"),
            swapped.at("encoder.layer.0.attention.attention.key.weight"));
  load_hf_vit(model, swapped, config_json);
  CHECK(relative_error(run(model, g), g.expected) > 1e-3);
}

TEST_CASE_TEMPLATE("a ViTForImageClassification checkpoint reproduces transformers' logits", B,
                   TREELORA_TEST_BACKENDS) {
  B backend;
  const auto config_json = read_json("vit_classifier/config.json");
  vit_config defaults;  // LoRA on q and v: B = 0, so the adapted model starts equal to the checkpoint
  defaults.lora_targets = {"q", "v"};
  defaults.lora_rank = 2;
  defaults.seed = 9;
  vit<B> model(backend, hf_vit_config(config_json, defaults));
  const auto adapters_before = model.adapters().front().a->to_host();
  const auto tensors = read_weights("vit_classifier");
  const auto report = load_hf_vit(model, tensors, config_json);
  CHECK(report.naming == hf_vit_naming::vit_for_image_classification);
  CHECK(report.loaded.size() == tensors.size());
  CHECK(report.ignored.empty());
  CHECK(report.head_loaded);
  CHECK(model.adapters().front().a->to_host() == adapters_before);
  for (auto& block : model.blocks())  // qkv_bias false: the biases the model was built with are now zero
    for (auto* projection : {&block.attention().q(), &block.attention().k(), &block.attention().v()})
      for (auto b : projection->base().bias().to_host()) CHECK(b == 0);

  const auto g = read_golden("vit_classifier");
  REQUIRE(g.output == "logits");
  REQUIRE(g.expected_shape == std::vector<std::int64_t>{2, 3});
  const auto out = run(model, g);
  const double error = relative_error(out, g.expected);
  MESSAGE("ViTForImageClassification logits, ",
          std::string(sizeof(typename B::scalar_type) == 4 ? "float" : "double"), ": max relative error ",
          error);
  CHECK(error < (sizeof(typename B::scalar_type) == 4 ? 1e-5 : 1e-12));

  auto swapped = tensors;  // LayerNorm weights exchanged: a wrong map would show
  std::swap(swapped.at("vit.encoder.layer.1.layernorm_before.weight"),
            swapped.at("vit.encoder.layer.1.layernorm_after.weight"));
  load_hf_vit(model, swapped, config_json);
  CHECK(relative_error(run(model, g), g.expected) > 1e-3);
}

TEST_CASE("one error lists every missing, unexpected and mis-shaped tensor, and nothing is loaded") {
  F backend;
  const auto config_json = read_json("vit_model/config.json");
  vit<F> model(backend, hf_vit_config(config_json));
  const auto norm_before = model.final_norm().gamma().to_host();
  auto tensors = read_weights("vit_model");
  REQUIRE(tensors.erase("encoder.layer.1.output.dense.bias") == 1);
  tensors["encoder.layer.0.attention.attention.rotary.weight"] = {{2, 2}, {1, 2, 3, 4}};
  tensors["layernorm.weight"] = {{17}, std::vector<float>(17, 1.0f)};
  const std::string message = error_of([&] { load_hf_vit(model, tensors, config_json); });
  MESSAGE(message);
  CHECK(message.starts_with(
      "treelora::load_hf_vit: the ViTModel checkpoint (40 tensors) does not fit the model"));
  CHECK(contains(message, "3 problems"));
  CHECK(contains(message, "\n  missing: encoder.layer.1.output.dense.bias [16]"));
  CHECK(contains(message, "\n  unexpected: encoder.layer.0.attention.attention.rotary.weight [2, 2]"));
  CHECK(contains(message, "\n  mis-shaped: layernorm.weight: expected [16], found [17]"));
  CHECK(model.final_norm().gamma().to_host() == norm_before);  // all or nothing
}

TEST_CASE("malformed tensors and naming slips are named too") {
  F backend;
  const auto model_json = read_json("vit_model/config.json");
  vit<F> model(backend, hf_vit_config(model_json));
  auto tensors = read_weights("vit_model");
  tensors.at("layernorm.bias").values.pop_back();
  tensors.at("encoder.layer.0.layernorm_after.bias").shape = {-16};
  tensors.at("embeddings.cls_token").values[3] = std::numeric_limits<float>::quiet_NaN();
  tensors.at("encoder.layer.1.intermediate.dense.weight").shape = {std::int64_t{1} << 40,
                                                                   std::int64_t{1} << 40};
  const std::string message = error_of([&] { load_hf_vit(model, tensors, model_json); });
  INFO(message);
  CHECK(contains(message, "4 problems"));
  CHECK(contains(message, "malformed: layernorm.bias: shape [16] has 16 values, the tensor holds 15"));
  CHECK(contains(message,
                 "malformed: encoder.layer.0.layernorm_after.bias: shape [-16] has a negative dimension"));
  CHECK(contains(message, "malformed: embeddings.cls_token: value 3 is nan"));
  CHECK(contains(
      message,
      "malformed: encoder.layer.1.intermediate.dense.weight: shape [1099511627776, 1099511627776] has "
      "more than 2^63 - 1 elements"));

  // A classifier checkpoint whose file still has q/k/v biases (config.json says qkv_bias false), and a
  // ViTModel name inside it.
  const auto classifier_json = read_json("vit_classifier/config.json");
  vit<F> classifier(backend, hf_vit_config(classifier_json));
  auto classifier_tensors = read_weights("vit_classifier");
  classifier_tensors["vit.encoder.layer.0.attention.attention.key.bias"] = {{16},
                                                                            std::vector<float>(16, 0.5f)};
  auto moved = classifier_tensors.extract("vit.layernorm.bias");
  moved.key() = "layernorm.bias";
  classifier_tensors.insert(std::move(moved));
  const std::string slips = error_of([&] { load_hf_vit(classifier, classifier_tensors, classifier_json); });
  MESSAGE(slips);
  CHECK(contains(slips, "the ViTForImageClassification checkpoint"));
  CHECK(contains(slips, "no q/k/v biases"));
  CHECK(contains(slips, "missing: vit.layernorm.bias [16]"));
  CHECK(contains(
      slips, "unexpected: layernorm.bias [16] (ViTModel naming in a ViTForImageClassification checkpoint"));
  CHECK(contains(
      slips,
      "unexpected: vit.encoder.layer.0.attention.attention.key.bias [16] (config.json's qkv_bias is false)"));

  // A head reset to another class count no longer fits the classifier.
  classifier.reset_head(5, 1);
  const std::string head =
      error_of([&] { load_hf_vit(classifier, read_weights("vit_classifier"), classifier_json); });
  CHECK(contains(head, "mis-shaped: classifier.weight: expected [5, 16], found [3, 16]"));
  CHECK(contains(head, "mis-shaped: classifier.bias: expected [5], found [3]"));
}

TEST_CASE("a config.json whose shapes disagree with the weights is reported tensor by tensor") {
  F backend;
  const auto good = read_json("vit_model/config.json");
  const auto tensors = read_weights("vit_model");

  nlohmann::json wider =
      good;  // hidden_size 24 for 16-wide weights: every tensor that has a width is mis-shaped
  wider["hidden_size"] = 24;
  wider["intermediate_size"] = 96;
  vit<F> wide(backend, hf_vit_config(wider));
  const std::string message = error_of([&] { load_hf_vit(wide, tensors, wider); });
  INFO(message);
  CHECK(contains(message, "width 24"));
  CHECK(contains(message, "40 problems"));  // every tensor has a width axis
  CHECK(contains(message, "mis-shaped: embeddings.cls_token: expected [1, 1, 24], found [1, 1, 16]"));
  CHECK(contains(message,
                 "mis-shaped: embeddings.patch_embeddings.projection.weight: expected [24, 3, 4, 4], found "
                 "[16, 3, 4, 4]"));
  CHECK(contains(message,
                 "mis-shaped: encoder.layer.1.intermediate.dense.weight: expected [96, 24], found [64, 16]"));
  CHECK(contains(message, "mis-shaped: pooler.dense.weight: expected [24, 24], found [16, 16]"));

  nlohmann::json deeper = good;  // three layers, a larger image
  deeper["num_hidden_layers"] = 3;
  deeper["image_size"] = 12;
  vit<F> deep(backend, hf_vit_config(deeper));
  const std::string deep_message = error_of([&] { load_hf_vit(deep, tensors, deeper); });
  INFO(deep_message);
  CHECK(contains(deep_message, "missing: encoder.layer.2.attention.attention.query.weight [16, 16]"));
  CHECK(contains(deep_message, "missing: encoder.layer.2.layernorm_after.bias [16]"));
  CHECK(contains(deep_message,
                 "mis-shaped: embeddings.position_embeddings: expected [1, 10, 16], found [1, 5, 16]"));

  // The model was built for one configuration and config.json describes another: named before any tensor.
  vit<F> model(backend, hf_vit_config(good));
  CHECK(contains(error_of([&] { load_hf_vit(model, tensors, wider); }),
                 "config.json's hidden_size is 24, the model's width is 16"));
  nlohmann::json other_epsilon = good;
  other_epsilon["layer_norm_eps"] = 1e-5;
  CHECK(contains(error_of([&] { load_hf_vit(model, tensors, other_epsilon); }), "layer_norm_eps"));
  nlohmann::json unsupported = good;
  unsupported["hidden_act"] = "gelu_pytorch_tanh";
  const std::string act = error_of([&] { load_hf_vit(model, tensors, unsupported); });
  CHECK(contains(act, "hidden_act \"gelu_pytorch_tanh\" is not supported"));
}

namespace {
/// A folder as save_pretrained leaves it: config.json and the tensors in one model.safetensors, or in two shards
/// with model.safetensors.index.json; written with the library's safetensors writer (byte-identical to the reference
/// writer's, test_safetensors).
std::filesystem::path write_checkpoint_folder(const std::string& name, const std::string& source, bool sharded,
                                              safetensors_dtype dtype) {
  namespace fs = std::filesystem;
  const fs::path folder = fs::temp_directory_path() / concat("treelora-hf-vit-", ::getpid(), "-", name);
  fs::remove_all(folder);
  fs::create_directories(folder);
  fs::copy_file(data_path(source + "/config.json"), folder / "config.json");
  const auto tensors = read_weights(source);
  safetensors_writer first, second;
  nlohmann::json weight_map = nlohmann::json::object();
  std::size_t i = 0;
  for (const auto& [tensor_name, t] : tensors) {
    const std::vector<std::uint64_t> shape(t.shape.begin(), t.shape.end());
    const bool to_second = sharded && i++ % 2 == 1;
    (to_second ? second : first).add(tensor_name, shape, std::span<const float>(t.values), dtype);
    weight_map[tensor_name] = to_second ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  first.set_metadata("format", "pt");
  second.set_metadata("format", "pt");
  if (!sharded) {
    first.write(folder / "model.safetensors");
  } else {
    first.write(folder / "model-00001-of-00002.safetensors");
    second.write(folder / "model-00002-of-00002.safetensors");
    std::ofstream(folder / "model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
  }
  return folder;
}
}  // namespace

TEST_CASE("a save_pretrained folder (one file or two shards, F32 or BF16) loads through the safetensors reader") {
  using B = cpu_backend<float>;
  B backend;
  const auto g = read_golden("vit_classifier");
  for (const bool sharded : {false, true}) {
    CAPTURE(sharded);
    const auto folder = write_checkpoint_folder(sharded ? "sharded" : "single", "vit_classifier", sharded,
                                                safetensors_dtype::F32);
    hf_vit_load_report report;
    auto model = load_hf_vit_folder<B>(backend, folder, {}, &report);
    CHECK(report.head_loaded);
    CHECK(model.classes() == 3);
    CHECK(relative_error(run(model, g), g.expected) < 1e-5);  // the same as the raw-file route
    std::filesystem::remove_all(folder);
  }
  // BF16 keeps 8 bits of mantissa: the outputs move by about 1e-2 relative, and every weight read back is the
  // BF16 rounding of the float weight (BF16 -> F32 is exact).
  const auto folder = write_checkpoint_folder("bf16", "vit_classifier", false, safetensors_dtype::BF16);
  const auto read_back = read_safetensors_tensors(folder / "model.safetensors");
  const auto original = read_weights("vit_classifier");
  REQUIRE(read_back.size() == original.size());
  for (const auto& [tensor_name, t] : original) {
    const auto& r = read_back.at(tensor_name);
    CHECK(r.shape == t.shape);
    for (std::size_t i = 0; i < t.values.size(); ++i)
      CHECK(std::abs(r.values[i] - t.values[i]) <= std::abs(t.values[i]) * (1.0 / 256));
  }
  auto model = load_hf_vit_folder<B>(backend, folder);
  const double bf16_error = relative_error(run(model, g), g.expected);
  MESSAGE("ViTForImageClassification from BF16 weights: max relative error ", bf16_error);
  CHECK(bf16_error > 1e-6);  // it did read the rounded weights
  CHECK(bf16_error < 0.1);
  std::filesystem::remove_all(folder);
}

TEST_CASE("a folder without config.json or weights is an error naming the folder and what is missing") {
  namespace fs = std::filesystem;
  const fs::path folder = fs::temp_directory_path() / concat("treelora-hf-vit-", ::getpid(), "-empty");
  fs::remove_all(folder);
  fs::create_directories(folder);
  cpu_backend<float> backend;
  const auto message = [&] {
    try {
      load_hf_vit_folder(backend, folder);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(contains(message(), "has no config.json"));
  fs::copy_file(data_path("vit_model/config.json"), folder / "config.json");
  std::ofstream(folder / "pytorch_model.bin") << "not read";
  CHECK(contains(message(), "has neither model.safetensors nor model.safetensors.index.json"));
  CHECK(contains(message(), "convert it to safetensors"));
  fs::remove_all(folder);
}
