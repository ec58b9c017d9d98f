#!/usr/bin/env bash
# The README's main command: install what is missing, build optimised, run the main job's two halves:
#   vision: the Split Fashion-MNIST continual-learning comparison (examples/split_fashion_mnist.cpp), into out/
#   text:   the Debian text stream with a pre-trained Llama (examples/debian_text_stream.cpp), into out/text/
# Options for both: --quick (smoke run), --full (the paper-sized protocols), --resume, --seeds LIST.
# --only vision|text runs one half; --vision "ARGS" and --text "ARGS" pass more options to one program
# (see each program's --help); --processes N (default: the number of cores) splits each half's runs over N
# processes of one thread each (--shard), then collects them (--resume): the same results as one process.
set -euo pipefail
cd "$(dirname "$0")/.."
common=() vision=() text=() only="" processes=$(nproc)
while (($#)); do
  case "$1" in
    --quick|--full|--resume) common+=("$1") ;;
    --seeds) common+=("$1" "$2"); shift ;;
    --only) only="$2"; shift ;;
    --vision) read -r -a vision <<< "$2"; shift ;;
    --text) read -r -a text <<< "$2"; shift ;;
    --processes) processes="$2"; shift ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "scripts/main.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$only" in ""|vision|text) ;; *) echo "scripts/main.sh: --only vision or text, not '$only'" >&2; exit 2 ;; esac
[[ $processes =~ ^[1-9][0-9]*$ ]] || { echo "scripts/main.sh: --processes must be a positive integer, not '$processes'" >&2; exit 2; }
bash scripts/install_dependencies.sh
cmake --preset release -DTREELORA_BUILD_TESTS=OFF -DTREELORA_BUILD_BENCHMARKS=OFF -DTREELORA_BUILD_EXAMPLES=ON
targets=()
[[ $only != text ]] && targets+=(split_fashion_mnist)
[[ $only != vision ]] && targets+=(debian_text_stream)
cmake --build --preset release -j "$(nproc)" --target "${targets[@]}"
# One half: its cached base model first (--prepare-only), then its runs split over $processes processes of one
# thread each (--shard k/N: every run is independent and deterministic, and on this project's 2-core machine two
# one-thread processes train twice as fast as one, where a second thread gains about half), then every run read back
# from its checkpoint and reported (--resume): the results of one process, bit for bit. The first shard's progress
# shows here; every shard's output is in OUT/logs/.
run_half() {
  local program=$1 out=$2
  shift 2
  "$program" --out "$out" "$@" --prepare-only
  if ((processes == 1)); then
    "$program" --out "$out" "$@"
    return
  fi
  mkdir -p "$out/logs"
  local pids=() k status=0
  for ((k = 0; k < processes; ++k)); do
    if ((k == 0)); then
      "$program" --out "$out" --threads 1 "$@" --shard "$k/$processes" > "$out/logs/shard-$k.log" &
    else
      "$program" --out "$out" --threads 1 "$@" --shard "$k/$processes" > "$out/logs/shard-$k.log" 2>&1 &
    fi
    pids+=($!)
  done
  for k in "${pids[@]}"; do wait "$k" || status=$?; done
  if ((status != 0)); then
    echo "scripts/main.sh: a shard of $(basename "$program") ended with status $status (see $out/logs/)" >&2
    return "$status"
  fi
  "$program" --out "$out" "$@" --resume
}
if [[ $only != text ]]; then
  run_half ./build/release/examples/split_fashion_mnist out --cache build/treelora-cache ${common[@]+"${common[@]}"} ${vision[@]+"${vision[@]}"}
fi
if [[ $only != vision ]]; then
  run_half ./build/release/examples/debian_text_stream out/text --cache build/treelora-cache ${common[@]+"${common[@]}"} ${text[@]+"${text[@]}"}
fi
