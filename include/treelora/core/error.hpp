// treelora/core/error.hpp: the index_t type and the one way treelora reports bad input.
// Every check throws an exception whose message names the operation and what was wrong.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace treelora {

/// Signed index_t type used for sizes and strides throughout the library.
using index_t = std::int64_t;

/// Throws std::invalid_argument("treelora::<where>: <what>").
[[noreturn]] inline void throw_invalid_argument(std::string_view where, const std::string& what) {
  throw std::invalid_argument("treelora::" + std::string(where) + ": " + what);
}

/// Throws std::runtime_error("treelora::<where>: <what>") for failures that are not the caller's input
/// (files, numerical breakdown such as a NaN loss).
[[noreturn]] inline void throw_runtime_error(std::string_view where, const std::string& what) {
  throw std::runtime_error("treelora::" + std::string(where) + ": " + what);
}

/// Builds a message from streamable pieces: concat("rank ", r, " > ", d).
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

/// Throws std::runtime_error when a loss (or any scalar that must be finite) is NaN or infinite.
template <class Scalar>
void require_finite(Scalar value, std::string_view where, std::string_view what = "value") {
  if (!std::isfinite(static_cast<double>(value))) {
    throw_runtime_error(where, concat(what, " is not finite (", value, ")"));
  }
}

}  // namespace treelora
