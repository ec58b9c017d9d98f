// treelora/io/json.hpp: every JSON text treelora reads or writes goes through nlohmann::json (one code path):
//
//   json::object row;                                   // fields keep the order they were added in
//   row.add_string("method", "SeqLoRA").add_number("seed", std::uint64_t(12345678901)).add("matrix", {0.5, 0.25});
//   std::string text = row.str();                       // 2-space indented; integers exact, doubles round-trip
//   json::value v = json::parse(text, "results.json");  // strict: duplicate keys and deep nesting are errors
//
// Integers are written exactly, doubles with the shortest text that reads back to the same value; non-finite
// numbers are written as null (JSON has no NaN). Text that is not UTF-8 is written with U+FFFD in its place.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <concepts>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "treelora/core/error.hpp"

namespace treelora::json {

/// A JSON value whose objects keep their keys in insertion order (a report reads in the order it was built).
using value = nlohmann::ordered_json;

/// Arrays and objects nest at most this deep in what json::parse accepts (walking a value recurses per level).
inline constexpr int max_depth = 512;

/// `v` as JSON text: compact when `indent` < 0, else one member per line indented by `indent` spaces.
inline std::string dump(const value& v, int indent = -1) {
  return v.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

/// `text` as a JSON string literal, quotes included.
inline std::string quote(const std::string& text) { return dump(value(text)); }

/// A double that reads back to the same value (non-finite: null).
inline std::string number(double v) { return dump(value(v)); }
/// Integers are written exactly (a seed of 12345678901 stays 12345678901, not 1.23456789e+10).
template <std::integral Integer>
  requires(!std::same_as<Integer, bool>)
std::string number(Integer v) {
  return dump(value(v));
}

/// Parses `text` (RFC 8259) into a value. Rejects, besides malformed text, a key repeated within one object
/// (nlohmann::json would keep the last one silently) and nesting deeper than max_depth. Throws
/// std::runtime_error("treelora::json::parse: <what>: <fault>"); `what` names the text (a file name).
inline value parse(std::string_view text, std::string_view what = "JSON text") {
  std::vector<std::set<std::string>> keys;  // the keys seen so far in each open object
  const auto check = [&](int depth, nlohmann::ordered_json::parse_event_t event, value& parsed) {
    using event_t = nlohmann::ordered_json::parse_event_t;
    if ((event == event_t::object_start || event == event_t::array_start) && depth >= max_depth)
      throw_runtime_error("json::parse", concat(what, ": nesting deeper than ", max_depth, " levels"));
    if (event == event_t::object_start) keys.emplace_back();
    if (event == event_t::object_end) keys.pop_back();
    if (event == event_t::key && !keys.back().insert(parsed.get<std::string>()).second)
      throw_runtime_error("json::parse",
                          concat(what, ": the key ", dump(parsed), " appears twice in one object"));
    return true;  // keep every value
  };
  try {
    return value::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::ordered_json::exception& e) {  // malformed text: e.what() has the byte offset
    throw_runtime_error("json::parse", concat(what, ": ", e.what()));
  }
}

/// Reads and parses a file; errors name the file.
inline value parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_runtime_error("json::parse_file", concat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw_runtime_error("json::parse_file", concat("cannot read ", path));
  return parse(text.view(), path);
}

/// Builds one object as {"key": value, ...}, keys in the order they were added.
class object {
 public:
  object& add(const std::string& key, value v) {
    fields_[key] = std::move(v);
    return *this;
  }
  object& add(const std::string& key, const object& nested) { return add(key, nested.fields_); }
  object& add_string(const std::string& key, const std::string& text) { return add(key, value(text)); }
  object& add_number(const std::string& key, double v) { return add(key, value(v)); }
  template <std::integral Integer>
    requires(!std::same_as<Integer, bool>)
  object& add_number(const std::string& key, Integer v) {
    return add(key, value(v));
  }
  object& add_bool(const std::string& key, bool v) { return add(key, value(v)); }
  /// Adds already-encoded JSON text (parsed, so a malformed one is an error here, not in the reader's hands).
  object& add_encoded(const std::string& key, std::string_view encoded) { return add(key, parse(encoded, key)); }

  const value& get() const { return fields_; }
  /// The object as text, one member per line, indented by 2 spaces per level.
  std::string str() const { return dump(fields_, 2); }

 private:
  value fields_ = value::object();
};

}  // namespace treelora::json
