// bench_safetensors: loading speed of safetensors_file (memory-mapped, validated, converted to float) against a
// plain read() of the same file into memory, on a ~256 MB file written once to a temporary folder (so both read
// from the page cache: this measures the reader, not the disk). Both sides are timed interleaved in the same
// benchmark and medians are reported: GB/s of file bytes for each, and safetensors_over_read (1 = as fast as read()).
//   F32: one 256 MiB tensor (64 Mi floats), the memcpy path.   BF16: one 128 Mi-element tensor converted to float.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <treelora/io/safetensors.hpp>

using namespace treelora;
namespace fs = std::filesystem;

namespace {

using bench::median;
using bench::now;

/// The benchmark file for `dtype`, written on first use into the system temp folder and removed at exit.
const fs::path& bench_file(safetensors_dtype dtype) {
  struct file {
    fs::path path;
    explicit file(safetensors_dtype d) {
      path = fs::temp_directory_path() / concat("treelora-bench-", ::getpid(), "-", dtype_name(d), ".safetensors");
      const std::uint64_t bytes = std::uint64_t(256) << 20, count = bytes / dtype_size(d);
      std::vector<float> values(count);
      for (std::uint64_t i = 0; i < count; ++i) values[i] = static_cast<float>(i % 1000) * 0.001f - 0.5f;
      safetensors_writer().add("weight", {count / 1024, 1024}, std::span<const float>(values), d).write(path);
    }
    ~file() {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
  };
  static file f32(safetensors_dtype::F32), bf16(safetensors_dtype::BF16);
  return dtype == safetensors_dtype::F32 ? f32.path : bf16.path;
}

/// The whole file into memory with read() (what any loader has to do at least).
std::vector<char> plain_read(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path.string());
  std::vector<char> out(fs::file_size(path));
  std::size_t done = 0;
  while (done < out.size()) {
    const ::ssize_t got = ::read(fd, out.data() + done, out.size() - done);
    if (got <= 0) {
      ::close(fd);
      throw std::runtime_error("read failed: " + path.string());
    }
    done += static_cast<std::size_t>(got);
  }
  ::close(fd);
  return out;
}

void load(benchmark::State& state, safetensors_dtype dtype) {
  const fs::path& path = bench_file(dtype);
  const double gigabytes = static_cast<double>(fs::file_size(path)) / 1e9;
  std::vector<double> ours, reads;
  for (auto _ : state) {
    double start = now();
    {
      const safetensors_file file(path);  // map + validate the header
      auto values = file.to_float("weight");
      benchmark::DoNotOptimize(values.data());
    }
    ours.push_back(now() - start);
    start = now();
    {
      auto bytes = plain_read(path);
      benchmark::DoNotOptimize(bytes.data());
    }
    reads.push_back(now() - start);
  }
  state.counters["safetensors_GBps"] = gigabytes / median(ours);
  state.counters["read_GBps"] = gigabytes / median(reads);
  state.counters["safetensors_over_read"] = median(reads) / median(ours);
}

}  // namespace

BENCHMARK_CAPTURE(load, f32_256MiB, safetensors_dtype::F32)->Unit(benchmark::kMillisecond)->Iterations(15)->UseRealTime();
BENCHMARK_CAPTURE(load, bf16_256MiB, safetensors_dtype::BF16)->Unit(benchmark::kMillisecond)->Iterations(15)->UseRealTime();
