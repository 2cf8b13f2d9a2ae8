"""Saver and meta graphs against a real TensorFlow: each side reads what the other wrote."""

import hashlib
import json
import os
import pathlib
import shutil

import ml_dtypes
import numpy as np
import pytest
import saverkit as sk

pytestmark = pytest.mark.tf

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def _np_dtype(name):
    return (
        np.dtype(ml_dtypes.bfloat16)
        if name == "bfloat16"
        else (object if name == "string" else np.dtype(name))
    )


def _digest(arr, dtype_name):
    """sha256 as the fixture generator computes it (strings: 8-byte LE length + bytes per element)."""
    arr = np.asarray(arr)
    if dtype_name == "string":
        h = hashlib.sha256()
        for x in arr.reshape(-1):
            x = bytes(x)
            h.update(len(x).to_bytes(8, "little"))
            h.update(x)
        return h.hexdigest()
    return hashlib.sha256(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()


def _check(name, value, record):
    value = np.asarray(value)
    assert list(value.shape) == record["shape"], name
    if record["dtype"] != "string":
        assert value.dtype == _np_dtype(record["dtype"]), name
    assert _digest(value, record["dtype"]) == record["sha256"], name


def _same(got, want):
    got = np.asarray(got)
    assert got.shape == want.shape
    if want.dtype == object:
        assert [bytes(x) for x in got.reshape(-1)] == list(want.reshape(-1))
    else:
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def _zeros(record):
    shape = tuple(record["shape"])
    if record["dtype"] == "string":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, _np_dtype(record["dtype"]))


def _copy_fixture(case, tmp_path):
    dst = tmp_path / case
    shutil.copytree(FIXTURES / case, dst)
    return dst


# --- saverkit saves, TensorFlow restores
DTYPE_VALUES = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f64": np.linspace(-1, 1, 5),
    "f16": np.array([1.5, -2.25], np.float16),
    "bf16": np.array([3.0, -0.5, 1e10], ml_dtypes.bfloat16),
    "i8": np.array([-128, 127], np.int8),
    "i64": np.array(2**62 + 3, np.int64),
    "u16": np.array([65535, 0], np.uint16),
    "u64": np.array([2**64 - 1], np.uint64),
    "flag": np.array([[True, False]]),
    "c64": np.array([1 + 2j], np.complex64),
    "c128": np.array([[3 - 4j]], np.complex128),
    "s": np.array([b"", b"x" * 300, bytes(range(256))], dtype=object),
    "scope/deep/kernel": np.ones((2, 2), np.float32),
    "empty": np.zeros((0, 3), np.float32),
}


def _save_with_saverkit(path, sharded=False, devices=1):
    g = sk.Graph()
    with g.as_default():
        for i, (name, value) in enumerate(DTYPE_VALUES.items()):
            with sk.device(f"/cpu:{i % devices}" if devices > 1 else None):
                sk.Variable(value, name=name)
        saver = sk.train.Saver(sharded=sharded)
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            return saver.save(sess, str(path), global_step=3)


def _tf_values(tf, names, ctor):
    out = {}
    for name in names:
        value = DTYPE_VALUES[name]
        dtype = tf.string if value.dtype == object else tf.as_dtype(value.dtype)
        out[name] = ctor(name, dtype, value.shape)
    return out


def test_tensorflow_saver_restores_saverkit_checkpoint(tmp_path):
    tf = _tf()
    prefix = _save_with_saverkit(tmp_path / "model")
    with tf.Graph().as_default():
        made = _tf_values(
            tf,
            DTYPE_VALUES,
            # A constant initial value keeps the static shape fully defined: TF's Saver silently
            # leaves out variables whose shape is not (tf.fill would drop the string variable).
            lambda n, d, s: tf.compat.v1.Variable(
                tf.zeros(s, d) if d != tf.string else tf.constant("", shape=s), name=n
            ),
        )
        assert "s" in made and made["s"].shape.is_fully_defined()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, prefix)
            for name, var in made.items():
                _same(sess.run(var), DTYPE_VALUES[name])


