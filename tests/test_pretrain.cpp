// Rotation pre-training and its cache: rotations, fingerprints, a bit-exact save/load round trip, detection
// of a flipped byte, truncation, a missing file and a config mismatch, hostile files with a valid checksum,
// load_or_pretrain's decisions, and a short pre-training run that learns rotations well above chance (real
// Fashion-MNIST images when installed).
#include "test_support.hpp"

#include <fstream>
#include <sstream>

#include "fuzz/largest_allocation.hpp"  // replaces operator new in this test program
#include "treelora/data.hpp"
#include "treelora/models.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace treelora;
using F = cpu_backend<float>;

namespace {

struct temp_directory {
  std::filesystem::path path;
  temp_directory() {
    path = std::filesystem::temp_directory_path() /
           concat("treelora_test_pretrain_", ::getpid(), "_", reinterpret_cast<std::uintptr_t>(this));
    std::filesystem::create_directories(path);
  }
  ~temp_directory() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

vit_config tiny_config() {
  return {.image_height = 8, .image_width = 8, .channels = 1, .patch_size = 4, .width = 8, .depth = 1, .heads = 2,
          .mlp_ratio = 2.0, .classes = 10, .lora_rank = 2, .seed = 1};
}

/// Images with an upright cue: a bright band in the top rows over noise. Labels left empty (never needed).
labelled_set synthetic_images(index_t n, index_t side, std::uint64_t seed) {
  labelled_set set{shape{side, side}, {}, {}};
  random::generator g(seed);
  for (index_t i = 0; i < n; ++i) {
    const index_t band = 1 + static_cast<index_t>(g.below(static_cast<std::uint64_t>(side / 4)));
    for (index_t y = 0; y < side; ++y)
      for (index_t x = 0; x < side; ++x)
        set.features.push_back(static_cast<float>((y < band ? 1.5 : -0.5) + 0.5 * g.normal() + (x < side / 2 ? 0.3 : 0)));
  }
  return set;
}

/// Runs the enclosed code on one OpenMP thread. The tiny model's matrices are far too small to share: on a loaded
/// 2-core machine every parallel region then waits for a descheduled thread (a 40x slowdown measured).
struct single_thread_scope {
#if defined(_OPENMP)
  int saved = omp_get_max_threads();
  single_thread_scope() { omp_set_num_threads(1); }
  ~single_thread_scope() { omp_set_num_threads(saved); }
#endif
};

std::vector<char> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::filesystem::path& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// A cache file around `payload` with a valid size and checksum: only the payload parser stands between the
/// bytes and the caller (what a crafted file, or a bug in the writer, would give).
std::vector<char> cache_file_around(const std::vector<char>& payload, std::uint64_t fingerprint) {
  std::vector<char> file(8);
  std::memcpy(file.data(), "TLVITBB1", 8);
  detail::put(file, backbone_cache_format_version);
  detail::put(file, std::uint32_t(0));
  detail::put(file, fingerprint);
  detail::put(file, static_cast<std::uint64_t>(payload.size()));
  detail::put(file, detail::cache_checksum(fingerprint, payload));
  file.insert(file.end(), payload.begin(), payload.end());
  return file;
}

/// A payload of one parameter record: `name`, its extents, then `values` floats (whatever the extents say).
std::vector<char> one_parameter(const std::string& name, const std::vector<std::uint64_t>& extents,
                                std::size_t values) {
  std::vector<char> payload;
  detail::put(payload, std::uint32_t(1));
  detail::put(payload, static_cast<std::uint32_t>(name.size()));
  payload.insert(payload.end(), name.begin(), name.end());
  detail::put(payload, static_cast<std::uint32_t>(extents.size()));
  for (auto e : extents) detail::put(payload, e);
  for (std::size_t i = 0; i < values; ++i) detail::put(payload, 0.5f);
  return payload;
}

}  // namespace

TEST_CASE("quarter turns: four make the identity, one is a 90 degree counter-clockwise turn") {
  const std::vector<float> image{1, 2, 3, 4, 5, 6, 7, 8, 9};  // [[1 2 3] [4 5 6] [7 8 9]]
  std::vector<float> out(9), back(9);
  rotate_quarter_turns(image.data(), out.data(), 1, 3, 1);
  CHECK(out == std::vector<float>{3, 6, 9, 2, 5, 8, 1, 4, 7});
  rotate_quarter_turns(image.data(), out.data(), 1, 3, 2);
  CHECK(out == std::vector<float>{9, 8, 7, 6, 5, 4, 3, 2, 1});
  rotate_quarter_turns(image.data(), out.data(), 1, 3, 3);
  rotate_quarter_turns(out.data(), back.data(), 1, 3, 1);
  CHECK(back == image);
}

TEST_CASE("the fingerprint covers the backbone's configuration, the settings and the images, not the LoRA setup") {
  const auto images = synthetic_images(20, 8, 1);
  const vit_config config = tiny_config();
  const pretrain_settings settings{.epochs = 1};
  const auto base = backbone_fingerprint(config, settings, images);
  vit_config other = config;
  other.lora_targets = {"q", "k", "v", "o"};
  other.lora_rank = 4;
  other.classes = 2;
  CHECK(backbone_fingerprint(other, settings, images) == base);
  other = config;
  other.depth = 2;
  CHECK(backbone_fingerprint(other, settings, images) != base);
  other = config;
  other.seed = 2;
  CHECK(backbone_fingerprint(other, settings, images) != base);
  CHECK(backbone_fingerprint(config, {.epochs = 2}, images) != base);
  CHECK(backbone_fingerprint(config, settings, synthetic_images(20, 8, 2)) != base);
}

TEST_CASE("the backbone cache round trips bit-exactly and detects corruption, truncation and mismatches") {
  temp_directory dir;
  F backend;
  vit_config config = tiny_config();
  config.lora_targets.clear();
  vit<F> model(backend, config);
  const auto state = model.backbone_state();
  const auto path = dir.path / "sub" / "backbone.bin";
  save_backbone(path, 1234, state);
  const auto loaded = load_backbone(path, 1234);
  REQUIRE(loaded.size() == state.size());
  for (std::size_t i = 0; i < state.size(); ++i) {
    CHECK(loaded[i].name == state[i].name);
    CHECK(loaded[i].value_shape == state[i].value_shape);
    CHECK(std::memcmp(loaded[i].values.data(), state[i].values.data(), state[i].values.size() * sizeof(float)) == 0);
  }
  vit<F> copy(backend, tiny_config());  // with LoRA and another seed: the backbone is overwritten bit-exactly
  copy.load_backbone_state(loaded);
  const auto again = copy.backbone_state();
  for (std::size_t i = 0; i < state.size(); ++i) CHECK(again[i].values == state[i].values);

  using reason = backbone_cache_error::reason;
  auto why = [](const std::filesystem::path& p, std::uint64_t expected) {
    try {
      load_backbone(p, expected);
    } catch (const backbone_cache_error& e) {
      MESSAGE(std::string(e.what()));
      return e.why();
    }
    FAIL("no error");
    return reason::missing;
  };
  CHECK(why(path, 999) == reason::mismatch);
  CHECK(why(dir.path / "nothing.bin", 1234) == reason::missing);
  const auto bytes = read_bytes(path);
  for (std::size_t at : {std::size_t(3), std::size_t(17), std::size_t(45), bytes.size() / 2, bytes.size() - 1}) {
    auto flipped = bytes;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x10);
    write_bytes(dir.path / "flipped.bin", flipped);
    INFO("flipped byte ", at);
    CHECK(why(dir.path / "flipped.bin", 1234) == reason::corrupt);
  }
  write_bytes(dir.path / "short.bin", std::vector<char>(bytes.begin(), bytes.end() - 5));
  CHECK(why(dir.path / "short.bin", 1234) == reason::corrupt);
  write_bytes(dir.path / "tiny.bin", std::vector<char>(bytes.begin(), bytes.begin() + 10));
  CHECK_THROWS_WITH_AS(load_backbone(dir.path / "tiny.bin", 1234), doctest::Contains("corrupt (truncated header"),
                       backbone_cache_error);
  CHECK_THROWS_WITH_AS(load_backbone(dir.path / "flipped.bin", 1234), doctest::Contains("flipped.bin: corrupt"),
                       std::runtime_error);
}

