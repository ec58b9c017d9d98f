// Bad input to the runner and the API, and results that cannot be lost: every check here failed (crashed, hung,
// wrapped, or passed silently) before the fix it guards.
#include "test_support.hpp"

#include <sys/resource.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "treelora/io/atomic_file.hpp"
#include "treelora/io/json.hpp"
#include "treelora/io/cli.hpp"
#include "treelora/strategy/duallora.hpp"
#include "treelora/metrics/report.hpp"

using namespace treelora;
using F = cpu_backend<float>;
namespace fs = std::filesystem;

namespace {
auto adam_factory(double lr) {
  return [lr](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = lr}); };
}
planted_hierarchy small_planted(std::uint64_t seed = 1) {
  return make_planted_hierarchy({.train_per_task = 32, .test_per_task = 16, .seed = seed});
}
mlp_classifier<F> small_mlp(F& backend, const task_stream& stream) {
  return mlp_classifier<F>(backend, {.inputs = 16, .hidden = 16, .classes = stream.total_classes, .seed = 1});
}
std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
fs::path fresh_folder(const std::string& name) {
  const fs::path folder = fs::temp_directory_path() / concat("treelora-hardening-", ::getpid(), "-", name);
  fs::remove_all(folder);
  fs::create_directories(folder);
  return folder;
}

/// A model that returns fewer logit rows than it was given examples (a broken user model).
struct short_model {
  using backend_type = F;
  F* backend_;
  tensor<F> logits;
  F& backend() { return *backend_; }
  void set_training(bool) {}
  const_tensor_view<F> forward(const_tensor_view<F> x) {
    logits.resize(*backend_, shape{std::max<index_t>(1, x.shape()[0] - 1), 4});
    logits.fill(0);
    return logits;
  }
  const_tensor_view<F> backward(const_tensor_view<F> g) { return g; }
  void collect_parameters(parameter_list<F>&, std::string_view) {}
  std::vector<adapter_view<F>> adapters() { return {}; }
};
}  // namespace

TEST_CASE("evaluate rejects a model that returns fewer logit rows than examples") {
  F backend;
  short_model model{&backend, {}};
  labelled_set set{shape{3}, std::vector<float>(12, 0.f), {0, 1, 2, 3}};
  const std::vector<index_t> classes = {0, 1, 2, 3};
  CHECK_THROWS_WITH_AS(evaluate(model, set, classes, classes, 4), doctest::Contains("logits of shape [3, 4] for a batch of 4"),
                       std::invalid_argument);
}

TEST_CASE("the MLP rejects inputs of the wrong width instead of reshaping them") {
  F backend;
  mlp_classifier<F> model(backend, {.inputs = 16, .hidden = 8, .classes = 4, .seed = 1});
  tensor<F> x(backend, shape{4, 8});  // 32 values = 2 rows of 16, accepted silently before
  CHECK_THROWS_WITH_AS(model.forward(x), doctest::Contains("is not a batch of 16 features"), std::invalid_argument);
}

