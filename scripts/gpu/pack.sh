#!/usr/bin/env bash
# Prepares a GPU session on a machine without a GPU. A GPU machine is lent for minutes, not the half hour a build
# takes on two cores, and it may lack the Debian libraries the tests link (Eigen is header-only, but OpenBLAS,
# doctest, Google Benchmark, SentencePiece, PCRE2 are not), so everything it runs is built here:
#   - preset gpu (build/gpu): Release, no -march=native (the GPU machine's processor is another one), device code for
#     sm_90, Eigen's GEMM for the CPU reference (OpenBLAS alone is 36 MB, more than half of what may be carried),
#     the CUDA tests, every backend-generic test recompiled for the CUDA backends, bench_cuda, and the CPU
#     programs the interoperability checks need (test_peft);
#   - the executables go to .gpu/bin, the shared libraries they need to .gpu/lib (git-ignored), except what a CUDA
#     machine has itself: the C library and the CUDA runtime, cuBLAS and NCCL (its toolkit's or its Python's).
# Then, on the GPU machine, from the repository root with .gpu carried beside it:
#   bash scripts/gpu/run_on_device.sh
# Usage: bash scripts/gpu/pack.sh          (JOBS=n to change the build's parallelism; default: every core)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
jobs=${JOBS:-$(nproc)}

cmake --preset gpu >/dev/null
mapfile -t targets < <(ninja -C build/gpu -t targets all |
  sed -n 's/^\(test_cuda_[a-z0-9_]*\|test_nccl\|bench_cuda\|test_peft\): phony$/\1/p' | sort -u)
if ((${#targets[@]} == 0)) || ! printf '%s\n' "${targets[@]}" | grep -qx test_cuda_backend; then
  echo "pack.sh: the gpu preset has no CUDA test targets (is nvcc installed? see build/gpu/CMakeCache.txt)" >&2
  exit 1
fi
echo "pack.sh: building ${#targets[@]} targets with $jobs jobs: ${targets[*]}"
ninja -C build/gpu -j "$jobs" "${targets[@]}"

rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
for target in "${targets[@]}"; do
  executable=$(find build/gpu -type f -name "$target" -perm -u+x | head -n 1)
  [[ -n "$executable" ]] || { echo "pack.sh: built $target but found no executable" >&2; exit 1; }
  cp "$executable" .gpu/bin/
done

# Shared libraries: everything ldd resolves except the C library's own and the CUDA ones.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libcuda\.so|libcudart|libcublas|libcublasLt|libnccl)'
for executable in .gpu/bin/*; do
  ldd "$executable" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r name path; do
    [[ "$name" =~ $skip ]] && continue
    [[ -e ".gpu/lib/$name" ]] || cp -L "$path" ".gpu/lib/$name"
  done
  if ldd "$executable" | grep -q "not found"; then
    echo "pack.sh: $executable has unresolved libraries here:" >&2
    ldd "$executable" | grep "not found" >&2
    exit 1
  fi
done

# What the GPU machine needs to know: where the sources were (the tests open their data through that path), the
# newest C library symbol the executables ask for, and what was packed.
glibc=$(for f in .gpu/bin/* .gpu/lib/*; do objdump -T "$f" 2>/dev/null; done |
  grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sort -uV | tail -n 1)
{
  echo "source_dir=$root"
  echo "commit=$(git rev-parse HEAD)$(git diff --quiet HEAD || echo '+uncommitted')"
  echo "packed=$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(nvcc --version | tail -n 1)"
  echo "needs=$glibc"
} >.gpu/manifest
size=$(du -sm .gpu | cut -f1)
echo "pack.sh: .gpu holds $(ls .gpu/bin | wc -l) executables and $(ls .gpu/lib | wc -l) libraries, $size MiB; needs $glibc"
if ((size > 56)); then
  echo "pack.sh: $size MiB is too much to carry with the repository (64 MiB in all)" >&2
  exit 1
fi
