// treelora/data/idx.hpp: reading and writing gzip-compressed IDX files (the MNIST / Fashion-MNIST format).
// An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte, the only type supported here), a rank
// byte, `rank` big-endian uint32 extents, then the product of the extents in bytes. zlib's gzread also reads
// an uncompressed file transparently. Every failure throws std::runtime_error naming the path and what was
// wrong. The reader trusts nothing in the file: the extents' product is checked for overflow and bounded
// (idx_max_bytes), and memory grows only as data arrives, so a short file cannot make it allocate what it
// promises (tests/fuzz/). Needs zlib (link ZLIB::ZLIB).
#pragma once

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "treelora/core/error.hpp"

namespace treelora {

/// An IDX array of unsigned bytes: its extents and its row-major data.
struct idx_array {
  std::vector<index_t> dims;
  std::vector<std::uint8_t> data;
};

/// The most data read_idx accepts, 16 GiB: far above any IDX data set in use (Fashion-MNIST's training images
/// are 47 MB), and a bound on what a header can ask for.
inline constexpr std::uint64_t idx_max_bytes = std::uint64_t(1) << 34;

namespace detail {
/// read_idx's buffer grows as the data arrives: first by this much, then by as much as has arrived, at most
/// idx_read_chunk_max_bytes at a time.
inline constexpr std::size_t idx_read_chunk_min_bytes = std::size_t(64) << 10;
inline constexpr std::size_t idx_read_chunk_max_bytes = std::size_t(16) << 20;

class gz_file {
 public:
  gz_file(const std::filesystem::path& path, const char* mode) : path_(path), file_(gzopen(path.c_str(), mode)) {}
  ~gz_file() {
    if (file_) gzclose(file_);
  }
  gz_file(const gz_file&) = delete;
  gz_file& operator=(const gz_file&) = delete;
  gzFile get() const { return file_; }
  explicit operator bool() const { return file_ != nullptr; }
  /// Reads up to n bytes; returns how many were read; throws on a zlib error (a corrupt stream).
  std::size_t read(void* out, std::size_t n, std::string_view where) {
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(file_, static_cast<char*>(out) + done, chunk);
      if (got < 0) fail(where);
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    // A stream cut short inside a gzip member reports Z_BUF_ERROR only after the last read.
    int code = Z_OK;
    gzerror(file_, &code);
    if (code != Z_OK && code != Z_STREAM_END) fail(where);
    return done;
  }
  [[noreturn]] void fail(std::string_view where) {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    throw_runtime_error(where, concat(path_.string(), ": corrupt or truncated gzip stream (",
                                      message ? message : "unknown zlib error", ")"));
  }

