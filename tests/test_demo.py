"""examples/demo.py (./dev.sh demo) runs, quickly, and does what it prints."""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import saverkit as sk

DEMO = pathlib.Path(__file__).parents[1] / "examples" / "demo.py"


def test_demo_runs_and_leaves_a_tensorflow_style_checkpoint_dir(tmp_path):
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(DEMO), "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert elapsed < 60, f"demo took {elapsed:.1f} s"  # a hang guard, not a speed test
    text = out.stdout
    assert "kept (oldest deleted): ['model-3', 'model-4', 'model-5']" in text
    assert "values match; global_step=5" in text
    assert "global_step=6" in text
    assert text.count("GB/s") == 6  # five saves and one restore, each with its throughput
    names = sorted(os.listdir(tmp_path))
    assert names == [
        "checkpoint",
        "export",
        "model-3.data-00000-of-00001",
        "model-3.index",
        "model-4.data-00000-of-00001",
        "model-4.index",
        "model-5.data-00000-of-00001",
        "model-5.index",
        "model.meta",
    ]
    assert os.path.getsize(tmp_path / "model.meta") < 20_000  # lean: no copy of the 64 MiB weights
    assert sk.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-5")
    reader = sk.train.load_checkpoint(str(tmp_path / "model-5"))
    w = reader.get_tensor("dense/kernel")
    assert w.shape == (4096, 4096)
    # w <- w/2 + 1 five times from 0.01
    want = np.float32(0.01)
    for _ in range(5):
        want = want * np.float32(0.5) + np.float32(1.0)
    assert np.all(w == want)
    assert reader.get_tensor("global_step") == 5
    # The SavedModel for serving: TF1 layout, version 1, loaded back by the demo itself.
    export_dir = tmp_path / "export" / "1"
    assert os.listdir(tmp_path / "export") == ["1"]
    assert sorted(os.listdir(export_dir)) == ["saved_model.pb", "variables"]
    assert "gives the trained model's y" in text
    assert np.all(sk.train.load_variable(str(export_dir), "dense/kernel") == want)
