// tests/fuzz/fuzz_backbone_cache.cpp: libFuzzer harness for load_backbone, the reader of the ViT backbone
// cache (docs/fuzzing.md). Each input is loaded twice: as it is (the header checks: magic, version, payload
// size, checksum), and with its size and checksum fields recomputed, since a fuzzer cannot forge an FNV-1a
// checksum while a crafted file (or a writer bug) can: the mutations then reach the payload parser. The
// expected fingerprint is the file's own, so the parser is always reached. load_backbone is documented to
// throw backbone_cache_error (a std::runtime_error); any other exception, a crash, a leak, undefined
// behaviour, or an allocation over -malloc_limit_mb is a finding.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz_support.hpp"
#include "treelora/models/pretrain.hpp"

namespace {

void load(const std::vector<char>& file, std::uint64_t expected) {
  static const treelora::fuzzing::scratch_file scratch("backbone.bin");
  scratch.write(file.data(), file.size());
  try {
    const auto state = treelora::load_backbone(scratch.path(), expected);
    // A successful load holds, for every parameter, exactly the values its shape counts.
    for (const auto& p : state)
      if (p.value_shape.numel() != static_cast<treelora::index_t>(p.values.size())) std::abort();
  } catch (const treelora::backbone_cache_error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<char> file(data, data + size);
  std::uint64_t fingerprint = 0;
  if (size >= 24) std::memcpy(&fingerprint, data + 16, sizeof(fingerprint));
  load(file, fingerprint);
  if (size >= 40) {  // bytes 24..31: payload size, 32..39: checksum (include/treelora/models/pretrain.hpp)
    const std::uint64_t payload = size - 40;
    const std::uint64_t checksum = treelora::detail::cache_checksum(fingerprint, file.data() + 40, size - 40);
    std::memcpy(file.data() + 24, &payload, sizeof(payload));
    std::memcpy(file.data() + 32, &checksum, sizeof(checksum));
    load(file, fingerprint);
  }
  return 0;
}
