"""Out of space and I/O errors during a save: a clear OpError with the OS message, the previous
checkpoint still restores, and no partial file is left behind.

Two ways to run out of space: a tiny tmpfs mounted by the test (needs root and permission to
mount; skipped with the reason otherwise) and RLIMIT_FSIZE in a subprocess (always available;
SIGXFSZ ignored so write() fails with EFBIG instead of killing the process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
import saverkit.errors as errors
from bundle_helpers import temporaries
from saverkit.bundle import merge_bundles, read_tensors, write_bundle
from saverkit.train import latest_checkpoint, remove_checkpoint, update_checkpoint_state


def values(step: int, mib: float) -> dict[str, np.ndarray]:
    n = int(mib * (1 << 20)) // 4
    return {"w": np.arange(n, dtype=np.float32) + step, "step": np.array(step, np.int64),
            "names": np.array([b"v%d" % step] * 3, dtype=object)}


def save(directory: str, step: int, mib: float, sharded: bool = False) -> str:
    """One Saver-like save: bundle (or two merged parts), then the state file."""
    vals = values(step, mib)
    prefix = os.path.join(directory, f"model-{step}")
    names = sorted(vals)
    if sharded:
        tmp = f"{prefix}_temp_{uuid.uuid4().hex}"
        parts = [f"{tmp}/part-{i:05d}-of-00002" for i in range(2)]
        try:
            for i, part in enumerate(parts):
                write_bundle(part, names[i::2], [vals[n] for n in names[i::2]])
            merge_bundles(parts, prefix)
        except errors.OpError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        write_bundle(prefix, names, [vals[n] for n in names])
    try:
        update_checkpoint_state(directory, prefix)
    except errors.OpError:
        remove_checkpoint(prefix)  # a save that failed leaves the directory as it was
        raise
    return prefix


def assert_restores(directory: str, step: int, mib: float) -> None:
    latest = latest_checkpoint(directory)
    assert latest == os.path.join(directory, f"model-{step}")
    want = values(step, mib)
    names = sorted(want)
    got = read_tensors(latest, names, None, ["float32" if n == "w" else "int64" if n == "step" else "string"
                                           for n in names])
    for n, g in zip(names, got, strict=True):
        assert g.shape == want[n].shape and list(g.flat) == list(want[n].flat), n


def listing(directory: str) -> list[str]:
    return sorted(os.listdir(directory))


# --- a real full filesystem -------------------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 MiB tmpfs mounted for the test and unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_no_space_left_raises_resource_exhausted_and_keeps_previous_checkpoint(tiny_fs, sharded):
    save(tiny_fs, 1, 0.5, sharded)
    before = listing(tiny_fs)
    with pytest.raises(errors.ResourceExhaustedError, match="No space left on device") as info:
        save(tiny_fs, 2, 8, sharded)
    assert "model-2" in str(info.value)  # names the file it could not write
    assert listing(tiny_fs) == before  # no partial data, index or temp directory
    assert_restores(tiny_fs, 1, 0.5)
    save(tiny_fs, 3, 0.5, sharded)  # and the next save that fits works
    assert_restores(tiny_fs, 3, 0.5)


def test_running_out_at_every_point_of_a_save_is_clean(tiny_fs):
    """Sizes around the free space make ENOSPC hit the data file, the index, the state file, or
    nothing."""
    save(tiny_fs, 1, 0.25)
    outcomes = set()
    for k in range(24):
        st = os.statvfs(tiny_fs)
        free_mib = st.f_bavail * st.f_frsize / (1 << 20)
        before = listing(tiny_fs)
        try:
            prefix = save(tiny_fs, 2, free_mib - k * 1024 / (1 << 20))
        except errors.ResourceExhaustedError as e:
            msg = str(e)
            outcomes.add("data" if ".data-" in msg else "index" if ".index" in msg else
                         "state" if "state file" in msg else msg)
            assert "No space left on device" in str(e)
            assert listing(tiny_fs) == before
            assert_restores(tiny_fs, 1, 0.25)
        else:
            outcomes.add("saved")
            assert_restores(tiny_fs, 2, free_mib - k * 1024 / (1 << 20))
            for f in os.listdir(tiny_fs):  # back to the step-1 state for the next size
                if f.startswith("model-2"):
                    os.unlink(os.path.join(tiny_fs, f))
            update_checkpoint_state(tiny_fs, os.path.join(tiny_fs, "model-1"))
            assert prefix
    assert outcomes == {"data", "index", "state", "saved"}


def test_state_file_out_of_space_is_resource_exhausted(tiny_fs):
    # regression: the state-file writer reported ENOSPC as UnknownError
    save(tiny_fs, 1, 0.1)
    st = os.statvfs(tiny_fs)
    fd = os.open(os.path.join(tiny_fs, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"\0" * (st.f_bavail * st.f_frsize + 4096))  # short write: fills the disk
    finally:
        os.close(fd)
    with pytest.raises(errors.ResourceExhaustedError, match="No space left on device"):
        update_checkpoint_state(tiny_fs, os.path.join(tiny_fs, "model-1"))
    assert temporaries(tiny_fs) == []
    os.unlink(os.path.join(tiny_fs, "filler"))
    assert_restores(tiny_fs, 1, 0.1)


def test_read_only_filesystem_raises_op_error_with_os_message(tiny_fs):
    save(tiny_fs, 1, 0.1)
    subprocess.run(["mount", "-o", "remount,ro", tiny_fs], check=True)
    try:
        with pytest.raises(errors.OpError, match="Read-only file system"):
            save(tiny_fs, 2, 0.1)
        assert_restores(tiny_fs, 1, 0.1)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", tiny_fs], check=True)
    assert temporaries(tiny_fs) == []


# --- RLIMIT_FSIZE, in a subprocess ---------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    sys.path.insert(0, {tests!r})
    from test_disk_full import assert_restores, listing, save
    import saverkit.errors as errors
    from bundle_helpers import temporaries

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
    d, sharded = {directory!r}, {sharded!r}
    save(d, 1, 0.25, sharded)
    before = listing(d)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    out = {{}}
    try:
        save(d, 2, 4, sharded)
        out["error"] = None
    except errors.OpError as e:
        out["error"], out["message"] = type(e).__name__, str(e)
    out["leftover"] = sorted(set(listing(d)) - set(before))
    assert_restores(d, 1, 0.25)
    out["restored"] = True
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_file_size_limit_raises_resource_exhausted_and_keeps_previous_checkpoint(tmp_path, sharded):
    code = CHILD.format(tests=os.path.dirname(__file__), directory=str(tmp_path), sharded=sharded)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["error"] == "ResourceExhaustedError", out
    assert "File too large" in out["message"]
    assert out["leftover"] == []
    assert out["restored"]

