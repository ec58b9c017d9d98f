#!/usr/bin/env bash
# Installs the Debian packages treelora needs that this machine does not have yet (and nothing else).
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config libeigen3-dev libopenblas-dev zlib1g-dev doctest-dev libbenchmark-dev
          nlohmann-json3-dev python3-numpy  # JSON; python3-numpy only for tests/data/safetensors/make_golden.py
          dataset-fashion-mnist
          clang libclang-rt-dev  # the libFuzzer harnesses (tests/fuzz/): clang++ and its libFuzzer/ASan/UBSan runtimes
          libpcre2-dev libsentencepiece-dev sentencepiece  # tokenizers: PCRE2 for byte-level BPE's Unicode regexes,
                                                           # SentencePiece's library and spm_encode (tests' oracle)
          python3-regex  # only for tests/data/tokenizer/make_golden.py (the GPT-2 encoder.py oracle)
          libopenmpi-dev openmpi-bin  # MPI: treelora::mpi (distributed/mpi.hpp) and mpiexec for tests/mpi
          # the text task stream's sources (data/text_tasks.hpp, docs/text-benchmark.md); coreutils' fr catalogue,
          # manpages and libpython3-stdlib are usually present already; dict-gcide: the base model's pre-training text
          wordnet-base libpython3-stdlib trans-de-en dict-foldoc dict-gcide fortunes fortunes-min fortunes-de fortunes-es
          fortunes-it fortunes-ru coreutils manpages manpages-dev bsdgames)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "treelora: installing missing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "treelora: all Debian dependencies are present"
fi
