// split_fashion_mnist: the main job. A small ViT, pre-trained on Fashion-MNIST images WITHOUT their labels
// (rotation prediction, cached), learns Split Fashion-MNIST (5 tasks x 2 classes) with LoRA on q and v; every
// continual-learning method runs over the same seeds and is scored task-incrementally and class-incrementally.
//
//   split_fashion_mnist [--quick | --full] [--out DIR] [--methods A,B] [--seeds 0,1,2] [--help for every option]
//
// Writes DIR/results.json (one row per method x protocol x seed, with the configuration used), DIR/results.csv,
// DIR/heatmap_<method>_<protocol>.svg, DIR/accuracy_after_each_task_<protocol>.svg, DIR/tree_<method>.svg/.dot.
// Every run is checkpointed after every task in DIR/checkpoints/<method>-seed<seed>.safetensors; --resume continues
// each run from its checkpoint (a finished run's results are read back without training) with the same results,
// bit for bit, as a run that did not stop. The same command line (options) must be given again.
// --shard K/N runs every N-th run (from the K-th, in the order seed by seed, method by method) and writes only their
// checkpoints; the runs are independent and deterministic, so N processes (each on one core) then the same command
// with --resume and no --shard (which reads every finished run back) give the same results as one process, N times
// sooner on N idle cores (scripts/main.sh does this). --prepare-only pre-trains the cached backbone first, so that
// the shards do not each pre-train it.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <treelora/distributed/program.hpp>
#include <treelora/io/atomic_file.hpp>
#include <treelora/io/cli.hpp>
#include <treelora/io/json.hpp>
#include <treelora/io/svg.hpp>
#include <treelora/metrics/report.hpp>
#include <treelora/strategy/duallora.hpp>
#include <treelora/strategy/inflora.hpp>
#include <treelora/strategy/olora.hpp>
#include <treelora/treelora.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace treelora;
using F = cpu_backend<float>;

