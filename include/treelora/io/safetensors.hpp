// treelora/io/safetensors.hpp: reading and writing safetensors files (Hugging Face's tensor format), and
// checkpoints sharded over several of them (docs/interop.md).
//
//   safetensors_file f("model.safetensors");           // memory-mapped, every rule of the format checked here
//   for (const auto& name : f.names()) ...             // in file order
//   std::vector<float> w = f.to_float("lm_head.weight");  // F32, F16, BF16 or F64, converted exactly where it can be
//   tensor<cpu_backend<float>> t = f.load(backend, "lm_head.weight");
//
//   safetensors_writer out;
//   out.add("a", {2, 3}, std::span<const float>(values), safetensors_dtype::BF16).set_metadata("format", "pt");
//   out.write("adapter.safetensors");                  // atomically; byte for byte what the reference writes
//
//   sharded_safetensors model("model.safetensors.index.json");  // opens every shard named in the weight map
//
// The format: bytes 0..7 hold N (u64, little-endian), then N bytes of UTF-8 JSON, then the data buffer. The JSON is
// {"__metadata__": {string: string} (optional), "<name>": {"dtype": "F32", "shape": [...], "data_offsets": [begin,
// end]}, ...}, offsets relative to the data buffer, half-open, tiling it exactly. Each way a file can break that is one
// named fault (safetensors_fault, named as the reference implementation names its errors where it has one), thrown
// as a safetensors_error (a std::runtime_error) whose message names the file, the tensor where there is one, the
// fault and the detail. No element is assumed aligned: values are copied out byte by byte (memcpy).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "treelora/core/error.hpp"
#include "treelora/io/atomic_file.hpp"
#include "treelora/io/json.hpp"
#include "treelora/tensor/tensor.hpp"

namespace treelora {

// ------------------------------------------------------------------------------------------------------ dtypes
/// The element types of the format, spelled as in the files. Declared in the reference's order (its Dtype enum),
/// which its writer sorts by: larger alignment first.
enum class safetensors_dtype : std::uint8_t {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64
};

namespace detail {
struct safetensors_dtype_entry {
  safetensors_dtype dtype;
  std::string_view name;
  std::uint64_t size;  ///< bytes per element
};
inline constexpr std::array<safetensors_dtype_entry, 17> safetensors_dtypes{{
    {safetensors_dtype::BOOL, "BOOL", 1},  {safetensors_dtype::U8, "U8", 1},
    {safetensors_dtype::I8, "I8", 1},      {safetensors_dtype::F8_E5M2, "F8_E5M2", 1},
    {safetensors_dtype::F8_E4M3, "F8_E4M3", 1}, {safetensors_dtype::F8_E8M0, "F8_E8M0", 1},
    {safetensors_dtype::I16, "I16", 2},    {safetensors_dtype::U16, "U16", 2},
    {safetensors_dtype::F16, "F16", 2},    {safetensors_dtype::BF16, "BF16", 2},
    {safetensors_dtype::I32, "I32", 4},    {safetensors_dtype::U32, "U32", 4},
    {safetensors_dtype::F32, "F32", 4},    {safetensors_dtype::C64, "C64", 8},
    {safetensors_dtype::F64, "F64", 8},    {safetensors_dtype::I64, "I64", 8},
    {safetensors_dtype::U64, "U64", 8},
}};
}  // namespace detail

inline std::string_view dtype_name(safetensors_dtype d) {
  return detail::safetensors_dtypes[static_cast<std::size_t>(d)].name;
}
/// Bytes per element.
inline std::uint64_t dtype_size(safetensors_dtype d) {
  return detail::safetensors_dtypes[static_cast<std::size_t>(d)].size;
}
/// "F32" -> F32; nullopt for a name the format does not know.
inline std::optional<safetensors_dtype> parse_dtype(std::string_view name) {
  for (const auto& entry : detail::safetensors_dtypes)
    if (entry.name == name) return entry.dtype;
  return std::nullopt;
}

// ------------------------------------------------------------------------------------------------------ errors
/// Every way a safetensors file (or a sharded checkpoint's index) can be wrong, and the two ways a request can be.
enum class safetensors_fault {
  unreadable,                      ///< cannot open, inspect or map the file, or it is not a regular file
  header_too_small,                ///< the file is under 8 bytes
  header_too_large,                ///< N > 100,000,000
  invalid_header_length,           ///< 8 + N runs past the end of the file
  invalid_header,                  ///< the header is not UTF-8
  invalid_header_deserialization,  ///< not JSON, or not of the form (types, missing or unknown keys)
  duplicate_name,                  ///< a tensor name, metadata key or entry key appears twice
  unknown_dtype,                   ///< a dtype the format does not know
  invalid_number,                  ///< a shape or offset that is negative, fractional, or over 2^64 - 1
  invalid_metadata,                ///< a metadata value that is not a string
  invalid_offset,                  ///< offsets that, sorted, do not tile the buffer from 0 (gap, overlap, begin > end)
  validation_overflow,             ///< a shape product or byte size that overflows 64 bits
  tensor_invalid_info,             ///< end - begin != elements x element size
  metadata_incomplete_buffer,      ///< bytes left over after the last tensor, or a truncated buffer
  tensor_not_found,                ///< a request for a name the file does not hold
  unsupported_conversion,          ///< to_float / to_double / load of a dtype that is not F32, F16, BF16 or F64
  invalid_index,                   ///< a sharded checkpoint's index that is not {"metadata": {...}, "weight_map": {...}}
  invalid_shard_name,              ///< a shard file name with a path separator, "..", or empty
  shard_missing_tensor,            ///< a name of the weight map that its shard does not hold
  shard_unlisted_tensor,           ///< a tensor in a shard that the weight map does not list there
};

inline std::string_view fault_name(safetensors_fault f) {
  constexpr std::array<std::string_view, 20> names{
      "Unreadable",          "HeaderTooSmall",      "HeaderTooLarge",     "InvalidHeaderLength",
      "InvalidHeader",       "InvalidHeaderDeserialization", "DuplicateName", "UnknownDtype",
      "InvalidNumber",       "InvalidMetadata",     "InvalidOffset",      "ValidationOverflow",
      "TensorInvalidInfo",   "MetadataIncompleteBuffer", "TensorNotFound", "UnsupportedConversion",
      "InvalidIndex",        "InvalidShardName",    "ShardMissingTensor", "ShardUnlistedTensor"};
  return names[static_cast<std::size_t>(f)];
}

/// "treelora::safetensors: <file>: tensor '<name>': <Fault>: <detail>" (no tensor part when there is none).
class safetensors_error : public std::runtime_error {
 public:
  safetensors_error(safetensors_fault fault, const std::string& file, const std::string& tensor, const std::string& detail)
      : std::runtime_error(concat("treelora::safetensors: ", file, ": ",
                                  tensor.empty() ? std::string() : concat("tensor '", tensor, "': "), fault_name(fault),
                                  ": ", detail)),
        fault_(fault) {}
  safetensors_fault fault() const { return fault_; }

