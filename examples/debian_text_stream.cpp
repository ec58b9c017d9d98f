// debian_text_stream: the language half of the main job. A small Llama, pre-trained by the project on the GCIDE
// dictionary (dict-gcide) with a SentencePiece tokenizer trained on that text and the tasks' training text, learns
// the eight Debian text tasks (data/text_tasks.hpp, docs/text-benchmark.md) one after another with LoRA on q and v;
// every continual-learning method runs on the same stream and seeds, through the same runner as the vision half.
//
//   debian_text_stream [--quick | --full] [--out DIR] [--cache DIR] [--methods A,B] [--seeds 0,1,2] [--help]
//
// The base model and tokenizer are cached in CACHE/text-base-<fingerprint>/ (config.json + model.safetensors: a
// Hugging Face Llama folder; tokenizer.model: SentencePiece; pretraining.json; manifest.json with every file's
// checksum, written last): a later run with the same settings and Debian files loads them, anything else
// pre-trains again. Writes DIR/results.json, DIR/results.csv, DIR/heatmap_<method>.svg,
// DIR/score_after_each_task.svg, DIR/tree_<method>.svg, DIR/base_model.json, DIR/answer_loss.json (the held-out
// answer loss after each task, every run) and DIR/answers_<method>.txt (each
// method's answers to three test prompts per task after its last task, and the base model's). After task n every
// task up to n + 1 is scored (forward transfer reads n + 1; later ones are not: generation is most of a run's
// time). Every run is checkpointed after every task in DIR/checkpoints; --resume continues from there (a finished
// run is read back without training). --shard K/N runs every N-th run (from the K-th, seed by seed, method by method)
// and writes only their checkpoints; after N such processes (on one thread each; after --prepare-only), the same
// command with --resume and without --shard reads every run back and writes the results, equal to one process's.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <treelora/io/atomic_file.hpp>
#include <treelora/io/checked_folder.hpp>
#include <treelora/io/cli.hpp>
#include <treelora/io/json.hpp>
#include <treelora/io/svg.hpp>
#include <treelora/metrics/report.hpp>
#include <treelora/models/hf_causal_lm.hpp>
#include <treelora/models/lm_pretrain.hpp>
#include <treelora/strategy/duallora.hpp>
#include <treelora/strategy/inflora.hpp>
#include <treelora/strategy/olora.hpp>
#include <treelora/strategy/seq_lora.hpp>
#include <treelora/strategy/text_runner.hpp>
#include <treelora/strategy/tree_lora.hpp>
#include <treelora/strategy/callbacks.hpp>
#include <treelora/distributed/program.hpp>
#include <treelora/tokenizer/sentencepiece.hpp>

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
  std::string out = "out/text", cache = "treelora-cache", root = "/", trace;
  std::vector<std::string> methods = {"SeqLoRA", "TreeLoRA-reference", "TreeLoRA-paper", "TreeLoRA-Thompson",
                                      "O-LoRA", "InfLoRA", "DualLoRA", "Joint"};
  std::vector<std::uint64_t> seeds = {0};
  std::vector<std::string> tasks = {};  // empty: all eight
  index_t train_per_task = 96, test_per_task = 24, prompt_tokens = 64, answer_tokens = 24, max_new_tokens = 16;
  index_t epochs = 3, batch = 4, threads = 2;  // batch 4: the small model learns a task in steps, not examples
  std::string schedule = "equal";  // equal: every method --epochs; paper: TreeLoRA 2,1,3,2,1,2,2,3, the rest 5,3,7,5,3,5,5,7
  double learning_rate = 3e-3, clip = 1.0;
  index_t rank = 8;
  double alpha = 32;
  std::vector<std::string> targets = {"q_proj", "v_proj"};  // InfLoRA: k_proj for q_proj (it adapts W_k and W_v)
  double reference_strength = 0.5, pull_strength = 1e-2, thompson_scale = 0.2;
  // the base model (a Llama) and its pre-training
  index_t vocabulary = 4096, width = 256, layers = 6, heads = 8, kv_heads = 4, intermediate = 704;
  index_t pretrain_steps = 150, pretrain_batch = 16, pretrain_tokens = 128;
  double pretrain_lr = 3e-3;
  std::size_t corpus_bytes = 4'000'000;  // GCIDE text read for pre-training (the tokenizer reads a quarter of it)
  double divergence_factor = 4;
  bool resume = false;
  bool mpi = false;               // data-parallel: every run shared by the processes mpirun started
  bool prepare_only = false;      // load or pre-train the base model and tokenizer, then stop
  cli::shard shard;               // this process's share of the runs (--shard K/N)
  index_t stop_after_task = 0;   // stop every run after this many tasks, as a crash would (0: never)
  index_t checkpoint_every = 0;  // also checkpoint every this many steps inside a task (0: between tasks only)
  std::string preset = "default";
};

const std::vector<std::string> known_methods = {"SeqLoRA", "TreeLoRA-reference", "TreeLoRA-paper", "TreeLoRA-Thompson",
                                                "O-LoRA", "InfLoRA", "DualLoRA", "Joint"};
const std::vector<std::string> task_names = {"wn-sense", "py-nextline", "de-en", "foldoc-topic",
                                             "fortune-lang", "ui-l10n", "man-section", "quiz-facts"};

