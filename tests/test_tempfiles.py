"""saverkit.tempfiles: temporaries carry their owner; cleanup removes only a dead writer's, never a user's
folder or a live writer's (another thread, Saver or process)."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import saverkit as sk
from bundle_helpers import temporaries
from saverkit import _core, cli, errors, tempfiles
from saverkit.train import Checkpoint, CheckpointManager

HEX32 = "0123456789abcdef" * 2


def dead_owner() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host, _, incarnation = _core.temp_owner().split("-")
    return f"{host}-{child.pid}-{incarnation}"


@pytest.fixture
def sess():
    g = sk.Graph()
    with g.as_default(), sk.Session(graph=g) as s:
        s.v = sk.Variable(np.arange(6, dtype=np.float32), name="v")
        s.run(s.v.initializer)
        yield s


def _user_folders(d):
    """Folders a user keeps next to checkpoints, named like TF's or saverkit's temporaries."""
    made = []
    for name in ["model_temp", "model-7_temp", "ckpt-1_temp", f"model-2_temp_{HEX32}", "out_temp"]:
        (d / name).mkdir()
        (d / name / "notes.txt").write_text("mine")
        (d / name / "part-00000-of-00001.index").write_text("my own file with a part's name")
        made.append(d / name)
    return made


def _assert_untouched(folders):
    for f in folders:
        assert (f / "notes.txt").read_text() == "mine", f
        assert (f / "part-00000-of-00001.index").exists(), f


@pytest.mark.parametrize("sharded", [False, True])
def test_saver_never_removes_user_folders_named_like_temporaries(tmp_path, sess, sharded):
    folders = _user_folders(tmp_path)
    saver = sk.train.Saver({"v": sess.v}, sharded=sharded, max_to_keep=2)
    for step in [1, 2, 7, 7]:
        saver.save(sess, str(tmp_path / "model"), global_step=step)
    _assert_untouched(folders)
    assert temporaries(tmp_path) == [f"model-2_temp_{HEX32}"]  # the user's, unmarked: never ours


def test_checkpoint_manager_and_convert_never_remove_user_folders(tmp_path, sess, capsys):
    folders = _user_folders(tmp_path)
    manager = CheckpointManager(Checkpoint(v=sess.v), str(tmp_path), max_to_keep=1)
    for _ in range(2):
        manager.save(session=sess)
    assert cli.main(["convert", manager.latest_checkpoint, str(tmp_path / "out")]) == 0
    _assert_untouched(folders)


def test_a_dead_writers_temporaries_are_removed_and_nothing_else(tmp_path, sess):
    dead = dead_owner()
    part_dir = tmp_path / f"model-3_temp_{HEX32}"
    part_dir.mkdir()
    (part_dir / ".saverkit-temp").write_text(dead)
    (part_dir / "part-00000-of-00002.index").write_bytes(b"x")
    (part_dir / f"part-00001-of-00002.data-00000-of-00001.sktmp-{dead}-0badf00d").write_bytes(b"x")
    (part_dir / "user.txt").write_text("a file saverkit did not write")  # keeps the directory
    stale = [f"model-3.index.sktmp-{dead}-00000001", f"checkpoint.sktmp-{dead}-00000002",
             f"out.npz.sktmp-{dead}-00000003", f"other-9.meta.sktmp-{dead}-00000004"]
    lookalikes = ["model-3.index.tempstate123", f"checkpoint.tmp{HEX32}", "model-3.meta.tmpab12cd",
                  f"model-3.index.sktmp-{dead}", f"model-3.index.sktmp-{dead}-0000000g",
                  "model-3.index.sktmp-x"]
    for name in stale + lookalikes:
        (tmp_path / name).write_bytes(b"x")
    removed = tempfiles.remove_stale(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == sorted([*stale, part_dir.name])
    assert sorted(os.listdir(part_dir)) == [".saverkit-temp", "user.txt"]  # marker kept: dir not empty
    assert sorted(os.listdir(tmp_path)) == sorted([*lookalikes, part_dir.name])
    (part_dir / "user.txt").unlink()
    tempfiles.remove_stale(str(tmp_path))
    assert not part_dir.exists()


def test_a_part_directory_killed_before_its_rename_is_removed_unless_it_holds_more(tmp_path):
    """make_part_dir builds ``<dir>.sktmp-<owner>-<rand>`` with its marker, then renames it: a writer
    killed in between leaves an empty directory or one with just the marker (regression: a kill between
    mkdir and the marker left an unmarked part directory that no cleanup would ever remove)."""
    dead = dead_owner()
    empty = tmp_path / f"model_temp_{HEX32}.sktmp-{dead}-00000001"
    marked = tmp_path / f"model_temp_{HEX32}.sktmp-{dead}-00000002"
    used = tmp_path / f"model_temp_{HEX32}.sktmp-{dead}-00000003"
    for d in (empty, marked, used):
        d.mkdir()
    (marked / ".saverkit-temp").write_text(dead)
    (used / ".saverkit-temp").write_text(dead)
    (used / "user.txt").write_text("not saverkit's")
    removed = tempfiles.remove_stale(str(tmp_path))
    assert sorted(removed) == sorted([str(empty), str(marked)])
    assert os.listdir(tmp_path) == [used.name]
    assert sorted(os.listdir(used)) == [".saverkit-temp", "user.txt"]


def test_make_part_dir_leaves_a_marked_directory_and_no_temporary(tmp_path):
    directory = tmp_path / f"model_temp_{HEX32}"
    tempfiles.make_part_dir(str(directory / "part-00000-of-00002"))
    tempfiles.make_part_dir(str(directory / "part-00001-of-00002"))  # the second shard finds it
    assert os.listdir(tmp_path) == [directory.name]
    assert (directory / ".saverkit-temp").read_text() == _core.temp_owner()


def test_a_live_writers_temporaries_are_never_touched(tmp_path):
    own = _core.temp_owner()
    host, pid, incarnation = own.split("-")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other_process = f"{host}-{sleeper.pid}-{'f' * 8}"
        earlier_incarnation = f"{host}-{pid}-{'0' * 8 if incarnation != '0' * 8 else '1' * 8}"
        other_host_recent = f"{'0' * 8 if host != '0' * 8 else '1' * 8}-{sleeper.pid}-{incarnation}"
        live = [f"model.index.sktmp-{own}-00000001", f"checkpoint.sktmp-{other_process}-00000002",
                f"model.meta.sktmp-{other_host_recent}-00000003"]
        for name in live:
            (tmp_path / name).write_bytes(b"x")
        (tmp_path / f"model.data-00000-of-00001.sktmp-{earlier_incarnation}-00000004").write_bytes(b"x")
        tempfiles.remove_stale(str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == sorted(live)  # only the dead incarnation's went
    finally:
        sleeper.kill()
        sleeper.wait()


def test_owner_staleness_rules():
    own = _core.temp_owner()
    host, pid, incarnation = own.split("-")
    other_host = ("0" * 8) if host != "0" * 8 else "1" * 8
    assert not _core.owner_is_stale(own, 1e9)
    assert _core.owner_is_stale(dead_owner(), 0)
    assert not _core.owner_is_stale(f"{other_host}-{pid}-{incarnation}", 60)
    assert _core.owner_is_stale(f"{other_host}-{pid}-{incarnation}", 2 * 3600)
    for bad in ["", "x", f"{host}-{pid}", f"{host}-abc-{incarnation}", f"{host.upper()}-{pid}-{incarnation}"]:
        assert not _core.owner_is_stale(bad, 1e9), bad


def test_two_savers_of_different_models_in_one_folder_never_break_each_other(tmp_path, sess):
    """Each one's cleanup used to delete the other's in-flight state-file temporary (NotFoundError)."""
    failures = []

    def loop(name):
        saver = sk.train.Saver({"v": sess.v}, max_to_keep=2)
        try:
            for step in range(60):
                saver.save(sess, str(tmp_path / name), global_step=step, write_meta_graph=step % 2 == 0)
        except errors.OpError as e:  # pragma: no cover - the regression
            failures.append(e)

    threads = [threading.Thread(target=loop, args=(n,)) for n in ("model_a", "model_b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert temporaries(tmp_path) == []


def test_a_killed_checkpoint_manager_and_convert_leave_nothing_after_their_next_run(tmp_path, sess, capsys):
    script = f"""
