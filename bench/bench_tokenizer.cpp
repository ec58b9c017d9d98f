// bench_tokenizer: encode throughput of byte_level_bpe (tokenizer/byte_level_bpe.hpp) on about 300 kB of
// mixed text (the tests' 3,024 UTF-8 strings: code, ten scripts, emoji, digit and whitespace runs, special
// tokens; then the SentencePiece test corpus), with GPT-2's and Llama-3's vocabularies from
// tests/data/tokenizer/. In the same run, the GPT-2 encoder.py algorithm in Python with the regex module
// (tests/data/tokenizer/make_golden.py bench: its per-pre-token cache emptied before each pass, as
// byte_level_bpe has none) encodes the same text: MB/s of input for each and ours_over_python. Medians of the
// iterations (ours) and of 5 passes (Python, started once per benchmark). Needs /usr/bin/python3 with
// python3-regex for the comparison; without it the Python counters are 0.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <treelora/tokenizer/byte_level_bpe.hpp>

using namespace treelora;
namespace fs = std::filesystem;

namespace {

using bench::median;
using bench::now;

// This file's own folder finds the repository's test data wherever the build tree is.
const fs::path data_dir = fs::path(__FILE__).parent_path().parent_path() / "tests" / "data" / "tokenizer";

std::string read_gzip(const fs::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) throw std::runtime_error("cannot open " + path.string());
  std::string out;
  std::vector<char> buffer(1 << 16);
  for (int got; (got = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0;)
    out.append(buffer.data(), static_cast<std::size_t>(got));
  gzclose(file);
  return out;
}

/// The UTF-8 test strings, one per line, then the SentencePiece corpus.
const std::string& mixed_text() {
  static const std::string text = [] {
    std::string out = read_gzip(data_dir / "spm_strings.txt.gz");
    std::ifstream corpus(data_dir / "spm_corpus.txt", std::ios::binary);
    out.append(std::istreambuf_iterator<char>(corpus), std::istreambuf_iterator<char>());
    return out;
  }();
  return text;
}

/// Make_golden.py's encoder on the same text: its median MB/s over 5 passes, or 0 when Python cannot run it.
double python_megabytes_per_second(const std::string& vocab) {
  const fs::path text_file =
      fs::temp_directory_path() / concat("treelora-bench-tokenizer-", ::getpid(), ".txt");
  {
    std::ofstream out(text_file, std::ios::binary);
    out << mixed_text();
  }
  const std::string command = concat("/usr/bin/python3 '", (data_dir / "make_golden.py").string(),
                                     "' bench '", (data_dir / (vocab + ".tokenizer.json.gz")).string(), "' '",
                                     text_file.string(), "' 5 2>/dev/null");
  double rate = 0;
  if (std::FILE* pipe = ::popen(command.c_str(), "r")) {
    if (std::fscanf(pipe, "%lf", &rate) != 1) rate = 0;
    if (::pclose(pipe) != 0) rate = 0;
  }
  fs::remove(text_file);
  return rate;
}

void encode(benchmark::State& state, const std::string& vocab) {
  const auto tokenizer = byte_level_bpe::from_json(read_gzip(data_dir / (vocab + ".tokenizer.json.gz")));
  const std::string& text = mixed_text();
  const double megabytes = static_cast<double>(text.size()) / 1e6;
  std::vector<double> seconds;
  std::size_t ids = 0;
  for (auto _ : state) {
    const double start = now();
    const auto encoded = tokenizer.encode(text);
    seconds.push_back(now() - start);
    ids = encoded.size();
    benchmark::DoNotOptimize(encoded.data());
  }
  const double ours = megabytes / median(seconds), python = python_megabytes_per_second(vocab);
  state.counters["text_kB"] = static_cast<double>(text.size()) / 1e3;
  state.counters["bytes_per_id"] = static_cast<double>(text.size()) / static_cast<double>(ids);
  state.counters["ours_MBps"] = ours;
  state.counters["python_MBps"] = python;
  state.counters["ours_over_python"] = python > 0 ? ours / python : 0;
  state.counters["jit"] = tokenizer.jit();
}

}  // namespace

BENCHMARK_CAPTURE(encode, gpt2, std::string("gpt2"))
    ->Unit(benchmark::kMillisecond)
    ->Iterations(15)
    ->UseRealTime();
BENCHMARK_CAPTURE(encode, llama3, std::string("llama3"))
    ->Unit(benchmark::kMillisecond)
    ->Iterations(15)
    ->UseRealTime();
