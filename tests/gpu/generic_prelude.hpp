// tests/gpu/generic_prelude.hpp: included first by each generated tests/gpu wrapper, which then includes one
// backend-generic test file (tests/test_*.cpp): the same TEST_CASE_TEMPLATEs instantiated on the CUDA backends,
// compared with the same naive references at the same per-type tolerances as on the CPU.
#pragma once

#include "test_support.hpp"  // first: its TREELORA_TEST_BACKENDS (the CPU list) is replaced below
#include "treelora/backend/cuda_backend.hpp"

#undef TREELORA_TEST_BACKENDS
#define TREELORA_TEST_BACKENDS treelora::cuda_backend<float>, treelora::cuda_backend<double>

// Test-case names end in "<cuda<float>>" / "<cuda<double>>": cuda_test_main.cpp selects them by that suffix.
TYPE_TO_STRING_AS("cuda<float>", treelora::cuda_backend<float>);
TYPE_TO_STRING_AS("cuda<double>", treelora::cuda_backend<double>);