const char* usage =
    "usage: debian_text_stream [options]\n"
    "  --quick | --full          smoke run (a tiny model, under two minutes) | the paper-sized protocol (500/200\n"
    "                            examples per task, 3 seeds, the released epoch schedules)\n"
    "  --out DIR                 output folder (default out/text)\n"
    "  --cache DIR               where the pre-trained base model and tokenizer are cached (default treelora-cache)\n"
    "  --root DIR                the Debian files are read under DIR (default /)\n"
    "  --trace DIR               a TRACE benchmark folder (one folder per task with train.json / test.json) instead\n"
    "                            of the Debian tasks; metrics by TRACE's task names (rouge_l otherwise)\n"
    "  --methods A,B,...         of SeqLoRA, TreeLoRA-reference, TreeLoRA-paper, TreeLoRA-Thompson, O-LoRA, InfLoRA, Joint\n"
    "  --seeds 0,1,2             seeds (the same for every method)\n"
    "  --tasks A,B,...           a subset of the Debian tasks, in stream order (default all eight)\n"
    "  --train-per-task N --test-per-task N\n"
    "  --prompt-tokens N --answer-tokens N --max-new-tokens N     token budgets (BOS and EOS included)\n"
    "  --epochs N --batch N --lr X --clip X --threads N\n"
    "  --schedule equal|paper    epochs per task: --epochs for every method, or the released scripts' schedules\n"
    "                            (TreeLoRA 2,1,3,2,1,2,2,3; the other methods 5,3,7,5,3,5,5,7; eight tasks only)\n"
    "  --rank N --alpha X        LoRA rank and alpha\n"
    "  --targets A,B,...         the adapted modules (default q_proj,v_proj; InfLoRA reads k_proj for q_proj)\n"
    "  --reference-strength X --pull-strength X --thompson-scale X     TreeLoRA\n"
    "  --vocabulary N --width N --layers N --heads N --kv-heads N --intermediate N     the base Llama\n"
    "  --pretrain-steps N --pretrain-batch N --pretrain-tokens N --pretrain-lr X --corpus-bytes N\n"
    "  --divergence-factor X     stop when a task's loss (mean of 20 steps) exceeds X times ln(vocabulary); 0: off\n"
    "  --resume                  continue every run from its checkpoint in OUT/checkpoints (a finished run is read\n"
    "                            back without training)\n"
    "  --shard K/N               run only every N-th run from the K-th (seed by seed, method by method) and write\n"
    "                            their checkpoints, no reports; then the same command with --resume and without\n"
    "                            --shard reads every run back and writes the results (N processes, --threads 1 each)\n"
    "  --prepare-only            load or pre-train the base model and tokenizer into the cache, then stop (the same\n"
    "                            options give the same cached model; the number of threads does not change it)\n"
    "  --mpi                     data-parallel, under mpirun -np N: each process takes 1/N of every batch (by\n"
    "                            answer tokens) and of the evaluation, the runs' results are one process's\n"
    "                            (docs/scaling.md); rank 0 alone prints and writes (needs a build with MPI)\n"
    "  --checkpoint-every N      also checkpoint every N steps inside a task (default 0: after every task only)\n"
    "  --stop-after-task N       stop every run after N tasks (its checkpoint written), as a crash would; exits with\n"
    "                            status 3 (then --resume continues)\n";

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args)
    if (a == "--quick") {
      o.preset = "quick";
      o.train_per_task = 24, o.test_per_task = 8, o.prompt_tokens = 48, o.answer_tokens = 12, o.max_new_tokens = 8, o.epochs = 1;
      o.vocabulary = 512, o.width = 64, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.intermediate = 160;
      o.pretrain_steps = 40, o.pretrain_batch = 8, o.pretrain_tokens = 64, o.corpus_bytes = 300'000, o.rank = 4;
    } else if (a == "--full") {
      o.preset = "full";
      o.train_per_task = 500, o.test_per_task = 200, o.seeds = {0, 1, 2}, o.schedule = "paper", o.batch = 8;
      o.prompt_tokens = 192, o.answer_tokens = 64, o.max_new_tokens = 48, o.pretrain_steps = 600;
    }
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string key = args[i], value;
    if (key == "--quick" || key == "--full") continue;
    if (key == "--help" || key == "-h") {
      std::cout << usage;
      std::exit(0);
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
    if (const auto eq = key.find('='); eq != std::string::npos) value = key.substr(eq + 1), key = key.substr(0, eq);
    else if (i + 1 < args.size()) value = args[++i];
    else throw_invalid_argument("debian_text_stream", concat("option ", key, " needs a value\n", usage));
    const auto count = [&](std::int64_t low, std::int64_t high) { return index_t(cli::parse_integer(key, value, low, high)); };
    const auto real = [&](double low, double high) { return cli::parse_real(key, value, low, high); };
    if (key == "--out") o.out = value;
    else if (key == "--cache") o.cache = value;
    else if (key == "--root") o.root = value;
    else if (key == "--trace") o.trace = value;
    else if (key == "--methods") {
      o.methods.clear();
      for (const auto& m : cli::parse_list(key, value)) o.methods.push_back(cli::parse_choice(key, m, known_methods));
    } else if (key == "--seeds") {
      o.seeds.clear();
      for (const auto& s : cli::parse_list(key, value)) o.seeds.push_back(cli::parse_unsigned(key, s));
    } else if (key == "--tasks") {
      o.tasks.clear();
      for (const auto& t : cli::parse_list(key, value)) o.tasks.push_back(cli::parse_choice(key, t, task_names));
    } else if (key == "--train-per-task") o.train_per_task = count(1, 100000);
    else if (key == "--test-per-task") o.test_per_task = count(1, 100000);
    else if (key == "--prompt-tokens") o.prompt_tokens = count(2, 1 << 16);
    else if (key == "--answer-tokens") o.answer_tokens = count(2, 1 << 16);
    else if (key == "--max-new-tokens") o.max_new_tokens = count(1, 1 << 16);
    else if (key == "--epochs") o.epochs = count(1, 10000);
    else if (key == "--batch") o.batch = count(1, 1 << 20);
    else if (key == "--threads") o.threads = count(1, 1024);
    else if (key == "--schedule") o.schedule = cli::parse_choice(key, value, {"equal", "paper"});
    else if (key == "--lr") o.learning_rate = real(std::numeric_limits<double>::min(), 1e3);
    else if (key == "--clip") o.clip = real(0, 1e9);
    else if (key == "--rank") o.rank = count(1, 1 << 16);
    else if (key == "--targets") {
      o.targets.clear();
      for (const auto& t : cli::parse_list(key, value))
        o.targets.push_back(cli::parse_choice(key, t, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}));
    }
    else if (key == "--alpha") o.alpha = real(0, 1e9);
    else if (key == "--reference-strength") o.reference_strength = real(0, 1e9);
    else if (key == "--pull-strength") o.pull_strength = real(0, 1e9);
    else if (key == "--thompson-scale") o.thompson_scale = real(1e-9, 1e9);
    else if (key == "--vocabulary") o.vocabulary = count(260, 1 << 20);
    else if (key == "--width") o.width = count(1, 1 << 16);
    else if (key == "--layers") o.layers = count(1, 1024);
    else if (key == "--heads") o.heads = count(1, 1 << 16);
    else if (key == "--kv-heads") o.kv_heads = count(1, 1 << 16);
    else if (key == "--intermediate") o.intermediate = count(1, 1 << 20);
    else if (key == "--stop-after-task") o.stop_after_task = count(1, 1 << 20);
    else if (key == "--shard") o.shard = cli::parse_shard(key, value);
    else if (key == "--checkpoint-every") o.checkpoint_every = count(0, std::int64_t(1) << 40);
    else if (key == "--pretrain-steps") o.pretrain_steps = count(1, 1 << 24);
    else if (key == "--pretrain-batch") o.pretrain_batch = count(1, 1 << 16);
    else if (key == "--pretrain-tokens") o.pretrain_tokens = count(8, 1 << 16);
    else if (key == "--pretrain-lr") o.pretrain_lr = real(std::numeric_limits<double>::min(), 1e3);
    else if (key == "--corpus-bytes") o.corpus_bytes = std::size_t(count(10000, std::int64_t(1) << 40));
    else if (key == "--divergence-factor") {
      o.divergence_factor = real(0, 1e9);
      if (o.divergence_factor != 0 && o.divergence_factor <= 1)
        throw_invalid_argument("debian_text_stream", concat("--divergence-factor ", value, " must be 0 (off) or > 1"));
    } else throw_invalid_argument("debian_text_stream", concat("unknown option ", key, "\n", usage));
  }
  if (o.mpi && !o.shard.whole())
    throw_invalid_argument("debian_text_stream", "--mpi and --shard: give one (--mpi shares every run by all processes, --shard splits the runs)");
  if (o.mpi && !data_parallel_program::mpi_available())
    throw_invalid_argument("debian_text_stream", "--mpi: this program was built without MPI (install libopenmpi-dev and openmpi-bin, reconfigure)");
  if (o.seeds.empty() || o.methods.empty()) throw_invalid_argument("debian_text_stream", "needs at least one seed and one method");
  if (o.width % o.heads != 0 || o.heads % o.kv_heads != 0 || (o.width / o.heads) % 2 != 0)
    throw_invalid_argument("debian_text_stream", concat("--width ", o.width, ", --heads ", o.heads, ", --kv-heads ", o.kv_heads,
                                                        ": heads must divide the width into even head sizes, kv-heads divide heads"));
  return o;
}

