// Data: gzip IDX round trip and every malformed-file error (hostile headers included), image/label pairing
// and normalisation, class orders and task splits, per-class subsampling, seeded epoch permutations, batch
// loading, the real Fashion-MNIST files, and the tests' own JSON reader against hostile input.
#include "test_support.hpp"

#include <fstream>
#include <set>

#include "fuzz/largest_allocation.hpp"  // replaces operator new in this test program
#include "treelora/data.hpp"

using namespace treelora;

namespace {

/// A fresh directory under the system temp directory, removed at the end of the test.
struct temp_directory {
  std::filesystem::path path;
  temp_directory() {
    path = std::filesystem::temp_directory_path() /
           concat("treelora_test_data_", ::getpid(), "_", reinterpret_cast<std::uintptr_t>(this));
    std::filesystem::create_directories(path);
  }
  ~temp_directory() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

/// Writes raw bytes through zlib (a gzip file whose content we control byte by byte).
void write_gzip(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  gzclose(f);
}

/// Writes raw bytes as they are (an uncompressed IDX file).
void write_plain(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

std::vector<std::uint8_t> idx_header(std::uint8_t type, std::vector<std::uint32_t> dims) {
  std::vector<std::uint8_t> h{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<std::uint8_t>((d >> s) & 0xff));
  return h;
}

/// n images of h x w with pixel (i, y, x) = (i * 7 + y * w + x) mod 256, labels i mod classes.
void write_images_and_labels(const std::filesystem::path& dir, index_t n, index_t h, index_t w, index_t classes) {
  std::vector<std::uint8_t> pixels, labels;
  for (index_t i = 0; i < n; ++i) {
    for (index_t p = 0; p < h * w; ++p) pixels.push_back(static_cast<std::uint8_t>((i * 7 + p) % 256));
    labels.push_back(static_cast<std::uint8_t>(i % classes));
  }
  const std::vector<index_t> image_dims{n, h, w}, label_dims{n};
  write_idx(dir / "images.gz", image_dims, pixels);
  write_idx(dir / "labels.gz", label_dims, labels);
}

}  // namespace

TEST_CASE("gzip IDX files round trip") {
  temp_directory dir;
  std::vector<std::uint8_t> data(2 * 3 * 5);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 37 % 256);
  const std::vector<index_t> dims{2, 3, 5};
  write_idx(dir.path / "a.gz", dims, data);
  const idx_array back = read_idx(dir.path / "a.gz", 3);
  CHECK(back.dims == dims);
  CHECK(back.data == data);
  // An uncompressed IDX file reads the same (zlib passes it through).
  auto raw = idx_header(0x08, {2, 3, 5});
  raw.insert(raw.end(), data.begin(), data.end());
  write_plain(dir.path / "plain.idx", raw);
  CHECK(read_idx(dir.path / "plain.idx").data == data);
  CHECK_THROWS_AS(write_idx(dir.path / "b.gz", dims, std::vector<std::uint8_t>(7)), std::invalid_argument);
}

TEST_CASE("malformed IDX files throw std::runtime_error naming the path and the fault") {
  temp_directory dir;
  const auto path = [&](const char* name) { return dir.path / name; };
  CHECK_THROWS_WITH_AS(read_idx(path("missing.gz")), doctest::Contains("missing.gz: no such file"), std::runtime_error);

  write_gzip(path("magic.gz"), {1, 2, 8, 1, 0, 0, 0, 0});
  CHECK_THROWS_WITH_AS(read_idx(path("magic.gz")), doctest::Contains("magic.gz: bad magic number"), std::runtime_error);

  write_gzip(path("type.gz"), idx_header(0x0d, {1}));  // float elements
  CHECK_THROWS_WITH_AS(read_idx(path("type.gz")), doctest::Contains("unsupported element type 0xd"), std::runtime_error);

  auto rank_two = idx_header(0x08, {2, 2});
  rank_two.insert(rank_two.end(), {1, 2, 3, 4});
  write_gzip(path("rank.gz"), rank_two);
  CHECK_THROWS_WITH_AS(read_idx(path("rank.gz"), 3), doctest::Contains("rank.gz: wrong rank 2, expected 3"), std::runtime_error);

  write_gzip(path("short_header.gz"), {0, 0, 8, 3, 0, 0, 0, 2, 0, 0});
  CHECK_THROWS_WITH_AS(read_idx(path("short_header.gz")), doctest::Contains("truncated header"), std::runtime_error);

  auto short_data = idx_header(0x08, {10});
  short_data.insert(short_data.end(), {1, 2, 3});
  write_gzip(path("short.gz"), short_data);
  CHECK_THROWS_WITH_AS(read_idx(path("short.gz")),
                       doctest::Contains("short.gz: size mismatch: the header promises 10 bytes of data, the file has 3"),
                       std::runtime_error);

  auto long_data = idx_header(0x08, {2});
  long_data.insert(long_data.end(), {1, 2, 3});
  write_gzip(path("long.gz"), long_data);
  CHECK_THROWS_WITH_AS(read_idx(path("long.gz")), doctest::Contains("data continues past the 2 bytes"), std::runtime_error);

  // A gzip stream cut in the middle.
  std::vector<std::uint8_t> big(4000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>((i * 131) ^ (i >> 3));
  const std::vector<index_t> dims{4000};
  write_idx(path("cut.gz"), dims, big);
  std::filesystem::resize_file(path("cut.gz"), std::filesystem::file_size(path("cut.gz")) / 2);
  CHECK_THROWS_WITH_AS(read_idx(path("cut.gz")), doctest::Contains("cut.gz"), std::runtime_error);

  write_images_and_labels(dir.path, 4, 2, 3, 2);
  write_idx(path("labels5.gz"), std::vector<index_t>{5}, std::vector<std::uint8_t>{0, 1, 0, 1, 0});
  CHECK_THROWS_WITH_AS(read_idx_images_and_labels(path("images.gz"), path("labels5.gz")),
                       doctest::Contains("label/image count mismatch"), std::runtime_error);
  CHECK_THROWS_WITH_AS(read_idx_images_and_labels(path("labels.gz"), path("labels.gz")),
                       doctest::Contains("labels.gz: wrong rank 1, expected 3"), std::runtime_error);
}

TEST_CASE("hostile IDX headers: no wrapped sizes, no allocation beyond the data that arrives") {
  temp_directory dir;
  const auto path = [&](const char* name) { return dir.path / name; };
  using treelora::testing::largest_allocation;
  // Extents 65536 x 262144 x 2^30 multiply to 2^64, which wrapped to 0: the file was accepted without data.
  write_plain(path("wrapped.idx"), {0x00, 0x00, 0x08, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
                                    0x40, 0x00, 0x00, 0x00});
  CHECK_THROWS_WITH_AS(read_idx(path("wrapped.idx")),
                       doctest::Contains("wrapped.idx: the extents 65536 x 262144 x 1073741824 overflow"),
                       std::runtime_error);
  // A zero extent must not hide others whose product does not fit (the callers multiply sub-extents).
  write_plain(path("zero.idx"), idx_header(0x08, {0, 0xffffffffu, 0xffffffffu}));
  CHECK_THROWS_WITH_AS(read_idx(path("zero.idx")),
                       doctest::Contains("zero.idx: the extents 0 x 4294967295 x 4294967295"),
                       std::runtime_error);
  write_plain(path("limit.idx"), idx_header(0x08, {0x10000, 0x10000, 5}));
  CHECK_THROWS_WITH_AS(read_idx(path("limit.idx")), doctest::Contains("more than the limit"),
                       std::runtime_error);
  write_plain(path("no_images.idx"), idx_header(0x08, {0, 28, 28}));
  const idx_array none = read_idx(path("no_images.idx"), 3);
  CHECK(none.dims == std::vector<index_t>{0, 28, 28});
  CHECK(none.data.empty());

  // 8 bytes promising 1 GiB: the reader used to zero-fill 1 GiB before it read anything. Now its buffer grows
  // as the data arrives (64 KiB first), plain or gzip.
  for (const char* name : {"promise.idx", "promise.gz"}) {
    const auto header = idx_header(0x08, {0x40000000u});
    if (std::string_view(name).ends_with(".gz"))
      write_gzip(path(name), header);
    else
      write_plain(path(name), header);
    const std::string message =
        concat(name, ": size mismatch: the header promises 1073741824 bytes of data, the file has 0");
    const std::size_t largest = largest_allocation([&] {
      CHECK_THROWS_WITH_AS(read_idx(path(name)), doctest::Contains(message.c_str()), std::runtime_error);
    });
    INFO(std::string(name));
    CHECK(largest <= detail::idx_read_chunk_min_bytes);
  }

  // Data longer than the largest chunk (16 MiB) reads back exactly; cut short, it reports how much arrived.
  const std::size_t size = (std::size_t(16) << 20) + 3;
  std::vector<std::uint8_t> big(size);
  for (std::size_t i = 0; i < size; ++i) big[i] = static_cast<std::uint8_t>((i * 131) ^ (i >> 13));
  write_idx(path("big.gz"), std::vector<index_t>{static_cast<index_t>(size)}, big);
  CHECK(read_idx(path("big.gz"), 1).data == big);
  auto long_file = idx_header(0x08, {static_cast<std::uint32_t>(2 * size)});
  long_file.insert(long_file.end(), big.begin(), big.end());
  write_plain(path("cut.idx"), long_file);
  const std::string cut_message =
      concat("the header promises ", 2 * size, " bytes of data, the file has ", size);
  CHECK_THROWS_WITH_AS(read_idx(path("cut.idx")), doctest::Contains(cut_message.c_str()), std::runtime_error);

  write_plain(path("rank0.idx"), {0, 0, 8, 0});
  CHECK_THROWS_WITH_AS(read_idx(path("rank0.idx")),
                       doctest::Contains("rank0.idx: wrong rank 0, expected 1 or more"), std::runtime_error);
  CHECK_THROWS_WITH_AS(read_idx(dir.path), doctest::Contains("is a directory"), std::runtime_error);
  CHECK_THROWS_AS(read_idx(path("rank0.idx"), -1), std::invalid_argument);
  CHECK_THROWS_AS(read_idx(path("rank0.idx"), 256), std::invalid_argument);
}

TEST_CASE("images and labels become a normalised labelled_set") {
  temp_directory dir;
  write_images_and_labels(dir.path, 6, 2, 3, 3);
  const labelled_set raw = read_idx_images_and_labels(dir.path / "images.gz", dir.path / "labels.gz", std::nullopt);
  CHECK(raw.size() == 6);
  CHECK(raw.example_shape == shape{2, 3});
  CHECK(raw.labels == std::vector<index_t>{0, 1, 2, 0, 1, 2});
  CHECK(raw.features[6 + 4] == doctest::Approx((7 + 4) / 255.0));
  const labelled_set normalised = read_idx_images_and_labels(dir.path / "images.gz", dir.path / "labels.gz",
                                                             pixel_normalization{0.5f, 0.25f});
  CHECK(normalised.features[6 + 4] == doctest::Approx(((7 + 4) / 255.0 - 0.5) / 0.25));
  const auto stats = measure_normalization(raw);
  const labelled_set standardised = read_idx_images_and_labels(dir.path / "images.gz", dir.path / "labels.gz", stats);
  const auto after = measure_normalization(standardised);
  CHECK(std::abs(after.mean) < 1e-5);
  CHECK(after.stddev == doctest::Approx(1.0).epsilon(1e-4));
}

TEST_CASE("class orders, task splits and per-class subsampling") {
  CHECK(class_order(5) == std::vector<index_t>{0, 1, 2, 3, 4});
  const auto shuffled = class_order(10, 7);
  CHECK(shuffled == class_order(10, 7));
  CHECK(shuffled != class_order(10));
  CHECK(shuffled != class_order(10, 8));
  CHECK(std::set<index_t>(shuffled.begin(), shuffled.end()).size() == 10);

  labelled_set train{shape{2}, {}, {}}, test{shape{2}, {}, {}};
  for (index_t i = 0; i < 100; ++i) {
    train.features.insert(train.features.end(), {float(i), float(-i)});
    train.labels.push_back(i % 10);
  }
  for (index_t i = 0; i < 30; ++i) {
    test.features.insert(test.features.end(), {float(i), 0.f});
    test.labels.push_back(i % 10);
  }
  const task_stream fixed = split_by_classes(train, test, 10);
  REQUIRE(fixed.tasks.size() == 5);
  CHECK(fixed.total_classes == 10);
  for (std::size_t t = 0; t < 5; ++t) {
    const auto& task = fixed.tasks[t];
    CHECK(task.classes == std::vector<index_t>{index_t(2 * t), index_t(2 * t + 1)});
    CHECK(task.train.size() == 20);
    CHECK(task.test.size() == 6);
    for (std::size_t i = 0; i < task.train.labels.size(); ++i) {
      const index_t label = task.train.labels[i];
      CHECK((label == task.classes[0] || label == task.classes[1]));  // labels stay global
      CHECK(index_t(task.train.features[2 * i]) % 10 == label);      // features travel with their label
    }
  }
  CHECK(fixed.tasks[0].name == "task 0 (classes 0 1)");

  const task_stream mixed = split_by_classes(train, test, 10, {.shuffle_seed = 7, .train_per_class = 3, .test_per_class = 1});
  std::set<index_t> seen;
  for (std::size_t t = 0; t < 5; ++t) {
    const auto& task = mixed.tasks[t];
    CHECK(task.classes == std::vector<index_t>{shuffled[2 * t], shuffled[2 * t + 1]});
    CHECK(task.train.size() == 6);
    CHECK(task.test.size() == 2);
    seen.insert(task.classes.begin(), task.classes.end());
  }
  CHECK(seen.size() == 10);
  CHECK_THROWS_WITH_AS(split_by_classes(train, test, 10, {.classes_per_task = 3}),
                       doctest::Contains("10 classes do not split into tasks of 3"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(split_by_classes(train, test, 6, {.classes_per_task = 3}), doctest::Contains("label 6 outside [0, 6)"), std::invalid_argument);
}

TEST_CASE("epoch permutations are seeded, differ per epoch, and the batch loader copies the right rows") {
  const auto p0 = epoch_permutation(50, 3, 0), p1 = epoch_permutation(50, 3, 1);
  CHECK(p0 == epoch_permutation(50, 3, 0));
  CHECK(p0 != p1);
  CHECK(p0 != epoch_permutation(50, 4, 0));
  CHECK(std::set<index_t>(p0.begin(), p0.end()).size() == 50);

  labelled_set set{shape{3}, {}, {}};
  for (index_t i = 0; i < 10; ++i) {
    set.features.insert(set.features.end(), {float(i), float(i) + 0.5f, float(i) + 0.25f});
    set.labels.push_back(9 - i);
  }
  cpu_backend<double> backend;
  batch_loader<cpu_backend<double>> loader(backend);
  const std::vector<index_t> rows{4, 0, 7};
  const auto& features = loader.load(set, rows);
  CHECK(features.shape() == shape{3, 3});
  CHECK(features.to_host() == std::vector<double>{4, 4.5, 4.25, 0, 0.5, 0.25, 7, 7.5, 7.25});
  CHECK(std::vector<index_t>(loader.labels().begin(), loader.labels().end()) == std::vector<index_t>{5, 9, 2});
  const std::vector<index_t> bad{10};
  CHECK_THROWS_AS(loader.load(set, bad), std::invalid_argument);
}

TEST_CASE("the real Fashion-MNIST loads: 60000 / 10000 images of 28 x 28, labels 0..9 balanced") {
  if (!fashion_mnist_available()) {
    MESSAGE("skipped: Fashion-MNIST not found in ", fashion_mnist_directory, " (Debian package dataset-fashion-mnist)");
    return;
  }
  const fashion_mnist_data data = load_fashion_mnist();
  CHECK(data.train.size() == 60000);
  CHECK(data.test.size() == 10000);
  CHECK(data.train.example_shape == shape{28, 28});
  CHECK(data.train.features.size() == 60000u * 784u);
  std::vector<index_t> train_counts(10), test_counts(10);
  for (index_t l : data.train.labels) ++train_counts[static_cast<std::size_t>(l)];
  for (index_t l : data.test.labels) ++test_counts[static_cast<std::size_t>(l)];
  CHECK(train_counts == std::vector<index_t>(10, 6000));
  CHECK(test_counts == std::vector<index_t>(10, 1000));
  const auto stats = measure_normalization(data.train);  // normalised with the standard statistics
  CHECK(std::abs(stats.mean) < 0.01);
  CHECK(stats.stddev == doctest::Approx(1.0).epsilon(0.01));
  const task_stream stream = split_fashion_mnist(data, {.train_per_class = 100, .test_per_class = 50});
  REQUIRE(stream.tasks.size() == 5);
  CHECK(stream.tasks[4].classes == std::vector<index_t>{8, 9});
  CHECK(stream.tasks[4].train.size() == 200);
  CHECK(stream.tasks[4].test.size() == 100);
}
