// treelora/tokenizer/byte_level_bpe.hpp: the byte-level BPE tokenizer of GPT-2, Llama-3, SmolLM and Qwen,
// read from a Hugging Face tokenizer.json (docs/language-models.md, "Tokenizers").
//
//   auto tokenizer = treelora::byte_level_bpe::from_file("tokenizer.json");
//   std::vector<std::int32_t> ids = tokenizer.encode("Hello world");   // no BOS/EOS added
//   std::string text = tokenizer.decode(ids);                          // "Hello world"
//
// encode: (1) added tokens (special or not) are cut out of the text first, leftmost-longest, and keep their
// ids; (2) each remaining segment is cut into runs of valid UTF-8 and runs of bytes that are not (each such
// run is one pre-token); (3) the valid runs go through the file's pre-tokenizer: Split steps with its regular
// expression (behaviour Isolated: matches and the text between them are pre-tokens) and a final ByteLevel
// step (optional prefix space, then the GPT-2 pattern when use_regex is set); (4) each pre-token's bytes
// start as the tokens of single bytes (GPT-2's bytes_to_unicode alphabet) and the adjacent pair of lowest
// merge rank is merged, leftmost first among equals, until no pair is in the merges table; with
// ignore_merges, a pre-token that is a whole vocabulary entry is that one id. decode concatenates each id's
// bytes (an added token's content), so decode(encode(s)) == s for every byte string s, UTF-8 or not, when
// add_prefix_space is off.
//
// Invalid UTF-8 (step 2) is our rule: Hugging Face tokenizers only take Rust strings, tiktoken replaces such
// bytes. Cutting it out before the regular expression keeps every byte (decode gives the input back) and lets
// PCRE2 run with PCRE2_NO_UTF_CHECK on text we have checked, so no pattern can read a malformed sequence.
//
// The Unicode engine is PCRE2 (libpcre2-8) in UTF mode with Unicode properties (PCRE2_UCP), JIT-compiled when
// the platform has the JIT: std::regex has neither \p{L}/\p{N} nor Unicode classes for \s, and the ECMAScript
// grammar has no (?i:...) groups; PCRE2 takes the tokenizer.json patterns verbatim (they are written for
// Oniguruma and Rust's fancy-regex, whose syntax PCRE2 shares for everything these files use), is a
// maintained Debian package, and its JIT keeps pre-tokenisation well below the cost of the merges. One
// difference stays: PCRE2 10.42's \s also matches U+180E MONGOLIAN VOWEL SEPARATOR, which Unicode's
// White_Space (Rust, Oniguruma, Python's regex module) dropped in Unicode 6.3; a text with U+180E next to
// letters may split differently from Hugging Face's.
//
// Reading is strict: any field of the wrong type, a merge naming a token the vocabulary lacks, duplicate or
// negative ids, an id table more than half empty, a pattern PCRE2 rejects, or a feature this class does not
// implement (normalizers, dropout, subword prefixes, added tokens with lstrip/rstrip/single_word) throws
// std::runtime_error("treelora::byte_level_bpe: <file>: <field>: <fault>").
#pragma once

#ifndef TREELORA_HAS_PCRE2
#error \
    "treelora/tokenizer/byte_level_bpe.hpp needs PCRE2 (libpcre2-8): configure treelora with TREELORA_PCRE2=AUTO or ON and link treelora::treelora (Debian: libpcre2-dev), or define TREELORA_HAS_PCRE2 and link -lpcre2-8 yourself"
#endif

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "treelora/core/error.hpp"
#include "treelora/io/json.hpp"
#include "treelora/core/utf8.hpp"
#include "treelora/tokenizer/tokenizer.hpp"

namespace treelora {

namespace detail::tokenizer {

/// The length of the valid UTF-8 character at the start of `text`, or 0 when it does not start with one
/// (core/utf8.hpp: RFC 3629, the same rules as PCRE2's UTF check, which step 2 of encode relies on when it passes
/// PCRE2_NO_UTF_CHECK; the tests compare the two on every 1-4 byte sequence that matters).
inline std::size_t utf8_char_length(std::string_view text) { return utf8::char_length(text); }

/// GPT-2's bytes_to_unicode (openai/gpt-2 src/encoder.py): printable Latin-1 bytes stand for themselves, the
/// other 68 bytes for U+0100..U+0143, so that every byte is a visible character in the vocabulary's keys.
struct byte_alphabet {
  std::array<std::string, 256> text;       // byte -> its character, UTF-8
  std::array<std::int16_t, 0x144> byte{};  // code point -> byte, -1 for code points outside the alphabet