json::object config_json(const options& o) {
  json::object c;
  c.add_string("preset", o.preset).add("methods", o.methods).add("seeds", o.seeds).add("tasks", o.tasks)
      .add_string("trace", o.trace).add_number("train_per_task", o.train_per_task)
      .add_number("test_per_task", o.test_per_task).add_number("prompt_tokens", o.prompt_tokens)
      .add_number("answer_tokens", o.answer_tokens).add_number("max_new_tokens", o.max_new_tokens)
      .add_number("epochs", o.epochs).add_string("schedule", o.schedule).add_number("batch", o.batch)
      .add_number("learning_rate", o.learning_rate).add_number("clip", o.clip).add_number("threads", o.threads)
      .add_number("processes", job.size())
      .add_number("lora_rank", o.rank).add_number("lora_alpha", o.alpha).add("lora_targets", o.targets)
      .add_number("reference_strength", o.reference_strength).add_number("pull_strength", o.pull_strength)
      .add_number("thompson_scale", o.thompson_scale).add_number("vocabulary", o.vocabulary).add_number("width", o.width)
      .add_number("layers", o.layers).add_number("heads", o.heads).add_number("kv_heads", o.kv_heads)
      .add_number("intermediate", o.intermediate).add_number("pretrain_steps", o.pretrain_steps)
      .add_number("pretrain_batch", o.pretrain_batch).add_number("pretrain_tokens", o.pretrain_tokens)
      .add_number("pretrain_lr", o.pretrain_lr).add_number("corpus_bytes", double(o.corpus_bytes));
  return c;
}

llama_config base_config(const options& o) {
  llama_config c;
  c.vocab_size = o.vocabulary, c.hidden_size = o.width, c.num_hidden_layers = o.layers, c.num_attention_heads = o.heads;
  c.num_key_value_heads = o.kv_heads, c.intermediate_size = o.intermediate;
  c.max_position_embeddings = std::max(o.pretrain_tokens, o.prompt_tokens + o.answer_tokens + o.max_new_tokens);
  c.bos_token_id = 1, c.eos_token_ids = {2}, c.pad_token_id = 3, c.tie_word_embeddings = true;
  c.lora_targets = {}, c.seed = 1000;
  c.validate();
  return c;
}

