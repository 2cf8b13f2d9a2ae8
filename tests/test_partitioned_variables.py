"""get_variable with partitioners, PartitionedVariable, variable_scope: TF1's names and semantics, and
checkpoints that TF and saverkit exchange (one key per partitioned variable, a slice per part)."""

import json
import os
import pathlib

import numpy as np
import pytest
import saverkit as sk
from bundle_helpers import tensor_sha256
from saverkit import bundle

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
TF_PARTITIONED = MANIFEST["cases"]["v1_partitioned"]["checkpoints"]["v1_partitioned/model.ckpt"]

EMB = np.arange(60, dtype=np.float32).reshape(10, 6) / 7
WIDE = np.arange(45, dtype=np.float32).reshape(5, 9) - 20


@pytest.fixture
def graph():
    g = sk.Graph()
    with g.as_default():
        yield g


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


# --- what get_variable builds
def test_fixed_size_partitioner_splits_like_tf_first_parts_one_longer(graph):
    pv = sk.get_variable("emb", initializer=EMB, partitioner=sk.fixed_size_partitioner(3))
    assert isinstance(pv, sk.PartitionedVariable)
    assert (pv.name, pv.shape.as_list(), pv.dtype, len(pv)) == ("emb", [10, 6], sk.float32, 3)
    parts = pv.get_variable_list()
    assert list(pv) == parts == pv._get_variable_list()
    assert [v.op.name for v in parts] == ["emb/part_0", "emb/part_1", "emb/part_2"]
    assert [v.shape.as_list() for v in parts] == [[4, 6], [3, 6], [3, 6]]
    assert [v._save_slice_info.spec for v in parts] == ["10 6 0,4:0,6", "10 6 4,3:0,6", "10 6 7,3:0,6"]
    assert all(v._save_slice_info.full_name == "emb" for v in parts)
    assert sk.global_variables() == parts and sk.trainable_variables() == parts
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        np.testing.assert_array_equal(sess.run(pv.as_tensor()), EMB)
        np.testing.assert_array_equal(sess.run(sk.add(pv, 1.0)), EMB + 1)  # converts like a tensor


def test_partitioning_along_axis_1_and_tensor_initializers(graph):
    pv = sk.get_variable(
        "wide", initializer=sk.constant(WIDE), partitioner=sk.fixed_size_partitioner(2, axis=1)
    )
    assert [v.shape.as_list() for v in pv] == [[5, 5], [5, 4]]
    assert [v._save_slice_info.spec for v in pv] == ["5 9 0,5:0,5", "5 9 0,5:5,4"]
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        got = sess.run(list(pv))
        np.testing.assert_array_equal(np.concatenate(got, axis=1), WIDE)
        np.testing.assert_array_equal(sess.run(pv.as_tensor()), WIDE)


def test_callable_initializers_see_each_part_and_its_partition_info(graph):
    seen = []

    def init(shape, dtype=None, partition_info=None):
        seen.append((shape, dtype, partition_info.full_shape, partition_info.var_offset))
        return sk.zeros(shape, dtype)

    sk.get_variable("v", [7, 2], initializer=init, partitioner=sk.fixed_size_partitioner(2))
    assert seen == [([4, 2], sk.float32, [7, 2], [0, 0]), ([3, 2], sk.float32, [7, 2], [4, 0])]


def test_default_initializer_is_glorot_uniform_over_the_full_shape(graph):
    pv = sk.get_variable("g", [200, 100], partitioner=sk.fixed_size_partitioner(4))
    ints = sk.get_variable("i", [6], dtype=sk.int64, partitioner=sk.fixed_size_partitioner(2))
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        value = sess.run(pv.as_tensor())
        limit = np.sqrt(6 / 300)
        assert value.shape == (200, 100) and np.abs(value).max() <= limit and np.abs(value).max() > limit / 2
        assert sess.run(ints.as_tensor()).tolist() == [0] * 6


