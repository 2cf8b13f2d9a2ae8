"""The `checkpoint` state file (spec §9) and the helpers that find, date and delete checkpoint files."""

import logging
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from saverkit import errors, train
from saverkit.protobuf.checkpoint_state_pb2 import CheckpointState
from saverkit.protobuf.saver_pb2 import SaverDef
from saverkit.train import checkpoint_management as cm

FIXTURES = Path(__file__).parent / "fixtures" / "tf-2.21"
STATE_FILES = sorted(FIXTURES.glob("*/checkpoint"))
# Every awkward character class of spec §9: non-ASCII, both quotes, backslash, tab, newline, CR, \x01, DEL.
ODD = "d\u00e9j\u00e0 \"q\" 'a' back\\slash\ttab\nnl\rcr\x01one\x7fdel \u2603"
ODD_ESCAPED = "d\u00e9j\u00e0 \\\"q\\\" \\'a\\' back\\\\slash\\ttab\\nnl\\rcr\\001one\\177del \u2603"


def parse(text):
    state = CheckpointState()
    text_format.Merge(text, state)
    return state


def touch_checkpoint(prefix, num_shards=1):
    """Files of a V2 checkpoint: the .index (copied from a real one, so it ends with the magic) + data."""
    shutil.copyfile(FIXTURES / "v1_max_to_keep" / "model.ckpt-4.index", f"{prefix}.index")
    for i in range(num_shards):
        Path(f"{prefix}.data-{i:05d}-of-{num_shards:05d}").write_bytes(b"")


# --- byte format ---------------------------------------------------------------------------------------

def test_fixture_set_has_every_tf_state_file():
    assert len(STATE_FILES) == 5


@pytest.mark.parametrize("path", STATE_FILES, ids=lambda p: p.parent.name)
def test_rewriting_a_tf_state_file_reproduces_its_bytes(path, tmp_path):
    state = parse(path.read_text("utf-8"))
    train.update_checkpoint_state(
        tmp_path, state.model_checkpoint_path, list(state.all_model_checkpoint_paths),
        all_model_checkpoint_timestamps=list(state.all_model_checkpoint_timestamps),
        last_preserved_timestamp=state.last_preserved_timestamp)
    assert (tmp_path / "checkpoint").read_bytes() == path.read_bytes()


def test_spec_example_saver_with_absolute_paths(tmp_path):
    train.update_checkpoint_state(tmp_path, "/abs/dir/dtypes/model-7",
                                  ["/abs/dir/dtypes/model", "/abs/dir/dtypes/model-7"])
    assert (tmp_path / "checkpoint").read_bytes() == (
        b'model_checkpoint_path: "/abs/dir/dtypes/model-7"\n'
        b'all_model_checkpoint_paths: "/abs/dir/dtypes/model"\n'
        b'all_model_checkpoint_paths: "/abs/dir/dtypes/model-7"\n')


def test_spec_example_manager_with_relative_paths_and_timestamps(tmp_path):
    train.update_checkpoint_state_internal(
        tmp_path, str(tmp_path / "ckpt-3"), [str(tmp_path / "ckpt-2"), str(tmp_path / "ckpt-3")],
        save_relative_paths=True, all_model_checkpoint_timestamps=[1795559846.8154352, 1795559846.822568],
        last_preserved_timestamp=1795559845.7797403)
    assert (tmp_path / "checkpoint").read_bytes() == (
        b'model_checkpoint_path: "ckpt-3"\n'
        b'all_model_checkpoint_paths: "ckpt-2"\n'
        b'all_model_checkpoint_paths: "ckpt-3"\n'
        b"all_model_checkpoint_timestamps: 1795559846.8154352\n"
        b"all_model_checkpoint_timestamps: 1795559846.822568\n"
        b"last_preserved_timestamp: 1795559845.7797403\n")


def test_doubles_use_shortest_round_trip_repr_and_zero_is_omitted(tmp_path):
    train.update_checkpoint_state(tmp_path, "m", all_model_checkpoint_timestamps=[1700000000.0],
                                  last_preserved_timestamp=0.0)
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "m"\nall_model_checkpoint_paths: "m"\n'
        "all_model_checkpoint_timestamps: 1700000000.0\n")
    train.update_checkpoint_state(tmp_path, "m", last_preserved_timestamp=0.5)
    assert (tmp_path / "checkpoint").read_text().endswith("last_preserved_timestamp: 0.5\n")


