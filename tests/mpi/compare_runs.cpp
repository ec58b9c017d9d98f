// compare_runs: checks that a data-parallel run of a main-job program (--mpi under mpiexec) reached what one process
// reached. Reads ONE/results.json and MANY/results.json (and answer_loss.json where ONE has it) and requires:
//   - the same rows (method, protocol, seed) in the same order, with the same step counts;
//   - for every method but those given with --diverging: every accuracy matrix entry within --matrix (absolute; a
//     float reduction in another order may flip a test sample on a knife edge) and every per-task final loss and
//     held-out answer loss within --loss (relative);
//   - for the --diverging methods (TreeLoRA's paper mode: its sign pull and its bandit's argmin turn last-bit
//     differences into another, equally valid path): the final accuracy within --accuracy.
// Prints the largest differences found; exits 1 (naming the row and the field) when one is too large.
//
//   compare_runs ONE MANY [--matrix 0.02] [--loss 1e-4] [--accuracy 0.05] [--diverging A,B]
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "treelora/io/cli.hpp"
#include "treelora/io/json.hpp"

using namespace treelora;

namespace {

json::value read(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw_runtime_error("compare_runs", concat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str(), path);
}

std::vector<double> numbers(const json::value& v) {  // every number in v, depth first (null: NaN)
  std::vector<double> out;
  if (v.is_array())
    for (const auto& w : v) {
      const auto inner = numbers(w);
      out.insert(out.end(), inner.begin(), inner.end());
    }
  else if (v.is_number()) out.push_back(v.get<double>());
  else if (v.is_null()) out.push_back(std::nan(""));
  return out;
}

struct worst {
  double value = 0;
  std::string where;
  void see(double d, const std::string& at) {
    if (d > value) value = d, where = at;
  }
};

double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(a), 1e-12); }

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 3) throw_invalid_argument("compare_runs", "usage: compare_runs ONE MANY [--matrix X] [--loss X] [--accuracy X] [--diverging A,B]");
  const std::string one = argv[1], many = argv[2];
  double matrix_tolerance = 0.02, loss_tolerance = 1e-4, accuracy_tolerance = 0.05;
  std::set<std::string> diverging;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--matrix") matrix_tolerance = cli::parse_real(key, value, 0);
    else if (key == "--loss") loss_tolerance = cli::parse_real(key, value, 0);
    else if (key == "--accuracy") accuracy_tolerance = cli::parse_real(key, value, 0);
    else if (key == "--diverging")
      for (const auto& m : cli::parse_list(key, value)) diverging.insert(m);
    else throw_invalid_argument("compare_runs", concat("unknown option ", key));
  }
  const json::value a = read(one + "/results.json"), b = read(many + "/results.json");
  if (!a.is_array() || a.size() != b.size() || a.empty())
    throw_runtime_error("compare_runs", concat("results.json has ", a.size(), " rows in ", one, " and ", b.size(), " in ", many));
  worst matrix, loss, accuracy;
  int failures = 0;
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "compare_runs: %s\n", what.c_str());
    ++failures;
  };
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto& x = a[i];
    const auto& y = b[i];
    const std::string method = x.at("method").get<std::string>();
    const std::string row = concat("row ", i, " (", method, ", ", x.at("protocol").get<std::string>(), ", seed ", x.at("seed").dump(), ")");
    for (const char* key : {"method", "protocol", "seed", "steps"})
      if (x.at(key) != y.at(key)) fail(concat(row, ": ", key, " is ", x.at(key).dump(), " in one process, ", y.at(key).dump(), " data-parallel"));
    if (diverging.count(method)) {
      const double d = std::abs(x.at("acc").get<double>() - y.at("acc").get<double>());
      accuracy.see(d, row);
      if (d > accuracy_tolerance) fail(concat(row, ": final accuracy differs by ", d, " > ", accuracy_tolerance));
      continue;
    }
    const auto m1 = numbers(x.at("matrix")), m2 = numbers(y.at("matrix"));
    const auto l1 = numbers(x.at("final_loss_per_task")), l2 = numbers(y.at("final_loss_per_task"));
    if (m1.size() != m2.size() || l1.size() != l2.size()) {
      fail(concat(row, ": the matrices or loss lists differ in size"));
      continue;
    }
    for (std::size_t k = 0; k < m1.size(); ++k) {
      if (std::isnan(m1[k]) != std::isnan(m2[k])) fail(concat(row, ": matrix entry ", k, " is NaN in one run only"));
      if (std::isnan(m1[k]) || std::isnan(m2[k])) continue;
      const double d = std::abs(m1[k] - m2[k]);
      matrix.see(d, concat(row, " entry ", k));
      if (d > matrix_tolerance) fail(concat(row, ": matrix entry ", k, " is ", m1[k], " in one process, ", m2[k], " data-parallel"));
    }
    for (std::size_t k = 0; k < l1.size(); ++k) {
      const double d = relative(l1[k], l2[k]);
      loss.see(d, concat(row, " task ", k));
      if (!(d <= loss_tolerance)) fail(concat(row, ": final loss of task ", k, " is ", l1[k], " in one process, ", l2[k], " data-parallel"));
    }
  }
  if (std::ifstream(one + "/answer_loss.json")) {  // the text half: the held-out answer losses after every task
    const json::value p = read(one + "/answer_loss.json"), q = read(many + "/answer_loss.json");
    if (p.size() != q.size()) fail("answer_loss.json has another number of rows");
    for (std::size_t i = 0; i < std::min(p.size(), q.size()); ++i) {
      const std::string method = p[i].contains("method") ? p[i].at("method").get<std::string>() : concat("row ", i);
      if (diverging.count(method)) continue;
      const auto u = numbers(p[i].at("matrix")), v = numbers(q[i].at("matrix"));
      if (u.size() != v.size()) fail(concat("answer_loss.json ", method, ": matrices differ in size"));
      for (std::size_t k = 0; k < std::min(u.size(), v.size()); ++k) {
        if (std::isnan(u[k]) && std::isnan(v[k])) continue;
        const double d = relative(u[k], v[k]);
        loss.see(d, concat("answer_loss.json ", method, " entry ", k));
        if (!(d <= loss_tolerance)) fail(concat("answer_loss.json ", method, ": entry ", k, " is ", u[k], " against ", v[k]));
      }
    }
  }
  std::printf("%zu rows compared; largest differences: matrix entry %.4g (%s), loss %.3g relative (%s), diverging methods' "
              "final accuracy %.4g (%s)\n", a.size(), matrix.value, matrix.where.c_str(), loss.value, loss.where.c_str(),
              accuracy.value, accuracy.where.c_str());
  return failures == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "compare_runs: %s\n", e.what());
  return 2;
}
