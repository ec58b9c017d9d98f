#!/usr/bin/env bash
# The README's test command: install what is missing, build the library, the tests and the examples (and the CUDA
# backend where nvcc exists), then run the whole test suite with CTest. The benchmarks are not built here (preset
# bench builds them): they have no tests, and compiling them cost about 2.5 of the 30 minutes CI allows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_dependencies.sh
cmake --preset ci
cmake --build --preset ci -j "$(nproc)"
ctest --preset ci -j "$(nproc)"