def test_min_max_and_axis_size_partitioners_follow_tf_formulas():
    shape, f32 = sk.TensorShape([1024, 1024]), sk.float32
    # TF's own documented example: 4 MiB in 256 KiB slices is 16 parts, capped by max_partitions.
    assert sk.min_max_variable_partitioner(max_partitions=32)(shape=shape, dtype=f32) == [16, 1]
    assert sk.min_max_variable_partitioner(max_partitions=5)(shape=shape, dtype=f32) == [5, 1]
    # 4 KiB rows, at most 64 KiB a shard: 16 rows a shard, 64 shards (or max_shards).
    assert sk.variable_axis_size_partitioner(64 << 10)(shape=shape, dtype=f32) == [64, 1]
    assert sk.variable_axis_size_partitioner(64 << 10, max_shards=8)(shape=shape, dtype=f32) == [8, 1]
    assert sk.fixed_size_partitioner(5, axis=1)(shape=sk.TensorShape([3, 2])) == [1, 2]
    with pytest.raises(ValueError, match="must be positive"):
        sk.variable_axis_size_partitioner(0)


def test_variable_scope_names_defaults_and_reuse(graph):
    with sk.variable_scope("layer", partitioner=sk.fixed_size_partitioner(2)) as scope:
        w = sk.get_variable("w", [4, 3])
        assert scope.name == "layer" and isinstance(w, sk.PartitionedVariable)
        assert [v.op.name for v in w] == ["layer/w/part_0", "layer/w/part_1"]
        with sk.name_scope("ignored"):  # get_variable names follow variable scopes only, as in TF
            b = sk.get_variable("b", [3], partitioner=sk.fixed_size_partitioner(1))
        assert b.name == "layer/b"
    with sk.variable_scope("layer", reuse=True):
        assert sk.get_variable("w", [4, 3], partitioner=sk.fixed_size_partitioner(2)) is w
    with sk.variable_scope("layer", reuse=sk.AUTO_REUSE):
        assert sk.get_variable("w", [4, 3], partitioner=sk.fixed_size_partitioner(2)) is w
        plain = sk.get_variable("plain", [2])
        assert sk.get_variable("plain", [2]) is plain and plain.op.name == "layer/plain"


def test_reuse_errors_are_tfs(graph):
    sk.get_variable("emb", [10, 6], partitioner=sk.fixed_size_partitioner(3))
    sk.get_variable("plain", [2])
    with pytest.raises(ValueError, match="Partitioned variable with name emb already exists"):
        sk.get_variable("emb", [10, 6], partitioner=sk.fixed_size_partitioner(3))
    with pytest.raises(ValueError, match="Variable plain already exists, disallowed"):
        sk.get_variable("plain", [2])
    with pytest.raises(ValueError, match="an unpartitioned version of the variable was found: plain"):
        sk.get_variable("plain", [2], partitioner=sk.fixed_size_partitioner(2))
    with sk.variable_scope("", reuse=True):
        with pytest.raises(ValueError, match=r"specified partitions \[2, 1\] and found partitions \[3, 1\]"):
            sk.get_variable("emb", [10, 6], partitioner=sk.fixed_size_partitioner(2))
        with pytest.raises(ValueError, match="PartitionedVariable other does not exist"):
            sk.get_variable("other", [4], partitioner=sk.fixed_size_partitioner(2))
    with pytest.raises(ValueError, match="Initializer type 'int32' and explicit dtype 'float32' don't match"):
        sk.get_variable("x", initializer=[1, 2], dtype=sk.float32)
    with pytest.raises(ValueError, match="If initializer is a constant, do not specify shape"):
        sk.get_variable("y", [2], initializer=np.zeros(2, np.float32))


def test_partitioned_variable_assign_splits_a_whole_value(graph):
    pv = sk.get_variable("emb", [10, 6], partitioner=sk.fixed_size_partitioner(3))
    with sk.Session() as sess:
        sess.run(pv.assign(EMB))
        np.testing.assert_array_equal(sess.run(pv.as_tensor()), EMB)


