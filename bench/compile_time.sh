#!/usr/bin/env bash
# Compile time and compiler memory of representative translation units, one core, the release flags of the README's
# preset (-O3 -march=native -fopenmp, OpenBLAS GEMM), header-only and against treelora::compiled (TREELORA_COMPILED),
# in the same run. Usage: bash bench/compile_time.sh [file.cpp ...]   (default: the programs of docs/build_time.md)
# The compiled library's own units are timed once at the end (they are built once, not per edit).
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX:-c++}
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(examples/task_tree.cpp examples/bandit_playground.cpp examples/quickstart.cpp examples/split_fashion_mnist.cpp)
fi
flags=(-DTREELORA_USE_CBLAS -Iinclude -isystem /usr/include/eigen3 -isystem /usr/include/x86_64-linux-gnu/openblas-pthread
       -O3 -DNDEBUG -march=native -fopenmp -std=gnu++20)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
measure() {  # prints "seconds MiB" for one compile (user + system time, peak resident memory)
  /usr/bin/time -f '%U %S %M' -o "$out/time" "$CXX" "${flags[@]}" "$@" -o "$out/unit.o"
  read -r user sys mem < "$out/time"
  printf '%.1f %d' "$(echo "$user + $sys" | bc)" "$((mem / 1024))"
}
printf '| %-34s | %12s | %12s | %14s | %14s | %6s |\n' "translation unit" "header-only s" "compiled s" "header-only MiB" "compiled MiB" "ratio"
printf '|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" "--------------" "--------------" "----------------" "----------------" "--------"
for f in "${files[@]}"; do
  read -r hs hm <<< "$(measure -c "$f")"
  read -r cs cm <<< "$(measure -DTREELORA_COMPILED -c "$f")"
  printf '| %-34s | %13s | %12s | %14s | %14s | %6.2f |\n' "$f" "$hs" "$cs" "$hm" "$cm" "$(echo "$cs / $hs" | bc -l)"
done
for f in src/*.cpp; do
  read -r s m <<< "$(measure -c "$f")"
  printf '| %-34s | %13s | %12s | %14s | %14s | %6s |\n' "$f (library, once)" "" "$s" "" "$m" ""
done
