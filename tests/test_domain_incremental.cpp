// Domain-incremental streams (data/domain_incremental.hpp): bilinear rotation against hand-computed values
// and exact index permutations, seeded pixel permutations, the sharing of examples among tasks, class lists,
// every input error, and which protocols a stream supports (dataset.hpp: class_sharing_of,
// tasks_share_classes, meaningful_protocols).
#include "test_support.hpp"

#include <limits>
#include <set>

#include "treelora/data/domain_incremental.hpp"

using namespace treelora;

namespace {

/// An image of `s` with seeded normal values.
std::vector<float> random_image(const shape& s, std::uint64_t seed) {
  random::generator g(seed);
  std::vector<float> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<float>(g.normal());
  return v;
}

std::vector<float> rotated(const std::vector<float>& in, const shape& s, double degrees, float fill = -7.0f) {
  std::vector<float> out(in.size());
  rotate_image(in, out, s, degrees, fill);
  return out;
}

/// n examples of h x w; pixel p of example i is 100 i + p (its smallest value names it); labels i % 3.
labelled_set indexed_set(index_t n, index_t h = 4, index_t w = 4) {
  labelled_set set;
  set.example_shape = shape{h, w};
  for (index_t i = 0; i < n; ++i) {
    for (index_t p = 0; p < h * w; ++p) set.features.push_back(static_cast<float>(100 * i + p));
    set.labels.push_back(i % 3);
  }
  return set;
}

/// The original example indices of a task's set built from indexed_set (transforms that only move pixels).
std::vector<index_t> original_indices(const labelled_set& set) {
  std::vector<index_t> out;
  const index_t size = set.example_size();
  for (index_t i = 0; i < set.size(); ++i) {
    const auto first = set.features.begin() + i * size;
    out.push_back(static_cast<index_t>(*std::min_element(first, first + size)) / 100);
  }
  return out;
}

}  // namespace

TEST_CASE("rotation by 0, 360 and -720 degrees is the identity") {
  const shape s{5, 7};
  const auto image = random_image(s, 1);
  for (double a : {0.0, 360.0, -720.0}) CHECK(rotated(image, s, a) == image);
}

TEST_CASE("rotation by multiples of 90 degrees is an exact index permutation") {
  for (index_t n : {5, 6}) {  // odd and even sizes: the centre is a pixel or a pixel corner
    const shape s{n, n};
    const auto in = random_image(s, 2);
    const auto at = [&](index_t y, index_t x) { return in[std::size_t(y * n + x)]; };
    const auto r90 = rotated(in, s, 90), r180 = rotated(in, s, 180), r270 = rotated(in, s, 270);
    for (index_t y = 0; y < n; ++y)
      for (index_t x = 0; x < n; ++x) {  // counter-clockwise: the top-right corner moves to the top-left
        CHECK(r90[std::size_t(y * n + x)] == at(x, n - 1 - y));
        CHECK(r180[std::size_t(y * n + x)] == at(n - 1 - y, n - 1 - x));
        CHECK(r270[std::size_t(y * n + x)] == at(n - 1 - x, y));
      }
    CHECK(rotated(in, s, -90) == r270);
    CHECK(rotated(in, s, 450) == r90);
    // The same convention as the rotation pre-training's quarter turns.
    std::vector<float> quarter(in.size());
    rotate_quarter_turns(in.data(), quarter.data(), 1, n, 1);
    CHECK(quarter == r90);
    // The general bilinear path agrees with the exact one just off 90 degrees.
    const auto near = rotated(in, s, 90 + 1e-9);
    CHECK(testing::relative_error(near, r90) < 1e-6);
  }
  // A non-square 4 x 6 image: 180 degrees is exact everywhere; 90 degrees maps the interior columns 1..4
  // exactly (out[y][x] = in[x - 1][4 - y]) and the rest of the output has no source pixel (fill).
  const shape s{4, 6};
  const auto in = random_image(s, 3);
  const auto r180 = rotated(in, s, 180), r90 = rotated(in, s, 90, -7.0f);
  for (index_t y = 0; y < 4; ++y)
    for (index_t x = 0; x < 6; ++x) {
      CHECK(r180[std::size_t(y * 6 + x)] == in[std::size_t((3 - y) * 6 + (5 - x))]);
      if (x >= 1 && x <= 4)
        CHECK(r90[std::size_t(y * 6 + x)] == in[std::size_t((x - 1) * 6 + (4 - y))]);
      else
        CHECK(r90[std::size_t(y * 6 + x)] == -7.0f);
    }
}

