// Pre-training a language model (models/lm_pretrain.hpp), saving it as a Hugging Face folder (save_hf_llama) and
// the checked cache folder (io/checked_folder.hpp): packing by hand, the loss against a host computation, learning
// and determinism, the saved folder read back by load_hf_llama_folder, every way a cache folder can go wrong.
#include "test_support.hpp"

#include <filesystem>
#include <fstream>

#include "treelora/io/checked_folder.hpp"
#include "treelora/models/hf_causal_lm.hpp"
#include "treelora/models/lm_pretrain.hpp"

using namespace treelora;
using D = cpu_backend<double>;
namespace fs = std::filesystem;

namespace {

llama_config tiny() {
  llama_config c;
  c.vocab_size = 12, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 32, c.rope_theta = 100.0;
  c.bos_token_id = 1, c.eos_token_ids = {2}, c.pad_token_id = 3, c.initializer_range = 0.3, c.seed = 5;
  return c;
}

struct temp_folder {
  fs::path path = fs::temp_directory_path() / concat("treelora_lm_pretrain_", ::getpid(), "_", std::rand());
  temp_folder() { fs::create_directories(path); }
  ~temp_folder() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

/// A corpus with structure: documents counting up from a start, modulo 8 (ids 4..11).
std::vector<std::vector<std::int32_t>> counting_documents(int n) {
  std::vector<std::vector<std::int32_t>> docs;
  for (int d = 0; d < n; ++d) {
    std::vector<std::int32_t> doc;
    for (int k = 0; k < 5 + d % 4; ++k) doc.push_back(4 + (d + k) % 8);
    docs.push_back(doc);
  }
  return docs;
}

}  // namespace

TEST_CASE("pack_sequences: BOS, documents joined by EOS, equal pieces, the partial tail dropped") {
  const std::vector<std::vector<std::int32_t>> docs = {{5, 6, 7}, {8}, {9, 10}};
  // stream: 5 6 7 EOS 8 EOS 9 10 EOS -> pieces of BOS + 3
  const auto s = pack_sequences(docs, 1, 2, 4);
  REQUIRE(s.size() == 3);
  CHECK(s[0] == std::vector<index_t>{1, 5, 6, 7});
  CHECK(s[1] == std::vector<index_t>{1, 2, 8, 2});
  CHECK(s[2] == std::vector<index_t>{1, 9, 10, 2});
  CHECK(pack_sequences(docs, 1, 2, 8).size() == 1);  // 9 ids: one piece of BOS + 7, the last 2 dropped
  CHECK_THROWS_AS(pack_sequences(docs, 1, 2, 1), std::invalid_argument);
}

TEST_CASE("causal_lm_loss: the mean over every token after BOS, as computed on the host; batch-size independent") {
  D backend;
  llama<D> model(backend, tiny());
  const auto sequences = pack_sequences(counting_documents(6), 1, 2, 6);
  REQUIRE(sequences.size() >= 3);
  double total = 0;
  index_t counted = 0;
  for (const auto& s : sequences) {
    const auto logits = model.forward_tokens(s, token_layout{1, 6, 0, {0}}).to_host();
    for (index_t p = 0; p + 1 < 6; ++p) {
      double m = -1e300, z = 0;
      for (index_t v = 0; v < 12; ++v) m = std::max(m, logits[std::size_t(p * 12 + v)]);
      for (index_t v = 0; v < 12; ++v) z += std::exp(logits[std::size_t(p * 12 + v)] - m);
      total += m + std::log(z) - logits[std::size_t(p * 12 + s[std::size_t(p + 1)])];
      ++counted;
    }
  }
  CHECK(causal_lm_loss(model, sequences, 1) == doctest::Approx(total / double(counted)).epsilon(1e-12));
  CHECK(causal_lm_loss(model, sequences, 2) == doctest::Approx(total / double(counted)).epsilon(1e-12));
}

TEST_CASE("pretrain_causal_lm: learns a structured corpus; deterministic; bad settings refused") {
  const auto sequences = pack_sequences(counting_documents(40), 1, 2, 8);
  auto train = [&] {
    D backend;
    llama<D> model(backend, tiny());
    const double before = causal_lm_loss(model, sequences);
    index_t reports = 0;
    const auto r = pretrain_causal_lm(model, sequences, {.steps = 60, .batch_size = 8, .learning_rate = 1e-2, .warmup_steps = 5,
                                                         .report_every = 20},
                                      [&](index_t, double) { ++reports; });
    CHECK(reports == 3);
    CHECK(r.steps == 60);
    CHECK(r.tokens == 60 * 8 * 7);
    const double after = causal_lm_loss(model, sequences);
    CHECK(after < 0.6 * before);  // (each document's first id after EOS is hard to predict)
    CHECK(r.final_loss < r.first_loss);
    std::vector<double> values;
    for (auto& p : parameters(model))
      for (double v : p.value->to_host()) values.push_back(v);
    return values;
  };
  CHECK(train() == train());
  D backend;
  llama<D> model(backend, tiny());
  CHECK_THROWS_AS(pretrain_causal_lm(model, sequences, {.steps = 0}), std::invalid_argument);
  CHECK_THROWS_AS(pretrain_causal_lm(model, sequences, {.learning_rate = -1}), std::invalid_argument);
  CHECK_THROWS_AS(pretrain_causal_lm(model, {}, {}), std::invalid_argument);
}

TEST_CASE("save_hf_llama: a Hugging Face folder load_hf_llama_folder reads back to the same logits") {
  temp_folder folder;
  D backend;
  for (const bool tied : {true, false}) {
    llama_config c = tiny();
    c.tie_word_embeddings = tied;
    c.rope_scaling = rope_llama3_scaling{4.0, 1.0, 4.0, 16};
    llama<D> model(backend, c);
    save_hf_llama(model, folder.path);
    const auto json = nlohmann::json::parse(std::ifstream(folder.path / "config.json"));
    CHECK(json["model_type"] == "llama");
    CHECK(json["architectures"][0] == "LlamaForCausalLM");
    CHECK(json["num_key_value_heads"] == 2);
    const llama_config read = hf_llama_config(json);
    CHECK(read.hidden_size == c.hidden_size);
    CHECK(read.tie_word_embeddings == tied);
    CHECK(read.pad_token_id == 3);
    CHECK(read.rope_scaling.has_value());
    hf_lm_load_report report;
    auto loaded = load_hf_llama_folder<D>(backend, folder.path, {}, &report);
    CHECK(report.loaded.size() == 2 + 9 * 2 + (tied ? 0 : 1));
    const std::vector<index_t> ids = {1, 5, 7, 9, 4, 6};
    const auto a = model.forward_tokens(ids, token_layout{1, 6, 0, {0}}).to_host();
    const auto b = loaded.forward_tokens(ids, token_layout{1, 6, 0, {0}}).to_host();
    REQUIRE(a.size() == b.size());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
    CHECK(worst < 1e-5);  // the file holds float32
  }
}

TEST_CASE("checked folder: the manifest finds a missing, resized or changed file, another fingerprint or version") {
  temp_folder folder;
  const auto write = [&](const std::string& name, const std::string& text) { std::ofstream(folder.path / name) << text; };
  write("a.txt", "hello");
  write("b.bin", std::string(3 << 20, 'x'));  // several read chunks
  CHECK(check_folder_manifest(folder.path, 7).starts_with("no "));
  write_folder_manifest(folder.path, 7, {"a.txt", "b.bin"}, {{"note", 1}});
  CHECK(check_folder_manifest(folder.path, 7).empty());
  CHECK(testing::contains(check_folder_manifest(folder.path, 8), "fingerprint"));
  write("a.txt", "hellO");
  CHECK(testing::contains(check_folder_manifest(folder.path, 7), "a.txt has changed"));
  write("a.txt", "hello!");
  CHECK(testing::contains(check_folder_manifest(folder.path, 7), "a.txt has another size"));
  fs::remove(folder.path / "a.txt");
  CHECK(testing::contains(check_folder_manifest(folder.path, 7), "a.txt is missing"));
  CHECK_THROWS_AS(write_folder_manifest(folder.path, 7, {"a.txt"}), std::runtime_error);
  // hostile manifests are reasons, never crashes or reads outside the folder
  for (const std::string& text : {std::string("not json"), std::string("[]"), std::string("{\"version\": 2}"),
                                  std::string("{\"version\": 1, \"fingerprint\": \"0000000000000007\", \"files\": {\"../etc/passwd\": "
                                              "{\"bytes\": 1, \"fnv1a64\": \"0\"}}}"),
                                  std::string("{\"version\": 1, \"fingerprint\": \"0000000000000007\", \"files\": {\"b.bin\": 5}}"),
                                  std::string("{\"version\": 1, \"fingerprint\": \"0000000000000007\", \"files\": {}}")}) {
    write("manifest.json", text);
    const std::string why = check_folder_manifest(folder.path, 7);
    INFO(text, " -> ", why);
    CHECK(!why.empty());
  }
}
