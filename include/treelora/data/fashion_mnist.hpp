// treelora/data/fashion_mnist.hpp: Fashion-MNIST (Xiao et al. 2017) from Debian's dataset-fashion-mnist package
// (/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz) as labelled_sets, and the
// Split Fashion-MNIST task stream (5 tasks of 2 classes).
//   pixel = (byte / 255 - mean) / std,  by default the usual statistics of the training set (0.2860, 0.3530).
#pragma once

#include <array>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string_view>

#include "treelora/data/batching.hpp"
#include "treelora/data/dataset.hpp"
#include "treelora/data/idx.hpp"

namespace treelora {

/// The per-pixel affine normalisation applied after scaling bytes to [0, 1].
struct pixel_normalization {
  float mean = 0.2860f;
  float stddev = 0.3530f;
};

inline constexpr std::string_view fashion_mnist_directory = "/usr/share/datasets/fashion-mnist";
inline constexpr std::array<std::string_view, 10> fashion_mnist_class_names = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/// Images [n, H, W] and labels [n] from two IDX files. `normalization` empty: pixels stay in [0, 1].
/// Throws std::runtime_error for unreadable or malformed files and when the counts differ.
inline labelled_set read_idx_images_and_labels(const std::filesystem::path& images_path,
                                               const std::filesystem::path& labels_path,
                                               std::optional<pixel_normalization> normalization = pixel_normalization{}) {
  const idx_array images = read_idx(images_path, 3);
  const idx_array labels = read_idx(labels_path, 1);
  if (images.dims[0] != labels.dims[0])
    throw_runtime_error("read_idx_images_and_labels", concat("label/image count mismatch: ", images_path.string(), " has ",
                                                              images.dims[0], " images, ", labels_path.string(), " has ",
                                                              labels.dims[0], " labels"));
  if (normalization && !(normalization->stddev > 0))
    throw_invalid_argument("read_idx_images_and_labels", concat("standard deviation ", normalization->stddev, " <= 0"));
  labelled_set out;
  out.example_shape = shape{images.dims[1], images.dims[2]};
  const float mean = normalization ? normalization->mean : 0.0f;
  const float inverse_std = normalization ? 1.0f / normalization->stddev : 1.0f;
  out.features.resize(images.data.size());
  for (std::size_t i = 0; i < images.data.size(); ++i)
    out.features[i] = (static_cast<float>(images.data[i]) / 255.0f - mean) * inverse_std;
  out.labels.assign(labels.data.begin(), labels.data.end());
  return out;
}

/// Mean and standard deviation of the features of a set (for example raw [0, 1] pixels), computed in double.
inline pixel_normalization measure_normalization(const labelled_set& set) {
  double sum = 0, square = 0;
  for (float v : set.features) sum += v;
  const double n = static_cast<double>(std::max<std::size_t>(set.features.size(), 1));
  const double mean = sum / n;
  for (float v : set.features) square += (v - mean) * (v - mean);
  return {static_cast<float>(mean), static_cast<float>(std::sqrt(square / n))};
}

struct fashion_mnist_data {
  labelled_set train;  ///< 60000 images of 28 x 28
  labelled_set test;   ///< 10000 images
};

/// Whether the four files are present in `directory`.
inline bool fashion_mnist_available(const std::filesystem::path& directory = fashion_mnist_directory) {
  std::error_code ec;
  for (auto name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                    "t10k-labels-idx1-ubyte.gz"})
    if (!std::filesystem::exists(directory / name, ec)) return false;
  return true;
}

inline fashion_mnist_data load_fashion_mnist(const std::filesystem::path& directory = fashion_mnist_directory,
                                             std::optional<pixel_normalization> normalization = pixel_normalization{}) {
  return {read_idx_images_and_labels(directory / "train-images-idx3-ubyte.gz", directory / "train-labels-idx1-ubyte.gz",
                                     normalization),
          read_idx_images_and_labels(directory / "t10k-images-idx3-ubyte.gz", directory / "t10k-labels-idx1-ubyte.gz",
                                     normalization)};
}

/// Split Fashion-MNIST: 5 tasks of 2 classes (options.classes_per_task), fixed order 0..9 or a seeded shuffle.
inline task_stream split_fashion_mnist(const fashion_mnist_data& data, const split_options& options = {}) {
  return split_by_classes(data.train, data.test, 10, options,
                          options.shuffle_seed ? concat("split-fashion-mnist (shuffled, seed ", *options.shuffle_seed, ")")
                                               : std::string("split-fashion-mnist"));
}

}  // namespace treelora