 private:
  safetensors_fault fault_;
};

/// One tensor of a file, as its header describes it (offsets relative to the data buffer).
struct safetensors_tensor_info {
  std::string name;
  safetensors_dtype dtype = safetensors_dtype::F32;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : shape) n *= d;  // checked when the file was read
    return n;
  }
  std::uint64_t byte_size() const { return end - begin; }
};

/// A header's contents once every rule has passed.
struct safetensors_header {
  std::uint64_t header_size = 0;                        ///< N
  std::vector<safetensors_tensor_info> tensors;         ///< in offset order
  std::optional<std::map<std::string, std::string>> metadata;  ///< "__metadata__", when present
};

namespace detail {

inline constexpr std::uint64_t safetensors_max_header = 100'000'000;

/// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), as Rust's str::from_utf8.
inline bool is_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  const auto continuation = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return i < n && p[i] >= lo && p[i] <= hi;
  };
  for (std::size_t i = 0; i < n;) {
    const unsigned b = p[i];
    if (b < 0x80) {
      ++i;
    } else if (b >= 0xC2 && b <= 0xDF) {
      if (!continuation(i + 1)) return false;
      i += 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      const unsigned lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
      if (!continuation(i + 1, lo, hi) || !continuation(i + 2)) return false;
      i += 3;
    } else if (b >= 0xF0 && b <= 0xF4) {
      const unsigned lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
      if (!continuation(i + 1, lo, hi) || !continuation(i + 2) || !continuation(i + 3)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

/// A little-endian unsigned integer from unaligned bytes.
template <class Unsigned>
Unsigned load_little_endian(const std::byte* p) {
  Unsigned v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) {
    Unsigned swapped = 0;
    for (std::size_t i = 0; i < sizeof v; ++i) swapped = Unsigned(swapped << 8) | Unsigned((v >> (8 * i)) & 0xFF);
    v = swapped;
  }
  return v;
}
template <class Unsigned>
void store_little_endian(std::string& out, Unsigned v) {
  for (std::size_t i = 0; i < sizeof v; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

/// IEEE half -> float, exactly: subnormals, infinities and NaN payloads included.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa x 2^-24, exact in float
    return std::bit_cast<float>(std::bit_cast<std::uint32_t>(static_cast<float>(mantissa) * 0x1p-24f) | sign);
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // Inf, NaN
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

/// float -> IEEE half, rounding to nearest, ties to even (as numpy's astype(float16)); overflow becomes Inf; a NaN
/// keeps the top of its payload and stays a NaN.
inline std::uint16_t float_to_half(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t x = bits & 0x7FFFFFFFu;
  if (x >= 0x7F800000u) {  // Inf or NaN
    if (x == 0x7F800000u) return sign | 0x7C00u;
    const auto nan = static_cast<std::uint16_t>(0x7C00u + ((x & 0x7FFFFFu) >> 13));
    return sign | (nan == 0x7C00u ? 0x7C01u : nan);
  }
  if (x >= 0x47800000u) return sign | 0x7C00u;  // 2^16 and above: Inf (65520 .. 65536 round up below)
  const auto round = [](std::uint32_t mantissa, unsigned shift) {  // mantissa >> shift, ties to even
    std::uint32_t result = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (result & 1u))) ++result;
    return result;
  };
  if (x < 0x38800000u) {  // below 2^-14: a half subnormal (or zero)
    const std::uint32_t exponent = x >> 23;
    if (exponent < 102) return sign;  // under 2^-25: rounds to zero
    return static_cast<std::uint16_t>(sign | round((x & 0x7FFFFFu) | 0x800000u, 126 - exponent));
  }
  // Normal: rebias the exponent, keep 10 mantissa bits; a carry out of the mantissa bumps the exponent (to Inf at most).
  return static_cast<std::uint16_t>(sign | round(x - 0x38000000u, 13));
}

/// bfloat16 -> float: the top half of the float's bits.
inline float bfloat16_to_float(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t(b) << 16); }
/// float -> bfloat16, rounding to nearest, ties to even; any NaN becomes 0x7FC0 (as PyTorch's conversion).
inline std::uint16_t float_to_bfloat16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u;
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

/// Converts `count` elements of `dtype` at `source` (unaligned, little-endian) into `out`.
template <class T>
void convert_elements(safetensors_dtype dtype, const std::byte* source, std::size_t count, T* out) {
  switch (dtype) {
    case safetensors_dtype::F32:
      if constexpr (std::is_same_v<T, float> && std::endian::native == std::endian::little) {
        if (count) std::memcpy(out, source, count * sizeof(float));
      } else {
        for (std::size_t i = 0; i < count; ++i)
          out[i] = static_cast<T>(std::bit_cast<float>(load_little_endian<std::uint32_t>(source + 4 * i)));
      }
      return;
    case safetensors_dtype::F64:
      for (std::size_t i = 0; i < count; ++i)
        out[i] = static_cast<T>(std::bit_cast<double>(load_little_endian<std::uint64_t>(source + 8 * i)));
      return;
    case safetensors_dtype::F16:
      for (std::size_t i = 0; i < count; ++i)
        out[i] = static_cast<T>(half_to_float(load_little_endian<std::uint16_t>(source + 2 * i)));
      return;
    case safetensors_dtype::BF16:
      for (std::size_t i = 0; i < count; ++i)
        out[i] = static_cast<T>(bfloat16_to_float(load_little_endian<std::uint16_t>(source + 2 * i)));
      return;
    default:
      break;
  }
}
inline bool is_convertible(safetensors_dtype d) {
  return d == safetensors_dtype::F32 || d == safetensors_dtype::F64 || d == safetensors_dtype::F16 ||
         d == safetensors_dtype::BF16;
}

/// The nlohmann::json SAX handler that reads a header: the form of the format and nothing else, each number as a
/// 64-bit unsigned integer as nlohmann's lexer read it (never through a double), every fault thrown at once.
class safetensors_header_reader {
 public:
  using json_t = nlohmann::json;
  safetensors_header_reader(const std::string& file, safetensors_header& out) : file_(file), out_(out) {}

  bool null() { return scalar("null"); }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_integer(json_t::number_integer_t v) {
    if (state_ == state::shape || state_ == state::offsets)
      fail(safetensors_fault::invalid_number,
           concat(array_name(), " holds ", v == 0 ? std::string("-0") : std::to_string(v), ", a negative number"));
    return scalar("a number");
  }
  bool number_unsigned(json_t::number_unsigned_t v) {
    if (state_ == state::shape) {
      entry_.shape.push_back(v);
      return true;
    }
    if (state_ == state::offsets) {
      if (offsets_ == 2) fail(safetensors_fault::invalid_header_deserialization, "data_offsets holds more than 2 numbers");
      (offsets_++ == 0 ? entry_.begin : entry_.end) = v;
      return true;
    }
    return scalar("a number");
  }
  bool number_float(json_t::number_float_t, const json_t::string_t& text) {
    if (state_ == state::shape || state_ == state::offsets) {
      const bool integral = text.find_first_of(".eE") == std::string::npos;
      fail(safetensors_fault::invalid_number,
           concat(array_name(), " holds ", text,
                  integral ? (text.starts_with('-') ? ", a negative number" : ", which is over 2^64 - 1")
                           : ", which is not written as an integer"));
    }
    return scalar("a number");
  }
  bool string(json_t::string_t& v) {
    if (state_ == state::metadata_value) {
      out_.metadata->emplace(key_, v);
      state_ = state::metadata;
      return true;
    }
    if (state_ == state::entry_value && key_ == "dtype") {
      const auto dtype = parse_dtype(v);
      if (!dtype)
        fail(safetensors_fault::unknown_dtype,
             concat("unknown dtype ", json::quote(v), " (known: BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, "
                                                       "BF16, I32, U32, F32, C64, F64, I64, U64)"));
      entry_.dtype = *dtype;
      state_ = state::entry;
      return true;
    }
    return scalar("a string");
  }
  bool binary(json_t::binary_t&) { return scalar("binary data"); }

  bool start_object(std::size_t) {
    switch (state_) {
      case state::start: state_ = state::root; return true;
      case state::root_value:
        if (key_ == "__metadata__") {
          out_.metadata.emplace();
          state_ = state::metadata;
        } else {
          entry_ = safetensors_tensor_info{};
          entry_.name = key_;
          seen_.clear();
          state_ = state::entry;
        }
        return true;
      default: return scalar("an object");
    }
  }
  bool key(json_t::string_t& k) {
    switch (state_) {
      case state::root:
        if (!names_.insert(k).second)
          fail(safetensors_fault::duplicate_name, concat("the name ", json::quote(k), " appears twice in the header"));
        key_ = k;
        state_ = state::root_value;
        return true;
      case state::metadata:
        if (out_.metadata->count(k))
          fail(safetensors_fault::duplicate_name, concat("the metadata key ", json::quote(k), " appears twice"));
        key_ = k;
        state_ = state::metadata_value;
        return true;
      case state::entry:
        if (k != "dtype" && k != "shape" && k != "data_offsets")
          fail(safetensors_fault::invalid_header_deserialization,
               concat("unknown key ", json::quote(k), " (an entry has dtype, shape and data_offsets only)"));
        if (!seen_.insert(k).second)
          fail(safetensors_fault::duplicate_name, concat("the key \"", k, "\" appears twice in the entry"));
        key_ = k;
        state_ = state::entry_value;
        return true;
      default: return true;  // unreachable: nlohmann reports keys only inside objects, all handled above
    }
  }
  bool end_object() {
    switch (state_) {
      case state::root: state_ = state::done; return true;
      case state::metadata: state_ = state::root; return true;
      case state::entry:
        for (const char* k : {"dtype", "shape", "data_offsets"})
          if (!seen_.count(k)) fail(safetensors_fault::invalid_header_deserialization, concat("the entry has no ", k));
        out_.tensors.push_back(std::move(entry_));
        state_ = state::root;
        return true;
      default: return true;  // unreachable: every other object was refused when it started
    }
  }
  bool start_array(std::size_t) {
    if (state_ == state::entry_value && (key_ == "shape" || key_ == "data_offsets")) {
      state_ = key_ == "shape" ? state::shape : state::offsets;
      offsets_ = 0;
      return true;
    }
    return scalar("an array");
  }
  bool end_array() {
    if (state_ == state::offsets && offsets_ != 2)
      fail(safetensors_fault::invalid_header_deserialization, concat("data_offsets holds ", offsets_, " numbers, not 2"));
    state_ = state::entry;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) {
    fail(safetensors_fault::invalid_header_deserialization, concat("not JSON: ", e.what()));
  }

 private:
  enum class state { start, root, root_value, metadata, metadata_value, entry, entry_value, shape, offsets, done };

  [[noreturn]] void fail(safetensors_fault fault, const std::string& detail) const {
    const bool in_tensor = state_ == state::entry || state_ == state::entry_value || state_ == state::shape ||
                           state_ == state::offsets || (state_ == state::root_value && key_ != "__metadata__");
    throw safetensors_error(fault, file_, in_tensor ? (state_ == state::root_value ? key_ : entry_.name) : std::string(),
                            detail);
  }
  std::string array_name() const { return state_ == state::shape ? "shape" : "data_offsets"; }
  /// A value where the form has no place for it.
  bool scalar(const char* what) {
    switch (state_) {
      case state::start: fail(safetensors_fault::invalid_header_deserialization, concat("the header is ", what, ", not an object"));
      case state::metadata_value:
        fail(safetensors_fault::invalid_metadata, concat("the metadata value of ", json::quote(key_), " is ", what,
                                                         ", not a string"));
      case state::root_value:
        fail(key_ == "__metadata__" ? safetensors_fault::invalid_metadata : safetensors_fault::invalid_header_deserialization,
             concat(key_ == "__metadata__" ? "__metadata__" : "the entry", " is ", what, ", not an object"));
      case state::entry_value:
        fail(safetensors_fault::invalid_header_deserialization,
             concat(key_, " is ", what, key_ == "dtype" ? ", not a string" : ", not an array"));
      case state::shape:
      case state::offsets:
        fail(safetensors_fault::invalid_header_deserialization, concat(array_name(), " holds ", what, ", not a number"));
      default: fail(safetensors_fault::invalid_header_deserialization, concat("unexpected ", what));
    }
  }

  const std::string& file_;
  safetensors_header& out_;
  state state_ = state::start;
  std::string key_;
  safetensors_tensor_info entry_;
  std::size_t offsets_ = 0;
  std::set<std::string> names_, seen_;  // the header's names; the keys of the entry being read
};

}  // namespace detail

