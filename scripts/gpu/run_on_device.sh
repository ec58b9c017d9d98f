#!/usr/bin/env bash
# One GPU session's checks, prepared to run in a few minutes: run from the repository root on a machine with an
# NVIDIA GPU, with .gpu/ (made by scripts/gpu/pack.sh) beside the sources. In this order, the most needed first, each
# step under its own time limit so that one hang costs only its step:
#   1. the machine: GPU, driver, CUDA, Python packages; whether the packed executables load here;
#   2. test_cuda_backend: every kernel against the CPU backend, then every test_cuda_generic_<name>;
#   3. test_nccl with one rank (two need two GPUs);
#   4. bench_cuda (Google Benchmark, JSON) and the PyTorch + PEFT reference on the same shapes;
#   5. interoperability against the real libraries: the library's PEFT export loaded by peft, and transformers'
#      own Llama, GPT-2 and ViT reading the committed checkpoints and giving the logits the tests hold the library to.
# Everything is written under $OUT (default: gpu-results/): device.log (all output), summary.txt (one line per step),
# bench_cuda.json, pytorch.txt. A step that fails does not stop the others; the exit status counts the failures.
# Usage: bash scripts/gpu/run_on_device.sh [step...]      (steps: machine tests nccl bench interop; default: all)
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out=${OUT:-$root/gpu-results}
mkdir -p "$out"
log="$out/device.log"
summary="$out/summary.txt"
: >"$summary"
steps=("$@")
((${#steps[@]})) || steps=(machine tests nccl bench interop)
failures=0
started=$(date +%s)

say() { echo "$*" | tee -a "$summary" "$log"; }
wants() { [[ " ${steps[*]} " == *" $1 "* ]]; }
# run NAME SECONDS COMMAND...: runs the command under a time limit, its output into the log, one summary line.
run() {
  local name=$1 limit=$2 begin rc
  shift 2
  begin=$(date +%s)
  echo "===== $name ($*), limit ${limit}s" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local took=$(($(date +%s) - begin))
  if ((rc == 0)); then
    say "PASS $name (${took}s)"
  else
    ((rc == 124 || rc == 137)) && say "TIMEOUT $name after ${took}s" || say "FAIL $name: exit $rc (${took}s)"
    failures=$((failures + 1))
  fi
  return $rc
}

[[ -d .gpu/bin ]] || { say "FAIL: no .gpu/bin here: run scripts/gpu/pack.sh where the sources were built, carry .gpu"; exit 1; }
# The tests open their data through the source path they were compiled with: make it point here.
source_dir=$(sed -n 's/^source_dir=//p' .gpu/manifest)
if [[ -n "$source_dir" && "$source_dir" != "$root" && ! -e "$source_dir" ]]; then
  mkdir -p "$(dirname "$source_dir")" && ln -s "$root" "$source_dir"
fi
# CUDA's libraries come from this machine: its toolkit, or the NVIDIA wheels of its Python.
cuda_libs=$(
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [[ -d $dir ]] && echo "$dir"; done
  python3 - 2>/dev/null <<'EOF'
import glob, os, site
for base in site.getsitepackages():
    for lib in glob.glob(os.path.join(base, "nvidia", "*", "lib")):
        print(lib)
EOF
)
export LD_LIBRARY_PATH="$root/.gpu/lib:$(echo "$cuda_libs" | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
bin=.gpu/bin

if wants machine; then
  {
    echo "===== machine"
    cat .gpu/manifest
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nvcc --version 2>/dev/null | tail -n 2
    ldd --version | head -n 1
    lscpu | grep -E 'Model name|^CPU\(s\)'
    python3 -c "import torch, transformers, peft, safetensors; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| peft', peft.__version__, '| safetensors', safetensors.__version__)"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  } >>"$log" 2>&1
  say "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -n 1)"
  for executable in "$bin"/*; do
    if ldd "$executable" | grep -q "not found"; then
      say "FAIL $(basename "$executable") does not load here: $(ldd "$executable" | grep 'not found' | tr -s ' \t\n' ' ')"
      failures=$((failures + 1))
    fi
  done
fi

if wants tests; then
  run test_cuda_backend 240 "$bin/test_cuda_backend"
  for executable in "$bin"/test_cuda_generic_*; do
    [[ -e "$executable" ]] && run "$(basename "$executable")" 180 "$executable"
  done
fi

if wants nccl && [[ -x "$bin/test_nccl" ]]; then
  # One rank as an MPI singleton (no mpirun needed where Open MPI's singleton start works).
  run test_nccl_1_rank 120 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$bin/test_nccl"
fi

if wants bench; then
  run bench_cuda 300 "$bin/bench_cuda" --benchmark_format=console --benchmark_out="$out/bench_cuda.json" \
    --benchmark_out_format=json --benchmark_min_warmup_time=0.2
  run pytorch_gpu_reference 300 env PYTHONUNBUFFERED=1 bash -c \
    "set -o pipefail; python3 bench/gpu/pytorch_gpu_reference.py --repeats 30 | tee '$out/pytorch.txt'"
fi

if wants interop; then
  peft_dir=$(mktemp -d)
  if run export_for_peft 120 env TREELORA_PEFT_CHECK_DIR="$peft_dir/check" "$bin/test_peft" -tc="a Hugging Face folder*"; then
    run peft_loads_our_export 180 python3 tests/data/peft/check_with_peft.py "$peft_dir/check"
  fi
  run transformers_language_models 180 python3 tests/data/language_models/check_with_transformers.py
  run transformers_vit 120 python3 tests/data/hf_vit/check_with_transformers.py
fi

say "done: $failures failing step(s) in $(($(date +%s) - started))s"
exit $((failures > 0))
