// tests/fuzz/fuzz_idx.cpp: libFuzzer harness for read_idx, the reader of (gzip) IDX files (docs/fuzzing.md).
// Each input is read twice: as the file itself (a plain IDX file, or a gzip stream as the fuzzer mutates it,
// whose corruption zlib must report), and gzip-compressed by zlib (so every mutation of the IDX content also
// reaches the parser through the gzip path). read_idx is documented to throw std::runtime_error; any other
// exception, a crash, a leak, undefined behaviour, or an allocation over -malloc_limit_mb is a finding.
#include <zlib.h>

#include <cstdint>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "treelora/data/idx.hpp"

namespace {

void read(const std::filesystem::path& path) {
  try {
    const treelora::idx_array array = treelora::read_idx(path);
    // A successful read holds exactly the product of its extents, and the product of any of them fits in
    // index_t (callers multiply some: rows x columns of an image).
    treelora::index_t product = 1, nonzero_product = 1;
    for (treelora::index_t extent : array.dims)
      if (extent < 0 || __builtin_mul_overflow(product, extent, &product) ||
          __builtin_mul_overflow(nonzero_product, extent > 0 ? extent : 1, &nonzero_product))
        std::abort();
    if (array.dims.empty() || product != static_cast<treelora::index_t>(array.data.size())) std::abort();
  } catch (const std::runtime_error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const treelora::fuzzing::scratch_file plain("idx_plain"), gzip("idx.gz");
  plain.write(data, size);
  read(plain.path());
  gzFile file = gzopen(gzip.path().c_str(), "wb1");
  if (!file || (size > 0 && gzwrite(file, data, static_cast<unsigned>(size)) != static_cast<int>(size)) ||
      gzclose(file) != Z_OK)
    std::abort();
  read(gzip.path());
  return 0;
}
