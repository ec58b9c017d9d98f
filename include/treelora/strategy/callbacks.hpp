// treelora/strategy/callbacks.hpp: optional runner callbacks, detected at compile time (ensmallen style):
// a callback implements any subset of
//   on_task_begin(context), on_step(context, regulariser), on_task_end(context, seconds),
//   on_evaluation(after_task, accuracies_task_il), bool should_stop_epoch(context)
// and the runner calls only what exists, so an unused hook costs nothing. A callback that keeps state a resumed
// run needs (held_out_loss in strategy/text_runner.hpp: the losses after the tasks already done) also implements
//   template <class Archive> void checkpoint(Archive ar)   (ar.value(name, v): written on save, read on resume)
// and run_stream saves it in the run's checkpoint and reads it back on resume.
#pragma once

#include <chrono>
#include <unistd.h>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "treelora/strategy/strategy.hpp"

namespace treelora {

/// A one-line progress bar on stderr: task, epoch, step, running loss, steps per second. On a terminal it redraws
/// in place every 10 steps; into a file or a CI log it writes one line per epoch.
class progress_bar {
 public:
  explicit progress_bar(std::string label = "", std::FILE* out = stderr)
      : label_(std::move(label)), out_(out), terminal_(::isatty(::fileno(out)) != 0) {}
  void on_task_begin(const training_context&) {
    start_ = std::chrono::steady_clock::now();
    running_loss_ = 0;
    seen_ = 0;
  }
  void on_step(const training_context& c, double regulariser) {
    running_loss_ += c.loss;
    ++seen_;
    const bool last = c.step + 1 == c.steps_per_epoch;
    if (!last && (!terminal_ || c.step % 10 != 0)) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 24, filled = static_cast<int>(width * (c.step + 1) / std::max<index_t>(1, c.steps_per_epoch));
    // on a terminal the line redraws in place (a carriage return first)
    std::fprintf(out_, "%s%s task %lld/%lld epoch %lld/%lld [%.*s%*s] loss %.4f reg %.4f %.1f steps/s   ", terminal_ ? "\r" : "",
                 label_.c_str(), (long long)c.task + 1, (long long)c.tasks, (long long)c.epoch + 1, (long long)c.epochs,
                 filled, "########################", width - filled, "", running_loss_ / double(seen_), regulariser,
                 elapsed > 0 ? double(seen_) / elapsed : 0.0);
    if (!terminal_) std::fprintf(out_, "\n");
    if (last) {
      running_loss_ = 0;
      seen_ = 0;
      start_ = std::chrono::steady_clock::now();
    }
    std::fflush(out_);
  }
  void on_task_end(const training_context&, double) {
    if (terminal_) std::fprintf(out_, "\n");
  }

 private:
  std::string label_;
  std::FILE* out_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_{};
  double running_loss_ = 0;
  long long seen_ = 0;
};

/// Writes one CSV row per step: task, epoch, step, global_step, loss, regulariser.
class csv_logger {
 public:
  explicit csv_logger(const std::string& path) : out_(path) {
    if (!out_) throw_runtime_error("csv_logger", concat("cannot open '", path, "' for writing"));
    out_ << "task,epoch,step,global_step,loss,regulariser\n";
  }
  void on_step(const training_context& c, double regulariser) {
    out_ << c.task << ',' << c.epoch << ',' << c.step << ',' << c.global_step << ',' << c.loss << ',' << regulariser
         << '\n';
  }

 private:
  std::ofstream out_;
};

/// Collects the training seconds of each task.
struct timer {
  std::vector<double> task_seconds;
  void on_task_end(const training_context&, double seconds) { task_seconds.push_back(seconds); }
};

/// Ends an epoch early once the running mean loss over `window` steps falls below `threshold`.
class early_stop {
 public:
  early_stop(double threshold, index_t window = 20) : threshold_(threshold), window_(window) {}
  void on_step(const training_context& c, double) {
    if (c.step == 0) { sum_ = 0; count_ = 0; }
    sum_ += c.loss;
    ++count_;
  }
  bool should_stop_epoch(const training_context&) const {
    return count_ >= window_ && sum_ / double(count_) < threshold_;
  }

 private:
  double threshold_;
  index_t window_;
  double sum_ = 0;
  index_t count_ = 0;
};

}  // namespace treelora
