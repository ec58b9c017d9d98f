// treelora/distributed/mpi.hpp: the Communicator (distributed/communicator.hpp) of processes started by mpirun, on
// MPI (Debian: libopenmpi-dev, openmpi-bin). Link treelora::mpi (CMake, TREELORA_MPI AUTO/ON/OFF), which defines
// TREELORA_HAS_MPI and brings MPI's headers and library.
//
//   treelora::mpi_session session(argc, argv);            // MPI_Init_thread once per process, MPI_Finalize at exit
//   treelora::mpi_communicator world;                      // MPI_COMM_WORLD, collectives time out after 600 s
//   world.all_reduce_sum(std::span<float>(gradient));    // every rank ends with the sum
//
// Every collective is started non-blocking and waited for with a deadline (a large sum: a non-blocking barrier first,
// then the faster blocking MPI_Allreduce): when another rank has died or hangs, the waiting ranks throw
// std::runtime_error ("treelora::mpi_communicator: all_reduce_sum of 24576 floats on rank 0 of 2 did not complete
// within 600 s: ...") instead of waiting forever; a program then ends with mpi_session::abort, which brings every
// rank down. (mpirun itself also stops the job when a rank exits without MPI_Finalize.) MPI errors
// are returned, not fatal (MPI_ERRORS_RETURN), and thrown with MPI's own message.
#pragma once

#if !defined(TREELORA_HAS_MPI)
#error "treelora/distributed/mpi.hpp needs MPI: install libopenmpi-dev and openmpi-bin (Debian) and link treelora::mpi"
#endif

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>

#include "treelora/core/error.hpp"
#include "treelora/distributed/communicator.hpp"

namespace treelora {

namespace detail {
inline void mpi_check(int code, std::string_view where, std::string_view what) {
  if (code == MPI_SUCCESS) return;
  char message[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, message, &length);
  throw_runtime_error(where, concat(what, ": ", std::string(message, std::size_t(length))));
}
}  // namespace detail

/// MPI for the life of a process: initialises it (funneled threads: only the thread that made the session calls MPI)
/// unless something else already did, and finalises what it initialised.
class mpi_session {
 public:
  mpi_session(int& argc, char**& argv) { start(&argc, &argv); }
  mpi_session() { start(nullptr, nullptr); }
  ~mpi_session() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && !finalized) MPI_Finalize();
  }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;

  /// Ends every rank of the job with `code` (after an error on this rank: the others may be waiting for it).
  [[noreturn]] static void abort(int code = 1) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::abort();  // MPI_Abort does not return; should it, this process still ends
  }

 private:
  void start(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    detail::mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "mpi_session", "MPI_Init_thread");
    owner_ = true;
  }
  bool owner_ = false;
};