// ------------------------------------------------------------------------------------------------- the tasks
std::vector<text_task> load_tasks(const options& o) {
  if (!o.trace.empty()) {
    static const std::map<std::string, std::string> trace_metrics = {
        {"C-STANCE", "accuracy"}, {"FOMC", "accuracy"},     {"ScienceQA", "accuracy"},  {"NumGLUE-cm", "accuracy"},
        {"NumGLUE-ds", "accuracy"}, {"Py150", "edit_similarity"}, {"MeetingBank", "rouge_l"}, {"20Minuten", "rouge_l"}};
    std::vector<std::filesystem::path> folders;
    for (const auto& entry : std::filesystem::directory_iterator(o.trace))
      if (entry.is_directory()) folders.push_back(entry.path());
    std::sort(folders.begin(), folders.end());
    if (folders.empty()) throw_runtime_error("debian_text_stream", concat("--trace ", o.trace, ": no task folders"));
    std::vector<text_task> tasks;
    for (const auto& f : folders) {
      const auto m = trace_metrics.find(f.filename().string());
      tasks.push_back(load_trace_task(f, m == trace_metrics.end() ? "rouge_l" : m->second));
    }
    return tasks;
  }
  const text_task_options t{.root = o.root, .train_size = std::size_t(o.train_per_task), .test_size = std::size_t(o.test_per_task)};
  return debian_text_tasks(t);
}

/// The tasks --tasks chose (all when it is empty), in stream order.
std::vector<text_task> chosen_tasks(const options& o, const std::vector<text_task>& all) {
  if (o.tasks.empty() || !o.trace.empty()) return all;
  std::vector<text_task> chosen;
  for (const auto& task : all)
    if (std::find(o.tasks.begin(), o.tasks.end(), task.name) != o.tasks.end()) chosen.push_back(task);
  return chosen;
}

// ------------------------------------------------------------------------------------------------- the base model
struct base_model {
  std::filesystem::path folder;
  sentencepiece_tokenizer tokenizer;
  nlohmann::json report;
};

/// Loads the cached base model and tokenizer, or trains both (see the file comment).
base_model load_or_pretrain(const options& o, const std::vector<text_task>& tasks) {
  namespace fs = std::filesystem;
  const auto started = std::chrono::steady_clock::now();
  const auto paragraphs = gcide_paragraphs(o.root, 7, o.corpus_bytes);  // one in seven: every letter of the dictionary
  std::vector<std::string> tokenizer_text;  // a quarter of the corpus, then the tasks' training text
  for (std::size_t i = 0; i < paragraphs.size(); i += 4) tokenizer_text.push_back(paragraphs[i]);
  for (const auto& t : tasks)
    for (const auto& e : t.train) tokenizer_text.push_back(e.prompt + e.answer);
  const llama_config config = base_config(o);
  const lm_pretrain_settings settings{.steps = o.pretrain_steps, .batch_size = o.pretrain_batch, .learning_rate = o.pretrain_lr,
                                      .warmup_steps = std::max<index_t>(1, o.pretrain_steps / 10), .seed = 1000,
                                      .report_every = std::max<index_t>(1, o.pretrain_steps / 10)};
  // the fingerprint: everything that decides the files (settings, the model, the text itself)
  std::string recipe = concat("text-base v1|", hf_llama_config_json(config).dump(), "|", settings.steps, ",", settings.batch_size,
                              ",", settings.learning_rate, ",", settings.warmup_steps, ",", settings.weight_decay, ",",
                              settings.clip_norm, ",", settings.seed, "|", o.pretrain_tokens, "|", o.vocabulary);
  std::uint64_t fingerprint = fnv1a64(recipe.data(), recipe.size());
  for (const auto& s : tokenizer_text) fingerprint = fnv1a64(s.data(), s.size() + 1, fingerprint);
  for (const auto& s : paragraphs) fingerprint = fnv1a64(s.data(), s.size() + 1, fingerprint);
  const fs::path folder = fs::path(o.cache) / concat("text-base-", detail::hex64(fingerprint));
  if (const std::string why = check_folder_manifest(folder, fingerprint); why.empty()) {
    std::fprintf(stderr, "base model: cached in %s\n", folder.string().c_str());
    std::ifstream in(folder / "pretraining.json");
    nlohmann::json report = nlohmann::json::parse(in, nullptr, false);
    return {folder, sentencepiece_tokenizer::from_file(folder / "tokenizer.model"), report.is_discarded() ? nlohmann::json{} : report};
  } else {
    std::fprintf(stderr, "base model: pre-training (%s)\n", why.c_str());
  }
  fs::create_directories(folder);
  // 1. the tokenizer: SentencePiece BPE, Llama-2's id layout with a pad token (0 unk, 1 BOS, 2 EOS, 3 pad)
  sentencepiece_training_options spm{.model_type = "bpe", .vocab_size = int(o.vocabulary), .seed = 1000};
  spm.extra["pad_id"] = "3";
  spm.extra["input_sentence_size"] = "200000";
  const std::string model_bytes = train_sentencepiece(tokenizer_text, spm);
  write_file_atomically(folder / "tokenizer.model", std::string_view(model_bytes));
  const auto tokenizer = sentencepiece_tokenizer::from_serialized(model_bytes);
  const double tokenizer_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // 2. the corpus: paragraphs 0, 20, 40, ... held out; the rest packed into training sequences
  std::vector<std::vector<std::int32_t>> train_docs, held_docs;
  std::size_t corpus_tokens = 0;
  for (std::size_t i = 0; i < paragraphs.size(); ++i) {
    auto ids = tokenizer.encode(paragraphs[i]);
    corpus_tokens += ids.size();
    (i % 20 == 0 ? held_docs : train_docs).push_back(std::move(ids));
  }
  const auto train = pack_sequences(train_docs, tokenizer.bos_id(), tokenizer.eos_id(), o.pretrain_tokens);
  auto held_out = pack_sequences(held_docs, tokenizer.bos_id(), tokenizer.eos_id(), o.pretrain_tokens);
  if (held_out.size() > 64) held_out.resize(64);
  if (train.empty() || held_out.empty())
    throw_runtime_error("debian_text_stream", concat("the corpus (", corpus_tokens, " tokens) is too small for sequences of ",
                                                     o.pretrain_tokens, " tokens; raise --corpus-bytes"));
  // 3. pre-training, every parameter
  F backend;
  llama<F> model(backend, config);
  const double initial = causal_lm_loss(model, held_out);
  const auto r = pretrain_causal_lm(model, train, settings, [&](index_t step, double loss) {
    std::fprintf(stderr, "\rbase model: step %lld / %lld, loss %.3f   ", (long long)step, (long long)settings.steps, loss);
  });
  const double held = causal_lm_loss(model, held_out);
  std::fprintf(stderr, "\nbase model: %lld steps, %lld tokens in %.0f s; held-out perplexity %.1f (untrained %.1f)\n",
               (long long)r.steps, (long long)r.tokens, r.seconds, std::exp(held), std::exp(initial));
  save_hf_llama(model, folder);
  nlohmann::json report = {{"corpus", "dict-gcide, 1913 Webster paragraphs, one in seven"},
                           {"corpus_paragraphs", paragraphs.size()}, {"corpus_tokens", corpus_tokens},
                           {"train_sequences", train.size()}, {"held_out_sequences", held_out.size()},
                           {"sequence_tokens", o.pretrain_tokens}, {"steps", r.steps}, {"tokens_seen", r.tokens},
                           {"seconds", r.seconds}, {"tokenizer_seconds", tokenizer_seconds},
                           {"threads", runner_threads()}, {"first_loss", r.first_loss}, {"final_train_loss", r.final_loss},
                           {"held_out_loss_untrained", initial}, {"held_out_loss", held},
                           {"held_out_perplexity", std::exp(held)}, {"held_out_perplexity_untrained", std::exp(initial)},
                           {"parameters", trainable_parameter_count(parameters(model))}};
  write_file_atomically(folder / "pretraining.json", std::string_view(report.dump(2)));
  write_folder_manifest(folder, fingerprint, {"config.json", "model.safetensors", "tokenizer.model", "pretraining.json"});
  return {folder, sentencepiece_tokenizer::from_serialized(model_bytes), report};
}

