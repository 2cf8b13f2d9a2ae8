"""Checkpoint I/O ops: SaveV2 / RestoreV2 / MergeV2Checkpoints / ShardedFilename through saverkit.bundle."""

import binascii
import json
import pathlib
import time
import weakref

import numpy as np
import pytest
import saverkit as sk
from saverkit import bundle, errors
from saverkit.framework import io_ops

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


def test_sharded_filename_and_filespec(graph):
    base = sk.constant("/tmp/model_temp/part")
    with sk.Session() as sess:
        assert sess.run(io_ops.sharded_filename(base, 2, 10)) == b"/tmp/model_temp/part-00002-of-00010"
        assert sess.run(io_ops.sharded_filespec(base, 3)) == b"/tmp/model_temp/part-?????-of-00003"
        assert sess.run(io_ops.string_join([base, "_x"])) == b"/tmp/model_temp/part_x"


def test_save_restore_round_trip_every_dtype(graph, tmp_path):
    values = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f64": np.array(2.5),
        "i8": np.array([-1, 2], np.int8),
        "u64": np.array([2**64 - 1], np.uint64),
        "bool": np.array([True, False]),
        "c64": np.array([1 + 2j], np.complex64),
        "bf16": np.array([1.5, -2.0], sk.bfloat16.as_numpy_dtype),
        "str": np.array([b"a", b"", b"\x00z"], dtype=object),
        "empty": np.zeros((0, 3), np.float32),
    }
    prefix = sk.string_join([str(tmp_path), "/ckpt"])
    names = sorted(values)
    consts = [sk.constant(values[n]) for n in names]
    save = io_ops.save_v2(prefix, names, [""] * len(names), consts)
    assert save.type == "SaveV2" and save.get_attr("dtypes") == [c.dtype for c in consts]
    restored = io_ops.restore_v2(prefix, names, [""] * len(names), [c.dtype for c in consts])
    with sk.Session() as sess:
        assert sess.run(save) is None
        out = sess.run(restored)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.data-00000-of-00001", "ckpt.index"]
    for name, got in zip(names, out, strict=True):
        want = values[name]
        if want.ndim == 0:
            assert got == want[()]
        else:
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tolist() == want.tolist()


def test_restore_assign_reads_straight_into_the_variable_buffer(graph, tmp_path, monkeypatch):
    w = sk.Variable(np.zeros((64, 32), np.float32), name="w")
    s = sk.Variable(b"", name="s")
    prefix = sk.constant(str(tmp_path / "ckpt"))
    restored = io_ops.restore_v2(prefix, ["w", "s"], ["", ""], [sk.float32, sk.string])
    restore_all = sk.group(sk.assign(w, restored[0]), sk.assign(s, restored[1]))
    saved = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    bundle.write_bundle(str(tmp_path / "ckpt"), ["w", "s"], [saved, np.array(b"hi", dtype=object)])

    calls = []
    real = bundle.read_tensors

    def spy(prefix, names, shape_and_slices=None, dtypes=None, out=None):
        calls.append(out)
        return real(prefix, names, shape_and_slices, dtypes, out=out)

    monkeypatch.setattr(bundle, "read_tensors", spy)
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        buf = sess._variables.get((b"", "w"))
        sbuf = sess._variables.get((b"", "s"))
        sess.run(restore_all)
        assert sess._variables.get((b"", "w")) is buf  # no new array: the restore wrote into it
        np.testing.assert_array_equal(buf, saved)
        assert calls[-1][0] is buf  # the engine was handed the variable's buffer as out=
        assert calls[-1][1] is sbuf  # and the string variable's object array, whose elements it replaces
        assert sess._variables.get((b"", "s")) is sbuf and sbuf[()] == b"hi"
        assert sess.run(s) == b"hi"
        np.testing.assert_array_equal(sess.run(w), saved)