TEST_CASE("every task's sets are validated before training, naming the task and the sizes") {
  F backend;
  auto planted = small_planted();
  auto model = small_mlp(backend, planted.stream);
  seq_lora strategy;
  SUBCASE("features that do not match the labels (heap overflow in the batch loader before)") {
    planted.stream.tasks[2].train.features.resize(planted.stream.tasks[2].train.features.size() - 5);
    CHECK_THROWS_WITH_AS(run_stream(model, planted.stream, strategy, adam_factory(1e-2), {}),
                         doctest::Contains("task 2"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(subset(planted.stream.tasks[2].train, std::vector<index_t>{0, 1}),
                         doctest::Contains("feature values for"), std::invalid_argument);
  }
  SUBCASE("a test label outside the head") {
    planted.stream.tasks[1].test.labels[3] = planted.stream.total_classes;
    CHECK_THROWS_WITH_AS(run_stream(model, planted.stream, strategy, adam_factory(1e-2), {}),
                         doctest::Contains("test set: example 3 has label"), std::invalid_argument);
  }
  SUBCASE("a label that is not one of the task's classes") {
    planted.stream.tasks[0].train.labels[0] = planted.stream.tasks[1].classes[0];
    CHECK_THROWS_WITH_AS(run_stream(model, planted.stream, strategy, adam_factory(1e-2), {}),
                         doctest::Contains("not one of the task's classes"), std::invalid_argument);
  }
  SUBCASE("NaN in the test inputs") {
    planted.stream.tasks[3].test.features[17] = std::nanf("");
    CHECK_THROWS_WITH_AS(run_stream(model, planted.stream, strategy, adam_factory(1e-2), {}),
                         doctest::Contains("test set: example 1 has a non-finite value"), std::invalid_argument);
  }
}

TEST_CASE("runner and optimiser settings are checked, naming the setting") {
  F backend;
  auto planted = small_planted();
  auto model = small_mlp(backend, planted.stream);
  seq_lora strategy;
  const auto fails = [&](runner_options options, const char* text) {
    CHECK_THROWS_WITH_AS(run_stream(model, planted.stream, strategy, adam_factory(1e-2), options), doctest::Contains(text),
                         std::invalid_argument);
  };
  fails({.eval_batch_size = 0}, "eval_batch_size 0");  // hung before
  fails({.eval_batch_size = -3}, "eval_batch_size -3");  // "vector::_M_default_append" before
  fails({.epochs_per_task = 0}, "epochs_per_task 0");
  fails({.epochs_per_task = -1}, "epochs_per_task -1");
  fails({.epochs_schedule = {1, 0, 1, 1, 1, 1, 1, 1}}, "epochs_schedule[1]");
  fails({.clip_norm = -1}, "clip_norm -1");
  fails({.clip_norm = std::nan("")}, "clip_norm");
  fails({.batch_size = 0}, "batch_size 0");
  CHECK_THROWS_WITH_AS(adam<F>(parameters(model), {.epsilon = 0}), doctest::Contains("epsilon 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(adam<F>(parameters(model), {.epsilon = -1e-8}), doctest::Contains("epsilon"), std::invalid_argument);
  CHECK_THROWS_AS(adam<F>(parameters(model), {.learning_rate = std::nan("")}), std::invalid_argument);
}

TEST_CASE("a diverging run stops with an error naming task, epoch and step; the final loss of each task is recorded") {
  F backend;
  auto planted = small_planted();
  seq_lora strategy;
  {
    auto model = small_mlp(backend, planted.stream);
    const auto result = run_stream(model, planted.stream, strategy, adam_factory(1e-2), {.epochs_per_task = 2, .seed = 1});
    REQUIRE(result.final_loss.size() == planted.stream.tasks.size());
    for (double loss : result.final_loss) CHECK((loss > 0 && loss < 2));
  }
  {  // learning rate 10: without the guard the run finishes at chance with exit 0
    auto model = small_mlp(backend, planted.stream);
    runner_options options{.epochs_per_task = 8, .batch_size = 8, .seed = 1, .guard = {.enabled = true, .factor = 4, .window = 8}};
    try {
      (void)run_stream(model, planted.stream, strategy, adam_factory(10.0), options);
      FAIL("the divergence guard did not fire");
    } catch (const std::runtime_error& e) {
      const std::string message = e.what();
      CHECK(message.find("training diverged in task ") != std::string::npos);
      CHECK(message.find(", epoch ") != std::string::npos);
      CHECK(message.find(", step ") != std::string::npos);
      CHECK(message.find("lower the learning rate") != std::string::npos);
    }
  }
  {  // a NaN loss names where it happened
    auto model = small_mlp(backend, planted.stream);
    try {
      (void)run_stream(model, planted.stream, strategy, adam_factory(1e30), {.epochs_per_task = 4, .batch_size = 8, .seed = 1});
      FAIL("a learning rate of 1e30 trained without a non-finite loss");
    } catch (const std::runtime_error& e) {
      const std::string message = e.what();
      INFO(message);
      CHECK(message.rfind("task ", 0) == 0);
      CHECK(message.find(", epoch ") != std::string::npos);
      CHECK(message.find("not finite") != std::string::npos);
    }
  }
}

TEST_CASE("files are written atomically: complete or untouched, failures reported, no temporary files left") {
  const fs::path folder = fresh_folder("atomic");
  const fs::path file = folder / "results.json";
  write_file_atomically(file, std::string_view("first\n"));
  CHECK(read_text(file) == "first\n");
  write_file_atomically(file, [](std::ostream& out) { out << "second " << 2 << "\n"; });
  CHECK(read_text(file) == "second 2\n");
  SUBCASE("a folder that does not exist") {
    CHECK_THROWS_WITH_AS(write_file_atomically(folder / "missing" / "x.json", std::string_view("x")),
                         doctest::Contains("cannot create a temporary file"), std::runtime_error);
    CHECK_THROWS_WITH_AS(require_writable_folder(file / "below-a-file"), doctest::Contains("below-a-file"), std::runtime_error);
  }
  SUBCASE("a full disk (a file-size limit) leaves the old file and no temporary file") {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit saved{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    rlimit small = saved;
    small.rlim_cur = 1000;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
    const std::string big(5000, 'x');
    CHECK_THROWS_WITH_AS(write_file_atomically(file, std::string_view(big)), doctest::Contains("write failed"),
                         std::runtime_error);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &saved) == 0);
    std::signal(SIGXFSZ, SIG_DFL);
    CHECK(read_text(file) == "second 2\n");
  }
  SUBCASE("concurrent writers of one file never collide (a fixed '.tmp' name failed 42 of 600 before)") {
    std::vector<std::thread> writers;
    std::atomic<int> failures{0};
    for (int w = 0; w < 4; ++w)
      writers.emplace_back([&, w] {
        for (int i = 0; i < 150; ++i) try {
            write_file_atomically(file, std::string_view(std::string(100 + w, char('a' + w))));
          } catch (...) {
            ++failures;
          }
      });
    for (auto& t : writers) t.join();
    CHECK(failures == 0);
    const std::string text = read_text(file);
    REQUIRE(text.size() >= 100);
    CHECK(text == std::string(text.size(), text[0]));  // one writer's complete contents
  }
  std::size_t leftovers = 0;
  for (const auto& entry : fs::directory_iterator(folder)) leftovers += entry.path().filename().string().find(".tmp-") != std::string::npos;
  CHECK(leftovers == 0);
  fs::remove_all(folder);
}

TEST_CASE("JSON numbers: integers exactly, doubles round-trip") {
  CHECK(json::number(std::uint64_t(12345678901)) == "12345678901");
  CHECK(json::number(std::uint64_t(18446744073709551615ULL)) == "18446744073709551615");
  CHECK(json::number(index_t(-42)) == "-42");
  for (double v : {0.1, 1.0 / 3.0, 123456.78901234567, 1e-300, -2.5e17, 5e-324}) {
    CHECK(std::strtod(json::number(v).c_str(), nullptr) == v);
    CHECK(json::parse(json::number(v)).get<double>() == v);
  }
  CHECK(json::number(std::nan("")) == "null");
  CHECK(json::number(-INFINITY) == "null");
  CHECK(json::quote("a\"b\\c\n\x01") == R"("a\"b\\c\n\u0001")");
}

TEST_CASE("the JSON reader (nlohmann::json with the project's rules) limits nesting, rejects duplicate keys and "
          "malformed input without reading past the end") {
  // 50,000 '[' used to overflow the stack of the old hand-written reader; nesting stays bounded for whoever walks
  // the value recursively.
  CHECK_THROWS_WITH_AS(json::parse(std::string(50000, '['), "deep.json"),
                       doctest::Contains("deep.json: nesting deeper than 512 levels"), std::runtime_error);
  CHECK(json::parse(std::string(512, '[') + std::string(512, ']')).size() == 1);
  CHECK_THROWS_AS(json::parse(std::string(513, '[') + std::string(513, ']')), std::runtime_error);
  std::string objects;
  for (int i = 0; i < 600; ++i) objects += "{\"a\":";
  CHECK_THROWS_WITH_AS(json::parse(objects), doctest::Contains("nesting deeper than 512"), std::runtime_error);
  // nlohmann::json alone keeps the last of two equal keys: here it is an error, at any depth.
  CHECK_THROWS_WITH_AS(json::parse(R"({"a": 1, "b": {"c": 2, "c": 3}})", "dup.json"),
                       doctest::Contains("dup.json: the key \"c\" appears twice in one object"), std::runtime_error);
  CHECK_THROWS_AS(json::parse(R"({"a": 1, "a": 1})"), std::runtime_error);
  CHECK(json::parse(R"({"a": {"c": 1}, "b": {"c": 2}})").at("b").at("c") == 2);  // equal keys in two objects

  const json::value v = json::parse(R"( {"a": [1, -2.5e1, true, null, "x\"y"], "b": {"c": false}, "d": []} )");
  CHECK(v.at("a").size() == 5);
  CHECK(v.at("a").at(1).get<double>() == -25.0);
  CHECK(v.at("a").at(2).get<bool>());
  CHECK(v.at("a").at(3).is_null());
  CHECK(v.at("a").at(4).get<std::string>() == "x\"y");
  CHECK_FALSE(v.at("b").at("c").get<bool>());
  CHECK(v.at("d").empty());
  CHECK(v.begin().key() == "a");  // insertion order kept
  CHECK(json::parse("-0").get<double>() == 0.0);
  CHECK(json::parse("12.5e-1").get<double>() == 1.25);
  CHECK(json::parse("[1E2]").at(0).get<double>() == 100.0);
  CHECK(json::parse("18446744073709551615").get<std::uint64_t>() == 18446744073709551615ULL);  // never via double
  CHECK(json::parse("\"\\u00e9\"").get<std::string>() == "\u00e9");
  // Malformed: every one is an error (the numbers follow RFC 8259 strictly), none reads past the end of its text.
  for (const char* bad :
       {"-",        "1.",        "1e",          "1e+",  ".5",    "01",    "-Infinity", "NaN",       "+1",
        "0x10",     "\"\\u12\"", "\"\\u12G4\"", "\"\\", "\"abc", "[1,",   "{\"a\"",    "{\"a\":",    "{\"a\":1,}",
        "tru",      "nul",       "[",           "",     "{",     "[1,]",  "{\"a\" 1}",  "[1 2]",     "{} x"}) {
    INFO(std::string(bad));
    CHECK_THROWS_AS(json::parse(bad), std::runtime_error);
  }
  // Cut at every byte, a valid document is an error, never a read past the end (the fuzzer checks with ASan).
  const std::string good = R"({"a": [1, -2.5e1, true, null, "x\"y\u0041"], "b": {"c": false}})";
  for (std::size_t n = 0; n < good.size(); ++n) {
    INFO(good.substr(0, n));
    CHECK_THROWS_AS(json::parse(good.substr(0, n)), std::runtime_error);
  }
  CHECK(json::parse(good).at("a").size() == 5);
  CHECK_THROWS_WITH_AS(json::parse_file("/nonexistent/x.json"), doctest::Contains("cannot open /nonexistent/x.json"),
                       std::runtime_error);
}

