// treelora/data/domain_incremental.hpp: domain-incremental task streams. Every task has the SAME classes and
// its own input distribution: one transform per task, applied to the task's own examples.
//   rotated_stream    Rotated MNIST-style: task k turns its images by angles[k] degrees (bilinear)
//   permuted_stream   Permuted MNIST-style: task k shuffles the pixel positions by a fixed seeded permutation
// Examples are shared out among the tasks by a seeded shuffle; with `disjoint` (the default) each original
// example appears in at most one task, so no task sees another task's images under a different transform.
// Rotation convention (the one pretrain.hpp's rotate_quarter_turns uses): positive angles turn the picture
// counter-clockwise as displayed (row 0 at the top). Output pixel (y, x), with d = (x - cx, y - cy) about the
// centre (cx, cy) = ((W - 1) / 2, (H - 1) / 2), reads the input at
//   sx = cx + cos(a) dx - sin(a) dy,   sy = cy + sin(a) dx + cos(a) dy
// interpolated bilinearly between the four neighbouring pixels; neighbours outside the image count as `fill`.
// Multiples of 90 degrees use exact cosines and sines: on a square image they are exact index permutations.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "treelora/backend/random.hpp"
#include "treelora/data/batching.hpp"
#include "treelora/data/dataset.hpp"
#include "treelora/data/fashion_mnist.hpp"

