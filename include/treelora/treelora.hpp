// treelora/treelora.hpp: the umbrella header. Include this, or one component header.
#pragma once

#include "treelora/version.hpp"
#include "treelora/core/error.hpp"
#include "treelora/backend/backend.hpp"
#include "treelora/backend/random.hpp"
#include "treelora/backend/cpu_backend.hpp"
#include "treelora/tensor/shape.hpp"
#include "treelora/tensor/tensor.hpp"
#include "treelora/tensor/ops.hpp"
#include "treelora/layers/layer.hpp"
#include "treelora/layers/linear.hpp"
#include "treelora/layers/loss.hpp"
#include "treelora/layers/rms_norm.hpp"
#include "treelora/layers/rotary_embedding.hpp"
#include "treelora/lora/factorization.hpp"
#include "treelora/lora/standard_lora.hpp"
#include "treelora/lora/lora_layer.hpp"
#include "treelora/optim/sgd.hpp"
#include "treelora/optim/adam.hpp"
#include "treelora/optim/clip.hpp"
#include "treelora/tree.hpp"
#include "treelora/bandit.hpp"
#include "treelora/layers/cross_entropy.hpp"
#include "treelora/optim/sparse_update.hpp"
#include "treelora/sparse/sparse_rules.hpp"
#include "treelora/metrics/continual_metrics.hpp"
#include "treelora/models.hpp"
#include "treelora/models/mlp.hpp"
#include "treelora/data.hpp"
#include "treelora/data/synthetic.hpp"
#include "treelora/strategy/strategy.hpp"
#include "treelora/strategy/callbacks.hpp"
#include "treelora/strategy/runner.hpp"
#include "treelora/strategy/seq_lora.hpp"
#include "treelora/strategy/tree_lora.hpp"
// Opt-in (not included here: they include Eigen's dense algebra, which a program that does not use them should not
// have to parse; docs/build_time.md):
//   treelora/tensor/eigen_interop.hpp (zero-copy views between CPU tensors and Eigen),
//   treelora/memory/gpm.hpp, treelora/lora/inflora.hpp, treelora/lora/olora.hpp, treelora/lora/duallora.hpp,
//   treelora/strategy/inflora.hpp, treelora/strategy/olora.hpp, treelora/strategy/duallora.hpp
