// tests/fuzz/fuzz_json_reader.cpp: libFuzzer harness for treelora::json::parse (io/json.hpp), the one JSON reader of
// the project: nlohmann::json with a nesting limit and duplicate keys rejected; it reads the tests' oracle files and
// the sharded-checkpoint index (docs/fuzzing.md). Parses the input, walks what it read and writes it back.
// json::parse is documented to throw std::runtime_error; any other exception, a crash (a stack overflow included),
// a leak, undefined behaviour, or an allocation over -malloc_limit_mb is a finding, and so is a value that, written
// back, does not read back to the same text.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "treelora/io/json.hpp"

namespace {

namespace json = treelora::json;

/// Recursive on purpose: json::parse promises at most json::max_depth levels.
std::size_t walk(const json::value& value, int depth) {
  if (depth > json::max_depth) std::abort();
  std::size_t count = 1;
  if (value.is_array())
    for (const auto& element : value) count += walk(element, depth + 1);
  else if (value.is_object())
    for (const auto& [key, member] : value.items()) count += key.size() + walk(member, depth + 1);
  else if (value.is_number())
    count += value.get<double>() > 0;
  return count;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  json::value value;
  try {
    value = json::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz input");
  } catch (const std::runtime_error&) {
    return 0;
  }
  walk(value, 0);
  // What was read writes back to text that reads back to the same text (the parser accepts only UTF-8 strings, so
  // the writer never has to replace a byte).
  const std::string text = json::dump(value);
  try {
    if (json::dump(json::parse(text, "written back")) != text) std::abort();
  } catch (const std::runtime_error&) {
    std::abort();
  }
  return 0;
}
