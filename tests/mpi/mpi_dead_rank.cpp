// mpi_dead_rank hang|exit: rank 1 hangs (sleeps 100 s) or exits without MPI_Finalize; rank 0 waits in a barrier with
// a 2 s deadline. The job must end with an error, not hang (tests/mpi/dead_rank.cmake).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "treelora/distributed/mpi.hpp"

int main(int argc, char** argv) {
  treelora::mpi_session session(argc, argv);
  try {
    const std::string fault = argc > 1 ? argv[1] : "";
    if (fault != "hang" && fault != "exit") throw std::invalid_argument("usage: mpi_dead_rank hang|exit");
    treelora::mpi_communicator world(MPI_COMM_WORLD, 2.0);
    if (world.rank() == 1) {
      if (fault == "exit") std::_Exit(7);
      std::this_thread::sleep_for(std::chrono::seconds(100));
    }
    world.barrier();
    std::printf("rank %d: the barrier completed, which it must not\n", world.rank());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_dead_rank: %s\n", e.what());
    std::fflush(stderr);
    treelora::mpi_session::abort(3);
  }
}
