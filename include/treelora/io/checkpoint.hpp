// treelora/io/checkpoint.hpp: continual-learning checkpoints, the archive every stateful class writes itself to.
//
// A class that a run must be able to continue declares ONE function for both directions:
//
//   template <class Archive> void checkpoint(Archive& ar) {
//     ar.expect("rank", config_.rank);           // configuration: written, and compared when loading
//     ar.value("steps", steps_);                 // state: written, and assigned when loading
//     ar.tensor("lora_a", a_, *backend_);        // a backend tensor (resized to the stored shape when loading)
//     history_.checkpoint(ar.scope("history"));  // a part, under "<prefix>.history."
//   }
//
// checkpoint_writer collects what such functions hand it; checkpoint_reader hands it back (Archive::loading() tells
// the two apart where a function must allocate before reading). The file is safetensors (docs/interop.md): every
// tensor in the backend's own scalar type (F32 or F64: a resumed run continues bit for bit), and in "__metadata__"
//   "treelora.checkpoint"  a JSON document {format, format_version, library_version, config: {...}, state: {...}}
//                          (flat objects keyed by the full dotted names; non-finite numbers as "nan", "inf", "-inf")
//   "treelora.checksum"    FNV-1a-64 of the whole file with these 16 hex digits read as "0000000000000000": any
//                          changed byte anywhere (a flipped bit, a truncation) makes the file refused.
// Writes are atomic (io/atomic_file.hpp). A reader trusts nothing: the safetensors rules, the checksum, the format
// version, then every value's type, every tensor's dtype and shape, and every count against the file's size; every
// failure is a checkpoint_error naming the file and the field. A configuration that differs names the field and both
// values; finish() refuses a file with state nobody read (a checkpoint of another method or model).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "treelora/core/hash.hpp"
#include "treelora/io/json.hpp"
#include "treelora/io/safetensors.hpp"
#include "treelora/version.hpp"

namespace treelora {

inline constexpr std::string_view checkpoint_format_name = "treelora-checkpoint";
/// Bumped whenever the meaning of a checkpoint's fields changes; a file of another version is refused.
inline constexpr std::int64_t checkpoint_format_version = 1;

inline std::string library_version_string() { return concat(version_major, ".", version_minor, ".", version_patch); }

/// A checkpoint that cannot be used: damaged, of another format or library version, or of another run. field() is
/// the dotted name of what was wrong ("" for the file as a whole).
class checkpoint_error : public std::runtime_error {
 public:
  checkpoint_error(const std::string& file, const std::string& field, const std::string& what)
      : std::runtime_error(concat("checkpoint '", file, "'", field.empty() ? std::string() : concat(", field '", field, "'"),
                                  ": ", what)),
        file_(file), field_(field) {}
  const std::string& file() const { return file_; }
  const std::string& field() const { return field_; }

