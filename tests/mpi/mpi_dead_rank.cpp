// mpi_dead_rank hang|exit|hang-sum: rank 1 hangs (sleeps 100 s) or exits without MPI_Finalize; rank 0 waits in a
// barrier with a 2 s deadline, or (hang-sum) in a sum of 1 M floats, large enough to take the blocking path whose
// non-blocking barrier carries the deadline. The job must end with an error, not hang (tests/mpi/dead_rank.cmake).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "treelora/distributed/mpi.hpp"

int main(int argc, char** argv) {
  treelora::mpi_session session(argc, argv);
  try {
    const std::string fault = argc > 1 ? argv[1] : "";
    if (fault != "hang" && fault != "exit" && fault != "hang-sum")
      throw std::invalid_argument("usage: mpi_dead_rank hang|exit|hang-sum");
    treelora::mpi_communicator world(MPI_COMM_WORLD, 2.0);
    if (world.rank() == 1) {
      if (fault == "exit") std::_Exit(7);
      std::this_thread::sleep_for(std::chrono::seconds(100));
    }
    if (fault == "hang-sum") {
      std::vector<float> values(1 << 20, 1.0f);
      world.all_reduce_sum(std::span<float>(values));
    } else {
      world.barrier();
    }
    std::printf("rank %d: the %s completed, which it must not\n", world.rank(), fault == "hang-sum" ? "sum" : "barrier");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_dead_rank: %s\n", e.what());
    std::fflush(stderr);
    treelora::mpi_session::abort(3);
  }
}
