// treelora/bandit/regret.hpp: bandit policies on plain synthetic arms, and their cumulative regret.
//
// Arm k has a true mean loss mu_k; a pull observes mu_k + noise * N(0, 1). Pseudo-regret after T steps
// is sum_t (mu_{chosen_t} - min_k mu_k). smooth_tree_means() plants a smooth-tree instance: means that
// vary slowly along the arm order, so a balanced hierarchy over that order has informative node means
// (the setting of the paper's O(sqrt(T log NT)) bound).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "treelora/bandit/bandit_policy.hpp"

namespace treelora {

/// mu_k = low + spread * sqrt(|k - best| / (n - 1)): one best arm, means rising smoothly away from it.
inline std::vector<double> smooth_tree_means(index_t n_arms, index_t best, double low = 0.1, double spread = 0.8) {
  if (n_arms <= 0 || best < 0 || best >= n_arms)
    throw_invalid_argument("smooth_tree_means", concat("best arm ", best, " of ", n_arms, " arms"));
  std::vector<double> means(static_cast<std::size_t>(n_arms));
  for (index_t k = 0; k < n_arms; ++k)
    means[static_cast<std::size_t>(k)] =
        low + spread * std::sqrt(static_cast<double>(std::abs(k - best)) / static_cast<double>(std::max<index_t>(1, n_arms - 1)));
  return means;
}

/// What one simulated run of a policy gives: the cumulative pseudo-regret after each step, and how often each arm was
/// pulled from step `count_from` on (simulate_bandit).
struct bandit_run {
  std::vector<double> regret;
  std::vector<index_t> pulls;
};

/// Plays `policy` for `steps` steps on arms with mean losses `means` (one module): the cumulative pseudo-regret after
/// each step, and the pulls per arm from step `count_from` on (what the policy settled on). Full-information
/// policies see every arm's noisy loss first. (With treelora::compiled, the library's policies are instantiated
/// there: bandit.hpp declares them.)
template <class Policy>
bandit_run simulate_bandit(Policy& policy, std::span<const double> means, index_t steps, double noise, std::uint64_t seed,
                           std::span<const tree_node> hierarchy = {}, index_t count_from = 0) {
  static_assert(BanditPolicy<Policy>, "treelora::simulate_bandit: Policy must be a BanditPolicy");
  if (means.empty()) throw_invalid_argument("simulate_bandit", "needs at least one arm");
  if (steps < 0) throw_invalid_argument("simulate_bandit", concat("steps ", steps, " must not be negative"));
  const index_t n = static_cast<index_t>(means.size());
  policy.reset(bandit_setup{n, 1, std::max<index_t>(steps, 1), hierarchy});
  random::generator choices(seed), environment(random::mix64(seed ^ 0x5eedULL));
  const double best = *std::min_element(means.begin(), means.end());
  bandit_run run{{}, std::vector<index_t>(static_cast<std::size_t>(n), 0)};
  std::vector<double> all(static_cast<std::size_t>(n));
  run.regret.reserve(static_cast<std::size_t>(steps));
  double regret = 0;
  for (index_t t = 0; t < steps; ++t) {
    for (index_t k = 0; k < n; ++k) all[static_cast<std::size_t>(k)] = means[static_cast<std::size_t>(k)] + noise * environment.normal();
    if constexpr (FullInformationPolicy<Policy>) policy.observe_all(all);
    const index_t arm = policy.select(t, choices)[0];
    if (arm < 0 || arm >= n) throw_runtime_error("simulate_bandit", concat("the policy chose arm ", arm, " of ", n, " at step ", t));
    const double loss = all[static_cast<std::size_t>(arm)];
    policy.update(std::span<const index_t>(&arm, 1), std::span<const double>(&loss, 1));
    regret += means[static_cast<std::size_t>(arm)] - best;
    run.regret.push_back(regret);
    if (t >= count_from) ++run.pulls[static_cast<std::size_t>(arm)];
  }
  return run;
}

/// The cumulative pseudo-regret after each step of simulate_bandit.
template <class Policy>
std::vector<double> simulate_regret(Policy& policy, std::span<const double> means, index_t steps, double noise,
                                    std::uint64_t seed, std::span<const tree_node> hierarchy = {}) {
  return simulate_bandit(policy, means, steps, noise, seed, hierarchy).regret;
}

/// One named regret curve (cumulative regret after step 1, 2, ...).
struct regret_series {
  std::string name;
  std::vector<double> regret;
};

/// CSV with a header: series,step,regret (every `stride`-th step and the last).
inline void write_regret_csv(std::ostream& out, std::span<const regret_series> series, std::size_t stride = 1) {
  out << "series,step,regret\n";
  for (const auto& s : series)
    for (std::size_t i = 0; i < s.regret.size(); ++i)
      if ((i + 1) % stride == 0 || i + 1 == s.regret.size()) out << s.name << ',' << i + 1 << ',' << s.regret[i] << '\n';
}

/// A self-contained SVG line chart of the curves (linear axes, one colour per series, a legend).
inline void write_regret_svg(std::ostream& out, std::span<const regret_series> series, const std::string& title) {
  const double width = 720, height = 420, left = 70, right = 180, top = 40, bottom = 50;
  double max_x = 1, max_y = 1e-12;
  for (const auto& s : series) {
    max_x = std::max(max_x, static_cast<double>(s.regret.size()));
    for (double v : s.regret) max_y = std::max(max_y, v);
  }
  const auto px = [&](double x) { return left + (width - left - right) * x / max_x; };
  const auto py = [&](double y) { return height - bottom - (height - top - bottom) * y / max_y; };
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"Helvetica\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << left << "\" y=\"24\" font-size=\"15\">" << title << "</text>\n";
  out << "<line x1=\"" << left << "\" y1=\"" << py(0) << "\" x2=\"" << px(max_x) << "\" y2=\"" << py(0) << "\" stroke=\"black\"/>\n";
  out << "<line x1=\"" << left << "\" y1=\"" << py(0) << "\" x2=\"" << left << "\" y2=\"" << py(max_y) << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    out << "<text x=\"" << px(max_x * i / 4) << "\" y=\"" << height - bottom + 18 << "\" text-anchor=\"middle\">"
        << static_cast<long long>(max_x * i / 4) << "</text>\n";
    out << "<text x=\"" << left - 6 << "\" y=\"" << py(max_y * i / 4) + 4 << "\" text-anchor=\"end\">"
        << static_cast<long long>(max_y * i / 4) << "</text>\n";
  }
  out << "<text x=\"" << px(max_x / 2) << "\" y=\"" << height - 12 << "\" text-anchor=\"middle\">step T</text>\n";
  out << "<text x=\"16\" y=\"" << py(max_y / 2) << "\" transform=\"rotate(-90 16 " << py(max_y / 2)
      << ")\" text-anchor=\"middle\">cumulative regret</text>\n";
  for (std::size_t s = 0; s < series.size(); ++s) {
    const char* colour = colours[s % 8];
    out << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\" points=\"";
    const std::size_t n = series[s].regret.size(), step = std::max<std::size_t>(1, n / 400);
    for (std::size_t i = 0; i < n; i += step) out << px(static_cast<double>(i + 1)) << ',' << py(series[s].regret[i]) << ' ';
    if (n) out << px(static_cast<double>(n)) << ',' << py(series[s].regret[n - 1]);
    out << "\"/>\n<text x=\"" << width - right + 10 << "\" y=\"" << top + 18 * static_cast<double>(s) + 10 << "\" fill=\""
        << colour << "\">" << series[s].name << "</text>\n";
  }
  out << "</svg>\n";
}

}  // namespace treelora
