// safetensors (io/safetensors.hpp) against an independent reference: the golden files in tests/data/safetensors/
// were written by make_golden.py beside them (struct, json and numpy only, following the reference implementation's
// layout). Read: every value compared bit for bit. Write: the library's file compared byte for byte with the golden
// one. Every validation rule: one hand-made bad file, checked for its named fault and a message that names the file,
// the tensor and the rule. Sharded checkpoints: the golden two-shard checkpoint, and every way its index can be wrong.
#include "test_support.hpp"

#include <unistd.h>

#include <bit>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "treelora/io/safetensors.hpp"

using namespace treelora;
namespace fs = std::filesystem;
using dt = safetensors_dtype;

namespace {

const fs::path golden = fs::path(TREELORA_TEST_DATA_DIR) / "safetensors";

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}

/// A scratch folder for this process, removed at the end of each test that makes one.
struct scratch {
  fs::path path = fs::temp_directory_path() / concat("treelora-safetensors-", ::getpid());
  scratch() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~scratch() { fs::remove_all(path); }
};

/// N (little-endian), the header as given (no padding), then `data` zero bytes.
std::string file_with(const std::string& header, std::size_t data = 0) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((std::uint64_t(header.size()) >> (8 * i)) & 0xFF));
  return out + header + std::string(data, '\0');
}

std::vector<std::uint32_t> bits(const std::vector<float>& v) {
  std::vector<std::uint32_t> out;
  for (float x : v) out.push_back(std::bit_cast<std::uint32_t>(x));
  return out;
}

/// Opening `bytes` (written to `name` in `folder`) fails with `fault`, and the message names the file, the tensor
/// (when given), the rule and each of `parts`.
void expect_fault(const scratch& folder, const std::string& name, const std::string& bytes, safetensors_fault fault,
                  const std::string& tensor, std::initializer_list<std::string> parts) {
  const fs::path path = folder.path / name;
  write_bytes(path, bytes);
  try {
    safetensors_file file(path);
    FAIL("no error for ", name);
  } catch (const safetensors_error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(e.fault() == fault);
    CHECK(message.find(path.string()) != std::string::npos);
    CHECK(message.find(std::string(fault_name(fault))) != std::string::npos);
    if (!tensor.empty()) CHECK(message.find("tensor '" + tensor + "'") != std::string::npos);
    for (const auto& part : parts) CHECK(message.find(part) != std::string::npos);
  }
}

const std::string entry_a = R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";

}  // namespace

TEST_CASE("golden F32 file: names in file order, shapes, values bit for bit, every rank") {
  const safetensors_file f(golden / "f32.safetensors");
  CHECK(f.size() == 5);
  CHECK_FALSE(f.has_metadata());
  CHECK(f.metadata().empty());
  const auto& values = f.info("values");
  CHECK(values.dtype == dt::F32);
  CHECK(values.shape == std::vector<std::uint64_t>{10});
  CHECK(values.byte_size() == 40);
  const std::vector<float> expected{0.0f, -0.0f, 1.0f, -2.5f, 3.14159265f, 1e-45f, 1.17549435e-38f, 3.4028235e38f,
                                    INFINITY, -INFINITY};
  CHECK(bits(f.to_float("values")) == bits(expected));
  CHECK(f.to_float("matrix") == std::vector<float>{0, 0.125f, 0.25f, 0.375f, 0.5f, 0.625f});
  CHECK(f.info("scalar").shape.empty());
  CHECK(f.to_double("scalar") == std::vector<double>{7.5});
  CHECK(f.to_float("empty").empty());
  CHECK(f.info("rank4").shape == std::vector<std::uint64_t>{1, 2, 3, 4});
  // Names in offset order: the reference writer sorts F32 tensors by name.
  CHECK(f.names() == std::vector<std::string>{"empty", "matrix", "rank4", "scalar", "values"});

  cpu_backend<float> backend;
  const auto t = f.load(backend, "rank4");
  CHECK(t.shape().rank() == 4);
  CHECK(t.to_host() == f.to_float("rank4"));
  cpu_backend<double> backend64;
  const auto scalar = f.load(backend64, "scalar");
  CHECK(scalar.shape().rank() == 0);
  CHECK(scalar.to_host() == std::vector<double>{7.5});
  CHECK(f.load(backend, "empty").numel() == 0);
}