def test_restore_is_not_in_place_when_the_value_is_also_used_elsewhere(graph, tmp_path, monkeypatch):
    w = sk.Variable(np.zeros(3, np.float32), name="w")
    bundle.write_bundle(str(tmp_path / "ckpt"), ["w"], [np.ones(3, np.float32)])
    (restored,) = io_ops.restore_v2(str(tmp_path / "ckpt"), ["w"], [""], [sk.float32])
    assign = sk.assign(w, restored)
    calls = []
    real = bundle.read_tensors
    monkeypatch.setattr(
        bundle, "read_tensors", lambda *a, out=None, **k: calls.append(out) or real(*a, out=out, **k)
    )
    with sk.Session() as sess:
        sess.run(w.initializer)
        fetched, _ = sess.run([restored, assign])  # the restored value is fetched too: no aliasing
        assert calls[-1] is None
        fetched[:] = 7
        np.testing.assert_array_equal(sess.run(w), [1, 1, 1])


def test_restore_into_an_uninitialized_variable_allocates(graph, tmp_path):
    w = sk.Variable(np.zeros(3, np.float32), name="w")
    bundle.write_bundle(str(tmp_path / "ckpt"), ["w"], [np.full(3, 4.0, np.float32)])
    (restored,) = io_ops.restore_v2(str(tmp_path / "ckpt"), ["w"], [""], [sk.float32])
    with sk.Session() as sess:
        sess.run(sk.assign(w, restored))
        np.testing.assert_array_equal(sess.run(w), [4, 4, 4])


def test_restore_shape_mismatch_leaves_the_variable_alone(graph, tmp_path):
    w = sk.Variable(np.zeros(3, np.float32), name="w")
    bundle.write_bundle(str(tmp_path / "ckpt"), ["w"], [np.ones(5, np.float32)])
    (restored,) = io_ops.restore_v2(str(tmp_path / "ckpt"), ["w"], [""], [sk.float32])
    assign = sk.assign(w, restored)
    with sk.Session() as sess:
        sess.run(w.initializer)
        with pytest.raises(errors.InvalidArgumentError, match="shape"):
            sess.run(assign)
        np.testing.assert_array_equal(sess.run(w), [0, 0, 0])


def test_restore_errors_name_the_op(graph, tmp_path):
    bundle.write_bundle(str(tmp_path / "ckpt"), ["w"], [np.ones(3, np.float32)])
    missing_key = io_ops.restore_v2(str(tmp_path / "ckpt"), ["nope"], [""], [sk.float32], name="r1")[0]
    wrong_dtype = io_ops.restore_v2(str(tmp_path / "ckpt"), ["w"], [""], [sk.int32], name="r2")[0]
    missing_file = io_ops.restore_v2(str(tmp_path / "absent"), ["w"], [""], [sk.float32], name="r3")[0]
    bad_lengths = io_ops.restore_v2(str(tmp_path / "ckpt"), ["w", "w"], [""], [sk.float32], name="r4")[0]
    with sk.Session() as sess:
        with pytest.raises(errors.NotFoundError, match="nope") as info:
            sess.run(missing_key)
        assert info.value.op.name == "r1"
        with pytest.raises(errors.InvalidArgumentError, match="int32"):
            sess.run(wrong_dtype)
        with pytest.raises(errors.NotFoundError) as info:
            sess.run(missing_file)
        assert info.value.op.name == "r3"
        with pytest.raises(errors.InvalidArgumentError, match="Expected 1 tensor_names"):
            sess.run(bad_lengths)


def test_save_errors(graph, tmp_path):
    t = sk.constant([1.0])
    names = sk.placeholder(sk.string, [None])
    save = io_ops.save_v2(str(tmp_path / "x"), names, [""], [t], name="save")
    (tmp_path / "a_file").write_text("not a directory")
    unwritable = io_ops.save_v2(str(tmp_path / "a_file" / "x"), ["t"], [""], [t], name="bad")
    with sk.Session() as sess:
        with pytest.raises(errors.InvalidArgumentError, match="Expected 1"):
            sess.run(save, {names: ["a", "b"]})
        with pytest.raises(errors.OpError) as info:
            sess.run(unwritable)
        assert info.value.op.name == "bad"