TEST_CASE("bilinear rotation by 45 degrees matches hand-computed values") {
  // 3 x 3, one bright pixel at (row 0, column 2), fill f = -2. Output (y, x) reads the input at
  // sx = 1 + c (x - 1) - c (y - 1), sy = 1 + c (x - 1) + c (y - 1) with c = cos 45 = sin 45 = 0.70711.
  const shape s{3, 3};
  const std::vector<float> in{0, 0, 1, 0, 0, 0, 0, 0, 0};
  const float f = -2.0f;
  const auto out = rotated(in, s, 45, f);
  const double r = std::sqrt(2.0) - 1;  // 0.41421
  const std::vector<double> expected{
      r * f,   // (0,0): (sy, sx) = (-0.41421, 1): 0.41421 of row -1 (fill) + 0.58579 of (0,1) = 0
      0.5,     // (0,1): (0.29289, 1.70711): weight of (0,2) = (1 - 0.29289) * 0.70711 = 0.5
      r * f,   // (0,2): (1, 2.41421): 0.58579 of (1,2) = 0 + 0.41421 of column 3 (fill)
      0.0,     // (1,0): (0.29289, 0.29289): (0,0), (0,1), (1,0), (1,1), all 0
      0.0,     // (1,1): the centre stays
      0.0,     // (1,2): (1.70711, 1.70711): rows 1-2, columns 1-2, all 0
      r * f,   // (2,0): (1, -0.41421): 0.41421 of column -1 (fill)
      0.0,     // (2,1): (1.70711, 0.29289): rows 1-2, columns 0-1, all 0
      r * f};  // (2,2): (2.41421, 1): 0.41421 of row 3 (fill)
  CHECK(testing::relative_error(out, expected) < 1e-6);

  // A bilinear interpolant reproduces an affine image exactly wherever all four neighbours are inside:
  // image(y, x) = 3 + 2 y - 0.5 x on 9 x 9, turned by 30 degrees, checked wherever the source is inside.
  const shape big{9, 9};
  std::vector<float> affine;
  for (index_t y = 0; y < 9; ++y)
    for (index_t x = 0; x < 9; ++x) affine.push_back(static_cast<float>(3 + 2 * y - 0.5 * x));
  const auto turned = rotated(affine, big, 30);
  const double c = std::cos(std::numbers::pi / 6), sn = std::sin(std::numbers::pi / 6);
  int checked = 0;
  for (index_t y = 0; y < 9; ++y)
    for (index_t x = 0; x < 9; ++x) {
      const double sx = 4 + c * (x - 4) - sn * (y - 4), sy = 4 + sn * (x - 4) + c * (y - 4);
      if (sx < 0 || sy < 0 || sx > 8 || sy > 8) continue;
      CHECK(turned[std::size_t(y * 9 + x)] == doctest::Approx(3 + 2 * sy - 0.5 * sx).epsilon(1e-5));
      ++checked;
    }
  CHECK(checked > 40);
}