// ------------------------------------------------------------------------------------------------- one run
/// Thrown when a run stops where --stop-after-task asked (after its checkpoint was written).
struct run_stopped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct run_record {
  std::string method;
  std::uint64_t seed;
  run_result result;
  std::vector<tree_node> tree;
  accuracy_matrix losses = accuracy_matrix(0);  ///< held-out answer loss after task i on task j (held_out_loss)
  double base_loss = std::nan("");             ///< task 0's held-out answer loss before any training
};

/// The released scripts' epochs per task for 8 tasks.
std::vector<index_t> schedule_for(const options& o, const std::string& method, index_t tasks) {
  if (o.schedule == "equal") return {};
  if (tasks != 8) throw_invalid_argument("debian_text_stream", concat("--schedule paper is for the 8-task stream, not ", tasks, " tasks"));
  if (method.starts_with("TreeLoRA")) return {2, 1, 3, 2, 1, 2, 2, 3};
  return {5, 3, 7, 5, 3, 5, 5, 7};
}

/// A model of factorisation Fz on the cached base weights (LoRA on `targets`).
template <class Fz>
llama<F, Fz> make_model(F& backend, const base_model& base, const options& o, std::uint64_t seed, std::vector<std::string> targets,
                        const typename Fz::config& adapter) {
  llama_config defaults = base_config(o);
  defaults.lora_targets = std::move(targets), defaults.lora_rank = o.rank, defaults.lora_alpha = o.alpha, defaults.seed = seed;
  const hf_checkpoint checkpoint = read_hf_checkpoint(base.folder);
  llama<F, Fz> model(backend, hf_llama_config(checkpoint.config, defaults), adapter);
  load_hf_llama(model, checkpoint.tensors);
  return model;
}

template <class M>
void write_answers(const std::filesystem::path& path, M& model, const token_stream& stream);

