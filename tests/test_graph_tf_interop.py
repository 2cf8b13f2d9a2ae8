"""Interop with a real TensorFlow: our GraphDefs import and run in TF, TF's import and run in saverkit."""

import os

import numpy as np
import pytest
import saverkit as sk
from saverkit import bundle
from saverkit.framework import io_ops, op_registry, string_ops

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow

    return tensorflow


def build_save_graph(ckpt_dir):
    """Variables, an update, and a save subgraph whose prefix comes from StringJoin of Consts."""
    g = sk.Graph()
    with g.as_default():
        w = sk.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="w")
        b = sk.Variable(np.array([1, 2], np.int64), name="scope/b")
        s = sk.Variable([b"x", b"yz"], name="s")
        step = sk.train.get_or_create_global_step()
        sk.global_variables_initializer()
        w.assign(w * 2.0 + 1.0, name="update_w")
        sk.assign_add(step, 5, name="bump")
        prefix = sk.string_join([sk.constant(str(ckpt_dir)), "/model.ckpt"], name="prefix")
        io_ops.save_v2(prefix, ["w", "scope/b", "s", "global_step"], [""] * 4, [w, b, s, step], name="save")
    return g


def test_our_graph_def_imports_and_runs_in_tensorflow(tf, tmp_path):
    g = build_save_graph(tmp_path)
    graph_def = g.as_graph_def(add_shapes=True)
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf.compat.v1.import_graph_def(
            tf.compat.v1.GraphDef.FromString(graph_def.SerializeToString()), name=""
        )
    with tf.compat.v1.Session(graph=tf_graph) as sess:
        sess.run("init")
        sess.run(["update_w", "bump"])
        sess.run("save")
    reader = tf.train.load_checkpoint(str(tmp_path / "model.ckpt"))
    np.testing.assert_array_equal(reader.get_tensor("w"), np.arange(6).reshape(2, 3) * 2 + 1)
    np.testing.assert_array_equal(reader.get_tensor("scope/b"), [1, 2])
    assert list(reader.get_tensor("s")) == [b"x", b"yz"]
    assert reader.get_tensor("global_step") == 5
    assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64


def test_the_same_graph_run_by_saverkit_writes_what_tensorflow_reads(tf, tmp_path):
    g = build_save_graph(tmp_path)
    with sk.Session(graph=g) as sess:
        sess.run("init")
        sess.run(["update_w", "bump"])
        sess.run("save")
    reader = tf.train.load_checkpoint(str(tmp_path / "model.ckpt"))
    np.testing.assert_array_equal(reader.get_tensor("w"), np.arange(6).reshape(2, 3) * 2 + 1)
    assert reader.get_tensor("global_step") == 5
    assert list(reader.get_tensor("s")) == [b"x", b"yz"]


def test_sharded_save_graph_runs_in_tensorflow(tf, tmp_path):
    """The graph shape TF's sharded Saver uses: regex-picked temp suffix, ShardedFilename, merge."""
    final = str(tmp_path / "model.ckpt")
    g = sk.Graph()
    with g.as_default():
        vs = [sk.Variable(np.full(3, float(i), np.float32), name=f"v{i}") for i in range(2)]
        sk.global_variables_initializer()
        prefix = sk.constant(final, name="filename")
        suffix = sk.where(
            string_ops.regex_full_match(prefix, "^s3://.*"), sk.constant(".part"), sk.constant("_temp/part")
        )
        tmp = sk.string_join([prefix, suffix])
        parts, saves = [], []
        for i, v in enumerate(vs):
            with sk.device("/device:CPU:0"):
                part = io_ops.sharded_filename(tmp, i, 2)
                saves.append(io_ops.save_v2(part, [v.op.name], [""], [v]))
                parts.append(part)
        with sk.control_dependencies(saves):
            io_ops.merge_v2_checkpoints(sk.stack(parts), prefix, name="merge")
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf.compat.v1.import_graph_def(
            tf.compat.v1.GraphDef.FromString(g.as_graph_def().SerializeToString()), name=""
        )
    with tf.compat.v1.Session(graph=tf_graph) as sess:
        sess.run("init")
        sess.run("merge")
    assert sorted(os.listdir(tmp_path)) == [
        "model.ckpt.data-00000-of-00002",
        "model.ckpt.data-00001-of-00002",
        "model.ckpt.index",
    ]
    got = bundle.read_tensors(final, ["v0", "v1"])
    np.testing.assert_array_equal(got[1], [1, 1, 1])


