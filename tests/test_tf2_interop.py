"""Object-based checkpoints and checkpoint managers shared with a real TensorFlow (eager TF2)."""

import numpy as np
import pytest
import saverkit as sk
from saverkit.train import Checkpoint, CheckpointManager

pytestmark = pytest.mark.tf

STRINGS = [b"", b"tok", "h\u00e9llo".encode(), bytes(range(256))]


def sk_tree(rng):
    """A saverkit Module tree: nested modules, a list of layers, a dict with odd keys, a string variable."""

    class Dense(sk.Module):
        def __init__(self, n_in, n_out, name=None):
            super().__init__(name=name)
            self.kernel = sk.Variable(rng.standard_normal((n_in, n_out)).astype(np.float32), name="kernel")
            self.bias = sk.Variable(rng.standard_normal(n_out).astype(np.float32), name="bias")

    class Block(sk.Module):
        def __init__(self):
            super().__init__()
            self.inner = Dense(3, 3)
            self.scale = sk.Variable(np.float64(rng.standard_normal()), name="scale")

    class Net(sk.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Dense(4, 3), Dense(3, 2)]
            self.block = Block()
            self.table = {
                "emb": sk.Variable(rng.integers(-9, 9, (5, 2)).astype(np.int32)),
                "p.q/r": sk.Variable(rng.standard_normal(2).astype(np.float16)),
            }
            self.vocab = sk.Variable(np.array(STRINGS, dtype=object), name="vocab")
            self.pair = (Dense(1, 1), sk.Variable(np.int64(rng.integers(100))))

    return Net()


def tf_tree(tf):
    """The same structure as `sk_tree`, in TF, with zero values."""

    class Dense(tf.Module):
        def __init__(self, n_in, n_out, name=None):
            super().__init__(name=name)
            self.kernel = tf.Variable(tf.zeros((n_in, n_out)), name="kernel")
            self.bias = tf.Variable(tf.zeros(n_out), name="bias")

    class Block(tf.Module):
        def __init__(self):
            super().__init__()
            self.inner = Dense(3, 3)
            self.scale = tf.Variable(0.0, dtype=tf.float64, name="scale")

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Dense(4, 3), Dense(3, 2)]
            self.block = Block()
            self.table = {
                "emb": tf.Variable(tf.zeros((5, 2), tf.int32)),
                "p.q/r": tf.Variable(tf.zeros(2, tf.float16)),
            }
            self.vocab = tf.Variable([b""] * 4, dtype=tf.string, name="vocab")
            self.pair = (Dense(1, 1), tf.Variable(0, dtype=tf.int64))

    return Net()


def leaves(module):
    """(attribute path, variable) pairs in `Module.variables` order (same traversal in TF and saverkit)."""
    is_var = (
        sk.trackable.is_variable if isinstance(module, sk.Module) else (lambda x: hasattr(x, "assign_add"))
    )
    return list(module._flatten(predicate=is_var, with_path=True))


def test_saverkit_module_tree_restores_into_the_equivalent_tf_module_tree(tmp_path):
    import tensorflow as tf

    with sk.Graph().as_default() as g, sk.Session(graph=g) as sess:
        net = sk_tree(np.random.default_rng(1))
        step = sk.Variable(np.int64(11), name="step")
        sess.run(sk.global_variables_initializer())
        path = Checkpoint(model=net, step=step).save(str(tmp_path / "ckpt"), session=sess)
        expected = [(p, sess.run(v.value())) for p, v in leaves(net)]

    tf_net, tf_step = tf_tree(tf), tf.Variable(0, dtype=tf.int64)
    tf_ckpt = tf.train.Checkpoint(model=tf_net, step=tf_step)
    tf_ckpt.restore(path).assert_consumed()
    got = [(p, v.numpy()) for p, v in leaves(tf_net)]
    assert [p for p, _ in got] == [p for p, _ in expected]
    for (p, want), (_, have) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(have, want, err_msg=str(p))
    assert tf_step.numpy() == 11 and tf_ckpt.save_counter.numpy() == 1
    assert tf.train.latest_checkpoint(str(tmp_path)) == path


def test_tf_checkpoint_restores_into_the_equivalent_saverkit_tree(tmp_path):
    import tensorflow as tf

    tf_net = tf_tree(tf)
    rng = np.random.default_rng(2)
    for _, v in leaves(tf_net):
        if v.dtype == tf.string:
            v.assign(tf.constant(STRINGS[::-1]))
        else:
            v.assign(tf.cast(rng.integers(-50, 50, v.shape.as_list()), v.dtype))
    tf_ckpt = tf.train.Checkpoint(model=tf_net)
    tf_ckpt.save(str(tmp_path / "tf"))
    path = tf_ckpt.save(str(tmp_path / "tf"))
    expected = [(p, v.numpy()) for p, v in leaves(tf_net)]

    with sk.Graph().as_default() as g, sk.Session(graph=g) as sess:
        net = sk_tree(np.random.default_rng(3))
        sess.run(sk.global_variables_initializer())
        ckpt = Checkpoint(model=net)
        ckpt.restore(sk.train.latest_checkpoint(str(tmp_path)), session=sess).assert_consumed()
        got = [(p, sess.run(v.value())) for p, v in leaves(net)]
        assert sess.run(ckpt.save_counter.value()) == 2
    assert path == str(tmp_path / "tf-2")
    for (p, want), (q, have) in zip(expected, got, strict=True):
        assert p == q
        np.testing.assert_array_equal(have, want, err_msg=str(p))


