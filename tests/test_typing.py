"""The package type-checks: mypy over python/saverkit with the [tool.mypy] settings of pyproject.toml."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e .[test])"
)
def test_mypy_reports_nothing(tmp_path):
    # A fresh cache each run: nothing carried over between runs or clones (a full check takes ~10 s).
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache"), "--no-error-summary"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
