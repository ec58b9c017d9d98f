// tests/gpu/test_nccl.cu: the NCCL communicator (distributed/nccl.hpp) under mpiexec, one GPU per rank. Without a
// device (or with fewer devices than ranks) the GPU cases report that they skipped; the refusals run everywhere.
//   - sums of host floats and doubles, a broadcast from the last rank, a barrier: against closed forms;
//   - a cuda_backend tensor summed in place on its own stream (no host copy) against the closed form;
//   - a device outside the machine's, a non-positive timeout, a tensor on another device: refused with a message.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <numeric>
#include <vector>

#include "cuda_test_support.hpp"
#include "treelora/backend/cuda_backend.hpp"
#include "treelora/distributed/mpi.hpp"
#include "treelora/distributed/nccl.hpp"

using namespace treelora;

namespace {
/// Empty when every rank has its own device, else why the GPU cases skip.
std::string why_skip(const mpi_communicator& world) {
  if (!testing::cuda_available()) return "no CUDA device (" + testing::cuda_unavailable_reason() + ")";
  int devices = 0;
  cudaGetDeviceCount(&devices);
  if (devices < world.size()) return concat(world.size(), " ranks need as many CUDA devices, this machine has ", devices);
  return {};
}
}  // namespace

TEST_CASE("nccl_communicator refuses a device it does not have and a non-positive timeout") {
  mpi_communicator world;
  CHECK_THROWS_WITH(nccl_communicator(world, -1), doctest::Contains("CUDA"));
  CHECK_THROWS_WITH(nccl_communicator(world, 4096), doctest::Contains("CUDA"));
  CHECK_THROWS_WITH_AS(nccl_communicator(world, 0, 0.0), doctest::Contains("timeout 0 s must be positive"), std::invalid_argument);
}

TEST_CASE("nccl_communicator sums host values, broadcasts, and waits at a barrier") {
  mpi_communicator world;
  if (const auto reason = why_skip(world); !reason.empty()) {
    MESSAGE("skipped: " << reason);
    return;
  }
  nccl_communicator gpus(world, world.rank());
  CHECK(gpus.rank() == world.rank());
  CHECK(gpus.size() == world.size());
  const int n = world.size();
  std::vector<float> f(1000);
  std::vector<double> d(3'000'000);  // 24 MB: more than one NCCL chunk
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = float(world.rank() + 1) * float(i % 7);
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = double(world.rank() + 1) + 1e-3 * double(i % 11);
  gpus.all_reduce_sum(std::span<float>(f));
  gpus.all_reduce_sum(std::span<double>(d));
  const double ranks_sum = n * (n + 1) / 2.0;
  for (std::size_t i = 0; i < f.size(); ++i) REQUIRE(f[i] == doctest::Approx(ranks_sum * double(i % 7)));
  for (std::size_t i = 0; i < d.size(); ++i) REQUIRE(d[i] == doctest::Approx(ranks_sum + n * 1e-3 * double(i % 11)));
  std::vector<int> value(5, world.rank());
  gpus.broadcast(std::as_writable_bytes(std::span<int>(value)), n - 1);
  for (int v : value) CHECK(v == n - 1);
  gpus.barrier();
  CHECK_THROWS_WITH_AS(gpus.broadcast(std::as_writable_bytes(std::span<int>(value)), n), doctest::Contains("not a rank"),
                       std::invalid_argument);
}

TEST_CASE("a cuda_backend tensor is summed in place on the device") {
  mpi_communicator world;
  if (const auto reason = why_skip(world); !reason.empty()) {
    MESSAGE("skipped: " << reason);
    return;
  }
  nccl_communicator gpus(world, world.rank());
  cuda_context context(world.rank());
  cuda_backend<float> backend(context);
  std::vector<float> host(4096 + 3);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = float(world.rank() + 1) * float(i % 5);
  auto t = tensor<cuda_backend<float>>::from_host(backend, shape{index_t(host.size())}, host);
  all_reduce_sum(gpus, t);  // distributed/nccl.hpp's overload: on the backend's stream
  const auto summed = t.to_host();
  const double ranks_sum = world.size() * (world.size() + 1) / 2.0;
  for (std::size_t i = 0; i < summed.size(); ++i) REQUIRE(summed[i] == doctest::Approx(ranks_sum * double(i % 5)));
  int devices = 0;
  cudaGetDeviceCount(&devices);
  if (devices > world.size()) {  // a tensor on a device that is not the communicator's
    cuda_context other(world.size());
    cuda_backend<float> elsewhere(other);
    auto u = tensor<cuda_backend<float>>::from_host(elsewhere, shape{3}, std::vector<float>{1, 2, 3});
    CHECK_THROWS_WITH_AS(all_reduce_sum(gpus, u), doctest::Contains("the NCCL communicator on device"), std::invalid_argument);
  }
}

int main(int argc, char** argv) {
  mpi_session session(argc, argv);
  doctest::Context context(argc, argv);
  return context.run();
}
