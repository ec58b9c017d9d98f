// tests/fuzz/make_seeds.cpp: writes the fuzzers' seed corpora with the library's own writers
// (docs/fuzzing.md):
//   <out>/fuzz_idx/seeds             write_idx files (gzip) and the same files uncompressed
//   <out>/fuzz_backbone_cache/seeds  save_backbone files: a tiny ViT's backbone and a state with odd shapes
//   <out>/fuzz_json_reader/seeds     small JSON texts (one like a sharded checkpoint's index), and 50,000 '['
//                                    (the stack-overflow regression, generated here rather than committed)
//   <out>/fuzz_safetensors/seeds     safetensors_writer files: F32, F16, BF16, F64, metadata, raw dtypes, empty
//   <out>/fuzz_tokenizer_json/seeds  small tokenizer.json files (the 256 byte tokens and a few merges): GPT-2's
//                                    layout, Llama-3's (Split + ByteLevel, pair merges, ignore_merges, added
//                                    tokens) and a literal Split with a prefix space (built with TREELORA_PCRE2)
//   <out>/fuzz_checkpoint/seeds      real checkpoints of the tiny runs in checkpoint_runs.hpp (every model and
//                                    strategy there): after the first of 2 tasks, inside the second (between its
//                                    epochs, and after its first step), and after both
// and empties <out>/<fuzzer>/work, the directory where a run keeps the new inputs it finds.
// Usage: treelora_fuzz_seeds <out>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "checkpoint_runs.hpp"
#include "treelora/data/idx.hpp"
#include "treelora/io/safetensors.hpp"
#include "treelora/models/pretrain.hpp"
#ifdef TREELORA_HAS_PCRE2
#include "treelora/tokenizer/byte_level_bpe.hpp"
#endif

namespace fs = std::filesystem;
using namespace treelora;

namespace {

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw_runtime_error("make_seeds", concat(path.string(), ": write failed"));
}

/// A write_idx file, and the same bytes uncompressed beside it.
void idx_seed(const fs::path& dir, const std::string& name, const std::vector<index_t>& dims) {
  std::size_t total = 1;
  for (index_t d : dims) total *= static_cast<std::size_t>(d);
  std::vector<std::uint8_t> data(total);
  for (std::size_t i = 0; i < total; ++i) data[i] = static_cast<std::uint8_t>(i * 37 + 11);
  write_idx(dir / (name + ".gz"), dims, data);
  gzFile in = gzopen((dir / (name + ".gz")).c_str(), "rb");
  std::vector<char> plain(64 + total);
  const int got = in ? gzread(in, plain.data(), static_cast<unsigned>(plain.size())) : -1;
  if (in) gzclose(in);
  if (got < 0) throw_runtime_error("make_seeds", concat(name, ": cannot read back"));
  write_text(dir / (name + ".idx"), std::string(plain.data(), static_cast<std::size_t>(got)));
}

#ifdef TREELORA_HAS_PCRE2
/// A tokenizer.json with the 256 byte tokens, merges of `merged` ("left|right", plain bytes; "string" or
/// "pair" format), and the given pre-tokenizer and added tokens.
std::string tokenizer_seed(const std::vector<std::string>& merged, const std::string& format,
                           nlohmann::json pre, nlohmann::json added, bool ignore_merges) {
  const auto& alphabet = detail::tokenizer::byte_alphabet::get();
  const auto key = [&](std::string_view bytes) {
    std::string out;
    for (const char c : bytes) out += alphabet.text[static_cast<unsigned char>(c)];
    return out;
  };
  nlohmann::json vocab = nlohmann::json::object(), merges = nlohmann::json::array();
  for (std::size_t b = 0; b < 256; ++b) vocab[alphabet.text[b]] = b;
  for (const std::string& entry : merged) {
    const std::size_t bar = entry.find('|');
    const std::string left = key(entry.substr(0, bar)), right = key(entry.substr(bar + 1));
    vocab[left + right] = vocab.size();
    merges.push_back(format == "string" ? nlohmann::json(left + " " + right) : nlohmann::json({left, right}));
  }
  return nlohmann::json{
      {"version", "1.0"},
      {"added_tokens", std::move(added)},
      {"normalizer", nullptr},
      {"pre_tokenizer", std::move(pre)},
      {"model", {{"type", "BPE"}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}}}
      .dump();
}
#endif

