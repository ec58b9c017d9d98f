#!/usr/bin/env bash
# The README's main command: install what is missing, build optimised, run the main job's two halves:
#   vision: the Split Fashion-MNIST continual-learning comparison (examples/split_fashion_mnist.cpp), into out/
#   text:   the Debian text stream with a pre-trained Llama (examples/debian_text_stream.cpp), into out/text/
# Options for both: --quick (smoke run), --full (the paper-sized protocols), --resume, --seeds LIST.
# --only vision|text runs one half; --vision "ARGS" and --text "ARGS" pass more options to one program
# (see each program's --help). Both halves run at once (the vision program uses one core); the text half's tables
# are printed after the vision half's.
set -euo pipefail
cd "$(dirname "$0")/.."
common=() vision=() text=() only=""
while (($#)); do
  case "$1" in
    --quick|--full|--resume) common+=("$1") ;;
    --seeds) common+=("$1" "$2"); shift ;;
    --only) only="$2"; shift ;;
    --vision) read -r -a vision <<< "$2"; shift ;;
    --text) read -r -a text <<< "$2"; shift ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "scripts/main.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$only" in ""|vision|text) ;; *) echo "scripts/main.sh: --only vision or text, not '$only'" >&2; exit 2 ;; esac
bash scripts/install_dependencies.sh
cmake --preset release -DTREELORA_BUILD_TESTS=OFF -DTREELORA_BUILD_BENCHMARKS=OFF -DTREELORA_BUILD_EXAMPLES=ON
targets=()
[[ $only != text ]] && targets+=(split_fashion_mnist)
[[ $only != vision ]] && targets+=(debian_text_stream)
cmake --build --preset release -j "$(nproc)" --target "${targets[@]}"
run_vision() {
  ./build/release/examples/split_fashion_mnist --out out --cache build/treelora-cache ${common[@]+"${common[@]}"} ${vision[@]+"${vision[@]}"}
}
run_text() {
  ./build/release/examples/debian_text_stream --out out/text --cache build/treelora-cache ${common[@]+"${common[@]}"} ${text[@]+"${text[@]}"}
}
case "$only" in
  vision) run_vision ;;
  text) run_text ;;
  *)
    # Both halves at once: the vision program runs on one thread (its products are too small for two), so the text
    # half takes the other core meanwhile. Its tables go to out/text/main.log and are printed when it ends, its
    # progress lines to out/text/progress.log.
    mkdir -p out/text
    run_text > out/text/main.log 2> out/text/progress.log &
    text_pid=$!
    trap 'kill "$text_pid" 2> /dev/null || true' EXIT
    echo "scripts/main.sh: the text half runs alongside the vision half (progress: out/text/progress.log)"
    run_vision
    echo
    echo "scripts/main.sh: the vision half is done; waiting for the text half (progress: out/text/progress.log)"
    text_status=0
    wait "$text_pid" || text_status=$?
    trap - EXIT
    echo
    echo "=== the text half (out/text/main.log) ==="
    cat out/text/main.log
    if ((text_status != 0)); then
      echo "scripts/main.sh: the text half failed (status $text_status); the end of out/text/progress.log:" >&2
      tail -n 20 out/text/progress.log >&2
      exit "$text_status"
    fi
    ;;
esac