 private:
  std::string file_, field_;
};

namespace detail {

inline std::string checkpoint_key(std::string_view prefix, std::string_view name) {
  if (name.empty()) throw std::logic_error("treelora checkpoint: empty field name");
  return prefix.empty() ? std::string(name) : concat(prefix, ".", name);
}

template <class T> struct is_std_vector : std::false_type {};
template <class T, class A> struct is_std_vector<std::vector<T, A>> : std::true_type {};

/// The JSON form of a value: integers exact, doubles shortest round-trip, non-finite doubles as strings.
template <class T>
json::value checkpoint_encode(const T& v) {
  if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::string>) {
    return json::value(v);
  } else if constexpr (std::is_enum_v<T>) {
    return json::value(static_cast<std::int64_t>(v));
  } else if constexpr (std::is_integral_v<T>) {
    return json::value(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    const double d = static_cast<double>(v);
    if (std::isnan(d)) return json::value("nan");
    if (std::isinf(d)) return json::value(d > 0 ? "inf" : "-inf");
    return json::value(d);
  } else if constexpr (is_std_vector<T>::value) {
    json::value out = json::value::array();
    for (const auto& e : v) out.push_back(checkpoint_encode<typename T::value_type>(e));
    return out;
  } else {
    static_assert(sizeof(T) == 0, "treelora checkpoint: values are bool, integers, enums, floating point, std::string "
                                  "or std::vector of those; tensors go through tensor()");
  }
}

/// Reads `j` into `out`; false when `j` is not a T (the wrong JSON type, or an integer out of T's range).
template <class T>
bool checkpoint_decode(const json::value& j, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) return false;
    out = j.get<bool>();
    return true;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!j.is_string()) return false;
    out = j.get<std::string>();
    return true;
  } else if constexpr (std::is_enum_v<T>) {
    std::int64_t raw = 0;
    if (!checkpoint_decode(j, raw)) return false;
    out = static_cast<T>(raw);
    return static_cast<std::int64_t>(out) == raw;
  } else if constexpr (std::is_integral_v<T>) {
    if (j.is_number_unsigned()) {
      const auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return false;
      out = static_cast<T>(u);
      return true;
    }
    if (!j.is_number_integer()) return false;
    const auto s = j.get<std::int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (s < 0) return false;
      if (static_cast<std::uint64_t>(s) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return false;
    } else {
      if (s < static_cast<std::int64_t>(std::numeric_limits<T>::min()) || s > static_cast<std::int64_t>(std::numeric_limits<T>::max()))
        return false;
    }
    out = static_cast<T>(s);
    return true;
  } else if constexpr (std::is_floating_point_v<T>) {
    double d = 0;
    if (j.is_number()) d = j.get<double>();
    else if (j.is_string() && j.get<std::string>() == "nan") d = std::numeric_limits<double>::quiet_NaN();
    else if (j.is_string() && j.get<std::string>() == "inf") d = std::numeric_limits<double>::infinity();
    else if (j.is_string() && j.get<std::string>() == "-inf") d = -std::numeric_limits<double>::infinity();
    else return false;
    out = static_cast<T>(d);
    return true;
  } else if constexpr (is_std_vector<T>::value) {
    if (!j.is_array()) return false;
    T values;
    values.reserve(j.size());  // bounded by the header's size: each element took at least one byte of it
    for (const auto& e : j) {
      typename T::value_type v{};
      if (!checkpoint_decode(e, v)) return false;
      values.push_back(std::move(v));
    }
    out = std::move(values);
    return true;
  } else {
    static_assert(sizeof(T) == 0, "treelora checkpoint: unsupported value type");
  }
}

/// Equal as a checkpoint compares configurations: exactly, NaN equal to NaN.
inline bool checkpoint_same(const json::value& a, const json::value& b) { return a == b; }

template <class Scalar>
constexpr safetensors_dtype checkpoint_dtype() {
  if constexpr (std::is_same_v<Scalar, float>) return safetensors_dtype::F32;
  else if constexpr (std::is_same_v<Scalar, double>) return safetensors_dtype::F64;
  else static_assert(sizeof(Scalar) == 0, "treelora checkpoint: tensors of float or double");
}

inline constexpr std::string_view checkpoint_document_key = "treelora.checkpoint";
inline constexpr std::string_view checkpoint_checksum_key = "treelora.checksum";

/// Where the 16 hex digits of the checksum start in `bytes` (a serialized checkpoint), or npos.
inline std::size_t checksum_digits_position(std::string_view bytes, std::uint64_t header_size) {
  const std::string_view header = bytes.substr(8, std::min<std::uint64_t>(header_size, bytes.size() - 8));
  const std::string needle = concat("\"", checkpoint_checksum_key, "\":\"");
  const std::size_t at = header.find(needle);
  if (at == std::string_view::npos || header.find(needle, at + 1) != std::string_view::npos) return std::string_view::npos;
  const std::size_t digits = 8 + at + needle.size();
  if (digits + 17 > 8 + header.size() || bytes[digits + 16] != '"') return std::string_view::npos;
  return digits;
}

