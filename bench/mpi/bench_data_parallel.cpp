// bench/mpi/bench_data_parallel.cpp: data-parallel LoRA training of a language model over MPI (docs/scaling.md).
// Run it as one process and under mpirun with the same global batch, e.g. on a 2-core machine:
//
//   bench_data_parallel --threads 2                      # 1 process x 2 threads
//   mpirun -np 2 bench_data_parallel --threads 1         # 2 processes x 1 thread (--oversubscribe where needed)
//
// It trains SeqLoRA through run_stream (strategy/text_runner.hpp) on one task of random token sequences and reports,
// on rank 0:
//   - the median time of a training step (the interval between the runner's on_step calls, after --warmup steps):
//     every rank's share of the forward and backward, the gradient all-reduce, clipping and Adam;
//   - the all-reduce's time per step and its share of the step, timed around every sum the runner asks of the
//     communicator while training (one packed all-reduce per step: the adapters' gradients, the loss, the weight),
//     apart from the time a rank waits for the slowest one to arrive (a barrier first, timed on its own);
//   - the latency of one float all-reduce (median of 30, after 5) of the adapters' gradients at the sizes of this
//     model, of Llama-3.2-1B and of Llama-2-7B with LoRA r = 8 on q_proj and v_proj.
// Model: --model tiny (the text benchmark's base model, 5.5 M parameters) or smollm_135m; random weights (the time of
// a step does not depend on them); LoRA r = 8, alpha 32 on q_proj and v_proj; prompts of --prompt tokens, answers of
// --answer tokens.
#include <chrono>
#include <cstdio>
#include <exception>
#include <numeric>
#include <string>
#include <vector>

#include "treelora/distributed/mpi.hpp"
#include "treelora/io/cli.hpp"
#include "treelora/models/llama.hpp"
#include "treelora/optim/adam.hpp"
#include "treelora/strategy/seq_lora.hpp"
#include "treelora/strategy/text_runner.hpp"

#include "../bench_support.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace treelora;
using treelora::bench::median;
using treelora::bench::now;
using F = cpu_backend<float>;

namespace {

/// The world communicator, timing the sums asked of it while `timing` is on. A sum waits for the slowest rank to
/// arrive, then moves the data: to tell the two apart, a timed sum first meets the other ranks at a barrier (the
/// wait: how unevenly the ranks computed their shares), then sums (the transfer).
struct timed_communicator {
  mpi_communicator& world;
  bool timing = false;
  double waiting = 0, transfer = 0;
  long calls = 0;
  int rank() const { return world.rank(); }
  int size() const { return world.size(); }
  template <class T>
  void time_sum(std::span<T> v) {
    if (!timing) return world.all_reduce_sum(v);
    const double start = now();
    world.barrier();
    const double met = now();
    world.all_reduce_sum(v);
    waiting += met - start, transfer += now() - met, ++calls;
  }
  void all_reduce_sum(std::span<float> v) { time_sum(v); }
  void all_reduce_sum(std::span<double> v) { time_sum(v); }
  void broadcast(std::span<std::byte> bytes, int root) { world.broadcast(bytes, root); }
  void barrier() { world.barrier(); }
};

/// Step times from the runner's callbacks; the communicator's timing only while a task trains (not its evaluation).
struct step_clock {
  timed_communicator& communicator;
  index_t warmup;
  std::vector<double> steps;
  double last = 0, waiting_at_warmup = 0, transfer_at_warmup = 0;
  long calls_at_warmup = 0;
  void on_task_begin(const training_context&) { communicator.timing = true, last = now(); }
  void on_step(const training_context& c, double) {
    const double t = now();
    if (c.global_step >= warmup) steps.push_back(t - last);
    if (c.global_step + 1 == warmup)
      waiting_at_warmup = communicator.waiting, transfer_at_warmup = communicator.transfer, calls_at_warmup = communicator.calls;
    last = t;
  }
  void on_task_end(const training_context&, double) { communicator.timing = false; }
};

/// LoRA r on q_proj and v_proj: A [r, d] and B [out, r] per target and layer.
double lora_values(index_t layers, index_t hidden, index_t q_out, index_t v_out, index_t r) {
  return double(layers) * double(r * hidden + q_out * r + r * hidden + v_out * r);
}

double all_reduce_latency(mpi_communicator& world, std::size_t values) {
  std::vector<float> buffer(values, 1.0f);
  std::vector<double> samples;
  for (int i = 0; i < 35; ++i) {
    world.barrier();
    const double start = now();
    world.all_reduce_sum(std::span<float>(buffer));
    if (i >= 5) samples.push_back(now() - start);
  }
  return median(samples);
}

}  // namespace

