// treelora/io/cli.hpp: strict parsing of command-line values for the examples and for users' programs.
// Every error is std::invalid_argument naming the option and the text: "--seeds: '-1' is not a non-negative
// integer". Values are range-checked instead of wrapped (std::stoull("-1") is 2^64 - 1; here it is an error).
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "treelora/core/error.hpp"

namespace treelora::cli {

/// A signed integer in [low, high]; the whole text must be the number.
inline std::int64_t parse_integer(std::string_view option, std::string_view text,
                                  std::int64_t low = std::numeric_limits<std::int64_t>::min(),
                                  std::int64_t high = std::numeric_limits<std::int64_t>::max()) {
  std::int64_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error == std::errc::invalid_argument || stop != end)
    throw_invalid_argument("cli", concat(option, ": '", text, "' is not an integer"));
  if (error == std::errc::result_out_of_range || value < low || value > high)
    throw_invalid_argument("cli", concat(option, ": ", text, " is outside [", low, ", ", high, "]"));
  return value;
}

/// An unsigned integer in [low, high] (a leading '-' or '+' is an error, not a wrap-around).
inline std::uint64_t parse_unsigned(std::string_view option, std::string_view text, std::uint64_t low = 0,
                                    std::uint64_t high = std::numeric_limits<std::uint64_t>::max()) {
  if (text.empty() || text.front() < '0' || text.front() > '9')
    throw_invalid_argument("cli", concat(option, ": '", text, "' is not a non-negative integer"));
  std::uint64_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error == std::errc::invalid_argument || stop != end)
    throw_invalid_argument("cli", concat(option, ": '", text, "' is not a non-negative integer"));
  if (error == std::errc::result_out_of_range || value < low || value > high)
    throw_invalid_argument("cli", concat(option, ": ", text, " is outside [", low, ", ", high, "]"));
  return value;
}

/// A finite real number in [low, high].
inline double parse_real(std::string_view option, std::string_view text, double low = -std::numeric_limits<double>::max(),
                         double high = std::numeric_limits<double>::max()) {
  double value = 0;
  const auto* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error == std::errc::invalid_argument || stop != end)
    throw_invalid_argument("cli", concat(option, ": '", text, "' is not a number"));
  if (error == std::errc::result_out_of_range || !std::isfinite(value) || value < low || value > high)
    throw_invalid_argument("cli", concat(option, ": ", text, " is outside [", low, ", ", high, "]"));
  return value;
}

/// Comma-separated items; empty items are an error ("a,,b", "a,").
inline std::vector<std::string> parse_list(std::string_view option, std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) throw_invalid_argument("cli", concat(option, ": empty item in '", text, "'"));
    out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

/// One of `choices`, else an error listing them.
inline std::string parse_choice(std::string_view option, std::string_view text, const std::vector<std::string>& choices) {
  for (const auto& c : choices)
    if (c == text) return c;
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
  throw_invalid_argument("cli", concat(option, ": unknown value '", text, "' (one of: ", list, ")"));
}

/// One of N processes sharing a list of runs (--shard K/N): run i is this process's when i % N == K. N = 1 (the
/// default) takes every run.
struct shard {
  std::int64_t index = 0, count = 1;
  bool takes(std::int64_t run) const { return run % count == index; }
  bool whole() const { return count == 1; }
};

/// "K/N" with 0 <= K < N <= 4096.
inline shard parse_shard(std::string_view option, std::string_view text) {
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos)
    throw_invalid_argument("cli", concat(option, ": '", text, "' is not K/N (this process's index K of N processes)"));
  const std::int64_t count = parse_integer(option, text.substr(slash + 1), 1, 4096);
  return {parse_integer(option, text.substr(0, slash), 0, count - 1), count};
}

}  // namespace treelora::cli