TEST_CASE("F16 -> F32 exactly as numpy (subnormals, Inf, NaN), and F32 -> F16 rounding byte for byte") {
  const fs::path path = golden / "f16.safetensors";
  const safetensors_file f(path);
  REQUIRE(f.info("half").dtype == dt::F16);
  // numpy's own conversion of the same half values, stored as F32 by the script.
  CHECK(bits(f.to_float("half")) == bits(f.to_float("half_as_f32")));
  const auto half = f.to_float("half");
  CHECK(half[11] == 0x1p-24f);                   // the smallest subnormal
  CHECK(half[12] == 0.0f);                       // 2^-25 ties to even: zero
  CHECK(std::isinf(half[7]));                    // 65520 rounds up to Inf
  CHECK(half[6] == 65504.0f);                    // 65519 rounds down to the largest half
  CHECK(std::isnan(half.back()));
  CHECK(std::signbit(half[1]));
  for (std::uint32_t h = 0; h < 0x10000; ++h) {  // every half, and back
    const float v = detail::half_to_float(static_cast<std::uint16_t>(h));
    if (!std::isnan(v)) REQUIRE(detail::float_to_half(v) == h);
  }
  // The library's writer, given the same float32 source values, writes the same file.
  safetensors_writer w;
  const auto source = f.to_float("source");
  w.add("source", {source.size()}, std::span<const float>(source));
  w.add("half", {source.size()}, std::span<const float>(source), dt::F16);
  const auto as_f32 = f.to_float("half_as_f32");
  w.add("half_as_f32", {as_f32.size()}, std::span<const float>(as_f32));
  CHECK(w.serialize() == read_bytes(path));
}

TEST_CASE("BF16 -> F32 is bits << 16; F32 -> BF16 rounds to nearest even, byte for byte with the reference") {
  const fs::path path = golden / "bf16.safetensors";
  const safetensors_file f(path);
  CHECK(bits(f.to_float("bf16")) == bits(f.to_float("bf16_as_f32")));
  const auto raw = f.bytes("bf16");
  const auto floats = f.to_float("bf16");
  for (std::size_t i = 0; i < floats.size(); ++i) {
    const auto b = static_cast<std::uint32_t>(std::to_integer<unsigned>(raw[2 * i]) |
                                              (std::to_integer<unsigned>(raw[2 * i + 1]) << 8));
    CHECK(std::bit_cast<std::uint32_t>(floats[i]) == b << 16);
  }
  safetensors_writer w;
  const auto source = f.to_float("source");
  w.add("source", {source.size()}, std::span<const float>(source));
  w.add("bf16", {source.size()}, std::span<const float>(source), dt::BF16);
  w.add("bf16_as_f32", {floats.size()}, std::span<const float>(floats));
  CHECK(w.serialize() == read_bytes(path));
}

TEST_CASE("F64 with metadata: exact doubles, rounding to float as numpy, byte for byte") {
  const fs::path path = golden / "f64.safetensors";
  const safetensors_file f(path);
  CHECK(f.has_metadata());
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"producer", "make_golden.py"}});
  const std::vector<double> expected{0.0, 1.0 / 3.0, -0x1p-1074, 1.7976931348623157e308, 1e-310, M_PI, -INFINITY};
  CHECK(f.to_double("values") == expected);
  CHECK(bits(f.to_float("values")) == bits(f.to_float("as_f32")));
  safetensors_writer w;
  w.set_metadata("producer", "make_golden.py").set_metadata("format", "pt");
  w.add("values", {expected.size()}, std::span<const double>(expected));
  w.add("as_f32", {expected.size()}, std::span<const double>(expected), dt::F32);
  CHECK(w.serialize() == read_bytes(path));
}

