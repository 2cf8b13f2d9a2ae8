"""Variable (TF1 ref variables), initializers, VariableDef round trip, global step."""

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit.framework import ops
from saverkit.framework.variables import Variable
from saverkit.protobuf import variable_pb2


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


def test_variable_builds_tf_op_structure(graph):
    w = sk.Variable([[1.0, 2.0]], name="w")
    assert [op.name for op in graph.get_operations()] == ["w/initial_value", "w", "w/Assign", "w/read"]
    assert [op.type for op in graph.get_operations()] == ["Const", "VariableV2", "Assign", "Identity"]
    assert w.name == "w:0"
    assert w.op.name == "w"
    assert w.dtype == sk.float32._as_ref and w.dtype.name == "float32_ref"
    assert w.shape.as_list() == [1, 2] and w.get_shape() == w.shape
    assert w.initializer.name == "w/Assign"
    assert w.initial_value.name == "w/initial_value:0"
    assert w.value().name == "w/read:0"
    assert w.graph is graph
    assert list(w.initializer.node_def.input) == ["w", "w/initial_value"]
    assert repr(w) == "<saverkit.Variable 'w:0' shape=(1, 2) dtype=float32_ref>"


def test_variable_names_are_uniquified(graph):
    a = sk.Variable(1, name="w")
    b = sk.Variable(2, name="w")
    c = sk.Variable(3)
    assert (a.name, b.name, c.name) == ("w:0", "w_1:0", "Variable:0")
    with sk.name_scope("layer"):
        d = sk.Variable(4, name="w")
    assert d.name == "layer/w:0"
    assert d.initializer.name == "layer/w/Assign"


def test_collections_and_trainable(graph):
    a = sk.Variable(1.0, name="a")
    b = sk.Variable(1.0, name="b", trainable=False)
    c = sk.Variable(1.0, name="c", collections=[sk.GraphKeys.LOCAL_VARIABLES], trainable=False)
    d = sk.Variable(1.0, name="d", collections=[sk.GraphKeys.MODEL_VARIABLES, sk.GraphKeys.GLOBAL_VARIABLES])
    assert sk.global_variables() == [a, b, d]
    assert sk.trainable_variables() == [a, d]
    assert sk.local_variables() == [c]
    assert sk.model_variables() == [d]
    assert sk.global_variables(scope="a") == [a]
    with pytest.raises(ValueError, match="must be a list"):
        sk.Variable(1.0, collections="variables")


def test_initialize_read_assign(graph):
    w = sk.Variable(np.arange(3, dtype=np.float32), name="w")
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        np.testing.assert_array_equal(sess.run(w), [0, 1, 2])
        np.testing.assert_array_equal(sess.run(w.assign([5, 6, 7])), [5, 6, 7])
        np.testing.assert_array_equal(sess.run(w.assign_add([1, 1, 1])), [6, 7, 8])
        np.testing.assert_array_equal(sess.run(w.assign_sub([6, 7, 8])), [0, 0, 0])
        assert sess.run(w.assign(np.ones(3, np.float32), read_value=False)) is None
        np.testing.assert_array_equal(w.eval(sess), [1, 1, 1])
        np.testing.assert_array_equal(sess.run(w.read_value()), [1, 1, 1])
        np.testing.assert_array_equal(sess.run(w + 1.0), [2, 2, 2])
        np.testing.assert_array_equal(sess.run(2.0 * w - w), [1, 1, 1])


def test_uninitialized_read_raises_failed_precondition(graph):
    w = sk.Variable(1.0, name="w")
    with sk.Session() as sess:
        with pytest.raises(
            errors.FailedPreconditionError, match="Attempting to use uninitialized value w"
        ) as info:
            sess.run(w.value())
        assert info.value.op.name == "w/read"
        with pytest.raises(errors.FailedPreconditionError, match="uninitialized value w"):
            sess.run(w)
        with pytest.raises(errors.FailedPreconditionError, match="Attempting to use uninitialized value w"):
            sess.run(w.assign_add(1.0))