import os, numpy as np, saverkit as sk
from saverkit.train import Checkpoint, CheckpointManager
from saverkit import cli
v = sk.Variable(np.ones(4, np.float32), name="v")
with sk.Session() as s:
    s.run(v.initializer)
    m = CheckpointManager(Checkpoint(v=v), {str(tmp_path)!r}, max_to_keep=2)
    m.save(session=s)
    m.save(session=s)
"""
    # The engine reads the hook once; a save takes four commit steps (part data and index into the part
    # directory, then the merge's): step 5 is the second save's first rename.
    env = dict(os.environ, SAVERKIT_TEST_CRASH_AT="commit:5")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 137, r.stderr
    assert "commit:5: exiting before renaming a new data file" in r.stderr
    left = temporaries(tmp_path)
    assert left, "the crash point left no temporary: the test would prove nothing"
    manager = CheckpointManager(Checkpoint(v=sess.v), str(tmp_path), max_to_keep=2)
    manager.save(session=sess)
    assert temporaries(tmp_path) == []
    out = tmp_path / "out.npz"
    (tmp_path / f"out.npz.sktmp-{dead_owner()}-00000001").write_bytes(b"half")
    assert cli.main(["convert", manager.latest_checkpoint, str(out)]) == 0
    assert temporaries(tmp_path) == []


def test_write_bundle_removes_what_a_killed_write_of_the_same_checkpoint_left(tmp_path):
    """Regression (kill campaign, convert lane): the bundle API's own temporaries outlived a killed write."""
    from saverkit.bundle import write_bundle

    dead = dead_owner()
    mine = [f"model.data-00000-of-00001.sktmp-{dead}-00000001", f"model.index.sktmp-{dead}-00000002"]
    other = [f"other.index.sktmp-{dead}-00000003"]  # another checkpoint's: its own writer's business
    for name in mine + other:
        (tmp_path / name).write_bytes(b"half")
    write_bundle(str(tmp_path / "model"), ["w"], [np.ones(3, np.float32)])
    assert sorted(os.listdir(tmp_path)) == sorted(["model.data-00000-of-00001", "model.index", *other])


