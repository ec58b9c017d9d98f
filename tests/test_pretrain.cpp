// Rotation pre-training and its cache: rotations, fingerprints, a bit-exact save/load round trip, detection of a
// flipped byte, truncation, a missing file and a config mismatch, load_or_pretrain's decisions, and a short
// pre-training run that learns rotations well above chance (real Fashion-MNIST images when installed).
#include "test_support.hpp"

#include <fstream>
#include <sstream>

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
