// Data-parallel training (runner_options::communicator) under `mpiexec -n N` (N = TREELORA_MPI_RANKS): every rank
// runs the same run_stream on its share of every global batch; the result must be the single-process run's with the
// same global batch. Each rank also trains the single-process run itself (the default communicator) as the reference.
// In double precision the only difference is the order of the gradient sums (each rank's mean times its weight,
// summed over the ranks and divided by the summed weight, against one mean over the whole batch): for SeqLoRA and
// TreeLoRA's reference mode, whose updates are smooth in the gradient, the trained parameters agree to 1e-10
// relative and the accuracy matrices exactly. TreeLoRA's paper mode pulls by sign(g_n - g_k) and its bandit takes an
// argmin: a last-bit difference can flip a sign or a choice and the run then takes another, equally valid path;
// there every rank must still hold the same state bit for bit, and the accuracies stay within a few points of the
// single process's. Also: DualLoRA with its stream (its feature passes split and gathered), a batch smaller than the
// number of ranks (a rank with an empty share), and a data-parallel checkpoint resumed by N ranks and by one process.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "treelora/distributed/mpi.hpp"
#include "treelora/strategy/duallora.hpp"
#include "treelora/treelora.hpp"

#include "../test_inflora_stream.hpp"
#include "mpi_test_support.hpp"

using namespace treelora;
using D = cpu_backend<double>;

namespace {

auto adam_1e2() {
  return [](parameter_list<D> p) { return adam<D>(std::move(p), {.learning_rate = 1e-2}); };
}

using testing::relative_difference;
using testing::same_matrix;
using testing::trained_values;

struct fixture {
  planted_hierarchy planted = make_planted_hierarchy({.train_per_task = 70, .test_per_task = 40, .seed = 3});
  mlp_config config{.inputs = 16, .hidden = 24, .classes = planted.stream.total_classes, .lora_rank = 3, .seed = 3};
};

/// The single-process run and the data-parallel run of strategy S; checks they agree (`smooth`: to rounding; else:
/// the same state on every rank, accuracies within 0.1).
template <class S, class MakeStrategy>
void compare(mpi_communicator& world, MakeStrategy make, runner_options options, bool smooth = true) {
  fixture f;
  D backend;
  mlp_classifier<D> alone(backend, f.config);
  S s1 = make();
  const run_result expected = run_stream(alone, f.planted.stream, s1, adam_1e2(), options);
  mlp_classifier<D> shared(backend, f.config);
  S s2 = make();
  options.communicator = world;
  const run_result got = run_stream(shared, f.planted.stream, s2, adam_1e2(), options);
  CHECK(got.steps == expected.steps);
  const auto a = trained_values(shared), b = trained_values(alone);
  if (smooth) {
    CHECK(same_matrix(got.task_il, expected.task_il));
    CHECK(same_matrix(got.class_il, expected.class_il));
    for (std::size_t i = 0; i < expected.final_loss.size(); ++i)
      CHECK(got.final_loss[i] == doctest::Approx(expected.final_loss[i]).epsilon(1e-10));
    CHECK(relative_difference(a, b) < 1e-10);
  } else {
    CHECK(std::abs(final_average_accuracy(got.task_il) - final_average_accuracy(expected.task_il)) < 0.1);
    // the matrices, too, are every rank's: rank 0's, broadcast, equal bit for bit
    std::vector<double> mine, root;
    for (index_t i = 0; i < got.task_il.tasks(); ++i)
      for (index_t j = 0; j < got.task_il.tasks(); ++j) mine.push_back(got.task_il(i, j));
    root = mine;
    broadcast_vector(world, root, 0);
    CHECK(std::memcmp(root.data(), mine.data(), mine.size() * sizeof(double)) == 0);
  }
  // every rank holds the same parameters: rank 0's, broadcast, equal bit for bit
  std::vector<double> root = a;
  broadcast_vector(world, root, 0);
  CHECK(root == a);
}

}  // namespace