# --- Saver, init_from_checkpoint, Checkpoint
def test_saver_writes_one_key_with_a_slice_per_part(graph, tmp_path):
    pv = sk.get_variable("emb", initializer=EMB, partitioner=sk.fixed_size_partitioner(3))
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        prefix = sk.train.Saver().save(sess, str(tmp_path / "m"), write_meta_graph=False)
        # A dict var_list and a list of the object save the same way.
        again = sk.train.Saver({"emb": pv}).save(sess, str(tmp_path / "d"), write_meta_graph=False)
        listed = sk.train.Saver([pv]).save(sess, str(tmp_path / "l"), write_meta_graph=False)
    for p in (prefix, again, listed):
        reader = bundle.BundleReader(p)
        assert {k: v[1] for k, v in reader.entries().items()} == {"emb": (10, 6)}
        np.testing.assert_array_equal(reader.read("emb"), EMB)


@pytest.mark.parametrize("parts", [1, 2, 5])
def test_saver_restores_into_another_partitioning(tmp_path, parts):
    with sk.Graph().as_default():
        sk.get_variable("emb", initializer=EMB, partitioner=sk.fixed_size_partitioner(3))
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            prefix = sk.train.Saver().save(sess, str(tmp_path / "m"), write_meta_graph=False)
    with sk.Graph().as_default():
        pv = sk.get_variable("emb", [10, 6], partitioner=sk.fixed_size_partitioner(parts))
        with sk.Session() as sess:
            sk.train.Saver().restore(sess, prefix)
            np.testing.assert_array_equal(sess.run(pv.as_tensor()), EMB)


def test_tf_fixture_restores_into_get_variable_partitions(graph):
    emb = sk.get_variable("emb", [10, 6], partitioner=sk.fixed_size_partitioner(3))
    wide = sk.get_variable("wide", [5, 9], partitioner=sk.fixed_size_partitioner(2, axis=1))
    plain = sk.get_variable("plain", [4], dtype=sk.float64)
    with sk.Session() as sess:
        sk.train.Saver().restore(sess, str(FIXTURES / "v1_partitioned" / "model.ckpt"))
        for name, var in (("emb", emb), ("wide", wide)):
            assert tensor_sha256(sess.run(var.as_tensor()), "float32") == TF_PARTITIONED[name]["sha256"]
        assert tensor_sha256(sess.run(plain), "float64") == TF_PARTITIONED["plain"]["sha256"]


@pytest.mark.parametrize("by", ["object", "name", "parts"])
def test_init_from_checkpoint_takes_a_partitioned_variable(graph, by):
    pv = sk.get_variable("e", [10, 6], partitioner=sk.fixed_size_partitioner(4))
    target = {"object": pv, "name": "e", "parts": list(pv)}[by]
    sk.train.init_from_checkpoint(str(FIXTURES / "v1_partitioned" / "model.ckpt"), {"emb": target})
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        assert tensor_sha256(sess.run(pv.as_tensor()), "float32") == TF_PARTITIONED["emb"]["sha256"]


def test_checkpoint_takes_the_parts_not_the_object_as_tf(graph, tmp_path):
    pv = sk.get_variable("emb", initializer=EMB, partitioner=sk.fixed_size_partitioner(3))
    with pytest.raises(ValueError, match="expecting v to be a trackable object"):
        sk.train.Checkpoint(v=pv)
    ckpt = sk.train.Checkpoint(v=list(pv))  # TF saves each part whole, under v/0, v/1, v/2
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        path = ckpt.save(str(tmp_path / "c"), session=sess)
    shapes = dict(sk.train.list_variables(path))
    assert [shapes[f"v/{i}/.ATTRIBUTES/VARIABLE_VALUE"] for i in range(3)] == [[4, 6], [3, 6], [3, 6]]