/// The Communicator of an MPI communicator (MPI_COMM_WORLD by default); an mpi_session must be alive.
class mpi_communicator {
 public:
  explicit mpi_communicator(MPI_Comm communicator = MPI_COMM_WORLD, double timeout_seconds = 600)
      : communicator_(communicator), timeout_(timeout_seconds) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) throw_invalid_argument("mpi_communicator", "MPI is not initialised: create an mpi_session first");
    if (!(timeout_seconds > 0))
      throw_invalid_argument("mpi_communicator", concat("timeout ", timeout_seconds, " s must be positive"));
    detail::mpi_check(MPI_Comm_set_errhandler(communicator_, MPI_ERRORS_RETURN), "mpi_communicator", "MPI_Comm_set_errhandler");
    detail::mpi_check(MPI_Comm_rank(communicator_, &rank_), "mpi_communicator", "MPI_Comm_rank");
    detail::mpi_check(MPI_Comm_size(communicator_, &size_), "mpi_communicator", "MPI_Comm_size");
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  double timeout_seconds() const { return timeout_; }

  void all_reduce_sum(std::span<float> values) { sum(values.data(), values.size(), MPI_FLOAT, "floats"); }
  void all_reduce_sum(std::span<double> values) { sum(values.data(), values.size(), MPI_DOUBLE, "doubles"); }

  void broadcast(std::span<std::byte> bytes, int root) {
    if (root < 0 || root >= size_)
      throw_invalid_argument("mpi_communicator::broadcast", concat("root ", root, " is not a rank of ", size_));
    for (std::size_t done = 0; done < bytes.size();) {
      const int count = int(std::min<std::size_t>(bytes.size() - done, INT_MAX));
      MPI_Request request;
      detail::mpi_check(MPI_Ibcast(bytes.data() + done, count, MPI_BYTE, root, communicator_, &request),
                        "mpi_communicator::broadcast", "MPI_Ibcast");
      wait(request, concat("broadcast of ", bytes.size(), " bytes from rank ", root));
      done += std::size_t(count);
    }
  }

  void barrier() {
    MPI_Request request;
    detail::mpi_check(MPI_Ibarrier(communicator_, &request), "mpi_communicator::barrier", "MPI_Ibarrier");
    wait(request, "barrier");
  }

 private:
  /// Below this many bytes a sum is one non-blocking MPI_Iallreduce waited for against the deadline. From it on, the
  /// ranks first meet at a non-blocking barrier (against the deadline), then sum with the blocking MPI_Allreduce: Open
  /// MPI's non-blocking collectives progress only while a rank tests them and use slower algorithms, so a 3.4 MB sum
  /// took 2.2 ms that way against 0.65 ms blocking on this 2-core machine (docs/scaling.md). Once every rank has reached
  /// the barrier, all are alive and inside the same sum; a rank that dies inside it ends the job through mpirun.
  static constexpr std::size_t blocking_from_bytes = 32 * 1024;

  template <class T>
  void sum(T* data, std::size_t n, MPI_Datatype type, const char* what) {
    const bool blocking = n * sizeof(T) >= blocking_from_bytes;
    if (blocking) {
      MPI_Request request;
      detail::mpi_check(MPI_Ibarrier(communicator_, &request), "mpi_communicator::all_reduce_sum", "MPI_Ibarrier");
      wait(request, concat("all_reduce_sum of ", n, " ", what, " (waiting for every rank)"));
    }
    for (std::size_t done = 0; done < n;) {  // MPI counts are int: large arrays go in pieces
      const int count = int(std::min<std::size_t>(n - done, INT_MAX));
      if (blocking) {
        detail::mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + done, count, type, MPI_SUM, communicator_),
                          "mpi_communicator::all_reduce_sum", "MPI_Allreduce");
      } else {
        MPI_Request request;
        detail::mpi_check(MPI_Iallreduce(MPI_IN_PLACE, data + done, count, type, MPI_SUM, communicator_, &request),
                          "mpi_communicator::all_reduce_sum", "MPI_Iallreduce");
        wait(request, concat("all_reduce_sum of ", n, " ", what));
      }
      done += std::size_t(count);
    }
  }

  /// Waits for `request` until the deadline: spins briefly, then sleeps between tests so that a waiting rank leaves
  /// its core to the ranks still computing.
  void wait(MPI_Request& request, const std::string& what) {
    const auto start = std::chrono::steady_clock::now();
    for (long tests = 0;; ++tests) {
      int done = 0;
      detail::mpi_check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "mpi_communicator", concat(what, ": MPI_Test"));
      if (done) return;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_)
        throw_runtime_error("mpi_communicator",
                            concat(what, " on rank ", rank_, " of ", size_, " did not complete within ", timeout_,
                                   " s: another rank has stopped, crashed or hangs (end the job with mpi_session::abort)"));
      if (tests > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  MPI_Comm communicator_;
  double timeout_;
  int rank_ = 0, size_ = 1;
};
static_assert(Communicator<mpi_communicator>);

}  // namespace treelora