namespace {

/// One process, or with --mpi the processes mpirun started (distributed/program.hpp).
data_parallel_program job;

// ------------------------------------------------------------------------------------------------- options
struct options {
  std::string out = "out";
  std::string data = std::string(fashion_mnist_directory);
  std::string cache = "treelora-cache";
  std::vector<std::string> methods = {"SeqLoRA", "TreeLoRA-reference", "TreeLoRA-paper", "TreeLoRA-Thompson", "InfLoRA",
                                      "O-LoRA", "DualLoRA", "Joint"};
  std::vector<std::uint64_t> seeds = {0, 1, 2};
  bool shuffled_order = false;  // class order: 0..9 (false) or shuffled with the seed
  index_t train_per_class = 1200, test_per_class = 500;
  index_t epochs = 2, batch = 64, threads = 1;  // 1: the demo ViT's products are too small for 2 threads to pay off, and 2-thread regions stall on a shared machine
  double learning_rate = 1e-3;
  index_t patch = 7, width = 64, depth = 4, heads = 4;
  double mlp_ratio = 2.0;
  index_t rank = 8;
  double alpha = 16;
  double reference_strength = 0.5, pull_strength = 1e-2, thompson_scale = 0.2;
  index_t pretrain_epochs = 3, pretrain_images = 20000;
  std::string dual_orthogonal = "A", dual_gate = "energy", dual_calibration = "bayes";  // DualLoRA's reconstructed choices
  std::string dual_task_score = "statistics", dual_task_layers = "all", dual_temperature = "fixed", dual_drift = "local";
  double dual_shrinkage = 1e-3;
  double divergence_factor = 4;  // stop a run whose loss exceeds this many times chance (0: off)
  bool resume = false;           // continue every run from its checkpoint
  index_t stop_after_task = 0;   // stop every run after this many tasks, as a crash would (0: never)
  index_t checkpoint_every = 0;  // also checkpoint every this many steps inside a task (0: between tasks only)
  cli::shard shard;              // this process's share of the runs (--shard K/N)
  bool mpi = false;              // data-parallel: every run shared by the processes mpirun started
  bool prepare_only = false;     // load or pre-train the backbone into the cache, then stop
  std::string preset = "default";
};

const std::vector<std::string> known_methods = {"SeqLoRA", "TreeLoRA-reference", "TreeLoRA-paper", "TreeLoRA-Thompson",
                                                "InfLoRA", "O-LoRA", "DualLoRA", "Joint"};

const char* usage =
    "usage: split_fashion_mnist [options]\n"
    "  --quick | --full          smoke run (under a minute) | the paper-sized protocol (all data, 3 seeds)\n"
    "  --out DIR                 output folder (default out)\n"
    "  --data DIR                Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
    "  --cache DIR               where the pre-trained backbone is cached (default treelora-cache)\n"
    "  --methods A,B,...         of SeqLoRA, TreeLoRA-reference, TreeLoRA-paper, TreeLoRA-Thompson, InfLoRA, O-LoRA,\n"
    "                            DualLoRA, Joint (TreeLoRA-Thompson: paper mode with Thompson sampling for the LCB)\n"
    "  --seeds 0,1,2             seeds (the same for every method)\n"
    "  --shuffled-order          shuffle the class order with the seed (default: 0..9)\n"
    "  --train-per-class N       training images per class, 0 = all 6000 (default 1200)\n"
    "  --test-per-class N        test images per class, 0 = all 1000 (default 500)\n"
    "  --epochs N --batch N --lr X --threads N\n"
    "  --patch N --width N --depth N --heads N --mlp-ratio X      the ViT\n"
    "  --rank N --alpha X                                         LoRA on q and v\n"
    "  --reference-strength X    TreeLoRA reference reg (0.5)\n"
    "  --pull-strength X         TreeLoRA paper lambda (0.01)\n"
    "  --thompson-scale X        TreeLoRA-Thompson: the sampled means' spread for an arm pulled once (0.2)\n"
    "  --pretrain-epochs N --pretrain-images N                    rotation pre-training\n"
    "  --dual-orthogonal A|B     DualLoRA orthogonal adapter: per-task fixed A (A) or shared projected LoRA (B)\n"
    "  --dual-gate G             DualLoRA gate: energy, softmax, per-basis, top1 (default energy)\n"
    "  --dual-calibration C      DualLoRA calibration: bayes, confident-task, none (default bayes)\n"
    "  --dual-task-score S       DualLoRA task score: statistics (class means + shared covariance of the CLS feature),\n"
    "                            energy (s_j), relative (s_j / own-task share), dimension (s_j d / k_j) (default statistics)\n"
    "  --dual-task-layers L      DualLoRA task score from all distinct layers or the last adapter (default all)\n"
    "  --dual-temperature T      DualLoRA tau_id: fixed, or fitted on each task's own training data (default fixed)\n"
    "  --dual-shrinkage X        DualLoRA statistics: covariance + X trace / d I (default 0.001)\n"
    "  --dual-drift D            DualLoRA statistics: class means follow the drift: local, mean, none (default local)\n"
    "  --divergence-factor X     stop with an error when a task's loss (mean of 20 steps) exceeds X times\n"
    "                            max(ln classes, 1); 0 turns the guard off (default 4)\n"
    "  --resume                  continue every run from its checkpoint in OUT/checkpoints (written after every task;\n"
    "                            give the same options again); runs without a checkpoint start from the beginning\n"
    "  --checkpoint-every N      also checkpoint every N steps inside a task (default 0: after every task only)\n"
    "  --stop-after-task N       stop every run after N tasks (its checkpoint written), as a crash would; exits with\n"
    "                            status 3 and --resume continues them (for checking resumption)\n"
    "  --shard K/N               run only every N-th run from the K-th (seed by seed, method by method) and write\n"
    "                            their checkpoints, no reports; then the same command with --resume and without\n"
    "                            --shard reads every run back and writes the results (N processes, one per core)\n"
    "  --prepare-only            load or pre-train the cached backbone, then stop (before starting shards)\n"
    "  --mpi                     data-parallel, under mpirun -np N: each process takes 1/N of every batch and of\n"
    "                            the evaluation, the runs' results are one process's (docs/scaling.md); rank 0\n"
    "                            alone prints and writes (needs a build with MPI: libopenmpi-dev, openmpi-bin)\n"
    "Every option is checked before any training; results are written after every finished run.\n";

vit_config model_config(const options& o, std::uint64_t seed);
dual_lora::config dual_config(const options& o, std::uint64_t seed);
dual_lora_options dual_options(const options& o);

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  // presets first, so explicit options override them
  for (const auto& a : args)
    if (a == "--quick") {
      o.preset = "quick";
      o.train_per_class = 150, o.test_per_class = 100, o.epochs = 1, o.batch = 32, o.seeds = {0};
      o.width = 32, o.depth = 2, o.heads = 2, o.pretrain_epochs = 1, o.pretrain_images = 2000;
    } else if (a == "--full") {
      o.preset = "full";
      o.train_per_class = 0, o.test_per_class = 0, o.pretrain_images = 0;
    }
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string key = args[i], value;
    if (key == "--quick" || key == "--full") continue;
    if (key == "--help" || key == "-h") {
      std::cout << usage;
      std::exit(0);
    }
    if (key == "--shuffled-order") {
      o.shuffled_order = true;
      continue;
    }
    if (key == "--resume") {
      o.resume = true;
      continue;
    }
    if (key == "--mpi") {
      o.mpi = true;
      continue;
    }
    if (key == "--prepare-only") {
      o.prepare_only = true;
      continue;
    }
    if (const auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      throw_invalid_argument("split_fashion_mnist", concat("option ", key, " needs a value\n", usage));
    }
    const auto count = [&](std::int64_t low, std::int64_t high) { return cli::parse_integer(key, value, low, high); };
    const auto real = [&](double low, double high) { return cli::parse_real(key, value, low, high); };
    constexpr std::int64_t big = std::int64_t(1) << 31;
    if (key == "--out") o.out = value;
    else if (key == "--data") o.data = value;
    else if (key == "--cache") o.cache = value;
    else if (key == "--methods") {
      o.methods.clear();
      for (const auto& m : cli::parse_list(key, value)) o.methods.push_back(cli::parse_choice(key, m, known_methods));
    } else if (key == "--seeds") {
      o.seeds.clear();
      for (const auto& s : cli::parse_list(key, value)) o.seeds.push_back(cli::parse_unsigned(key, s));
    } else if (key == "--train-per-class") o.train_per_class = count(0, 6000);
    else if (key == "--test-per-class") o.test_per_class = count(0, 1000);
    else if (key == "--epochs") o.epochs = count(1, 10000);
    else if (key == "--batch") o.batch = count(1, big);
    else if (key == "--threads") o.threads = count(1, 1024);
    else if (key == "--lr") o.learning_rate = real(std::numeric_limits<double>::min(), std::numeric_limits<double>::max());
    else if (key == "--patch") o.patch = count(1, 28);
    else if (key == "--width") o.width = count(1, 1 << 16);
    else if (key == "--depth") o.depth = count(1, 1024);
    else if (key == "--heads") o.heads = count(1, 1 << 16);
    else if (key == "--mlp-ratio") o.mlp_ratio = real(1e-3, 1e3);
    else if (key == "--rank") o.rank = count(1, 1 << 16);
    else if (key == "--alpha") o.alpha = real(0, 1e9);
    else if (key == "--reference-strength") o.reference_strength = real(0, 1e9);
    else if (key == "--pull-strength") o.pull_strength = real(0, 1e9);
    else if (key == "--thompson-scale") o.thompson_scale = real(1e-9, 1e9);
    else if (key == "--pretrain-epochs") o.pretrain_epochs = count(0, 10000);
    else if (key == "--pretrain-images") o.pretrain_images = count(0, 60000);
    else if (key == "--dual-orthogonal") o.dual_orthogonal = cli::parse_choice(key, value, {"A", "B"});
    else if (key == "--dual-gate") o.dual_gate = cli::parse_choice(key, value, {"energy", "softmax", "per-basis", "top1"});
    else if (key == "--dual-calibration") o.dual_calibration = cli::parse_choice(key, value, {"bayes", "confident-task", "none"});
    else if (key == "--dual-task-score") o.dual_task_score = cli::parse_choice(key, value, {"statistics", "energy", "relative", "dimension"});
    else if (key == "--dual-task-layers") o.dual_task_layers = cli::parse_choice(key, value, {"all", "last"});
    else if (key == "--dual-temperature") o.dual_temperature = cli::parse_choice(key, value, {"fixed", "fitted"});
    else if (key == "--dual-shrinkage") o.dual_shrinkage = real(0, 1e6);
    else if (key == "--dual-drift") o.dual_drift = cli::parse_choice(key, value, {"local", "mean", "none"});
    else if (key == "--stop-after-task") o.stop_after_task = count(1, big);
    else if (key == "--checkpoint-every") o.checkpoint_every = count(0, big);
    else if (key == "--shard") o.shard = cli::parse_shard(key, value);
    else if (key == "--divergence-factor") {
      o.divergence_factor = real(0, 1e9);
      if (o.divergence_factor != 0 && o.divergence_factor <= 1)
        throw_invalid_argument("split_fashion_mnist", concat("--divergence-factor ", value, " must be 0 (off) or > 1"));
    } else throw_invalid_argument("split_fashion_mnist", concat("unknown option ", key, "\n", usage));
  }
  if (o.mpi && !o.shard.whole())
    throw_invalid_argument("split_fashion_mnist", "--mpi and --shard: give one (--mpi shares every run by all processes, --shard splits the runs)");
  if (o.mpi && !data_parallel_program::mpi_available())
    throw_invalid_argument("split_fashion_mnist", "--mpi: this program was built without MPI (install libopenmpi-dev and openmpi-bin, reconfigure)");
  if (o.seeds.empty() || o.methods.empty()) throw_invalid_argument("split_fashion_mnist", "needs at least one seed and one method");
  // Build every configuration once now, so that a bad combination fails before any training.
  (void)model_config(o, 0);
  (void)dual_config(o, 0);
  (void)dual_options(o);
  return o;
}

