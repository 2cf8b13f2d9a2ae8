"""Slot variables (an optimizer's per-variable state) in object-based checkpoints: declared with
`saverkit.train.SlotVariables.add_slot`, saved and restored as TF's optimizers do, and shown by
`saverkit inspect --object-graph`."""

import os

import numpy as np
import pytest
import saverkit as sk
from saverkit import cli
from saverkit.protobuf import trackable_object_graph_pb2

W = np.array([1.0, 2.0, 3.0], np.float32)
B = np.float32(0.5)


class Model(sk.Module):
    def __init__(self, w=None, b=None):
        super().__init__()
        self.w = sk.Variable(np.zeros(3, np.float32) if w is None else w, name="w")
        self.b = sk.Variable(np.float32(0) if b is None else b, name="b")


def _adam_like(model, values=None, slots=True):
    """What tf.compat.v1.train.AdamOptimizer checkpoints: beta powers, and slots m and v per variable."""
    values = values or {}
    opt = sk.train.SlotVariables()
    opt.beta1_power = sk.Variable(values.get("beta1_power", np.float32(0)), name="beta1_power")
    opt.beta2_power = sk.Variable(values.get("beta2_power", np.float32(0)), name="beta2_power")
    if slots:
        for var in (model.w, model.b):
            for slot in ("m", "v"):
                value = values.get(f"{var.op.name}/{slot}", np.zeros(var.shape.as_list(), np.float32))
                opt.add_slot(var, slot, sk.Variable(value, name=f"{var.op.name}/{slot}"))
    return opt


def _values(seed):
    rng = np.random.default_rng(seed)
    return {
        "beta1_power": np.float32(rng.uniform()), "beta2_power": np.float32(rng.uniform()),
        **{f"{v}/{s}": rng.normal(size=shape).astype(np.float32)
           for v, shape in (("w", (3,)), ("b", ())) for s in ("m", "v")},
    }


def _save(path, values):
    with sk.Graph().as_default():
        model = Model(W, B)
        opt = _adam_like(model, values)
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            return sk.train.Checkpoint(model=model, optimizer=opt).write(str(path), session=sess)


def _object_graph(prefix):
    raw = sk.train.load_checkpoint(prefix).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    return trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw)


def test_slots_are_saved_as_tf_names_them(tmp_path):
    values = _values(0)
    prefix = _save(tmp_path / "c", values)
    reader = sk.train.load_checkpoint(prefix)
    for var in ("w", "b"):
        for slot in ("m", "v"):
            key = f"model/{var}/.OPTIMIZER_SLOT/optimizer/{slot}/.ATTRIBUTES/VARIABLE_VALUE"
            np.testing.assert_array_equal(reader.get_tensor(key), values[f"{var}/{slot}"])
    graph = _object_graph(prefix)
    root = graph.nodes[0]
    opt_id = next(c.node_id for c in root.children if c.local_name == "optimizer")
    opt = graph.nodes[opt_id]
    model = graph.nodes[next(c.node_id for c in root.children if c.local_name == "model")]
    w_id, b_id = (next(c.node_id for c in model.children if c.local_name == n) for n in ("w", "b"))
    # Slot names sorted, original variables in node order; slot nodes come last, without parents.
    refs = [(s.slot_name, s.original_variable_node_id, s.slot_variable_node_id) for s in opt.slot_variables]
    n = len(graph.nodes)
    assert refs == [("m", w_id, n - 4), ("m", b_id, n - 3), ("v", w_id, n - 2), ("v", b_id, n - 1)]
    slot_nodes = [graph.nodes[i] for i in range(n - 4, n)]
    assert all(not node.children and node.has_checkpoint_values.value for node in slot_nodes)
    assert not any(c.node_id >= n - 4 for node in graph.nodes for c in node.children)
    assert graph.nodes[n - 4].attributes[0].full_name == "w/m"


def test_slots_restore_into_a_fresh_tree(tmp_path):
    values = _values(1)
    prefix = _save(tmp_path / "c", values)
    with sk.Graph().as_default():
        model = Model()
        opt = _adam_like(model)
        with sk.Session() as sess:
            sk.train.Checkpoint(model=model, optimizer=opt).read(prefix, session=sess).assert_consumed()
            np.testing.assert_array_equal(sess.run(model.w), W)
            for var in (model.w, model.b):
                for slot in ("m", "v"):
                    got = sess.run(opt.get_slot(var, slot))
                    np.testing.assert_array_equal(got, values[f"{var.op.name}/{slot}"])
            assert sess.run(opt.beta2_power) == values["beta2_power"]


def test_a_slot_added_after_restore_gets_its_value(tmp_path):
    values = _values(2)
    prefix = _save(tmp_path / "c", values)
    with sk.Graph().as_default():
        model = Model()
        opt = _adam_like(model, slots=False)
        with sk.Session() as sess:
            status = sk.train.Checkpoint(model=model, optimizer=opt).read(prefix, session=sess)
            with pytest.raises(AssertionError, match="optimizer's state 'm' for \\(root\\).model.w"):
                status.assert_consumed()  # the checkpoint's slots have no objects yet
            for var in (model.w, model.b):
                for slot in ("m", "v"):
                    opt.add_slot(var, slot)  # zeros, named "<var>/<slot>"
            status.assert_consumed()
            np.testing.assert_array_equal(sess.run(opt.get_slot(model.w, "v")), values["w/v"])