/// Checks every rule of the format on a whole file's bytes and returns its header. `file` names it in errors.
/// Allocates in proportion to the header (at most 100 MB, checked first against the file's size), never the data.
inline safetensors_header read_safetensors_header(std::span<const std::byte> bytes, const std::string& file) {
  using fault = safetensors_fault;
  const auto fail = [&](fault f, const std::string& detail, const std::string& tensor = "") {
    throw safetensors_error(f, file, tensor, detail);
  };
  if (bytes.size() < 8) fail(fault::header_too_small, concat("the file has ", bytes.size(), " bytes, under the 8 of N"));
  const auto n = detail::load_little_endian<std::uint64_t>(bytes.data());
  if (n > detail::safetensors_max_header)
    fail(fault::header_too_large, concat("N = ", n, " is over the limit of 100,000,000 bytes"));
  if (8 + n > bytes.size())
    fail(fault::invalid_header_length, concat("the header (8 + ", n, " bytes) runs past the end of the file (",
                                              bytes.size(), " bytes)"));
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, n);
  if (!detail::is_utf8(text)) fail(fault::invalid_header, "the header is not UTF-8");
  if (text.starts_with("\xEF\xBB\xBF"))  // nlohmann skips a byte-order mark; JSON (and the reference) does not
    fail(fault::invalid_header_deserialization, "the header starts with a byte-order mark");

  safetensors_header header;
  header.header_size = n;
  detail::safetensors_header_reader reader(file, header);
  nlohmann::json::sax_parse(text.begin(), text.end(), &reader, nlohmann::json::input_format_t::json, true, false);

  // The offsets, sorted, tile the buffer from 0; each tensor's bytes are its elements x its element size.
  auto& tensors = header.tensors;
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  std::uint64_t position = 0;
  for (const auto& t : tensors) {
    if (t.begin != position || t.end < t.begin)
      fail(fault::invalid_offset,
           concat("data_offsets [", t.begin, ", ", t.end, "] ",
                  t.end < t.begin     ? "end before begin"
                  : t.begin < position ? concat("overlap the previous tensor, which ends at ", position)
                                       : concat("leave a gap after byte ", position),
                  " (the offsets must tile the data buffer from 0)"),
           t.name);
    position = t.end;
    std::uint64_t elements = 1, size = 0;
    for (auto d : t.shape)
      if (__builtin_mul_overflow(elements, d, &elements))
        fail(fault::validation_overflow, "the product of the shape overflows 64 bits", t.name);
    if (__builtin_mul_overflow(elements, dtype_size(t.dtype), &size))
      fail(fault::validation_overflow, concat(elements, " elements of ", dtype_name(t.dtype), " overflow 64 bits"), t.name);
    if (t.end - t.begin != size)
      fail(fault::tensor_invalid_info, concat("data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin,
                                              " bytes; ", elements, " elements of ", dtype_name(t.dtype), " take ", size),
           t.name);
  }
  const std::uint64_t data_size = bytes.size() - 8 - n;
  if (position != data_size)
    fail(fault::metadata_incomplete_buffer,
         concat("the tensors end at byte ", position, " of the data buffer, which has ", data_size, " bytes",
                position < data_size ? " (bytes left over)" : " (truncated)"));
  return header;
}