def test_tensorflow_reads_sharded_save_over_three_devices(tmp_path):
    tf = _tf()
    prefix = _save_with_saverkit(tmp_path / "model", sharded=True, devices=3)
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint",
        "model-3.data-00000-of-00003",
        "model-3.data-00001-of-00003",
        "model-3.data-00002-of-00003",
        "model-3.index",
        "model-3.meta",
    ]
    reader = tf.train.load_checkpoint(prefix)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(DTYPE_VALUES)
    np.testing.assert_array_equal(reader.get_tensor("f32"), DTYPE_VALUES["f32"])
    assert list(reader.get_tensor("s")) == list(DTYPE_VALUES["s"])
    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix


# --- TensorFlow's fixtures restore into saverkit graphs
@pytest.mark.parametrize("case", ["v1_dtypes", "v1_sharded", "v1_partitioned", "v1_max_to_keep"])
def test_tf_fixture_restores_into_equivalent_saverkit_graph(case, tmp_path):
    d = _copy_fixture(case, tmp_path)
    prefix = sk.train.latest_checkpoint(str(d))  # TF's `checkpoint` file names the newest
    ((rel, records),) = MANIFEST["cases"][case]["checkpoints"].items()
    assert prefix == str(tmp_path / rel)
    g = sk.Graph()
    with g.as_default():
        made = {name: sk.Variable(_zeros(rec), name=name) for name, rec in records.items()}
        saver = sk.train.Saver()
        with sk.Session() as sess:
            saver.restore(sess, prefix)
            for name, var in made.items():
                _check(name, sess.run(var), records[name])


def test_tf_partitioned_fixture_restores_into_saverkit_slices(tmp_path):
    """emb [10,6] split 4/3/3 rows and wide [5,9] split 5/4 columns, as TF's fixed_size_partitioner."""
    records = MANIFEST["cases"]["v1_partitioned"]["checkpoints"]["v1_partitioned/model.ckpt"]
    g = sk.Graph()
    with g.as_default():
        parts = {"emb": [], "wide": []}
        for i, (off, n) in enumerate([(0, 4), (4, 3), (7, 3)]):
            v = sk.Variable(np.zeros((n, 6), np.float32), name=f"emb/part_{i}")
            v._set_save_slice_info(sk.Variable.SaveSliceInfo("emb", [10, 6], [off, 0], [n, 6]))
            parts["emb"].append(v)
        for i, (off, n) in enumerate([(0, 5), (5, 4)]):
            v = sk.Variable(np.zeros((5, n), np.float32), name=f"wide/part_{i}")
            v._set_save_slice_info(sk.Variable.SaveSliceInfo("wide", [5, 9], [0, off], [5, n]))
            parts["wide"].append(v)
        plain = sk.Variable(np.zeros(4), name="plain")
        saver = sk.train.Saver()
        with sk.Session() as sess:
            saver.restore(sess, str(FIXTURES / "v1_partitioned" / "model.ckpt"))
            _check("emb", np.concatenate(sess.run(parts["emb"]), axis=0), records["emb"])
            _check("wide", np.concatenate(sess.run(parts["wide"]), axis=1), records["wide"])
            _check("plain", sess.run(plain), records["plain"])
            # ... and saverkit writes the slices back in TF's layout: TF reads the full tensors.
            prefix = saver.save(sess, str(tmp_path / "resaved"), write_meta_graph=False)
    tf = _tf()
    reader = tf.train.load_checkpoint(prefix)
    _check("emb", reader.get_tensor("emb"), records["emb"])
    _check("wide", reader.get_tensor("wide"), records["wide"])