def test_module_reflection_order_matches_tf_module():
    import tensorflow as tf

    with sk.Graph().as_default():
        ours = [p for p, _ in leaves(sk_tree(np.random.default_rng(0)))]
    theirs = [p for p, _ in leaves(tf_tree(tf))]
    assert ours == theirs
    with sk.Graph().as_default():
        net = sk_tree(np.random.default_rng(0))
        sub = [type(m).__name__ for m in net.submodules]
    assert sub == [type(m).__name__ for m in tf_tree(tf).submodules]


def test_checkpoint_with_root_matches_tf_both_ways(tmp_path):
    import tensorflow as tf
    from saverkit import bundle
    from saverkit.protobuf import trackable_object_graph_pb2

    def graph_of(prefix):
        (raw,) = bundle.read_tensors(prefix, ["_CHECKPOINTABLE_OBJECT_GRAPH"])
        g = trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw.item())
        for node in g.nodes:
            for a in node.attributes:
                a.full_name = ""
        return g

    tf_net, tf_step = tf_tree(tf), tf.Variable(5, dtype=tf.int64)
    tf_path = tf.train.Checkpoint(root=tf_net, step=tf_step).save(str(tmp_path / "tf"))
    with sk.Graph().as_default() as g, sk.Session(graph=g) as sess:
        net, step = sk_tree(np.random.default_rng(0)), sk.Variable(np.int64(0))
        sess.run(sk.global_variables_initializer())
        ckpt = Checkpoint(root=net, step=step)
        ckpt.restore(tf_path, session=sess).assert_consumed()
        assert sess.run(step.value()) == 5
        sk_path = ckpt.save(str(tmp_path / "sk"), session=sess)
    assert graph_of(sk_path) == graph_of(tf_path)
    # TF's Checkpoint(root=...) holds its objects weakly: keep them alive here.
    tf_net2, tf_step2 = tf_tree(tf), tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(root=tf_net2, step=tf_step2).restore(sk_path).assert_consumed()
    assert tf_step2.numpy() == 5


def test_checkpoint_manager_state_is_shared_with_tf(tmp_path):
    import tensorflow as tf

    directory = str(tmp_path / "run")
    with sk.Graph().as_default() as g, sk.Session(graph=g) as sess:
        net = sk_tree(np.random.default_rng(4))
        sess.run(sk.global_variables_initializer())
        mgr = CheckpointManager(Checkpoint(model=net), directory, max_to_keep=3)
        for _ in range(6):
            mgr.save(session=sess)
        ours = mgr.checkpoints
        expected = [(p, sess.run(v.value())) for p, v in leaves(net)]
    assert ours == [f"{directory}/ckpt-{i}" for i in (4, 5, 6)]

    tf_net = tf_tree(tf)
    tf_ckpt = tf.train.Checkpoint(model=tf_net)
    tf_mgr = tf.train.CheckpointManager(tf_ckpt, directory, max_to_keep=3)
    assert tf_mgr.checkpoints == ours
    assert tf_mgr.latest_checkpoint == mgr.latest_checkpoint == f"{directory}/ckpt-6"
    tf_ckpt.restore(tf_mgr.latest_checkpoint).assert_consumed()
    for (p, want), (_, v) in zip(expected, leaves(tf_net), strict=True):
        np.testing.assert_array_equal(v.numpy(), want, err_msg=str(p))

    assert tf_mgr.save() == f"{directory}/ckpt-7"  # TF continues numbering and sweeps our ckpt-4
    with sk.Graph().as_default() as g, sk.Session(graph=g) as sess:
        net = sk_tree(np.random.default_rng(5))
        sess.run(sk.global_variables_initializer())
        again = CheckpointManager(Checkpoint(model=net), directory, max_to_keep=3)
        assert again.checkpoints == [f"{directory}/ckpt-{i}" for i in (5, 6, 7)]
        again.restore_or_initialize(session=sess)
        assert again.save(session=sess) == f"{directory}/ckpt-8"
    assert tf.train.CheckpointManager(tf_ckpt, directory, max_to_keep=3).checkpoints == [
        f"{directory}/ckpt-{i}" for i in (6, 7, 8)
    ]
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".index") == [
        "ckpt-6.index",
        "ckpt-7.index",
        "ckpt-8.index",
    ]