json::object config_json(const options& o) {
  json::object c;
  c.add_string("preset", o.preset).add("methods", o.methods).add("seeds", o.seeds)
      .add_bool("shuffled_order", o.shuffled_order).add_number("train_per_class", o.train_per_class)
      .add_number("test_per_class", o.test_per_class).add_number("epochs", o.epochs)
      .add_number("batch", o.batch).add_number("learning_rate", o.learning_rate).add_number("threads", o.threads)
      .add_number("patch", o.patch).add_number("width", o.width).add_number("depth", o.depth)
      .add_number("heads", o.heads).add_number("mlp_ratio", o.mlp_ratio).add_number("lora_rank", o.rank)
      .add_number("lora_alpha", o.alpha).add_string("lora_targets", "q,v")
      .add_number("reference_strength", o.reference_strength).add_number("pull_strength", o.pull_strength)
      .add_number("thompson_scale", o.thompson_scale)
      .add_number("pretrain_epochs", o.pretrain_epochs).add_number("pretrain_images", o.pretrain_images)
      .add_string("dual_orthogonal", o.dual_orthogonal).add_string("dual_gate", o.dual_gate)
      .add_string("dual_calibration", o.dual_calibration).add_string("dual_task_score", o.dual_task_score)
      .add_string("dual_task_layers", o.dual_task_layers).add_string("dual_temperature", o.dual_temperature)
      .add_number("dual_shrinkage", o.dual_shrinkage).add_string("dual_drift", o.dual_drift)
      .add_number("divergence_factor", o.divergence_factor).add_number("processes", job.size());
  return c;
}