run_record run_method(const std::string& method, const options& o, std::uint64_t seed, const token_stream& stream,
                      const base_model& base) {
  F backend;
  const auto answers = [&](auto& model) {  // what the trained model answers (the first seed's runs)
    if (seed == o.seeds.front() && o.shard.whole() && job.reports()) write_answers(std::filesystem::path(o.out) / concat("answers_", method, ".txt"), model, stream);
  };
  const auto optimizer = [&](parameter_list<F> p) {
    return adam<F>(std::move(p), {.learning_rate = o.learning_rate, .beta2 = 0.95});  // Adam (0.9, 0.95), the released scripts'
  };
  runner_options run{.epochs_per_task = o.epochs, .epochs_schedule = schedule_for(o, method, index_t(stream.tasks.size())),
                     .batch_size = o.batch, .eval_batch_size = 32, .clip_norm = o.clip,  // 32: one generation per task
                     .score_later_tasks = false,  // after task n: tasks 0..n + 1 (forward transfer reads n + 1)
                     .seed = seed,
                     .guard = {.enabled = o.divergence_factor > 0, .factor = o.divergence_factor},
                     .checkpoint = std::filesystem::path(o.out) / "checkpoints" / concat(method, "-seed", seed, ".safetensors"),
                     .resume = o.resume, .checkpoint_every_steps = o.checkpoint_every,
                     .communicator = job.communicator()};
  progress_bar progress_line(concat("[", method, " seed ", seed, "]"), job.progress_output());
  struct with_stop {  // the progress line and --stop-after-task, as one callback
    progress_bar& line;
    index_t stop_before;
    void on_task_begin(const training_context& c) {
      if (stop_before > 0 && c.task == stop_before)
        throw run_stopped(concat("stopped after task ", stop_before, " as asked (--stop-after-task)"));
      line.on_task_begin(c);
    }
    void on_step(const training_context& c, double r) { line.on_step(c, r); }
    void on_task_end(const training_context& c, double s) { line.on_task_end(c, s); }
  } progress{progress_line, o.stop_after_task};
  run_record record{method, seed, run_result{method, accuracy_matrix(0), accuracy_matrix(0), accuracy_matrix(0)}, {}};
  // The held-out answer loss after each task (no generation): what each task taught and what later ones undid, even
  // where a small model's answers score near zero. Task 0's loss before training (the model on the base weights,
  // also when a run resumes) anchors the first task's drop.
  const auto run_with_losses = [&](auto& model, auto& strategy) {
    held_out_loss losses(model, stream, 32, false, run.communicator);  // data-parallel: one rank a task
    record.base_loss = losses.loss(0);
    if (method == "Joint") {
      record.result = run_joint(model, stream, strategy, optimizer, run, progress);
      losses.record(index_t(stream.tasks.size()) - 1);
    } else {
      record.result = run_stream(model, stream, strategy, optimizer, run, progress, losses);
    }
    record.losses = losses.losses();
  };
  const standard_lora::config lora{.rank = o.rank, .alpha = o.alpha, .seed = seed};
  if (method == "SeqLoRA" || method == "Joint") {
    auto model = make_model<standard_lora>(backend, base, o, seed, o.targets, lora);
    seq_lora strategy;
    run_with_losses(model, strategy);
    answers(model);
  } else if (method == "TreeLoRA-reference") {
    auto model = make_model<standard_lora>(backend, base, o, seed, o.targets, lora);
    // the released code's tree is as deep as there are LoRA modules
    tree_lora_reference<F> strategy({.reference_strength = o.reference_strength,
                                     .tree = {.max_depth = index_t(model.adapters().size())}, .seed = seed});
    run_with_losses(model, strategy);
    answers(model);
    record.tree = strategy.tree().nodes();
  } else if (method == "TreeLoRA-paper" || method == "TreeLoRA-Thompson") {
    auto model = make_model<standard_lora>(backend, base, o, seed, o.targets, lora);
    const tree_lora_config c{.pull_strength = o.pull_strength, .tree = {.max_depth = index_t(model.adapters().size())}, .seed = seed};
    if (method == "TreeLoRA-paper") {
      tree_lora_paper<F> strategy(c);
      run_with_losses(model, strategy);
      answers(model);
      record.tree = strategy.tree().nodes();
    } else {
      tree_lora_thompson<F> strategy(c, o.thompson_scale);
      run_with_losses(model, strategy);
      answers(model);
      record.tree = strategy.tree().nodes();
    }
  } else if (method == "O-LoRA") {
    auto model = make_model<olora>(backend, base, o, seed, o.targets, {.rank = o.rank, .alpha = o.alpha, .seed = seed});
    olora_strategy<F> strategy;
    run_with_losses(model, strategy);
    answers(model);
  } else if (method == "InfLoRA") {
    std::vector<std::string> targets = o.targets;  // InfLoRA adapts W_k where the others adapt W_q
    std::replace(targets.begin(), targets.end(), std::string("q_proj"), std::string("k_proj"));
    targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
    auto model = make_model<inflora>(backend, base, o, seed, targets, {.rank = o.rank, .seed = seed});
    inflora_strategy strategy({.collection_batch_size = 16});
    run_with_losses(model, strategy);
    answers(model);
  } else if (method == "DualLoRA") {
    // A language model has no CLS token: every token is gated by its own input (dual_feature::every_token), and the
    // task score is the residual bases' energy at the last adapter (no class labels; nothing to calibrate in text).
    auto model = make_model<dual_lora>(backend, base, o, seed, o.targets,
                                       {.rank = o.rank, .feature = dual_feature::every_token, .seed = seed});
    dual_lora_strategy<F> strategy({.task_score = dual_task_score::energy, .task_layers = dual_task_layers::last,
                                    .calibration = dual_calibration::none, .collection_batch_size = 16});
    run_with_losses(model, strategy);
    answers(model);
  } else {
    throw_invalid_argument("debian_text_stream", concat("unknown method '", method, "'"));
  }
  record.result.method = method;
  record.result.seed = seed;
  return record;
}

// ------------------------------------------------------------------------------------------------- reporting
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? std::nan("") : s / double(v.size());
}
double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}
double or_nan(const std::function<double()>& f) {
  try {
    return f();
  } catch (const std::invalid_argument&) {
    return std::nan("");
  }
}