def test_assign_copies_into_the_existing_buffer(graph):
    w = sk.Variable(np.zeros((100, 10), np.float32), name="w")
    new = sk.placeholder(sk.float32, [100, 10])
    assign = w.assign(new)
    with sk.Session() as sess:
        sess.run(w.initializer)
        buf = sess._variables.get((b"", "w"))
        sess.run(assign, {new: np.full((100, 10), 3.0, np.float32)})
        assert sess._variables.get((b"", "w")) is buf  # same allocation, value copied in
        assert buf[5, 5] == 3.0


def test_assign_validates_shapes(graph):
    w = sk.Variable([1.0, 2.0], name="w")
    p = sk.placeholder(sk.float32, [None])
    with pytest.raises(ValueError, match="shapes must be equal"):
        w.assign([1.0, 2.0, 3.0])
    bad = w.assign(p)
    loose = sk.assign(w, p, validate_shape=False)
    with sk.Session() as sess:
        sess.run(w.initializer)
        with pytest.raises(errors.InvalidArgumentError, match=r"lhs shape= \[2\] rhs shape= \[3\]"):
            sess.run(bad, {p: [1, 2, 3]})
        np.testing.assert_array_equal(sess.run(loose, {p: [1, 2, 3]}), [1, 2, 3])


def test_assign_needs_a_variable(graph):
    c = sk.constant(1.0)
    with pytest.raises(TypeError, match="mutable tensor"):
        sk.assign(c, 2.0)


def test_validate_shape_false_and_unknown_shapes(graph):
    p = sk.placeholder(sk.float32, [None])
    with pytest.raises(ValueError, match="must have a shape specified"):
        sk.Variable(p)
    v = sk.Variable(p, validate_shape=False, name="v")
    assert v.shape.rank is None
    with sk.Session() as sess:
        sess.run(v.initializer, {p: [1, 2, 3]})
        np.testing.assert_array_equal(sess.run(v), [1, 2, 3])
        sess.run(v.initializer, {p: [4]})
        np.testing.assert_array_equal(sess.run(v), [4])


def test_dtype_argument_and_conversion(graph):
    v = sk.Variable(1, dtype=sk.float64, name="v")
    assert v.dtype.base_dtype == sk.float64
    with pytest.raises(TypeError):
        sk.Variable(1.5, dtype=sk.int32)
    with pytest.raises(ValueError, match="Incompatible type conversion"):
        sk.convert_to_tensor(v, dtype=sk.int32)
    assert sk.convert_to_tensor(v) is v.value()
    assert ops.convert_to_tensor(v, as_ref=True) is v._ref()


def test_initial_value_from_a_tensor_or_a_callable(graph):
    base = sk.Variable(2.0, name="base")
    derived = sk.Variable(base.initial_value * 3.0, name="derived")
    lazy = sk.Variable(lambda: sk.zeros([2], sk.int64), name="lazy")
    assert lazy.initial_value.op.name == "lazy/Initializer/zeros"
    assert lazy.op.get_attr("_class") == [b"loc:@lazy"]
    assert lazy.initial_value.op.get_attr("_class") == [b"loc:@lazy"]
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        assert sess.run(derived) == 6.0
        np.testing.assert_array_equal(sess.run(lazy), [0, 0])


def test_load(graph):
    v = sk.Variable([0, 0], name="v")
    with sk.Session() as sess:
        v.load([3, 4], sess)
        np.testing.assert_array_equal(sess.run(v), [3, 4])
        with sess.as_default():
            v.load([5, 6])
        np.testing.assert_array_equal(sess.run(v), [5, 6])
    with pytest.raises(ValueError, match="session"):
        v.load([1, 1])


def test_initializers_and_reports(graph):
    a = sk.Variable(1.0, name="a")
    sk.Variable(2.0, name="b")
    sk.Variable(3.0, name="loc", collections=[sk.GraphKeys.LOCAL_VARIABLES])
    report = sk.report_uninitialized_variables()
    assert report.dtype == sk.string
    with sk.Session() as sess:
        assert list(sess.run(report)) == [b"a", b"b", b"loc"]
        assert not sess.run(sk.is_variable_initialized(a))
        sess.run(sk.variables_initializer([a]))
        assert sess.run(a.is_initialized())
        assert list(sess.run(report)) == [b"b", b"loc"]
        sess.run(sk.local_variables_initializer())
        assert list(sess.run(report)) == [b"b"]
        sess.run(sk.global_variables_initializer())
        assert list(sess.run(report)) == []
        assert sess.run(sk.report_uninitialized_variables([])).shape == (0,)
    assert sk.variables_initializer([]).type == "NoOp"
    assert sk.global_variables_initializer().name.startswith("init")