vit_config model_config(const options& o, std::uint64_t seed) {
  vit_config c;
  c.patch_size = o.patch, c.width = o.width, c.depth = o.depth, c.heads = o.heads, c.mlp_ratio = o.mlp_ratio;
  c.classes = 10, c.lora_rank = o.rank, c.lora_alpha = o.alpha, c.seed = seed;
  c.validate();
  return c;
}

// ------------------------------------------------------------------------------------------------- DualLoRA choices
dual_lora::config dual_config(const options& o, std::uint64_t seed) {
  dual_lora::config c{.rank = o.rank, .seed = seed};
  c.orthogonal = o.dual_orthogonal == "B" ? dual_orthogonal::shared_projected : dual_orthogonal::per_task_fixed_a;
  const std::map<std::string, dual_gate> gates = {{"energy", dual_gate::energy}, {"softmax", dual_gate::softmax},
                                                  {"per-basis", dual_gate::per_basis}, {"top1", dual_gate::top1}};
  c.gate = gates.at(o.dual_gate);
  return c;
}
dual_lora_options dual_options(const options& o) {
  const std::map<std::string, dual_task_score> scores = {{"statistics", dual_task_score::statistics}, {"energy", dual_task_score::energy},
                                                         {"relative", dual_task_score::relative}, {"dimension", dual_task_score::dimension}};
  return {.task_score = scores.at(o.dual_task_score),
          .task_layers = o.dual_task_layers == "all" ? dual_task_layers::all : dual_task_layers::last,
          .fit_temperature = o.dual_temperature == "fitted",
          .statistics_shrinkage = o.dual_shrinkage,
          .drift_compensation = o.dual_drift == "local" ? dual_drift::local
                                : o.dual_drift == "mean" ? dual_drift::mean
                                                         : dual_drift::none,
          .calibration = o.dual_calibration == "bayes"            ? dual_calibration::bayes
                         : o.dual_calibration == "confident-task" ? dual_calibration::confident_task
                                                                  : dual_calibration::none};
}