/// FNV-1a-64 of `bytes` with the 16 characters at `digits` read as '0'.
inline std::uint64_t checkpoint_hash(std::string_view bytes, std::size_t digits) {
  static constexpr char zeros[16] = {'0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0'};
  std::uint64_t h = fnv1a64(bytes.data(), digits);
  h = fnv1a64(zeros, 16, h);
  return fnv1a64(bytes.data() + digits + 16, bytes.size() - digits - 16, h);
}

inline std::string hex16(std::uint64_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[std::size_t(i)] = digits[v & 15];
  return out;
}

}  // namespace detail

/// Collects a checkpoint: ar.value / ar.expect / ar.tensor calls, then write(path) or serialize().
class checkpoint_writer {
 public:
  checkpoint_writer() : store_(std::make_shared<store>()) {}
  static constexpr bool loading() { return false; }

  /// The same checkpoint with names under "<prefix>.<name>".
  checkpoint_writer scope(std::string_view name) const {
    checkpoint_writer w = *this;
    w.prefix_ = detail::checkpoint_key(prefix_, name);
    return w;
  }

  /// State: written here, assigned when loading.
  template <class T>
  void value(std::string_view name, T& v) {
    put(store_->state, detail::checkpoint_key(prefix_, name), detail::checkpoint_encode(v));
  }
  /// A count that sizes what follows (a reader bounds it by the file's size before allocating).
  template <class T>
  void count(std::string_view name, T& n) {
    value(name, n);
  }
  /// Configuration: written here, compared when loading (a difference is a checkpoint_error naming the field).
  template <class T>
  void expect(std::string_view name, const T& v) {
    put(store_->config, detail::checkpoint_key(prefix_, name), detail::checkpoint_encode(v));
  }

  /// A backend tensor in its scalar type (an empty tensor is recorded as empty).
  template <Backend B>
  void tensor(std::string_view name, treelora::tensor<B>& t, B&) {
    const std::string key = detail::checkpoint_key(prefix_, name);
    if (t.empty()) {
      put(store_->state, key, json::value(nullptr));
      return;
    }
    const auto host = t.to_host();
    std::vector<std::uint64_t> dims;
    for (int i = 0; i < t.shape().rank(); ++i) dims.push_back(static_cast<std::uint64_t>(t.shape()[i]));
    add_tensor(key, dims, std::span<const typename B::scalar_type>(host));
  }
  /// A tensor whose shape is fixed by the model (a loaded one of another shape is refused).
  template <Backend B>
  void tensor_of_shape(std::string_view name, treelora::tensor<B>& t, B& backend, const shape&) {
    tensor(name, t, backend);
  }
  /// Loading: refuses the file, naming the field, unless `condition` (a check of loaded values); writing: nothing.
  void require(bool, std::string_view, std::string_view) const {}
  /// Several tensors: "<name>.count", then "<name>.0", "<name>.1", ...
  template <Backend B>
  void tensors(std::string_view name, std::vector<treelora::tensor<B>>& ts, B& backend) {
    std::size_t n = ts.size();
    count(concat(name, ".count"), n);
    for (std::size_t i = 0; i < n; ++i) tensor(concat(name, ".", i), ts[i], backend);
  }
  /// A host matrix with rows(), cols(), operator()(i, j) and resize(r, c) (an Eigen::MatrixXd), stored row-major F64.
  template <class Matrix>
  void host_matrix(std::string_view name, Matrix& m) {
    const std::string key = detail::checkpoint_key(prefix_, name);
    std::vector<double> values;
    values.reserve(static_cast<std::size_t>(m.rows() * m.cols()));
    for (decltype(m.rows()) i = 0; i < m.rows(); ++i)
      for (decltype(m.cols()) j = 0; j < m.cols(); ++j) values.push_back(static_cast<double>(m(i, j)));
    add_tensor(key, {static_cast<std::uint64_t>(m.rows()), static_cast<std::uint64_t>(m.cols())}, std::span<const double>(values));
  }