def test_global_variables_initializer_groups_every_initializer(graph):
    vs = [sk.Variable(float(i), name=f"v{i}") for i in range(5)]
    init = sk.global_variables_initializer()
    assert init.name == "init" and init.type == "NoOp"
    assert init.control_inputs == [v.initializer for v in vs]


def test_to_proto_and_from_proto(graph):
    with sk.name_scope("outer"):
        w = sk.Variable([1.0, 2.0], name="w", trainable=False)
    proto = w.to_proto()
    assert isinstance(proto, variable_pb2.VariableDef)
    assert proto.variable_name == "outer/w:0"
    assert proto.initializer_name == "outer/w/Assign"
    assert proto.snapshot_name == "outer/w/read:0"
    assert proto.initial_value_name == "outer/w/initial_value:0"
    assert not proto.trainable
    back = Variable.from_proto(proto)
    assert back.op is w.op and back.initializer is w.initializer and back.value() is w.value()
    assert back.initial_value is w.initial_value and not back.trainable
    stripped = w.to_proto(export_scope="outer")
    assert stripped.variable_name == "w:0"
    assert w.to_proto(export_scope="elsewhere") is None
    assert ops.get_to_proto_function(sk.GraphKeys.GLOBAL_VARIABLES)(w) == proto
    assert ops.get_collection_proto_type("trainable_variables") is variable_pb2.VariableDef
    assert ops.get_from_proto_function("variables")(proto).op is w.op


def test_from_proto_with_import_scope(graph):
    w = sk.Variable(1.0, name="w")
    proto = w.to_proto()
    with sk.Graph().as_default() as g2:
        sk.import_graph_def(graph.as_graph_def(), name="imp")
        v = Variable.from_proto(proto, import_scope="imp")
        assert v.op is g2.get_operation_by_name("imp/w")
        with sk.Session() as sess:
            sess.run(v.initializer)
            assert sess.run(v) == 1.0


def test_save_slice_info(graph):
    part = sk.Variable(np.zeros((5, 4), np.float32), name="w/part_0")
    info = Variable.SaveSliceInfo("w", [10, 4], [0, 0], [5, 4])
    part._set_save_slice_info(info)
    assert info.spec == "10 4 0,5:0,4"
    proto = part.to_proto()
    assert list(proto.save_slice_info_def.full_shape) == [10, 4]
    back = Variable.from_proto(proto)
    assert back._get_save_slice_info().spec == "10 4 0,5:0,4"


def test_operators_on_variables(graph):
    v = sk.Variable(np.array([[1.0, 2.0]], np.float32), name="v")
    m = v @ np.array([[1.0], [1.0]], np.float32)
    with sk.Session() as sess:
        sess.run(v.initializer)
        np.testing.assert_array_equal(sess.run(m), [[3.0]])
        np.testing.assert_array_equal(sess.run(-v), [[-1.0, -2.0]])


# --- global step ----------------------------------------------------------------------------------


def test_global_step(graph):
    assert sk.train.get_global_step() is None
    gs = sk.train.get_or_create_global_step()
    assert gs.name == "global_step:0"
    assert gs.dtype.base_dtype == sk.int64 and gs.shape.rank == 0
    assert sk.get_collection(sk.GraphKeys.GLOBAL_STEP) == [gs]
    assert gs in sk.global_variables() and gs not in sk.trainable_variables()
    assert sk.train.get_or_create_global_step() is gs
    assert sk.train.get_global_step() is gs
    assert gs.initial_value.op.name == "global_step/Initializer/zeros"
    with pytest.raises(ValueError, match="already exists"):
        sk.train.create_global_step()
    with sk.Session() as sess:
        sess.run(gs.initializer)
        sess.run(gs.assign_add(5))
        assert sk.train.global_step(sess, gs) == 5


