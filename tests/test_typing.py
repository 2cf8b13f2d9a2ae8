"""The package type-checks: mypy over python/saverkit with the [tool.mypy] settings of pyproject.toml."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Under build/ (git-ignored, per checkout): a clean clone starts cold (~10 s), later runs take ~2 s.
CACHE = ROOT / "build" / "mypy_cache"


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e .[test])"
)
def test_mypy_reports_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(CACHE), "--no-error-summary"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