  byte_alphabet() {
    byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int code_point = printable ? b : next++;
      byte[static_cast<std::size_t>(code_point)] = static_cast<std::int16_t>(b);
      text[static_cast<std::size_t>(b)] = code_point < 0x80
                                              ? std::string(1, static_cast<char>(code_point))
                                              : std::string{static_cast<char>(0xC0 | (code_point >> 6)),
                                                            static_cast<char>(0x80 | (code_point & 0x3F))};
    }
  }
  static const byte_alphabet& get() {
    static const byte_alphabet alphabet;
    return alphabet;
  }
  /// The bytes a vocabulary key stands for, or nullopt when a character of it is outside the alphabet (such a
  /// token can only be an added token's text, and is decoded as that text).
  std::optional<std::string> to_bytes(std::string_view key) const {
    std::string out;
    for (std::size_t i = 0; i < key.size();) {
      const std::size_t length = utf8_char_length(key.substr(i));
      if (length == 0 || length > 2) return std::nullopt;
      const unsigned code_point = length == 1 ? static_cast<unsigned char>(key[i])
                                              : ((static_cast<unsigned char>(key[i]) & 0x1Fu) << 6) |
                                                    (static_cast<unsigned char>(key[i + 1]) & 0x3Fu);
      if (code_point >= byte.size() || byte[code_point] < 0) return std::nullopt;
      out.push_back(static_cast<char>(byte[code_point]));
      i += length;
    }
    return out;
  }
};

/// A compiled PCRE2 pattern, immutable after construction (PCRE2 allows concurrent matches on one compiled
/// code).
class regex {
 public:
  /// GPT-2's pre-tokenizer pattern, the one a ByteLevel step with use_regex applies.
  static constexpr std::string_view gpt2_pattern =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  /// Per match attempt: far above what the tokenizer patterns need (a few steps per character), low enough
  /// that a pattern with catastrophic backtracking fails in milliseconds instead of hanging.
  static constexpr std::uint32_t match_limit = 1'000'000;

  /// Throws std::runtime_error naming `where` with PCRE2's message and offset when the pattern does not
  /// compile.
  regex(std::string_view pattern, bool literal, const std::string& where) : pattern_(pattern) {
    // PCRE2_NEVER_BACKSLASH_C: \C matches one code unit and could end a match inside a character; the next
    // match would then start mid-character under PCRE2_NO_UTF_CHECK, which PCRE2 does not allow. A literal
    // pattern (Split's {"String": ...}) takes only PCRE2_UTF among these options.
    const std::uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C);
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error,
                              &offset, nullptr));
    if (!code_)
      throw_runtime_error("byte_level_bpe", concat(where, ": the pattern does not compile at offset ", offset,
                                                   ": ", message(error)));
    jit_ = pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE) == 0;  // else the interpreter runs it
    context_.reset(pcre2_match_context_create(nullptr));
    if (!context_) throw_runtime_error("byte_level_bpe", concat(where, ": out of memory"));
    pcre2_set_match_limit(context_.get(), match_limit);
  }

  bool jit() const { return jit_; }
  const std::string& pattern() const { return pattern_; }

  /// Calls part(piece) for each match in `text` and for each stretch of text between matches, in order,
  /// skipping empty ones (Hugging Face's Split behaviour "Isolated"). `text` must be valid UTF-8.
  template <class Part>
  void split(std::string_view text, Part&& part) const {
    const match_data_ptr data(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
    if (!data) throw_runtime_error("byte_level_bpe", "out of memory for a PCRE2 match");
    const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    std::size_t search = 0, emitted = 0;
    while (search <= text.size()) {
      const int rc = pcre2_match(code_.get(), subject, text.size(), search, PCRE2_NO_UTF_CHECK, data.get(),
                                 context_.get());
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0)
        throw_runtime_error("byte_level_bpe",
                            concat("pattern ", json::quote(pattern_), ": matching failed at byte ", search,
                                   ": ", message(rc)));
      const PCRE2_SIZE* range = pcre2_get_ovector_pointer(data.get());
      const std::size_t start = range[0], end = range[1];
      // \K can move a match's start; a start after its end (\K in a lookahead) would make no piece.
      if (start > end || end > text.size() || start < emitted)
        throw_runtime_error("byte_level_bpe", concat("pattern ", json::quote(pattern_), ": a match at bytes ",
                                                     start, "..", end, " is not a piece of the text"));
      if (start == end) {  // an empty match makes no piece: search again one character later
        if (search == text.size()) break;
        search += std::max<std::size_t>(1, utf8_char_length(text.substr(search)));
        continue;
      }
      if (start > emitted) part(text.substr(emitted, start - emitted));
      part(text.substr(start, end - start));
      emitted = search = end;
    }
    if (emitted < text.size()) part(text.substr(emitted));
  }

 private:
  struct code_deleter {
    void operator()(pcre2_code* p) const { pcre2_code_free(p); }
  };
  struct context_deleter {
    void operator()(pcre2_match_context* p) const { pcre2_match_context_free(p); }
  };
  struct match_data_deleter {
    void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
  };
  using match_data_ptr = std::unique_ptr<pcre2_match_data, match_data_deleter>;

  static std::string message(int error) {
    std::array<PCRE2_UCHAR, 256> buffer{};
    const int length = pcre2_get_error_message(error, buffer.data(), buffer.size());
    return length < 0
               ? concat("PCRE2 error ", error)
               : std::string(reinterpret_cast<const char*>(buffer.data()), static_cast<std::size_t>(length));
  }

  std::string pattern_;
  std::unique_ptr<pcre2_code, code_deleter> code_;
  std::unique_ptr<pcre2_match_context, context_deleter> context_;
  bool jit_ = false;
};

