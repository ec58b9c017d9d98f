// tests/fuzz/fuzz_tokenizer_json.cpp: libFuzzer harness for byte_level_bpe::from_json
// (tokenizer/byte_level_bpe.hpp), the reader of Hugging Face tokenizer.json files (docs/fuzzing.md,
// docs/language-models.md). Reads the input as a tokenizer.json; when it loads, encodes a few fixed texts and
// the input's own first 64 bytes (often not UTF-8), and checks every id against vocab_size, decode against
// the text (where round_trips()), and that encoding is deterministic. Reading is documented to throw
// std::runtime_error only (the default special-token detection never throws); encode may throw
// std::runtime_error when a file's pattern exceeds PCRE2's match limit. Anything else, a crash, a leak,
// undefined behaviour, a hang or an allocation over -malloc_limit_mb is a finding.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "treelora/tokenizer/byte_level_bpe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::optional<treelora::byte_level_bpe> tokenizer;
  try {
    tokenizer.emplace(treelora::byte_level_bpe::from_json(input, {}, "fuzz input"));
  } catch (const std::runtime_error&) {
    return 0;
  }
  const std::vector<std::string> texts{
      "",
      "Hello world, we're here: 1234567 \t\n\n  <|endoftext|> ab abc",
      "caf\xc3\xa9 \xd0\x9f\xd1\x80\xd0\xb8 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\xe2\x80\x8d \xff\xfe "
      "\xc3",
      std::string(input.substr(0, 64)),
  };
  for (const std::string& text : texts) {
    std::vector<std::int32_t> ids;
    try {
      ids = tokenizer->encode(text);
    } catch (const std::runtime_error&) {
      continue;  // PCRE2's match limit on a pathological pattern
    }
    for (const std::int32_t id : ids)
      if (id < 0 || id >= tokenizer->vocab_size()) std::abort();
    const std::string decoded = tokenizer->decode(ids);  // every id encode gives names a token: no exception
    if (tokenizer->round_trips() && decoded != text) std::abort();
    if (tokenizer->encode(text) != ids) std::abort();
  }
  return 0;
}
