"""The benchmark harness (benchmarks/io_throughput.py) runs end to end and reports a well-formed JSON."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


@pytest.fixture(scope="module")
def workloads():
    sys.path.insert(0, BENCH)
    try:
        import workloads

        yield workloads
    finally:
        sys.path.remove(BENCH)


def test_workload_values_regenerate_piecewise(workloads):
    wl = workloads.Workload.make("W1", 0.001)
    arrays = wl.arrays()
    assert len(arrays) == 64 and wl.nbytes == sum(a.nbytes for a in arrays)
    for i in (0, 17, 63):
        assert workloads.same(arrays[i], wl.expected(i))
    assert not workloads.same(arrays[0], arrays[1])
    assert np.isfinite(np.concatenate([a.ravel() for a in arrays])).all()


def test_string_workload_lengths(workloads):
    wl = workloads.Workload.make("W4", 0.01)
    arrays = wl.arrays()
    assert len(arrays) == 10 and all(a.dtype == object for a in arrays)
    lengths = [len(s) for a in arrays for s in a]
    assert min(lengths) >= 0 and max(lengths) <= 200
    assert wl.nbytes == sum(lengths) and workloads.same(arrays[3], wl.expected(3))


def test_quick_json_run_has_every_section(tmp_path):
    cmd = [sys.executable, os.path.join(BENCH, "io_throughput.py"), "--quick", "--json", "-",
           "--scale", "0.001", "--reps", "2", "--workloads", "W1,W4",
           "--systems", "saverkit-engine,numpy-savez,bound-write-1file,bound-preadv-2threads",
           "--tmp", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert {"machine", "config", "versions", "results", "ratios", "targets", "notes"} <= set(report)
    assert report["machine"]["nproc"] >= 1 and report["config"]["reps"] == 2
    rows = {(r["workload"], r["system"], r["op"]): r for r in report["results"]}
    expected = {
        ("W1", "saverkit-engine", "save"), ("W1", "saverkit-engine", "restore"),
        ("W1", "saverkit-engine", "restore_inplace"), ("W1", "numpy-savez", "save"),
        ("W1", "numpy-savez", "restore"), ("W1", "bound-write-1file", "save"),
        ("W1", "bound-preadv-2threads", "restore_inplace"), ("W4", "saverkit-engine", "save"),
        ("W4", "saverkit-engine", "restore"), ("W4", "numpy-savez", "restore"),
    }
    assert expected <= set(rows)
    for key in expected:
        r = rows[key]
        assert "error" not in r, (key, r.get("error"))
        assert len(r["times_s"]) == 2 and r["median_s"] > 0 and r["gbps"] > 0
        assert r["peak_rss_extra"] >= 0
        if key[2] != "save" and key[1] != "bound-preadv-2threads":
            assert r["verified"] is True
    assert ("W4", "bound-write-1file", "save") not in rows  # bounds are for numeric payloads
    versus = {(q["system"], q["op"], q["versus"]) for q in report["ratios"]}
    assert ("saverkit-engine", "save", "bound-write-1file") in versus
    assert ("saverkit-engine", "restore", "numpy-savez") in versus
    assert all(set(t) >= {"target", "value", "threshold", "met"} for t in report["targets"])
    assert "targets (issue 6)" in proc.stderr
    assert not os.listdir(tmp_path)  # the scratch directory is cleaned up