/// tokenizer.json is parsed into nlohmann::json (keys in a std::map), not json::value: json::value keeps keys
/// in insertion order in a vector and searches it on every insert, which made GPT-2's 50,257-entry vocabulary
/// take 2.7 s and Llama-3's 128,000 entries far longer (quadratic); this takes 0.1 s and 0.5 s. The limits
/// are json::parse's: nesting deeper than json::max_depth and a key repeated within one object are errors.
inline nlohmann::json parse_json(std::string_view text, const std::string& what) {
  std::vector<std::set<std::string>> keys;
  const auto check = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using event_t = nlohmann::json::parse_event_t;
    if ((event == event_t::object_start || event == event_t::array_start) && depth >= json::max_depth)
      throw_runtime_error("byte_level_bpe",
                          concat(what, ": nesting deeper than ", json::max_depth, " levels"));
    if (event == event_t::object_start) keys.emplace_back();
    if (event == event_t::object_end) keys.pop_back();
    if (event == event_t::key && !keys.back().insert(parsed.get<std::string>()).second)
      throw_runtime_error("byte_level_bpe",
                          concat(what, ": the key ", parsed.dump(), " appears twice in one object"));
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::json::exception& e) {
    throw_runtime_error("byte_level_bpe", concat(what, ": ", e.what()));
  }
}

}  // namespace detail::tokenizer

/// Byte-level BPE read from a Hugging Face tokenizer.json; satisfies Tokenizer. Immutable once built: encode
/// and decode may run on one object from several threads.
class byte_level_bpe {
 public:
  /// Which tokens are BOS, EOS and padding, by their text. nullopt: detected from the common names (the first
  /// of each list that the file has, else none): BOS <|begin_of_text|>, <s>, <|startoftext|>, <|im_start|>,
  /// <|endoftext|>; EOS <|end_of_text|>, </s>, <|im_end|>, <|endoftext|>; padding <pad>, <|pad|>, [PAD],
  /// <|padding|>. An empty string: the tokenizer has none (-1). Any other text must be an added token or a
  /// vocabulary key. Pass the model's tokenizer_config.json values to be sure (a chat model's EOS is often
  /// <|eot_id|> or <|im_end|>, which detection does not pick for Llama-3).
  struct special_tokens {
    std::optional<std::string> bos, eos, pad;
  };

