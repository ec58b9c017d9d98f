// treelora/io/atomic_file.hpp: every file treelora writes goes through here, so that a reader sees either the old
// file or the complete new one, never a half-written one, and a failed write is an error, never a silent loss.
//
//   1. write the bytes to a unique temporary file in the same folder (".<name>.tmp-<pid>-<counter>-<random>",
//      created with O_EXCL, so concurrent writers never share one),
//   2. flush and fsync it, check its size, close it (close reports delayed write errors, e.g. a full disk),
//   3. rename it over the destination (atomic within one file system) and fsync the folder.
// On any failure the temporary file is removed and std::runtime_error names the destination and the cause.
// POSIX only (open, write, fsync, rename).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>

#include "treelora/core/error.hpp"

namespace treelora {

namespace detail {
inline std::string errno_text(int code) { return std::strerror(code); }

/// A unique temporary name beside `path`: pid, a process-wide counter and a clock-derived value.
inline std::filesystem::path temporary_sibling(const std::filesystem::path& path) {
  static std::atomic<unsigned long long> counter{0};
  const auto ticks = static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
  const std::string name = concat(".", path.filename().string(), ".tmp-", ::getpid(), "-", counter.fetch_add(1), "-",
                                  std::hex, (ticks * 0x9e3779b97f4a7c15ULL) >> 32);
  return path.parent_path() / name;
}

class unique_fd {
 public:
  explicit unique_fd(int fd) : fd_(fd) {}
  ~unique_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  int get() const { return fd_; }
  /// Closes now and reports close's error (0 when fine).
  int close() {
    const int fd = fd_;
    fd_ = -1;
    return fd >= 0 && ::close(fd) != 0 ? errno : 0;
  }

 private:
  int fd_;
};
}  // namespace detail

/// Writes `contents` to `path` atomically (see the top of this file). The folder must exist.
inline void write_file_atomically(const std::filesystem::path& path, std::string_view contents) {
  constexpr std::string_view where = "write_file_atomically";
  if (path.filename().empty()) throw_invalid_argument(where, concat("'", path.string(), "' names no file"));
  const auto folder = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  std::filesystem::path temporary = detail::temporary_sibling(path);
  int fd = -1;
  for (int attempt = 0; attempt < 16; ++attempt) {  // O_EXCL: a name another writer holds is never reused
    fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST) break;
    temporary = detail::temporary_sibling(path);
  }
  if (fd < 0)
    throw_runtime_error(where, concat(path.string(), ": cannot create a temporary file in ", folder.string(), " (",
                                      detail::errno_text(errno), ")"));
  detail::unique_fd file(fd);
  const auto fail = [&](const std::string& what, int code) {
    file.close();
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw_runtime_error(where, concat(path.string(), ": ", what, " (", detail::errno_text(code), ")"));
  };
  std::size_t done = 0;
  while (done < contents.size()) {
    const ::ssize_t wrote = ::write(file.get(), contents.data() + done, contents.size() - done);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      fail(concat("write failed after ", done, " of ", contents.size(), " bytes"), errno);
    }
    if (wrote == 0) fail(concat("write made no progress after ", done, " of ", contents.size(), " bytes"), EIO);
    done += static_cast<std::size_t>(wrote);
  }
  if (::fsync(file.get()) != 0) fail("fsync failed", errno);
  struct stat info {};
  if (::fstat(file.get(), &info) != 0) fail("cannot check the written file", errno);
  if (static_cast<std::size_t>(info.st_size) != contents.size())
    fail(concat("the written file has ", info.st_size, " bytes, expected ", contents.size()), EIO);
  if (const int code = file.close(); code != 0) fail("close failed", code);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int code = errno;
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw_runtime_error(where, concat(path.string(), ": cannot rename the temporary file into place (",
                                      detail::errno_text(code), ")"));
  }
  // Make the rename itself durable; a folder that cannot be opened or synced (some file systems) is not an error.
  if (const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

/// Writes what `produce(stream)` writes to `path` atomically; an exception from `produce` leaves `path` untouched.
inline void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& produce) {
  std::ostringstream buffer;
  produce(buffer);
  if (!buffer) throw_runtime_error("write_file_atomically", concat(path.string(), ": producing the contents failed"));
  write_file_atomically(path, std::string_view(buffer.view()));
}

/// Creates `folder` (and its parents) and checks that a file can be written in it, by writing and removing a
/// probe file. Throws std::runtime_error naming the folder and the cause; call it before long work.
inline void require_writable_folder(const std::filesystem::path& folder, std::string_view what = "output folder") {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) throw_runtime_error("require_writable_folder", concat(what, " ", folder.string(), ": cannot create it (", ec.message(), ")"));
  if (!std::filesystem::is_directory(folder, ec))
    throw_runtime_error("require_writable_folder", concat(what, " ", folder.string(), " is not a folder"));
  const auto probe = folder / concat(".treelora-write-probe-", ::getpid());
  try {
    write_file_atomically(probe, std::string_view("probe\n"));
  } catch (const std::runtime_error& e) {
    throw_runtime_error("require_writable_folder", concat(what, " ", folder.string(), " is not writable: ", e.what()));
  }
  std::filesystem::remove(probe, ec);
}

}  // namespace treelora