// ------------------------------------------------------------------------------------------------- one run
/// Thrown when a run stops where --stop-after-task asked (after its checkpoint was written).
struct run_stopped : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Stops a run before task `task` starts (0: never).
struct stop_before {
  index_t task = 0;
  void on_task_begin(const training_context& c) const {
    if (task > 0 && c.task == task) throw run_stopped(concat("stopped after task ", task, " as asked (--stop-after-task)"));
  }
};

struct run_record {
  std::string method;
  std::uint64_t seed;
  run_result result;
  std::vector<tree_node> tree;  // the learned task tree (TreeLoRA), for the plots
};

/// Trains a fresh model (pre-trained backbone, new head and adapters) with `method` on `stream`.
run_record run_method(const std::string& method, const options& o, std::uint64_t seed, const task_stream& stream,
                      const std::vector<host_parameter>& backbone) {
  F backend;
  vit<F> model(backend, model_config(o, seed));
  model.load_backbone_state(backbone);
  const auto optimizer = [&](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = o.learning_rate}); };
  const runner_options run{.epochs_per_task = o.epochs, .batch_size = o.batch, .seed = seed,
                           .guard = {.enabled = o.divergence_factor > 0, .factor = o.divergence_factor},
                           .checkpoint = std::filesystem::path(o.out) / "checkpoints" / concat(method, "-seed", seed, ".safetensors"),
                           .resume = o.resume, .checkpoint_every_steps = o.checkpoint_every,
                           .communicator = job.communicator()};
  progress_bar progress_line(concat("[", method, " seed ", seed, "]"), job.progress_output());
  const stop_before stop{o.stop_after_task};
  struct both {  // the progress line and the stop, as one callback
    progress_bar& line;
    const stop_before& stop;
    void on_task_begin(const training_context& c) { stop.on_task_begin(c), line.on_task_begin(c); }
    void on_step(const training_context& c, double r) { line.on_step(c, r); }
    void on_task_end(const training_context& c, double s) { line.on_task_end(c, s); }
  } progress{progress_line, stop};
  run_record record{method, seed, run_result{method, accuracy_matrix(0), accuracy_matrix(0), accuracy_matrix(0)}, {}};
  // ---- methods ----
  if (method == "SeqLoRA") {
    seq_lora strategy;
    record.result = run_stream(model, stream, strategy, optimizer, run, progress);
  } else if (method == "Joint") {
    seq_lora strategy;
    record.result = run_joint(model, stream, strategy, optimizer, run, progress);
  } else if (method == "TreeLoRA-reference") {
    tree_lora_reference<F> strategy({.reference_strength = o.reference_strength, .seed = seed});
    record.result = run_stream(model, stream, strategy, optimizer, run, progress);
    record.tree = strategy.tree().nodes();
  } else if (method == "TreeLoRA-paper") {
    const index_t modules = static_cast<index_t>(model.adapters().size());
    tree_lora_paper<F> strategy({.pull_strength = o.pull_strength,
                                 .tree = {.max_depth = std::min<index_t>(5, modules)}, .seed = seed});
    record.result = run_stream(model, stream, strategy, optimizer, run, progress);
    record.tree = strategy.tree().nodes();
  } else if (method == "TreeLoRA-Thompson") {
    const index_t modules = static_cast<index_t>(model.adapters().size());
    tree_lora_thompson<F> strategy({.pull_strength = o.pull_strength, .tree = {.max_depth = std::min<index_t>(5, modules)},
                                    .seed = seed},
                                   o.thompson_scale);
    record.result = run_stream(model, stream, strategy, optimizer, run, progress);
    record.tree = strategy.tree().nodes();
  } else if (method == "InfLoRA") {
    vit_config c = model_config(o, seed);
    c.lora_targets = {"k", "v"};  // InfLoRA adapts W_k and W_v
    vit<F, inflora> inf_model(backend, c, {.rank = o.rank, .seed = seed});
    inf_model.load_backbone_state(backbone);
    inflora_strategy strategy(stream);
    record.result = run_stream(inf_model, stream, strategy, optimizer, run, progress);
  } else if (method == "O-LoRA") {
    vit<F, olora> o_model(backend, model_config(o, seed), {.rank = o.rank, .alpha = o.alpha, .seed = seed});
    o_model.load_backbone_state(backbone);
    olora_strategy<F> strategy;
    record.result = run_stream(o_model, stream, strategy, optimizer, run, progress);
  } else if (method == "DualLoRA") {
    vit<F, dual_lora> d_model(backend, model_config(o, seed), dual_config(o, seed));
    d_model.load_backbone_state(backbone);
    dual_lora_strategy<F> strategy(stream, dual_options(o));
    record.result = run_stream(d_model, stream, strategy, optimizer, run, progress);
  } else {
    throw_invalid_argument("split_fashion_mnist", concat("unknown method '", method, "'\n", usage));
  }
  // ---- end of methods ----
  record.result.method = method;
  record.result.seed = seed;
  return record;
}

