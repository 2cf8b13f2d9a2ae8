"""Many threads saving and restoring at once, each with its own saver and directory: every restore
returns exactly what that thread saved last, and everything finishes in bounded time (a deadlock
fails the test with every thread's stack instead of hanging the suite)."""

from __future__ import annotations

import faulthandler
import sys
import threading
import time

import numpy as np
import pytest
import saverkit.train
from campaigns import kill
from saverkit.bundle import BundleReader, read_tensors
from saverkit.train import latest_checkpoint

DEADLINE = 120.0


def _api() -> str:
    return "saver" if hasattr(saverkit.train, "Saver") else "bundle"


def _dtypes(vals: dict) -> list:
    return [v.dtype if v.dtype != object else "string" for v in vals.values()]


def run_threads(targets: list, deadline: float = DEADLINE) -> list[str]:
    """Runs the callables in threads; returns their failures. Fails loudly on a deadlock."""
    failures: list[str] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported to the main thread
                failures.append(f"{threading.current_thread().name}: {type(e).__name__}: {e}")
        return run

    threads = [threading.Thread(target=wrap(fn), name=f"t{i}", daemon=True) for i, fn in enumerate(targets)]
    end = time.monotonic() + deadline
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pytest.fail(f"threads {stuck} still running after {deadline:.0f} s: deadlock or livelock")
    return failures


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_threads_saving_different_savers_restore_their_own_values(tmp_path, sharded):
    api = _api()

    def worker(t: int):
        def run():
            d = tmp_path / f"run{t}"
            d.mkdir()
            saver = kill.make_saver(api, d, sharded)
            for i in range(6):
                step = t * 100 + i + 1
                want = kill.model_values(step, sharded)
                prefix = saver.save(want, step)
                assert latest_checkpoint(str(d)) == prefix
                names = sorted(want)
                got = saver.restore(prefix, names, _dtypes({n: want[n] for n in names}))
                for n in names:
                    g = np.asarray(got[n])
                    assert g.shape == want[n].shape and g.dtype == want[n].dtype, (prefix, n)
                    assert list(g.flat) == list(want[n].flat) if g.dtype == object else \
                        g.tobytes() == want[n].tobytes(), (prefix, n)
        return run

    assert run_threads([worker(t) for t in range(8)]) == []


def test_readers_and_writers_of_the_same_files_at_once(tmp_path):
    """Readers of a finished checkpoint keep getting exact values while other threads overwrite
    neighbouring checkpoints and a writer keeps re-saving *the same* prefix (atomic replacement:
    a reader sees the old bundle or the new one, never a mix)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    base = kill.BundleSaver(shared, sharded=False)
    fixed = kill.model_values(7, False)
    fixed_prefix = base.save(fixed, 7)
    names = sorted(fixed)
    stop = threading.Event()

    def reader():
        n = 0
        while not stop.is_set() or n < 5:
            got = read_tensors(fixed_prefix, names, None, _dtypes({k: fixed[k] for k in names}))
            for k, g in zip(names, got, strict=True):
                assert list(g.flat) == list(fixed[k].flat), k
            with BundleReader(fixed_prefix) as r:
                assert sorted(r.entries()) == names
            n += 1

    def writer(t: int):
        def run():
            d = tmp_path / f"w{t}"
            d.mkdir()
            s = kill.BundleSaver(d, sharded=bool(t % 2))
            for i in range(8):
                s.save(kill.model_values(t * 10 + i, bool(t % 2)), t * 10 + i)
        return run

    def rewriter():
        # re-saves step 7 with identical content while the readers read it
        for _ in range(8):
            base.save(fixed, 7)

    writer_failures: list[str] = []

    def write_all():
        try:
            writer_failures.extend(run_threads([writer(t) for t in range(4)] + [rewriter]))
        finally:
            stop.set()

    done = threading.Thread(target=write_all, daemon=True)
    done.start()
    failures = run_threads([reader for _ in range(4)])
    done.join(DEADLINE)
    assert not done.is_alive()
    assert failures == [] and writer_failures == []