def test_global_step_found_by_name_and_checked(graph):
    with sk.Graph().as_default() as g:
        sk.Variable(np.int64(0), name="global_step", trainable=False)
        assert sk.train.get_global_step(g).name == "global_step:0"
    with sk.Graph().as_default() as g:
        sk.Variable(0.0, name="global_step")
        with pytest.raises(TypeError, match="integer"):
            sk.train.get_global_step(g)


def test_global_step_is_created_at_the_root_scope(graph):
    with sk.name_scope("somewhere"):
        gs = sk.train.create_global_step()
    assert gs.name == "global_step:0"


# --- Variables in every context -----------------------------------------------------------------------


def _variable_scenario(log: list) -> None:
    """Variables in every context the graph knows (scopes, devices, device functions, control
    dependencies, colocation, attr scopes, Tensor initial values, other graphs, finalization), recording
    the errors."""

    def attempt(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, RuntimeError) as e:
            log.append((type(e).__name__, str(e)))
            return None

    g = sk.get_default_graph()
    f32 = np.arange(6, dtype=np.float32).reshape(2, 3)
    Variable(f32, name="v")
    Variable(f32, name="v")  # v_1
    Variable(f32, name="V")  # names are unique case-insensitively: V_2
    Variable(f32)  # Variable
    Variable(f32, name=None)
    Variable(f32, name="")
    Variable(np.int64(7) * np.ones((), np.int64), name="scalar")
    Variable(np.array([b"a", b"bc"], dtype=object), name="strings")
    Variable(np.array([1, 2], np.int32), name="cast", dtype=sk.float64)
    attempt(Variable, np.array([1.5], np.float32), name="bad_cast", dtype=sk.string)
    Variable(f32, name="unvalidated", validate_shape=False)
    Variable(f32, name="shaped", shape=[2, 3])
    Variable(f32, name="not_trainable", trainable=False, collections=["mine"])
    sk.constant(1.0, name="taken/read")  # the next Variable's "read" becomes read_1
    Variable(f32, name="taken")
    attempt(Variable, f32, name="bad name")
    attempt(Variable, f32, name="_leading_underscore")
    attempt(Variable, f32, name="newline\n")
    with sk.name_scope("outer"):
        Variable(f32, name="v")
        Variable(f32, name="_inner_underscore_is_fine")
        with sk.name_scope("inner"):
            Variable(f32, name="v")
        with sk.device("/cpu:0"):
            Variable(f32, name="on_cpu")
            with sk.device("/job:w/task:1"):
                Variable(f32, name="merged_device")
        with sk.device(lambda op: "/gpu:0" if op.type == "VariableV2" else ""):
            Variable(f32, name="device_fn")
        with sk.name_scope("_x/"):  # a stack not valid as an op-name prefix: every op name fails
            attempt(Variable, f32, name="w")
        with sk.name_scope("outer/"):  # re-entered scope
            Variable(f32, name="again")
    c = sk.constant(1.0, name="c")
    with sk.control_dependencies([c]):
        Variable(f32, name="controlled")
    with g.colocate_with(c.op):
        Variable(f32, name="colocated")
    with g._attr_scope({"_class": [b"loc:@c"]}):
        Variable(f32, name="attr_scoped")
    # Tensor initial values made beforehand (the fast path takes those of this graph as they are).
    Variable(sk.zeros([2, 3]), name="from_zeros")
    Variable(sk.zeros([40, 40], dtype=sk.int32), name="from_fill")
    Variable(sk.ones([3]), name="same_dtype", dtype=sk.float32)
    attempt(Variable, sk.ones([3]), name="other_dtype", dtype=sk.int64)
    unknown = sk.placeholder(sk.float32, [None, 3], name="unknown")
    attempt(Variable, unknown, name="needs_shape")
    Variable(unknown, name="unvalidated_tensor", validate_shape=False)
    Variable(sk.constant(f32), name="tensor_shaped", shape=[2, 3])
    ref_source = Variable(f32, name="ref_source")
    Variable(ref_source._variable, name="from_ref")  # a ref tensor: read through the general path
    Variable(ref_source.value(), name="from_read")
    with sk.Graph().as_default():
        elsewhere = sk.zeros([2], name="elsewhere")
    Variable(elsewhere, name="other_graph")  # built in the initial value's graph, like TF
    Variable(f32, name="ends_with_slash/")
    attempt(Variable, f32, name="ends_with_slash/")  # a duplicate node name
    attempt(Variable, f32, name=b"bytes_name")
    g.finalize()
    attempt(Variable, f32, name="after_finalize")
    g._unsafe_unfinalize()
    sk.global_variables_initializer()
    Variable(f32, name="v")  # v_3: after all of the above