 private:
  std::filesystem::path path_;
  gzFile file_;
};
}  // namespace detail

/// Reads a (gzip) IDX file of unsigned bytes. `expected_rank` > 0 also checks the rank (3 for images, 1 for labels).
inline idx_array read_idx(const std::filesystem::path& path, int expected_rank = 0) {
  constexpr std::string_view where = "read_idx";
  if (expected_rank < 0 || expected_rank > 255)
    throw_invalid_argument(where, concat("expected rank ", expected_rank, " (0 for any, else 1 to 255)"));
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw_runtime_error(where, concat(path.string(), ": no such file"));
  if (std::filesystem::is_directory(status))
    throw_runtime_error(where, concat(path.string(), ": is a directory, not an IDX file"));
  detail::gz_file file(path, "rb");
  if (!file) throw_runtime_error(where, concat(path.string(), ": cannot open for reading"));
  std::array<std::uint8_t, 4> magic{};
  if (file.read(magic.data(), 4, where) != 4)
    throw_runtime_error(where, concat(path.string(), ": truncated header (fewer than 4 bytes)"));
  if (magic[0] != 0 || magic[1] != 0)
    throw_runtime_error(where, concat(path.string(), ": bad magic number (first bytes ", int(magic[0]), " ", int(magic[1]),
                                      ", expected 0 0): not an IDX file"));
  if (magic[2] != 0x08)
    throw_runtime_error(where, concat(path.string(), ": unsupported element type 0x", std::hex, int(magic[2]),
                                      " (only 0x08, unsigned byte, is supported)"));
  const int rank = magic[3];
  if (rank == 0 || (expected_rank > 0 && rank != expected_rank))
    throw_runtime_error(where, concat(path.string(), ": wrong rank ", rank, ", expected ",
                                      expected_rank > 0 ? expected_rank : 1, expected_rank > 0 ? "" : " or more"));
  idx_array out;
  for (int i = 0; i < rank; ++i) {
    std::array<std::uint8_t, 4> b{};
    if (file.read(b.data(), 4, where) != 4)
      throw_runtime_error(where, concat(path.string(), ": truncated header (extent ", i, " of ", rank, " missing)"));
    const std::uint32_t extent = (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
    out.dims.push_back(static_cast<index_t>(extent));
  }
  // Checked: 65536 x 262144 x 2^30 wraps to 0 in 64 bits. Zero extents count as 1 here, so a header cannot
  // pair an empty axis with others whose product overflows where the callers multiply them (rows x columns of
  // an image).
  std::uint64_t bound = 1;
  bool overflow = false, empty = false;
  for (index_t d : out.dims) {
    empty = empty || d == 0;
    overflow = overflow || __builtin_mul_overflow(
                               bound, std::max<std::uint64_t>(static_cast<std::uint64_t>(d), 1), &bound);
  }
  if (overflow || bound > idx_max_bytes) {
    std::string extents;
    for (index_t d : out.dims) extents += (extents.empty() ? "" : " x ") + std::to_string(d);
    if (overflow)
      throw_runtime_error(
          where, concat(path.string(), ": the extents ", extents, " overflow 64 bits (corrupt header)"));
    throw_runtime_error(where, concat(path.string(), ": the extents ", extents, " multiply to ", bound,
                                      " bytes", empty ? " (zero extents counted as 1)" : "",
                                      ", more than the limit of ", idx_max_bytes, " (16 GiB)"));
  }
  const std::size_t total = empty ? 0 : static_cast<std::size_t>(bound);
  // The buffer grows one chunk at a time, each only once the previous one has filled, so it never holds more
  // than twice the data that arrived plus 64 KiB, whatever the header promises (a gzip stream's length is not
  // known before its end, so the file's size cannot bound it).
  std::size_t got = 0;
  while (got < total) {
    const std::size_t step = std::min(
        total - got, std::clamp(got, detail::idx_read_chunk_min_bytes, detail::idx_read_chunk_max_bytes));
    out.data.resize(got + step);
    const std::size_t arrived = file.read(out.data.data() + got, step, where);
    got += arrived;
    if (arrived < step) break;
  }
  if (got != total)
    throw_runtime_error(where, concat(path.string(), ": size mismatch: the header promises ", total,
                                      " bytes of data, the file has ", got));
  std::uint8_t extra = 0;
  if (file.read(&extra, 1, where) != 0)
    throw_runtime_error(where, concat(path.string(), ": size mismatch: data continues past the ", total,
                                      " bytes the header promises"));
  return out;
}

/// Writes a gzip IDX file of unsigned bytes (tests and data preparation).
inline void write_idx(const std::filesystem::path& path, std::span<const index_t> dims, std::span<const std::uint8_t> data) {
  constexpr std::string_view where = "write_idx";
  std::size_t total = 1;
  bool overflow = false;
  for (index_t d : dims) {
    if (d < 0 || d > 0xffffffffLL) throw_invalid_argument(where, concat("extent ", d, " does not fit in 32 bits"));
    overflow = overflow || __builtin_mul_overflow(total, static_cast<std::size_t>(d), &total);
  }
  if (dims.empty() || dims.size() > 255 || overflow || total != data.size())
    throw_invalid_argument(where, concat(dims.size(), " extents for ", data.size(), " bytes"));
  detail::gz_file file(path, "wb");
  if (!file) throw_runtime_error(where, concat(path.string(), ": cannot open for writing"));
  std::vector<std::uint8_t> header{0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
  for (index_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<std::uint8_t>((d >> shift) & 0xff));
  auto put = [&](const std::uint8_t* bytes, std::size_t n) {
    if (n > 0 && gzwrite(file.get(), bytes, static_cast<unsigned>(n)) != static_cast<int>(n))
      throw_runtime_error(where, concat(path.string(), ": write failed"));
  };
  put(header.data(), header.size());
  put(data.data(), data.size());
}

}  // namespace treelora