def test_strings_are_escaped_like_the_protobuf_text_printer_with_utf8_verbatim(tmp_path):
    train.update_checkpoint_state(tmp_path, ODD)
    expected = f'model_checkpoint_path: "{ODD_ESCAPED}"\nall_model_checkpoint_paths: "{ODD_ESCAPED}"\n'
    assert (tmp_path / "checkpoint").read_bytes() == expected.encode("utf-8")
    assert "\u00e9".encode() in (tmp_path / "checkpoint").read_bytes()  # verbatim, not \303\251
    assert parse(expected).model_checkpoint_path == ODD


paths = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
doubles = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e16, 1e-7, 5e-324])


@settings(max_examples=300, deadline=None)
@given(st.lists(paths, max_size=4), paths, st.lists(doubles, max_size=4), doubles)
def test_formatter_agrees_with_protobuf_text_printer(all_paths, model, timestamps, last):
    state = CheckpointState(model_checkpoint_path=model, all_model_checkpoint_paths=all_paths,
                            all_model_checkpoint_timestamps=timestamps, last_preserved_timestamp=last)
    text = cm._format_checkpoint_state(state)
    assert text == text_format.MessageToString(state, as_utf8=True)
    back = parse(text)
    assert back.model_checkpoint_path == model and list(back.all_model_checkpoint_paths) == all_paths
    got = [*back.all_model_checkpoint_timestamps, back.last_preserved_timestamp]
    for a, b in zip(got, [*timestamps, last], strict=True):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


# --- writing -------------------------------------------------------------------------------------------

def test_write_goes_through_a_temp_file_in_the_same_directory(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((src, dst, Path(src).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    train.update_checkpoint_state(tmp_path, "model-1")
    [(src, dst, content)] = renames
    assert dst == str(tmp_path / "checkpoint")
    owner = r"[0-9a-f]{8}-\d+-[0-9a-f]{8}"
    assert re.fullmatch(re.escape(str(tmp_path / "checkpoint")) + rf"\.sktmp-{owner}-[0-9a-f]{{8}}", src)
    assert content == (tmp_path / "checkpoint").read_bytes()
    assert os.listdir(tmp_path) == ["checkpoint"]


def test_failed_rename_leaves_old_file_intact_and_no_temp_file(tmp_path, monkeypatch):
    train.update_checkpoint_state(tmp_path, "model-1")
    before = (tmp_path / "checkpoint").read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(errors.OpError, match="checkpoint.*No space left"):
        train.update_checkpoint_state(tmp_path, "model-2")
    assert (tmp_path / "checkpoint").read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint"]


def test_missing_directory_is_a_not_found_error_naming_the_file(tmp_path):
    with pytest.raises(errors.NotFoundError, match=re.escape(str(tmp_path / "nope" / "checkpoint"))):
        train.update_checkpoint_state(tmp_path / "nope", "model-1")


def test_durable_write_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                  real_fsync(fd)))
    train.update_checkpoint_state(tmp_path, "model-1")
    assert synced == []
    train.update_checkpoint_state(tmp_path, "model-1", durable=True)
    assert len(synced) == 2
    assert re.search(r"/checkpoint\.sktmp-[0-9a-f]{8}-\d+-[0-9a-f]{8}-[0-9a-f]{8}$", synced[0])
    assert synced[1] == str(tmp_path)


def test_latest_filename_names_the_state_file(tmp_path):
    train.update_checkpoint_state(tmp_path, "model-1", latest_filename="state")
    assert os.listdir(tmp_path) == ["state"]
    assert train.get_checkpoint_state(tmp_path) is None
    assert train.get_checkpoint_state(tmp_path, "state").model_checkpoint_path == str(tmp_path / "model-1")


@pytest.mark.parametrize("model", ["{d}/checkpoint", "checkpoint", "{d}/./checkpoint"])
def test_state_file_may_not_overwrite_the_checkpoint(tmp_path, model):
    with pytest.raises(RuntimeError, match="conflicts with path used for checkpoint state"):
        train.update_checkpoint_state(tmp_path, model.format(d=tmp_path))
    with pytest.raises(RuntimeError, match="conflicts"):
        train.update_checkpoint_state(tmp_path, str(tmp_path / "model-1"), latest_filename="model-1")
    assert os.listdir(tmp_path) == []


def test_generate_appends_model_path_and_leaves_callers_list_alone():
    given_paths = ["/d/m-1", "/d/m-2"]
    state = train.generate_checkpoint_state_proto("/d", "/d/m-3", given_paths)
    assert list(state.all_model_checkpoint_paths) == ["/d/m-1", "/d/m-2", "/d/m-3"]
    assert given_paths == ["/d/m-1", "/d/m-2"]
    state = train.generate_checkpoint_state_proto("/d", "/d/m-2", given_paths)
    assert list(state.all_model_checkpoint_paths) == given_paths


def test_generate_rejects_timestamps_that_do_not_match_paths():
    with pytest.raises(ValueError, match="must match checkpoint paths"):
        train.generate_checkpoint_state_proto("/d", "/d/m-2", ["/d/m-1", "/d/m-2"], [1.0])


def test_relative_save_dir_makes_relative_paths_relative_to_it():
    state = train.generate_checkpoint_state_proto(
        "train/run", "train/run/m-2", ["train/run/m-1", "/abs/m-0", "train/run/m-2"])
    assert state.model_checkpoint_path == "m-2"
    assert list(state.all_model_checkpoint_paths) == ["m-1", "/abs/m-0", "m-2"]
    state = train.generate_checkpoint_state_proto("/abs/run", "train/run/m-2")
    assert state.model_checkpoint_path == "train/run/m-2"  # absolute save_dir: stored as given


def test_save_relative_paths_stores_absolute_paths_relative_to_save_dir(tmp_path):
    train.update_checkpoint_state_internal(tmp_path, str(tmp_path / "sub" / "m-2"), None,
                                           save_relative_paths=True)
    assert parse((tmp_path / "checkpoint").read_text()).model_checkpoint_path == "sub/m-2"


def test_non_utf8_path_is_a_clear_error(tmp_path):
    with pytest.raises(errors.InvalidArgumentError, match="not valid UTF-8"):
        train.update_checkpoint_state(tmp_path, b"/d/m\xff")


# --- reading -------------------------------------------------------------------------------------------

def test_missing_state_file_gives_none(tmp_path):
    assert train.get_checkpoint_state(tmp_path) is None
    assert train.get_checkpoint_state(tmp_path / "no-such-dir") is None
    assert train.latest_checkpoint(tmp_path) is None


def test_relative_paths_are_joined_onto_the_directory_absolute_ones_kept(tmp_path):
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "m-2"\nall_model_checkpoint_paths: "/elsewhere/m-1"\n'
        'all_model_checkpoint_paths: "m-2"\nall_model_checkpoint_timestamps: 1.0\n'
        "all_model_checkpoint_timestamps: 2.5\n")
    state = train.get_checkpoint_state(str(tmp_path))
    assert state.model_checkpoint_path == os.path.join(str(tmp_path), "m-2")
    assert list(state.all_model_checkpoint_paths) == ["/elsewhere/m-1", os.path.join(str(tmp_path), "m-2")]
    assert list(state.all_model_checkpoint_timestamps) == [1.0, 2.5]


