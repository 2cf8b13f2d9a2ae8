"""Retention (Saver max_to_keep, CheckpointManager) deletes only checkpoints of its own directory, taken
literally: never another folder's files through a glob, never what a state-file entry names outside it."""

import os
import shutil

import numpy as np
import pytest
import saverkit as sk
from saverkit.train import Checkpoint, CheckpointManager, checkpoint_management


@pytest.fixture
def sess():
    g = sk.Graph()
    with g.as_default(), sk.Session(graph=g) as s:
        v = sk.Variable(np.float32(1.0), name="v")
        s.run(v.initializer)
        s.v = v
        yield s


def _prefixes(d):
    return sorted(n[: -len(".index")] for n in os.listdir(d) if n.endswith(".index"))


def _data(d):
    return sorted(n for n in os.listdir(d) if ".data-" in n)


def _save_other_model(directory, sess, steps):
    other = sk.train.Saver(max_to_keep=None)
    for step in steps:
        other.save(sess, os.path.join(directory, "model"), global_step=step, write_state=False)


@pytest.mark.parametrize("folder", ["layers=[64,64]", "run[12]", "sweep*", "lr?1"])
def test_saver_retention_in_a_folder_with_glob_characters_touches_only_its_own_files(tmp_path, sess, folder):
    ours = tmp_path / folder
    ours.mkdir()
    # Folders the unescaped glob of `folder` matches: run1/run2 for "run[12]", layers=6 for "[64,64]", ...
    lookalikes = ["layers=6", "layers=4", "run1", "run2", "sweep-a", "lr01"]
    for name in lookalikes:
        (tmp_path / name).mkdir()
        _save_other_model(str(tmp_path / name), sess, range(4))
    before = {name: _data(tmp_path / name) for name in lookalikes}
    saver = sk.train.Saver(max_to_keep=2)
    for step in range(4):
        saver.save(sess, str(ours / "model"), global_step=step)
    assert _prefixes(ours) == ["model-2", "model-3"]
    assert _data(ours) == ["model-2.data-00000-of-00001", "model-3.data-00000-of-00001"]  # none leaked
    assert sorted(n for n in os.listdir(ours) if n.endswith(".meta")) == ["model-2.meta", "model-3.meta"]
    for name in lookalikes:
        assert _data(tmp_path / name) == before[name], name


def test_checkpoint_manager_in_a_folder_with_glob_characters(tmp_path, sess):
    ours = tmp_path / "run[12]"
    ours.mkdir()
    (tmp_path / "run1").mkdir()
    other = CheckpointManager(Checkpoint(v=sess.v), str(tmp_path / "run1"), max_to_keep=None)
    for _ in range(3):
        other.save(session=sess)
    before = _data(tmp_path / "run1")
    manager = CheckpointManager(Checkpoint(v=sess.v), str(ours), max_to_keep=1)
    for _ in range(3):
        manager.save(session=sess)
    assert _prefixes(ours) == ["ckpt-3"]
    assert _data(ours) == ["ckpt-3.data-00000-of-00001"]
    assert _data(tmp_path / "run1") == before


def _state_with_entries(directory, entries, latest):
    checkpoint_management.update_checkpoint_state(
        str(directory), latest, [*entries, latest],
        all_model_checkpoint_timestamps=[1.0] * (len(entries) + 1), last_preserved_timestamp=0.5)


def _hostile_entries(tmp_path, sess):
    """A checkpoint directory whose state file names checkpoints elsewhere: an absolute path in another
    folder, a `../` path, a symbolic link to another folder's checkpoint, and a glob."""
    run = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    _save_other_model(str(elsewhere), sess, range(3))
    os.symlink(elsewhere / "model-2.index", run / "linked-2.index")
    os.symlink(elsewhere / "model-2.data-00000-of-00001", run / "linked-2.data-00000-of-00001")
    entries = [str(elsewhere / "model-0"), os.path.join("..", "elsewhere", "model-1"), str(run / "linked-2"),
               str(run / "model-*")]
    return run, elsewhere, entries


def test_saver_retention_ignores_state_entries_outside_its_folder_with_a_warning(tmp_path, sess):
    run, elsewhere, entries = _hostile_entries(tmp_path, sess)
    _save_other_model(str(run), sess, [7])  # model-7: a real checkpoint of this folder, also listed
    shutil.copy(elsewhere / "model-0.index", run / "keep-me.index")  # not listed: must stay
    _state_with_entries(run, entries, str(run / "model-7"))
    before = sorted(os.listdir(elsewhere))
    saver = sk.train.Saver(max_to_keep=1)
    saver.recover_last_checkpoints(str(run))
    with pytest.warns(UserWarning, match="Not deleting") as record:
        saver.save(sess, str(run / "model"), global_step=8)
    messages = "\n".join(str(w.message) for w in record)
    assert "not in the checkpoint directory" in messages and "symbolic links" in messages
    assert sorted(os.listdir(elsewhere)) == before
    assert os.path.islink(run / "linked-2.index")
    assert _prefixes(run) == ["keep-me", "linked-2", "model-8"]  # model-7 was ours: deleted


def test_checkpoint_manager_retention_ignores_state_entries_outside_its_folder(tmp_path, sess):
    run, elsewhere, entries = _hostile_entries(tmp_path, sess)
    _state_with_entries(run, entries, str(run / "linked-2"))
    before = sorted(os.listdir(elsewhere))
    manager = CheckpointManager(Checkpoint(v=sess.v), str(run), max_to_keep=1)
    with pytest.warns(UserWarning, match="Not deleting"):
        manager.save(session=sess)
    assert sorted(os.listdir(elsewhere)) == before
    assert os.path.islink(run / "linked-2.index")


def test_delete_managed_checkpoint_takes_the_prefix_literally(tmp_path, sess):
    _save_other_model(str(tmp_path), sess, [1, 2])
    with pytest.warns(UserWarning, match="no index file"):
        assert not checkpoint_management.delete_managed_checkpoint(str(tmp_path / "model-?"), str(tmp_path))
    assert _prefixes(tmp_path) == ["model-1", "model-2"]
    assert checkpoint_management.delete_managed_checkpoint(str(tmp_path / "model-1"), str(tmp_path))
    assert _prefixes(tmp_path) == ["model-2"]
    assert sorted(os.listdir(tmp_path)) == ["model-2.data-00000-of-00001", "model-2.index", "model-2.meta"]
