"""Saver(coordinator=TorchCoordinator()) with 4 processes joined by torch.distributed gloo on 127.0.0.1:
one checkpoint, restore with another world size, and kill -9 of a rank mid-save (every other rank
gets an error within the timeout; the latest checkpoint stays complete). The program of each process
is tests/campaigns/dist_worker.py."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import saverkit as sk
from dist_helpers import expected_values
from saverkit import bundle
from test_distributed_mpi import parse_reports

WORKER = pathlib.Path(__file__).parent / "campaigns" / "dist_worker.py"


@pytest.fixture(scope="module", autouse=True)
def _torch():
    pytest.importorskip("torch.distributed", reason="torch is not installed (pip install saverkit[torch])")
    import torch.distributed as tdist

    if not tdist.is_available() or not tdist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_run(world: int, *args: str, timeout: float = 180) -> tuple[list[int], list[dict], str]:
    """``world`` processes of dist_worker.py joined by gloo; returns their exit codes and reports."""
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--via", "torch", "--rank", str(r), "--world", str(world),
             "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for r in range(world)
    ]
    outs, codes = [], []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, _ = p.communicate()
            outs.append(out)
            raise AssertionError("a gloo rank hung:\n" + "\n".join(outs)) from None
        outs.append(out)
        codes.append(p.returncode)
    text = "\n".join(outs)
    return codes, sorted(parse_reports(text), key=lambda d: d["rank"]), text


def _read_all(prefix: str, world: int, step: int) -> None:
    with bundle.BundleReader(prefix) as r:
        assert r.num_shards == world
        want = expected_values(world, step)
        assert sorted(r.entries()) == sorted(want)
        for k, v in want.items():
            np.testing.assert_array_equal(r.read(k), v)


def test_four_gloo_processes_save_one_checkpoint_and_two_restore_it(tmp_path):
    codes, lines, out = gloo_run(4, "save", str(tmp_path), "3")
    assert codes == [0] * 4 and [d["path"] for d in lines] == [str(tmp_path / "model-3")] * 4, out
    _read_all(str(tmp_path / "model-3"), 4, 3)
    assert sk.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-3")
    codes, lines, out = gloo_run(2, "restore", str(tmp_path / "model-3"), "4")
    assert codes == [0, 0] and [d.get("step") for d in lines] == [3, 3], out


def test_four_gloo_processes_async_save_commits_on_a_group_of_its_own(tmp_path):
    from test_distributed_mpi import _check_async

    codes, lines, out = gloo_run(4, "async-save", str(tmp_path), "4")
    assert codes == [0] * 4, out
    _check_async(lines, tmp_path, 4, 4)


@pytest.mark.parametrize("victim, phase", [
    (1, "after-write"), pytest.param(0, "in-commit", marks=pytest.mark.slow)])
def test_kill_9_of_a_rank_mid_save_errors_every_other_rank_within_the_timeout(tmp_path, victim, phase):
    codes, _, out = gloo_run(4, "save", str(tmp_path), "1")
    assert codes == [0] * 4, out
    codes, lines, out = gloo_run(4, "--timeout", "20", "die", str(tmp_path), "2", str(victim), phase, "KILL")
    assert codes[victim] == -9, out
    errs = {d["rank"]: d for d in lines if "error" in d}
    assert sorted(errs) == sorted(set(range(4)) - {victim}), out
    for d in errs.values():  # gloo sees the closed connection at once; the timeout bounds it anyway
        assert d["error"] in ("DistributedError", "CollectiveTimeoutError") and d["seconds"] < 40, d
    latest = sk.train.latest_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / "model-1")
    _read_all(latest, 4, 1)


@pytest.mark.slow
def test_a_hung_gloo_rank_makes_the_others_time_out(tmp_path):
    """A SIGSTOPped peer keeps its connections open: only the per-collective timeout (work.wait) ends
    the others' wait."""
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "--via", "torch", "--rank", str(r), "--world", "4",
             "--port", str(port), "--timeout", "4", "die", str(tmp_path), "2", "2", "after-write", "STOP"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for r in range(4)
    ]
    outs = {}
    try:
        for r in (0, 1, 3):
            outs[r], _ = procs[r].communicate(timeout=120)
    finally:
        procs[2].kill()  # the stopped rank
        procs[2].communicate()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for out in outs.values():
        reports = [d for d in parse_reports(out) if "error" in d]
        assert reports and reports[0]["error"] == "CollectiveTimeoutError", out
        assert "timed out" in reports[0]["message"]


def test_a_duplicate_asked_with_no_time_left_times_out_before_making_a_group():
    import torch.distributed as tdist
    from saverkit import distributed as dist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        coord = dist.TorchCoordinator(timeout=30)
        with pytest.raises(dist.CollectiveTimeoutError, match="rank 0 of 1: duplicate timed out"):
            coord.duplicate(timeout=1e-9)  # no time left to give torch's new_group
        assert coord.broken is not None
        fresh = dist.TorchCoordinator(timeout=30).duplicate()  # with time: a group of its own
        assert fresh.group is not None and fresh.all_gather("x") == ["x"]
    finally:
        tdist.destroy_process_group()