TEST_CASE("data-parallel SeqLoRA and TreeLoRA reference equal the single-process run; paper mode keeps every rank the same") {
  mpi_communicator world;
  const runner_options options{.epochs_per_task = 2, .batch_size = 16, .seed = 5};
  compare<seq_lora>(world, [] { return seq_lora(); }, options);
  compare<tree_lora_reference<D>>(world, [] { return tree_lora_reference<D>({.seed = 7}); }, options);
  compare<tree_lora_paper<D>>(world, [] { return tree_lora_paper<D>({.seed = 7}); }, options, false);
}

TEST_CASE("data-parallel DualLoRA with its stream: the feature passes are split over the ranks and gathered exactly") {
  // Gaussian task statistics, drift compensation and a fitted temperature all read every training sample's CLS
  // features: each rank forwards its batches and one sum gives every rank every row. The gather itself is exact.
  // A run is not bit for bit one process's: the covariances are summed in another order, and DualLoRA's orthogonal
  // adapter takes the top directions of a covariance whose leading eigenvalues can be nearly equal, so a last-bit
  // difference can choose another direction (one process with another collection batch size, which only regroups
  // the same sums, already ends task 0 with another loss). What must hold: every rank the same state, every row
  // counted once, accuracies close.
  mpi_communicator world;
  const auto stream = treelora::testing::prototype_image_stream(3, 24, 12);
  const std::vector<dual_lora_options> variants = {
      {.collection_batch_size = 16},  // statistics score, local drift compensation: passes at task start and end
      {.task_layers = dual_task_layers::last, .fit_temperature = true, .collection_batch_size = 10},
  };
  for (const auto& o : variants) {
    D backend;
    const vit_config config = treelora::testing::tiny_vit(stream.total_classes, {"q", "v"});
    const runner_options plain{.epochs_per_task = 2, .batch_size = 16, .seed = 4};
    auto adam_at = [](parameter_list<D> p) { return adam<D>(std::move(p), {.learning_rate = 1e-2}); };
    vit<D, dual_lora> alone(backend, config, {.rank = 4});
    dual_lora_strategy<D> s1(stream, o);
    const run_result expected = run_stream(alone, stream, s1, adam_at, plain);
    vit<D, dual_lora> shared(backend, config, {.rank = 4});
    dual_lora_strategy<D> s2(stream, o);
    runner_options parallel = plain;
    parallel.communicator = world;
    const run_result got = run_stream(shared, stream, s2, adam_at, parallel);
    // every rank holds rank 0's parameters and matrices, bit for bit
    std::vector<double> mine = trained_values(shared);
    for (index_t i = 0; i < got.task_identity.tasks(); ++i)
      for (index_t j = 0; j <= i; ++j) mine.push_back(got.task_identity(i, j)), mine.push_back(got.class_il(i, j));
    std::vector<double> root = mine;
    broadcast_vector(world, root, 0);
    CHECK(std::memcmp(root.data(), mine.data(), mine.size() * sizeof(double)) == 0);
    CHECK(std::abs(final_average_accuracy(got.task_identity) - final_average_accuracy(expected.task_identity)) < 0.1);
    CHECK(std::abs(final_average_accuracy(got.class_il) - final_average_accuracy(expected.class_il)) < 0.1);
    CHECK(s2.statistics().tasks() == s1.statistics().tasks());
    CHECK(s2.statistics_layers() == s1.statistics_layers());
    // every training row counted once in the last task's covariances (a pass not split, or not summed, would not)
    const auto adapters = shared.factorized_adapters(), reference = alone.factorized_adapters();
    for (std::size_t i = 0; i < adapters.size(); ++i) CHECK(adapters[i]->covariance().rows() == reference[i]->covariance().rows());
    // the pass itself: split over the ranks and gathered, it is the one-process pass exactly
    training_context single{}, ranks{.rank = world.rank(), .ranks = world.size()};
    ranks.sum_over_ranks = [&](std::span<double> v) { world.all_reduce_sum(v); };
    for (const auto& task : stream.tasks) {
      const auto one = s2.features_pass(shared, task.train, single), many = s2.features_pass(shared, task.train, ranks);
      CHECK(one.labels == many.labels);
      for (std::size_t i = 0; i < one.cls.size(); ++i) {
        CHECK(one.cls[i] == many.cls[i]);
        CHECK(one.energies[i] == many.energies[i]);
        CHECK(one.energies[i].cols() > 0);
      }
    }
  }
}

