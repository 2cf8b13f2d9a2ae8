"""The engine's commit protocol (csrc/commit.cc) and its owner-stamped temporary names (csrc/temp_names.cc).

A re-save of an existing prefix moves the old index and data files to ``.skprev-<owner>`` backups
before the new files take their names, so a process killed at any step leaves either the new
checkpoint complete or backups from which ``recover_bundle`` puts the previous one back. The crash
tests kill a child at every step (``SAVERKIT_TEST_CRASH_AT=commit:<n>``, an ``_exit(137)`` just
before step n) and require the prefix to read back, CRCs verified, as exactly the old or the new
generation.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from saverkit import _core, bundle, errors

TOKEN = re.compile(r"^[0-9a-f]{8}-[1-9][0-9]*-[0-9a-f]{8}$")
DATA = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


# --- generations ------------------------------------------------------------------------------------
def generation(g: int) -> dict[str, np.ndarray]:
    """Values of generation g: shapes, names and contents all differ between generations, so a reader
    pairing one generation's index with another's data fails its size or CRC checks."""
    return {
        "w": np.full((64 * g, 3), g, np.float32),
        "b": np.arange(10, dtype=np.int64) * g,
        "s": np.array([b"gen-%d" % g] * g, dtype=object),
        f"only{g}": np.array(g, np.int32),
    }


def shards_of(layout: str) -> int:
    return 2 if layout == "merge2" else 1


def save_in_process(prefix: str, g: int, layout: str) -> None:
    vals = generation(g)
    names = sorted(vals)
    if layout == "single":
        bundle.write_bundle(prefix, names, [vals[n] for n in names])
        return
    parts = []
    for k in range(2):
        part = f"{prefix}_temp_parent{g}/part-{k:05d}-of-00002"
        mine = names[k::2]
        bundle.write_bundle(part, mine, [vals[n] for n in mine])
        parts.append(part)
    bundle.merge_bundles(parts, prefix)


# The child loads the engine alone (importing the saverkit package costs seconds here, mostly
# ml_dtypes): what is under test is the engine's commit, and it is called as saverkit.bundle calls it.
CHILD = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    core_path, prefix, g, layout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    durable = sys.argv[5] == "1"
    spec = importlib.util.spec_from_file_location("saverkit._core", core_path)
    core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core)
    vals = {
        "w": np.full((64 * g, 3), g, np.float32),
        "b": np.arange(10, dtype=np.int64) * g,
        "s": np.array([b"gen-%d" % g] * g, dtype=object),
        f"only{g}": np.array(g, np.int32),
    }
    enums = {"w": 1, "b": 9, "s": 7, f"only{g}": 3}

    def write(p, names):
        core.write_bundle(p, [n.encode() for n in names], [""] * len(names), [enums[n] for n in names],
                          [vals[n].shape for n in names], [vals[n] for n in names], 1, 0, durable)

    names = sorted(vals)
    if layout == "single":
        write(prefix, names)
    else:
        parts = [f"{prefix}_temp_child/part-{k:05d}-of-00002" for k in range(2)]
        for k, part in enumerate(parts):
            write(part, names[k::2])
        core.merge_bundles(parts, prefix, True, False, durable)
""")


