// tests/fuzz/fuzz_safetensors.cpp: libFuzzer harness for safetensors_file (io/safetensors.hpp), the memory-mapped
// reader of safetensors files (docs/fuzzing.md, docs/interop.md). Each input is opened as a file; when it opens,
// every tensor must lie inside the file with exactly numel x element size bytes, every convertible tensor is
// converted to float, and the file written again by safetensors_writer from the raw bytes must read back to the
// same names, dtypes, shapes, bytes and metadata. safetensors_file is documented to throw safetensors_error (a
// std::runtime_error); any other exception, a crash, a leak, undefined behaviour, a broken invariant, or an
// allocation over -malloc_limit_mb is a finding.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "fuzz_support.hpp"
#include "treelora/io/safetensors.hpp"

namespace {

using namespace treelora;

void check(bool condition) {
  if (!condition) std::abort();
}

void exercise(const safetensors_file& file, std::size_t size) {
  safetensors_writer again;
  if (file.has_metadata()) again.set_metadata(file.metadata());
  for (const auto& t : file.tensors()) {
    const auto bytes = file.bytes(t.name);
    check(t.end >= t.begin && t.byte_size() == t.numel() * dtype_size(t.dtype));
    check(8 + file.header_size() + t.end <= size);
    check(bytes.size() == t.byte_size());
    if (t.dtype == safetensors_dtype::F32 || t.dtype == safetensors_dtype::F16 || t.dtype == safetensors_dtype::BF16 ||
        t.dtype == safetensors_dtype::F64)
      check(file.to_float(t.name).size() == t.numel());
    again.add(t.name, t.dtype, t.shape, bytes);
  }
  static const fuzzing::scratch_file rewritten("safetensors_rewritten");
  const std::string blob = again.serialize();
  rewritten.write(blob.data(), blob.size());
  const safetensors_file back(rewritten.path());  // a writer's file that does not read is a finding (abort below)
  check(back.size() == file.size() && back.metadata() == file.metadata() && back.has_metadata() == file.has_metadata());
  for (const auto& t : file.tensors()) {
    const auto& u = back.info(t.name);
    const auto a = file.bytes(t.name), b = back.bytes(t.name);
    check(u.dtype == t.dtype && u.shape == t.shape && a.size() == b.size() &&
          (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzzing::scratch_file input("input.safetensors");
  input.write(data, size);
  std::optional<safetensors_file> file;
  try {
    file.emplace(input.path());
  } catch (const safetensors_error&) {
    return 0;
  }
  try {
    exercise(*file, size);
  } catch (const std::exception&) {  // a file that read must convert and rewrite without error
    std::abort();
  }
  return 0;
}