// ------------------------------------------------------------------------------------------------- reporting
struct protocol_view {
  const char* name;
  const accuracy_matrix& (*matrix)(const run_result&);
};
const protocol_view protocols[] = {
    {"task-IL", [](const run_result& r) -> const accuracy_matrix& { return r.task_il; }},
    {"class-IL", [](const run_result& r) -> const accuracy_matrix& { return r.class_il; }},
};

double safe(const std::function<double()>& f) {
  try {
    return f();
  } catch (const std::invalid_argument&) {
    return std::nan("");
  }
}

std::vector<double> matrix_values(const accuracy_matrix& m) {
  std::vector<double> v;
  for (index_t i = 0; i < m.tasks(); ++i)
    for (index_t j = 0; j < m.tasks(); ++j) v.push_back(m(i, j));
  return v;
}

/// Mean accuracy over the tasks seen so far, after each task (NaN where a row is not measured, as for Joint).
std::vector<double> accuracy_after_each_task(const accuracy_matrix& m) {
  std::vector<double> out;
  for (index_t i = 0; i < m.tasks(); ++i) {
    double s = 0;
    for (index_t j = 0; j <= i; ++j) s += m(i, j);
    out.push_back(s / double(i + 1));
  }
  return out;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}
double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}

/// results.json / results.csv through the library's writer (metrics/report.hpp), then the plots; every file is written
/// atomically. Called after every finished run, so a failure later keeps what finished.
void write_reports(const options& o, const std::vector<run_record>& records) {
  namespace fs = std::filesystem;
  const fs::path out = o.out;
  std::vector<run_result> results;
  for (const auto& r : records) results.push_back(r.result);
  write_results(out, results, config_json(o).str());
  const auto write_svg = [&](const std::string& name, const std::function<void(std::ostream&)>& draw) {
    write_file_atomically(out / name, draw);
  };

  // Plots: mean matrices per method and protocol, accuracy after each task, learned trees.
  std::map<std::string, std::vector<const run_record*>> by_method;
  for (const auto& r : records) by_method[r.method].push_back(&r);
  for (const auto& p : protocols) {
    std::vector<svg::series> lines;
    for (const auto& entry : by_method) {  // not a structured binding: clang 14 cannot capture one in a lambda
      const std::string& method = entry.first;
      const auto& runs = entry.second;
      const index_t tasks = p.matrix(runs[0]->result).tasks();
      std::vector<double> sum(std::size_t(tasks * tasks), 0.0), curve(std::size_t(tasks), 0.0);
      for (const auto* r : runs) {
        const auto v = matrix_values(p.matrix(r->result));
        const auto c = accuracy_after_each_task(p.matrix(r->result));
        for (std::size_t i = 0; i < v.size(); ++i) sum[i] += v[i] / double(runs.size());
        for (std::size_t i = 0; i < c.size(); ++i) curve[i] += c[i] / double(runs.size());
      }
      write_svg("heatmap_" + method + "_" + p.name + ".svg", [&](std::ostream& heat) {
        svg::heat_map(heat, sum, std::size_t(tasks), std::size_t(tasks),
                      concat(method, " ", p.name, ": accuracy (%) after task i on task j, mean of ", runs.size(), " seeds"),
                      "after T", "T");
      });
      std::vector<double> x(static_cast<std::size_t>(tasks));
      for (index_t i = 0; i < tasks; ++i) x[std::size_t(i)] = double(i + 1);
      for (auto& v : curve) v *= 100;
      lines.push_back({method, x, curve});
    }
    write_svg(std::string("accuracy_after_each_task_") + p.name + ".svg", [&](std::ostream& chart) {
      svg::line_chart(chart, lines, {.title = concat("Split Fashion-MNIST, ", p.name, ": mean accuracy on the tasks seen so far"),
                                     .x_label = "tasks learned", .y_label = "accuracy (%)"});
    });
  }
  for (const auto& entry : by_method) {
    const std::string& method = entry.first;
    const auto& runs = entry.second;
    if (!runs[0]->tree.empty()) {
      write_svg("tree_" + method + ".svg", [&](std::ostream& tree) {
        svg::tree_diagram(tree, runs[0]->tree, concat(method, ": the learned task tree (seed ", runs[0]->seed, ")"));
      });
    }
  }
}

