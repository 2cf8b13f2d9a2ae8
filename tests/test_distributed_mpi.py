"""Saver(coordinator=MPICoordinator()) under a real ``mpiexec -n 4`` (the mpich wheel's, from the [test]
extra): one checkpoint that TensorFlow reads, restores with other world sizes, and ranks killed or
hung mid-save. Each test launches mpiexec itself (tests/campaigns/dist_worker.py is the program)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import saverkit as sk
from dist_helpers import expected_values
from saverkit import bundle

WORKER = pathlib.Path(__file__).parent / "campaigns" / "dist_worker.py"


def _mpiexec() -> str:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install saverkit[mpi])")
    found = pathlib.Path(sys.executable).parent / "mpiexec"
    path = str(found) if found.exists() else shutil.which("mpiexec")
    if path is None:
        pytest.skip("no mpiexec: pip install mpich (or apt-get install openmpi-bin)")
    return path


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def mpirun(n: int, *args: str, timeout: float = 120, extra=()) -> list[dict]:
    cmd = [_mpiexec(), *extra, "-n", str(n), sys.executable, str(WORKER), "--via", "mpi", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    lines = parse_reports(proc.stdout)
    return proc.returncode, sorted(lines, key=lambda d: d["rank"]), proc.stdout + proc.stderr


def parse_reports(text: str) -> list[dict]:
    """The workers' JSON reports (mpiexec may join two ranks' lines into one)."""
    out, dec = [], json.JSONDecoder()
    for line in text.splitlines():
        i = line.find("{")
        while i >= 0:
            try:
                obj, end = dec.raw_decode(line, i)
            except ValueError:
                break
            if isinstance(obj, dict) and "rank" in obj:
                out.append(obj)
            i = line.find("{", end)
    return out


def _read_all(prefix: str, world: int, step: int) -> None:
    """Every tensor of the checkpoint, CRC-checked by the reader, equals what the world saved."""
    with bundle.BundleReader(prefix) as r:
        assert r.num_shards == world
        want = expected_values(world, step)
        assert sorted(r.entries()) == sorted(want)
        for k, v in want.items():
            np.testing.assert_array_equal(r.read(k), v)


def test_mpiexec_4_ranks_save_one_checkpoint_that_tensorflow_reads(tmp_path):
    rc, lines, out = mpirun(4, "save", str(tmp_path), "3")
    assert rc == 0, out
    assert [d["path"] for d in lines] == [str(tmp_path / "model-3")] * 4, out
    prefix = str(tmp_path / "model-3")
    assert sk.train.latest_checkpoint(str(tmp_path)) == prefix
    _read_all(prefix, 4, 3)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    reader = tf.train.load_checkpoint(prefix)
    for k, v in expected_values(4, 3).items():
        np.testing.assert_array_equal(reader.get_tensor(k), v)
    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix


def _check_async(lines: list[dict], directory, world: int, step: int) -> None:
    """What dist_worker.py's async-save reports: the save returned before its commit; the job's own
    collectives ran meanwhile; the checkpoint holds the values of the call."""
    prefix = str(directory / f"model-{step}")
    assert len(lines) == world and all(d.get("error") is None for d in lines), lines
    for d in lines:
        assert d["path"] == prefix and d["latest_then"] is None
        assert d["seen"] == [[r * 10 + i for r in range(world)] for i in range(5)]
    assert sk.train.latest_checkpoint(str(directory)) == prefix
    _read_all(prefix, world, step)


@pytest.mark.parametrize("wait", ["sync", "exit"])
def test_mpiexec_4_ranks_async_save_commits_on_a_duplicated_communicator(tmp_path, wait):
    # "exit": no sync(); the save in flight completes at interpreter exit, before MPI is finalized
    flags = ["--no-sync"] if wait == "exit" else []
    rc, lines, out = mpirun(4, *flags, "async-save", str(tmp_path), "4")
    assert rc == 0, out
    _check_async(lines, tmp_path, 4, 4)
    if wait == "sync":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        tf = pytest.importorskip("tensorflow")
        reader = tf.train.load_checkpoint(str(tmp_path / "model-4"))
        for k, v in expected_values(4, 4).items():
            np.testing.assert_array_equal(reader.get_tensor(k), v)


def test_async_save_under_mpi_without_thread_multiple_is_a_clear_error(tmp_path):
    rc, lines, out = mpirun(2, "--thread-level", "serialized", "async-save", str(tmp_path), "4")
    assert rc != 0 and len(lines) == 2, out
    for d in lines:
        assert d["error"] == "FailedPreconditionError", out
        assert "MPI_THREAD_SERIALIZED" in d["message"] and "MPI_THREAD_MULTIPLE" in d["message"], out
    assert os.listdir(tmp_path) == []


def test_a_duplicate_that_a_peer_does_not_join_in_time_raises_a_timeout():
    # MPICH ends the job once rank 0 exits: rank 1, which never joins, does not hang it
    _, lines, out = mpirun(2, "dup-timeout", timeout=60)
    assert [d["rank"] for d in lines] == [0], out
    (d,) = lines
    assert d["error"] == "CollectiveTimeoutError" and "rank 0 of 2: duplicate timed out" in d["message"], out
    assert 1.5 < d["seconds"] < 4 and d["broken"], out


@pytest.mark.parametrize("saved, restored", [(4, 2), (2, 4)])
def test_mpiexec_restore_with_another_world_size(tmp_path, saved, restored):
    rc, _, out = mpirun(saved, "save", str(tmp_path), "5")
    assert rc == 0, out
    rc, lines, out = mpirun(restored, "restore", str(tmp_path / "model-5"), str(saved))
    assert rc == 0 and [d.get("step") for d in lines] == [5] * restored, out


@pytest.mark.parametrize("victim, phase, mode", [
    (1, "after-write", "sync"), (0, "in-commit", "sync"), (1, "after-write", "async"),
    (0, "in-commit", "async")])
def test_kill_9_of_a_rank_mid_save_keeps_the_latest_checkpoint_complete(tmp_path, victim, phase, mode):
    rc, _, out = mpirun(4, "save", str(tmp_path), "1")
    assert rc == 0, out
    t0 = time.monotonic()
    # MPICH without fault tolerance ends the whole job when a rank dies: no rank is left hanging.
    flags = ["--async"] if mode == "async" else []
    rc, lines, out = mpirun(4, "--timeout", "5", *flags, "die", str(tmp_path), "2", str(victim), phase,
                            "KILL", extra=["-disable-auto-cleanup"], timeout=60)
    assert rc != 0 and time.monotonic() - t0 < 40, out
    assert any(d.get("dying") == phase for d in lines), out
    for d in lines:  # a rank that outlived the victim long enough to report got an error, not success
        assert d.get("error") in (None, "CollectiveTimeoutError", "RankFailedError", "DistributedError")
    assert not any(d.get("error", "x") is None for d in lines), out
    latest = sk.train.latest_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / "model-1")
    _read_all(latest, 4, 1)


def test_a_hung_rank_makes_every_other_rank_raise_within_the_timeout(tmp_path):
    rc, _, out = mpirun(4, "save", str(tmp_path), "1")
    assert rc == 0, out
    cmd = [_mpiexec(), "-disable-auto-cleanup", "-n", "4", sys.executable, str(WORKER), "--via", "mpi",
           "--timeout", "3", "die", str(tmp_path), "2", "2", "after-write", "STOP"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    lines, victim_pid = [], None
    t0 = time.monotonic()
    try:
        for raw in proc.stdout:
            for d in parse_reports(raw):
                lines.append(d)
                if "dying" in d:
                    victim_pid = d["pid"]
            if len([x for x in lines if "error" in x]) == 3:
                break
        elapsed = time.monotonic() - t0
    finally:
        if victim_pid is not None:
            os.kill(victim_pid, signal.SIGKILL)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    errs = {d["rank"]: d for d in lines if "error" in d}
    assert sorted(errs) == [0, 1, 3], lines
    for d in errs.values():
        assert d["error"] == "CollectiveTimeoutError" and d["seconds"] < 30, d  # timeout 3 s, loaded CI
    assert elapsed < 60
    latest = sk.train.latest_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / "model-1")
    _read_all(latest, 4, 1)
