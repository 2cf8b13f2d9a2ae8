"""Saver(coordinator=JaxCoordinator()) with 3 processes joined by jax.distributed on 127.0.0.1 (its key-value
store, as orbax coordinates): one checkpoint, restored by 2 processes; a rank killed mid-save makes the
others raise at the timeout. The program of each process is tests/campaigns/dist_worker.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import saverkit as sk
from test_distributed_mpi import parse_reports
from test_distributed_torch import WORKER, _free_port, _read_all

pytest.importorskip("jax", reason="jax is not installed (pip install saverkit[jax])")


def jax_run(world: int, *args: str, timeout: float = 120) -> tuple[list[int], list[dict], str]:
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--via", "jax", "--rank", str(r), "--world", str(world),
             "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for r in range(world)
    ]
    outs, codes = [], []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append(out)
            codes.append(p.returncode)
    except subprocess.TimeoutExpired:
        raise AssertionError("a jax rank hung:\n" + "\n".join(outs)) from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    text = "\n".join(outs)
    return codes, sorted(parse_reports(text), key=lambda d: d["rank"]), text


def test_three_jax_processes_save_one_checkpoint_and_two_restore_it(tmp_path):
    codes, lines, out = jax_run(3, "save", str(tmp_path), "3")
    assert codes == [0] * 3 and [d["path"] for d in lines] == [str(tmp_path / "model-3")] * 3, out
    _read_all(str(tmp_path / "model-3"), 3, 3)
    assert sk.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-3")
    codes, lines, out = jax_run(2, "restore", str(tmp_path / "model-3"), "3")
    assert codes == [0, 0] and [d.get("step") for d in lines] == [3, 3], out


def test_three_jax_processes_async_save_commits_in_a_namespace_of_its_own(tmp_path):
    from test_distributed_mpi import _check_async

    # no sync(): the save completes at exit, before jax.distributed shuts down
    codes, lines, out = jax_run(3, "--no-sync", "async-save", str(tmp_path), "4")
    assert codes == [0] * 3, out
    _check_async(lines, tmp_path, 3, 4)


def test_kill_9_of_a_jax_rank_mid_save_errors_the_others_within_the_timeout(tmp_path):
    codes, _, out = jax_run(3, "save", str(tmp_path), "1")
    assert codes == [0] * 3, out
    codes, lines, out = jax_run(3, "--timeout", "10", "die", str(tmp_path), "2", "1", "after-write", "KILL")
    assert codes[1] == -9 and codes[0] == codes[2] == 0, out  # the survivors report and exit cleanly
    errs = {d["rank"]: d for d in lines if "error" in d}
    assert sorted(errs) == [0, 2], out
    for d in errs.values():  # the key-value store cannot tell a dead peer from a slow one: the timeout does
        assert d["error"] == "CollectiveTimeoutError" and "rank 1" in d["message"] and d["seconds"] < 30, d
    latest = sk.train.latest_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / "model-1")
    _read_all(latest, 3, 1)