  /// Reads tokenizer.json from a file; errors name the file.
  static byte_level_bpe from_file(const std::filesystem::path& path, const special_tokens& specials = {}) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw_runtime_error("byte_level_bpe", concat("cannot open ", path.string()));
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) throw_runtime_error("byte_level_bpe", concat("cannot read ", path.string()));
    return from_json(text.view(), specials, path.string());
  }

  /// Reads tokenizer.json text held in memory; `what` names it in errors.
  static byte_level_bpe from_json(std::string_view text, const special_tokens& specials = {},
                                  std::string_view what = "tokenizer.json") {
    const std::string name(what);
    return byte_level_bpe(detail::tokenizer::parse_json(text, name), specials, name);
  }

  /// The ids of `text`, without BOS/EOS.
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    merge_scratch scratch;
    std::size_t segment = 0;
    for (std::size_t i = 0; i < text.size();) {
      const std::size_t added = added_token_at(text, i);
      if (added == no_match) {
        ++i;
        continue;
      }
      encode_segment(text.substr(segment, i - segment), ids, scratch);
      ids.push_back(added_[added].id);
      i += added_[added].content.size();
      segment = i;
    }
    encode_segment(text.substr(segment), ids, scratch);
    return ids;
  }

  /// The bytes of `ids` concatenated (an added token's content for an added token). Throws
  /// std::invalid_argument for an id that names no token.
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string out;
    for (const std::int32_t id : ids) {
      if (id < 0 || id >= vocab_size() || !has_id_[static_cast<std::size_t>(id)])
        throw_invalid_argument("byte_level_bpe::decode",
                               concat("id ", id, " names no token (vocabulary size ", vocab_size(), ")"));
      out += id_bytes_[static_cast<std::size_t>(id)];
    }
    return out;
  }

  std::int32_t bos_id() const { return bos_; }
  std::int32_t eos_id() const { return eos_; }
  std::int32_t pad_id() const { return pad_; }
  /// One more than the largest id of the vocabulary and the added tokens.
  std::int32_t vocab_size() const { return static_cast<std::int32_t>(id_bytes_.size()); }

  /// The id of an added token's content or of a vocabulary key (byte-level text, e.g. "Ġthe"), or -1.
  std::int32_t token_to_id(std::string_view token) const {
    if (const auto added = added_index_.find(std::string(token)); added != added_index_.end())
      return added_[added->second].id;
    const auto found = vocab_.find(std::string(token));
    return found == vocab_.end() ? -1 : found->second;
  }
  /// Whether decode(encode(s)) == s for every byte string s: true unless a ByteLevel step adds a prefix
  /// space.
  bool round_trips() const {
    return std::ranges::none_of(steps_, [](const step& s) { return s.add_prefix_space; });
  }
  /// Whether the PCRE2 JIT compiled every pattern (else PCRE2's interpreter runs them, 3-10x slower).
  bool jit() const {
    return std::ranges::all_of(steps_, [](const step& s) { return !s.regex || s.regex->jit(); });
  }

 private:
  using json_t = nlohmann::json;
  using regex_t = detail::tokenizer::regex;
  static constexpr std::size_t no_match = std::numeric_limits<std::size_t>::max();
  /// Ids above this are refused: no tokenizer comes near 2^24 tokens, and the id table is allocated up front.
  static constexpr std::int64_t max_id = (std::int64_t{1} << 24) - 1;

  struct added_token {
    std::string content;
    std::int32_t id;
  };
  /// One pre-tokenizer step: a Split (regex, no byte-level flags) or the final ByteLevel step.
  struct step {
    std::shared_ptr<const regex_t> regex;  // null: a ByteLevel step with use_regex false
    bool add_prefix_space = false;
  };
  struct merge {
    std::int32_t rank, id;
  };
  /// Reused across the pre-tokens of one encode call.
  struct merge_scratch {
    struct symbol {
      std::int32_t id, prev, next;
    };
    std::vector<symbol> symbols;
    std::vector<std::pair<std::int32_t, std::int32_t>> heap;  // (rank, position of the pair's left symbol)
    std::string prefixed;
  };

  byte_level_bpe(const json_t& root, const special_tokens& specials, const std::string& what) : what_(what) {
    require(root.is_object(), "the top level", "is not an object");
    if (const json_t* normalizer = member(root, "normalizer"); normalizer && !normalizer->is_null())
      fail("normalizer",
           concat("normalizers are not supported (this one is ", normalizer->dump().substr(0, 80), ")"));
    const json_t& model = required(root, "model", "model");
    require(model.is_object(), "model", "is not an object");
    const std::string type = string_member(model, "type", "model.type");
    if (type != "BPE") fail("model.type", concat(json::quote(type), " is not \"BPE\""));
    read_model_options(model);
    read_vocab(required(model, "vocab", "model.vocab"));
    if (const json_t* added = member(root, "added_tokens"); added && !added->is_null())
      read_added_tokens(*added);
    build_id_table();
    read_merges(required(model, "merges", "model.merges"));
    read_pre_tokenizer(root);
    bos_ =
        special_id(specials.bos,
                   {"<|begin_of_text|>", "<s>", "<|startoftext|>", "<|im_start|>", "<|endoftext|>"}, "BOS");
    eos_ = special_id(specials.eos, {"<|end_of_text|>", "</s>", "<|im_end|>", "<|endoftext|>"}, "EOS");
    pad_ = special_id(specials.pad, {"<pad>", "<|pad|>", "[PAD]", "<|padding|>"}, "padding");
  }

  // ----------------------------------------------------------------------------------------------------
  // reading
  [[noreturn]] void fail(std::string_view field, const std::string& fault) const {
    throw_runtime_error("byte_level_bpe", concat(what_, ": ", field, ": ", fault));
  }
  void require(bool condition, std::string_view field, std::string_view fault) const {
    if (!condition) fail(field, std::string(fault));
  }
  static const json_t* member(const json_t& object, const char* key) {
    const auto found = object.find(key);
    return found == object.end() ? nullptr : &*found;
  }
  const json_t& required(const json_t& object, const char* key, std::string_view field) const {
    const json_t* value = member(object, key);
    if (!value) fail(field, "is missing");
    return *value;
  }
  std::string string_member(const json_t& object, const char* key, std::string_view field) const {
    const json_t& value = required(object, key, field);
    require(value.is_string(), field, "is not a string");
    return value.get<std::string>();
  }
  /// A boolean member that may be absent or null (then `fallback`).
  bool bool_member(const json_t& object, const char* key, std::string_view field, bool fallback) const {
    const json_t* value = member(object, key);
    if (!value || value->is_null()) return fallback;
    require(value->is_boolean(), field, "is not true or false");
    return value->get<bool>();
  }
  std::int32_t id_value(const json_t& value, std::string_view field) const {
    require(value.is_number_integer(), field, "is not an integer id");
    if (value.is_number_unsigned() ? value.get<std::uint64_t>() > static_cast<std::uint64_t>(max_id)
                                   : (value.get<std::int64_t>() < 0 || value.get<std::int64_t>() > max_id))
      fail(field, concat("id ", value.dump(), " is outside 0..", max_id));
    return static_cast<std::int32_t>(value.get<std::int64_t>());
  }

  void read_model_options(const json_t& model) {
    if (const json_t* dropout = member(model, "dropout");
        dropout && !dropout->is_null() && !(dropout->is_number() && dropout->get<double>() == 0.0))
      fail("model.dropout", "BPE dropout is not supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (const json_t* value = member(model, key);
          value && !value->is_null() && !(value->is_string() && value->get<std::string>().empty()))
        fail(concat("model.", key), "subword prefixes and suffixes are not supported");
    // byte_fallback and unk_token matter only for characters outside the vocabulary; a byte-level vocabulary
    // has all 256 bytes (read_vocab checks), so neither changes what encode returns.
    bool_member(model, "byte_fallback", "model.byte_fallback", false);
    bool_member(model, "fuse_unk", "model.fuse_unk", false);
    ignore_merges_ = bool_member(model, "ignore_merges", "model.ignore_merges", false);
  }

  void read_vocab(const json_t& vocab) {
    require(vocab.is_object(), "model.vocab", "is not an object of token: id");
    const auto& alphabet = detail::tokenizer::byte_alphabet::get();
    vocab_.reserve(vocab.size());
    for (const auto& [key, value] : vocab.items()) {
      const std::int32_t id = id_value(value, concat("model.vocab[", json::quote(key), "]"));
      vocab_.emplace(key, id);
      if (auto bytes = alphabet.to_bytes(key)) bytes_to_id_.emplace(std::move(*bytes), id);
    }
    for (std::size_t b = 0; b < 256; ++b) {
      const auto found = vocab_.find(alphabet.text[b]);
      if (found == vocab_.end())
        fail("model.vocab", concat("has no token for the byte ", b, " (", json::quote(alphabet.text[b]),
                                   "): not a byte-level vocabulary"));
      byte_id_[b] = found->second;
    }
  }

  void read_added_tokens(const json_t& added) {
    require(added.is_array(), "added_tokens", "is not an array");
    for (std::size_t i = 0; i < added.size(); ++i) {
      const std::string field = concat("added_tokens[", i, "]");
      const json_t& token = added[i];
      require(token.is_object(), field, "is not an object");
      const std::int32_t id = id_value(required(token, "id", field + ".id"), field + ".id");
      std::string content = string_member(token, "content", field + ".content");
      require(!content.empty(), field + ".content", "is empty");
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        if (bool_member(token, flag, concat(field, ".", flag), false))
          fail(concat(field, ".", flag), "is true: stripping and whole-word added tokens are not supported");
      bool_member(token, "special", field + ".special", false);
      bool_member(token, "normalized", field + ".normalized", false);
      if (!added_index_.emplace(content, added_.size()).second)
        fail(field, concat(json::quote(content), " is listed twice"));
      by_first_byte_[static_cast<unsigned char>(content[0])].push_back(added_.size());
      added_.push_back({std::move(content), id});
    }
    // Longest first, so that the first match at a position is the longest one.
    for (auto& candidates : by_first_byte_)
      std::ranges::stable_sort(candidates, std::greater<>{},
                               [&](std::size_t index) { return added_[index].content.size(); });
  }

  /// id -> bytes for every vocabulary entry and added token. An added token may share its id with a
  /// vocabulary entry only when that entry is the same text (GPT-2's <|endoftext|>); it then decodes to its
  /// content.
  void build_id_table() {
    std::int64_t largest = -1;
    for (const auto& entry : vocab_) largest = std::max<std::int64_t>(largest, entry.second);
    for (const auto& token : added_) largest = std::max<std::int64_t>(largest, token.id);
    // Refuse tables that would be mostly empty before allocating them (a 60-byte file cannot ask for 2^24
    // rows).
    const std::size_t tokens = vocab_.size() + added_.size();
    if (static_cast<std::size_t>(largest) > 2 * tokens + 1024)
      fail("model.vocab",
           concat("the largest id, ", largest, ", leaves most ids below it unused (", tokens, " tokens)"));
    id_bytes_.resize(static_cast<std::size_t>(largest + 1));
    has_id_.resize(id_bytes_.size(), false);
    const auto& alphabet = detail::tokenizer::byte_alphabet::get();
    for (const auto& [key, id] : vocab_) {
      if (has_id_[static_cast<std::size_t>(id)])
        fail(concat("model.vocab[", json::quote(key), "]"), concat("id ", id, " is another token's id"));
      has_id_[static_cast<std::size_t>(id)] = true;
      id_bytes_[static_cast<std::size_t>(id)] = alphabet.to_bytes(key).value_or(key);
    }
    for (std::size_t i = 0; i < added_.size(); ++i) {
      const auto& [content, id] = added_[i];
      const auto same_text = vocab_.find(content);
      const bool shared = same_text != vocab_.end() && same_text->second == id;
      if (has_id_[static_cast<std::size_t>(id)] && !shared)
        fail(concat("added_tokens[", i, "]"),
             concat("id ", id, " of ", json::quote(content), " is another token's id"));
      has_id_[static_cast<std::size_t>(id)] = true;
      id_bytes_[static_cast<std::size_t>(id)] = content;
    }
  }

  void read_merges(const json_t& merges) {
    require(merges.is_array(), "model.merges", "is not an array");
    merges_.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      const std::string field = concat("model.merges[", i, "]");
      const json_t& entry = merges[i];
      std::string left, right;
      if (entry.is_string()) {  // "a b": the older format (GPT-2); tokens of byte-level text never hold a
                                // space
        const std::string text = entry.get<std::string>();
        const std::size_t space = text.find(' ');
        if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
          fail(field, concat(json::quote(text), " is not two tokens separated by one space"));
        left = text.substr(0, space);
        right = text.substr(space + 1);
      } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
        left = entry[0].get<std::string>();  // ["a", "b"]: the newer format
        right = entry[1].get<std::string>();
      } else {
        fail(field, "is neither \"a b\" nor [\"a\", \"b\"]");
      }
      const auto a = vocab_.find(left), b = vocab_.find(right), joined = vocab_.find(left + right);
      if (a == vocab_.end() || b == vocab_.end() || joined == vocab_.end())
        fail(field,
             concat("names a token the vocabulary lacks: ", json::quote(a == vocab_.end()   ? left
                                                                        : b == vocab_.end() ? right
                                                                                            : left + right)));
      // A pair listed twice keeps its last rank, as Hugging Face tokenizers and GPT-2's encoder.py do.
      merges_.insert_or_assign(pair_key(a->second, b->second),
                               merge{static_cast<std::int32_t>(i), joined->second});
    }
  }

  void read_pre_tokenizer(const json_t& root) {
    const json_t& pre = required(root, "pre_tokenizer", "pre_tokenizer");
    require(pre.is_object(), "pre_tokenizer", "is not an object");
    const std::string type = string_member(pre, "type", "pre_tokenizer.type");
    if (type == "Sequence") {
      const json_t& list = required(pre, "pretokenizers", "pre_tokenizer.pretokenizers");
      require(list.is_array(), "pre_tokenizer.pretokenizers", "is not an array");
      for (std::size_t i = 0; i < list.size(); ++i)
        read_step(list[i], concat("pre_tokenizer.pretokenizers[", i, "]"));
    } else {
      read_step(pre, "pre_tokenizer");
    }
    if (!byte_level_) fail("pre_tokenizer", "has no ByteLevel step: not a byte-level BPE file");
  }

  void read_step(const json_t& spec, const std::string& field) {
    require(spec.is_object(), field, "is not an object");
    const std::string type = string_member(spec, "type", field + ".type");
    if (byte_level_)
      fail(field, "follows the ByteLevel step (only Split steps before one ByteLevel are supported)");
    if (type == "ByteLevel") {
      byte_level_ = true;
      step s;
      s.add_prefix_space = bool_member(spec, "add_prefix_space", field + ".add_prefix_space", false);
      if (bool_member(spec, "use_regex", field + ".use_regex", true))
        s.regex = std::make_shared<const regex_t>(regex_t::gpt2_pattern, false, concat(what_, ": ", field));
      steps_.push_back(std::move(s));
    } else if (type == "Split") {
      const json_t& pattern = required(spec, "pattern", field + ".pattern");
      require(pattern.is_object() && pattern.size() == 1, field + ".pattern",
              "is not {\"Regex\": ...} or {\"String\": ...}");
      const bool literal = pattern.contains("String");
      if (!literal && !pattern.contains("Regex"))
        fail(field + ".pattern", "is not {\"Regex\": ...} or {\"String\": ...}");
      const std::string text = string_member(pattern, literal ? "String" : "Regex", field + ".pattern");
      const std::string behavior = string_member(spec, "behavior", field + ".behavior");
      if (behavior != "Isolated")
        fail(field + ".behavior", concat(json::quote(behavior), " is not supported (only \"Isolated\")"));
      if (bool_member(spec, "invert", field + ".invert", false))
        fail(field + ".invert", "true is not supported");
      steps_.push_back(
          {std::make_shared<const regex_t>(text, literal, concat(what_, ": ", field, ".pattern")), false});
    } else {
      fail(field + ".type", concat(json::quote(type), " is not supported (ByteLevel, Split, Sequence)"));
    }
  }

  std::int32_t special_id(const std::optional<std::string>& chosen,
                          std::initializer_list<std::string_view> names, std::string_view role) const {
    if (chosen) {
      if (chosen->empty()) return -1;
      const std::int32_t id = token_to_id(*chosen);
      if (id < 0)
        throw_invalid_argument("byte_level_bpe", concat(what_, ": the ", role, " token ",
                                                        json::quote(*chosen), " is not in the file"));
      return id;
    }
    for (const std::string_view name : names)
      if (const std::int32_t id = token_to_id(name); id >= 0) return id;
    return -1;
  }

  // ---------------------------------------------------------------------------------------------------
  // encoding
  static std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
           static_cast<std::uint32_t>(right);
  }
  const merge* find_merge(std::int32_t left, std::int32_t right) const {
    const auto found = merges_.find(pair_key(left, right));
    return found == merges_.end() ? nullptr : &found->second;
  }

  /// The added token that starts at text[at] (the longest), or no_match.
  std::size_t added_token_at(std::string_view text, std::size_t at) const {
    for (const std::size_t index : by_first_byte_[static_cast<unsigned char>(text[at])])
      if (text.substr(at).starts_with(added_[index].content)) return index;
    return no_match;
  }

  /// Text without added tokens: runs of invalid UTF-8 are pre-tokens as they are, valid runs are
  /// pre-tokenised.
  void encode_segment(std::string_view text, std::vector<std::int32_t>& ids, merge_scratch& scratch) const {
    std::size_t valid_start = 0;
    for (std::size_t i = 0; i < text.size();) {
      if (const std::size_t length = detail::tokenizer::utf8_char_length(text.substr(i)); length > 0) {
        i += length;
        continue;
      }
      std::size_t end = i + 1;
      while (end < text.size() && detail::tokenizer::utf8_char_length(text.substr(end)) == 0) ++end;
      if (i > valid_start) run_steps(0, text.substr(valid_start, i - valid_start), ids, scratch);
      encode_pre_token(text.substr(i, end - i), ids, scratch);
      valid_start = i = end;
    }
    if (text.size() > valid_start) run_steps(0, text.substr(valid_start), ids, scratch);
  }

  /// Applies pre-tokenizer steps k, k+1, ... to `piece` (valid UTF-8), then BPE to each resulting pre-token.
  void run_steps(std::size_t k, std::string_view piece, std::vector<std::int32_t>& ids,
                 merge_scratch& scratch) const {
    if (k == steps_.size()) {
      encode_pre_token(piece, ids, scratch);
      return;
    }
    const step& s = steps_[k];
    std::string prefixed;  // Hugging Face's ByteLevel adds the space to every piece it receives
    if (s.add_prefix_space && !piece.starts_with(' ')) {
      prefixed.reserve(piece.size() + 1);
      prefixed.push_back(' ');
      prefixed.append(piece);
      piece = prefixed;
    }
    if (!s.regex) {
      run_steps(k + 1, piece, ids, scratch);
      return;
    }
    s.regex->split(piece, [&](std::string_view part) { run_steps(k + 1, part, ids, scratch); });
  }

  /// BPE on one pre-token's bytes: start from single bytes and merge the adjacent pair of lowest rank
  /// (leftmost among equal ranks, as Hugging Face's Word::merge_all) until no adjacent pair has a merge. A
  /// min-heap of (rank, position) keeps this O(n log n) in the pre-token's length, so a megabyte-long word is
  /// no hazard.
  void encode_pre_token(std::string_view bytes, std::vector<std::int32_t>& ids,
                        merge_scratch& scratch) const {
    if (bytes.empty()) return;
    if (bytes.size() == 1) {
      ids.push_back(byte_id_[static_cast<unsigned char>(bytes[0])]);
      return;
    }
    if (ignore_merges_)
      if (const auto found = bytes_to_id_.find(std::string(bytes)); found != bytes_to_id_.end()) {
        ids.push_back(found->second);
        return;
      }
    auto& symbols = scratch.symbols;
    auto& heap = scratch.heap;
    const auto n = static_cast<std::int32_t>(bytes.size());
    symbols.resize(bytes.size());
    heap.clear();
    for (std::int32_t i = 0; i < n; ++i)
      symbols[static_cast<std::size_t>(i)] = {
          byte_id_[static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)])], i - 1,
          i + 1 < n ? i + 1 : -1};
    const auto later = [](const auto& x, const auto& y) { return x > y; };  // min-heap on (rank, position)
    const auto consider = [&](std::int32_t left) {
      const std::int32_t right = symbols[static_cast<std::size_t>(left)].next;
      if (right < 0) return;
      if (const merge* m = find_merge(symbols[static_cast<std::size_t>(left)].id,
                                      symbols[static_cast<std::size_t>(right)].id)) {
        heap.emplace_back(m->rank, left);
        std::ranges::push_heap(heap, later);
      }
    };
    for (std::int32_t i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      std::ranges::pop_heap(heap, later);
      const auto [rank, left] = heap.back();
      heap.pop_back();
      auto& a = symbols[static_cast<std::size_t>(left)];
      if (a.id < 0 || a.next < 0) continue;  // merged away since it was queued
      auto& b = symbols[static_cast<std::size_t>(a.next)];
      const merge* m = find_merge(a.id, b.id);
      if (!m || m->rank != rank) continue;  // the pair changed since (a rank names one pair)
      a.id = m->id;
      b.id = -1;
      a.next = b.next;
      if (a.next >= 0) symbols[static_cast<std::size_t>(a.next)].prev = left;
      if (a.prev >= 0) consider(a.prev);
      consider(left);
    }
    for (std::int32_t i = 0; i >= 0; i = symbols[static_cast<std::size_t>(i)].next)
      ids.push_back(symbols[static_cast<std::size_t>(i)].id);
  }

  std::string what_;
  std::unordered_map<std::string, std::int32_t> vocab_;  // key as written (byte-level text) -> id
  std::unordered_map<std::string, std::int32_t>
      bytes_to_id_;                                  // the bytes a key stands for -> id (ignore_merges)
  std::array<std::int32_t, 256> byte_id_{};          // byte -> the id of its one-byte token
  std::unordered_map<std::uint64_t, merge> merges_;  // (left id, right id) -> rank and merged id
  std::vector<std::string> id_bytes_;                // id -> bytes (an added token: its content)
  std::vector<bool> has_id_;
  std::vector<added_token> added_;
  std::unordered_map<std::string, std::size_t> added_index_;  // content -> index in added_
  std::array<std::vector<std::size_t>, 256> by_first_byte_;   // first byte -> added tokens, longest first
  std::vector<step> steps_;
  bool byte_level_ = false, ignore_merges_ = false;
  std::int32_t bos_ = -1, eos_ = -1, pad_ = -1;
};

static_assert(Tokenizer<byte_level_bpe>);

}  // namespace treelora