TEST_CASE("command-line values name the option and are range-checked, never wrapped") {
  CHECK(cli::parse_unsigned("--seeds", "12345678901") == 12345678901ULL);
  CHECK_THROWS_WITH_AS(cli::parse_unsigned("--seeds", "-1"), doctest::Contains("--seeds: '-1' is not a non-negative integer"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_unsigned("--seeds", "99999999999999999999"), doctest::Contains("--seeds"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_integer("--epochs", "0", 1, 100), doctest::Contains("--epochs: 0 is outside [1, 100]"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_integer("--batch", "12x"), doctest::Contains("--batch: '12x' is not an integer"),
                       std::invalid_argument);
  CHECK(cli::parse_real("--lr", "1e-3", 0, 1) == 1e-3);
  CHECK_THROWS_WITH_AS(cli::parse_real("--lr", "nan"), doctest::Contains("--lr"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_real("--lr", "10", 0, 1), doctest::Contains("outside"), std::invalid_argument);
  CHECK(cli::parse_list("--methods", "a,b") == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH_AS(cli::parse_list("--methods", "a,,b"), doctest::Contains("empty item"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_choice("--methods", "SeqLora", {"SeqLoRA", "Joint"}),
                       doctest::Contains("unknown value 'SeqLora' (one of: SeqLoRA, Joint)"), std::invalid_argument);
  const cli::shard second = cli::parse_shard("--shard", "1/3");
  CHECK((second.index == 1 && second.count == 3 && !second.whole()));
  CHECK((!second.takes(0) && second.takes(1) && !second.takes(2) && second.takes(4)));
  CHECK((cli::shard{}.whole() && cli::shard{}.takes(7)));
  CHECK_THROWS_WITH_AS(cli::parse_shard("--shard", "2"), doctest::Contains("'2' is not K/N"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_shard("--shard", "2/2"), doctest::Contains("--shard: 2 is outside [0, 1]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_shard("--shard", "0/0"), doctest::Contains("--shard: 0 is outside [1, 4096]"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(cli::parse_shard("--shard", "-1/2"), doctest::Contains("outside"), std::invalid_argument);
}

TEST_CASE("one library call writes a run's results as JSON and CSV") {
  F backend;
  auto planted = small_planted();
  auto model = small_mlp(backend, planted.stream);
  seq_lora strategy;
  std::vector<run_result> runs = {run_stream(model, planted.stream, strategy, adam_factory(1e-2), {.seed = 12345678901ULL})};
  const fs::path folder = fresh_folder("report");
  json::object config;
  config.add_string("stream", "planted");
  write_results(folder, runs, config.str());
  const auto parsed = json::parse_file((folder / "results.json").string());
  REQUIRE(parsed.size() == 2);  // task-IL and class-IL
  const auto& row = parsed.at(0);
  CHECK(row.at("method").get<std::string>() == "SeqLoRA");
  CHECK(row.at("protocol").get<std::string>() == "task-IL");
  CHECK(row.begin().key() == "method");  // the fields in the order they were added
  CHECK(read_text(folder / "results.json").find("\"seed\": 12345678901,") != std::string::npos);
  CHECK(row.at("seed").get<std::uint64_t>() == 12345678901ULL);
  CHECK(row.at("acc").get<double>() == final_average_accuracy(runs[0].task_il));  // round-trip: exact
  CHECK(row.at("matrix").size() == planted.stream.tasks.size() * planted.stream.tasks.size());
  CHECK(row.at("final_loss_per_task").size() == planted.stream.tasks.size());
  CHECK(row.at("config").at("stream").get<std::string>() == "planted");
  CHECK_THROWS_WITH_AS(results_json(runs, "{\"stream\": "), doctest::Contains("the configuration"), std::runtime_error);
  const std::string csv = read_text(folder / "results.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
  SUBCASE("a stream whose tasks share classes reports task-IL only") {
    runs[0].class_incremental = false;
    CHECK(report_rows(runs[0]).size() == 1);
  }
  fs::remove_all(folder);
}

TEST_CASE("tree_lora_paper means paper mode; a contradicting config throws; ({}) compiles") {
  tree_lora_paper<F> plain;
  CHECK(plain.mode() == tree_lora_mode::paper);
  CHECK(plain.name() == "TreeLoRA-paper");
  tree_lora_paper<F> braces({});
  CHECK(braces.mode() == tree_lora_mode::paper);
  tree_lora_paper<F> tuned({.pull_strength = 0.1});
  CHECK(tuned.mode() == tree_lora_mode::paper);
  tree_lora_reference<F> reference({});
  CHECK(reference.mode() == tree_lora_mode::reference);
  CHECK_THROWS_WITH_AS(tree_lora_paper<F>({.mode = tree_lora_mode::reference}), doctest::Contains("runs paper mode"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(tree_lora_reference<F>({.mode = tree_lora_mode::paper}), doctest::Contains("runs reference mode"),
                       std::invalid_argument);
  tree_lora<F> generic({.mode = tree_lora_mode::paper});
  CHECK(generic.mode() == tree_lora_mode::paper);
}

TEST_CASE("DualLoRA's calibration when tasks share classes: no class of the predicted task is masked, bayes sums") {
  // Two tasks with the same classes {0, 1} (domain-incremental), plus a class 2 only task 1 lists.
  const std::vector<std::vector<index_t>> classes = {{0, 1}, {0, 1, 2}};
  task_prediction p;
  p.task = 1, p.confidence = 0.8, p.probabilities = {0.2, 0.8};
  std::vector<float> row = {2.0f, 1.0f, 0.5f};
  SUBCASE("confident_task keeps every class the confident task lists (all -inf before: class 0 for everyone)") {
    calibrate_logits(std::span<float>(row), classes, p, {.calibration = dual_calibration::confident_task});
    CHECK(row == std::vector<float>{2.0f, 1.0f, 0.5f});
    p.task = 0, p.probabilities = {0.8, 0.2};
    calibrate_logits(std::span<float>(row), classes, p, {.calibration = dual_calibration::confident_task});
    CHECK(row[0] == 2.0f);
    CHECK(row[1] == 1.0f);
    CHECK(std::isinf(row[2]));  // only task 1 lists class 2
  }
  SUBCASE("bayes: log sum_j p(j) softmax_j(logits)_c over the tasks that list c") {
    calibrate_logits(std::span<float>(row), classes, p, {.calibration = dual_calibration::bayes});
    const double z0 = std::exp(2.0) + std::exp(1.0), z1 = z0 + std::exp(0.5);
    const double expected[] = {std::log(0.2 * std::exp(2.0) / z0 + 0.8 * std::exp(2.0) / z1),
                               std::log(0.2 * std::exp(1.0) / z0 + 0.8 * std::exp(1.0) / z1),
                               std::log(0.8 * std::exp(0.5) / z1)};
    for (int c = 0; c < 3; ++c) CHECK(row[std::size_t(c)] == doctest::Approx(expected[c]).epsilon(1e-6));
  }
}
