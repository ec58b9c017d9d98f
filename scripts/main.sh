#!/usr/bin/env bash
# The README's main command: install what is missing, build optimised, run the main job: the Split Fashion-MNIST
# continual-learning comparison (examples/split_fashion_mnist.cpp). Extra arguments go to the program
# (--quick, --full, --out DIR, --methods ..., --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_dependencies.sh
cmake --preset release -DTREELORA_BUILD_TESTS=OFF -DTREELORA_BUILD_BENCHMARKS=OFF -DTREELORA_BUILD_EXAMPLES=ON
cmake --build --preset release -j "$(nproc)" --target split_fashion_mnist
./build/release/examples/split_fashion_mnist --out out --cache build/treelora-cache "$@"
