#!/usr/bin/env bash
# The README's main command: install what is missing, build optimised, run the main job's two halves:
#   vision: the Split Fashion-MNIST continual-learning comparison (examples/split_fashion_mnist.cpp), into out/
#   text:   the Debian text stream with a pre-trained Llama (examples/debian_text_stream.cpp), into out/text/
# Options for both: --quick (smoke run), --full (the paper-sized protocols), --resume, --seeds LIST.
# --only vision|text runs one half; --vision "ARGS" and --text "ARGS" pass more options to one program
# (see each program's --help). While the vision half runs (on one core), the other core builds the text half and
# pre-trains its base model.
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
build() { cmake --build --preset release -j "$1" --target "${@:2}"; }
run_vision() {
  ./build/release/examples/split_fashion_mnist --out out --cache build/treelora-cache ${common[@]+"${common[@]}"} ${vision[@]+"${vision[@]}"}
}
run_text() {
  ./build/release/examples/debian_text_stream --out out/text --cache build/treelora-cache ${common[@]+"${common[@]}"} ${text[@]+"${text[@]}"} "$@"
}
case "$only" in
  vision) build "$(nproc)" split_fashion_mnist && run_vision ;;
  text) build "$(nproc)" debian_text_stream && run_text ;;
  *)
    # The vision program runs on one thread (its products are too small for two), so while it runs the other core
    # builds the text program and pre-trains its base model into the cache (one thread: the same model, bit for bit,
    # as with two); the text half then runs on both cores.
    build "$(nproc)" split_fashion_mnist
    mkdir -p out/text
    (build 1 debian_text_stream && run_text --prepare-only --threads 1) > out/text/prepare.log 2>&1 &
    prepare_pid=$!
    trap 'kill "$prepare_pid" 2> /dev/null || true' EXIT
    echo "scripts/main.sh: building the text half and preparing its base model alongside (out/text/prepare.log)"
    run_vision
    prepare_status=0
    wait "$prepare_pid" || prepare_status=$?
    trap - EXIT
    if ((prepare_status != 0)); then
      echo "scripts/main.sh: preparing the text half failed (status $prepare_status); the end of out/text/prepare.log:" >&2
      tail -n 20 out/text/prepare.log >&2
      exit "$prepare_status"
    fi
    run_text
    ;;
esac
