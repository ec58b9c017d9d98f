// treelora/optim/sparse_update.hpp: which parameters one optimiser step touches: the output of a sparse-update
// rule, read by adam::step(mask). Parameters are identified by the address of their value tensor.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "treelora/tensor/tensor.hpp"

namespace treelora {

template <Backend B>
struct sparse_update {
  std::vector<const tensor<B>*> skipped;                                      ///< not updated at all
  std::vector<std::pair<const tensor<B>*, std::vector<index_t>>> sparse;      ///< updated at these entries only

  void clear() {
    skipped.clear();
    for (auto& [tensor, entries] : sparse) entries.clear();
    sparse.clear();
  }
  bool skips(const tensor<B>* t) const { return std::find(skipped.begin(), skipped.end(), t) != skipped.end(); }
  const std::vector<index_t>* entries_of(const tensor<B>* t) const {
    for (const auto& [key, entries] : sparse)
      if (key == t) return &entries;
    return nullptr;
  }
  /// Entries updated this step, over the parameters listed (dense parameters are not counted).
  index_t active_entries() const {
    index_t n = 0;
    for (const auto& [key, entries] : sparse) n += static_cast<index_t>(entries.size());
    return n;
  }
};

}  // namespace treelora
