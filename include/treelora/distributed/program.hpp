// treelora/distributed/program.hpp: what a training program needs to run as one process or, under mpirun,
// data-parallel (distributed/mpi.hpp), with the same code. The examples split_fashion_mnist and debian_text_stream
// use it for their --mpi option:
//
//   treelora::data_parallel_program job;
//   if (wants_mpi) job.start_mpi(argc, argv);    // throws where the program was built without treelora::mpi
//   options.communicator = job.communicator();   // runner_options: the MPI world, or one process
//   auto model = job.rank_0_first([&] { return load_or_prepare(cache); });  // rank 0 fills a shared cache first
//   if (job.reports()) write_reports(...);       // rank 0 prints and writes (the runner has it write checkpoints)
//
// Under MPI the other ranks' standard output goes to /dev/null (their errors still reach stderr) and their progress
// lines too (progress_output()). After an error on one rank, abort_job() ends every rank at once, where the others
// would otherwise wait for it until their collectives' deadline.
#pragma once

#include <cstdio>
#include <optional>
#include <type_traits>
#include <utility>

#include "treelora/core/error.hpp"
#include "treelora/distributed/communicator.hpp"
#if defined(TREELORA_HAS_MPI)
#include "treelora/distributed/mpi.hpp"
#endif

namespace treelora {

/// A program's data-parallel setting: one process until start_mpi.
class data_parallel_program {
 public:
  data_parallel_program() = default;
  ~data_parallel_program() {
    if (null_) std::fclose(null_);
  }
  data_parallel_program(const data_parallel_program&) = delete;
  data_parallel_program& operator=(const data_parallel_program&) = delete;

  /// Whether this program was built with treelora::mpi (TREELORA_HAS_MPI).
  static constexpr bool mpi_available() {
#if defined(TREELORA_HAS_MPI)
    return true;
#else
    return false;
#endif
  }

  /// Joins the MPI job mpirun started (a job of one process without mpirun). Collectives of training time out after
  /// `timeout_seconds`; waiting in rank_0_first does not.
  void start_mpi([[maybe_unused]] int& argc, [[maybe_unused]] char**& argv, [[maybe_unused]] double timeout_seconds = 600) {
#if defined(TREELORA_HAS_MPI)
    if (session_) throw_invalid_argument("data_parallel_program::start_mpi", "MPI is already started");
    session_.emplace(argc, argv);
    world_.emplace(MPI_COMM_WORLD, timeout_seconds);
    patient_.emplace(MPI_COMM_WORLD, 30.0 * 24 * 3600);
    communicator_ = *world_;
    if (world_->rank() != 0) {
      null_ = std::fopen("/dev/null", "w");
      if (!null_ || !std::freopen("/dev/null", "w", stdout))
        throw_runtime_error("data_parallel_program::start_mpi", concat("rank ", world_->rank(), ": cannot open /dev/null"));
    }
#else
    throw_invalid_argument("data_parallel_program::start_mpi",
                           "this program was built without MPI: install libopenmpi-dev and openmpi-bin (Debian), "
                           "configure with TREELORA_MPI=AUTO or ON and link treelora::mpi");
#endif
  }

  /// For runner_options::communicator: the MPI world after start_mpi, else one process.
  const any_communicator& communicator() const { return communicator_; }
  int rank() const { return communicator_.rank(); }
  int size() const { return communicator_.size(); }
  /// Whether this process prints and writes results: rank 0.
  bool reports() const { return communicator_.rank() == 0; }
  /// Where progress lines go: stderr on rank 0, /dev/null on the others.
  std::FILE* progress_output() const { return null_ ? null_ : stderr; }

  /// Runs `prepare` on rank 0 first and on the other ranks after it returned: for a step that fills a cache the others
  /// then read (pre-training a base model once, not once per rank). Returns what `prepare` returned on this rank.
  template <class Prepare>
  auto rank_0_first(Prepare&& prepare) {
    static_assert(!std::is_void_v<std::invoke_result_t<Prepare&>>, "rank_0_first: prepare must return its result");
    if (size() == 1) return prepare();
    if (rank() == 0) {
      auto result = prepare();
      wait_for_all();
      return result;
    }
    wait_for_all();
    return prepare();
  }

  /// After an error on this rank: ends every rank of an MPI job of several processes (exit status `code`); returns
  /// otherwise, so that the caller exits as it would have.
  void abort_job([[maybe_unused]] int code) const {
#if defined(TREELORA_HAS_MPI)
    if (session_ && size() > 1) mpi_session::abort(code);
#endif
  }

 private:
  void wait_for_all() {
#if defined(TREELORA_HAS_MPI)
    patient_->barrier();
#endif
  }

#if defined(TREELORA_HAS_MPI)
  std::optional<mpi_session> session_;
  std::optional<mpi_communicator> world_, patient_;
#endif
  any_communicator communicator_;
  std::FILE* null_ = nullptr;
};

}  // namespace treelora