int main(int argc, char** argv) try {
  mpi_session session(argc, argv);
  mpi_communicator world;
  std::string model_name = "tiny";
  index_t batch = 8, prompt = 64, answer = 24, steps = 30, warmup = 5, threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--model") model_name = cli::parse_choice(key, value, {"tiny", "smollm_135m"});
    else if (key == "--batch") batch = cli::parse_integer(key, value, 1, 1 << 16);
    else if (key == "--prompt") prompt = cli::parse_integer(key, value, 1, 4096);
    else if (key == "--answer") answer = cli::parse_integer(key, value, 1, 4096);
    else if (key == "--steps") steps = cli::parse_integer(key, value, 1, 1 << 20);
    else if (key == "--warmup") warmup = cli::parse_integer(key, value, 0, 1 << 20);
    else if (key == "--threads") threads = cli::parse_integer(key, value, 1, 1024);
    else throw_invalid_argument("bench_data_parallel", concat("unknown option ", key));
  }
  if (argc % 2 == 0) throw_invalid_argument("bench_data_parallel", concat("option ", argv[argc - 1], " needs a value"));
#if defined(_OPENMP)
  omp_set_num_threads(int(threads));
#endif
  llama_config c = model_name == "smollm_135m" ? llama_config::smollm_135m() : llama_config::tiny();
  c.lora_targets = {"q_proj", "v_proj"}, c.lora_rank = 8, c.lora_alpha = 32;
  c.bos_token_id = 1, c.eos_token_ids = {2}, c.pad_token_id = 0, c.seed = 7;
  // one task of random sequences: (warmup + steps) global batches, one test example
  token_task task{"random", "exact_match", {}, {}, {"x"}};
  random::generator g(11);
  auto sequence = [&](index_t n) {
    std::vector<index_t> ids;
    for (index_t k = 0; k < n; ++k) ids.push_back(3 + index_t(g.below(std::uint64_t(c.vocab_size - 3))));
    return ids;
  };
  for (index_t i = 0; i < (warmup + steps) * batch + 1; ++i) {
    tokenized_example e{sequence(prompt), sequence(answer)};
    e.prompt.front() = 1, e.answer.back() = 2;
    (i < (warmup + steps) * batch ? task.train : task.test).push_back(std::move(e));
  }
  token_stream stream{"random", {std::move(task)}, c.vocab_size, 0, 2, 1, {}};
  stream.decode = [](std::span<const std::int32_t>) { return std::string("y"); };

  F backend;
  llama<F> model(backend, c);
  seq_lora strategy;
  timed_communicator timed{world};
  step_clock clock{timed, warmup, {}};
  const runner_options options{.batch_size = batch, .eval_batch_size = 1, .clip_norm = 1.0, .seed = 3, .communicator = timed};
  const run_result result = run_stream(model, stream, strategy,
                                       [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-4}); },
                                       options, clock);
  const double step = median(clock.steps);
  const double timed_steps = double(clock.steps.size());
  const double waiting = (timed.waiting - clock.waiting_at_warmup) / timed_steps;
  const double transfer = (timed.transfer - clock.transfer_at_warmup) / timed_steps;
  const double mean_step = std::accumulate(clock.steps.begin(), clock.steps.end(), 0.0) / timed_steps;
  const long calls = world.size() > 1 ? (timed.calls - clock.calls_at_warmup) / long(clock.steps.size()) : 0;

  const index_t d = c.hidden_size, q = c.num_attention_heads * c.head_width(), kv = c.num_key_value_heads * c.head_width();
  struct size_case {
    const char* name;
    double values;
  };
  const std::vector<size_case> sizes = {
      {"this model", lora_values(c.num_hidden_layers, d, q, kv, 8)},
      {"Llama-3.2-1B", lora_values(16, 2048, 2048, 512, 8)},
      {"Llama-2-7B", lora_values(32, 4096, 4096, 4096, 8)},
  };
  std::vector<double> latency;
  if (world.size() > 1)
    for (const auto& s : sizes) latency.push_back(all_reduce_latency(world, std::size_t(s.values)));
  if (world.rank() == 0) {
    std::printf("model %s (%lld trainable LoRA values), global batch %lld x %lld tokens, %d process(es) x %lld thread(s), "
                "%zu steps timed after %lld\n", model_name.c_str(), (long long)result.trainable_parameters, (long long)batch,
                (long long)(prompt + answer), world.size(), (long long)threads, clock.steps.size(), (long long)warmup);
    std::printf("step (median): %.2f ms  (%.0f tokens/s)\n", step * 1e3, double(batch * (prompt + answer)) / step);
    if (world.size() > 1) {
      std::printf("per step (mean %.2f ms): all-reduce %.3f ms in %ld call(s), %.2f %% of the step; waiting for the slowest "
                  "rank before it %.3f ms, %.2f %%\n", mean_step * 1e3, transfer * 1e3, calls, 100 * transfer / mean_step,
                  waiting * 1e3, 100 * waiting / mean_step);
      for (std::size_t i = 0; i < sizes.size(); ++i)
        std::printf("one float all-reduce of %s's LoRA gradients (%.0f values, %.1f MB): %.3f ms\n", sizes[i].name,
                    sizes[i].values, sizes[i].values * 4e-6, latency[i] * 1e3);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_data_parallel: %s\n", e.what());
  mpi_session::abort(1);
}