# --- meta graphs: TF imports ours
@pytest.mark.parametrize("sharded", [False, True])
def test_tensorflow_imports_saverkit_meta_graph_and_restores(tmp_path, sharded):
    tf = _tf()
    prefix = _save_with_saverkit(tmp_path / "model", sharded=sharded, devices=2 if sharded else 1)
    with tf.Graph().as_default():
        saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta")
        assert saver is not None
        variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
        assert sorted(variables) == sorted(DTYPE_VALUES)
        assert {v.op.name for v in tf.compat.v1.trainable_variables()} == set(DTYPE_VALUES)
        cfg = tf.compat.v1.ConfigProto(device_count={"CPU": 2}, allow_soft_placement=True)
        with tf.compat.v1.Session(config=cfg) as sess:
            saver.restore(sess, prefix)
            for name, var in variables.items():
                _same(sess.run(var), DTYPE_VALUES[name])
            # TF can also run the saver it imported: our graph's save path works in TF.
            (tmp_path / "by_tf").mkdir()
            again = saver.save(sess, str(tmp_path / "by_tf" / "m"), write_meta_graph=False)
    reader = sk.train.load_checkpoint(again)
    np.testing.assert_array_equal(reader.get_tensor("f64"), DTYPE_VALUES["f64"])


def test_saverkit_meta_graph_is_lean(tmp_path):
    """No duplicated constants: RestoreV2 reads SaveV2's key list; node count is TF's minus those."""
    from saverkit.framework import meta_graph

    prefix = _save_with_saverkit(tmp_path / "model")
    mg = meta_graph.read_meta_graph_file(prefix + ".meta")
    consts = [n for n in mg.graph_def.node if n.op == "Const" and n.name.startswith("save/")]
    assert sorted(n.name for n in consts) == [
        "save/SaveV2/shape_and_slices",
        "save/SaveV2/tensor_names",
        "save/filename/input",
    ]
    assert all("_output_shapes" not in n.attr for n in mg.graph_def.node)


# --- meta graphs: saverkit imports TF's
@pytest.mark.parametrize(
    "case, meta",
    [
        ("v1_dtypes", "model.ckpt-7.meta"),
        ("v1_sharded", "model.ckpt.meta"),
        ("v1_max_to_keep", "model.ckpt-4.meta"),
        ("v1_dtypes", "model.pbtxt"),
    ],
)
def test_saverkit_imports_tf_meta_graph_and_restores(case, meta, tmp_path):
    d = _copy_fixture(case, tmp_path)
    ((rel, records),) = MANIFEST["cases"][case]["checkpoints"].items()
    g = sk.Graph()
    with g.as_default():
        saver = sk.train.import_meta_graph(str(d / meta))
        assert isinstance(saver, sk.train.Saver)
        variables = {v.op.name: v for v in sk.global_variables()}
        assert sorted(variables) == sorted(records)
        with sk.Session() as sess:
            saver.restore(sess, str(tmp_path / rel))
            for name, var in variables.items():
                _check(name, sess.run(var), records[name])
            # The imported graph's own save path runs too (sharded: StaticRegexFullMatch/Select/Pack/merge).
            (tmp_path / "resaved").mkdir()
            out = saver.save(sess, str(tmp_path / "resaved" / "m"), write_meta_graph=False)
    reader = sk.train.load_checkpoint(out)
    for name, rec in records.items():
        _check(name, reader.get_tensor(name), rec)


def test_saverkit_import_of_tf_meta_without_saver_def_builds_a_default_saver(tmp_path):
    from saverkit.framework import meta_graph

    mg = meta_graph.read_meta_graph_file(FIXTURES / "v1_max_to_keep" / "model.ckpt-4.meta")
    mg.ClearField("saver_def")
    records = MANIFEST["cases"]["v1_max_to_keep"]["checkpoints"]["v1_max_to_keep/model.ckpt-4"]
    g = sk.Graph()
    with g.as_default():
        saver = sk.train.import_meta_graph(mg, import_scope="imported")
        assert saver.saver_def.restore_op_name.startswith("save")
        names = sorted(v.op.name for v in sk.global_variables())
        assert names == ["imported/step", "imported/w"]
        with sk.Session() as sess:
            # The default saver keys variables by their (now scoped) names; a dict maps TF's keys to them.
            s2 = sk.train.Saver({v.op.name.split("/", 1)[1]: v for v in sk.global_variables()})
            s2.restore(sess, str(FIXTURES / "v1_max_to_keep" / "model.ckpt-4"))
            for v in sk.global_variables():
                key = v.op.name.split("/", 1)[1]
                _check(key, sess.run(v), records[key])
            # and saves them (SaveV2 reads ReadVariableOp values) under the same keys
            out = s2.save(sess, str(tmp_path / "resource"), write_meta_graph=False)
    reader = sk.train.load_checkpoint(out)
    for key, rec in records.items():
        _check(key, reader.get_tensor(key), rec)