def test_sharded_save_runs_save_ops_concurrently_then_merges(graph, tmp_path, monkeypatch):
    # The graph TF's sharded Saver builds: per shard a SaveV2 to a temp prefix, then one merge.
    variables = [sk.Variable(np.full(4, float(i), np.float32), name=f"v{i}") for i in range(3)]
    final = str(tmp_path / "model.ckpt")
    base = sk.string_join([final, "_temp/part"])
    shard_prefixes, saves = [], []
    for i, v in enumerate(variables):
        with sk.device(f"/cpu:{i}"):
            p = io_ops.sharded_filename(base, i, len(variables))
            saves.append(io_ops.save_v2(p, [v.op.name], [""], [v]))
            shard_prefixes.append(p)
    with sk.control_dependencies(saves):
        merge = io_ops.merge_v2_checkpoints(sk.stack(shard_prefixes), final)
    real = bundle.write_bundle
    spans = []

    def slow_write(*args, **kwargs):
        start = time.perf_counter()
        time.sleep(0.3)  # stands in for a large shard; releases the GIL like the engine does
        real(*args, **kwargs)
        spans.append((start, time.perf_counter()))

    monkeypatch.setattr(bundle, "write_bundle", slow_write)
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        start = time.perf_counter()
        sess.run(merge)
        wall = time.perf_counter() - start
    assert len(spans) == 3
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # all three were in flight at once
    assert wall < 0.9 + 0.5, wall  # (in sequence the writes alone take 0.9 s; loose bound: shared CI box)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [
        "model.ckpt.data-00000-of-00003",
        "model.ckpt.data-00001-of-00003",
        "model.ckpt.data-00002-of-00003",
        "model.ckpt.index",
    ]
    got = bundle.read_tensors(final, ["v0", "v1", "v2"])
    for i, arr in enumerate(got):
        np.testing.assert_array_equal(arr, np.full(4, float(i)))


def test_restore_every_dtype_from_a_tf_written_checkpoint(graph):
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    entries = manifest["cases"]["v1_dtypes"]["checkpoints"]["v1_dtypes/model.ckpt-7"]
    names = sorted(n for n, e in entries.items() if e["dtype"] != "string")
    dts = [sk.as_dtype(entries[n]["dtype"]) for n in names]
    restored = io_ops.restore_v2(str(FIXTURES / "v1_dtypes" / "model.ckpt-7"), names, [""] * len(names), dts)
    with sk.Session() as sess:
        out = sess.run(restored)
    for name, got in zip(names, out, strict=True):
        want = entries[name]
        arr = np.asarray(got)
        assert list(arr.shape) == want["shape"]
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        assert binascii.hexlify(raw).decode() == want["hex"], name


def test_restore_through_identity_into_a_resource_variable_is_in_place(graph, tmp_path, monkeypatch):
    from saverkit.framework import resource_variable_ops as rv

    saved = np.arange(8, dtype=np.float32)
    bundle.write_bundle(str(tmp_path / "ckpt"), ["v"], [saved])
    h = rv.var_handle_op(sk.float32, [8], shared_name="v", name="v")
    init = rv.assign_variable_op(h, np.zeros(8, np.float32))
    (restored,) = io_ops.restore_v2(str(tmp_path / "ckpt"), ["v"], [""], [sk.float32])
    restore = rv.assign_variable_op(h, sk.identity(restored))  # the shape of TF's own Saver graphs
    calls = []
    real = bundle.read_tensors
    monkeypatch.setattr(
        bundle, "read_tensors", lambda *a, out=None, **k: calls.append(out) or real(*a, out=out, **k)
    )
    with sk.Session() as sess:
        sess.run(init)
        buf = weakref.ref(sess._variables.get(("resource", b"", "v")))
        sess.run(restore)
        assert calls[-1][0] is not None
        assert sess._variables.get(("resource", b"", "v")) is buf()
        np.testing.assert_array_equal(buf(), saved)


def test_restore_does_not_overwrite_a_snapshot_read_in_the_same_run(graph, tmp_path):
    from saverkit.framework import resource_variable_ops as rv

    bundle.write_bundle(str(tmp_path / "ckpt"), ["v"], [np.ones(3, np.float32)])
    h = rv.var_handle_op(sk.float32, [3], name="v")
    init = rv.assign_variable_op(h, np.zeros(3, np.float32))
    before = rv.read_variable_op(h, sk.float32)
    with sk.control_dependencies([before]):
        (restored,) = io_ops.restore_v2(str(tmp_path / "ckpt"), ["v"], [""], [sk.float32])
        restore = rv.assign_variable_op(h, restored)
    with sk.control_dependencies([restore]):
        after = rv.read_variable_op(h, sk.float32)
    with sk.Session() as sess:
        sess.run(init)
        b, a = sess.run([before, after])
    np.testing.assert_array_equal(b, [0, 0, 0])
    np.testing.assert_array_equal(a, [1, 1, 1])