/// Runs checkpoint variant I through run_stream with runner_options::checkpoint and checkpoint_every_steps = 1 (2
/// tasks of 2 epochs of 2 steps) and keeps four of the files it writes: <name>_task1 (after task 0),
/// <name>_task1_epoch1 (inside task 1, between its epochs), <name>_task1_step1 (inside task 1's first epoch, after
/// its first step) and <name>_done (after both tasks).
template <std::size_t I>
void checkpoint_seeds(const fs::path& dir) {
  const std::string name = fuzzing::checkpoint_variant_name(I);
  const fs::path path = dir / (name + ".checkpoint");
  // A callback sees the file the run wrote before the current step (or task) began.
  struct keep_checkpoints {
    fs::path from, dir;
    std::string name;
    void keep(const std::string& as) const { fs::copy_file(from, dir / (name + as + ".safetensors"), fs::copy_options::overwrite_existing); }
    void on_task_begin(const training_context& c) const {
      if (c.task == 1) keep("_task1");
    }
    void on_step(const training_context& c, double) const {
      if (c.task == 1 && c.epoch == 0 && c.step == 1) keep("_task1_step1");
      if (c.task == 1 && c.epoch == 1 && c.step == 0) keep("_task1_epoch1");
    }
  } keep{path, dir, name};
  fuzzing::checkpoint_backend backend;
  fuzzing::with_checkpoint_variant<I>(backend, [&](auto& model, auto& strategy, const task_stream& stream) {
    runner_options options = fuzzing::checkpoint_run_options();
    options.checkpoint = path;
    options.checkpoint_every_steps = 1;
    const auto optimizer = [](parameter_list<fuzzing::checkpoint_backend> p) {
      return adam<fuzzing::checkpoint_backend>(std::move(p), fuzzing::checkpoint_adam_options());
    };
    run_stream(model, stream, strategy, optimizer, options, keep);
  });
  fs::rename(path, dir / (name + "_done.safetensors"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " <output directory>\n";
    return 2;
  }
  const fs::path out = argv[1];
  auto fresh = [&](const std::string& fuzzer) {
    for (const char* sub : {"seeds", "work"}) {
      fs::remove_all(out / fuzzer / sub);
      fs::create_directories(out / fuzzer / sub);
    }
    return out / fuzzer / "seeds";
  };

  const fs::path idx = fresh("fuzz_idx");
  idx_seed(idx, "labels", {7});
  idx_seed(idx, "images", {3, 4, 4});
  idx_seed(idx, "image_28x28", {1, 28, 28});
  idx_seed(idx, "rank4", {2, 1, 3, 2});
  idx_seed(idx, "no_images", {0, 28, 28});

  const fs::path cache = fresh("fuzz_backbone_cache");
  cpu_backend<float> backend;
  vit_config tiny{.image_height = 8,
                  .image_width = 8,
                  .channels = 1,
                  .patch_size = 4,
                  .width = 4,
                  .depth = 1,
                  .heads = 1,
                  .mlp_ratio = 1.0,
                  .classes = 4,
                  .seed = 1};
  tiny.lora_targets.clear();  // the backbone alone, as pretrain_backbone builds it
  vit<cpu_backend<float>> model(backend, tiny);
  save_backbone(cache / "tiny_vit.bin", 1, model.backbone_state());
  save_backbone(cache / "odd_shapes.bin", 2,
                {{"scalar", shape{}, {1.5f}},
                 {"empty", shape{0}, {}},
                 {"empty_rows", shape{0, 3}, {}},
                 {"matrix", shape{2, 3}, {1, 2, 3, 4, 5, 6}},
                 {"rank4", shape{1, 2, 1, 2}, {-1, 0, 1, 2}}});
  save_backbone(cache / "no_parameters.bin", 3, {});

  const fs::path json = fresh("fuzz_json_reader");
  write_text(json / "oracle_like.json",
             R"({"trees": [{"depth": 2, "members": [0, 1, 3], "median": -1.25e-3}], "name": "a\"b\\c\u0041",)"
             R"( "flags": [true, false, null], "nested": {"x": {"y": [[], {}, [0.5, -0, 1E+2]]}}})");
  write_text(json / "numbers.json", "[0, -0, 1, -12.5, 3e7, 4.25E-2, 123456789012345678901234567890]");
  write_text(json / "empty_containers.json", " [ { } , [ ] , \"\" ] ");
  write_text(json / "regression_deep_nesting.json", std::string(50000, '['));
  write_text(json / "index_like.json",
             R"({"metadata": {"total_size": 18446744073709551615}, "weight_map": {"a.weight": "model-00001.safetensors",)"
             R"( "b": "model-00002.safetensors"}})");
  write_text(json / "duplicate_key.json", R"({"a": 1, "b": {"a": 2, "a": 3}})");

  const fs::path tensors = fresh("fuzz_safetensors");
  const std::vector<float> values{0.0f, -0.0f, 1.5f, -2.25f, 65504.0f, 1e-7f, 3.0e38f, 0.1f};
  const auto floats = std::span<const float>(values);
  safetensors_writer().add("w", {2, 4}, floats).write(tensors / "f32.safetensors");
  safetensors_writer().add("h", {8}, floats, safetensors_dtype::F16).add("b", {4, 2}, floats, safetensors_dtype::BF16)
      .set_metadata("format", "pt").write(tensors / "f16_bf16_metadata.safetensors");
  const std::vector<double> doubles{1.0 / 3.0, -1e-310};
  safetensors_writer().add("d", {1, 2}, std::span<const double>(doubles)).add("s", {}, floats.first(1))
      .add("empty", {0, 3}, floats.first(0)).write(tensors / "f64_scalar_empty.safetensors");
  const std::vector<std::byte> raw(24, std::byte{7});
  safetensors_writer().add("ids", safetensors_dtype::I64, {3}, raw).add("mask", safetensors_dtype::BOOL, {2}, std::span(raw).first(2))
      .add("fp8", safetensors_dtype::F8_E4M3, {2, 1}, std::span(raw).first(2)).set_metadata("note", "\u00e9\n")
      .write(tensors / "raw_dtypes.safetensors");
  safetensors_writer().write(tensors / "empty.safetensors");

#ifdef TREELORA_HAS_PCRE2
  const fs::path tokenizers = fresh("fuzz_tokenizer_json");
  const std::vector<std::string> merges{"a|b", "ab|c", " |t", "h|e", " t|he", "1|2", "\xc3|\xa9", "e|r"};
  write_text(tokenizers / "gpt2_like.json",
             tokenizer_seed(merges, "string",
                            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}},
                            {{{"id", 264}, {"content", "<|endoftext|>"}, {"special", true}}}, false));
  const std::string llama3_pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  write_text(tokenizers / "llama3_like.json",
             tokenizer_seed(merges, "pair",
                            {{"type", "Sequence"},
                             {"pretokenizers",
                              {{{"type", "Split"},
                                {"pattern", {{"Regex", llama3_pattern}}},
                                {"behavior", "Isolated"},
                                {"invert", false}},
                               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}},
                            {{{"id", 264}, {"content", "<|begin_of_text|>"}, {"special", true}},
                             {{"id", 265}, {"content", "<|end_of_text|>"}, {"special", true}},
                             {{"id", 266}, {"content", "<|eot_id|>"}, {"special", true}},
                             {{"id", 267}, {"content", "<|eot"}, {"special", false}}},
                            true));
  write_text(tokenizers / "literal_split_prefix_space.json",
             tokenizer_seed(merges, "string",
                            {{"type", "Sequence"},
                             {"pretokenizers",
                              {{{"type", "Split"}, {"pattern", {{"String", "."}}}, {"behavior", "Isolated"}},
                               {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}}}},
                            nlohmann::json::array(), false));
#endif

  const fs::path checkpoints = fresh("fuzz_checkpoint");
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (checkpoint_seeds<I>(checkpoints), ...);
  }(std::make_index_sequence<fuzzing::checkpoint_variants>{});
  std::cout << "treelora: fuzz seed corpora written under " << out.string() << "\n";
  return 0;
}
