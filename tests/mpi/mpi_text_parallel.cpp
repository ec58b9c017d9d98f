// Data-parallel training of a language model (strategy/text_runner.hpp) under `mpiexec -n N`: each rank takes its
// share of every global batch, weighted by its counted answer tokens, and the result must be the single-process
// run's, which each rank also trains as the reference. In double precision only the order of the sums differs:
//   - SeqLoRA: the trained parameters agree to 1e-10 relative, the accuracy matrices exactly;
//   - InfLoRA and DualLoRA: each rank forwards only its batches in the statistics pass and the collected covariances
//     are summed over the ranks (training_context::sum_over_ranks); their bases come from a symmetric eigenproblem
//     of that sum, so the runs agree to 1e-8;
//   - a checkpoint written by N - 1 ranks (a sub-communicator) resumes on N ranks.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "treelora/distributed/mpi.hpp"
#include "treelora/strategy/duallora.hpp"
#include "treelora/strategy/inflora.hpp"
#include "treelora/treelora.hpp"

#include "mpi_test_support.hpp"

#include "../letters_stream.hpp"

using namespace treelora;
using namespace treelora::testing::letters_stream;
using D = cpu_backend<double>;

namespace {

auto adam_at(double lr) {
  return [lr](parameter_list<D> p) { return adam<D>(std::move(p), {.learning_rate = lr}); };
}

using testing::relative_difference;
using testing::same_matrix;
using testing::trained_values;

/// The world communicator, counting the values this rank sums (a data-parallel run that summed nothing would not have
/// been data-parallel, and its agreement with one process would prove nothing).
struct counting {
  mpi_communicator& world;
  std::size_t summed = 0;
  int rank() const { return world.rank(); }
  int size() const { return world.size(); }
  void all_reduce_sum(std::span<float> v) { summed += v.size(), world.all_reduce_sum(v); }
  void all_reduce_sum(std::span<double> v) { summed += v.size(), world.all_reduce_sum(v); }
  void broadcast(std::span<std::byte> bytes, int root) { world.broadcast(bytes, root); }
  void barrier() { world.barrier(); }
};

const runner_options options{.epochs_per_task = 2, .batch_size = 8, .eval_batch_size = 4, .seed = 2};

/// Trains model type M with strategy S in one process and data-parallel on `world`; checks that they agree within
/// `tolerance` (parameters, relative), with equal matrices and per-task losses, and that every rank holds rank 0's
/// parameters bit for bit; the held-out losses, split over the ranks, are one process's.
template <class M, class S, class MakeModel, class MakeStrategy>
void compare(mpi_communicator& world, MakeModel make_model, MakeStrategy make_strategy, double tolerance) {
  const token_stream stream = make_stream(20, 6);
  D backend;
  M alone = make_model(backend);
  S s1 = make_strategy();
  held_out_loss alone_losses(alone, stream, 4, true);
  const run_result expected = run_stream(alone, stream, s1, adam_at(1e-2), options, alone_losses);
  M shared = make_model(backend);
  S s2 = make_strategy();
  runner_options parallel = options;
  counting counted{world};
  parallel.communicator = counted;
  held_out_loss shared_losses(shared, stream, 4, true, parallel.communicator);  // task j's losses from rank j % N
  const run_result got = run_stream(shared, stream, s2, adam_at(1e-2), parallel, shared_losses);
  // at least every step's gradients (and every trainable value is one of them)
  CHECK(counted.summed >= std::size_t(got.steps) * trained_values(shared).size() / 4);
  MESSAGE("summed ", counted.summed, " values over ", got.steps, " steps");
  CHECK(got.steps == expected.steps);
  if constexpr (requires { shared.factorized_adapters().front()->covariance(); }) {  // the statistics pass: every row counted once, over the ranks
    const auto mine = shared.factorized_adapters(), reference = alone.factorized_adapters();
    REQUIRE(mine.size() == reference.size());
    for (std::size_t i = 0; i < mine.size(); ++i) {
      CHECK(mine[i]->covariance().rows() == reference[i]->covariance().rows());
      CHECK(mine[i]->covariance().rows() > 0);
    }
  }
  CHECK(same_matrix(got.task_il, expected.task_il));
  const index_t n = alone_losses.losses().tasks();
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) {
      INFO("held-out loss after task ", i, " on task ", j);
      CHECK(shared_losses.losses()(i, j) == doctest::Approx(alone_losses.losses()(i, j)).epsilon(10 * tolerance));
    }
  for (std::size_t i = 0; i < expected.final_loss.size(); ++i)
    CHECK(got.final_loss[i] == doctest::Approx(expected.final_loss[i]).epsilon(tolerance));
  const auto a = trained_values(shared);
  MESSAGE(got.method, " on ", world.size(), " ranks: parameters differ from one process by ", relative_difference(a, trained_values(alone)),
          " (relative)");
  CHECK(relative_difference(a, trained_values(alone)) < tolerance);
  std::vector<double> root = a;
  broadcast_vector(world, root, 0);
  CHECK(root == a);
}

}  // namespace

