// tests/fuzz/fuzz_support.hpp: what the libFuzzer harnesses share: a scratch file per process for the readers
// that take a path.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace treelora::fuzzing {

/// A file named after the harness and the process (parallel workers do not collide), in memory (/dev/shm)
/// where the system has it: on a disk-backed temp directory the writes cost 15x the executions per second.
/// Removed when the process exits normally (a crash leaves it, next to the crashing input libFuzzer saves).
class scratch_file {
 public:
  explicit scratch_file(const std::string& name) {
    std::error_code ec;
    const std::filesystem::path memory = "/dev/shm";
    const auto directory =
        std::filesystem::is_directory(memory, ec) ? memory : std::filesystem::temp_directory_path();
    path_ = directory / ("treelora_fuzz_" + std::to_string(::getpid()) + "_" + name);
  }
  ~scratch_file() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  scratch_file(const scratch_file&) = delete;
  scratch_file& operator=(const scratch_file&) = delete;

  const std::filesystem::path& path() const { return path_; }

  /// Replaces the file's content with `size` bytes; aborts when it cannot (a broken harness, not a finding).
  void write(const void* data, std::size_t size) const {
    std::FILE* file = std::fopen(path_.c_str(), "wb");
    if (!file || (size > 0 && std::fwrite(data, 1, size, file) != size) || std::fclose(file) != 0) {
      std::perror(path_.c_str());
      std::abort();
    }
  }

 private:
  std::filesystem::path path_;
};

}  // namespace treelora::fuzzing
