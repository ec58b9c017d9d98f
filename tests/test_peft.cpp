// PEFT LoRA adapters (treelora/models/peft.hpp): a ViT's trained adapters exported and read back give the
// same outputs (both Hugging Face namings); PEFT's key names, shapes and adapter_config.json; rsLoRA's
// portable form; InfLoRA's and O-LoRA's branches concatenated along the rank (checked against W-free brute
// force: the sum of s_t B_t A_t on the host) and per task; DualLoRA refused; one import error listing every
// bad key.
#include "test_support.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <unistd.h>

#include "treelora/lora/duallora.hpp"
#include "treelora/lora/inflora.hpp"
#include "treelora/lora/olora.hpp"
#include "treelora/models/peft.hpp"

using namespace treelora;
using treelora::testing::contains;
using treelora::testing::error_of;
using treelora::testing::relative_error;
using F = cpu_backend<float>;

namespace {

/// A fresh folder under the system's temporary folder, removed with its contents at the end of the test.
struct temporary_folder {
  std::filesystem::path path;
  explicit temporary_folder(std::string_view name)
      : path(std::filesystem::temp_directory_path() / concat("treelora_test_peft_", ::getpid(), "_", name)) {
    std::filesystem::remove_all(path);
  }
  ~temporary_folder() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

vit_config tiny(std::vector<std::string> targets, index_t rank = 3, double alpha = 6.0) {
  return {.image_height = 8,
          .image_width = 8,
          .channels = 1,
          .patch_size = 4,
          .width = 16,
          .depth = 2,
          .heads = 2,
          .mlp_ratio = 2.0,
          .classes = 5,
          .lora_targets = std::move(targets),
          .lora_rank = rank,
          .lora_alpha = alpha,
          .seed = 11};
}

/// "Trained" adapters: random non-zero A and B.
template <class Model>
void randomise_adapters(Model& model, std::uint64_t seed) {
  for (auto& view : model.adapters()) {
    fill_normal<F>(*view.a, 0.0f, 0.3f, ++seed);
    fill_normal<F>(*view.b, 0.0f, 0.3f, ++seed);
  }
}

std::vector<float> outputs(auto& model) {
  const auto images = treelora::testing::random_tensor(model.backend(), shape{3, 64}, 99);
  return model.forward(images).to_host();
}

/// A standard-LoRA ViT for `adapter` with `source`'s backbone and head: what a PEFT user loads.
template <class Source>
vit<F> import_into_fresh_model(F& backend, Source& source, const peft_adapter& adapter) {
  vit_config architecture = source.config();
  architecture.seed =
      1234;  // a different initialisation: everything must come from the source or the adapter
  vit<F> model(backend, peft_vit_config(adapter, architecture), peft_lora_config(adapter, architecture));
  model.load_backbone_state(source.backbone_state());
  copy<F>(source.head().weight(), model.head().weight());
  copy<F>(source.head().bias(), model.head().bias());
  load_peft_adapter(model, adapter);
  return model;
}


std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// [rows, cols] row-major product in double.
std::vector<double> host_product(const std::vector<float>& b, const std::vector<float>& a, index_t out,
                                 index_t rank, index_t in, double scale) {
  std::vector<double> c(static_cast<std::size_t>(out * in), 0.0);
  for (index_t i = 0; i < out; ++i)
    for (index_t k = 0; k < rank; ++k)
      for (index_t j = 0; j < in; ++j)
        c[std::size_t(i * in + j)] +=
            scale * double(b[std::size_t(i * rank + k)]) * double(a[std::size_t(k * in + j)]);
  return c;
}

/// max |s' B' A' - sum_t s_t B_t A_t| / max(1, max |sum|) over the modules: the merged export against brute
/// force over the multi-branch adapter's own branches (its finished history plus the current one).
template <class Model>
double merged_identity_error(Model& model, const peft_adapter& exported) {
  double worst = 0;
  const double alpha = exported.config.at("lora_alpha").get<double>();
  const auto rank = exported.config.at("r").get<index_t>();
  auto typed = model.factorized_adapters();
  auto views = model.adapters();
  for (std::size_t m = 0; m < typed.size(); ++m) {
    auto& adapter = *typed[m];
    const index_t out = adapter.b().rows(), in = adapter.a().cols();
    std::vector<double> reference(static_cast<std::size_t>(out * in), 0.0);
    const auto add = [&](double scale, const tensor<F>& a, const tensor<F>& b) {
      const auto term = host_product(b.to_host(), a.to_host(), out, a.rows(), in, scale);
      for (std::size_t i = 0; i < term.size(); ++i) reference[i] += term[i];
    };
    for (const auto& branch : adapter.history().branches()) add(double(branch.scale), branch.a, branch.b);
    double current_scale = 1;
    if constexpr (requires { adapter.scaling(); }) current_scale = double(adapter.scaling());
    add(current_scale, adapter.a(), adapter.b());
    // views[m].name is blocks.<i>.attn.q ...: find the exported module by its A's row count and the layer
    const std::string layer = views[m].name.substr(7, views[m].name.find('.', 7) - 7);
    const std::string projection = views[m].name.substr(views[m].name.find('.', 7) + 1);
    const std::string path = concat("base_model.model.encoder.layer.", layer, ".",
                                    projection == "attn.q"    ? "attention.attention.query"
                                    : projection == "attn.v"  ? "attention.attention.value"
                                    : projection == "mlp.fc1" ? "intermediate.dense"
                                                              : "unmapped");
    const host_tensor& a = exported.tensors.at(path + ".lora_A.weight");
    const host_tensor& b = exported.tensors.at(path + ".lora_B.weight");
    REQUIRE(a.shape == std::vector<std::int64_t>{rank, in});
    REQUIRE(b.shape == std::vector<std::int64_t>{out, rank});
    const auto merged = host_product(b.values, a.values, out, rank, in, alpha / double(rank));
    worst = std::max(worst, relative_error(merged, reference));
  }
  return worst;
}

}  // namespace

TEST_CASE("standard LoRA: export and import reproduce the model, with PEFT's key names (ViTModel naming)") {
  F backend;
  vit<F> model(backend, tiny({"q", "k", "v", "o", "fc1", "fc2"}));
  randomise_adapters(model, 1);
  const auto expected = outputs(model);
  temporary_folder folder("standard");
  export_peft(model, folder.path, {.base_model_name_or_path = "google/vit-base-patch16-224-in21k"});

  const peft_adapter adapter = read_peft_adapter(folder.path);
  CHECK(adapter.tensors.size() == 2 * 6 * 2);  // 2 layers x 6 projections x (A, B)
  const auto shape_of = [&](const std::string& key) { return adapter.tensors.at(key).shape; };
  CHECK(shape_of("base_model.model.encoder.layer.0.attention.attention.query.lora_A.weight") ==
        std::vector<std::int64_t>{3, 16});
  CHECK(shape_of("base_model.model.encoder.layer.0.attention.attention.query.lora_B.weight") ==
        std::vector<std::int64_t>{16, 3});
  CHECK(shape_of("base_model.model.encoder.layer.1.attention.output.dense.lora_A.weight") ==
        std::vector<std::int64_t>{3, 16});
  CHECK(shape_of("base_model.model.encoder.layer.1.intermediate.dense.lora_B.weight") ==
        std::vector<std::int64_t>{32, 3});
  CHECK(shape_of("base_model.model.encoder.layer.1.output.dense.lora_A.weight") ==
        std::vector<std::int64_t>{3, 32});
  // The values are the model's, bit for bit.
  const auto a = model.adapters()[1].a->to_host();  // blocks.0.attn.k
  CHECK(model.adapters()[1].name == "blocks.0.attn.k");
  CHECK(adapter.tensors.at("base_model.model.encoder.layer.0.attention.attention.key.lora_A.weight").values ==
        a);

  const safetensors_file file(folder.path / "adapter_model.safetensors");
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(file.info("base_model.model.encoder.layer.0.attention.attention.value.lora_B.weight").dtype ==
        safetensors_dtype::F32);

  vit<F> loaded = import_into_fresh_model(backend, model, adapter);
  CHECK(loaded.config().lora_targets == std::vector<std::string>{"q", "k", "v", "o", "fc1", "fc2"});
  CHECK(loaded.config().lora_rank == 3);
  CHECK(loaded.config().lora_alpha == 6.0);
  const double error = relative_error(outputs(loaded), expected);
  MESSAGE("standard LoRA round trip, relative error " << error);
  CHECK(error <= 1e-6);
  // Without the adapter the fresh model differs: the check above can fail.
  vit<F> bare(backend, tiny({}));
  bare.load_backbone_state(model.backbone_state());
  copy<F>(model.head().weight(), bare.head().weight());
  copy<F>(model.head().bias(), bare.head().bias());
  CHECK(relative_error(outputs(bare), expected) > 1e-3);
}

TEST_CASE("adapter_config.json: sorted keys and PEFT's fields, as save_pretrained writes them") {
  F backend;
  vit<F> model(backend, tiny({"q", "v"}, 4, 16.0));
  randomise_adapters(model, 2);
  temporary_folder folder("config");
  export_peft(model, folder.path, {.base_model_name_or_path = "google/vit-base-patch16-224-in21k"});
  const std::string text = read_text(folder.path / "adapter_config.json");
  CHECK(text.starts_with("{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,\n"));
  CHECK(text.ends_with("\"use_rslora\": false\n}"));  // json.dumps(indent=2): no final newline
  const json::value parsed = json::parse(text);       // keeps the file's order
  std::vector<std::string> keys;
  for (const auto& [key, value] : parsed.items()) keys.push_back(key);
  CHECK(std::is_sorted(keys.begin(), keys.end()));
  CHECK(parsed.at("peft_type") == "LORA");
  CHECK(parsed.at("r") == 4);
  CHECK(parsed.at("lora_alpha") == 16);
  CHECK(parsed.at("lora_alpha").is_number_integer());
  CHECK(parsed.at("target_modules") == json::value::array({"query", "value"}));
  vit<F> all_six(backend, tiny({"q", "k", "v", "o", "fc1", "fc2"}));
  CHECK(make_peft_adapter(all_six).config.at("target_modules") ==
        nlohmann::json::array(
            {"attention.output.dense", "intermediate.dense", "key", "output.dense", "query", "value"}));
  CHECK(parsed.at("lora_dropout") == 0.0);
  CHECK(parsed.at("bias") == "none");
  CHECK(parsed.at("fan_in_fan_out") == false);
  CHECK(parsed.at("use_rslora") == false);
  CHECK(parsed.at("task_type") == "FEATURE_EXTRACTION");
  CHECK(parsed.at("base_model_name_or_path") == "google/vit-base-patch16-224-in21k");
  CHECK(parsed.at("inference_mode") == true);
  CHECK(parsed.at("modules_to_save").is_null());
  CHECK(parsed.at("rank_pattern") == json::value::object());

  SUBCASE(
      "fc2 without o: one regular expression, since \"output.dense\" would also take "
      "attention.output.dense") {
    vit<F> fc2(backend, tiny({"q", "fc2"}));
    randomise_adapters(fc2, 3);
    const peft_adapter adapter = make_peft_adapter(fc2);
    CHECK(adapter.config.at("target_modules") ==
          "encoder\\.layer\\.\\d+\\.(attention\\.attention\\.query|output\\.dense)");
    CHECK(peft_vit_config(adapter, fc2.config()).lora_targets == std::vector<std::string>{"q", "fc2"});
    vit<F> loaded = import_into_fresh_model(backend, fc2, adapter);
    CHECK(relative_error(outputs(loaded), outputs(fc2)) <= 1e-6);
  }
}

TEST_CASE("ViTForImageClassification naming: \"vit.\" paths and the classifier as modules_to_save") {
  F backend;
  vit<F> model(backend, tiny({"q", "v"}));
  randomise_adapters(model, 4);
  const auto expected = outputs(model);
  temporary_folder folder("classification");
  export_peft(model, folder.path, {.naming = hf_vit_naming::vit_for_image_classification});
  const peft_adapter adapter = read_peft_adapter(folder.path);
  CHECK(adapter.tensors.contains(
      "base_model.model.vit.encoder.layer.0.attention.attention.query.lora_A.weight"));
  CHECK(adapter.tensors.at("base_model.model.vit.encoder.layer.1.attention.attention.value.lora_B.weight")
            .shape == std::vector<std::int64_t>{16, 3});
  CHECK(adapter.tensors.at("base_model.model.classifier.weight").shape == std::vector<std::int64_t>{5, 16});
  CHECK(adapter.tensors.at("base_model.model.classifier.bias").shape == std::vector<std::int64_t>{5});
  CHECK(adapter.tensors.size() == 2 * 2 * 2 + 2);
  CHECK(adapter.config.at("modules_to_save") == nlohmann::json::array({"classifier"}));
  CHECK(adapter.config.at("task_type").is_null());
  CHECK(adapter.config.at("target_modules") == nlohmann::json::array({"query", "value"}));

  // The head comes from the adapter: the fresh model's own head (seed 1234) is replaced.
  vit_config architecture = model.config();
  architecture.seed = 1234;
  vit<F> loaded(backend, peft_vit_config(adapter, architecture), peft_lora_config(adapter, architecture));
  loaded.load_backbone_state(model.backbone_state());
  load_peft_adapter(loaded, adapter);
  const double error = relative_error(outputs(loaded), expected);
  MESSAGE("classification naming round trip, relative error " << error);
  CHECK(error <= 1e-6);
}

TEST_CASE("rsLoRA: the portable export (use_rslora false, lora_alpha = alpha sqrt r) imports as plain LoRA") {
  F backend;
  vit_config config = tiny({"q", "v", "fc1"}, 4, 8.0);
  vit<F> model(backend, config, {.rank = 4, .alpha = 8.0, .rank_stabilized = true});
  randomise_adapters(model, 5);
  const auto expected = outputs(model);

  const peft_adapter portable = make_peft_adapter(model);
  CHECK(portable.config.at("use_rslora") == false);
  CHECK(portable.config.at("lora_alpha").get<double>() == 16.0);  // 8 sqrt(4)
  CHECK(peft_lora_config(portable, config).rank_stabilized == false);
  vit<F> plain = import_into_fresh_model(backend, model, portable);
  const double error = relative_error(outputs(plain), expected);
  MESSAGE("rsLoRA portable export, relative error " << error);
  CHECK(error <= 1e-6);

  const peft_adapter faithful = make_peft_adapter(model, {.portable_rslora = false});
  CHECK(faithful.config.at("use_rslora") == true);
  CHECK(faithful.config.at("lora_alpha").get<double>() == 8.0);
  CHECK(peft_lora_config(faithful, config).rank_stabilized == true);
  vit<F> rs = import_into_fresh_model(backend, model, faithful);
  CHECK(relative_error(outputs(rs), expected) <= 1e-6);
}

TEST_CASE(
    "InfLoRA: the branches concatenated along the rank are one exact LoRA; per-task adapters sum to it") {
  F backend;
  const vit_config config = tiny({"q", "v", "fc1"}, 2);
  vit<F, inflora> model(backend, config, {.rank = 2, .merge_finished = false});
  // Three tasks: fixed A_t (any [2, in] matrix here), trained B_t; the last one is still training.
  for (int task = 0; task < 3; ++task) {
    std::uint64_t seed = 100 + 10 * std::uint64_t(task);
    for (auto* adapter : model.factorized_adapters()) {
      Eigen::MatrixXd a(2, adapter->in_features());
      auto values =
          treelora::testing::random_tensor(backend, shape{2, adapter->in_features()}, ++seed, 0.3).to_host();
      for (index_t i = 0; i < a.size(); ++i) a(i / a.cols(), i % a.cols()) = values[std::size_t(i)];
      adapter->start_task(a);
      fill_normal<F>(adapter->b(), 0.0f, 0.3f, ++seed);
      if (task < 2) adapter->finish_task();
    }
  }
  const auto expected = outputs(model);
  temporary_folder folder("inflora");
  export_peft(model, folder.path / "merged");
  const peft_adapter merged = read_peft_adapter(folder.path / "merged");
  CHECK(merged.config.at("r") == 6);           // 3 tasks x rank 2
  CHECK(merged.config.at("lora_alpha") == 6);  // scaling 1, as InfLoRA has no alpha / r
  const double identity = merged_identity_error(model, merged);
  MESSAGE("InfLoRA merged export vs brute-force sum of branches, relative error " << identity);
  CHECK(identity <= 1e-6);

  vit<F> single = import_into_fresh_model(backend, model, merged);
  const double error = relative_error(outputs(single), expected);
  MESSAGE("InfLoRA merged export as one standard LoRA, relative error of the outputs " << error);
  CHECK(error <= 1e-6);

  const auto tasks = export_peft_per_task(model, folder.path / "tasks");
  REQUIRE(tasks.size() == 3);
  CHECK(tasks[1].filename() == "task_1");
  const peft_adapter task1 = read_peft_adapter(tasks[1]);
  CHECK(task1.config.at("r") == 2);
  CHECK(task1.config.at("lora_alpha") == 2);
  CHECK(task1.tensors.at("base_model.model.encoder.layer.0.attention.attention.query.lora_A.weight").values ==
        model.factorized_adapters()[0]->history().branches()[1].a.to_host());
  // The merged adapter's A is the per-task A's stacked: rows 2..3 are task 1's.
  const auto& merged_a =
      merged.tensors.at("base_model.model.encoder.layer.0.attention.attention.query.lora_A.weight");
  CHECK(
      std::equal(merged_a.values.begin() + 2 * 16, merged_a.values.begin() + 4 * 16,
                 task1.tensors.at("base_model.model.encoder.layer.0.attention.attention.query.lora_A.weight")
                     .values.begin()));

  SUBCASE("after the last task ends, its zeroed current branch is left out") {
    for (auto* adapter : model.factorized_adapters()) adapter->finish_task();
    CHECK(make_peft_adapter(model).config.at("r") == 6);
    CHECK(make_peft_adapters_per_task(model).size() == 3);
  }
  SUBCASE("a history folded into one delta has no factors to export") {
    vit<F, inflora> folded(backend, config, {.rank = 2, .merge_finished = true});
    for (auto* adapter : folded.factorized_adapters()) adapter->finish_task();
    CHECK(contains(error_of([&] { make_peft_adapter(folded); }), "merge_finished = false"));
  }
}

TEST_CASE("O-LoRA: per-task LoRAs merged into one exact LoRA with alpha' = (alpha / r) r'") {
  F backend;
  vit<F, olora> model(backend, tiny({"q", "v", "fc1"}, 2),
                      {.rank = 2, .alpha = 4.0, .merge_finished = false});
  for (index_t task = 0; task < 3; ++task) {
    std::uint64_t seed = 300 + 10 * std::uint64_t(task);
    for (auto* adapter : model.factorized_adapters()) {
      adapter->start_task(task);
      fill_normal<F>(adapter->b(), 0.0f, 0.3f, ++seed);
      if (task < 2) adapter->finish_task();
    }
  }
  const auto expected = outputs(model);
  const peft_adapter merged = make_peft_adapter(model);
  CHECK(merged.config.at("r") == 6);
  CHECK(merged.config.at("lora_alpha") == 12);  // (4 / 2) x 6
  const double identity = merged_identity_error(model, merged);
  MESSAGE("O-LoRA merged export vs brute-force sum of branches, relative error " << identity);
  CHECK(identity <= 1e-6);
  vit<F> single = import_into_fresh_model(backend, model, merged);
  const double error = relative_error(outputs(single), expected);
  MESSAGE("O-LoRA merged export as one standard LoRA, relative error of the outputs " << error);
  CHECK(error <= 1e-6);

  const auto per_task = make_peft_adapters_per_task(model);
  REQUIRE(per_task.size() == 3);
  CHECK(per_task[2].config.at("r") == 2);
  CHECK(per_task[2].config.at("lora_alpha") == 4);
}

TEST_CASE("DualLoRA is refused: a gated residual is not a LoRA") {
  F backend;
  vit<F, dual_lora> model(backend, tiny({"q", "v"}, 2), {.rank = 2});
  temporary_folder folder("duallora");
  const std::string message = error_of([&] { export_peft(model, folder.path); });
  CHECK(contains(message, "DualLoRA"));
  CHECK(contains(message, "gated residual"));
  CHECK(contains(message, "not a LoRA"));
  CHECK_FALSE(std::filesystem::exists(folder.path / "adapter_config.json"));
}

TEST_CASE(
    "import errors: one message listing every missing, unexpected and mis-shaped key; non-LoRA configs") {
  F backend;
  vit<F> model(backend, tiny({"q", "v"}));
  randomise_adapters(model, 6);
  peft_adapter adapter = make_peft_adapter(model);
  adapter.tensors.erase("base_model.model.encoder.layer.1.attention.attention.query.lora_A.weight");
  adapter.tensors["base_model.model.pooler.dense.lora_A.weight"] =
      host_tensor{{3, 16}, std::vector<float>(48, 0.5f)};
  adapter.tensors["base_model.model.encoder.layer.0.attention.attention.value.lora_B.weight"] =
      host_tensor{{16, 4}, std::vector<float>(64, 0.5f)};
  temporary_folder folder("errors");
  write_peft_adapter(adapter, folder.path);  // and through the files, as a user meets it
  const peft_adapter from_files = read_peft_adapter(folder.path);
  vit<F> target(backend, peft_vit_config(from_files, model.config()),
                peft_lora_config(from_files, model.config()));
  const std::string message = error_of([&] { load_peft_adapter(target, from_files); });
  MESSAGE(message);
  CHECK(contains(message, "3 problems"));
  CHECK(contains(
      message, "missing: base_model.model.encoder.layer.1.attention.attention.query.lora_A.weight [3, 16]"));
  CHECK(contains(
      message,
      "unexpected: base_model.model.pooler.dense.lora_A.weight [3, 16] (the library's ViT has no pooler)"));
  CHECK(contains(message,
                 "mis-shaped: base_model.model.encoder.layer.0.attention.attention.value.lora_B.weight: "
                 "expected [16, 3], found [16, 4]"));
  // Nothing was copied: the target's adapters are still their initialisation (B = 0).
  for (auto& view : target.adapters())
    for (float v : view.b->to_host()) CHECK(v == 0.0f);

  SUBCASE("a model whose adapters are on other projections") {
    vit<F> other(backend, tiny({"q", "k"}));
    const std::string mismatch = error_of([&] { load_peft_adapter(other, make_peft_adapter(model)); });
    CHECK(contains(mismatch,
                   "does not fit: encoder.layer.0.attention.attention.value: the model has no adapter on "
                   "blocks.0.attn.v"));
    CHECK(contains(mismatch,
                   "does not fit: blocks.1.attn.k: the model has an adapter the file does not adapt"));
  }
  SUBCASE("peft_type other than LORA") {
    nlohmann::json config = make_peft_adapter(model).config;
    config["peft_type"] = "IA3";
    write_file_atomically(folder.path / "adapter_config.json", std::string_view(config.dump(2)));
    const std::string wrong = error_of([&] { read_peft_adapter(folder.path); });
    CHECK(contains(wrong, "peft_type \"IA3\" is not \"LORA\""));
  }
  SUBCASE("DoRA and trained biases are not LoRA") {
    nlohmann::json config = make_peft_adapter(model).config;
    config["use_dora"] = true;
    write_file_atomically(folder.path / "adapter_config.json", std::string_view(config.dump(2)));
    CHECK(contains(error_of([&] { read_peft_adapter(folder.path); }), "use_dora true is set"));
    config["use_dora"] = false;
    config["bias"] = "lora_only";
    write_file_atomically(folder.path / "adapter_config.json", std::string_view(config.dump(2)));
    CHECK(contains(error_of([&] { read_peft_adapter(folder.path); }), "bias \"lora_only\" is not \"none\""));
  }
}

TEST_CASE("rank_pattern and alpha_pattern: modules of another rank load zero-padded with the same function") {
  F backend;
  vit<F> model(backend, tiny({"q", "v"}, 4, 8.0));
  randomise_adapters(model, 7);
  peft_adapter adapter = make_peft_adapter(model);
  // Rewrite layer 1's value adapter as rank 2 with alpha 3 (PEFT's per-module overrides).
  const std::string path = "base_model.model.encoder.layer.1.attention.attention.value";
  host_tensor& a = adapter.tensors.at(path + ".lora_A.weight");
  host_tensor& b = adapter.tensors.at(path + ".lora_B.weight");
  a = host_tensor{{2, 16}, std::vector<float>(a.values.begin(), a.values.begin() + 32)};
  std::vector<float> narrow;
  for (index_t row = 0; row < 16; ++row)
    for (index_t j = 0; j < 2; ++j) narrow.push_back(b.values[std::size_t(row * 4 + j)]);
  b = host_tensor{{16, 2}, narrow};
  adapter.config["rank_pattern"] = {{"layer.1.attention.attention.value", 2}};
  adapter.config["alpha_pattern"] = {{"layer.1.attention.attention.value", 3.0}};
  vit<F> loaded = import_into_fresh_model(backend, model, adapter);
  CHECK(loaded.config().lora_rank == 4);
  // Layer 1's value adapter computes (3 / 2) B[:, :2] A[:2]; the model's scaling is 8 / 4 = 2.
  auto* value = loaded.factorized_adapters()[3];
  const auto reference = host_product(narrow, a.values, 16, 2, 16, 1.5);
  const auto got =
      host_product(value->b().to_host(), value->a().to_host(), 16, 4, 16, double(value->scaling()));
  CHECK(relative_error(got, reference) <= 1e-6);
}

// The material for PEFT's own loader (tests/data/peft/check_with_peft.py, run by hand where torch,
// transformers and peft are installed): a ViTForImageClassification folder written by the library
// (config.json and model.safetensors), the adapter exported onto it, and golden.json (images and the
// library's logits). Written to $TREELORA_PEFT_CHECK_DIR when set (kept), else to a temporary folder. The
// library reads the folder back itself.
TEST_CASE(
    "a Hugging Face folder and its exported adapter reproduce the model through the library's loaders") {
  F backend;
  vit<F> model(backend, tiny({"q", "v", "fc2"}));
  randomise_adapters(model, 8);
  fill_normal<F>(model.head().weight(), 0.0f, 0.3f, 81);  // a head unlike any fresh one
  const auto images = treelora::testing::random_tensor(backend, shape{3, 64}, 99);
  const auto expected = model.forward(images).to_host();

  temporary_folder scratch("hf_folder");
  const char* keep = std::getenv("TREELORA_PEFT_CHECK_DIR");
  const std::filesystem::path folder = keep ? std::filesystem::path(keep) : scratch.path;
  const vit_config& c = model.config();
  nlohmann::json config = {{"architectures", {"ViTForImageClassification"}},
                           {"model_type", "vit"},
                           {"hidden_act", "gelu"},
                           {"hidden_size", c.width},
                           {"num_hidden_layers", c.depth},
                           {"num_attention_heads", c.heads},
                           {"intermediate_size", c.mlp_hidden()},
                           {"image_size", c.image_height},
                           {"patch_size", c.patch_size},
                           {"num_channels", c.channels},
                           {"layer_norm_eps", c.layer_norm_epsilon},
                           {"qkv_bias", true},
                           {"id2label", nlohmann::json::object()}};
  for (index_t k = 0; k < c.classes; ++k) config["id2label"][concat(k)] = concat("class_", k);
  parameter_list<F> parameters;
  model.collect_parameters(parameters, "");
  safetensors_writer writer;
  writer.set_metadata("format", "pt");
  for (const auto& entry : hf_vit_tensor_names(c, hf_vit_naming::vit_for_image_classification)) {
    if (entry.parameter.empty()) continue;  // the pooler and the mask token: not in this class
    const auto p = std::find_if(parameters.begin(), parameters.end(),
                                [&](const auto& q) { return q.name == entry.parameter; });
    REQUIRE(p != parameters.end());
    std::vector<std::uint64_t> dims(entry.shape.begin(), entry.shape.end());
    const auto values = p->value->to_host();
    writer.add(entry.name, dims, std::span<const float>(values));
  }
  require_writable_folder(folder / "base");
  writer.write(folder / "base" / "model.safetensors");
  write_file_atomically(folder / "base" / "config.json", std::string_view(config.dump(2)));
  export_peft(model, folder / "adapter",
              {.base_model_name_or_path = "base", .naming = hf_vit_naming::vit_for_image_classification});
  const nlohmann::json golden = {
      {"images", {{"shape", {3, c.channels, c.image_height, c.image_width}}, {"values", images.to_host()}}},
      {"expected", {{"shape", {3, c.classes}}, {"values", expected}}}};
  write_file_atomically(folder / "golden.json", std::string_view(golden.dump()));

  // The library's own route: checkpoint folder, then adapter.
  const hf_checkpoint checkpoint = read_hf_checkpoint(folder / "base");
  const peft_adapter adapter = read_peft_adapter(folder / "adapter");
  const vit_config architecture = hf_vit_config(checkpoint.config, {.seed = 4321});
  vit<F> loaded(backend, peft_vit_config(adapter, architecture), peft_lora_config(adapter, architecture));
  const hf_vit_load_report report = load_hf_vit(loaded, checkpoint.tensors, checkpoint.config);
  CHECK(report.head_loaded);
  load_peft_adapter(loaded, adapter);
  const double error = relative_error(loaded.forward(images).to_host(), expected);
  MESSAGE("Hugging Face folder + PEFT adapter through the library's loaders, relative error " << error);
  CHECK(error <= 1e-6);
}