# --- against TensorFlow
@pytest.mark.tf
@pytest.mark.parametrize("tf_parts", [3, 2])
def test_tensorflow_restores_saverkit_partitioned_variables(tmp_path, tf_parts):
    with sk.Graph().as_default():
        sk.get_variable("emb", initializer=EMB, partitioner=sk.fixed_size_partitioner(3))
        sk.get_variable("wide", initializer=WIDE, partitioner=sk.fixed_size_partitioner(2, axis=1))
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            prefix = sk.train.Saver().save(sess, str(tmp_path / "m"), write_meta_graph=False)
    tf = _tf()
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        emb = tf1.get_variable("emb", [10, 6], partitioner=tf1.fixed_size_partitioner(tf_parts))
        wide = tf1.get_variable("wide", [5, 9], partitioner=tf1.fixed_size_partitioner(3, axis=1))
        with tf1.Session() as sess:
            tf1.train.Saver().restore(sess, prefix)
            np.testing.assert_array_equal(sess.run(tf.concat(list(emb), axis=0)), EMB)
            np.testing.assert_array_equal(sess.run(tf.concat(list(wide), axis=1)), WIDE)


@pytest.mark.tf
@pytest.mark.parametrize("sk_parts", [3, 4])
def test_saverkit_restores_tensorflow_partitioned_variables(tmp_path, sk_parts):
    tf = _tf()
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        tf1.get_variable("emb", initializer=tf.constant(EMB), partitioner=tf1.fixed_size_partitioner(3))
        tf1.get_variable(
            "wide", initializer=tf.constant(WIDE), partitioner=tf1.fixed_size_partitioner(2, axis=1)
        )
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            prefix = tf1.train.Saver().save(sess, str(tmp_path / "m"), write_meta_graph=False)
    with sk.Graph().as_default():
        emb = sk.get_variable("emb", [10, 6], partitioner=sk.fixed_size_partitioner(sk_parts))
        wide = sk.get_variable("wide", [5, 9], partitioner=sk.fixed_size_partitioner(3, axis=1))
        with sk.Session() as sess:
            sk.train.Saver().restore(sess, prefix)
            np.testing.assert_array_equal(sess.run(emb.as_tensor()), EMB)
            np.testing.assert_array_equal(sess.run(wide.as_tensor()), WIDE)


@pytest.mark.tf
def test_partitioners_and_part_layout_match_tensorflow():
    tf = _tf()
    tf1 = tf.compat.v1
    shapes = [[10, 6], [7], [1024, 1024], [3, 5, 2], [1, 9], [300, 17]]
    kinds = [(sk.float32, tf.float32), (sk.string, tf.string), (sk.int64, tf.int64)]
    makers = [
        ("fixed_size_partitioner", (3,), {}), ("fixed_size_partitioner", (4,), {"axis": 0}),
        ("min_max_variable_partitioner", (8,), {"min_slice_size": 64}),
        ("min_max_variable_partitioner", (), {}), ("variable_axis_size_partitioner", (100,), {}),
        ("variable_axis_size_partitioner", (1000,), {"max_shards": 2, "bytes_per_string_element": 8}),
    ]
    for shape in shapes:
        for sk_dtype, tf_dtype in kinds:
            for fn, args, kwargs in makers:
                ours = getattr(sk, fn)(*args, **kwargs)(shape=sk.TensorShape(shape), dtype=sk_dtype)
                theirs = getattr(tf1, fn)(*args, **kwargs)(shape=tf.TensorShape(shape), dtype=tf_dtype)
                assert list(ours) == list(theirs), (fn, args, kwargs, shape, sk_dtype)
    # Part names, shapes and slice specs as TF makes them.
    with sk.Graph().as_default():
        ours = sk.get_variable("v", [11, 3], partitioner=sk.fixed_size_partitioner(4))
        ours = [(v.op.name, v.shape.as_list(), v._save_slice_info.spec) for v in ours]
    with tf.Graph().as_default():
        theirs = tf1.get_variable("v", [11, 3], partitioner=tf1.fixed_size_partitioner(4))
        theirs = [(v.op.name, v.shape.as_list(), v._get_save_slice_info().spec) for v in theirs]
    assert ours == theirs
