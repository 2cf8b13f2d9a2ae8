#!/usr/bin/env bash
# Line/branch coverage that the fuzz corpus reaches in the engine's reading code.
#   fuzz/coverage.sh [corpus_root]     (default: build/fuzz/corpus, plus the committed fuzz/corpus)
# Builds each target with clang source-based coverage (no sanitizers) into build/fuzz-cov, replays
# the corpus (-runs=0) and prints llvm-cov's per-file report for the csrc/ files the readers use.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-build/fuzz/corpus}
CXX=${CXX_FUZZ:-clang++}
ver=$($CXX --version | grep -o 'version [0-9]*' | grep -o '[0-9]*')
PROFDATA=$(command -v "llvm-profdata-$ver" || command -v llvm-profdata)
COV=$(command -v "llvm-cov-$ver" || command -v llvm-cov)
OUT=build/fuzz-cov
mkdir -p "$OUT"
srcs=$(ls csrc/*.cc | grep -v '/bindings\.cc$')
flags="-std=c++17 -O1 -g -fprofile-instr-generate -fcoverage-mapping -Icsrc -Ifuzz"
for t in table_fuzzer bundle_fuzzer; do
  if [ ! -x "$OUT/$t" ] || [ -n "$(find csrc fuzz -newer "$OUT/$t" -name '*.cc' -o -newer "$OUT/$t" -name '*.h' | head -1)" ]; then
    echo "  building $OUT/$t" >&2
    $CXX $flags -fsanitize=fuzzer "fuzz/$t.cc" $srcs -lpthread -o "$OUT/$t"
  fi
  rm -f "$OUT/$t".*.profraw
  dirs=("fuzz/corpus/$t")
  [ -d "$root/$t" ] && dirs+=("$root/$t")
  LLVM_PROFILE_FILE="$OUT/$t.%p.profraw" "$OUT/$t" -runs=0 "${dirs[@]}" >"$OUT/$t.replay.log" 2>&1
done
$PROFDATA merge -sparse "$OUT"/*.profraw -o "$OUT/merged.profdata"
files=(csrc/table.cc csrc/table_format.cc csrc/bundle_reader.cc csrc/bundle_proto.cc csrc/coding.cc
       csrc/snappy.cc csrc/tensor_slice.cc csrc/crc32c.cc)
$COV report "$OUT/bundle_fuzzer" -object "$OUT/table_fuzzer" -instr-profile="$OUT/merged.profdata" "${files[@]}"
