#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*_fuzzer.cc) against the engine sources in
# csrc/ with AddressSanitizer + UndefinedBehaviorSanitizer, into build/fuzz/.
#   fuzz/build.sh            -> build/fuzz/table_fuzzer, build/fuzz/bundle_fuzzer
# Needs clang with the libFuzzer runtime (Debian: clang + libclang-rt-<ver>-dev).
# Objects are rebuilt only when a source or any header is newer.
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${CXX_FUZZ:-}
if [ -z "$CXX" ]; then
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1; then CXX=$c; break; fi
  done
fi
if [ -z "$CXX" ]; then echo "fuzz/build.sh: clang++ not found" >&2; exit 3; fi

OUT=build/fuzz
OBJ=$OUT/obj
mkdir -p "$OBJ"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CXXFLAGS="-std=c++17 -gline-tables-only -O1 $SAN -Icsrc -Ifuzz -DSAVERKIT_FUZZ"

# clang without the libFuzzer runtime (Debian: libclang-rt-<ver>-dev) cannot link a fuzzer.
if [ ! -f "$OUT/.runtime-ok" ]; then
  probe=$OUT/probe
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe.cc"
  if ! $CXX -fsanitize=fuzzer,address,undefined "$probe.cc" -o "$probe" 2>"$probe.err"; then
    echo "fuzz/build.sh: $CXX cannot link -fsanitize=fuzzer (libFuzzer runtime missing?): $(head -3 "$probe.err")" >&2
    exit 3
  fi
  touch "$OUT/.runtime-ok"
fi

newest_header=$(ls -t csrc/*.h fuzz/*.h | head -1)
compile() {  # src obj extra-flags
  if [ ! -f "$2" ] || [ "$1" -nt "$2" ] || [ "$newest_header" -nt "$2" ] || [ fuzz/build.sh -nt "$2" ]; then
    echo "  CXX $1" >&2
    $CXX $CXXFLAGS $3 -c "$1" -o "$2"
  fi
}
export -f compile
export CXX CXXFLAGS newest_header

engine_srcs=$(ls csrc/*.cc | grep -v -e '/bindings\.cc$' -e '/py_[a-z_]*\.cc$')  # the Python-facing files need Python
# Engine objects are instrumented for coverage but carry no main (fuzzer-no-link).
printf '%s\n' $engine_srcs | xargs -P "$(nproc)" -I{} bash -c \
  'compile {} "'"$OBJ"'/$(basename {} .cc).o" -fsanitize=fuzzer-no-link'
objs=$(for s in $engine_srcs; do echo "$OBJ/$(basename "$s" .cc).o"; done)

for target in fuzz/*_fuzzer.cc; do
  name=$(basename "$target" .cc)
  compile "$target" "$OBJ/$name.o" -fsanitize=fuzzer-no-link
  bin=$OUT/$name
  relink=0
  [ -f "$bin" ] || relink=1
  for o in $OBJ/$name.o $objs; do [ "$o" -nt "$bin" ] && relink=1; done
  if [ $relink = 1 ]; then
    echo "  LD  $bin" >&2
    $CXX $CXXFLAGS -fsanitize=fuzzer "$OBJ/$name.o" $objs -lpthread -o "$bin"
  fi
done
echo "$OUT"