def test_a_part_directory_killed_while_being_emptied_is_removed(tmp_path):
    """Regression (kill campaign in CI): a save killed between removing a merged part directory's marker
    and the directory left an unmarked folder for ever. Now the directory is first renamed to a stamped
    temporary, which remove_stale empties once its writer is gone."""
    dead = dead_owner()
    emptying = tmp_path / f"model-9_temp_{HEX32}.sktmp-{dead}-00000001"
    emptying.mkdir()
    (emptying / "part-00001-of-00002.index").write_bytes(b"x")
    (emptying / f"part-00000-of-00002.data-00000-of-00001.sktmp-{dead}-0badf00d").write_bytes(b"x")
    assert tempfiles.remove_stale(str(tmp_path)) == [str(emptying)]
    assert os.listdir(tmp_path) == []


def test_removing_a_part_directory_leaves_no_unmarked_folder_at_any_step(tmp_path, monkeypatch):
    directory = tmp_path / f"model-9_temp_{HEX32}"
    tempfiles.make_part_dir(str(directory / "part-00000-of-00001"))
    (directory / "part-00000-of-00001.index").write_bytes(b"x")
    seen = []
    real_unlink = os.unlink

    def unlink(path, *a, **k):  # what a kill at this moment would leave
        seen.append(sorted(os.listdir(tmp_path)))
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "unlink", unlink)
    tempfiles.remove_part_dir(str(directory))
    assert os.listdir(tmp_path) == []
    assert seen and all(len(names) == 1 and ".sktmp-" in names[0] for names in seen)
