// The treelora::compiled library: the host dense decompositions (treelora/linalg/dense.hpp), compiled once here
// with external linkage instead of `inline` in every translation unit that uses them (docs/build_time.md).
#define TREELORA_BUILDING_COMPILED_LIBRARY
#include "treelora/linalg/dense_impl.hpp"