# --- the `checkpoint` state file
def test_state_files_are_read_both_ways(tmp_path):
    tf = _tf()
    d = _copy_fixture("v1_max_to_keep", tmp_path)
    state = sk.train.get_checkpoint_state(str(d))
    assert list(state.all_model_checkpoint_paths) == [str(d / "model.ckpt-3"), str(d / "model.ckpt-4")]
    assert sk.train.latest_checkpoint(str(d)) == tf.train.latest_checkpoint(str(d)) == str(d / "model.ckpt-4")

    ours = tmp_path / "ours"
    ours.mkdir()
    g = sk.Graph()
    with g.as_default():
        v = sk.Variable(1.0, name="v")
        saver = sk.train.Saver(max_to_keep=2)
        with sk.Session() as sess:
            sess.run(v.initializer)
            for step in range(3):
                saver.save(sess, str(ours / "model"), global_step=step, write_meta_graph=False)
    tf_state = tf.train.get_checkpoint_state(str(ours))
    assert tf_state.model_checkpoint_path == str(ours / "model-2")
    assert list(tf_state.all_model_checkpoint_paths) == [str(ours / "model-1"), str(ours / "model-2")]
    assert len(tf_state.all_model_checkpoint_timestamps) == 2
    assert tf_state.last_preserved_timestamp > 0
    assert tf.train.latest_checkpoint(str(ours)) == str(ours / "model-2")


def test_resource_variable_op_defs_match_tensorflow():
    tf = _tf()
    from saverkit.framework import op_registry, resource_variable_ops  # noqa: F401 - registers them
    from tensorflow.python.framework import op_def_registry

    for name in [
        "AssignAddVariableOp",
        "AssignSubVariableOp",
        "AssignVariableOp",
        "ReadVariableOp",
        "VarHandleOp",
        "VarIsInitializedOp",
    ]:
        assert op_registry.get_op_def(name).SerializeToString(deterministic=True) == op_def_registry.get(
            name
        ).SerializeToString(deterministic=True), name
    assert tf is not None


def test_tensorflow_continues_training_from_saverkit_meta_graph(tmp_path):
    """TF imports our graph with its collections (train_op as node_list, ints) and runs the training op."""
    tf = _tf()
    g = sk.Graph()
    with g.as_default():
        w = sk.Variable(np.ones((2, 2), np.float32), name="w")
        step = sk.Variable(np.int64(0), name="global_step", trainable=False)
        train_op = sk.group(w.assign_add(np.full((2, 2), 0.5, np.float32)), step.assign_add(1), name="train")
        sk.add_to_collection("train_op", train_op)
        sk.add_to_collection("epochs", 12)
        sk.add_to_collection("lr", 0.25)
        sk.add_to_collection("note", "hello")
        saver = sk.train.Saver()
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            sess.run(train_op)
            prefix = saver.save(sess, str(tmp_path / "model"), global_step=step)
    with tf.Graph().as_default():
        tf_saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta")
        assert tf.compat.v1.get_collection("epochs") == [12]
        assert tf.compat.v1.get_collection("lr") == [0.25]
        assert tf.compat.v1.get_collection("note") == [b"hello"]
        (tf_train,) = tf.compat.v1.get_collection("train_op")
        with tf.compat.v1.Session() as sess:
            tf_saver.restore(sess, prefix)
            sess.run(tf_train)
            assert sess.run("global_step:0") == 2
            np.testing.assert_array_equal(sess.run("w:0"), np.full((2, 2), 2.0, np.float32))