TEST_CASE("a [C, H, W] image turns every channel the same way") {
  const shape s{3, 5, 5}, plane{5, 5};
  const auto in = random_image(s, 4);
  const auto out = rotated(in, s, 33);
  for (index_t channel = 0; channel < 3; ++channel) {
    const std::vector<float> one(in.begin() + channel * 25, in.begin() + (channel + 1) * 25);
    const std::vector<float> got(out.begin() + channel * 25, out.begin() + (channel + 1) * 25);
    CHECK(got == rotated(one, plane, 33));
  }
}

TEST_CASE("pixel permutations are seeded bijections") {
  const auto p = pixel_permutation(784, 5);
  std::vector<index_t> sorted = p, identity(784);
  std::sort(sorted.begin(), sorted.end());
  std::iota(identity.begin(), identity.end(), index_t(0));
  CHECK(sorted == identity);
  CHECK(p != identity);
  CHECK(pixel_permutation(784, 5) == p);
  CHECK(pixel_permutation(784, 6) != p);

  // out[channel][q] = in[channel][p[q]], the same p in every channel.
  const std::vector<index_t> small{2, 0, 3, 1};
  const std::vector<float> in{10, 11, 12, 13, 20, 21, 22, 23};
  std::vector<float> out(8);
  permute_pixels(in, out, small, 2);
  CHECK(out == std::vector<float>{12, 10, 13, 11, 22, 20, 23, 21});
  CHECK_THROWS_WITH_AS(permute_pixels(in, out, small, 3), doctest::Contains("permute_pixels"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(permute_pixels(in, out, std::vector<index_t>{0, 1, 2, 4}, 2),
                       doctest::Contains("outside [0, 4)"), std::invalid_argument);
}

TEST_CASE("rotated_stream: one task per angle, disjoint examples, every task all classes") {
  const auto train = indexed_set(40), test = indexed_set(20);
  const auto stream = rotated_stream(train, test, {.angles = {0, 90, 180, 270}, .fill = -1, .seed = 3});
  REQUIRE(stream.tasks.size() == 4);
  CHECK(stream.total_classes == 3);
  CHECK(stream.name == "rotated (0, 90, 180, 270 degrees)");
  CHECK(stream.tasks[1].name == "task 1 (90 degrees)");
  std::set<index_t> used_train, used_test;
  for (std::size_t k = 0; k < 4; ++k) {
    const auto& task = stream.tasks[k];
    CHECK(task.classes == std::vector<index_t>{0, 1, 2});
    CHECK(task.train.size() == 10);  // an even share of 40
    CHECK(task.test.size() == 5);
    CHECK(task.train.example_shape == train.example_shape);
    const auto ids = original_indices(task.train);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      CHECK(used_train.insert(ids[i]).second);  // no example in two tasks
      CHECK(task.train.labels[i] == train.labels[std::size_t(ids[i])]);
      const std::vector<float> original(train.features.begin() + ids[i] * 16,
                                        train.features.begin() + (ids[i] + 1) * 16);
      const std::vector<float> got(task.train.features.begin() + index_t(i) * 16,
                                   task.train.features.begin() + index_t(i + 1) * 16);
      CHECK(got == rotated(original, train.example_shape, 90.0 * double(k), -1));
    }
    for (index_t id : original_indices(task.test)) CHECK(used_test.insert(id).second);
  }
  CHECK(used_train.size() == 40);

  // Seeded: the same seed builds the same stream, another seed shares the examples out differently.
  const auto again = rotated_stream(train, test, {.angles = {0, 90, 180, 270}, .fill = -1, .seed = 3});
  const auto other = rotated_stream(train, test, {.angles = {0, 90, 180, 270}, .fill = -1, .seed = 4});
  CHECK(again.tasks[2].train.features == stream.tasks[2].train.features);
  CHECK(original_indices(other.tasks[0].train) != original_indices(stream.tasks[0].train));

  // Explicit counts; an even share that does not divide leaves the remainder out.
  const auto counted =
      rotated_stream(train, test, {.angles = {0, 180, 90}, .train_per_task = 7, .test_per_task = 2});
  for (const auto& task : counted.tasks) CHECK((task.train.size() == 7 && task.test.size() == 2));
  const auto three = rotated_stream(train, test, {.angles = {0, 180, 90}});
  for (const auto& task : three.tasks) CHECK((task.train.size() == 13 && task.test.size() == 6));

  // Not disjoint: each task draws its own sample, all examples by default.
  const auto shared =
      rotated_stream(train, test, {.angles = {0, 180}, .train_per_task = 30, .disjoint = false});
  const auto a = original_indices(shared.tasks[0].train), b = original_indices(shared.tasks[1].train);
  CHECK(std::set<index_t>(a.begin(), a.end()).size() == 30);
  CHECK(a != b);
  const auto everything = rotated_stream(train, test, {.angles = {0, 180}, .disjoint = false});
  CHECK((everything.tasks[1].train.size() == 40 && everything.tasks[1].test.size() == 20));
}

TEST_CASE("permuted_stream: task 0 the identity on request, one seeded permutation per task") {
  const auto train = indexed_set(30, 3, 3), test = indexed_set(12, 3, 3);
  const auto stream = permuted_stream(train, test, {.tasks = 3, .seed = 9});
  REQUIRE(stream.tasks.size() == 3);
  CHECK(stream.total_classes == 3);
  CHECK(stream.tasks[0].name == "task 0 (identity)");
  std::set<index_t> used;
  for (std::size_t k = 0; k < 3; ++k) {
    const auto& task = stream.tasks[k];
    CHECK(task.classes == std::vector<index_t>{0, 1, 2});
    CHECK((task.train.size() == 10 && task.test.size() == 4));
    const auto permutation = task_permutation({.tasks = 3, .seed = 9}, index_t(k), 9);
    const auto ids = original_indices(task.train);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      CHECK(used.insert(ids[i]).second);
      for (index_t p = 0; p < 9; ++p)
        CHECK(task.train.features[i * 9 + std::size_t(p)] ==
              train.features[std::size_t(ids[i] * 9 + permutation[std::size_t(p)])]);
    }
  }
  std::vector<index_t> identity(9);
  std::iota(identity.begin(), identity.end(), index_t(0));
  CHECK(task_permutation({.seed = 9}, 0, 9) == identity);
  CHECK(task_permutation({.first_task_identity = false, .seed = 9}, 0, 9) != identity);
  CHECK(task_permutation({.seed = 9}, 1, 9) != task_permutation({.seed = 9}, 2, 9));
  CHECK(task_permutation({.seed = 9}, 1, 9) == task_permutation({.seed = 9}, 1, 9));
  CHECK(task_permutation({.seed = 9}, 1, 9) != task_permutation({.seed = 10}, 1, 9));

  // [C, H, W]: the H x W positions move, the same way in every channel.
  labelled_set colour;
  colour.example_shape = shape{2, 2, 2};
  colour.features = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33};
  colour.labels = {0, 1};
  const auto c = permuted_stream(colour, colour, {.tasks = 2, .disjoint = false, .seed = 1});
  const auto p = task_permutation({.tasks = 2, .disjoint = false, .seed = 1}, 1, 4);
  for (index_t e = 0; e < 2; ++e) {
    const index_t id = static_cast<index_t>(c.tasks[1].train.features[std::size_t(e * 8)]) / 20;  // 0 or 1
    for (index_t channel = 0; channel < 2; ++channel)
      for (index_t q = 0; q < 4; ++q)
        CHECK(c.tasks[1].train.features[std::size_t(e * 8 + channel * 4 + q)] ==
              colour.features[std::size_t(id * 8 + channel * 4 + p[std::size_t(q)])]);
  }
}