def test_variables_in_every_context_are_tensorflows_four_ops():
    log: list = []
    with sk.Graph().as_default() as g:
        _variable_scenario(log)
    assert len(log) == 10, log  # every attempt above failed
    assert [kind for kind, _ in log].count("TypeError") >= 2 and log[-1][0] == "RuntimeError"
    assert any("not a valid scope name" in m for _, m in log)
    assert any("Duplicate node name" in m for _, m in log)
    names = [v.op.name for v in g.get_collection(sk.GraphKeys.GLOBAL_VARIABLES)]
    assert names[:6] == ["v", "v_1", "V_2", "Variable", "Variable_1", "Variable_2"]
    assert {"outer/v", "outer/inner/v", "outer/again", "ends_with_slash", "v_3"} <= set(names)
    for v in g.get_collection(sk.GraphKeys.GLOBAL_VARIABLES) + g.get_collection("mine"):
        var, init, read = v.op, v.initializer, v.value().op
        assert var.type == "VariableV2" and init.type == "Assign" and read.type == "Identity"
        assert init.inputs == (v._ref(), v.initial_value) and read.inputs == (v._ref(),)
        assert init.name.startswith(var.name + "/Assign") and read.name.startswith(var.name + "/read")
        # The Assign and the read live with the variable (TF colocates ops writing or reading a ref).
        assert set(var.colocation_groups()) <= set(init.get_attr("_class"))
        assert init.get_attr("_class") == read.get_attr("_class")
        assert init.device == read.device == var.device
    devices = {v.op.name: v.device for v in g.get_collection(sk.GraphKeys.GLOBAL_VARIABLES)}
    assert devices["outer/on_cpu"] == "/device:CPU:0" and devices["v"] == ""
    assert devices["outer/device_fn"] == "/device:GPU:0"
    assert "/job:w" in devices["outer/merged_device"] and "CPU:0" in devices["outer/merged_device"]
    assert [c.name for c in g.get_operation_by_name("controlled/initial_value").control_inputs] == ["c"]
    assert b"loc:@c" in g.get_operation_by_name("colocated").get_attr("_class")
    assert "other_graph" not in names  # built in its initial value's graph, as TF does
    assert g.get_operation_by_name("taken/read_1").type == "Identity"
    for op in g.get_operations():  # every name is taken: a new op of that name gets a suffix
        assert g.unique_name(op.name, mark_as_used=False) != op.name
    with sk.Session(graph=g) as sess:  # the variables start from their initial values
        sess.run(g.get_operation_by_name("outer/v/Assign"))
        assert sess.run("outer/v:0").tolist() == [[0, 1, 2], [3, 4, 5]]
        sess.run(g.get_operation_by_name("cast/Assign"))
        assert sess.run("cast:0").dtype == np.float64


def test_variables_made_as_one_batch_equal_those_made_op_by_op():
    # Graph._create_variable_ops makes a variable's ops as one batch when no context block is in effect,
    # else op by op through _create_op. A clearing control_dependencies(None) block changes nothing about
    # the ops but makes every op take the op-by-op way: the whole scenario must give the same graph.
    def build(op_by_op: bool):
        log: list = []
        with sk.Graph().as_default() as g:
            if op_by_op:
                with g.control_dependencies(None):
                    _variable_scenario(log)
            else:
                _variable_scenario(log)
        return g.as_graph_def(), dict(g._names_in_use), log

    batched, op_by_op = build(False), build(True)
    assert batched[0] == op_by_op[0]
    assert batched[1] == op_by_op[1]
    assert batched[2] == op_by_op[2]
