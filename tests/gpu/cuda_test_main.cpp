// tests/gpu/cuda_test_main.cpp: the doctest main of the CUDA test executables.
// Built twice. Plain: runs every test case (each GPU case skips itself without a device).
// With TREELORA_CUDA_GENERIC_SUITE: the executable is a backend-generic test file recompiled with the CUDA backends
// in its type list (generic_prelude.hpp); only the "<cuda<...>>" instances run (the CPU ones already run in the CPU
// suite), and without a device all of them are skipped with one message, so the executable still exits 0.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "cuda_test_support.hpp"

int main(int argc, char** argv) {
  doctest::Context context;
  const bool available = treelora::testing::cuda_available();
  if (!available)
    std::printf("[treelora] no CUDA device (%s): the GPU test cases are skipped\n",
                treelora::testing::cuda_unavailable_reason().c_str());
#if defined(TREELORA_CUDA_GENERIC_SUITE)
  context.addFilter("test-case", "*<cuda<*");
  if (!available) context.addFilter("test-case-exclude", "*");
#endif
  context.applyCommandLine(argc, argv);
  return context.run();
}