/// The held-out answer loss figures of a run: the final mean over the tasks; learned, the mean drop of each task's
/// loss over its own training (task n: the loss after task n - 1, or on the base weights for task 0, minus the loss
/// after task n); forgot, the mean rise of each earlier task's loss from the end of its training to the end of the
/// stream (positive: forgetting). NaN where the matrix does not hold what a figure needs (a joint run: final only).
struct loss_summary {
  double final_loss = std::nan(""), learned = std::nan(""), forgot = std::nan("");
};
loss_summary summarise_losses(const run_record& r) {
  loss_summary out;
  const accuracy_matrix& m = r.losses;
  const index_t tasks = m.tasks();
  if (tasks == 0) return out;
  const auto finite_mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v)
      if (!std::isfinite(x)) return std::nan("");
      else s += x;
    return v.empty() ? std::nan("") : s / double(v.size());
  };
  std::vector<double> last, drops, rises;
  for (index_t j = 0; j < tasks; ++j) last.push_back(m(tasks - 1, j));
  for (index_t n = 0; n < tasks; ++n) drops.push_back((n == 0 ? r.base_loss : m(n - 1, n)) - m(n, n));
  for (index_t j = 0; j + 1 < tasks; ++j) rises.push_back(m(tasks - 1, j) - m(j, j));
  out.final_loss = finite_mean(last), out.learned = finite_mean(drops), out.forgot = finite_mean(rises);
  return out;
}

void write_reports(const options& o, const std::vector<run_record>& records, const std::vector<std::string>& names,
                   const nlohmann::json& base_report) {
  namespace fs = std::filesystem;
  const fs::path out = o.out;
  std::vector<run_result> results;
  for (const auto& r : records) results.push_back(r.result);
  json::object config = config_json(o);
  config.add("task_names", names);
  write_results(out, results, config.str());
  write_file_atomically(out / "base_model.json", std::string_view(base_report.dump(2)));
  nlohmann::json losses = nlohmann::json::array();
  for (const auto& r : records) {
    nlohmann::json rows = nlohmann::json::array();
    for (index_t i = 0; i < r.losses.tasks(); ++i) {
      nlohmann::json row = nlohmann::json::array();
      for (index_t j = 0; j < r.losses.tasks(); ++j)
        row.push_back(std::isfinite(r.losses(i, j)) ? nlohmann::json(r.losses(i, j)) : nlohmann::json(nullptr));
      rows.push_back(std::move(row));
    }
    const loss_summary l = summarise_losses(r);
    const auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
    losses.push_back({{"method", r.method}, {"seed", r.seed}, {"base_loss_task0", number(r.base_loss)},
                      {"final", number(l.final_loss)}, {"learned", number(l.learned)}, {"forgot", number(l.forgot)},
                      {"matrix", std::move(rows)}});
  }
  write_file_atomically(out / "answer_loss.json", std::string_view(losses.dump(1)));
  std::map<std::string, std::vector<const run_record*>> by_method;
  for (const auto& r : records) by_method[r.method].push_back(&r);
  std::vector<svg::series> lines;
  for (const auto& entry : by_method) {
    const std::string& method = entry.first;
    const auto& runs = entry.second;
    const index_t tasks = runs[0]->result.task_il.tasks();
    std::vector<double> sum(std::size_t(tasks * tasks), 0.0), curve(std::size_t(tasks), 0.0), x(static_cast<std::size_t>(tasks));
    for (const auto* r : runs)
      for (index_t i = 0; i < tasks; ++i) {
        double seen = 0;
        for (index_t j = 0; j < tasks; ++j) {
          sum[std::size_t(i * tasks + j)] += r->result.task_il(i, j) / double(runs.size());
          if (j <= i) seen += r->result.task_il(i, j) / double(i + 1);
        }
        curve[std::size_t(i)] += 100 * seen / double(runs.size());
      }
    for (index_t i = 0; i < tasks; ++i) x[std::size_t(i)] = double(i + 1);
    write_file_atomically(out / ("heatmap_" + method + ".svg"), [&](std::ostream& s) {
      svg::heat_map(s, sum, std::size_t(tasks), std::size_t(tasks),
                    concat(method, ": score (%) after task i on task j, mean of ", runs.size(), " seeds"), "after T", "T");
    });
    lines.push_back({method, x, curve});
    if (!runs[0]->tree.empty())
      write_file_atomically(out / ("tree_" + method + ".svg"), [&](std::ostream& s) {
        svg::tree_diagram(s, runs[0]->tree, concat(method, ": the learned task tree (seed ", runs[0]->seed, ")"));
      });
  }
  write_file_atomically(out / "score_after_each_task.svg", [&](std::ostream& s) {
    svg::line_chart(s, lines, {.title = "Debian text stream: mean score on the tasks seen so far", .x_label = "tasks learned",
                               .y_label = "score (%)"});
  });
}

void print_summary(const std::vector<run_record>& records, const std::vector<std::string>& names) {
  std::vector<std::string> order;
  for (const auto& r : records)
    if (std::find(order.begin(), order.end(), r.method) == order.end()) order.push_back(r.method);
  double seq_seconds = std::nan("");
  std::printf("\n%-20s %15s %15s %6s %7s %7s %9s %9s %8s", "method", "OP %", "BWT %", "loss", "learned", "forgot", "seconds",
              "vs Seq", "peak MB");
  for (const auto& n : names) std::printf(" %12.12s", n.c_str());
  std::printf("\n");
  for (const auto& method : order) {
    std::vector<double> op, bwt, sec, loss, learned, forgot;
    std::vector<std::vector<double>> per_task(names.size());
    double peak = 0;
    for (const auto& r : records) {
      if (r.method != method) continue;
      const auto& m = r.result.task_il;
      op.push_back(100 * final_average_accuracy(m));
      bwt.push_back(100 * or_nan([&] { return backward_transfer(m); }));
      sec.push_back(r.result.seconds);
      const loss_summary l = summarise_losses(r);
      loss.push_back(l.final_loss), learned.push_back(l.learned), forgot.push_back(l.forgot);
      for (std::size_t j = 0; j < names.size(); ++j) per_task[j].push_back(100 * m(m.tasks() - 1, index_t(j)));
      peak = std::max(peak, r.result.peak_bytes.empty() ? 0.0 : double(r.result.peak_bytes.back()) / 1048576.0);
    }
    if (method == "SeqLoRA") seq_seconds = mean(sec);
    const auto cell = [](const std::vector<double>& v) {
      char b[32];
      if (std::isnan(v[0])) std::snprintf(b, sizeof b, "-");
      else std::snprintf(b, sizeof b, "%.2f +- %.2f", mean(v), stddev(v));
      return std::string(b);
    };
    std::printf("%-20s %15s %15s %6.2f %7.2f %7.2f %9.1f %9.2f %8.0f", method.c_str(), cell(op).c_str(), cell(bwt).c_str(),
                mean(loss), mean(learned), mean(forgot), mean(sec), mean(sec) / seq_seconds, peak);
    for (const auto& t : per_task) std::printf(" %12.1f", mean(t));
    std::printf("\n");
  }
  std::printf("OP: mean final score over the tasks; BWT: paper sign (forgetting positive); mean +- std over seeds;\n"
              "loss: final held-out answer loss (nats per token, mean over tasks); learned: its mean drop over each task's own\n"
              "training; forgot: its mean rise on earlier tasks by the end (positive: forgetting); means over seeds;\n"
              "vs Seq: training time over SeqLoRA's (same run); per task: the final score (%%).\n");
}