namespace detail {
/// A read-only memory map of a whole file (RAII). An empty file maps nothing.
class mapped_file {
 public:
  explicit mapped_file(const std::filesystem::path& path) {
    const auto fail = [&](const std::string& what) {
      throw safetensors_error(safetensors_fault::unreadable, path.string(), "", what);
    };
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(concat("cannot open it (", std::strerror(errno), ")"));
    const unique_fd file(fd);
    struct stat info {};
    if (::fstat(fd, &info) != 0) fail(concat("cannot inspect it (", std::strerror(errno), ")"));
    if (!S_ISREG(info.st_mode)) fail("it is not a regular file");
    size_ = static_cast<std::size_t>(info.st_size);
    if (size_ == 0) return;
    void* data = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) fail(concat("cannot map it (", std::strerror(errno), ")"));
    data_ = static_cast<const std::byte*>(data);  // the map outlives the descriptor
  }
  ~mapped_file() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
  }
  mapped_file(mapped_file&& other) noexcept : data_(std::exchange(other.data_, nullptr)), size_(other.size_) {}
  mapped_file& operator=(mapped_file&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  /// Asks the kernel to map `range` now (one call instead of a page fault per 64 kB); a hint, failures ignored.
  void prefetch(std::span<const std::byte> range) const {
#ifdef MADV_POPULATE_READ
    if (range.size() < (std::size_t(1) << 20)) return;
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto start = reinterpret_cast<std::uintptr_t>(range.data()) & ~(page - 1);
    (void)::madvise(reinterpret_cast<void*>(start), reinterpret_cast<std::uintptr_t>(range.data()) + range.size() - start,
                    MADV_POPULATE_READ);
#else
    (void)range;
#endif
  }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};
}  // namespace detail