TEST_CASE(
    "hostile cache files with a valid checksum throw backbone_cache_error naming the path and the fault") {
  temp_directory dir;
  using treelora::testing::largest_allocation;
  const auto load = [&](const char* name, const std::vector<char>& payload) {
    write_bytes(dir.path / name, cache_file_around(payload, 77));
    return load_backbone(dir.path / name, 77);
  };
  std::vector<char> count_only;
  detail::put(count_only, std::uint32_t(1) << 24);
  // 44 bytes claiming 2^24 parameters used to allocate 2^24 empty parameters (1.6 GB) before failing.
  const std::size_t largest = largest_allocation([&] {
    CHECK_THROWS_WITH_AS(load("count.bin", count_only),
                         doctest::Contains("count.bin: corrupt (16777216 parameters"), backbone_cache_error);
  });
  CHECK(largest < (std::size_t(1) << 20));
  std::vector<char> all_ones;
  detail::put(all_ones, ~std::uint32_t(0));  // used to throw std::bad_alloc
  CHECK_THROWS_WITH_AS(load("ones.bin", all_ones), doctest::Contains("ones.bin: corrupt"),
                       backbone_cache_error);
  // An extent with the sign bit set (used to escape as std::invalid_argument from shape), one whose byte
  // count wraps (std::length_error), extents whose product overflows (accepted with no values), and too few
  // values.
  const std::uint64_t sign = std::uint64_t(1) << 63, quarter = std::uint64_t(1) << 62,
                      two32 = std::uint64_t(1) << 32;
  CHECK_THROWS_WITH_AS(load("sign.bin", one_parameter("w", {sign}, 0)),
                       doctest::Contains("sign.bin: corrupt (w: extent 9223372036854775808"),
                       backbone_cache_error);
  CHECK_THROWS_WITH_AS(load("wrap.bin", one_parameter("w", {quarter}, 0)),
                       doctest::Contains("wrap.bin: corrupt (w: [4611686018427387904] runs past"),
                       backbone_cache_error);
  CHECK_THROWS_WITH_AS(load("product.bin", one_parameter("w", {two32, two32}, 0)),
                       doctest::Contains("product.bin: corrupt (w: [4294967296, 4294967296] runs past"),
                       backbone_cache_error);
  CHECK_THROWS_WITH_AS(load("few.bin", one_parameter("w", {2, 3}, 5)),
                       doctest::Contains("few.bin: corrupt (w: [2, 3] runs past"), backbone_cache_error);
  CHECK_THROWS_WITH_AS(load("rank.bin", one_parameter("w", {1, 1, 1, 1, 1}, 1)),
                       doctest::Contains("rank.bin: corrupt (w: rank 5"), backbone_cache_error);
  auto long_name = one_parameter("w", {1}, 1);
  long_name[4] = 100;  // the name length
  CHECK_THROWS_WITH_AS(load("name.bin", long_name),
                       doctest::Contains("name.bin: corrupt (a parameter name runs past"),
                       backbone_cache_error);
  // A zero-size parameter is valid (its values used to be memcpy'd from/to null pointers, undefined
  // behaviour).
  const auto empty = load("empty.bin", one_parameter("bias", {0}, 0));
  REQUIRE(empty.size() == 1);
  CHECK(empty[0].name == "bias");
  CHECK(empty[0].value_shape == shape{0});
  CHECK(empty[0].values.empty());
  // A directory at the cache path used to escape as std::ios_base::failure from the stream.
  try {
    load_backbone(dir.path, 77);
    FAIL("no error");
  } catch (const backbone_cache_error& e) {
    CHECK(e.why() == backbone_cache_error::reason::unreadable);
    CHECK(std::string(e.what()).find(dir.path.string() + ": unreadable (a directory") != std::string::npos);
  }
}

