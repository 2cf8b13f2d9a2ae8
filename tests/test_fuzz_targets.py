"""Coverage-guided fuzzing of the SSTable parser and the bundle reader (fuzz/, scripts/fuzz.sh).

Runs both libFuzzer targets (ASan + UBSan) for 60 s in CI (CI=true) and 10 s otherwise, starting
from the committed seed corpus, which also holds every input that once crashed (regressions).
Skipped, with the reason, when clang or its libFuzzer runtime is missing (.ci/run installs them).
"""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_fuzz_targets_find_no_crash_leak_hang_or_huge_allocation(tmp_path):
    if os.environ.get("SAVERKIT_SANITIZED"):
        pytest.skip("the fuzz targets have their own sanitized build")
    if not any(shutil.which(c) for c in ("clang++", "clang++-14", "clang++-15", "clang++-16")):
        pytest.skip("clang++ not installed (Debian: apt-get install clang libclang-rt-14-dev)")
    seconds = 60 if os.environ.get("CI") == "true" else 10
    # a fresh working corpus: every run starts from the committed seeds, whatever ran here before
    env = dict(os.environ, FUZZ_WORK=str(tmp_path))
    r = subprocess.run([str(ROOT / "scripts" / "fuzz.sh"), str(seconds)], capture_output=True, text=True,
                       timeout=seconds + 900, env=env)
    if r.returncode == 3 and "cannot link -fsanitize=fuzzer" in r.stderr:
        pytest.skip(r.stderr.strip().splitlines()[-1])
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    runs = json.loads((ROOT / "build" / "fuzz" / "last-run.json").read_text())
    assert {x["target"] for x in runs} == {"table_fuzzer", "bundle_fuzzer"}
    for x in runs:
        assert x["exit"] == 0
        assert x["executions"] > 50 * x["seconds"], x  # it really ran
        assert x["cov"] > 100, x  # and reached the parser, not just the harness
