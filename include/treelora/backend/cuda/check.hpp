// treelora/backend/cuda/check.hpp: the one error path of the CUDA backend.
// Every CUDA runtime and cuBLAS call goes through TREELORA_CUDA_CHECK or TREELORA_CUBLAS_CHECK, which throw
// std::runtime_error("treelora::cuda: <expression> failed at <file>:<line>: <error name>: <error text>").
// Both macros are overridable (define them before including any treelora CUDA header), as in Eigen's GPU module.
// This header needs only the CUDA toolkit's C headers, so plain C++ translation units may include it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "treelora/core/error.hpp"

namespace treelora::cuda_detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* expression, const char* file, int line) {
  throw_runtime_error("cuda", concat(expression, " failed at ", file, ":", line, ": ", cudaGetErrorName(status), ": ",
                                     cudaGetErrorString(status)));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* expression, const char* file, int line) {
  throw_runtime_error("cuda", concat(expression, " failed at ", file, ":", line, ": ", cublasGetStatusName(status), ": ",
                                     cublasGetStatusString(status)));
}

}  // namespace treelora::cuda_detail

#ifndef TREELORA_CUDA_CHECK
/// Evaluates a CUDA runtime call once; throws std::runtime_error with the error name, text and call site.
#define TREELORA_CUDA_CHECK(expression)                                                                  \
  do {                                                                                                   \
    const cudaError_t treelora_cuda_status_ = (expression);                                              \
    if (treelora_cuda_status_ != cudaSuccess)                                                            \
      ::treelora::cuda_detail::throw_cuda_error(treelora_cuda_status_, #expression, __FILE__, __LINE__); \
  } while (false)
#endif

#ifndef TREELORA_CUBLAS_CHECK
/// Evaluates a cuBLAS call once; throws std::runtime_error with the status name, text and call site.
#define TREELORA_CUBLAS_CHECK(expression)                                                                  \
  do {                                                                                                     \
    const cublasStatus_t treelora_cublas_status_ = (expression);                                           \
    if (treelora_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::treelora::cuda_detail::throw_cublas_error(treelora_cublas_status_, #expression, __FILE__, __LINE__); \
  } while (false)
#endif

/// After a kernel launch: a bad configuration (grid too large, no device image for this GPU) surfaces here.
#define TREELORA_CUDA_CHECK_LAUNCH() TREELORA_CUDA_CHECK(cudaGetLastError())
