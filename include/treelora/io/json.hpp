// treelora/io/json.hpp: a minimal JSON writer for reports (results.json): objects, arrays, strings, numbers.
// Integers are written exactly, doubles with 17 significant digits (they read back to the same value);
// non-finite numbers are written as null (JSON has no NaN).
#pragma once

#include <cmath>
#include <concepts>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

namespace treelora::json {

inline std::string quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
          out += buffer;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

/// A double that reads back to the same value: 17 significant digits (non-finite: null).
inline std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.17g", v);
  return buffer;
}
/// Integers are written exactly (a seed of 12345678901 stays 12345678901, not 1.23456789e+10).
template <std::integral Integer>
  requires(!std::same_as<Integer, bool>)
std::string number(Integer v) {
  return std::to_string(v);
}

/// Writes one object as {"key": value, ...}; values are already-encoded JSON text.
class object {
 public:
  object& add(const std::string& key, const std::string& encoded) {
    fields_.emplace_back(key, encoded);
    return *this;
  }
  object& add_string(const std::string& key, const std::string& value) { return add(key, quote(value)); }
  object& add_number(const std::string& key, double value) { return add(key, number(value)); }
  template <std::integral Integer>
    requires(!std::same_as<Integer, bool>)
  object& add_number(const std::string& key, Integer value) {
    return add(key, number(value));
  }
  object& add_bool(const std::string& key, bool value) { return add(key, value ? "true" : "false"); }
  std::string str(const std::string& indent = "") const {
    std::string out = "{";
    for (std::size_t i = 0; i < fields_.size(); ++i)
      out += (i ? ",\n" : "\n") + indent + "  " + quote(fields_[i].first) + ": " + fields_[i].second;
    return out + "\n" + indent + "}";
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

/// [a, b, ...] of already-encoded values.
inline std::string array(const std::vector<std::string>& encoded, const std::string& separator = ", ") {
  std::string out = "[";
  for (std::size_t i = 0; i < encoded.size(); ++i) out += (i ? separator : "") + encoded[i];
  return out + "]";
}
inline std::string numbers(const std::vector<double>& values) {
  std::vector<std::string> encoded;
  for (double v : values) encoded.push_back(number(v));
  return array(encoded);
}

}  // namespace treelora::json