TEST_CASE("mixed dtypes: the reference's order (dtype, then name bytewise), escaped metadata, raw bytes, byte for byte") {
  const fs::path path = golden / "mixed.safetensors";
  const safetensors_file f(path);
  CHECK(f.names() == std::vector<std::string>{"ids", "double", "B.upper", "\u00e9t\u00e9", "counts", "a.weight",
                                              "b.bias", "bytes", "mask"});
  CHECK(f.metadata().at("note") == "line\nbreak \"quoted\" tab\t \u00fcml\u00e4ut \u0001");
  CHECK(f.metadata().at("empty").empty());
  CHECK(f.to_float("a.weight") == std::vector<float>{1.5f, 2.5f, -3.0f});
  CHECK(f.to_float("b.bias") == std::vector<float>{0.5f, -0.25f});
  CHECK(f.info("ids").dtype == dt::I64);
  CHECK(f.info("mask").dtype == dt::BOOL);
  CHECK(f.bytes("bytes").size() == 3);
  CHECK(std::to_integer<int>(f.bytes("bytes")[1]) == 255);
  // Recognised, but not converted: a clear error naming the tensor and the dtype.
  CHECK_THROWS_WITH_AS(f.to_float("ids"), doctest::Contains("tensor 'ids': UnsupportedConversion: I64 cannot be converted"),
                       safetensors_error);
  cpu_backend<float> backend;
  CHECK_THROWS_AS(f.load(backend, "mask"), safetensors_error);
  CHECK_THROWS_WITH_AS(f.info("nope"), doctest::Contains("tensor 'nope': TensorNotFound"), safetensors_error);
  // Added in another order, from the raw bytes: the same file.
  safetensors_writer w;
  w.set_metadata(f.metadata());
  auto names = f.names();
  std::reverse(names.begin(), names.end());
  for (const auto& name : names) w.add(name, f.info(name).dtype, f.info(name).shape, f.bytes(name));
  CHECK(w.serialize() == read_bytes(path));
  CHECK(safetensors_writer().set_metadata("format", "pt").serialize() == read_bytes(golden / "no_tensors.safetensors"));
}

TEST_CASE("the reference's own serialization examples, byte for byte") {
  // safetensors/src/tensor.rs, test_empty and test_serialization: an empty file, and one F32 tensor.
  const std::string empty = safetensors_writer().serialize();
  CHECK(empty == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  const std::vector<float> v{0, 1, 2, 3, 4, 5};
  const std::string one = safetensors_writer().add("attn.0", {1, 2, 3}, std::span<const float>(v)).serialize();
  CHECK(one.substr(8, 64) == R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})");
  CHECK(one.size() == 8 + 64 + 24);
  CHECK(one[0] == 64);
}

