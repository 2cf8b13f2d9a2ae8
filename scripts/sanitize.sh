#!/usr/bin/env bash
# Runs the test suite against an AddressSanitizer + UndefinedBehaviorSanitizer build of the engine.
#   scripts/sanitize.sh [pytest args]      (default: the whole suite except the TensorFlow interop tests)
# The sanitized extension lives in its own venv (.venv-asan) and build dir (build/asan), so the normal
# ./dev.sh build is untouched. CPython itself is not instrumented: libasan is LD_PRELOADed and leak
# checking is off (CPython's own allocations at exit would drown real reports). UBSan aborts on the
# first error (-fno-sanitize-recover). TensorFlow is not installed there: tests marked `tf` are
# deselected; the fuzz test is skipped (it has its own sanitized build).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv-asan
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip_quiet() { "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v -e "is ignored: it is neither" || true; }; return "${PIPESTATUS[0]}"; }
pip_quiet install -q "scikit-build-core>=0.10" "pybind11>=2.12" "grpcio-tools==1.85.1" "cmake>=3.18" ninja \
  "numpy>=1.24" "protobuf>=7.35.1,<8" "ml_dtypes>=0.4" "pytest>=8" "hypothesis>=6.100" "safetensors>=0.4" ruff
pip_quiet install -q --no-build-isolation --no-deps -e . \
  -Cbuild-dir=build/asan -Ccmake.build-type=RelWithDebInfo -Cinstall.strip=false \
  -Ccmake.define.SAVERKIT_SANITIZE=ON

CXX_COMPILER=$(grep -m1 '^CMAKE_CXX_COMPILER:' build/asan/CMakeCache.txt | cut -d= -f2)
LIBASAN=$("${CXX_COMPILER:-g++}" -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then echo "sanitize.sh: libasan.so not found (got '$LIBASAN')" >&2; exit 3; fi

# libstdc++ too: ASan resolves its __cxa_throw interceptor at start-up, and CPython does not load
# libstdc++ by itself (without it the first C++ exception aborts in asan_interceptors.cpp).
LIBSTDCXX=$("${CXX_COMPILER:-g++}" -print-file-name=libstdc++.so)
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export SAVERKIT_SANITIZED=1   # tests that cannot run under ASan (address-space limits) adapt
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-m "not tf" -q)
exec "$VENV/bin/python" -m pytest "${args[@]}"