// ------------------------------------------------------------------------------------------------------ reading
/// A safetensors file, memory-mapped read-only and checked in full when opened (read_safetensors_header). Tensors
/// are read on request; the file must not be truncated while open (the system would signal SIGBUS on access).
class safetensors_file {
 public:
  explicit safetensors_file(const std::filesystem::path& path)
      : path_(path), map_(path), header_(read_safetensors_header(map_.bytes(), path.string())) {
    for (std::size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
  }

  const std::filesystem::path& path() const { return path_; }
  /// The tensor names in file (offset) order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(header_.tensors.size());
    for (const auto& t : header_.tensors) out.push_back(t.name);
    return out;
  }
  std::size_t size() const { return header_.tensors.size(); }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  const safetensors_tensor_info& info(std::string_view name) const {
    const auto it = index_.find(name);
    if (it == index_.end())
      throw safetensors_error(safetensors_fault::tensor_not_found, path_.string(), std::string(name),
                              "the file holds no tensor of that name");
    return header_.tensors[it->second];
  }
  const std::vector<safetensors_tensor_info>& tensors() const { return header_.tensors; }
  /// "__metadata__" (empty when the file has none; has_metadata() tells the two apart).
  const std::map<std::string, std::string>& metadata() const {
    static const std::map<std::string, std::string> none;
    return header_.metadata ? *header_.metadata : none;
  }
  bool has_metadata() const { return header_.metadata.has_value(); }
  std::uint64_t header_size() const { return header_.header_size; }

