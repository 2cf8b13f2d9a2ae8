"""TensorFlow reads what saverkit's asynchronous saves wrote (issue 21), and writes nothing differently."""

import os

import numpy as np
import pytest
import saverkit as sk
from saverkit.train import CheckpointOptions

pytestmark = pytest.mark.tf

ASYNC = CheckpointOptions(enable_async=True)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def _values(k):
    return {
        "dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4) + k,
        "dense/bias": np.full((4,), k, np.float64),
        "vocab": np.array([b"gen%d" % k, b"", b"z" * 70], dtype=object),
        "global_step": np.int64(k),
    }


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_tensorflow_restores_an_async_saver_checkpoint(tmp_path, sharded):
    tf = _tf()
    g = sk.Graph()
    with g.as_default():
        variables = {}
        for i, (name, value) in enumerate(sorted(_values(0).items())):
            with sk.device(f"/cpu:{i % 2}" if sharded else "/cpu:0"):
                variables[name] = sk.Variable(value, name=name)
        saver = sk.train.Saver(sharded=sharded)
        sess = sk.Session(graph=g)
        sess.run(sk.global_variables_initializer())
    for name, value in _values(3).items():
        variables[name].load(value, sess)
    path = saver.save(sess, str(tmp_path / "model"), global_step=3, options=ASYNC)
    for name, value in _values(9).items():  # after the snapshot: not in the checkpoint
        variables[name].load(value, sess)
    saver.sync()
    assert tf.train.latest_checkpoint(str(tmp_path)) == path
    reader = tf.train.load_checkpoint(path)
    for name, want in _values(3).items():
        got = reader.get_tensor(name)
        assert np.asarray(got).tolist() == np.asarray(want).tolist(), name
    # and TF's own Saver restores it through the .meta graph saverkit wrote
    with tf.Graph().as_default(), tf.compat.v1.Session() as tf_sess:
        tf_saver = tf.compat.v1.train.import_meta_graph(path + ".meta", clear_devices=True)
        tf_saver.restore(tf_sess, path)
        assert tf_sess.run("dense/bias:0").tolist() == [3.0] * 4


def test_tensorflow_checkpoint_reads_an_async_checkpoint_manager_save(tmp_path):
    tf = _tf()
    g = sk.Graph()
    with g.as_default():
        kernel = sk.Variable(np.zeros((3, 4), np.float32), name="kernel")
        step = sk.Variable(np.int64(0), name="step")
        ckpt = sk.train.Checkpoint(kernel=kernel, step=step)
        sess = sk.Session(graph=g)
        sess.run(sk.global_variables_initializer())
    manager = sk.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=2, session=sess)
    kernel.load(np.full((3, 4), 5, np.float32), sess)
    step.load(np.int64(5), sess)
    path = manager.save(options=ASYNC)
    kernel.load(np.full((3, 4), -1, np.float32), sess)
    manager.sync()
    assert tf.train.latest_checkpoint(str(tmp_path)) == path
    tf_kernel = tf.Variable(tf.zeros((3, 4)))
    tf_step = tf.Variable(tf.constant(0, tf.int64))
    tf.train.Checkpoint(kernel=tf_kernel, step=tf_step).restore(path).assert_consumed()
    assert tf_kernel.numpy().tolist() == [[5.0] * 4] * 3 and int(tf_step.numpy()) == 5
