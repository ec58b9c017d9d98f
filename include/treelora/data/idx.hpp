// treelora/data/idx.hpp: reading and writing gzip-compressed IDX files (the MNIST / Fashion-MNIST format).
// An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte, the only type supported here), a rank byte,
// `rank` big-endian uint32 extents, then the product of the extents in bytes. zlib's gzread also reads an
// uncompressed file transparently. Every failure throws std::runtime_error naming the path and what was wrong.
// Needs zlib (link ZLIB::ZLIB).
#pragma once

#include <zlib.h>

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

namespace detail {
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
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw_runtime_error(where, concat(path.string(), ": no such file"));
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
  std::size_t total = 1;
  for (int i = 0; i < rank; ++i) {
    std::array<std::uint8_t, 4> b{};
    if (file.read(b.data(), 4, where) != 4)
      throw_runtime_error(where, concat(path.string(), ": truncated header (extent ", i, " of ", rank, " missing)"));
    const std::uint32_t extent = (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
    out.dims.push_back(static_cast<index_t>(extent));
    total *= extent;
    if (total > (std::size_t(1) << 34)) throw_runtime_error(where, concat(path.string(), ": implausible size in header"));
  }
  out.data.resize(total);
  const std::size_t got = file.read(out.data.data(), total, where);
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
  for (index_t d : dims) {
    if (d < 0 || d > 0xffffffffLL) throw_invalid_argument(where, concat("extent ", d, " does not fit in 32 bits"));
    total *= static_cast<std::size_t>(d);
  }
  if (dims.empty() || dims.size() > 255 || total != data.size())
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