/// A few test prompts per task and the last model's answers, for reading.
template <class M>
void write_answers(const std::filesystem::path& path, M& model, const token_stream& stream) {
  model.set_training(false);
  write_file_atomically(path, [&](std::ostream& out) {
    for (const auto& t : stream.tasks) {
      const std::size_t n = std::min<std::size_t>(3, t.test.size());
      std::vector<std::vector<index_t>> prompts;
      for (std::size_t i = 0; i < n; ++i) prompts.push_back(t.test[i].prompt);
      const auto g = generate_greedy(model, prompts, {.max_new_tokens = stream.max_new_tokens, .stop_ids = {stream.eos_id}});
      for (std::size_t i = 0; i < n; ++i) {
        std::vector<std::int32_t> prompt(t.test[i].prompt.begin() + 1, t.test[i].prompt.end()), answer;
        for (index_t id : g.tokens[i])
          if (id != stream.eos_id) answer.push_back(std::int32_t(id));
        out << "== " << t.name << " ==\n" << stream.decode(prompt) << "-> " << stream.decode(answer) << "\n   (reference: "
            << t.test_answers[i] << ")\n";
      }
    }
  });
}

}  // namespace

int main(int argc, char** argv) try {
  const options o = parse(argc, argv);
  if (o.mpi) job.start_mpi(argc, argv);
#if defined(_OPENMP)
  omp_set_num_threads(static_cast<int>(o.threads));
#endif
  require_writable_folder(o.out);
  if (job.reports()) {
    std::fprintf(stderr, "treelora %d.%d.%d: Debian text stream (%s preset), methods:", version_major, version_minor, version_patch,
                 o.preset.c_str());
    for (const auto& m : o.methods) std::fprintf(stderr, " %s", m.c_str());
    if (job.size() > 1) std::fprintf(stderr, "; data-parallel over %d processes", job.size());
    std::fprintf(stderr, "\n");
  }
  const std::vector<text_task> all_tasks = load_tasks(o);
  // (the tokenizer reads every task's training text; --mpi: rank 0 pre-trains into the cache, then the others read it)
  const base_model base = job.rank_0_first([&] { return load_or_pretrain(o, all_tasks); });
  if (o.prepare_only) {
    std::printf("base model ready in %s (held-out perplexity %.1f)\n", base.folder.string().c_str(),
                base.report.value("held_out_perplexity", std::nan("")));
    return 0;
  }
  const std::vector<text_task> tasks = chosen_tasks(o, all_tasks);
  std::vector<std::string> names;
  for (const auto& t : tasks) names.push_back(t.name);
  const token_stream stream = tokenize_stream(o.trace.empty() ? "debian-text" : "trace", tasks, base.tokenizer, 3,
                                              {.max_prompt_tokens = o.prompt_tokens, .max_answer_tokens = o.answer_tokens},
                                              o.max_new_tokens);
  std::vector<run_record> records;
  std::vector<std::string> stopped;
  std::int64_t run_index = -1;
  for (const std::uint64_t seed : o.seeds)
    for (const auto& method : o.methods) {
      if (!o.shard.takes(++run_index)) continue;
      try {
        records.push_back(run_method(method, o, seed, stream, base));
      } catch (const run_stopped& e) {
        std::fprintf(stderr, "\n%s seed %llu: %s\n", method.c_str(), (unsigned long long)seed, e.what());
        stopped.push_back(concat(method, " seed ", seed));
        continue;
      }
      const auto& r = records.back().result;
      std::printf("\n%s, seed %llu: score (%%) after task i (rows) on task j (columns):\n%s", method.c_str(),
                  (unsigned long long)seed, r.task_il.to_table().c_str());
      std::fflush(stdout);
      if (o.shard.whole() && job.reports()) write_reports(o, records, names, base.report);
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
  if (job.reports()) {  // what the base model answers, for reading (the fine-tuned models' answers are scored in the tables)
    F backend;
    auto model = make_model<standard_lora>(backend, base, o, 0, {}, {});
    write_answers(std::filesystem::path(o.out) / "answers_base_model.txt", model, stream);
  }
  print_summary(records, names);
  std::printf("base model: held-out perplexity %.1f (untrained %.1f)\n", base.report.value("held_out_perplexity", std::nan("")),
              base.report.value("held_out_perplexity_untrained", std::nan("")));
  std::printf("wrote %s/results.json, results.csv and SVG plots\n", o.out.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "debian_text_stream: %s\n", e.what());
  job.abort_job(1);  // --mpi: the other processes would wait for this one
  return 1;
}