TEST_CASE("domain-incremental builders reject bad options with messages naming the fault") {
  const auto train = indexed_set(40), test = indexed_set(20);
  const std::vector<std::pair<rotation_stream_options, const char*>> rotation_cases = {
      {{.angles = {}}, "rotated_stream: no angles"},
      {{.angles = {0, std::nan("")}}, "angle 1 is nan, not a finite number of degrees"},
      {{.angles = {HUGE_VAL}}, "angle 0 is inf"},
      {{.fill = std::numeric_limits<float>::infinity()}, "fill value inf is not finite"},
      {{.angles = {0, 90}, .train_per_task = 21},
       "2 disjoint tasks x 21 training examples need 42 examples, the set has 40"},
      {{.angles = {0, 90}, .test_per_task = 11}, "2 disjoint tasks x 11 test examples need 22"},
      {{.angles = {0}, .train_per_task = 41, .disjoint = false},
       "41 training examples per task, the set has 40"},
      {{.train_per_task = std::numeric_limits<index_t>::max()}, "examples per task, the set has 40"},
      {{.train_per_task = -1}, "training examples per task -1 < 0"},
      {{.angles = std::vector<double>(41, 0.0)}, "the training set has 40 examples, fewer than the 41 tasks"},
  };
  for (const auto& entry : rotation_cases) {
    const char* text = entry.second;  // not a binding: clang 14 cannot capture one in CAPTURE's lambda
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(rotated_stream(train, test, entry.first), doctest::Contains(text),
                         std::invalid_argument);
  }
  const std::vector<std::pair<permutation_stream_options, const char*>> permutation_cases = {
      {{.tasks = 0}, "permuted_stream: 0 tasks"},
      {{.tasks = 2, .train_per_task = 30}, "2 disjoint tasks x 30 training examples need 60"},
      {{.tasks = 2, .test_per_task = 21, .disjoint = false}, "21 test examples per task, the set has 20"},
  };
  for (const auto& entry : permutation_cases) {
    const char* text = entry.second;  // not a binding: clang 14 cannot capture one in CAPTURE's lambda
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(permuted_stream(train, test, entry.first), doctest::Contains(text),
                         std::invalid_argument);
  }
  std::vector<float> out(16);
  CHECK_THROWS_WITH_AS(rotate_image(std::vector<float>(15), out, shape{4, 4}, 10, 0),
                       doctest::Contains("rotate_image: 15 input and 16 output values"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(rotate_image(std::vector<float>(16), out, shape{4, 4}, INFINITY, 0),
                       doctest::Contains("rotate_image: angle inf is not finite"), std::invalid_argument);
}

TEST_CASE("domain-incremental builders reject bad data sets with messages naming the fault") {
  const auto good = indexed_set(40);
  const auto with = [](auto change) {
    labelled_set set = indexed_set(8);
    change(set);
    return set;
  };
  const auto vectors = with([](labelled_set& s) { s.example_shape = shape{16}; });
  const auto four_d = with([](labelled_set& s) { s.example_shape = shape{1, 1, 4, 4}; });
  const auto negative = with([](labelled_set& s) { s.labels[3] = -1; });
  const auto short_features = with([](labelled_set& s) { s.features.pop_back(); });
  const auto not_finite = with([](labelled_set& s) { s.features[20] = std::nanf(""); });
  const auto rotation_error = [](const labelled_set& train, const labelled_set& test, const char* text) {
    CHECK_THROWS_WITH_AS(rotated_stream(train, test), doctest::Contains(text), std::invalid_argument);
  };
  rotation_error(vectors, vectors, "rotated_stream: example shape [16] is not an image [H, W] or [C, H, W]");
  rotation_error(four_d, four_d, "example shape [1, 1, 4, 4] is not an image");
  rotation_error(good, indexed_set(20, 2, 8), "train examples [4, 4] vs test examples [2, 8]");
  rotation_error(negative, good, "rotated_stream training set: example 3 has label -1");
  rotation_error(short_features, good, "rotated_stream training set: 127 feature values for 8 labels");
  rotation_error(good, not_finite, "rotated_stream test set: example 1 has a non-finite value (nan)");
  CHECK_THROWS_WITH_AS(permuted_stream(four_d, four_d), doctest::Contains("is not a vector [d] or an image"),
                       std::invalid_argument);
  // A permutation needs no image: vectors [d] permute all their values.
  CHECK(permuted_stream(vectors, vectors, {.tasks = 2}).tasks[1].train.size() == 4);
}

TEST_CASE("tasks_share_classes and meaningful_protocols tell class- from domain-incremental streams") {
  const auto train = indexed_set(60), test = indexed_set(30);
  const auto split = split_by_classes(train, test, 3, {.classes_per_task = 1});
  CHECK(class_sharing_of(split) == class_sharing::disjoint);
  CHECK_FALSE(tasks_share_classes(split));
  const auto split_protocols = meaningful_protocols(split);
  CHECK((split_protocols.task_il && split_protocols.class_il && split_protocols.task_identity));

  for (const auto& domain : {rotated_stream(train, test), permuted_stream(train, test, {.tasks = 3})}) {
    CHECK(class_sharing_of(domain) == class_sharing::identical);
    CHECK(tasks_share_classes(domain));
    const auto protocols = meaningful_protocols(domain);
    CHECK((protocols.task_il && !protocols.class_il && !protocols.task_identity));
  }
  CHECK(class_sharing_of(make_planted_hierarchy({.shared_classes = true}).stream) ==
        class_sharing::identical);
  CHECK(class_sharing_of(make_planted_hierarchy({}).stream) == class_sharing::disjoint);

  // Partly overlapping sets; order and repeats inside a task do not matter; one task shares with nobody.
  task_stream hand{"hand", 4, {}};
  hand.tasks.push_back({"a", {0, 1}, {}, {}});
  hand.tasks.push_back({"b", {1, 2}, {}, {}});
  CHECK(class_sharing_of(hand) == class_sharing::overlapping);
  CHECK(tasks_share_classes(hand));
  hand.tasks[1].classes = {3, 2, 3};
  CHECK(class_sharing_of(hand) == class_sharing::disjoint);
  hand.tasks[1].classes = {1, 0, 1};
  CHECK(class_sharing_of(hand) == class_sharing::identical);
  hand.tasks.pop_back();
  CHECK(class_sharing_of(hand) == class_sharing::disjoint);
  CHECK(meaningful_protocols(task_stream{}).class_il);
}

TEST_CASE("rotated Fashion-MNIST: normalised pixels, corners filled with black, 10 shared classes") {
  if (!fashion_mnist_available()) {
    MESSAGE("skipped: Fashion-MNIST not found in ", fashion_mnist_directory,
            " (Debian package dataset-fashion-mnist)");
    return;
  }
  const auto data = load_fashion_mnist();
  // The loader normalises (byte / 255 - 0.2860) / 0.3530, so a black pixel is -0.8102, the smallest value
  // there is.
  const float black = black_pixel_value();
  CHECK(black == doctest::Approx(-0.2860 / 0.3530));
  CHECK(*std::min_element(data.train.features.begin(), data.train.features.end()) == doctest::Approx(black));
  const auto stream = rotated_stream(
      data.train, data.test, {.angles = {0, 45, 90, 135}, .train_per_task = 100, .test_per_task = 50});
  REQUIRE(stream.tasks.size() == 4);
  CHECK(stream.total_classes == 10);
  for (const auto& task : stream.tasks) {
    CHECK(task.classes.size() == 10);
    CHECK((task.train.size() == 100 && task.test.size() == 50));
    CHECK(task.train.example_shape == shape{28, 28});
  }
  // At 45 degrees the output's corners have no source pixel: they are black, not the normalised value 0
  // (grey).
  for (index_t i = 0; i < stream.tasks[1].train.size(); ++i)
    CHECK(stream.tasks[1].train.features[std::size_t(i * 784)] == black);
}
