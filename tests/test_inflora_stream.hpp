// tests/test_inflora_stream.hpp: what the InfLoRA, O-LoRA and DualLoRA tests share: a small synthetic image stream
// (each class a fixed random 8x8 prototype plus Gaussian noise; task k owns classes 2k, 2k+1), a tiny ViT on it, and
// seeded host matrices (uniform in [-1, 1], and orthonormal columns).
#pragma once

#include <string>
#include <vector>

#include "treelora/core/eigen.hpp"  // first: see there

#include <Eigen/Dense>

#include "treelora/backend/random.hpp"
#include "treelora/data/dataset.hpp"
#include "treelora/models/vit.hpp"

namespace treelora::testing {

inline Eigen::MatrixXd random_matrix(index_t rows, index_t cols, unsigned seed) {
  std::srand(seed);
  return Eigen::MatrixXd::Random(rows, cols);
}
/// The first k columns of a random rotation of R^d.
inline Eigen::MatrixXd orthonormal(index_t d, index_t k, unsigned seed) {
  return Eigen::HouseholderQR<Eigen::MatrixXd>(random_matrix(d, k, seed)).householderQ() * Eigen::MatrixXd::Identity(d, k);
}

inline task_stream prototype_image_stream(index_t tasks, index_t train_per_class, index_t test_per_class,
                                          double noise = 0.6, std::uint64_t seed = 1) {
  const index_t pixels = 64, classes = 2 * tasks;
  random::generator g(random::mix64(seed));
  std::vector<std::vector<float>> prototypes(static_cast<std::size_t>(classes), std::vector<float>(static_cast<std::size_t>(pixels)));
  for (auto& p : prototypes)
    for (auto& v : p) v = static_cast<float>(g.normal());
  task_stream stream{"prototype images", classes, {}};
  for (index_t t = 0; t < tasks; ++t) {
    classification_task task{concat("task ", t), {2 * t, 2 * t + 1}, {shape{8, 8}, {}, {}}, {shape{8, 8}, {}, {}}};
    for (auto [set, per_class] : {std::pair{&task.train, train_per_class}, std::pair{&task.test, test_per_class}})
      for (index_t i = 0; i < per_class; ++i)
        for (index_t c : task.classes) {
          for (index_t k = 0; k < pixels; ++k)
            set->features.push_back(prototypes[std::size_t(c)][std::size_t(k)] + static_cast<float>(noise * g.normal()));
          set->labels.push_back(c);
        }
    stream.tasks.push_back(std::move(task));
  }
  return stream;
}

inline vit_config tiny_vit(index_t classes, std::vector<std::string> targets) {
  return {.image_height = 8, .image_width = 8, .channels = 1, .patch_size = 4, .width = 16, .depth = 2, .heads = 2,
          .mlp_ratio = 2.0, .classes = classes, .lora_targets = std::move(targets), .lora_rank = 4, .seed = 5};
}

}  // namespace treelora::testing
