#!/usr/bin/env bash
# The README's main command: install what is missing, build optimised, run the main job's two halves:
#   vision: the Split Fashion-MNIST continual-learning comparison (examples/split_fashion_mnist.cpp), into out/
#   text:   the Debian text stream with a pre-trained Llama (examples/debian_text_stream.cpp), into out/text/
# Options for both: --quick (smoke run), --full (the paper-sized protocols), --resume, --seeds LIST.
# --only vision|text runs one half; --vision "ARGS" and --text "ARGS" pass more options to one program
# (see each program's --help).
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
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
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
if [[ $only != text ]]; then
  ./build/release/examples/split_fashion_mnist --out out --cache build/treelora-cache ${common[@]+"${common[@]}"} ${vision[@]+"${vision[@]}"}
fi
if [[ $only != vision ]]; then
  ./build/release/examples/debian_text_stream --out out/text --cache build/treelora-cache ${common[@]+"${common[@]}"} ${text[@]+"${text[@]}"}
fi
