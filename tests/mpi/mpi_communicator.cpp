// The MPI communicator (distributed/mpi.hpp) and the helpers of distributed/communicator.hpp, run by every rank of
// `mpiexec -n N` (N = TREELORA_MPI_RANKS: 1, 2 and 3 in CTest): sums of floats, doubles and a backend tensor against
// the closed form, broadcasts from the last rank, barriers, and the refusals; single_process alongside.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <numeric>
#include <vector>

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/distributed/mpi.hpp"

using namespace treelora;

TEST_CASE("rank and size are those mpiexec started") {
  mpi_communicator world;
  const char* expected = std::getenv("TREELORA_MPI_RANKS");
  REQUIRE(expected != nullptr);
  CHECK(world.size() == std::atoi(expected));
  CHECK(world.rank() >= 0);
  CHECK(world.rank() < world.size());
}

TEST_CASE("all_reduce_sum of floats, doubles and a CPU tensor equals the closed form on every rank") {
  mpi_communicator world;
  const int n = world.size(), r = world.rank();
  const double ranks_sum = n * (n + 1) / 2.0;  // sum of (rank + 1)
  std::vector<float> f(1000);
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = float(r + 1) * float(i % 7);
  world.all_reduce_sum(std::span<float>(f));
  for (std::size_t i = 0; i < f.size(); ++i) CHECK(f[i] == float(ranks_sum * double(i % 7)));
  std::vector<double> d(3 << 20);  // 3 M doubles, 24 MB
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = double(r + 1) * double(i);
  world.all_reduce_sum(std::span<double>(d));
  bool all = true;
  for (std::size_t i = 0; i < d.size(); ++i) all = all && d[i] == ranks_sum * double(i);
  CHECK(all);
  cpu_backend<float> backend;
  std::vector<float> values(12);
  std::iota(values.begin(), values.end(), float(r));
  auto t = tensor<cpu_backend<float>>::from_host(backend, shape{3, 4}, values);
  all_reduce_sum(world, t);
  const auto host = t.to_host();
  for (std::size_t i = 0; i < host.size(); ++i) CHECK(host[i] == float(n * double(i) + n * (n - 1) / 2.0));
  std::vector<float> empty;
  world.all_reduce_sum(std::span<float>(empty));  // nothing to sum: still a valid collective
}

TEST_CASE("broadcasts from the last rank reach every rank") {
  mpi_communicator world;
  const int root = world.size() - 1;
  double value = world.rank() == root ? 2.5 : -1.0;
  broadcast_value(world, value, root);
  CHECK(value == 2.5);
  std::vector<std::int64_t> ids;
  if (world.rank() == root) ids = {4, 8, 15, 16, 23, 42};
  broadcast_vector(world, ids, root);
  CHECK(ids == std::vector<std::int64_t>{4, 8, 15, 16, 23, 42});
  world.barrier();
  CHECK_THROWS_WITH_AS(world.broadcast({}, world.size()), doctest::Contains("root"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(mpi_communicator(MPI_COMM_WORLD, 0.0), doctest::Contains("timeout 0 s must be positive"),
                       std::invalid_argument);
}

TEST_CASE("share_of splits every global batch into contiguous shares that cover it once") {
  for (int size = 1; size <= 4; ++size)
    for (index_t rows = 0; rows <= 11; ++rows) {
      index_t next = 0;
      for (int rank = 0; rank < size; ++rank) {
        const row_share s = share_of(rows, rank, size);
        CHECK(s.first == next);
        CHECK(s.count >= rows / size);
        CHECK(s.count <= rows / size + 1);
        next += s.count;
      }
      CHECK(next == rows);
    }
  CHECK_THROWS_AS(share_of(4, 2, 2), std::invalid_argument);
  CHECK_THROWS_AS(share_of(-1, 0, 1), std::invalid_argument);
}

TEST_CASE("single_process: rank 0 of 1, every collective leaves the data as it is") {
  single_process one;
  std::vector<double> d = {1.5, -2.0};
  one.all_reduce_sum(std::span<double>(d));
  CHECK(d == std::vector<double>{1.5, -2.0});
  cpu_backend<float> backend;
  auto t = tensor<cpu_backend<float>>::from_host(backend, shape{2}, std::vector<float>{3, 4});
  all_reduce_sum(one, t);
  CHECK(t.to_host() == std::vector<float>{3, 4});
  std::vector<int> v = {7};
  broadcast_vector(one, v);
  CHECK(v == std::vector<int>{7});
  CHECK_THROWS_WITH_AS(one.broadcast({}, 1), doctest::Contains("root 1"), std::invalid_argument);
}

int main(int argc, char** argv) {
  mpi_session session(argc, argv);
  doctest::Context context(argc, argv);
  return context.run();
}