TEST_CASE("data-parallel SeqLoRA on a language model equals the single-process run") {
  mpi_communicator world;
  compare<llama<D>, seq_lora>(world, [](D& b) { return llama<D>(b, tiny()); }, [] { return seq_lora(); }, 1e-10);
}

TEST_CASE("data-parallel InfLoRA and DualLoRA: the statistics pass is split over the ranks and summed") {
  mpi_communicator world;
  compare<llama<D, inflora>, inflora_strategy>(
      world, [](D& b) { return llama<D, inflora>(b, tiny({"k_proj", "v_proj"}), {.rank = 2, .seed = 1}); },
      [] { return inflora_strategy({.collection_batch_size = 4}); }, 1e-8);
  compare<llama<D, dual_lora>, dual_lora_strategy<D>>(
      world, [](D& b) { return llama<D, dual_lora>(b, tiny(), {.rank = 2, .feature = dual_feature::every_token, .seed = 1}); },
      [] {
        return dual_lora_strategy<D>({.task_score = dual_task_score::energy, .task_layers = dual_task_layers::last,
                                      .calibration = dual_calibration::none, .collection_batch_size = 4});
      },
      1e-8);
}

TEST_CASE("a checkpoint written by N - 1 data-parallel ranks resumes on N ranks") {
  mpi_communicator world;
  REQUIRE(world.size() >= 2);
  const auto folder = std::filesystem::temp_directory_path() / concat("treelora_mpi_text_parallel_", ::getppid());
  if (world.rank() == 0) std::filesystem::create_directories(folder);
  world.barrier();
  token_stream stream = make_stream(20, 6);
  stream.tasks.push_back(make_task("copy again", false, 3, 20, 6));
  D backend;
  llama<D> alone(backend, tiny());
  seq_lora s0;
  const run_result expected = run_stream(alone, stream, s0, adam_at(1e-2), options);

  runner_options first = options;
  first.checkpoint = folder / "run.safetensors";
  // ranks 0 .. N-2 train tasks 0 and 1 and stop before task 2; the last rank waits
  MPI_Comm fewer;
  const bool in_fewer = world.rank() < world.size() - 1;
  REQUIRE(MPI_Comm_split(MPI_COMM_WORLD, in_fewer ? 0 : MPI_UNDEFINED, world.rank(), &fewer) == MPI_SUCCESS);
  if (in_fewer) {
    mpi_communicator sub(fewer);
    first.communicator = sub;
    struct stop_before_task {
      void on_task_begin(const training_context& c) const {
        if (c.task == 2) throw std::runtime_error("stopped on purpose");
      }
    } stop;
    llama<D> model(backend, tiny());
    seq_lora s;
    CHECK_THROWS_WITH(run_stream(model, stream, s, adam_at(1e-2), first, stop), doctest::Contains("stopped on purpose"));
    first.communicator = {};
    MPI_Comm_free(&fewer);
  }
  world.barrier();
  runner_options resumed = options;
  resumed.checkpoint = first.checkpoint;
  resumed.resume = true;
  resumed.communicator = world;
  llama<D> model(backend, tiny());
  seq_lora s;
  const run_result got = run_stream(model, stream, s, adam_at(1e-2), resumed);
  CHECK(same_matrix(got.task_il, expected.task_il));
  CHECK(relative_difference(trained_values(model), trained_values(alone)) < 1e-10);
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(folder);
}

int main(int argc, char** argv) {
  mpi_session session(argc, argv);
  doctest::Context context(argc, argv);
  return context.run();
}