TEST_CASE("load_or_pretrain rebuilds on every load failure: a hostile file, a directory in the way") {
  temp_directory dir;
  single_thread_scope one_thread;
  F backend;
  const auto images = synthetic_images(64, 8, 3);
  std::ostringstream log;
  const pretrain_settings settings{
      .epochs = 1, .batch_size = 32, .warmup_steps = 1, .seed = 5, .progress = &log};
  const std::uint64_t fingerprint = backbone_fingerprint(tiny_config(), settings, images);
  const auto path = dir.path / "cache.bin";
  write_bytes(path, cache_file_around(one_parameter("w", {std::uint64_t(1) << 63}, 0), fingerprint));
  const auto first = load_or_pretrain(backend, path, tiny_config(), images, settings);
  CHECK(log.str().find("cache.bin: corrupt (w: extent") != std::string::npos);
  CHECK(log.str().find("rotation pre-training epoch 1/1") != std::string::npos);
  CHECK(load_backbone(path, fingerprint).size() == first.size());

  // A directory where the file should be: pre-train, say that the cache cannot be written, return the state.
  log.str("");
  const auto in_the_way = dir.path / "in_the_way";
  std::filesystem::create_directories(in_the_way / "child");
  const auto second = load_or_pretrain(backend, in_the_way, tiny_config(), images, settings);
  CHECK(log.str().find("in_the_way: unreadable (a directory") != std::string::npos);
  CHECK(log.str().find("rotation pre-training epoch 1/1") != std::string::npos);
  CHECK(log.str().find("cannot write the pre-trained backbone") != std::string::npos);
  REQUIRE(second.size() == first.size());
  for (std::size_t i = 0; i < first.size(); ++i) CHECK(second[i].values == first[i].values);
  CHECK(std::filesystem::is_directory(in_the_way / "child"));
}