def run_child(prefix: str, g: int, layout: str, durable: bool,
              crash_at: int | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SAVERKIT_TEST_CRASH_AT", None)
    if crash_at is not None:
        env["SAVERKIT_TEST_CRASH_AT"] = f"commit:{crash_at}"
    argv = [sys.executable, "-c", CHILD, _core.__file__, prefix, str(g), layout, "1" if durable else "0"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def which_generation(prefix: str) -> int:
    """The generation the prefix holds, read with every CRC checked; fails unless it is exactly one."""
    with bundle.BundleReader(prefix) as r:
        names = sorted(r.entries())
        got = dict(zip(names, r.read_many(names), strict=True))
    g = int(got["w"][0, 0])
    want = generation(g)
    assert sorted(want) == names
    for n, v in want.items():
        assert got[n].dtype == v.dtype and got[n].shape == v.shape, n
        assert got[n].tolist() == v.tolist(), n
    return g


def data_files(prefix: str) -> list[str]:
    d, base = os.path.split(prefix)
    return sorted(n for n in os.listdir(d) if n.startswith(base) and DATA.search(n) and n[:-20] == base)


def owner_of(name: str) -> str:
    """The owner token in a temp (``.sktmp-<owner>-<rand8>``) or backup (``.skprev-<owner>``) name."""
    if ".sktmp-" in name:
        tail = name.rsplit(".sktmp-", 1)[1]
        assert re.fullmatch(r".+-[0-9a-f]{8}", tail), name
        return tail[:-9]
    return name.rsplit(".skprev-", 1)[1]


def leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if ".sktmp-" in p.name
                  or ".skprev-" in p.name)


def expected_steps(child_layout: str, old_layout: str) -> list[str]:
    """The child's commit steps in order, as the crash hook names them."""
    parts = ["renaming a new data file into place (first save)",
             "renaming the new index into place (first save)"] * (2 if child_layout == "merge2" else 0)
    old, new = shards_of(old_layout), shards_of(child_layout)
    return parts + (["moving the old index to its backup"] + ["moving an old data file to its backup"] * old
                    + ["renaming a new data file into place"] * new
                    + ["renaming the new index into place (the commit point)"]
                    + ["deleting the old index's backup"]
                    + ["deleting an old data file's backup"] * old)


# --- crash at every step --------------------------------------------------------------------------
@pytest.mark.parametrize("old_layout,new_layout,durable", [
    ("single", "single", True),
    ("merge2", "merge2", True),
    ("single", "merge2", False),
    ("merge2", "single", False),
], ids=["single-resave-durable", "sharded-resave-durable", "single-to-sharded", "sharded-to-single"])
def test_kill_at_every_commit_step_leaves_exactly_the_old_or_the_new_checkpoint(
        tmp_path, old_layout, new_layout, durable):
    steps = expected_steps(new_layout, old_layout)
    commit_point = steps.index("renaming the new index into place (the commit point)") + 1
    seen = []
    for n in range(1, len(steps) + 2):
        d = tmp_path / f"crash{n}"
        d.mkdir()
        prefix = str(d / "model")
        save_in_process(prefix, 1, old_layout)
        r = run_child(prefix, 2, new_layout, durable, n)
        if n <= len(steps):
            assert r.returncode == 137, (n, r.stderr[-3000:])
            said = re.search(r"commit:(\d+): exiting before (.*)", r.stderr)
            assert said and int(said.group(1)) == n, r.stderr[-3000:]
            seen.append(said.group(2))
        else:
            assert r.returncode == 0, r.stderr[-3000:]  # the hook counted every step of the save
        bundle.recover_bundle(prefix)
        g = which_generation(prefix)
        # The new generation exactly from the commit point on, the old one before it.
        assert g == (2 if n > commit_point else 1), (n, steps[n - 1] if n <= len(steps) else "done")
        count = shards_of(old_layout if g == 1 else new_layout)
        assert data_files(prefix) == [f"model.data-{k:05d}-of-{count:05d}" for k in range(count)]
        assert not [f for f in os.listdir(d) if ".skprev-" in f]  # recovered: no backup left
        # Whatever the killed child left is recognisably a dead writer's (so the Saver's cleanup
        # removes it); one more successful save leaves nothing of its own.
        left = leftovers(d)
        assert all(_core.owner_is_stale(owner_of(f), 0.0) for f in left), left
        for f in left:
            os.unlink(d / f)
        save_in_process(prefix, 3, "single")
        assert which_generation(prefix) == 3
        assert leftovers(d) == []
    assert seen == steps


def test_first_save_temporaries_carry_the_writers_owner_token(tmp_path):
    prefix = str(tmp_path / "m")
    r = run_child(prefix, 1, "single", False, 2)  # killed before the index rename of a first save
    assert r.returncode == 137, r.stderr
    names = sorted(os.listdir(tmp_path))
    assert names[0] == "m.data-00000-of-00001"
    assert re.fullmatch(r"m\.index\.sktmp-[0-9a-f]{8}-\d+-[0-9a-f]{8}-[0-9a-f]{8}", names[1]), names
    assert len(names) == 2
    owner = owner_of(names[1])
    assert TOKEN.match(owner) and owner != _core.temp_owner()
    assert _core.owner_is_stale(owner, 0.0)  # the child is dead
    bundle.recover_bundle(prefix)  # no backups: nothing to do, and the temp is not its business
    assert sorted(os.listdir(tmp_path)) == names
    with pytest.raises(errors.NotFoundError):
        bundle.BundleReader(prefix)


# --- recovery and owners ----------------------------------------------------------------------------
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def mid_commit_state(tmp_path: Path, owner: str) -> str:
    """Generation 1 at `prefix`, interrupted by `owner` just before its commit point: the old index
    and data in backups, generation 2's data (another shard count) in place, no index."""
    prefix = str(tmp_path / "model")
    save_in_process(prefix, 1, "single")
    new = str(tmp_path / "staging" / "model")
    save_in_process(new, 2, "merge2")
    os.rename(prefix + ".index", f"{prefix}.index.skprev-{owner}")
    os.rename(prefix + ".data-00000-of-00001", f"{prefix}.data-00000-of-00001.skprev-{owner}")
    for k in range(2):
        os.rename(f"{new}.data-{k:05d}-of-00002", f"{prefix}.data-{k:05d}-of-00002")
    return prefix


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def test_recovery_leaves_a_live_owners_commit_alone(tmp_path):
    prefix = mid_commit_state(tmp_path, _core.temp_owner())
    before = listing(tmp_path)
    bundle.recover_bundle(prefix)
    assert listing(tmp_path) == before
    assert not os.path.exists(prefix + ".index")


@pytest.mark.parametrize("how", ["dead-pid", "own-pid-other-incarnation"])
def test_recovery_puts_a_dead_owners_previous_checkpoint_back(tmp_path, how):
    host, pid, inc = _core.temp_owner().split("-")
    if how == "dead-pid":
        owner = f"{host}-{dead_pid()}-{inc}"
    else:
        owner = f"{host}-{pid}-{int(inc, 16) ^ 1:08x}"
    prefix = mid_commit_state(tmp_path, owner)
    bundle.recover_bundle(prefix)
    assert which_generation(prefix) == 1
    # generation 2's data files (two shards) were deleted, the backups moved back
    assert listing(tmp_path) == ["model.data-00000-of-00001", "model.index", "staging"]


def test_recovery_leaves_another_hosts_recent_commit_and_malformed_names_alone(tmp_path):
    host, pid, inc = _core.temp_owner().split("-")
    other = f"{int(host, 16) ^ 1:08x}-{pid}-{inc}"
    prefix = mid_commit_state(tmp_path, other)
    # upper-case hex is not an owner token; inc.upper() was not always upper-case (all-digit counters)
    malformed = [f"{prefix}.index.skprev-{host}-{dead_pid()}-ABCDEF12", f"{prefix}.index.skprev-x"]
    for m in malformed:
        Path(m).write_bytes(b"not ours")
    before = listing(tmp_path)
    bundle.recover_bundle(prefix)  # the backups changed seconds ago: another host's writer may be alive
    assert listing(tmp_path) == before


def test_backups_are_deleted_when_the_new_index_is_in_place(tmp_path):
    host, _, inc = _core.temp_owner().split("-")
    owner = f"{host}-{dead_pid()}-{inc}"
    prefix = str(tmp_path / "m")
    save_in_process(prefix, 2, "single")
    Path(f"{prefix}.index.skprev-{owner}").write_bytes(b"old index")
    Path(f"{prefix}.data-00000-of-00001.skprev-{owner}").write_bytes(b"old data")
    Path(f"{prefix}.data-00003-of-00004.skprev-{owner}").write_bytes(b"old data")
    bundle.recover_bundle(prefix)
    assert listing(tmp_path) == ["m.data-00000-of-00001", "m.index"]
    assert which_generation(prefix) == 2


def test_data_backups_without_an_index_backup_are_deleted(tmp_path):
    host, _, inc = _core.temp_owner().split("-")
    owner = f"{host}-{dead_pid()}-{inc}"
    prefix = str(tmp_path / "m")
    save_in_process(prefix, 2, "single")
    os.unlink(prefix + ".index")  # someone deleted files: nothing to restore the backups to
    Path(f"{prefix}.data-00000-of-00002.skprev-{owner}").write_bytes(b"old data")
    bundle.recover_bundle(prefix)
    assert listing(tmp_path) == ["m.data-00000-of-00001"]


def test_recovery_keeps_an_old_data_file_the_commit_had_not_moved_yet(tmp_path):
    # Killed between moving shard 0 and shard 1 of the old checkpoint: shard 1 has no backup but
    # the restored index's shard count, so it is the old file and must stay.
    host, _, inc = _core.temp_owner().split("-")
    owner = f"{host}-{dead_pid()}-{inc}"
    prefix = str(tmp_path / "m")
    save_in_process(prefix, 1, "merge2")
    os.rename(prefix + ".index", f"{prefix}.index.skprev-{owner}")
    os.rename(prefix + ".data-00000-of-00002", f"{prefix}.data-00000-of-00002.skprev-{owner}")
    bundle.recover_bundle(prefix)
    assert which_generation(prefix) == 1
    assert data_files(prefix) == ["m.data-00000-of-00002", "m.data-00001-of-00002"]


def test_recovery_without_a_directory_or_backups_does_nothing(tmp_path):
    bundle.recover_bundle(str(tmp_path / "nowhere" / "m"))
    prefix = str(tmp_path / "m")
    save_in_process(prefix, 1, "single")
    before = listing(tmp_path)
    bundle.recover_bundle(prefix)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("base", ["a[1]", "b*?+(x"])
def test_prefixes_with_pattern_characters_touch_no_sibling(tmp_path, base):
    sibling = {"a[1]": "a1", "b*?+(x": "bcd+(x"}[base]  # what a glob or regex built from `base` matches
    host, _, inc = _core.temp_owner().split("-")
    dead = f"{host}-{dead_pid()}-{inc}"
    prefix, other = str(tmp_path / base), str(tmp_path / sibling)
    for p in (prefix, other):
        save_in_process(p, 1, "single")
    # the sibling in the middle of a dead writer's commit: only its own recovery may settle it
    os.rename(other + ".index", f"{other}.index.skprev-{dead}")
    os.rename(other + ".data-00000-of-00001", f"{other}.data-00000-of-00001.skprev-{dead}")
    Path(other + ".data-00000-of-00001").write_bytes(b"new data of the sibling")

    def sibling_state():
        return {n: (tmp_path / n).read_bytes() for n in listing(tmp_path) if n.startswith(sibling)}

    before = sibling_state()
    save_in_process(prefix, 2, "merge2")  # a re-save with another shard count
    n = expected_steps("single", "merge2").index("renaming the new index into place (the commit point)") + 1
    r = run_child(prefix, 3, "single", False, n)  # killed just before its commit point
    assert r.returncode == 137 and "the commit point" in r.stderr, r.stderr
    bundle.recover_bundle(prefix)
    assert which_generation(prefix) == 2
    assert sibling_state() == before
    assert not [n for n in listing(tmp_path) if n.startswith(base) and ".skprev-" in n]
    bundle.recover_bundle(other)
    assert which_generation(other) == 1


def test_a_failed_re_save_puts_the_previous_checkpoint_back(tmp_path):
    # A merge whose second part lost its data file fails in the middle of the commit (after the old
    # files moved aside and part 0's data took shard 0's name): the previous checkpoint comes back.
    prefix = str(tmp_path / "model")
    save_in_process(prefix, 1, "merge2")
    vals = generation(2)
    parts = [str(tmp_path / "parts" / f"part-{k}") for k in range(2)]
    for k, part in enumerate(parts):
        mine = sorted(vals)[k::2]
        bundle.write_bundle(part, mine, [vals[n] for n in mine])
    os.unlink(parts[1] + ".data-00000-of-00001")
    with pytest.raises(errors.NotFoundError, match=re.escape(parts[1] + ".data-00000-of-00001")):
        bundle.merge_bundles(parts, prefix)
    assert which_generation(prefix) == 1
    assert data_files(prefix) == ["model.data-00000-of-00002", "model.data-00001-of-00002"]
    assert not [n for n in listing(tmp_path) if ".skprev-" in n]


def test_merging_into_one_of_its_own_inputs(tmp_path):
    p, a = str(tmp_path / "p"), str(tmp_path / "a")
    bundle.write_bundle(p, ["x"], [np.arange(3)])
    bundle.merge_bundles([p], p)  # data file renamed onto itself, index rewritten
    assert bundle.read_tensors(p, ["x"])[0].tolist() == [0, 1, 2]
    bundle.write_bundle(a, ["y"], [np.ones(2, np.float32)])
    bundle.merge_bundles([a, p], p)  # p's old data file becomes shard 1 of the new p
    x, y = bundle.read_tensors(p, ["x", "y"])
    assert x.tolist() == [0, 1, 2] and y.tolist() == [1, 1]
    assert listing(tmp_path) == ["p.data-00000-of-00002", "p.data-00001-of-00002", "p.index"]


# --- owner tokens ---------------------------------------------------------------------------------
def fnv1a32(data: bytes) -> int:
    h = 2166136261
    for c in data:
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h


def test_owner_token_and_temp_names(tmp_path):
    owner = _core.temp_owner()
    host, pid, inc = owner.split("-")
    assert TOKEN.match(owner)
    assert host == f"{fnv1a32(socket.gethostname().encode()):08x}"
    assert int(pid) == os.getpid()
    path = str(tmp_path / "m.index")
    names = {_core.temp_filename(path) for _ in range(50)}
    assert len(names) == 50  # fresh random digits per call
    for n in names:
        assert re.fullmatch(re.escape(path) + r"\.sktmp-" + re.escape(owner) + r"-[0-9a-f]{8}", n), n
    # another process: another pid and another incarnation, same host
    code = ("import importlib.util, sys\n"
            "s = importlib.util.spec_from_file_location('saverkit._core', sys.argv[1])\n"
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(m.temp_owner())")
    theirs = subprocess.run([sys.executable, "-c", code, _core.__file__], capture_output=True, text=True,
                            check=True).stdout.strip()
    t_host, t_pid, t_inc = theirs.split("-")
    assert t_host == host and t_pid != pid and t_inc != inc
    assert _core.owner_is_stale(theirs, 0.0)  # that process has exited


@pytest.mark.parametrize("token", [
    "", "x", "0123abcd-12-0123abc", "0123ABCD-12-0123abcd", "0123abcd-012-0123abcd", "0123abcd--0123abcd",
    "0123abcd-0-0123abcd", "0123abcd-12a-0123abcd", "0123abcd-99999999999-0123abcd", "0123abcd-+12-0123abcd",
    "0123abcd-12-0123abcd-", "0123abcd_12_0123abcd", " 0123abcd-12-0123abcd",
])
def test_malformed_owner_tokens_are_never_stale(token):
    assert not _core.owner_is_stale(token, 1e9)


def test_owner_is_stale_cases():
    owner = _core.temp_owner()
    host, pid, inc = owner.split("-")
    other_host = f"{int(host, 16) ^ 0x80000000:08x}"
    # another host: only age can tell, after an hour
    assert not _core.owner_is_stale(f"{other_host}-{pid}-{inc}", 10.0)
    assert not _core.owner_is_stale(f"{other_host}-{pid}-{inc}", 3600.0)
    assert _core.owner_is_stale(f"{other_host}-{pid}-{inc}", 3601.0)
    # this very process: never stale, whatever the age
    assert not _core.owner_is_stale(owner, 1e9)
    # our pid, another incarnation: a dead process that had our pid
    assert _core.owner_is_stale(f"{host}-{pid}-{int(inc, 16) ^ 1:08x}", 0.0)
    # another pid of this host: dead iff no such process
    assert _core.owner_is_stale(f"{host}-{dead_pid()}-{inc}", 0.0)
    assert not _core.owner_is_stale(f"{host}-1-{inc}", 1e9)  # pid 1 is alive (EPERM counts as alive)
    assert not _core.owner_is_stale(f"{host}-{os.getppid()}-{inc}", 1e9)


# --- real TensorFlow --------------------------------------------------------------------------------
@pytest.mark.tf
def test_tensorflow_reads_the_checkpoint_recovered_from_the_most_dangerous_crash(tmp_path):
    import tensorflow as tf

    prefix = str(tmp_path / "model")
    save_in_process(prefix, 1, "merge2")
    steps = expected_steps("single", "merge2")
    n = steps.index("renaming the new index into place (the commit point)") + 1
    r = run_child(prefix, 2, "single", False, n)  # new data in place, old index and data in backups
    assert r.returncode == 137, r.stderr
    assert not os.path.exists(prefix + ".index")
    bundle.recover_bundle(prefix)
    reader = tf.train.load_checkpoint(prefix)
    want = generation(1)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(want)
    for name, v in want.items():
        got = np.asarray(reader.get_tensor(name))
        assert got.dtype == v.dtype and got.shape == v.shape and got.tolist() == v.tolist(), name


# --- readers during a commit ------------------------------------------------------------------------
def test_a_reader_waits_for_a_commit_in_flight(tmp_path):
    prefix = mid_commit_state(tmp_path, _core.temp_owner())  # this process is "committing"
    owner = _core.temp_owner()

    def finish_the_commit():  # as the commit would: here, by putting generation 1 back
        os.replace(f"{prefix}.data-00000-of-00001.skprev-{owner}", prefix + ".data-00000-of-00001")
        for k in range(2):
            os.unlink(f"{prefix}.data-{k:05d}-of-00002")
        os.replace(f"{prefix}.index.skprev-{owner}", prefix + ".index")

    timer = threading.Timer(0.3, finish_the_commit)
    timer.start()
    try:
        assert which_generation(prefix) == 1  # no NotFoundError while the index is away
    finally:
        timer.join()


def test_a_reader_names_what_an_interrupted_commit_left(tmp_path):
    host, _, inc = _core.temp_owner().split("-")
    owner = f"{host}-{dead_pid()}-{inc}"
    prefix = mid_commit_state(tmp_path, owner)
    left = r"interrupted save left .*model\.index\.skprev-.*recover_bundle"
    with pytest.raises(errors.NotFoundError, match=left):
        _core.Reader(prefix)
    # The Python layer settles the prefix first (checkpoint_paths.settle): the writer is dead, so its
    # backups are put back and the read sees the previous generation whole.
    assert which_generation(prefix) == 1
    assert not [n for n in os.listdir(tmp_path) if ".skprev-" in n]


def test_readers_see_one_whole_generation_while_a_prefix_is_re_saved(tmp_path):
    """Generations alternate in shapes, names and shard counts: a reader pairing one generation's index
    with another's data files would fail a size or CRC check or return a mix."""
    prefix = str(tmp_path / "model")
    save_in_process(prefix, 1, "single")
    stop = threading.Event()
    failures: list[str] = []
    reads = [0]

    def reader():
        while not stop.is_set():
            try:
                which_generation(prefix)
                reads[0] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            save_in_process(prefix, 1 + i % 2, "merge2" if i % 3 == 0 else "single")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and reads[0] > 0