@pytest.mark.parametrize("content", [b"model_checkpoint_path: \n", b"garbage", b"model_checkpoint_path: 3\n",
                                     b'model_checkpoint_path: "\xff"\n', b'unknown_field: "x"\n'])
def test_unparsable_state_file_is_logged_and_ignored_like_tf(tmp_path, caplog, content):
    (tmp_path / "checkpoint").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger=cm.__name__):
        assert train.get_checkpoint_state(tmp_path) is None
    assert f"{tmp_path / 'checkpoint'}: Checkpoint ignored" in caplog.text


def test_state_file_without_model_path_raises_value_error(tmp_path):
    (tmp_path / "checkpoint").write_text('all_model_checkpoint_paths: "m-1"\n')
    with pytest.raises(ValueError, match="Invalid checkpoint state loaded from"):
        train.get_checkpoint_state(tmp_path)


def test_unreadable_state_file_is_ignored(tmp_path, caplog):
    (tmp_path / "checkpoint").mkdir()
    with caplog.at_level(logging.WARNING, logger=cm.__name__):
        assert train.get_checkpoint_state(tmp_path) is None
    assert "Checkpoint ignored" in caplog.text


def test_latest_checkpoint_requires_the_checkpoint_files(tmp_path, caplog):
    train.update_checkpoint_state(tmp_path, "m-1")
    with caplog.at_level(logging.ERROR, logger=cm.__name__):
        assert train.latest_checkpoint(tmp_path) is None
    assert "Couldn't match files for checkpoint" in caplog.text
    touch_checkpoint(tmp_path / "m-1")
    assert train.latest_checkpoint(tmp_path) == str(tmp_path / "m-1")
    train.update_checkpoint_state(tmp_path, "v1-file")
    (tmp_path / "v1-file").write_bytes(b"x")  # a V1 checkpoint is the prefix itself
    assert train.latest_checkpoint(tmp_path) == str(tmp_path / "v1-file")