  /// The whole file (checksum included).
  std::string serialize() const {
    json::value doc = json::value::object();
    doc["format"] = std::string(checkpoint_format_name);
    doc["format_version"] = checkpoint_format_version;
    doc["library_version"] = library_version_string();
    doc["config"] = store_->config;
    doc["state"] = store_->state;
    safetensors_writer out = store_->tensors;
    out.set_metadata(std::string(detail::checkpoint_document_key), json::dump(doc));
    out.set_metadata(std::string(detail::checkpoint_checksum_key), std::string(16, '0'));
    std::string bytes = out.serialize();
    std::uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data(), 8);
    const std::size_t digits = detail::checksum_digits_position(bytes, header_size);
    if (digits == std::string::npos) throw std::logic_error("treelora checkpoint: the checksum field was not found");
    const std::string hex = detail::hex16(detail::checkpoint_hash(bytes, digits));
    bytes.replace(digits, 16, hex);
    return bytes;
  }
  /// Writes the file atomically: a reader (or a crash) sees the previous checkpoint or the whole new one.
  void write(const std::filesystem::path& path) const { write_file_atomically(path, std::string_view(serialize())); }

 private:
  struct store {
    json::value config = json::value::object(), state = json::value::object();
    safetensors_writer tensors;
    std::set<std::string, std::less<>> tensor_names;
  };

  void put(json::value& where, const std::string& key, json::value v) {
    if (where.contains(key) || store_->tensor_names.count(key))
      throw std::logic_error(concat("treelora checkpoint: field '", key, "' written twice"));
    where[key] = std::move(v);
  }
  template <class Scalar>
  void add_tensor(const std::string& key, const std::vector<std::uint64_t>& dims, std::span<const Scalar> values) {
    if (store_->state.contains(key) || !store_->tensor_names.insert(key).second)
      throw std::logic_error(concat("treelora checkpoint: field '", key, "' written twice"));
    store_->tensors.add(key, dims, values, detail::checkpoint_dtype<Scalar>());
  }

  std::shared_ptr<store> store_;
  std::string prefix_;
};

