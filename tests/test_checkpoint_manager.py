"""saverkit.train.CheckpointManager: retention, the state file TF writes, recovery, intervals."""

import os
import re

import numpy as np
import pytest
import saverkit as sk
from saverkit.train import Checkpoint, CheckpointManager, checkpoint_management


@pytest.fixture
def sess():
    g = sk.Graph()
    with g.as_default(), sk.Session(graph=g) as s:
        yield s


def make_checkpoint(sess, value=1.0):
    v = sk.Variable(np.float32(value), name="v")
    sess.run(v.initializer)
    return Checkpoint(v=v), v


def files(directory):
    return sorted(os.listdir(directory))


def ckpt_files(*numbers, name="ckpt"):
    return sorted(f for n in numbers for f in (f"{name}-{n}.index", f"{name}-{n}.data-00000-of-00001"))


def test_keeps_the_newest_max_to_keep_on_disk_and_in_the_state_file(tmp_path, sess):
    ckpt, _ = make_checkpoint(sess)
    mgr = CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    paths = [mgr.save(session=sess) for _ in range(6)]
    assert paths == [str(tmp_path / f"ckpt-{i}") for i in range(1, 7)]
    assert files(tmp_path) == ["checkpoint"] + ckpt_files(4, 5, 6)
    assert mgr.checkpoints == paths[3:]
    assert mgr.latest_checkpoint == paths[-1]
    state = checkpoint_management.get_checkpoint_state(str(tmp_path))
    assert list(state.all_model_checkpoint_paths) == paths[3:]
    assert len(state.all_model_checkpoint_timestamps) == 3
    text = (tmp_path / "checkpoint").read_text()
    assert re.fullmatch(
        r'model_checkpoint_path: "ckpt-6"\n'
        r'all_model_checkpoint_paths: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-5"\n'
        r'all_model_checkpoint_paths: "ckpt-6"\n'
        r"(all_model_checkpoint_timestamps: \d+\.\d+\n){3}last_preserved_timestamp: \d+\.\d+\n",
        text,
    ), text
    ts = list(state.all_model_checkpoint_timestamps)
    assert ts == sorted(ts) and state.last_preserved_timestamp < ts[0]


def test_a_new_manager_recovers_the_state_and_sweeps_on_the_next_save(tmp_path, sess):
    ckpt, _ = make_checkpoint(sess)
    first = CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    for _ in range(3):
        first.save(session=sess)
    second = CheckpointManager(ckpt, str(tmp_path), max_to_keep=2)
    assert second.checkpoints == first.checkpoints
    assert second.latest_checkpoint == str(tmp_path / "ckpt-3")
    assert files(tmp_path) == ["checkpoint"] + ckpt_files(
        1, 2, 3
    )  # nothing deleted on construction, as in TF
    second.save(session=sess)
    assert files(tmp_path) == ["checkpoint"] + ckpt_files(3, 4)
    assert second.checkpoints == [str(tmp_path / "ckpt-3"), str(tmp_path / "ckpt-4")]


def test_max_to_keep_none_keeps_everything_and_zero_is_rejected(tmp_path, sess):
    ckpt, _ = make_checkpoint(sess)
    mgr = CheckpointManager(ckpt, str(tmp_path), max_to_keep=None)
    for _ in range(4):
        mgr.save(session=sess)
    assert files(tmp_path) == ["checkpoint"] + ckpt_files(1, 2, 3, 4)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive integer or `None`"):
            CheckpointManager(ckpt, str(tmp_path), max_to_keep=bad)


def test_keep_checkpoint_every_n_hours_preserves_old_checkpoints(tmp_path, sess, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr("saverkit.train.checkpoint_manager.time.time", lambda: clock[0])
    ckpt, _ = make_checkpoint(sess)
    mgr = CheckpointManager(ckpt, str(tmp_path), max_to_keep=1, keep_checkpoint_every_n_hours=1)
    for _ in range(5):  # saves at +0, +30min, +60min, +90min, +120min
        mgr.save(session=sess)
        clock[0] += 1800
    # Leaving the active set, a checkpoint is kept if it is >= 1h newer than the last preserved one (initially
    # the manager's start - 1s): ckpt-1 (+0) and ckpt-2 (+30min) are deleted, ckpt-3 (+60min) is preserved,
    # ckpt-4 (+90min) is only 30min newer than ckpt-3 and deleted; ckpt-5 is the active one.
    assert files(tmp_path) == ["checkpoint"] + ckpt_files(3, 5)
    assert mgr.checkpoints == [str(tmp_path / "ckpt-5")]
    state = checkpoint_management.get_checkpoint_state(str(tmp_path))
    assert state.last_preserved_timestamp == 1_000_000.0 + 3600


def test_explicit_checkpoint_numbers_and_step_variables(tmp_path, sess):
    ckpt, _ = make_checkpoint(sess)
    step = sk.Variable(np.int64(100), name="step")
    sess.run(step.initializer)
    mgr = CheckpointManager(ckpt, str(tmp_path), max_to_keep=5, checkpoint_name="model")
    assert mgr.save(checkpoint_number=7, session=sess) == str(tmp_path / "model-7")
    assert mgr.save(checkpoint_number=step, session=sess) == str(tmp_path / "model-100")
    assert sess.run(ckpt.save_counter.value()) == 2  # still counted
    assert mgr.save(checkpoint_number=7, session=sess) == str(tmp_path / "model-7")
    assert mgr.checkpoints == [str(tmp_path / "model-100"), str(tmp_path / "model-7")]


def test_checkpoint_interval_skips_saves_until_the_step_advances(tmp_path, sess):
    ckpt, _ = make_checkpoint(sess)
    step = sk.Variable(np.int64(0), name="step")
    sess.run(step.initializer)
    mgr = CheckpointManager(
        ckpt, str(tmp_path), max_to_keep=None, step_counter=step, checkpoint_interval=10, session=sess
    )
    assert mgr.checkpoint_interval == 10
    saved = []
    for s in (0, 5, 10, 10, 15, 21):
        sess.run(step.assign(np.int64(s)))
        saved.append(mgr.save() is not None)
    assert saved == [True, False, True, False, False, True]
    sess.run(step.assign(np.int64(22)))
    assert mgr.save(check_interval=False) is not None
    assert mgr.save(check_interval=False) is None  # same step twice
    with pytest.raises(ValueError, match="step_counter"):
        CheckpointManager(ckpt, str(tmp_path), max_to_keep=1, checkpoint_interval=5)


def test_restore_or_initialize(tmp_path, sess):
    ckpt, v = make_checkpoint(sess, 5.0)
    calls = []
    mgr = CheckpointManager(ckpt, str(tmp_path / "run"), max_to_keep=2, init_fn=lambda: calls.append(1))
    assert mgr.restore_or_initialize(session=sess) is None and calls == [1]
    path = mgr.save(session=sess)
    sess.run(v.assign(np.float32(0)))
    again = CheckpointManager(ckpt, str(tmp_path / "run"), max_to_keep=2, init_fn=lambda: calls.append(2))
    assert again.restore_or_initialize(session=sess) == path
    assert sess.run(v.value()) == 5.0 and calls == [1]
    assert again.directory == str(tmp_path / "run")
    again.sync()
