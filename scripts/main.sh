#!/usr/bin/env bash
# The README's main command: install what is missing, build optimised, run the main job.
# Until the Split Fashion-MNIST comparison lands (issue 5), the main job is the quickstart example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_dependencies.sh
cmake --preset release -DTREELORA_BUILD_TESTS=OFF -DTREELORA_BUILD_BENCHMARKS=OFF
cmake --build --preset release -j "$(nproc)" --target quickstart
./build/release/examples/quickstart "$@"
