// bench/bench_support.hpp: what the benchmark suites share: a wall clock and the median of timed samples.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace treelora::bench {

/// Seconds on the steady clock.
inline double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

/// The median of timed samples (the upper one for an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace treelora::bench
