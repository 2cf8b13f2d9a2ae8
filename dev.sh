#!/usr/bin/env bash
# One entry point for people and CI: creates ./.venv on first use, (re)builds
# saverkit into it as an editable install, then runs what was asked.
#   ./dev.sh demo        run the main demo (examples/demo.py)
#   ./dev.sh test [ARGS] run the whole test suite (pytest ARGS)
#   ./dev.sh bench [ARGS] run benchmarks/io_throughput.py
#   ./dev.sh env         only build/install, print the interpreter path
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
what=${1:-}
shift || true

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip_quiet() { "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v -e "is ignored: it is neither" || true; }; return "${PIPESTATUS[0]}"; }

# Build tools live in the venv so rebuilds reuse ./build (no isolated env each time).
pip_quiet install -q "scikit-build-core>=0.10" "pybind11>=2.12" "grpcio-tools==1.85.1" "cmake>=3.18" ninja

case "$what" in
  demo) extras="" ;;
  test) extras="[test]" ;;
  bench) extras="[bench,test]" ;;
  env) extras="[test]" ;;
  *) echo "usage: ./dev.sh {demo|test|bench|env} [args]" >&2; exit 2 ;;
esac
pip_quiet install -q --no-build-isolation -e ".${extras}"

case "$what" in
  demo) exec "$VENV/bin/python" examples/demo.py "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) exec "$VENV/bin/python" benchmarks/io_throughput.py "$@" ;;
  env) echo "$VENV/bin/python" ;;
esac