def test_variable_graph_matches_tensorflows_node_for_node(tf):
    tf1 = tf.compat.v1
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf1.disable_resource_variables()
        try:
            w = tf1.Variable([[1.0, 2.0]], name="w")
            tf1.Variable(3, name="w")
            tf1.train.get_or_create_global_step()
            tf1.add(tf1.constant(1.0), w)
            tf1.global_variables_initializer()
        finally:
            tf1.enable_resource_variables()
    g = sk.Graph()
    with g.as_default():
        w = sk.Variable([[1.0, 2.0]], name="w")
        sk.Variable(3, name="w")
        sk.train.get_or_create_global_step()
        sk.add(sk.constant(1.0), w)
        sk.global_variables_initializer()
    theirs = tf_graph.as_graph_def()
    ours = g.as_graph_def()
    assert [(n.name, n.op, list(n.input)) for n in ours.node] == [
        (n.name, n.op, list(n.input)) for n in theirs.node
    ]
    for a, b in zip(ours.node, theirs.node, strict=True):
        their_attrs = {
            k: v.SerializeToString(deterministic=True)
            for k, v in b.attr.items()
            if k != "_has_manual_control_dependencies"
        }
        assert {k: v.SerializeToString(deterministic=True) for k, v in a.attr.items()} == their_attrs, a.name
    assert ours.versions.producer == theirs.versions.producer


def test_tensorflow_graph_imports_and_runs_in_saverkit(tf):
    tf1 = tf.compat.v1
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf1.disable_resource_variables()
        try:
            x = tf1.placeholder(tf.float32, [None, 3], name="x")
            w = tf1.Variable(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
            y = tf.reduce_mean(tf.square(tf.matmul(x, w) - 1.0), axis=0, name="y")
            z = tf.reduce_sum(tf.fill([2, 2], 3.0), name="z")
            tf1.assign_add(w, tf.ones([3, 2]), name="inc")
            tf1.global_variables_initializer()
        finally:
            tf1.enable_resource_variables()
        with tf1.Session() as sess:
            sess.run("init")
            feed = np.array([[1, 0, 2], [0, 1, 1]], np.float32)
            expected = sess.run([y, z], {x: feed})
            sess.run("inc")
            expected_after = sess.run(y, {x: feed})
    with sk.Graph().as_default() as g:
        sk.import_graph_def(tf_graph.as_graph_def().SerializeToString(), name="")
        with sk.Session() as sess:
            sess.run("init")
            got = sess.run(["y:0", "z:0"], {"x:0": feed})
            sess.run("inc")
            got_after = sess.run("y:0", {"x:0": feed})
        assert g.get_tensor_by_name("y:0").shape.as_list() == [2]
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    assert got[1] == expected[1] == 12.0
    np.testing.assert_allclose(got_after, expected_after, rtol=1e-6)


def test_op_defs_match_tensorflows_registry(tf):
    from tensorflow.python.framework import op_def_registry

    for name in op_registry.registered_ops():
        theirs = op_def_registry.get(name)
        if theirs is None:
            continue  # test-only ops registered by other test modules
        assert op_registry.get_op_def(name).SerializeToString(deterministic=True) == theirs.SerializeToString(
            deterministic=True
        ), name


def test_graph_keys_match_tensorflow(tf):
    theirs = tf.compat.v1.GraphKeys
    for key in dir(theirs):
        if key.isupper() and isinstance(getattr(theirs, key), str):
            assert getattr(sk.GraphKeys, key) == getattr(theirs, key), key


def test_producer_version_matches_tensorflow(tf):
    from tensorflow.python.framework import versions

    g = sk.Graph()
    assert g.as_graph_def().versions.producer == versions.GRAPH_DEF_VERSION