namespace treelora {

/// The value of a black (zero-intensity) pixel after `normalization`; none: raw [0, 1] pixels, so 0.
/// With load_fashion_mnist's default normalisation this is -0.2860 / 0.3530 = -0.8102.
inline float black_pixel_value(std::optional<pixel_normalization> normalization = pixel_normalization{}) {
  return normalization ? -normalization->mean / normalization->stddev : 0.0f;
}

/// Rotated images: one task per angle.
struct rotation_stream_options {
  std::vector<double> angles = {0, 45, 90, 135};  ///< degrees, counter-clockwise; task k uses angles[k]
  /// Written where the turned image has no source pixel: a black pixel after load_fashion_mnist's default
  /// normalisation (-0.8102); use black_pixel_value(std::nullopt) = 0 for raw [0, 1] pixels.
  float fill = black_pixel_value();
  /// Training examples per task; 0: an even share floor(n / tasks) when disjoint, all n when not.
  index_t train_per_task = 0;
  index_t test_per_task = 0;  ///< test examples per task; 0 as for train_per_task
  bool disjoint = true;       ///< each original example in at most one task (else each task draws its own)
  std::uint64_t seed = 0;     ///< which examples go to which task
};

/// Permuted pixels: one fixed seeded permutation per task.
struct permutation_stream_options {
  index_t tasks = 5;
  /// Task 0 keeps the original images (as in van de Ven et al.'s Permuted MNIST).
  bool first_task_identity = true;
  index_t train_per_task = 0;  ///< as in rotation_stream_options
  index_t test_per_task = 0;
  bool disjoint = true;
  std::uint64_t seed = 0;  ///< the permutations and which examples go to which task
};

namespace detail {
/// The sampling fields both option structs share.
struct domain_sampling {
  index_t train_per_task = 0, test_per_task = 0;
  bool disjoint = true;
  std::uint64_t seed = 0;
};

/// The examples of `set` each of `tasks` tasks gets, each list in increasing order.
///   disjoint:     one seeded shuffle of [0, n), cut into consecutive blocks of `per_task` (0: n / tasks, the
///                 remainder unused); throws when tasks x per_task > n.
///   not disjoint: task k draws its own seeded sample of `per_task` examples (0: all n).
/// Throws when per_task > n.
inline std::vector<std::vector<index_t>> share_examples(const labelled_set& set, index_t tasks,
                                                        index_t per_task, bool disjoint, std::uint64_t seed,
                                                        std::string_view where, std::string_view which) {
  const index_t n = set.size();
  if (per_task < 0) throw_invalid_argument(where, concat(which, " examples per task ", per_task, " < 0"));
  if (disjoint && per_task == 0) per_task = n / tasks;
  if (!disjoint && per_task == 0) per_task = n;
  if (per_task == 0)
    throw_invalid_argument(where, concat("the ", which, " set has ", n, " examples, fewer than the ", tasks,
                                         " tasks: an even share would leave every task empty"));
  if (per_task > n)  // checked first: tasks * per_task below cannot overflow
    throw_invalid_argument(where, concat(per_task, " ", which, " examples per task, the set has ", n));
  if (disjoint && tasks * per_task > n)
    throw_invalid_argument(
        where, concat(tasks, " disjoint tasks x ", per_task, " ", which, " examples need ", tasks * per_task,
                      " examples, the set has ", n,
                      " (ask for fewer per task, 0 for an even share, or disjoint = false)"));
  std::vector<std::vector<index_t>> out;
  std::vector<index_t> order(static_cast<std::size_t>(n));
  for (index_t k = 0; k < tasks; ++k) {
    if (k == 0 || !disjoint) {  // disjoint: one shuffle cut into blocks; otherwise a fresh shuffle per task
      std::iota(order.begin(), order.end(), index_t(0));
      random::generator generator(
          random::mix64(seed ^ random::mix64(0xd0a1ULL + static_cast<std::uint64_t>(disjoint ? 0 : k))));
      shuffle(order, generator);
    }
    const index_t first = disjoint ? k * per_task : 0;
    std::vector<index_t> mine(order.begin() + first, order.begin() + first + per_task);
    std::sort(mine.begin(), mine.end());
    out.push_back(std::move(mine));
  }
  return out;
}

/// The stream skeleton every domain-incremental builder shares: validation, the class list 0 .. max label
/// (every task's), the examples of each task, and `transform(task, set)` applied to each task's train and
/// test subsets.
template <class Transform>
task_stream transformed_stream(const labelled_set& train, const labelled_set& test, index_t tasks,
                               const domain_sampling& sampling, std::string name, std::string_view where,
                               const std::vector<std::string>& task_names, Transform&& transform) {
  if (!(train.example_shape == test.example_shape))
    throw_invalid_argument(where, concat("train examples ", train.example_shape.to_string(),
                                         " vs test examples ", test.example_shape.to_string()));
  index_t max_label = -1;
  for (const labelled_set* set : {&train, &test})
    for (index_t label : set->labels) max_label = std::max(max_label, label);
  train.validate(concat(where, " training set"), max_label + 1);  // sizes, labels >= 0, finite features
  test.validate(concat(where, " test set"), max_label + 1);
  task_stream stream;
  stream.name = std::move(name);
  stream.total_classes = max_label + 1;
  std::vector<index_t> classes(static_cast<std::size_t>(stream.total_classes));
  std::iota(classes.begin(), classes.end(), index_t(0));
  const auto train_share = share_examples(train, tasks, sampling.train_per_task, sampling.disjoint,
                                          sampling.seed, where, "training");
  const auto test_share = share_examples(test, tasks, sampling.test_per_task, sampling.disjoint,
                                         random::mix64(sampling.seed + 1), where, "test");
  for (index_t k = 0; k < tasks; ++k) {
    classification_task task;
    task.name = task_names[static_cast<std::size_t>(k)];
    task.classes = classes;
    task.train = subset(train, train_share[static_cast<std::size_t>(k)]);
    task.test = subset(test, test_share[static_cast<std::size_t>(k)]);
    transform(k, task.train);
    transform(k, task.test);
    stream.tasks.push_back(std::move(task));
  }
  return stream;
}

/// Channels, height and width of an image shape [H, W] or [C, H, W]; throws otherwise.
inline std::array<index_t, 3> image_extents(const shape& s, std::string_view where) {
  if (s.rank() != 2 && s.rank() != 3)
    throw_invalid_argument(where,
                           concat("example shape ", s.to_string(), " is not an image [H, W] or [C, H, W]"));
  const std::array<index_t, 3> e =
      s.rank() == 2 ? std::array<index_t, 3>{1, s[0], s[1]} : std::array<index_t, 3>{s[0], s[1], s[2]};
  if (e[0] <= 0 || e[1] <= 0 || e[2] <= 0)
    throw_invalid_argument(where, concat("empty image shape ", s.to_string()));
  return e;
}
}  // namespace detail

/// cos and sin of `degrees`, exact (0, 1, -1) at multiples of 90 degrees.
inline std::array<double, 2> cos_sin_degrees(double degrees) {
  double turn = std::fmod(degrees, 360.0);
  if (turn < 0) turn += 360.0;
  if (turn == 0) return {1, 0};
  if (turn == 90) return {0, 1};
  if (turn == 180) return {-1, 0};
  if (turn == 270) return {0, -1};
  const double radians = turn * std::numbers::pi / 180.0;
  return {std::cos(radians), std::sin(radians)};
}

/// Turns one image of `image_shape` ([H, W] or [C, H, W], row-major) by `degrees` counter-clockwise about its
/// centre with bilinear interpolation (the file header's formula); every channel the same way. `in` and `out`
/// must not overlap.
inline void rotate_image(std::span<const float> in, std::span<float> out, const shape& image_shape,
                         double degrees, float fill) {
  const std::array<index_t, 3> extents = detail::image_extents(image_shape, "rotate_image");
  const index_t channels = extents[0], height = extents[1], width = extents[2];  // captured below
  if (!std::isfinite(degrees))
    throw_invalid_argument("rotate_image", concat("angle ", degrees, " is not finite"));
  if (static_cast<index_t>(in.size()) != image_shape.numel() ||
      static_cast<index_t>(out.size()) != image_shape.numel())
    throw_invalid_argument("rotate_image",
                           concat(in.size(), " input and ", out.size(), " output values for an image of ",
                                  image_shape.to_string()));
  const auto [c, s] = cos_sin_degrees(degrees);
  const double cy = 0.5 * double(height - 1), cx = 0.5 * double(width - 1);
  for (index_t y = 0; y < height; ++y)
    for (index_t x = 0; x < width; ++x) {
      const double dx = double(x) - cx, dy = double(y) - cy;
      const double sx = cx + c * dx - s * dy, sy = cy + s * dx + c * dy;
      const double fx0 = std::floor(sx), fy0 = std::floor(sy);
      const double wx = sx - fx0, wy = sy - fy0;
      const index_t x0 = static_cast<index_t>(fx0), y0 = static_cast<index_t>(fy0);
      for (index_t channel = 0; channel < channels; ++channel) {
        const float* plane = in.data() + channel * height * width;
        const auto at = [&](index_t yy, index_t xx) -> double {
          return yy >= 0 && yy < height && xx >= 0 && xx < width ? double(plane[yy * width + xx])
                                                                 : double(fill);
        };
        const double value = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1)) +
                             wy * ((1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1));
        out[static_cast<std::size_t>(channel * height * width + y * width + x)] = static_cast<float>(value);
      }
    }
}