  /// The tensor's bytes in the map: little-endian elements, not necessarily aligned.
  std::span<const std::byte> bytes(std::string_view name) const {
    const auto& t = info(name);
    return map_.bytes().subspan(8 + header_.header_size + t.begin, t.byte_size());
  }

  /// The tensor's values converted to T (float or double): F32, F16 and BF16 exactly, F64 rounded to float.
  template <class T>
    requires std::floating_point<T>
  std::vector<T> to_host(std::string_view name) const {
    std::vector<T> out(static_cast<std::size_t>(convertible(name).numel()));  // its bytes are in the map: it fits
    convert_into(name, std::span<T>(out));
    return out;
  }
  std::vector<float> to_float(std::string_view name) const { return to_host<float>(name); }
  std::vector<double> to_double(std::string_view name) const { return to_host<double>(name); }

  /// Converts into a caller's buffer of exactly numel() values.
  template <class T>
    requires std::floating_point<T>
  void convert_into(std::string_view name, std::span<T> out) const {
    const auto& t = convertible(name);
    if (out.size() != t.numel())
      throw_invalid_argument("safetensors_file::convert_into",
                             concat(path_.string(), ": tensor '", t.name, "' has ", t.numel(), " values, not ", out.size()));
    const auto source = bytes(name);
    map_.prefetch(source);
    detail::convert_elements(t.dtype, source.data(), out.size(), out.data());
  }