TEST_CASE("a global batch smaller than the number of ranks: a rank with no rows only takes part in the sums") {
  mpi_communicator world;
  runner_options options{.epochs_per_task = 1, .batch_size = 2, .seed = 5};
  compare<seq_lora>(world, [] { return seq_lora(); }, options);
}

TEST_CASE("a data-parallel checkpoint (written by rank 0) resumes with the same ranks and with one process") {
  mpi_communicator world;
  const auto folder = std::filesystem::temp_directory_path() / concat("treelora_mpi_data_parallel_", ::getppid());
  if (world.rank() == 0) std::filesystem::create_directories(folder);
  world.barrier();
  fixture f;
  D backend;
  runner_options options{.epochs_per_task = 2, .batch_size = 16, .seed = 5, .checkpoint = folder / "run.safetensors"};
  mlp_classifier<D> alone(backend, f.config);
  tree_lora_reference<D> s0({.seed = 7});
  runner_options plain = options;
  plain.checkpoint.clear();
  const run_result expected = run_stream(alone, f.planted.stream, s0, adam_1e2(), plain);

  struct stop_before_task {
    index_t task;
    void on_task_begin(const training_context& c) const {
      if (c.task == task) throw std::runtime_error("stopped on purpose");
    }
  } stop{3};
  options.communicator = world;
  {
    mlp_classifier<D> model(backend, f.config);
    tree_lora_reference<D> s({.seed = 7});
    CHECK_THROWS_WITH(run_stream(model, f.planted.stream, s, adam_1e2(), options, stop), doctest::Contains("stopped on purpose"));
  }
  world.barrier();
  const auto stopped = folder / concat("stopped-", world.rank(), ".safetensors");  // for the one-process resume below
  std::filesystem::copy_file(options.checkpoint, stopped, std::filesystem::copy_options::overwrite_existing);
  world.barrier();
  options.resume = true;
  {  // the same ranks
    mlp_classifier<D> model(backend, f.config);
    tree_lora_reference<D> s({.seed = 7});
    // every rank reads the one file (before the first step); rank 0 then writes it again after each task
    const run_result got = run_stream(model, f.planted.stream, s, adam_1e2(), options);
    CHECK(same_matrix(got.task_il, expected.task_il));
    CHECK(relative_difference(trained_values(model), trained_values(alone)) < 1e-10);
  }
  world.barrier();
  {  // one process (each rank on its own, with its own copy of the checkpoint the stopped run wrote)
    mlp_classifier<D> model(backend, f.config);
    tree_lora_reference<D> s({.seed = 7});
    runner_options single = options;
    single.communicator = {};
    single.checkpoint = folder / concat("single-", world.rank(), ".safetensors");
    std::filesystem::copy_file(stopped, single.checkpoint, std::filesystem::copy_options::overwrite_existing);
    const run_result got = run_stream(model, f.planted.stream, s, adam_1e2(), single);
    CHECK(same_matrix(got.task_il, expected.task_il));
    CHECK(relative_difference(trained_values(model), trained_values(alone)) < 1e-10);
  }
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(folder);
}

int main(int argc, char** argv) {
  mpi_session session(argc, argv);
  doctest::Context context(argc, argv);
  return context.run();
}