/// A seeded permutation of [0, pixels) (Fisher-Yates on random::generator).
inline std::vector<index_t> pixel_permutation(index_t pixels, std::uint64_t seed) {
  if (pixels <= 0) throw_invalid_argument("pixel_permutation", concat(pixels, " pixels"));
  std::vector<index_t> order(static_cast<std::size_t>(pixels));
  std::iota(order.begin(), order.end(), index_t(0));
  random::generator generator(random::mix64(seed ^ 0x9e3a7ULL));
  shuffle(order, generator);
  return order;
}

/// out[channel][p] = in[channel][permutation[p]]: the same permutation of the pixel positions in every
/// channel. `channels` planes of permutation.size() pixels each.
inline void permute_pixels(std::span<const float> in, std::span<float> out,
                           std::span<const index_t> permutation, index_t channels = 1) {
  const index_t pixels = static_cast<index_t>(permutation.size());
  if (static_cast<index_t>(in.size()) != channels * pixels || out.size() != in.size())
    throw_invalid_argument("permute_pixels",
                           concat(in.size(), " input and ", out.size(), " output values for ", channels,
                                  " channels of ", pixels, " pixels"));
  for (index_t channel = 0; channel < channels; ++channel)
    for (index_t p = 0; p < pixels; ++p) {
      const index_t source = permutation[static_cast<std::size_t>(p)];
      if (source < 0 || source >= pixels)
        throw_invalid_argument("permute_pixels",
                               concat("permutation entry ", source, " outside [0, ", pixels, ")"));
      out[static_cast<std::size_t>(channel * pixels + p)] =
          in[static_cast<std::size_t>(channel * pixels + source)];
    }
}