void print_summary(const std::vector<run_record>& records) {
  std::map<std::pair<std::string, std::string>, std::vector<const run_record*>> groups;
  std::vector<std::string> order;
  for (const auto& r : records) {
    if (std::find(order.begin(), order.end(), r.method) == order.end()) order.push_back(r.method);
    for (const auto& p : protocols) groups[{r.method, p.name}].push_back(&r);
  }
  std::printf("\n%-20s %-9s %15s %15s %15s %9s %8s %9s\n", "method", "protocol", "ACC %", "BWT %", "forgetting %",
              "seconds", "peak MB", "params");
  for (const auto& method : order)
    for (const auto& p : protocols) {
      std::vector<double> acc, bwt, fgt, sec;
      double peak = 0, params = 0;
      for (const auto* r : groups[{method, p.name}]) {
        const auto& m = p.matrix(r->result);
        acc.push_back(100 * final_average_accuracy(m));
        bwt.push_back(100 * safe([&] { return backward_transfer(m); }));
        fgt.push_back(100 * safe([&] { return forgetting(m); }));
        sec.push_back(r->result.seconds);
        peak = std::max(peak, r->result.peak_bytes.empty() ? 0.0 : double(r->result.peak_bytes.back()) / 1048576.0);
        params = double(r->result.trainable_parameters);
      }
      const auto cell = [](const std::vector<double>& v) {
        char b[32];
        if (std::isnan(v[0])) std::snprintf(b, sizeof b, "-");
        else std::snprintf(b, sizeof b, "%.2f +- %.2f", mean(v), stddev(v));
        return std::string(b);
      };
      std::printf("%-20s %-9s %15s %15s %15s %9.1f %8.0f %9.0f\n", method.c_str(), p.name, cell(acc).c_str(),
                  cell(bwt).c_str(), cell(fgt).c_str(), mean(sec), peak, params);
    }
  std::printf("ACC: mean final accuracy over tasks; BWT: paper sign (forgetting positive); mean +- std over seeds.\n");
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  if (o.mpi) job.start_mpi(argc, argv);
#if defined(_OPENMP)
  omp_set_num_threads(static_cast<int>(o.threads));
#endif
  require_writable_folder(o.out);  // before any work: a run must not train for an hour and then fail to write
  if (job.reports()) {
    std::fprintf(stderr, "treelora %d.%d.%d: Split Fashion-MNIST (%s preset), methods:", version_major, version_minor,
                 version_patch, o.preset.c_str());
    for (const auto& m : o.methods) std::fprintf(stderr, " %s", m.c_str());
    if (job.size() > 1) std::fprintf(stderr, "; data-parallel over %d processes", job.size());
    std::fprintf(stderr, "\n");
  }

  const auto data = load_fashion_mnist(o.data);
  // Offline initialisation: rotation prediction on the training images (a view: the labels are not part of it).
  const image_view unlabelled(data.train.example_shape, data.train.features);
  const vit_config backbone_config = model_config(o, 1000);
  const auto cache = std::filesystem::path(o.cache) /
                     concat("vit-backbone-w", o.width, "-d", o.depth, "-p", o.patch, "-h", o.heads, ".bin");
  const auto backbone = job.rank_0_first([&] {  // --mpi: rank 0 pre-trains the cached backbone, then the others read it
    return load_or_pretrain(cache, backbone_config, unlabelled, {.epochs = o.pretrain_epochs, .max_images = o.pretrain_images, .seed = 1000});
  });
  if (o.prepare_only) {
    std::printf("backbone ready in %s\n", cache.string().c_str());
    return 0;
  }

  std::vector<run_record> records;
  std::vector<std::string> stopped;
  std::int64_t run_index = -1;
  for (const std::uint64_t seed : o.seeds) {
    split_options split{.train_per_class = o.train_per_class, .test_per_class = o.test_per_class, .subsample_seed = seed};
    if (o.shuffled_order) split.shuffle_seed = seed;
    const task_stream stream = split_fashion_mnist(data, split);
    for (const auto& method : o.methods) {
      if (!o.shard.takes(++run_index)) continue;
      try {
        records.push_back(run_method(method, o, seed, stream, backbone));
      } catch (const run_stopped& e) {
        std::fprintf(stderr, "\n%s seed %llu: %s\n", method.c_str(), (unsigned long long)seed, e.what());
        stopped.push_back(concat(method, " seed ", seed));
        continue;
      }
      const auto& r = records.back().result;
      std::printf("\n%s, seed %llu, task-IL accuracy (%%) after task i (rows) on task j (columns):\n%s", method.c_str(),
                  (unsigned long long)seed, r.task_il.to_table().c_str());
      if (method != "Joint")
        std::printf("class-IL:\n%s", r.class_il.to_table().c_str());
      std::fflush(stdout);
      if (o.shard.whole() && job.reports()) write_reports(o, records);  // after every run: a failure later keeps what finished
    }
  }
  if (!stopped.empty()) {
    std::printf("%zu run(s) stopped after task %lld as asked; their checkpoints are in %s/checkpoints: run the same "
                "command with --resume to continue them\n", stopped.size(), (long long)o.stop_after_task, o.out.c_str());
    return 3;
  }
  if (!o.shard.whole()) {
    std::printf("shard %lld/%lld: %zu run(s) finished, their checkpoints in %s/checkpoints; the same command with "
                "--resume and without --shard writes every run's results\n", (long long)o.shard.index,
                (long long)o.shard.count, records.size(), o.out.c_str());
    return 0;
  }
  print_summary(records);
  std::printf("wrote %s/results.json, results.csv and SVG plots\n", o.out.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "split_fashion_mnist: %s\n", e.what());
  job.abort_job(1);  // --mpi: the other processes would wait for this one
  return 1;
}
