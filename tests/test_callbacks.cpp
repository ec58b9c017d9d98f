// The runner's callbacks (strategy/callbacks.hpp) on a real run: the progress bar into a file (one line per epoch)
// and into a terminal (a pseudo-terminal: the line redraws in place with every figure in it), the CSV logger's rows
// against the steps the runner took, early_stop ending epochs, and a stateful callback (checkpoint(archive)) carried
// through a stopped and resumed run.
#include "test_support.hpp"

#include <fcntl.h>
#include <pty.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace treelora;
using treelora::testing::contains;
using F = cpu_backend<float>;

namespace {

auto adam_1e2() {
  return [](parameter_list<F> p) { return adam<F>(std::move(p), {.learning_rate = 1e-2}); };
}

std::filesystem::path scratch(const std::string& name) {
  const auto folder = std::filesystem::temp_directory_path() / concat("treelora_test_callbacks_", ::getpid());
  std::filesystem::create_directories(folder);
  return folder / name;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

struct small_run {
  planted_hierarchy planted = make_planted_hierarchy({.train_per_task = 64, .test_per_task = 32, .seed = 5});
  F backend;
  mlp_classifier<F> model{backend, {.inputs = 16, .hidden = 16, .classes = planted.stream.total_classes, .seed = 5}};
  seq_lora strategy;
  runner_options options{.epochs_per_task = 2, .batch_size = 16, .seed = 5};
  index_t steps_per_epoch() const { return (64 + 15) / 16; }
  index_t tasks() const { return index_t(planted.stream.tasks.size()); }

  template <class... C>
  run_result run(C&... callbacks) {
    return run_stream(model, planted.stream, strategy, adam_1e2(), options, callbacks...);
  }
};

/// Counts the steps it has seen; the count survives a resume through checkpoint(archive).
struct step_counter {
  index_t steps = 0;
  void on_step(const training_context&, double) { ++steps; }
  template <class Archive>
  void checkpoint(Archive ar) {
    ar.value("steps", steps);
  }
};

struct stop_before_task {
  index_t task;
  void on_task_begin(const training_context& c) const {
    if (c.task == task) throw std::runtime_error("stopped on purpose");
  }
};

}  // namespace

TEST_CASE("progress_bar into a file: one line per epoch with task, epoch, bar, loss and speed") {
  small_run run;
  const auto path = scratch("progress.txt");
  std::FILE* file = std::fopen(path.c_str(), "w");
  REQUIRE(file != nullptr);
  progress_bar bar("[test]", file);
  (void)run.run(bar);
  std::fclose(file);
  std::ifstream in(path);
  const auto lines = lines_of(std::string(std::istreambuf_iterator<char>(in), {}));
  REQUIRE(lines.size() == std::size_t(run.tasks() * 2));  // 2 epochs per task
  CHECK(contains(lines[0], "[test] task 1/" + std::to_string(run.tasks()) + " epoch 1/2 [########################] loss "));
  CHECK(contains(lines[1], "epoch 2/2"));
  CHECK(contains(lines.back(), "task " + std::to_string(run.tasks()) + "/"));
  CHECK(contains(lines[0], " steps/s"));
  for (const auto& line : lines) CHECK(line.find('\r') == std::string::npos);
  std::filesystem::remove_all(path.parent_path());
}

TEST_CASE("progress_bar on a terminal: redraws in place, with the same figures as in a file") {
  int master = -1, slave = -1;
  REQUIRE(::openpty(&master, &slave, nullptr, nullptr, nullptr) == 0);
  ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK);
  std::FILE* terminal = ::fdopen(slave, "w");
  REQUIRE(terminal != nullptr);
  small_run run;
  run.options.epochs_per_task = 1;
  std::string text;
  const auto drain = [&] {  // the pseudo-terminal's buffer is small: read as the run writes
    char buffer[4096];
    for (ssize_t n; (n = ::read(master, buffer, sizeof buffer)) > 0;) text.append(buffer, std::size_t(n));
  };
  struct drainer {
    const decltype(drain)& f;
    void on_step(const training_context&, double) const { f(); }
  } reader{drain};
  progress_bar bar("[tty]", terminal);
  (void)run.run(bar, reader);
  std::fflush(terminal);
  drain();
  std::fclose(terminal);
  ::close(master);
  // every draw starts with a carriage return and carries the whole line (task, epoch, bar, loss, speed)
  CHECK(contains(text, "\r[tty] task 1/" + std::to_string(run.tasks()) + " epoch 1/1 ["));
  CHECK(contains(text, "] loss "));
  CHECK(contains(text, " steps/s"));
  index_t draws = 0;
  for (std::size_t at = 0; (at = text.find("\r[tty] task ", at)) != std::string::npos; ++at) ++draws;
  // steps 0 and the last of each epoch (4 steps: 0 and 3) are drawn on a terminal
  CHECK(draws == 2 * run.tasks());
}

TEST_CASE("csv_logger writes one row per step that the runner took, in order") {
  small_run run;
  const auto path = scratch("steps.csv");
  run_result result;
  {
    csv_logger log(path.string());
    result = run.run(log);
  }
  std::ifstream in(path);
  const auto lines = lines_of(std::string(std::istreambuf_iterator<char>(in), {}));
  REQUIRE(lines.size() == std::size_t(result.steps + 1));
  CHECK(lines[0] == "task,epoch,step,global_step,loss,regulariser");
  CHECK(lines[1].rfind("0,0,0,0,", 0) == 0);
  CHECK(lines.back().rfind(concat(run.tasks() - 1, ",1,", run.steps_per_epoch() - 1, ",", result.steps - 1, ","), 0) == 0);
  CHECK_THROWS_WITH_AS(csv_logger("/nonexistent-folder/steps.csv"), doctest::Contains("cannot open"), std::runtime_error);
  std::filesystem::remove_all(path.parent_path());
}

TEST_CASE("early_stop ends each epoch once the running mean loss is below its threshold") {
  small_run run;
  early_stop never(-1.0, 2), always(1e9, 2);  // a loss is never below -1; always below 1e9 once 2 steps are seen
  const run_result full = run.run(never);
  CHECK(full.steps == run.tasks() * 2 * run.steps_per_epoch());
  small_run again;
  const run_result cut = again.run(always);
  CHECK(cut.steps == again.tasks() * 2 * 2);  // 2 steps per epoch
}

TEST_CASE("a stateful callback is saved in the checkpoint and read back on resume") {
  small_run straight;
  step_counter all;
  (void)straight.run(all);
  REQUIRE(all.steps == straight.tasks() * 2 * straight.steps_per_epoch());

  const auto path = scratch("run.safetensors");
  {
    small_run stopped;
    stopped.options.checkpoint = path;
    step_counter counter;
    stop_before_task stop{2};
    CHECK_THROWS_WITH(stopped.run(stop, counter), doctest::Contains("stopped on purpose"));
    CHECK(counter.steps == 2 * 2 * stopped.steps_per_epoch());
  }
  small_run resumed;
  resumed.options.checkpoint = path, resumed.options.resume = true;
  step_counter counter;  // fresh: the first two tasks' steps come from the checkpoint
  (void)resumed.run(counter);
  CHECK(counter.steps == all.steps);
  std::filesystem::remove_all(path.parent_path());
}
