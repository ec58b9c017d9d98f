// treelora/core/utf8.hpp: the UTF-8 rules the text tasks (data/text_tasks.hpp) and the text metrics
// (metrics/text_metrics.hpp) share: validating, cutting text to a byte budget without splitting a character,
// and decoding into code points (the units Python's len, Levenshtein and chrF count in).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace treelora::utf8 {

/// The length of the valid UTF-8 character at the start of `text`, or 0 when it does not start with one (a
/// stray continuation byte, an overlong form, a surrogate, a code point over U+10FFFF, a truncated sequence):
/// RFC 3629.
inline std::size_t char_length(std::string_view text) {
  if (text.empty()) return 0;
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const auto continuation = [&](std::size_t i) { return (byte(i) & 0xC0u) == 0x80u; };
  const unsigned lead = byte(0);
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;  // a continuation byte, or the lead of an overlong two-byte form
  if (lead < 0xE0) return text.size() >= 2 && continuation(1) ? 2 : 0;
  if (lead < 0xF0) {
    if (text.size() < 3 || !continuation(1) || !continuation(2)) return 0;
    if (lead == 0xE0 && byte(1) < 0xA0) return 0;   // overlong
    if (lead == 0xED && byte(1) >= 0xA0) return 0;  // U+D800..U+DFFF, surrogates
    return 3;
  }
  if (lead < 0xF5) {
    if (text.size() < 4 || !continuation(1) || !continuation(2) || !continuation(3)) return 0;
    if (lead == 0xF0 && byte(1) < 0x90) return 0;   // overlong
    if (lead == 0xF4 && byte(1) >= 0x90) return 0;  // over U+10FFFF
    return 4;
  }
  return 0;
}

/// Whether all of `text` is valid UTF-8.
inline bool valid(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = char_length(text.substr(i));
    if (length == 0) return false;
    i += length;
  }
  return true;
}

/// The longest start of `text` of at most `max_bytes` bytes that ends on a character boundary (a byte that is
/// not a UTF-8 continuation byte, or the end).
inline std::string_view prefix(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0u) == 0x80u) --end;
  return text.substr(0, end);
}

/// The longest end of `text` of at most `max_bytes` bytes that starts on a character boundary.
inline std::string_view suffix(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t begin = text.size() - max_bytes;
  while (begin < text.size() && (static_cast<unsigned char>(text[begin]) & 0xC0u) == 0x80u) ++begin;
  return text.substr(begin);
}

/// Where a byte that is not part of a valid character goes when decoding: 0x110000 + byte, above every code
/// point, so that two different invalid bytes stay different and never equal a real character.
inline constexpr char32_t invalid_byte_base = 0x110000;

/// The code points of `text`; each byte that does not start a valid character becomes invalid_byte_base +
/// byte.
inline std::vector<char32_t> code_points(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = char_length(text.substr(i));
    const auto byte = [&](std::size_t k) {
      return static_cast<char32_t>(static_cast<unsigned char>(text[i + k]));
    };
    switch (length) {
      case 1:
        out.push_back(byte(0));
        break;
      case 2:
        out.push_back(((byte(0) & 0x1Fu) << 6) | (byte(1) & 0x3Fu));
        break;
      case 3:
        out.push_back(((byte(0) & 0x0Fu) << 12) | ((byte(1) & 0x3Fu) << 6) | (byte(2) & 0x3Fu));
        break;
      case 4:
        out.push_back(((byte(0) & 0x07u) << 18) | ((byte(1) & 0x3Fu) << 12) | ((byte(2) & 0x3Fu) << 6) |
                      (byte(3) & 0x3Fu));
        break;
      default:
        out.push_back(invalid_byte_base + byte(0));
        break;
    }
    i += length == 0 ? 1 : length;
  }
  return out;
}

}  // namespace treelora::utf8