TEST_CASE("write, read back, write again: exact for F32 and F64, stable for F16 and BF16; writes are atomic") {
  scratch folder;
  std::vector<float> values(1000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = std::ldexp(std::sin(double(i)) , int(i % 60) - 30);
  std::vector<double> doubles(values.begin(), values.end());
  safetensors_writer w;
  w.add("f32", {10, 100}, std::span<const float>(values))
      .add("f16", {1000}, std::span<const float>(values), dt::F16)
      .add("bf16", {1000}, std::span<const float>(values), dt::BF16)
      .add("f64", {1000}, std::span<const double>(doubles))
      .set_metadata("step", "7");
  const fs::path path = folder.path / "round.safetensors";
  w.write(path);
  const safetensors_file f(path);
  CHECK(f.to_float("f32") == values);
  CHECK(f.to_double("f64") == doubles);
  CHECK(f.metadata().at("step") == "7");
  for (const char* name : {"f16", "bf16"}) {
    const auto once = f.to_float(name);
    safetensors_writer again;
    again.add(name, {1000}, std::span<const float>(once), f.info(name).dtype);
    const fs::path second = folder.path / "again.safetensors";
    again.write(second);
    CHECK(safetensors_file(second).to_float(name) == once);
  }
  const auto bf16 = f.to_float("bf16");
  for (std::size_t i = 0; i < values.size(); ++i)  // BF16 keeps 8 significant bits: rounding error <= 2^-8 relative
    REQUIRE(std::abs(bf16[i] - values[i]) <= std::abs(values[i]) * 0x1p-8f);
  cpu_backend<double> backend;
  const auto t = f.load(backend, "f32");
  CHECK(t.shape().rows() == 10);
  safetensors_writer from_tensor;
  from_tensor.add("t", t, dt::F32);
  CHECK(from_tensor.header().find(R"("shape":[10,100])") != std::string::npos);
  // The writer's own checks.
  CHECK_THROWS_AS(w.add("f32", {1}, std::span<const float>(values.data(), 1)), std::invalid_argument);
  CHECK_THROWS_AS(w.add("__metadata__", {1}, std::span<const float>(values.data(), 1)), std::invalid_argument);
  CHECK_THROWS_AS(w.add("short", {2}, std::span<const float>(values.data(), 1)), std::invalid_argument);
  CHECK_THROWS_AS(w.add("i", {1}, std::span<const float>(values.data(), 1), dt::I32), std::invalid_argument);
  CHECK_THROWS_AS(w.add("\xff", {1}, std::span<const float>(values.data(), 1)), std::invalid_argument);
  CHECK_THROWS_WITH_AS(w.write(folder.path / "missing" / "x.safetensors"), doctest::Contains("cannot create a temporary"),
                       std::runtime_error);
  std::size_t leftovers = 0;
  for (const auto& e : fs::directory_iterator(folder.path)) leftovers += e.path().filename().string().find(".tmp-") != std::string::npos;
  CHECK(leftovers == 0);
}

TEST_CASE("every rule of the format: one bad file each, a named fault, a message naming file, tensor and rule") {
  scratch folder;
  using F = safetensors_fault;
  SUBCASE("the file") {
    try {
      safetensors_file missing(folder.path / "missing.safetensors");
      FAIL("opened a missing file");
    } catch (const safetensors_error& e) {
      CHECK(e.fault() == F::unreadable);
      CHECK(std::string(e.what()).find("missing.safetensors: Unreadable: cannot open it") != std::string::npos);
    }
    CHECK_THROWS_WITH_AS(safetensors_file{folder.path}, doctest::Contains("not a regular file"), safetensors_error);
    expect_fault(folder, "empty", "", F::header_too_small, "", {"0 bytes"});
    expect_fault(folder, "seven", std::string(7, '\0'), F::header_too_small, "", {"7 bytes"});
    std::string big = file_with("{}");
    big[0] = '\x01', big[1] = '\xE1', big[2] = '\xF5', big[3] = '\x05';  // 100,000,001
    expect_fault(folder, "too_large", big, F::header_too_large, "", {"N = 100000001"});
    expect_fault(folder, "past_end", file_with("{}").substr(0, 9), F::invalid_header_length, "", {"runs past the end"});
    std::string huge_n(8, '\xFF');  // N = 2^64 - 1: over the limit before any arithmetic could wrap
    expect_fault(folder, "n_wraps", huge_n + "{}", F::header_too_large, "", {});
  }
  SUBCASE("the header's text") {
    for (const char* bad : {"{\"\xff\":1}", "{\"\xc0\x80\":1}", "{\"\xed\xa0\x80\":1}", "{\"\xf4\x90\x80\x80\":1}", "{\"\xe2\x82\":1}"})
      expect_fault(folder, "utf8", file_with(bad), F::invalid_header, "", {"not UTF-8"});
    expect_fault(folder, "bom", file_with("\xEF\xBB\xBF{}"), F::invalid_header_deserialization, "", {"byte-order mark"});
    expect_fault(folder, "not_json", file_with("{\"a\":"), F::invalid_header_deserialization, "", {"not JSON"});
    expect_fault(folder, "trailing", file_with("{} x"), F::invalid_header_deserialization, "", {"not JSON"});
    expect_fault(folder, "array", file_with("[]"), F::invalid_header_deserialization, "", {"the header is an array"});
    expect_fault(folder, "entry_number", file_with(R"({"a":1})"), F::invalid_header_deserialization, "a",
                 {"the entry is a number, not an object"});
    expect_fault(folder, "missing_key", file_with(R"({"a":{"dtype":"F32","shape":[1]}})"), F::invalid_header_deserialization,
                 "a", {"no data_offsets"});
    expect_fault(folder, "unknown_key", file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4),
                 F::invalid_header_deserialization, "a", {"unknown key \"x\""});
    expect_fault(folder, "shape_string", file_with(R"({"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", 4),
                 F::invalid_header_deserialization, "a", {"shape is a string, not an array"});
    expect_fault(folder, "shape_nested", file_with(R"({"a":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})", 4),
                 F::invalid_header_deserialization, "a", {"shape holds an array"});
    expect_fault(folder, "dtype_number", file_with(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
                 F::invalid_header_deserialization, "a", {"dtype is a number, not a string"});
    expect_fault(folder, "three_offsets", file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}})", 4),
                 F::invalid_header_deserialization, "a", {"more than 2"});
    expect_fault(folder, "one_offset", file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                 F::invalid_header_deserialization, "a", {"holds 1 numbers, not 2"});
  }
  SUBCASE("names, dtypes, numbers, metadata") {
    expect_fault(folder, "duplicate", file_with("{" + entry_a + "," + entry_a + "}", 4), F::duplicate_name, "",
                 {"the name \"a\" appears twice"});
    expect_fault(folder, "duplicate_metadata", file_with(R"({"__metadata__":{"k":"1"},"__metadata__":{}})"),
                 F::duplicate_name, "", {"\"__metadata__\" appears twice"});
    expect_fault(folder, "duplicate_metadata_key", file_with(R"({"__metadata__":{"k":"1","k":"2"}})"), F::duplicate_name,
                 "", {"metadata key \"k\" appears twice"});
    expect_fault(folder, "duplicate_entry_key",
                 file_with(R"({"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4), F::duplicate_name,
                 "a", {"\"dtype\" appears twice"});
    expect_fault(folder, "dtype", file_with(R"({"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", 4),
                 F::unknown_dtype, "a", {"unknown dtype \"F31\""});
    expect_fault(folder, "dtype_case", file_with(R"({"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4),
                 F::unknown_dtype, "a", {"\"f32\""});
    expect_fault(folder, "negative", file_with(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                 F::invalid_number, "a", {"shape holds -1, a negative number"});
    expect_fault(folder, "negative_zero", file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}})", 4),
                 F::invalid_number, "a", {"data_offsets holds -0, a negative number"});
    expect_fault(folder, "fraction", file_with(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", 4),
                 F::invalid_number, "a", {"shape holds 1.0, which is not written as an integer"});
    expect_fault(folder, "exponent", file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4e0]}})", 4),
                 F::invalid_number, "a", {"4e0"});
    expect_fault(folder, "over_64_bits",
                 file_with(R"({"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,4]}})", 4),
                 F::invalid_number, "a", {"18446744073709551616, which is over 2^64 - 1"});
    // 2^53 + 1 survives exactly (through a double it would read as 2^53): the message quotes it.
    expect_fault(folder, "exact", file_with(R"({"a":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,9007199254740993]}})"),
                 F::metadata_incomplete_buffer, "", {"end at byte 9007199254740993"});
    expect_fault(folder, "metadata_number", file_with(R"({"__metadata__":{"k":1}})"), F::invalid_metadata, "",
                 {"metadata value of \"k\" is a number, not a string"});
    expect_fault(folder, "metadata_null", file_with(R"({"__metadata__":null})"), F::invalid_metadata, "",
                 {"__metadata__ is null, not an object"});
    expect_fault(folder, "metadata_nested", file_with(R"({"__metadata__":{"k":{}}})"), F::invalid_metadata, "",
                 {"is an object, not a string"});
  }
  SUBCASE("offsets, sizes and the buffer") {
    const std::string b_at = R"("b":{"dtype":"F32","shape":[1],"data_offsets":)";
    expect_fault(folder, "gap", file_with("{" + entry_a + "," + b_at + "[8,12]}}", 12), F::invalid_offset, "b",
                 {"leave a gap after byte 4"});
    expect_fault(folder, "overlap", file_with("{" + entry_a + "," + b_at + "[2,6]}}", 8), F::invalid_offset, "b",
                 {"overlap the previous tensor, which ends at 4"});
    expect_fault(folder, "not_from_0", file_with("{" + b_at + "[4,8]}}", 8), F::invalid_offset, "b", {"gap after byte 0"});
    expect_fault(folder, "reversed",
                 file_with(R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
                 F::invalid_offset, "", {"data_offsets [4, 0]"});
    expect_fault(folder, "elements_overflow",
                 file_with(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
                 F::validation_overflow, "a", {"product of the shape overflows"});
    expect_fault(folder, "bytes_overflow",
                 file_with(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
                 F::validation_overflow, "a", {"overflow 64 bits"});
    expect_fault(folder, "info", file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4),
                 F::tensor_invalid_info, "a", {"span 4 bytes; 2 elements of F32 take 8"});
    expect_fault(folder, "left_over", file_with("{" + entry_a + "}", 5), F::metadata_incomplete_buffer, "",
                 {"end at byte 4 of the data buffer, which has 5 bytes (bytes left over)"});
    expect_fault(folder, "truncated", file_with("{" + entry_a + "}", 3), F::metadata_incomplete_buffer, "", {"(truncated)"});
    // A header that promises 2^40 elements of a 12-byte file fails on its sizes, before anything is allocated.
    expect_fault(folder, "promises_4tb",
                 file_with(R"({"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}})"),
                 F::metadata_incomplete_buffer, "", {});
  }
  SUBCASE("what the rules accept") {
    write_bytes(folder.path / "ok.safetensors",
                file_with(R"( {"__metadata__":{},"e":{"dtype":"F8_E4M3","shape":[0],"data_offsets":[0,0]},)"
                          R"("a":{"shape":[1],"data_offsets":[0,4],"dtype":"F32"}} )", 4));
    const safetensors_file ok(folder.path / "ok.safetensors");
    CHECK(ok.has_metadata());
    CHECK(ok.size() == 2);
    CHECK(ok.to_float("a") == std::vector<float>{0.0f});
    CHECK_THROWS_WITH_AS(ok.to_float("e"), doctest::Contains("F8_E4M3 cannot be converted"), safetensors_error);
  }
}

