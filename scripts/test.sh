#!/usr/bin/env bash
# The README's test command: install what is missing, build everything (tests, examples, benchmarks, and the
# CUDA backend where nvcc exists), then run the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_dependencies.sh
cmake --preset ci
cmake --build --preset ci -j "$(nproc)"
ctest --preset ci -j "$(nproc)"
