// treelora/metrics/report.hpp: a run's results as rows (one per protocol), as JSON and CSV text, and written to a
// folder in one call:
//
//   std::vector<run_result> runs = ...;           // from run_stream / run_joint, any number of methods and seeds
//   write_results("out", runs, config.str());     // out/results.json and out/results.csv, each written atomically
//
// Every metric of metrics/continual_metrics.hpp is computed per protocol (task-IL always; class-IL and task
// identity only when the stream's tasks have disjoint classes, run_result::class_incremental). A metric that is not
// defined for the run (BWT of a single task, FWT of class-IL) is NaN in memory, null in JSON and empty in CSV.
#pragma once

#include <cmath>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "treelora/io/atomic_file.hpp"
#include "treelora/io/json.hpp"
#include "treelora/metrics/run_result.hpp"

namespace treelora {

/// One row of a report: one run scored under one protocol.
struct report_row {
  std::string method, protocol;  ///< protocol: "task-IL" or "class-IL"
  std::uint64_t seed = 0;
  double acc = NAN, aia = NAN, bwt = NAN, bwt_released = NAN, forgetting = NAN, fwt = NAN, task_identity = NAN;
  double seconds = 0;
  std::size_t peak_bytes = 0, state_bytes = 0;
  index_t trainable_parameters = 0, steps = 0, threads = 1;
  std::vector<double> train_seconds_per_task, final_loss_per_task, matrix;  ///< matrix: row-major, tasks x tasks
};

namespace detail {
template <class Metric>
double metric_or_nan(Metric metric) {
  try {
    return metric();
  } catch (const std::invalid_argument&) {  // not defined for this matrix (too few tasks)
    return NAN;
  }
}
inline std::vector<double> row_major(const accuracy_matrix& m) {
  std::vector<double> v;
  v.reserve(static_cast<std::size_t>(m.tasks() * m.tasks()));
  for (index_t i = 0; i < m.tasks(); ++i)
    for (index_t j = 0; j < m.tasks(); ++j) v.push_back(m(i, j));
  return v;
}
inline std::string csv_number(double v) { return std::isfinite(v) ? json::number(v) : std::string(); }
inline std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}
}  // namespace detail

/// The rows of one run: task-IL, then class-IL when the run's tasks have disjoint classes.
inline std::vector<report_row> report_rows(const run_result& r) {
  std::vector<report_row> rows;
  const auto base = [&](const char* protocol, const accuracy_matrix& m) {
    report_row row;
    row.method = r.method, row.protocol = protocol, row.seed = r.seed;
    row.acc = detail::metric_or_nan([&] { return final_average_accuracy(m); });
    row.aia = detail::metric_or_nan([&] { return average_incremental_accuracy(m); });
    row.bwt = detail::metric_or_nan([&] { return backward_transfer(m); });
    row.bwt_released = detail::metric_or_nan([&] { return backward_transfer_released(m); });
    row.forgetting = detail::metric_or_nan([&] { return forgetting(m); });
    row.seconds = r.seconds, row.threads = r.threads;
    row.peak_bytes = r.peak_bytes.empty() ? 0 : r.peak_bytes.back();
    row.state_bytes = r.state_bytes.empty() ? 0 : r.state_bytes.back();
    row.trainable_parameters = r.trainable_parameters, row.steps = r.steps;
    row.train_seconds_per_task = r.train_seconds, row.final_loss_per_task = r.final_loss;
    row.matrix = detail::row_major(m);
    return row;
  };
  auto task_il = base("task-IL", r.task_il);
  task_il.fwt = detail::metric_or_nan([&] { return forward_transfer(r.task_il, r.before); });
  rows.push_back(std::move(task_il));
  if (r.class_incremental) {
    auto class_il = base("class-IL", r.class_il);
    class_il.task_identity = detail::metric_or_nan([&] { return final_average_accuracy(r.task_identity); });
    rows.push_back(std::move(class_il));
  }
  return rows;
}

/// One JSON object per row (a list, 2-space indented), each carrying the run's configuration `config_json`
/// (JSON text, e.g. json::object::str(); malformed text is a std::runtime_error).
inline std::string results_json(std::span<const run_result> runs, const std::string& config_json = "{}") {
  const json::value config = json::parse(config_json, "results_json: the configuration");
  json::value rows = json::value::array();
  for (const auto& run : runs)
    for (const auto& row : report_rows(run)) {
      json::object o;
      o.add_string("method", row.method).add_string("protocol", row.protocol).add_number("seed", row.seed)
          .add_number("acc", row.acc).add_number("aia", row.aia).add_number("bwt", row.bwt)
          .add_number("bwt_released", row.bwt_released).add_number("forgetting", row.forgetting)
          .add_number("fwt", row.fwt).add_number("task_identity", row.task_identity).add_number("seconds", row.seconds)
          .add_number("peak_bytes", row.peak_bytes).add_number("trainable_parameters", row.trainable_parameters)
          .add_number("state_bytes", row.state_bytes).add_number("steps", row.steps).add_number("threads", row.threads)
          .add("train_seconds_per_task", row.train_seconds_per_task).add("final_loss_per_task", row.final_loss_per_task)
          .add("matrix", row.matrix).add("config", config);
      rows.push_back(o.get());
    }
  return json::dump(rows, 2) + "\n";
}

/// The same rows as CSV (a header line; the per-task lists and the matrix are left to the JSON).
inline std::string results_csv(std::span<const run_result> runs) {
  std::string out =
      "method,protocol,seed,acc,aia,bwt,bwt_released,forgetting,fwt,task_identity,seconds,peak_bytes,"
      "trainable_parameters,state_bytes,steps,threads\n";
  for (const auto& run : runs)
    for (const auto& row : report_rows(run)) {
      const double numbers[] = {row.acc, row.aia, row.bwt, row.bwt_released, row.forgetting, row.fwt, row.task_identity,
                                row.seconds};
      out += detail::csv_field(row.method) + ',' + row.protocol + ',' + std::to_string(row.seed);
      for (double v : numbers) out += ',' + detail::csv_number(v);
      out += concat(',', row.peak_bytes, ',', row.trainable_parameters, ',', row.state_bytes, ',', row.steps, ',',
                    row.threads, '\n');
    }
  return out;
}

/// Writes `folder`/results.json and `folder`/results.csv (`stem` changes the names), each atomically; creates
/// the folder. Call it after every finished run so that a failure later keeps what finished.
inline void write_results(const std::filesystem::path& folder, std::span<const run_result> runs,
                          const std::string& config_json = "{}", const std::string& stem = "results") {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) throw_runtime_error("write_results", concat("cannot create ", folder.string(), " (", ec.message(), ")"));
  write_file_atomically(folder / (stem + ".json"), std::string_view(results_json(runs, config_json)));
  write_file_atomically(folder / (stem + ".csv"), std::string_view(results_csv(runs)));
}

}  // namespace treelora
