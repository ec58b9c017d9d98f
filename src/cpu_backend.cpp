// The treelora::compiled library (CMake option TREELORA_COMPILED_LIBRARY): the CPU backend's kernels for float and
// double, instantiated once here. Programs that link the library see them declared `extern template` in
// treelora/backend/cpu_backend.hpp and neither parse Eigen nor compile the kernels again (docs/build_time.md).
#include "treelora/backend/cpu_backend_kernels.hpp"

namespace treelora {
template class cpu_backend<float>;
template class cpu_backend<double>;
}  // namespace treelora
