"""saverkit.checkpoint_paths: the one resolver every entry point uses, and the bounded state-file read."""

import logging
import os

import numpy as np
import pytest
import saverkit as sk
from saverkit import bundle, checkpoint_paths, errors
from saverkit.train import checkpoint_management


@pytest.fixture
def graph():
    g = sk.Graph()
    with g.as_default():
        yield g


def _save_model(directory, value=3.0):
    v = sk.Variable(np.float32(value), name="v")
    saver = sk.train.Saver([v])
    with sk.Session() as sess:
        sess.run(v.initializer)
        return v, saver, saver.save(sess, os.path.join(directory, "model"))


def test_a_prefix_that_is_also_a_directory_saves_and_restores_like_tensorflow(graph, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("the user's own folder")
    v, saver, prefix = _save_model(str(tmp_path))
    assert prefix == str(tmp_path / "model")
    with sk.Session() as sess:
        saver.restore(sess, prefix)
        assert sess.run(v) == np.float32(3.0)
    # every reader takes it as the prefix (TF's RestoreV2 does), and finds it through the state file
    assert sk.train.load_checkpoint(prefix).get_tensor("v") == np.float32(3.0)
    assert sk.train.latest_checkpoint(str(tmp_path)) == prefix
    assert bundle.resolve_prefix(str(tmp_path)) == prefix
    assert (tmp_path / "model" / "notes.txt").read_text() == "the user's own folder"


def _state_ignored(caplog, directory):
    with caplog.at_level(logging.WARNING):
        assert checkpoint_management.get_checkpoint_state(str(directory)) is None
        assert sk.train.latest_checkpoint(str(directory)) is None
    return caplog.text


def test_a_state_file_linked_to_dev_zero_is_ignored_with_a_clear_warning(tmp_path, caplog):
    os.symlink("/dev/zero", tmp_path / "checkpoint")
    assert "is not a regular file" in _state_ignored(caplog, tmp_path)
    with pytest.raises(errors.NotFoundError, match="state file is unusable"):
        bundle.resolve_prefix(str(tmp_path))


def test_a_huge_state_file_is_read_only_up_to_the_limit(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(checkpoint_paths, "STATE_FILE_LIMIT", 1 << 10)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "m"\n' * 100)
    assert "larger than 1024 bytes" in _state_ignored(caplog, tmp_path)


def test_a_fifo_named_checkpoint_does_not_block(tmp_path, caplog):
    os.mkfifo(tmp_path / "checkpoint")
    assert "is not a regular file" in _state_ignored(caplog, tmp_path)


def test_a_state_file_at_the_limit_is_read(tmp_path, monkeypatch):
    text = 'model_checkpoint_path: "m"\n'
    monkeypatch.setattr(checkpoint_paths, "STATE_FILE_LIMIT", len(text))
    (tmp_path / "checkpoint").write_text(text)
    state = checkpoint_management.get_checkpoint_state(str(tmp_path))
    assert state.model_checkpoint_path == str(tmp_path / "m")
