# tests/gpu/treelora_cuda.cmake: how treelora's own CUDA targets are compiled (tests/gpu and bench/gpu include this).
# nvcc compiles the .cu files: C++20, the device code for TREELORA_CUDA_ARCHITECTURES, host warnings as on the CPU
# targets. Eigen is host-only here (EIGEN_NO_CUDA): the CPU backend runs beside the CUDA one as the reference.
include_guard(GLOBAL)

# "native" needs a GPU at configure time; 90 = H100/H200 (add 80 for A100). One architecture keeps CI's nvcc time down.
set(TREELORA_CUDA_ARCHITECTURES "90" CACHE STRING "CUDA architectures of treelora's CUDA tests and benchmarks")
# The generic wrappers recompile every backend-generic test with nvcc (minutes each on 2 cores). Where no GPU is
# visible at configure time they could only skip, so they are built by default only where one is.
execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE treelora_no_gpu OUTPUT_QUIET ERROR_QUIET)
if(treelora_no_gpu EQUAL 0)
  set(treelora_gpu_visible ON)
else()
  set(treelora_gpu_visible OFF)
endif()
option(TREELORA_CUDA_GENERIC_TESTS "Recompile every backend-generic test file with the CUDA backends in its type list"
       ${treelora_gpu_visible})

function(treelora_configure_cuda_target target)
  treelora_configure_target(${target})
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES "${TREELORA_CUDA_ARCHITECTURES}")
  target_compile_definitions(${target} PRIVATE EIGEN_NO_CUDA)
  target_compile_options(${target} PRIVATE
    # Spelled out: CMake < 3.26 has no CUDA20 dialect for nvcc (CUDA_STANDARD 20 fails to configure there).
    $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
    # GCC 12 at -O3 reports a false -Wrestrict inside std::string (GCC bug 105329), as on the CPU targets.
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<CXX_COMPILER_ID:GNU>>:-Xcompiler=-Wno-restrict>)
  if(TREELORA_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Werror>)
  endif()
  if(TREELORA_OPENMP)
    # The imported OpenMP target adds -fopenmp to CXX sources only; the CPU backend inside a .cu file needs it too.
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fopenmp>)
  endif()
  target_link_libraries(${target} PRIVATE CUDA::cudart CUDA::cublas)
endfunction()