TEST_CASE("load_or_pretrain pre-trains and writes, then loads; a changed config or a corrupt file pre-trains again") {
  temp_directory dir;
  single_thread_scope one_thread;
  F backend;
  const auto images = synthetic_images(64, 8, 3);
  std::ostringstream log;
  const pretrain_settings settings{.epochs = 1, .batch_size = 32, .warmup_steps = 1, .seed = 5, .progress = &log};
  const auto path = dir.path / "cache.bin";
  const auto first = load_or_pretrain(backend, path, tiny_config(), images, settings);
  CHECK(log.str().find("missing") != std::string::npos);
  CHECK(log.str().find("rotation pre-training epoch 1/1") != std::string::npos);
  CHECK(std::filesystem::exists(path));

  log.str("");
  const auto second = load_or_pretrain(backend, path, tiny_config(), images, settings);
  CHECK(log.str().find("loaded the pre-trained backbone") != std::string::npos);
  CHECK(log.str().find("pre-training epoch") == std::string::npos);
  REQUIRE(second.size() == first.size());
  for (std::size_t i = 0; i < first.size(); ++i) CHECK(second[i].values == first[i].values);

  log.str("");
  vit_config changed = tiny_config();
  changed.width = 12;
  changed.heads = 3;
  load_or_pretrain(backend, path, changed, images, settings);
  CHECK(log.str().find("config mismatch") != std::string::npos);
  CHECK(log.str().find("pre-training epoch 1/1") != std::string::npos);

  auto bytes = read_bytes(path);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 1);
  write_bytes(path, bytes);
  log.str("");
  load_or_pretrain(backend, path, changed, images, settings);
  CHECK(log.str().find("corrupt (checksum mismatch)") != std::string::npos);
}

TEST_CASE("rotation pre-training of a tiny ViT learns rotations well above chance (0.25) within seconds") {
  single_thread_scope one_thread;
  F backend;
  vit_config config{.image_height = 28, .image_width = 28, .channels = 1, .patch_size = 7, .width = 32, .depth = 2,
                    .heads = 2, .mlp_ratio = 2.0, .classes = 10, .lora_targets = {}, .seed = 7};
  labelled_set train, held_out;
  if (fashion_mnist_available()) {
    const auto data = load_fashion_mnist();
    std::vector<index_t> train_rows, test_rows;
    for (index_t i = 0; i < 2048; ++i) train_rows.push_back(i);
    for (index_t i = 0; i < 256; ++i) test_rows.push_back(i);
    train = subset(data.train, train_rows);
    held_out = subset(data.test, test_rows);
    train.labels.clear();  // rotation pre-training never needs the labels
    MESSAGE("pre-training on 2048 Fashion-MNIST training images, evaluating on 256 test images");
  } else {
    train = synthetic_images(2048, 28, 11);
    held_out = synthetic_images(256, 28, 12);
    MESSAGE("Fashion-MNIST not installed: synthetic images");
  }
  vit<F> model(backend, config);
  std::ostringstream log;
  const auto report = pretrain_rotation(model, train, {.epochs = 8, .batch_size = 64, .learning_rate = 2e-3,
                                                       .warmup_steps = 10, .seed = 1, .progress = &log});
  MESSAGE(log.str());
  const double accuracy = rotation_accuracy(model, held_out);
  MESSAGE("held-out rotation accuracy ", accuracy, " after ", report.steps, " steps, ", report.seconds, " s");
  CHECK(report.steps == 8 * 32);
  CHECK(report.final_accuracy > 0.5);
  CHECK(accuracy > 0.5);
  CHECK(model.classes() == 4);
}

TEST_CASE("pre-training takes the images alone (a view, no labels, no copy) and reports each epoch's own time") {
  single_thread_scope one_thread;
  F backend;
  const auto images = synthetic_images(64, 8, 3);
  std::ostringstream log;
  const pretrain_settings settings{.epochs = 2, .batch_size = 32, .warmup_steps = 1, .seed = 5, .progress = &log};
  const std::vector<float> pixels = images.features;  // plain floats, nothing else
  const image_view alone(images.example_shape, pixels);
  CHECK(alone.size() == 64);
  const auto from_view = pretrain_backbone(backend, tiny_config(), alone, settings);
  const auto from_set = pretrain_backbone(backend, tiny_config(), images, settings);
  REQUIRE(from_view.size() == from_set.size());
  for (std::size_t i = 0; i < from_view.size(); ++i) CHECK(from_view[i].values == from_set[i].values);
  CHECK(log.str().find("s this epoch, ") != std::string::npos);
  CHECK(log.str().find("s in all, 64 images") != std::string::npos);
  CHECK_THROWS_WITH_AS(image_view(shape{8, 8}, std::span<const float>(pixels.data(), 100)),
                       doctest::Contains("not a whole number of examples"), std::invalid_argument);
}