def test_restore_of_a_different_shape_replaces_an_unvalidated_variable(graph, tmp_path):
    bundle.write_bundle(str(tmp_path / "ckpt"), ["w"], [np.ones(5, np.float32)])
    w = sk.Variable(np.zeros(3, np.float32), name="w", validate_shape=False)
    (restored,) = io_ops.restore_v2(str(tmp_path / "ckpt"), ["w"], [""], [sk.float32])
    restore = sk.assign(w, restored, validate_shape=False)
    with sk.Session() as sess:
        sess.run(w.initializer)
        sess.run(restore)
        np.testing.assert_array_equal(sess.run(w), np.ones(5))


def test_restore_names_are_handed_to_the_engine_as_bytes_only_when_valid_utf8():
    # RestoreV2 passes its tensor_names to the engine undecoded when every one is valid UTF-8; decoding
    # each (the general path) is the reference, including for names that are only valid when joined.
    names = np.array([b"a/b", "\u00e9t\u00e9".encode(), b""], dtype=object)
    assert io_ops._keys(names, "tensor_names") == names.tolist()
    assert [k.decode() for k in io_ops._keys(names, "tensor_names")] == io_ops._strings(names, "tensor_names")
    split = np.array([b"x\xc3", b"\xa9"], dtype=object)  # b"".join would be valid UTF-8
    with pytest.raises(UnicodeDecodeError):
        io_ops._keys(split, "tensor_names")
    with pytest.raises(UnicodeDecodeError):
        io_ops._strings(split, "tensor_names")
    mixed = np.array([b"a", "b"], dtype=object)
    assert io_ops._keys(mixed, "tensor_names") == io_ops._strings(mixed, "tensor_names") == ["a", "b"]


def test_save_v2_is_durable_only_in_the_runs_whose_options_ask_for_it(graph, tmp_path, monkeypatch):
    seen = []
    real = bundle.write_bundle
    monkeypatch.setattr(bundle, "write_bundle", lambda *a, **kw: (seen.append(kw["durable"]), real(*a, **kw)))
    prefix = sk.placeholder(sk.string, [])
    save = io_ops.save_v2(prefix, ["x"], [""], [sk.constant([1.0, 2.0])])
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with sk.Session() as sess:
        sess.run(save, {prefix: a})
        sess.run(save, {prefix: a}, options=sk.RunOptions(durable=True))
        sess.run(save, {prefix: a})  # the options of one run do not stick to the cached plan
        sess.run(save, {prefix: b}, options=sk.RunOptions())
        sess.run(save, {prefix: b}, options=object())  # other kinds of options (TF's proto): the defaults
        sess.run(save, feed_dict={prefix: b}, options=sk.RunOptions(durable=True), run_metadata=None)
    assert seen == [False, True, False, False, False, True]


def test_restore_v2_reads_through_the_reader_the_run_options_give(graph, tmp_path):
    from saverkit.framework.run_options import RunOptions

    prefix = str(tmp_path / "ckpt")
    bundle.write_bundle(prefix, ["w"], [np.arange(6, dtype=np.float32)])
    asked = []

    class Reader:  # what a coordinated restore hands each rank (saverkit.train.distributed_save)
        def read_many(self, names, specs, dtypes, out=None):
            asked.append((list(names), list(specs)))
            return [np.full(6, 7, np.float32)]

    (restored,) = io_ops.restore_v2(prefix, ["w"], [""], [sk.float32])
    with sk.Session() as sess:
        got = sess.run(restored, options=RunOptions(readers={prefix: Reader()}))
        np.testing.assert_array_equal(got, np.full(6, 7, np.float32))
        assert asked == [([b"w"], [""])]
        # another prefix is read from its files as usual
        np.testing.assert_array_equal(sess.run(restored, options=RunOptions(readers={"x": Reader()})),
                                      np.arange(6, dtype=np.float32))
