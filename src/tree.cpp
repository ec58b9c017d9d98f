// The treelora::compiled library: the task trees of TreeLoRA's two modes on the float CPU backend, instantiated once
// here; programs that link the library see them declared `extern template` (tree/task_tree.hpp) and do not compile
// them again (docs/build_time.md).
#define TREELORA_COMPILED  // the CPU kernels come from src/cpu_backend.cpp

#include "treelora/backend/cpu_backend.hpp"
#include "treelora/tree/task_tree.hpp"

namespace treelora {
template class task_tree<cpu_backend<float>>;
template class task_tree<cpu_backend<float>, l1_similarity, median_split>;
}  // namespace treelora