  /// The tensor on `backend`, converted to its scalar type; the shape must have rank 4 or less.
  template <Backend B>
  tensor<B> load(B& backend, std::string_view name) const {
    using scalar = typename B::scalar_type;
    const auto& t = info(name);
    if (t.shape.size() > static_cast<std::size_t>(treelora::shape::max_rank))
      throw_invalid_argument("safetensors_file::load", concat(path_.string(), ": tensor '", t.name, "' has rank ",
                                                              t.shape.size(), "; tensors hold at most ", treelora::shape::max_rank));
    std::array<index_t, 4> d{};
    for (std::size_t i = 0; i < t.shape.size(); ++i) {
      if (t.shape[i] > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
        throw_invalid_argument("safetensors_file::load", concat(path_.string(), ": tensor '", t.name, "' extent ",
                                                                t.shape[i], " does not fit in index_t"));
      d[i] = static_cast<index_t>(t.shape[i]);
    }
    const treelora::shape s = t.shape.size() == 0   ? treelora::shape{}
                              : t.shape.size() == 1 ? treelora::shape{d[0]}
                              : t.shape.size() == 2 ? treelora::shape{d[0], d[1]}
                              : t.shape.size() == 3 ? treelora::shape{d[0], d[1], d[2]}
                                                    : treelora::shape{d[0], d[1], d[2], d[3]};
    convertible(name);
    if constexpr (B::is_host_accessible) {
      tensor<B> out(backend, s);
      convert_into(name, std::span<scalar>(out.data(), static_cast<std::size_t>(s.numel())));
      return out;
    } else {
      return tensor<B>::from_host(backend, s, to_host<scalar>(name));
    }
  }

 private:
  /// The tensor's info; throws UnsupportedConversion unless it is F32, F16, BF16 or F64.
  const safetensors_tensor_info& convertible(std::string_view name) const {
    const auto& t = info(name);
    if (!detail::is_convertible(t.dtype))
      throw safetensors_error(safetensors_fault::unsupported_conversion, path_.string(), t.name,
                              concat(dtype_name(t.dtype), " cannot be converted to floating point (F32, F16, BF16 "
                                                          "and F64 can; bytes() gives the raw data)"));
    return t;
  }

  std::filesystem::path path_;
  detail::mapped_file map_;
  safetensors_header header_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

// ------------------------------------------------------------------------------------------------------ writing
/// Builds a safetensors file byte for byte as the reference writer (huggingface/safetensors, serialize) does for the
/// same tensors and metadata: compact header JSON, "__metadata__" first (its keys sorted: the reference keeps them
/// in a hash map, so only one key has a defined order there), tensors sorted by dtype (the reference's order,
/// larger alignment first) then by name (bytewise), the header padded with spaces to a multiple of 8, the data
/// in the same order.
class safetensors_writer {
 public:
  /// Raw little-endian bytes of `dtype`; their size must be the shape's elements x the element size.
  safetensors_writer& add(const std::string& name, safetensors_dtype dtype, const std::vector<std::uint64_t>& shape,
                          std::span<const std::byte> bytes) {
    std::uint64_t elements = 1, size = 0;
    for (auto d : shape)
      if (__builtin_mul_overflow(elements, d, &elements)) reject(name, "the product of the shape overflows 64 bits");
    if (__builtin_mul_overflow(elements, dtype_size(dtype), &size) || size != bytes.size())
      reject(name, concat(bytes.size(), " bytes for ", elements, " elements of ", dtype_name(dtype)));
    check_name(name);
    entries_.push_back({name, dtype, shape, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())});
    return *this;
  }
  /// Float values stored as F32, F16 or BF16 (rounded to nearest, ties to even), or F64.
  safetensors_writer& add(const std::string& name, const std::vector<std::uint64_t>& shape, std::span<const float> values,
                          safetensors_dtype stored = safetensors_dtype::F32) {
    return add_converted(name, shape, values, stored);
  }
  /// Double values stored as F64 or F32 (rounded to nearest).
  safetensors_writer& add(const std::string& name, const std::vector<std::uint64_t>& shape, std::span<const double> values,
                          safetensors_dtype stored = safetensors_dtype::F64) {
    if (stored != safetensors_dtype::F64 && stored != safetensors_dtype::F32)
      reject(name, concat("doubles are stored as F64 or F32, not ", dtype_name(stored)));
    return add_converted(name, shape, values, stored);
  }
  /// A tensor (copied to the host), stored as `stored` (F32, F16, BF16 or F64).
  template <Backend B>
  safetensors_writer& add(const std::string& name, const_tensor_view<B> t, safetensors_dtype stored = safetensors_dtype::F32) {
    std::vector<std::uint64_t> dims;
    for (int axis = 0; axis < t.shape().rank(); ++axis) dims.push_back(static_cast<std::uint64_t>(t.shape()[axis]));
    const auto host = t.to_host();
    return add(name, dims, std::span<const typename B::scalar_type>(host), stored);
  }
  template <Backend B>
  safetensors_writer& add(const std::string& name, const tensor<B>& t, safetensors_dtype stored = safetensors_dtype::F32) {
    return add(name, t.view(), stored);
  }

  /// Sets one "__metadata__" entry (the file then has a "__metadata__", as it has after set_metadata({})).
  safetensors_writer& set_metadata(const std::string& key, const std::string& value) {
    if (!detail::is_utf8(key) || !detail::is_utf8(value))
      throw_invalid_argument("safetensors_writer::set_metadata", concat("metadata key '", key, "': not UTF-8"));
    if (!metadata_) metadata_.emplace();
    (*metadata_)[key] = value;
    return *this;
  }
  safetensors_writer& set_metadata(const std::map<std::string, std::string>& all) {
    metadata_.emplace();
    for (const auto& [k, v] : all) set_metadata(k, v);
    return *this;
  }

  /// The header as the file holds it: compact JSON padded with spaces to a multiple of 8 bytes.
  std::string header() const {
    json::value root = json::value::object();
    if (metadata_) {
      json::value m = json::value::object();
      for (const auto& [k, v] : *metadata_) m[k] = v;
      root["__metadata__"] = std::move(m);
    }
    std::uint64_t offset = 0;
    for (const auto* e : sorted()) {
      json::value entry = json::value::object();
      entry["dtype"] = dtype_name(e->dtype);
      entry["shape"] = e->shape;
      entry["data_offsets"] = {offset, offset + e->bytes.size()};
      offset += e->bytes.size();
      root[e->name] = std::move(entry);
    }
    std::string text = root.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
  }
  /// The whole file.
  std::string serialize() const {
    const std::string head = header();
    std::size_t total = 8 + head.size();
    for (const auto& e : entries_) total += e.bytes.size();
    std::string out;
    out.reserve(total);
    detail::store_little_endian<std::uint64_t>(out, head.size());
    out += head;
    for (const auto* e : sorted()) out += e->bytes;
    return out;
  }
  /// Writes the file atomically (write_file_atomically: a reader sees the old file or the whole new one).
  void write(const std::filesystem::path& path) const { write_file_atomically(path, std::string_view(serialize())); }

 private:
  struct entry {
    std::string name;
    safetensors_dtype dtype;
    std::vector<std::uint64_t> shape;
    std::string bytes;
  };

  [[noreturn]] static void reject(const std::string& name, const std::string& what) {
    throw_invalid_argument("safetensors_writer::add", concat("tensor '", name, "': ", what));
  }
  void check_name(const std::string& name) const {
    if (name == "__metadata__") reject(name, "the name is reserved for the metadata");
    if (!detail::is_utf8(name)) reject(name, "the name is not UTF-8");
    for (const auto& e : entries_)
      if (e.name == name) reject(name, "a tensor of that name was added already");
  }
  template <class T>
  safetensors_writer& add_converted(const std::string& name, const std::vector<std::uint64_t>& shape, std::span<const T> values,
                                    safetensors_dtype stored) {
    std::string bytes;
    bytes.reserve(values.size() * dtype_size(stored));
    switch (stored) {
      case safetensors_dtype::F32:
        for (T v : values) detail::store_little_endian(bytes, std::bit_cast<std::uint32_t>(static_cast<float>(v)));
        break;
      case safetensors_dtype::F64:
        for (T v : values) detail::store_little_endian(bytes, std::bit_cast<std::uint64_t>(static_cast<double>(v)));
        break;
      case safetensors_dtype::F16:
        for (T v : values) detail::store_little_endian(bytes, detail::float_to_half(static_cast<float>(v)));
        break;
      case safetensors_dtype::BF16:
        for (T v : values) detail::store_little_endian(bytes, detail::float_to_bfloat16(static_cast<float>(v)));
        break;
      default: reject(name, concat("floating-point values are stored as F32, F16, BF16 or F64, not ", dtype_name(stored)));
    }
    return add(name, stored, shape, std::as_bytes(std::span<const char>(bytes)));
  }
  std::vector<const entry*> sorted() const {
    std::vector<const entry*> order;
    for (const auto& e : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const entry* a, const entry* b) {
      if (a->dtype != b->dtype) return a->dtype > b->dtype;  // the reference's dtype order, descending
      return a->name < b->name;                              // bytewise (char_traits compares as unsigned char)
    });
    return order;
  }

