// treelora/tree/tree_node.hpp: one node of a task tree, free of any backend.
// The bandits read a tree as a span of these (nodes[0] is the root), so they never see tensors.
#pragma once

#include <vector>

#include "treelora/core/error.hpp"

namespace treelora {

/// A node of a task tree. `tasks` are entry ids (= task ids unless a storage budget merged entries), in
/// the order the released code keeps them; every internal node has two non-empty children.
struct tree_node {
  std::vector<index_t> tasks;  ///< entries under this node, in order
  index_t depth = 0;           ///< distance from the root when the node was built
  index_t module = -1;         ///< module whose vectors split this node (internal nodes), else -1
  bool leaf = true;
  double threshold = 0.0;      ///< the split threshold (the median in reference mode); internal nodes only
  index_t left = -1, right = -1, parent = -1;  ///< indices into the node array; -1 = none
};

}  // namespace treelora
