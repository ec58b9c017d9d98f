// treelora/backend/random.hpp: a counter-based generator shared by every backend.
// Element i of a seeded fill depends only on (seed, offset + i), so a CPU and a GPU backend fill the
// same numbers and a parallel fill is deterministic whatever the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

#if defined(__CUDACC__)
#define TREELORA_HOST_DEVICE __host__ __device__
#else
#define TREELORA_HOST_DEVICE
#endif

namespace treelora::random {

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mix with good avalanche.
TREELORA_HOST_DEVICE constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// 64 random bits for counter `counter` of stream `seed`.
TREELORA_HOST_DEVICE constexpr std::uint64_t bits(std::uint64_t seed, std::uint64_t counter) {
  return mix64(mix64(seed) ^ (counter * 0xd1342543de82ef95ULL + 0x2545f4914f6cdd1dULL));
}

/// Uniform in [0, 1) with 53 random bits.
TREELORA_HOST_DEVICE inline double uniform01(std::uint64_t seed, std::uint64_t counter) {
  return static_cast<double>(bits(seed, counter) >> 11) * 0x1.0p-53;
}

/// Standard normal by Box-Muller on counters (2c, 2c+1); exact to double precision.
TREELORA_HOST_DEVICE inline double standard_normal(std::uint64_t seed, std::uint64_t counter) {
  const double u1 = 1.0 - uniform01(seed, 2 * counter);  // in (0, 1]: log is finite
  const double u2 = uniform01(seed, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

/// A small seeded generator for host-side sampling (bandit draws, shuffles). Deterministic across
/// platforms, unlike std:: distributions.
class generator {
 public:
  explicit generator(std::uint64_t seed = 0) : seed_(seed) {}
  std::uint64_t next_bits() { return bits(seed_, counter_++); }
  double uniform() { return uniform01(seed_, counter_++); }
  double normal() { return standard_normal(seed_, counter_++); }
  /// Uniform integer in [0, n) (n > 0), by Lemire's multiply-shift (bias below 2^-64 * n).
  std::uint64_t below(std::uint64_t n) {
    __extension__ using wide = unsigned __int128;
    return static_cast<std::uint64_t>((static_cast<wide>(next_bits()) * n) >> 64);
  }
  std::uint64_t seed() const { return seed_; }
  std::uint64_t counter() const { return counter_; }
  /// Continues the stream from draw `counter` (a resumed run's generators pick up where they were).
  void set_counter(std::uint64_t counter) { counter_ = counter; }

 private:
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
};

}  // namespace treelora::random
