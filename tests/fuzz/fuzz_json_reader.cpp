// tests/fuzz/fuzz_json_reader.cpp: libFuzzer harness for tests/json_reader.hpp, the tests' reader of JSON
// oracle files (docs/fuzzing.md). Parses the input and walks what it read. json::parse is documented to throw
// std::runtime_error; any other exception, a crash (a stack overflow included), a leak, undefined behaviour,
// or an allocation over -malloc_limit_mb is a finding.
#include <cstdint>
#include <string>

#include "json_reader.hpp"

namespace {

using treelora::testing::json;

std::size_t walk(const json& value) {
  std::size_t count = 1;
  if (value.is_array())
    for (const auto& element : value.elements()) count += walk(element);
  else if (value.is_object())
    for (const auto& [key, member] : value.members()) count += key.size() + walk(member);
  else if (value.is_number())
    count += value.number() > 0;
  return count;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    walk(json::parse(std::string(reinterpret_cast<const char*>(data), size)));
  } catch (const std::runtime_error&) {
  }
  return 0;
}
