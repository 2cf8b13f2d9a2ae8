"""saverkit.train.Saver under failure: out of space, I/O errors, interrupted saves, durable mode.

* ENOSPC / EFBIG / EROFS during Saver.save -> ResourceExhaustedError / OpError with the OS message,
  the previous checkpoint still restores and no file of the failed save is left (also when the
  failure hits the .meta or the state file after the bundle was complete);
* a later save removes the temporaries an interrupted (killed) save left;
* durable=True fsyncs data, index and directory before the state file moves (proved with an
  LD_PRELOAD shim that logs fsync/fdatasync/rename in order: tests/campaigns/io_trace.c).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import saverkit.errors as errors
from bundle_helpers import temporaries
from campaigns.kill import SaverSaver
from saverkit.train import latest_checkpoint

TESTS = Path(__file__).resolve().parent


def model(mib: float, step: int) -> dict[str, np.ndarray]:
    n = max(1, int(mib * (1 << 20)) // 4)
    return {"w": np.arange(n, dtype=np.float32) + step, "b": np.full((7,), step, np.float64),
            "global_step": np.array(step, np.int64), "vocab": np.array([b"s%d" % step, b""], dtype=object)}


def restores(directory: Path, step: int, mib: float, sharded: bool) -> bool:
    latest = latest_checkpoint(str(directory))
    assert latest == str(directory / f"model-{step}"), latest
    want = model(mib, step)
    got = SaverSaver(directory, sharded, template=model(mib, 0)).restore(latest, sorted(want), [])
    return all(np.asarray(got[k]).tolist() == want[k].tolist() for k in want)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 MiB tmpfs mounted for the test and unmounted after (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_out_of_space_during_saver_save(tiny_fs, sharded):
    small = SaverSaver(tiny_fs, sharded, template=model(0.25, 0))
    small.save(model(0.25, 1), 1)
    before = sorted(os.listdir(tiny_fs))
    big = SaverSaver(tiny_fs, sharded, template=model(6, 0))
    with pytest.raises(errors.ResourceExhaustedError, match="No space left on device"):
        big.save(model(6, 2), 2)
    assert sorted(os.listdir(tiny_fs)) == before  # no data, index, meta or temp dir of step 2
    assert restores(tiny_fs, 1, 0.25, sharded)
    small.save(model(0.25, 3), 3)
    assert restores(tiny_fs, 3, 0.25, sharded)


def test_running_out_after_the_bundle_removes_the_new_checkpoint(tiny_fs):
    """Sizes near the free space make ENOSPC hit the data, the index, the .meta or the state file;
    every failure leaves the directory exactly as it was."""
    SaverSaver(tiny_fs, False, template=model(0.1, 0)).save(model(0.1, 1), 1)
    continue_from = sorted(os.listdir(tiny_fs))
    hit = set()
    # The .meta embeds the variables' initial values, so a save needs about twice the model size:
    # sizes near the free space make the data or index fail, sizes near half of it the .meta, the
    # state file, or nothing.
    st = os.statvfs(tiny_fs)
    free = st.f_bavail * st.f_frsize
    overhead = (tiny_fs / "model-1.meta").stat().st_size - int(0.1 * (1 << 20))
    sizes = [free + 4096 - 1024 * k for k in range(8)]
    sizes += [(free - overhead) // 2 + 6144 - 1024 * k for k in range(16)]
    for size in sizes:
        mib = size / (1 << 20)
        saver = SaverSaver(tiny_fs, False, template=model(mib, 0))
        try:
            saver.save(model(mib, 2), 2)
        except errors.ResourceExhaustedError as e:
            msg = str(e)
            hit.add("data" if ".data-" in msg else "index" if ".index" in msg else
                    "meta" if ".meta" in msg else "state" if "state file" in msg else msg)
            assert sorted(os.listdir(tiny_fs)) == continue_from, msg
            assert restores(tiny_fs, 1, 0.1, False)
        else:
            hit.add("saved")
            for f in os.listdir(tiny_fs):
                if f.startswith("model-2"):
                    os.unlink(tiny_fs / f)
            SaverSaver(tiny_fs, False, template=model(0.1, 0)).save(model(0.1, 1), 1)
            continue_from = sorted(os.listdir(tiny_fs))
        if {"data", "index", "meta", "state", "saved"} <= hit:
            break
    assert {"data", "index", "meta", "state", "saved"} <= hit, hit


def test_read_only_filesystem_during_saver_save(tiny_fs):
    saver = SaverSaver(tiny_fs, False, template=model(0.1, 0))
    saver.save(model(0.1, 1), 1)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    try:
        with pytest.raises(errors.OpError, match="Read-only file system"):
            saver.save(model(0.1, 2), 2)
        assert restores(tiny_fs, 1, 0.1, False)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)


def test_file_size_limit_during_saver_save(tmp_path):
    code = textwrap.dedent(f"""
        import json, os, resource, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        from pathlib import Path
        from test_saver_reliability import model, restores
        from bundle_helpers import temporaries
        from campaigns.kill import SaverSaver
        import saverkit.errors as errors
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        d = Path({str(tmp_path)!r})
        SaverSaver(d, True, template=model(0.2, 0)).save(model(0.2, 1), 1)
        before = sorted(os.listdir(d))
        big = SaverSaver(d, True, template=model(3, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            big.save(model(3, 2), 2)
            out = {{"error": None}}
        except errors.OpError as e:
            out = {{"error": type(e).__name__, "message": str(e)}}
        out["leftover"] = sorted(set(os.listdir(d)) - set(before))
        out["restored"] = restores(d, 1, 0.2, True)
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["error"] == "ResourceExhaustedError" and "File too large" in out["message"], out
    assert out["leftover"] == [] and out["restored"]


def dead_owner() -> str:
    """The owner token of a process of this host that has exited."""
    from saverkit import _core

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host, _, incarnation = _core.temp_owner().split("-")
    return f"{host}-{child.pid}-{incarnation}"


def test_next_save_removes_what_an_interrupted_save_left(tmp_path):
    saver = SaverSaver(tmp_path, True, template=model(0.01, 0))
    saver.save(model(0.01, 1), 1)
    dead = dead_owner()
    part_dir = tmp_path / ("model-2_temp_" + "ab" * 16)
    leftovers = [tmp_path / f"model-2.index.sktmp-{dead}-0000abcd",
                 tmp_path / f"model-2.meta.sktmp-{dead}-12345678",
                 tmp_path / f"model-2.data-00000-of-00001.sktmp-{dead}-deadbeef",
                 tmp_path / f"checkpoint.sktmp-{dead}-00000000", part_dir / "part-00000-of-00002.index",
                 part_dir / f"part-00001-of-00002.data-00000-of-00001.sktmp-{dead}-00000001"]
    for p in leftovers:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    (part_dir / ".saverkit-temp").write_text(dead)
    # Four temporaries, the part directory, its marker and the temporary inside it.
    assert len(temporaries(tmp_path)) == 7
    saver.save(model(0.01, 3), 3)
    assert temporaries(tmp_path) == []
    assert not part_dir.exists()
    assert restores(tmp_path, 3, 0.01, True)


# --- durable mode ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def io_trace_lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("io_trace") / "io_trace.so"
    cc = os.environ.get("CC", "cc")
    src = TESTS / "campaigns" / "io_trace.c"
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(src), "-ldl", "-lpthread"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build the LD_PRELOAD tracer with {cc}: {r.stderr[-500:]}")
    return out


def traced_save(tmp_path: Path, lib: Path, durable: bool, sharded: bool) -> list[tuple[str, str, str]]:
    log = tmp_path / "trace.log"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from pathlib import Path
        from test_saver_reliability import model
        from bundle_helpers import temporaries
        from campaigns.kill import SaverSaver
        d = Path({str(tmp_path / "ckpt")!r})
        d.mkdir()
        s = SaverSaver(d, {sharded!r}, durable={durable!r}, template=model(0.1, 0))
        s.save(model(0.1, 1), 1)
    """)
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(lib)]))  # after ASan's, if any
    env = dict(os.environ, LD_PRELOAD=preload, SAVERKIT_IO_TRACE=str(log))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    events = []
    for line in log.read_text().splitlines():
        call, _, rest = line.partition(" ")
        src, _, dst = rest.partition(" -> ")
        if str(tmp_path / "ckpt") in src or str(tmp_path / "ckpt") in dst:
            events.append((call, src, dst))
    return events


def _final_name(path: str, renames: dict[str, str]) -> str:
    while path in renames:
        path = renames[path]
    return path


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_durable_save_syncs_data_index_and_directory_before_the_state_file_moves(tmp_path, io_trace_lib,
                                                                               sharded):
    events = traced_save(tmp_path, io_trace_lib, durable=True, sharded=sharded)
    d = str(tmp_path / "ckpt")
    renames = {src: dst for call, src, dst in events if call == "rename"}
    state_move = next(i for i, (c, s, t) in enumerate(events) if c == "rename" and t == f"{d}/checkpoint")
    synced_before = {_final_name(p, renames) for c, p, _ in events[:state_move]
                     if c in ("fsync", "fdatasync")}
    files = sorted(f for f in os.listdir(d) if f.startswith("model-1.") and not f.endswith(".meta"))
    assert any(".data-" in f for f in files) and "model-1.index" in files
    for f in files + ["model-1.meta"]:
        assert f"{d}/{f}" in synced_before, (f, events)
    # the directory is synced after the last rename of a checkpoint file, before the state file moves
    last_file_rename = max(i for i, (c, s, t) in enumerate(events[:state_move])
                           if c == "rename" and os.path.basename(t).startswith("model-1."))
    between = events[last_file_rename:state_move]
    assert any(c in ("fsync", "fdatasync") and p == d for c, p, _ in between), events
    # the state file itself: its temp file synced before the rename, the directory after it
    tmp_state = events[state_move][1]
    assert any(c in ("fsync", "fdatasync") and p == tmp_state for c, p, _ in events[:state_move])
    assert any(c in ("fsync", "fdatasync") and p == d for c, p, _ in events[state_move:])


def test_default_save_does_not_pay_for_fsync(tmp_path, io_trace_lib):
    events = traced_save(tmp_path, io_trace_lib, durable=False, sharded=False)
    assert [e for e in events if e[0] in ("fsync", "fdatasync", "sync_file_range")] == []
    assert any(e[0] == "rename" for e in events)  # the tracer did see the save


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_a_durable_save_does_not_make_a_parallel_save_durable(tmp_path, io_trace_lib, sharded):
    # Durability travels with the run (RunOptions), not through a process-wide registry: while model-1 is
    # saved durably, a plain save of model-10 (whose path model-1 prefixes) in another thread, through the
    # same Saver, session and cached plan, syncs nothing. The engine call of model-1 waits until model-10
    # is saved, so the two saves always overlap.
    log = tmp_path / "trace.log"
    d = tmp_path / "ckpt"
    code = textwrap.dedent(f"""
        import threading
        import numpy as np
        import saverkit as sk
        from saverkit import bundle
        real, started, done = bundle.write_bundle, threading.Event(), threading.Event()

        def write_bundle(prefix, *args, **kwargs):
            if "model-1_" in prefix or prefix.endswith("model-1"):
                started.set()
                assert done.wait(120)
            return real(prefix, *args, **kwargs)

        bundle.write_bundle = write_bundle
        with sk.Graph().as_default():
            vs = [sk.Variable(np.full(1000, float(i), np.float32), name=f"v{{i}}") for i in range(3)]
            saver = sk.train.Saver(sharded={sharded!r})
            with sk.Session() as sess:
                sess.run(sk.global_variables_initializer())
                kw = dict(write_meta_graph=False, write_state=False)

                def plain():
                    assert started.wait(120)
                    try:
                        saver.save(sess, {str(d / "model")!r}, global_step=10, durable=False, **kw)
                    finally:
                        done.set()

                t = threading.Thread(target=plain)
                t.start()
                saver.save(sess, {str(d / "model")!r}, global_step=1, durable=True, **kw)
                t.join()
    """)
    d.mkdir()
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(io_trace_lib)]))
    env = dict(os.environ, LD_PRELOAD=preload, SAVERKIT_IO_TRACE=str(log))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(f for f in os.listdir(d) if f.endswith(".index")) == ["model-1.index", "model-10.index"]
    syncs = [line.split(" ", 1)[1] for line in log.read_text().splitlines()
             if line.split(" ", 1)[0] in ("fsync", "fdatasync", "sync_file_range") and str(d) in line]
    assert any("/model-1." in p for p in syncs), syncs  # the durable save did sync
    assert not [p for p in syncs if "model-10" in p], syncs


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_durable_saver_starts_the_disk_writing_before_it_waits_for_it(tmp_path, io_trace_lib, sharded):
    # Saver(durable=True) hands durability to the engine, which starts writeback of each 16 MiB written
    # (sync_file_range) so that the fdatasync at the end waits for the tail, not the whole payload.
    log = tmp_path / "trace.log"
    d = tmp_path / "ckpt"
    code = textwrap.dedent(f"""
        import numpy as np
        import saverkit as sk
        with sk.Graph().as_default():
            vs = [sk.Variable(np.full(6 << 20, float(i), np.float32), name=f"v{{i}}") for i in range(2)]
            saver = sk.train.Saver(durable=True, sharded={sharded!r})
            with sk.Session() as sess:
                sess.run(sk.global_variables_initializer())
                saver.save(sess, {str(d / "m")!r}, write_meta_graph=False)
    """)
    d.mkdir()
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(io_trace_lib)]))
    env = dict(os.environ, LD_PRELOAD=preload, SAVERKIT_IO_TRACE=str(log))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [line.split(" ", 1) for line in log.read_text().splitlines()]
    started = [i for i, (call, path) in enumerate(events) if call == "sync_file_range" and ".data-" in path]
    synced = [i for i, (call, path) in enumerate(events) if call == "fdatasync" and ".data-" in path]
    assert started and synced, events
    assert started[0] < synced[0]