def test_fixture_state_files_resolve_to_existing_checkpoints():
    for path in STATE_FILES:
        latest = train.latest_checkpoint(path.parent)
        assert latest is not None and train.checkpoint_exists(latest), path


def test_moved_directory_resolves_absolute_entries_by_basename_with_a_warning(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    for step in (1, 2):
        touch_checkpoint(old / f"m-{step}")
    train.update_checkpoint_state(old, str(old / "m-2"), [str(old / "m-1"), str(old / "m-2")])
    old.rename(new)
    with pytest.warns(UserWarning, match=r"no longer exist.*was the directory moved.*old/m-2 -> .*new/m-2"):
        state = train.get_checkpoint_state(new)
    assert state.model_checkpoint_path == str(new / "m-2")
    assert list(state.all_model_checkpoint_paths) == [str(new / "m-1"), str(new / "m-2")]
    with pytest.warns(UserWarning, match="no longer exist"):
        assert train.latest_checkpoint(new) == str(new / "m-2")


def test_existing_or_unresolvable_absolute_entries_are_kept_without_warning(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    touch_checkpoint(other / "m-1")
    # m-1 exists where recorded; /gone/m-9 has no namesake here: both stay as written.
    train.update_checkpoint_state(tmp_path, "/gone/m-9", [str(other / "m-1"), "/gone/m-9"])
    touch_checkpoint(tmp_path / "m-1")
    state = train.get_checkpoint_state(tmp_path)  # pytest turns any warning into an error
    assert list(state.all_model_checkpoint_paths) == [str(other / "m-1"), "/gone/m-9"]
    assert train.latest_checkpoint(tmp_path) is None


# --- find_latest_checkpoint ----------------------------------------------------------------------------

def copy_fixture(name, tmp_path):
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.parametrize("name,latest", [("v1_max_to_keep", "model.ckpt-4"), ("tf2_object", "ckpt-4"),
                                         ("v1_sharded", "model.ckpt"), ("v1_dtypes", "model.ckpt-7")])
def test_find_latest_checkpoint_without_a_state_file(tmp_path, name, latest):
    d = copy_fixture(name, tmp_path)
    (d / "checkpoint").unlink()
    assert train.latest_checkpoint(d) is None
    assert train.find_latest_checkpoint(d) == str(d / latest)


def test_find_latest_prefers_the_highest_step_over_mtime(tmp_path):
    touch_checkpoint(tmp_path / "m-10")
    touch_checkpoint(tmp_path / "m-9")
    touch_checkpoint(tmp_path / "m")
    os.utime(tmp_path / "m-10.index", ns=(1, 1))
    assert train.find_latest_checkpoint(tmp_path) == str(tmp_path / "m-10")


def test_find_latest_breaks_step_ties_by_mtime(tmp_path):
    touch_checkpoint(tmp_path / "a")
    touch_checkpoint(tmp_path / "b")
    os.utime(tmp_path / "b.index", ns=(4 * 10**18, 4 * 10**18))
    assert train.find_latest_checkpoint(tmp_path) == str(tmp_path / "b")
    os.utime(tmp_path / "a.index", ns=(5 * 10**18, 5 * 10**18))
    assert train.find_latest_checkpoint(tmp_path) == str(tmp_path / "a")


def test_find_latest_skips_incomplete_checkpoints(tmp_path):
    d = copy_fixture("v1_sharded", tmp_path)
    touch_checkpoint(d / "model.ckpt-1")
    assert train.find_latest_checkpoint(d) == str(d / "model.ckpt-1")
    (d / "model.ckpt-1.data-00000-of-00001").unlink()  # data file missing
    assert train.find_latest_checkpoint(d) == str(d / "model.ckpt")
    (d / "model.ckpt.data-00001-of-00003").unlink()  # one shard of three missing
    assert train.find_latest_checkpoint(d) is None
    touch_checkpoint(d / "model.ckpt-2")
    with open(d / "model.ckpt-2.index", "r+b") as f:  # index cut short: no magic at its end
        f.truncate(os.path.getsize(d / "model.ckpt-2.index") - 1)
    assert train.find_latest_checkpoint(d) is None


def test_find_latest_on_missing_directory_is_none(tmp_path):
    assert train.find_latest_checkpoint(tmp_path / "nope") is None


# --- files of a checkpoint -----------------------------------------------------------------------------

def test_checkpoint_exists_for_v2_v1_and_glob_patterns(tmp_path):
    touch_checkpoint(tmp_path / "m-1")
    (tmp_path / "legacy").write_bytes(b"x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "odd[1]").write_bytes(b"x")
    assert train.checkpoint_exists(tmp_path / "m-1")
    assert train.checkpoint_exists(str(tmp_path / "legacy"))
    assert train.checkpoint_exists(str(tmp_path / "m-?"))
    assert train.checkpoint_exists(str(tmp_path / "*" / ".." / "m-[0-9]"))
    assert train.checkpoint_exists(str(tmp_path / "odd[1]"))  # taken literally before as a pattern
    assert not train.checkpoint_exists(str(tmp_path / "m-2"))
    assert not train.checkpoint_exists(str(tmp_path / "x*"))
    assert not train.checkpoint_exists(str(tmp_path / "adir"))  # a directory is no V1 checkpoint


def test_get_checkpoint_mtimes_skips_missing_checkpoints(tmp_path):
    touch_checkpoint(tmp_path / "m-1")
    (tmp_path / "legacy").write_bytes(b"x")
    os.utime(tmp_path / "m-1.index", ns=(1_500_000_000_250_000_000,) * 2)
    os.utime(tmp_path / "legacy", ns=(1_600_000_000_000_000_000,) * 2)
    mtimes = train.get_checkpoint_mtimes([tmp_path / "m-1", tmp_path / "gone", str(tmp_path / "legacy")])
    assert mtimes == [pytest.approx(1_500_000_000.25, abs=1e-6), 1_600_000_000.0]


def test_remove_checkpoint_deletes_index_every_data_shard_and_meta_only(tmp_path):
    d = copy_fixture("v1_sharded", tmp_path)
    touch_checkpoint(d / "model.ckpt-1")
    (d / "model.ckpt.data-00000-of-00003.tmp").write_bytes(b"")  # not a data file of this prefix
    train.remove_checkpoint(d / "model.ckpt")
    assert sorted(os.listdir(d)) == ["checkpoint", "model.ckpt-1.data-00000-of-00001", "model.ckpt-1.index",
                                     "model.ckpt.data-00000-of-00003.tmp"]
    train.remove_checkpoint(str(d / "model.ckpt"))  # nothing left: missing files are ignored
    train.remove_checkpoint(str(d / "model.ckpt-?"))  # TF globs the prefix
    assert sorted(os.listdir(d)) == ["checkpoint", "model.ckpt.data-00000-of-00003.tmp"]


def test_remove_v1_checkpoint_deletes_the_prefix_file_and_meta(tmp_path):
    (tmp_path / "m").write_bytes(b"x")
    (tmp_path / "m.meta").write_bytes(b"x")
    (tmp_path / "m.index").write_bytes(b"x")
    train.remove_checkpoint(tmp_path / "m", SaverDef.V1)
    assert os.listdir(tmp_path) == ["m.index"]


def test_remove_tolerates_a_file_vanishing_meanwhile(tmp_path, monkeypatch, caplog):
    touch_checkpoint(tmp_path / "m")
    real_remove = os.remove

    def racing_remove(path):
        real_remove(path)
        raise FileNotFoundError(2, "gone", path)

    monkeypatch.setattr(os, "remove", racing_remove)
    with caplog.at_level(logging.WARNING, logger=cm.__name__):
        train.remove_checkpoint(tmp_path / "m")
    assert os.listdir(tmp_path) == [] and "Hit NotFoundError when deleting" in caplog.text


@pytest.mark.parametrize("name,suffix,expected", [
    ("/d/model.ckpt-7", "meta", "/d/model.ckpt-7.meta"),
    ("model.ckpt-123456-?????-of-00005", "meta", "model.ckpt-123456.meta"),
    ("model.ckpt-123456-00001-of-00002", "graph", "model.ckpt-123456.graph"),
    ("model-00001-of-00002.x", "meta", "model-00001-of-00002.x.meta"),
])
def test_meta_graph_filename(name, suffix, expected):
    assert train.meta_graph_filename(name, suffix) == expected


# --- TensorFlow interop --------------------------------------------------------------------------------

@pytest.mark.tf
def test_tensorflow_reads_state_files_we_write(tmp_path):
    import tensorflow as tf

    rel, absolute = tmp_path / "rel", tmp_path / "abs"
    for d in (rel, absolute):
        d.mkdir()
        for step in (1, 2):
            touch_checkpoint(d / f"ckpt-{step}")
    train.update_checkpoint_state_internal(
        rel, str(rel / "ckpt-2"), [str(rel / "ckpt-1"), str(rel / "ckpt-2")], save_relative_paths=True,
        all_model_checkpoint_timestamps=[1795559846.8154352, 1795559846.822568],
        last_preserved_timestamp=1795559845.7797403)
    train.update_checkpoint_state(absolute, str(absolute / "ckpt-2"), [str(absolute / "ckpt-1")],
                                  latest_filename="state")
    for d, latest_filename in ((rel, None), (absolute, "state")):
        theirs = tf.train.get_checkpoint_state(str(d), latest_filename)
        ours = train.get_checkpoint_state(str(d), latest_filename)
        assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(deterministic=True)
        assert list(theirs.all_model_checkpoint_paths) == [str(d / "ckpt-1"), str(d / "ckpt-2")]
        assert tf.train.latest_checkpoint(str(d), latest_filename) == str(d / "ckpt-2")
        assert train.latest_checkpoint(str(d), latest_filename) == str(d / "ckpt-2")
    assert list(tf.train.get_checkpoint_state(str(rel)).all_model_checkpoint_timestamps) == [
        1795559846.8154352, 1795559846.822568]


@pytest.mark.tf
@pytest.mark.parametrize("relative", [False, True])
def test_we_read_and_reproduce_state_files_tensorflow_writes(tmp_path, relative):
    import tensorflow as tf

    theirs_dir, ours_dir = tmp_path / "tf", tmp_path / "ours"
    theirs_dir.mkdir()
    ours_dir.mkdir()
    args = {}
    for d in (theirs_dir, ours_dir):
        model = ODD if relative else str(d / ODD)
        args[d] = dict(save_dir=str(d), model_checkpoint_path=model,
                       all_model_checkpoint_paths=[str(d / "plain-1"), model],
                       all_model_checkpoint_timestamps=[1700000000.0, 1795559846.8154352],
                       last_preserved_timestamp=0.1 + 0.2)
    tf.compat.v1.train.update_checkpoint_state(**args[theirs_dir])
    train.update_checkpoint_state(**args[ours_dir])
    tf_bytes = (theirs_dir / "checkpoint").read_bytes()
    assert b"\\001" in tf_bytes and "\u00e9".encode() in tf_bytes
    assert (ours_dir / "checkpoint").read_bytes() == tf_bytes.replace(
        str(theirs_dir).encode(), str(ours_dir).encode())

    state = train.get_checkpoint_state(theirs_dir)
    assert state.model_checkpoint_path == str(theirs_dir / ODD)
    assert list(state.all_model_checkpoint_paths) == [str(theirs_dir / "plain-1"), str(theirs_dir / ODD)]
    assert list(state.all_model_checkpoint_timestamps) == [1700000000.0, 1795559846.8154352]
    assert state.last_preserved_timestamp == 0.1 + 0.2
    touch_checkpoint(theirs_dir / ODD)
    assert train.latest_checkpoint(theirs_dir) == str(theirs_dir / ODD)


@pytest.mark.tf
def test_we_read_state_files_tensorflow_checkpoint_manager_writes(tmp_path):
    import tensorflow as tf

    ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=2)
    for _ in range(3):
        manager.save()
    ours = train.get_checkpoint_state(tmp_path)
    assert ours.SerializeToString(deterministic=True) == \
        tf.train.get_checkpoint_state(str(tmp_path)).SerializeToString(deterministic=True)
    assert train.latest_checkpoint(tmp_path) == manager.latest_checkpoint == str(tmp_path / "ckpt-3")
    assert train.find_latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-3")
    # Rewriting what TF wrote reproduces it byte for byte.
    raw = parse((tmp_path / "checkpoint").read_text())
    copy = tmp_path / "copy"
    copy.mkdir()
    train.update_checkpoint_state(copy, raw.model_checkpoint_path, list(raw.all_model_checkpoint_paths),
                                  all_model_checkpoint_timestamps=list(raw.all_model_checkpoint_timestamps),
                                  last_preserved_timestamp=raw.last_preserved_timestamp)
    assert (copy / "checkpoint").read_bytes() == (tmp_path / "checkpoint").read_bytes()
