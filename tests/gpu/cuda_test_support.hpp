// tests/gpu/cuda_test_support.hpp: what the CUDA tests share: whether a device is present (asked once), the skip
// that every GPU test case starts with, and CPU/GPU tensor pairs filled from the same host data.
#pragma once

#include <doctest/doctest.h>

#include <cuda_runtime_api.h>

#include <string>
#include <utility>
#include <vector>

#include "test_support.hpp"
#include "treelora/backend/cuda/context.hpp"

namespace treelora::testing {

/// Empty when a CUDA device is usable, else why not (asked once per process).
inline const std::string& cuda_unavailable_reason() {
  static const std::string reason = [] {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status);
    }
    if (count == 0) return std::string("cudaGetDeviceCount found 0 devices");
    return std::string();
  }();
  return reason;
}
inline bool cuda_available() { return cuda_unavailable_reason().empty(); }

}  // namespace treelora::testing

/// First statement of every test case that needs a device: without one the case reports why and passes.
#define TREELORA_SKIP_WITHOUT_CUDA_DEVICE()                                                             \
  do {                                                                                                  \
    if (!::treelora::testing::cuda_available()) {                                                       \
      MESSAGE("skipped: no CUDA device (" << ::treelora::testing::cuda_unavailable_reason() << ")");    \
      return;                                                                                           \
    }                                                                                                   \
  } while (false)
