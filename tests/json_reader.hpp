// tests/json_reader.hpp: a minimal JSON reader for test oracles (numbers, strings, bools, null, arrays,
// objects). Test-only: no unicode escapes beyond \uXXXX -> '?', numbers as double (RFC 8259 syntax, read with
// std::from_chars). Throws std::runtime_error with the byte offset on malformed input, including nesting
// deeper than json::max_depth (the reader recurses once per level). Fuzzed by
// tests/fuzz/fuzz_json_reader.cpp.
#pragma once

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace treelora::testing {

class json {
 public:
  using array = std::vector<json>;
  using object = std::map<std::string, json>;

  /// Arrays and objects nest at most this deep: 50,000 '[' would otherwise overflow the stack.
  static constexpr int max_depth = 512;

  json() = default;
  static json parse(const std::string& text) {
    std::size_t pos = 0;
    json value = parse_value(text, pos, 0);
    skip_space(text, pos);
    if (pos != text.size()) fail("trailing characters", pos);
    return value;
  }
  static json parse_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("json: cannot open " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return parse(s.str());
  }

  bool is_null() const { return std::holds_alternative<std::monostate>(value_); }
  bool is_number() const { return std::holds_alternative<double>(value_); }
  bool is_array() const { return std::holds_alternative<std::shared_ptr<array>>(value_); }
  bool is_object() const { return std::holds_alternative<std::shared_ptr<object>>(value_); }
  double number() const { return get<double>("number"); }
  long long integer() const { return static_cast<long long>(number()); }
  bool boolean() const { return get<bool>("bool"); }
  const std::string& string() const { return get<std::string>("string"); }
  const array& elements() const { return *get<std::shared_ptr<array>>("array"); }
  const object& members() const { return *get<std::shared_ptr<object>>("object"); }
  bool contains(const std::string& key) const { return is_object() && members().count(key) > 0; }
  const json& operator[](const std::string& key) const {
    const auto& m = members();
    const auto it = m.find(key);
    if (it == m.end()) throw std::runtime_error("json: no member '" + key + "'");
    return it->second;
  }
  const json& operator[](std::size_t i) const { return elements().at(i); }
  std::size_t size() const { return is_array() ? elements().size() : members().size(); }
  /// An array of numbers as a vector of T.
  template <class T>
  std::vector<T> as_vector() const {
    std::vector<T> out;
    for (const auto& e : elements()) out.push_back(static_cast<T>(e.number()));
    return out;
  }

 private:
  template <class T>
  const T& get(const char* what) const {
    if (const T* p = std::get_if<T>(&value_)) return *p;
    throw std::runtime_error(std::string("json: value is not a ") + what);
  }
  [[noreturn]] static void fail(const std::string& what, std::size_t pos) {
    throw std::runtime_error("json: " + what + " at offset " + std::to_string(pos));
  }
  static void skip_space(const std::string& s, std::size_t& pos) {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t')) ++pos;
  }
  static void expect(const std::string& s, std::size_t& pos, const char* word) {
    for (const char* c = word; *c; ++c, ++pos)
      if (pos >= s.size() || s[pos] != *c) fail(std::string("expected '") + word + "'", pos);
  }
  static bool is_digit(const std::string& s, std::size_t pos) {
    return pos < s.size() && s[pos] >= '0' && s[pos] <= '9';
  }
  static bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }
  /// `depth`: how many arrays and objects enclose the value.
  static json parse_value(const std::string& s, std::size_t& pos, int depth) {
    skip_space(s, pos);
    if (pos >= s.size()) fail("unexpected end", pos);
    json v;
    const char c = s[pos];
    if ((c == '{' || c == '[') && depth >= max_depth)
      fail("nesting deeper than " + std::to_string(max_depth) + " levels", pos);
    if (c == '{') {
      auto obj = std::make_shared<object>();
      ++pos;
      skip_space(s, pos);
      if (pos < s.size() && s[pos] == '}') { ++pos; v.value_ = obj; return v; }
      for (;;) {
        skip_space(s, pos);
        if (pos >= s.size() || s[pos] != '"') fail("expected a key", pos);
        std::string key = parse_string(s, pos);
        skip_space(s, pos);
        if (pos >= s.size() || s[pos] != ':') fail("expected ':'", pos);
        ++pos;
        (*obj)[key] = parse_value(s, pos, depth + 1);
        skip_space(s, pos);
        if (pos < s.size() && s[pos] == ',') { ++pos; continue; }
        if (pos < s.size() && s[pos] == '}') { ++pos; break; }
        fail("expected ',' or '}'", pos);
      }
      v.value_ = obj;
    } else if (c == '[') {
      auto arr = std::make_shared<array>();
      ++pos;
      skip_space(s, pos);
      if (pos < s.size() && s[pos] == ']') { ++pos; v.value_ = arr; return v; }
      for (;;) {
        arr->push_back(parse_value(s, pos, depth + 1));
        skip_space(s, pos);
        if (pos < s.size() && s[pos] == ',') { ++pos; continue; }
        if (pos < s.size() && s[pos] == ']') { ++pos; break; }
        fail("expected ',' or ']'", pos);
      }
      v.value_ = arr;
    } else if (c == '"') {
      v.value_ = parse_string(s, pos);
    } else if (c == 't') {
      expect(s, pos, "true");
      v.value_ = true;
    } else if (c == 'f') {
      expect(s, pos, "false");
      v.value_ = false;
    } else if (c == 'n') {
      expect(s, pos, "null");
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, scanned within the text, then converted.
      std::size_t end = pos + (c == '-');
      if (!is_digit(s, end)) fail("bad number", pos);
      if (s[end] == '0') {
        ++end;
      } else {
        while (is_digit(s, end)) ++end;
      }
      if (end < s.size() && s[end] == '.') {
        if (!is_digit(s, ++end)) fail("bad number", pos);
        while (is_digit(s, end)) ++end;
      }
      if (end < s.size() && (s[end] == 'e' || s[end] == 'E')) {
        ++end;
        if (end < s.size() && (s[end] == '+' || s[end] == '-')) ++end;
        if (!is_digit(s, end)) fail("bad number", pos);
        while (is_digit(s, end)) ++end;
      }
      double d = 0;
      const auto [stop, error] = std::from_chars(s.data() + pos, s.data() + end, d);
      if (error != std::errc() || stop != s.data() + end) fail("number out of range", pos);
      pos = end;
      v.value_ = d;
    } else {
      fail(std::string("unexpected character '") + c + "'", pos);
    }
    return v;
  }
  static std::string parse_string(const std::string& s, std::size_t& pos) {
    ++pos;  // opening quote
    std::string out;
    while (pos < s.size() && s[pos] != '"') {
      char c = s[pos++];
      if (c == '\\') {
        if (pos >= s.size()) fail("unfinished escape", pos);
        const char e = s[pos++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u':
            if (pos + 4 > s.size()) fail("short \\u escape", pos);
            for (int i = 0; i < 4; ++i)
              if (!is_hex(s[pos + static_cast<std::size_t>(i)])) fail("bad \\u escape", pos);
            pos += 4;
            out += '?';
            break;
          case '"': case '\\': case '/': out += e; break;
          default: fail("bad escape", pos);
        }
      } else {
        out += c;
      }
    }
    if (pos >= s.size()) fail("unterminated string", pos);
    ++pos;
    return out;
  }

  std::variant<std::monostate, bool, double, std::string, std::shared_ptr<array>, std::shared_ptr<object>> value_;
};

}  // namespace treelora::testing