def test_slots_wait_for_an_optimizer_attached_after_restore(tmp_path):
    values = _values(3)
    prefix = _save(tmp_path / "c", values)
    with sk.Graph().as_default():
        model = Model()
        ckpt = sk.train.Checkpoint(model=model)
        with sk.Session() as sess:
            ckpt.read(prefix, session=sess)
            ckpt.optimizer = _adam_like(model)  # deferred restoration, then its slots
            np.testing.assert_array_equal(sess.run(ckpt.optimizer.get_slot(model.b, "m")), values["b/m"])


def test_initialize_or_restore_initializes_slots_without_values(tmp_path):
    with sk.Graph().as_default():
        model = Model(W, B)
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            prefix = sk.train.Checkpoint(model=model).write(str(tmp_path / "c"), session=sess)
    with sk.Graph().as_default():
        model = Model()
        opt = _adam_like(model)
        with sk.Session() as sess:
            sk.train.Checkpoint(model=model, optimizer=opt).read(prefix).initialize_or_restore(sess)
            assert sess.run(opt.get_slot(model.w, "m")).tolist() == [0, 0, 0]
            np.testing.assert_array_equal(sess.run(model.w), W)


def test_add_slot_rejects_a_second_slot_of_the_same_name():
    with sk.Graph().as_default():
        model = Model()
        opt = sk.train.SlotVariables()
        first = opt.add_slot(model.w, "m")
        assert first.op.name == "w/m" and not first.trainable and opt.add_slot(model.w, "m", first) is first
        with pytest.raises(ValueError, match="'w:0' already has a slot 'm'"):
            opt.add_slot(model.w, "m", sk.Variable(np.zeros(3, np.float32)))
        with pytest.raises(TypeError, match="is not a variable"):
            opt.add_slot("w", "m")
        assert opt.get_slot(model.b, "m") is None and opt.get_slot_names() == ["m"]


def test_inspect_object_graph_shows_nodes_attributes_and_slots(tmp_path, capsys):
    prefix = _save(tmp_path / "c", _values(4))
    assert cli.main(["inspect", "--object-graph", prefix]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"object graph of {prefix}: 11 nodes"
    assert "    child 'optimizer' -> [2] (root).optimizer" in out
    assert "    slot 'v' for [3] (root).model.w -> [9]" in out
    assert "[9] (root).optimizer's state 'v' for (root).model.w" in out
    assert ("    attribute VARIABLE_VALUE: model/w/.OPTIMIZER_SLOT/optimizer/v/.ATTRIBUTES/VARIABLE_VALUE  "
            "float32 [3]  (full_name 'w/v')") in out


def test_inspect_object_graph_of_a_name_based_checkpoint_says_why_not(capsys):
    from bundle_helpers import FIXTURES

    assert cli.main(["inspect", "--object-graph", str(FIXTURES / "v1_dtypes")]) == 2
    assert "no object graph" in capsys.readouterr().err


# --- against TensorFlow: tf.compat.v1.train.AdamOptimizer after one step, in a tf.train.Checkpoint
def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def _tf_tree(tf):
    class TFModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(W, name="w")
            self.b = tf.Variable(B, name="b")

    model = TFModel()
    return model, tf.compat.v1.train.AdamOptimizer(0.1)


@pytest.mark.tf
def test_saverkit_restores_slots_tensorflow_wrote(tmp_path):
    tf = _tf()
    model, opt = _tf_tree(tf)
    opt.minimize(lambda: tf.reduce_sum(model.w * model.w) + model.b * model.b, var_list=[model.w, model.b])
    prefix = tf.train.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "tf"))
    want = {"w": model.w.numpy(), "b": model.b.numpy()}
    for v in ("w", "b"):
        want.update({f"{v}/{s}": opt.get_slot(getattr(model, v), s).numpy() for s in ("m", "v")})
    want.update({k: p.numpy() for k, p in zip(("beta1_power", "beta2_power"), opt._get_beta_accumulators(),
                                               strict=True)})
    with sk.Graph().as_default():
        ours = Model()
        slots = _adam_like(ours)
        with sk.Session() as sess:
            sk.train.Checkpoint(model=ours, optimizer=slots).read(prefix, session=sess).assert_consumed()
            assert sess.run(ours.w).tolist() == want["w"].tolist()
            for var in (ours.w, ours.b):
                for s in ("m", "v"):
                    got = sess.run(slots.get_slot(var, s))
                    np.testing.assert_array_equal(got, want[f"{var.op.name}/{s}"])
            assert sess.run(slots.beta1_power) == want["beta1_power"]


@pytest.mark.tf
def test_tensorflow_restores_slots_saverkit_wrote_and_graphs_match(tmp_path):
    values = _values(5)
    prefix = _save(tmp_path / "ours", values)
    tf = _tf()
    model, opt = _tf_tree(tf)
    status = tf.train.Checkpoint(model=model, optimizer=opt).read(prefix).assert_existing_objects_matched()
    for v in ("w", "b"):
        for s in ("m", "v"):  # TF made the slots from our checkpoint, with our values
            np.testing.assert_array_equal(opt.get_slot(getattr(model, v), s).numpy(), values[f"{v}/{s}"])
    np.testing.assert_array_equal(model.w.numpy(), W)
    opt.minimize(lambda: tf.reduce_sum(model.w * model.w), var_list=[model.w, model.b])
    status.assert_consumed()  # the beta powers, created by the step, took our values too
    # TF's own checkpoint of the same tree has the same object graph, up to the slots' graph names.
    theirs = _object_graph(tf.train.Checkpoint(model=model, optimizer=opt).write(str(tmp_path / "tf")))
    ours = _object_graph(prefix)
    for graph in (ours, theirs):
        for node in graph.nodes:
            for attr in node.attributes:
                attr.full_name = ""
    assert ours == theirs