/// Reads a checkpoint written by checkpoint_writer: checked in full when opened (see the top of this file).
class checkpoint_reader {
 public:
  /// Opens `path` (memory-mapped).
  explicit checkpoint_reader(const std::filesystem::path& path) : shared_(std::make_shared<shared>()) {
    shared_->file = path.string();
    try {
      shared_->map.emplace(path);
    } catch (const std::exception& e) {
      throw checkpoint_error(shared_->file, "", concat("cannot be read: ", e.what()));
    }
    const auto b = shared_->map->bytes();
    open(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  }
  /// Reads a checkpoint held in memory (`name` stands for the file in messages; the bytes are copied).
  checkpoint_reader(std::string_view bytes, std::string name) : shared_(std::make_shared<shared>()) {
    shared_->file = std::move(name);
    shared_->owned.assign(bytes);
    open(shared_->owned);
  }

  static constexpr bool loading() { return true; }
  const std::string& file() const { return shared_->file; }
  const json::value& document() const { return shared_->doc; }

  checkpoint_reader scope(std::string_view name) const {
    checkpoint_reader r = *this;
    r.prefix_ = detail::checkpoint_key(prefix_, name);
    return r;
  }

  template <class T>
  void value(std::string_view name, T& v) {
    const std::string key = detail::checkpoint_key(prefix_, name);
    const json::value& j = find(shared_->doc["state"], key, "state");
    if (!detail::checkpoint_decode(j, v))
      fail(key, concat("holds ", json::dump(j).substr(0, 80), ", which is not a ", type_name<T>()));
    shared_->read.insert(key);
  }
  /// A count: at most the number of fields in the file (each counted thing needs one), so a hostile count cannot
  /// make the caller allocate more than the file holds.
  template <class T>
  void count(std::string_view name, T& n) {
    value(name, n);
    if (n < T(0) || static_cast<std::uint64_t>(n) > shared_->fields)
      fail(detail::checkpoint_key(prefix_, name), concat("count ", n, " is more than the ", shared_->fields, " fields the file holds"));
  }
  template <class T>
  void expect(std::string_view name, const T& v) {
    const std::string key = detail::checkpoint_key(prefix_, name);
    const json::value& stored = find(shared_->doc["config"], key, "configuration");
    const json::value here = detail::checkpoint_encode(v);
    if (!detail::checkpoint_same(stored, here))
      fail(key, concat("the checkpoint was written with ", json::dump(stored).substr(0, 200), ", this run has ",
                       json::dump(here).substr(0, 200), ": resume with the configuration it was written with"));
  }

  template <Backend B>
  void tensor(std::string_view name, treelora::tensor<B>& t, B& backend) {
    using scalar = typename B::scalar_type;
    const std::string key = detail::checkpoint_key(prefix_, name);
    const auto& state = shared_->doc["state"];
    if (state.contains(key)) {
      if (!state[key].is_null()) fail(key, "is recorded as a value, expected a tensor");
      shared_->read.insert(key);
      t = treelora::tensor<B>();
      return;
    }
    const auto& info = tensor_info(key);
    if (info.dtype != detail::checkpoint_dtype<scalar>())
      fail(key, concat("is stored as ", dtype_name(info.dtype), " but this backend computes in ",
                       dtype_name(detail::checkpoint_dtype<scalar>()), ": a run continues only in the precision it was written in"));
    if (info.shape.empty() || info.shape.size() > static_cast<std::size_t>(shape::max_rank))
      fail(key, concat("has rank ", info.shape.size(), "; checkpoint tensors have rank 1 to ", shape::max_rank));
    index_t d[4] = {1, 1, 1, 1};
    for (std::size_t i = 0; i < info.shape.size(); ++i) {
      if (info.shape[i] == 0 || info.shape[i] > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
        fail(key, concat("has extent ", info.shape[i], " (checkpoint tensors are not empty)"));
      d[i] = static_cast<index_t>(info.shape[i]);
    }
    const shape s = info.shape.size() == 1   ? shape{d[0]}
                    : info.shape.size() == 2 ? shape{d[0], d[1]}
                    : info.shape.size() == 3 ? shape{d[0], d[1], d[2]}
                                             : shape{d[0], d[1], d[2], d[3]};
    // numel x size = the tensor's bytes in the file: the allocation is bounded by the file
    if constexpr (B::is_host_accessible) {  // straight into the tensor
      treelora::tensor<B> out(backend, s);
      detail::convert_elements(info.dtype, data(info), static_cast<std::size_t>(s.numel()), out.data());
      t = std::move(out);
    } else {
      std::vector<scalar> host(static_cast<std::size_t>(s.numel()));
      detail::convert_elements(info.dtype, data(info), host.size(), host.data());
      t = treelora::tensor<B>::from_host(backend, s, host);
    }
    shared_->read.insert(key);
  }
  /// A tensor that must have `expected` shape (an existing parameter's, say).
  template <Backend B>
  void tensor_of_shape(std::string_view name, treelora::tensor<B>& t, B& backend, const shape& expected) {
    treelora::tensor<B> loaded;
    tensor(name, loaded, backend);
    if (!(loaded.shape() == expected))
      fail(detail::checkpoint_key(prefix_, name), concat("has shape ", loaded.shape().to_string(), ", expected ", expected.to_string()));
    t = std::move(loaded);
  }
  void require(bool condition, std::string_view name, std::string_view what) const {
    if (!condition) fail(detail::checkpoint_key(prefix_, name), std::string(what));
  }
  template <Backend B>
  void tensors(std::string_view name, std::vector<treelora::tensor<B>>& ts, B& backend) {
    std::size_t n = 0;
    count(concat(name, ".count"), n);
    std::vector<treelora::tensor<B>> out;
    for (std::size_t i = 0; i < n; ++i) tensor(concat(name, ".", i), out.emplace_back(), backend);
    ts = std::move(out);
  }
  template <class Matrix>
  void host_matrix(std::string_view name, Matrix& m) {
    const std::string key = detail::checkpoint_key(prefix_, name);
    const auto& info = tensor_info(key);
    if (info.dtype != safetensors_dtype::F64 || info.shape.size() != 2)
      fail(key, concat("is ", dtype_name(info.dtype), " of rank ", info.shape.size(), ", expected an F64 matrix"));
    const std::uint64_t rows = info.shape[0], cols = info.shape[1];
    std::vector<double> values(static_cast<std::size_t>(rows * cols));  // = the tensor's bytes / 8: inside the file
    detail::convert_elements(info.dtype, data(info), values.size(), values.data());
    m.resize(static_cast<decltype(m.rows())>(rows), static_cast<decltype(m.cols())>(cols));
    for (std::uint64_t i = 0; i < rows; ++i)
      for (std::uint64_t j = 0; j < cols; ++j)
        m(static_cast<decltype(m.rows())>(i), static_cast<decltype(m.cols())>(j)) = values[std::size_t(i * cols + j)];
    shared_->read.insert(key);
  }

  /// Throws when the file holds state nobody read (it was written by another method, model or library).
  void finish() const {
    std::vector<std::string> unread;
    for (const auto& [key, v] : shared_->doc["state"].items())
      if (!shared_->read.count(key)) unread.push_back(key);
    for (const auto& t : shared_->header.tensors)
      if (!shared_->read.count(t.name)) unread.push_back(t.name);
    if (unread.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < unread.size() && i < 5; ++i) list += concat(i ? ", " : "", "'", unread[i], "'");
    throw checkpoint_error(shared_->file, unread.front(),
                           concat("holds ", unread.size(), " field(s) this run does not read (", list, unread.size() > 5 ? ", ..." : "",
                                  "): it was written by another method or model"));
  }

 private:
  struct shared {
    std::string file;
    std::optional<detail::mapped_file> map;
    std::string owned;
    std::string_view bytes;
    safetensors_header header;
    std::map<std::string, std::size_t, std::less<>> index;
    json::value doc;
    std::uint64_t fields = 0;
    std::set<std::string, std::less<>> read;
  };

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw checkpoint_error(shared_->file, field, what);
  }

  void open(std::string_view bytes) {
    auto& s = *shared_;
    s.bytes = bytes;
    try {
      s.header = read_safetensors_header(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())), s.file);
    } catch (const safetensors_error& e) {
      fail("", concat("is not a readable safetensors file (truncated or damaged?): ", e.what()));
    }
    static const std::map<std::string, std::string> none;
    const auto& meta = s.header.metadata ? *s.header.metadata : none;
    const auto document = meta.find(std::string(detail::checkpoint_document_key));
    const auto checksum = meta.find(std::string(detail::checkpoint_checksum_key));
    if (document == meta.end() || checksum == meta.end())
      fail("", concat("is a safetensors file but not a treelora checkpoint (no \"", detail::checkpoint_document_key,
                      "\" and \"", detail::checkpoint_checksum_key, "\" in its __metadata__)"));
    const std::size_t digits = detail::checksum_digits_position(bytes, s.header.header_size);
    if (digits == std::string_view::npos || checksum->second.size() != 16 || bytes.substr(digits, 16) != checksum->second)
      fail(std::string(detail::checkpoint_checksum_key), "is not 16 hex digits where the format puts them");
    const std::string actual = detail::hex16(detail::checkpoint_hash(bytes, digits));
    if (actual != checksum->second)
      fail(std::string(detail::checkpoint_checksum_key),
           concat("the file's FNV-1a-64 is ", actual, ", the checksum it carries is ", checksum->second,
                  ": the file was changed or damaged after it was written"));
    try {
      s.doc = json::parse(document->second, concat(s.file, " (", detail::checkpoint_document_key, ")"));
    } catch (const std::exception& e) {
      fail(std::string(detail::checkpoint_document_key), concat("is not a JSON document: ", e.what()));
    }
    if (!s.doc.is_object()) fail(std::string(detail::checkpoint_document_key), "is not a JSON object");
    const auto member = [&](const char* name) -> const json::value& {
      if (!s.doc.contains(name)) fail(name, "is missing from the checkpoint's document");
      return s.doc[name];
    };
    if (member("format") != json::value(std::string(checkpoint_format_name)))
      fail("format", concat("is ", json::dump(member("format")).substr(0, 80), ", not \"", checkpoint_format_name, "\""));
    if (member("format_version") != json::value(checkpoint_format_version))
      fail("format_version", concat("the file is format version ", json::dump(member("format_version")).substr(0, 40),
                                    "; this library reads version ", checkpoint_format_version));
    if (member("library_version") != json::value(library_version_string()))
      fail("library_version", concat("the file was written by treelora ", json::dump(member("library_version")).substr(0, 40),
                                     ", this is ", library_version_string(),
                                     ": a run continues bit for bit only with the code that started it"));
    if (!member("config").is_object() || !member("state").is_object())
      fail(std::string(detail::checkpoint_document_key), "its \"config\" and \"state\" must be objects");
    for (std::size_t i = 0; i < s.header.tensors.size(); ++i) {
      const auto& name = s.header.tensors[i].name;
      if (s.doc["state"].contains(name)) fail(name, "is both a tensor and a value");
      s.index.emplace(name, i);
    }
    s.fields = s.header.tensors.size() + s.doc["state"].size() + s.doc["config"].size();
  }

  const json::value& find(const json::value& where, const std::string& key, std::string_view what) const {
    const auto it = where.find(key);
    if (it == where.end())
      fail(key, concat("is missing from the checkpoint's ", what, " (", shared_->index.count(key) ? "it is a tensor; " : "",
                       "written by another method, model or version?)"));
    return *it;
  }
  const safetensors_tensor_info& tensor_info(const std::string& key) const {
    const auto it = shared_->index.find(key);
    if (it == shared_->index.end()) fail(key, "no such tensor in the checkpoint (written by another method or model?)");
    return shared_->header.tensors[it->second];
  }
  const std::byte* data(const safetensors_tensor_info& info) const {
    return reinterpret_cast<const std::byte*>(shared_->bytes.data()) + 8 + shared_->header.header_size + info.begin;
  }
  template <class T>
  static std::string type_name() {
    if constexpr (std::is_same_v<T, bool>) return "boolean";
    else if constexpr (std::is_same_v<T, std::string>) return "string";
    else if constexpr (std::is_enum_v<T> || std::is_integral_v<T>) return "integer in range";
    else if constexpr (std::is_floating_point_v<T>) return "number";
    else return "list of the expected type";
  }

  std::shared_ptr<shared> shared_;
  std::string prefix_;
};

/// Re-stamps the checksum of a serialized checkpoint after an edit (for tests and fuzzers that must reach the
/// parser behind the checksum; a hand-crafted file can do the same, which is why the reader checks everything else).
inline bool restamp_checkpoint_checksum(std::string& bytes) {
  if (bytes.size() < 8) return false;
  std::uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  const std::size_t digits = detail::checksum_digits_position(bytes, header_size);
  if (digits == std::string::npos) return false;
  bytes.replace(digits, 16, detail::hex16(detail::checkpoint_hash(bytes, digits)));
  return true;
}

}  // namespace treelora