TEST_CASE("a sharded checkpoint: every shard opened, every name in its shard, no shard holding more") {
  const sharded_safetensors model(golden / "sharded" / "model.safetensors.index.json");
  CHECK(model.names() == std::vector<std::string>{"lm_head.weight", "model.embed.weight", "model.layers.0.weight",
                                                  "model.layers.1.weight"});
  CHECK(model.shards().size() == 2);
  CHECK(model.metadata().at("total_size").get<std::uint64_t>() == 50);
  CHECK(model.shard("lm_head.weight").path().filename() == "model-00002-of-00002.safetensors");
  CHECK(model.to_float("model.embed.weight") == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(model.to_float("model.layers.0.weight") == std::vector<float>{1, -2});
  CHECK(model.to_double("model.layers.1.weight") == std::vector<double>{0.5, 0.75, 1.0});
  cpu_backend<float> backend;
  CHECK(model.load(backend, "lm_head.weight").to_host() == std::vector<float>{9, 8});
  CHECK_THROWS_WITH_AS(model.info("missing"), doctest::Contains("TensorNotFound"), safetensors_error);

  scratch folder;
  for (const auto& e : fs::directory_iterator(golden / "sharded")) fs::copy_file(e.path(), folder.path / e.path().filename());
  const fs::path index = folder.path / "model.safetensors.index.json";
  const std::string one = "model-00001-of-00002.safetensors", two = "model-00002-of-00002.safetensors";
  const auto map_with = [&](const std::string& extra) {
    return R"({"metadata":{"total_size":50},"weight_map":{"lm_head.weight":")" + two + R"(","model.embed.weight":")" +
           one + R"(","model.layers.0.weight":")" + one + R"(")" + extra + "}}";
  };
  const auto expect = [&](const std::string& text, safetensors_fault fault, const std::string& part) {
    write_bytes(index, text);
    try {
      sharded_safetensors bad(index);
      FAIL("no error for ", text);
    } catch (const safetensors_error& e) {
      INFO(e.what());
      CHECK(e.fault() == fault);
      CHECK(std::string(e.what()).find(part) != std::string::npos);
      CHECK(std::string(e.what()).find(std::string(fault_name(fault))) != std::string::npos);
    }
  };
  write_bytes(index, map_with(R"(,"model.layers.1.weight":")" + two + "\""));
  CHECK(sharded_safetensors(index).names().size() == 4);
  expect("[]", safetensors_fault::invalid_index, "not a JSON object");
  expect("{\"weight_map\":", safetensors_fault::invalid_index, "model.safetensors.index.json");
  expect(R"({"metadata":{}})", safetensors_fault::invalid_index, "no weight_map");
  expect(R"({"weight_map":{},"extra":1})", safetensors_fault::invalid_index, "unknown key \"extra\"");
  expect(R"({"metadata":[],"weight_map":{}})", safetensors_fault::invalid_index, "metadata is not an object");
  expect(R"({"weight_map":{"a":1}})", safetensors_fault::invalid_index, "tensor 'a'");
  expect(R"({"weight_map":{"a":"x","a":"y"}})", safetensors_fault::invalid_index, "appears twice");
  for (const char* shard : {"../model-00001-of-00002.safetensors", "sub/x.safetensors", "", "..", "a\\\\b"})
    expect(std::string(R"({"weight_map":{"a":")") + shard + "\"}}", safetensors_fault::invalid_shard_name, "tensor 'a'");
  expect(map_with(R"(,"model.layers.1.weight":")" + one + "\""), safetensors_fault::shard_missing_tensor,
         "tensor 'model.layers.1.weight': ShardMissingTensor: the weight map puts it in " + one);
  expect(map_with(""), safetensors_fault::shard_unlisted_tensor,
         "tensor 'model.layers.1.weight': ShardUnlistedTensor: " + two + " holds it, but the weight map does not list it");
  expect(map_with(R"(,"model.layers.1.weight":")" + two + R"(","ghost":")" + two + "\""), safetensors_fault::shard_missing_tensor,
         "tensor 'ghost'");
  expect(R"({"weight_map":{"a":"absent.safetensors"}})", safetensors_fault::unreadable, "absent.safetensors");
}

TEST_CASE("the golden files regenerate byte for byte from make_golden.py (where /usr/bin/python3 has numpy)") {
  if (std::system("/usr/bin/python3 -c 'import numpy' > /dev/null 2>&1") != 0) {
    MESSAGE("skipped: /usr/bin/python3 with numpy not found");
    return;
  }
  scratch folder;
  const std::string command = concat("/usr/bin/python3 '", (golden / "make_golden.py").string(), "' --out '",
                                     folder.path.string(), "' > /dev/null");
  REQUIRE(std::system(command.c_str()) == 0);
  std::size_t compared = 0;
  for (const auto& e : fs::recursive_directory_iterator(folder.path)) {
    if (!e.is_regular_file()) continue;
    const auto relative = fs::relative(e.path(), folder.path);
    INFO(relative.string());
    CHECK(read_bytes(e.path()) == read_bytes(golden / relative));
    ++compared;
  }
  CHECK(compared == 9);
}