  std::vector<entry> entries_;
  std::optional<std::map<std::string, std::string>> metadata_;
};

// ------------------------------------------------------------------------------------------------------ shards
/// A checkpoint sharded over several files, as Hugging Face writes it: model.safetensors.index.json =
/// {"metadata": {...}, "weight_map": {tensor name: shard file name}}, the shards in the index's folder. Opening it
/// opens every shard (each checked in full) and checks that each shard holds exactly the names the map gives it.
class sharded_safetensors {
 public:
  explicit sharded_safetensors(const std::filesystem::path& index_path) : index_path_(index_path) {
    const std::string where = index_path.string();
    const auto fail = [&](safetensors_fault f, const std::string& detail, const std::string& tensor = "") {
      throw safetensors_error(f, where, tensor, detail);
    };
    json::value index;
    try {
      index = json::parse_file(where);
    } catch (const std::runtime_error& e) {
      fail(safetensors_fault::invalid_index, e.what());
    }
    if (!index.is_object()) fail(safetensors_fault::invalid_index, "the index is not a JSON object");
    for (const auto& [key, value] : index.items())
      if (key != "metadata" && key != "weight_map")
        fail(safetensors_fault::invalid_index, concat("unknown key ", json::quote(key), " (an index has metadata and weight_map)"));
    if (index.contains("metadata")) {
      if (!index["metadata"].is_object()) fail(safetensors_fault::invalid_index, "metadata is not an object");
      metadata_ = index["metadata"];
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail(safetensors_fault::invalid_index, "the index has no weight_map object");
    std::map<std::string, std::set<std::string>> expected;  // shard file -> the names the map puts there
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail(safetensors_fault::invalid_index, "its weight_map value is not a file name", name);
      const auto& shard = file.get_ref<const std::string&>();
      if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
          shard.find('\\') != std::string::npos || shard.find("..") != std::string::npos)
        fail(safetensors_fault::invalid_shard_name,
             concat("shard ", json::quote(shard), " is not a plain file name in the index's folder"), name);
      expected[shard].insert(name);
    }
    const auto folder = index_path.parent_path();
    for (const auto& [shard, names] : expected) {
      shard_index_.emplace(shard, shards_.size());
      shards_.emplace_back(folder / shard);
      const auto& file = shards_.back();
      for (const auto& name : names) {
        if (!file.contains(name))
          fail(safetensors_fault::shard_missing_tensor, concat("the weight map puts it in ", shard, ", which does not hold it"),
               name);
        tensor_shard_.emplace(name, shards_.size() - 1);
      }
      for (const auto& t : file.tensors())
        if (!names.count(t.name))
          fail(safetensors_fault::shard_unlisted_tensor,
               concat(shard, " holds it, but the weight map ",
                      index["weight_map"].contains(t.name) ? concat("puts it in ", index["weight_map"][t.name].get<std::string>())
                                                           : std::string("does not list it")),
               t.name);
    }
  }

  const std::filesystem::path& index_path() const { return index_path_; }
  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, shard] : tensor_shard_) out.push_back(name);
    return out;
  }
  bool contains(std::string_view name) const { return tensor_shard_.find(name) != tensor_shard_.end(); }
  /// The index's "metadata" (an empty object when it has none), e.g. {"total_size": 123}.
  const json::value& metadata() const { return metadata_; }
  const std::vector<safetensors_file>& shards() const { return shards_; }
  /// The shard that holds `name`.
  const safetensors_file& shard(std::string_view name) const {
    const auto it = tensor_shard_.find(name);
    if (it == tensor_shard_.end())
      throw safetensors_error(safetensors_fault::tensor_not_found, index_path_.string(), std::string(name),
                              "the weight map does not list it");
    return shards_[it->second];
  }
  const safetensors_tensor_info& info(std::string_view name) const { return shard(name).info(name); }
  std::vector<float> to_float(std::string_view name) const { return shard(name).to_float(name); }
  std::vector<double> to_double(std::string_view name) const { return shard(name).to_double(name); }
  template <Backend B>
  tensor<B> load(B& backend, std::string_view name) const {
    return shard(name).load(backend, name);
  }

 private:
  std::filesystem::path index_path_;
  json::value metadata_ = json::value::object();
  std::vector<safetensors_file> shards_;
  std::map<std::string, std::size_t, std::less<>> shard_index_, tensor_shard_;
};

}  // namespace treelora