/// Rotated-image stream: task k holds its share of `train` and `test` turned by options.angles[k] degrees;
/// every task's classes are 0 .. the largest label (total_classes = largest label + 1). Examples must be
/// images [H, W] or [C, H, W].
inline task_stream rotated_stream(const labelled_set& train, const labelled_set& test,
                                  const rotation_stream_options& options = {}) {
  constexpr std::string_view where = "rotated_stream";
  if (options.angles.empty())
    throw_invalid_argument(where, "no angles: one task per angle needs at least one");
  std::string name = "rotated (";
  std::vector<std::string> task_names;
  for (std::size_t k = 0; k < options.angles.size(); ++k) {
    const double a = options.angles[k];
    if (!std::isfinite(a))
      throw_invalid_argument(where, concat("angle ", k, " is ", a, ", not a finite number of degrees"));
    task_names.push_back(concat("task ", k, " (", a, " degrees)"));
    name += concat(k ? ", " : "", a);
  }
  name += " degrees)";
  if (!std::isfinite(options.fill))
    throw_invalid_argument(where, concat("fill value ", options.fill, " is not finite"));
  const shape image = train.example_shape;
  detail::image_extents(image, where);
  std::vector<float> rotated;
  return detail::transformed_stream(
      train, test, static_cast<index_t>(options.angles.size()),
      {options.train_per_task, options.test_per_task, options.disjoint, options.seed}, std::move(name), where,
      task_names, [&](index_t k, labelled_set& set) {
        const double a = options.angles[static_cast<std::size_t>(k)];
        const index_t size = set.example_size();
        rotated.resize(static_cast<std::size_t>(size));
        for (index_t i = 0; i < set.size(); ++i) {
          const std::span<float> example(set.features.data() + i * size, static_cast<std::size_t>(size));
          rotate_image(example, rotated, image, a, options.fill);
          std::copy(rotated.begin(), rotated.end(), example.begin());
        }
      });
}

/// The permutation task k of a permuted_stream with these options applies (identity for task 0 when asked).
inline std::vector<index_t> task_permutation(const permutation_stream_options& options, index_t task,
                                             index_t pixels) {
  if (task == 0 && options.first_task_identity) {
    std::vector<index_t> identity(static_cast<std::size_t>(pixels));
    std::iota(identity.begin(), identity.end(), index_t(0));
    return identity;
  }
  return pixel_permutation(
      pixels, random::mix64(options.seed ^ random::mix64(0x9e4a11ULL + static_cast<std::uint64_t>(task))));
}

/// Permuted-pixel stream: task k holds its share of `train` and `test` with the pixel positions shuffled by
/// task_permutation(options, k, pixels). Examples of shape [H, W] or [d] permute all their values; [C, H, W]
/// permute the H x W positions, the same way in every channel. Classes as in rotated_stream.
inline task_stream permuted_stream(const labelled_set& train, const labelled_set& test,
                                   const permutation_stream_options& options = {}) {
  constexpr std::string_view where = "permuted_stream";
  if (options.tasks <= 0) throw_invalid_argument(where, concat(options.tasks, " tasks: needs at least one"));
  const shape s = train.example_shape;
  if (s.rank() < 1 || s.rank() > 3 || s.numel() <= 0)
    throw_invalid_argument(where, concat("example shape ", s.to_string(),
                                         " is not a vector [d] or an image [H, W] or [C, H, W]"));
  const index_t channels = s.rank() == 3 ? s[0] : 1, pixels = s.numel() / channels;
  std::vector<std::vector<index_t>> permutations;
  std::vector<std::string> task_names;
  for (index_t k = 0; k < options.tasks; ++k) {
    permutations.push_back(task_permutation(options, k, pixels));
    task_names.push_back(k == 0 && options.first_task_identity
                             ? std::string("task 0 (identity)")
                             : concat("task ", k, " (permutation ", k, ")"));
  }
  std::vector<float> permuted;
  return detail::transformed_stream(
      train, test, options.tasks,
      {options.train_per_task, options.test_per_task, options.disjoint, options.seed},
      concat("permuted (", options.tasks, " tasks, seed ", options.seed, ")"), where, task_names,
      [&](index_t k, labelled_set& set) {
        const index_t size = set.example_size();
        permuted.resize(static_cast<std::size_t>(size));
        for (index_t i = 0; i < set.size(); ++i) {
          const std::span<float> example(set.features.data() + i * size, static_cast<std::size_t>(size));
          permute_pixels(example, permuted, permutations[static_cast<std::size_t>(k)], channels);
          std::copy(permuted.begin(), permuted.end(), example.begin());
        }
      });
}

}  // namespace treelora
