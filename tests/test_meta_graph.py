"""saverkit.framework.meta_graph: reading/writing .meta files, collections, op lists, scopes."""

import importlib.util
import os
import pathlib
import re
import tracemalloc

import numpy as np
import pytest
import saverkit as sk
from saverkit.framework import meta_graph, op_registry, tensor_util
from saverkit.protobuf import graph_pb2, meta_graph_pb2, saver_pb2

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"


# --- reading TF's files
def test_reads_tf_binary_and_text_meta_graph_alike():
    binary = meta_graph.read_meta_graph_file(FIXTURES / "v1_dtypes" / "model.ckpt-7.meta")
    text = meta_graph.read_meta_graph_file(FIXTURES / "v1_dtypes" / "model.pbtxt")
    assert binary.saver_def == text.saver_def
    assert binary.saver_def.filename_tensor_name == "save/Const:0"
    assert binary.saver_def.restore_op_name == "save/restore_all"
    assert [n.name for n in binary.graph_def.node] == [n.name for n in text.graph_def.node]
    assert set(binary.collection_def) == {"variables", "trainable_variables"}
    assert binary.meta_info_def.tensorflow_version == "2.21.0"


def test_read_meta_graph_file_missing_and_garbage(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        meta_graph.read_meta_graph_file(tmp_path / "nope.meta")
    bad = tmp_path / "bad.meta"
    bad.write_bytes(b"\xff\xfe not a proto {{{")
    with pytest.raises(OSError, match="Cannot parse file"):
        meta_graph.read_meta_graph_file(bad)


def test_ops_used_by_tf_graph_match_tf_stripped_op_list():
    m = meta_graph.read_meta_graph_file(FIXTURES / "v1_sharded" / "model.ckpt.meta")
    used = sorted(meta_graph.ops_used_by_graph_def(m.graph_def))
    assert used == [op.name for op in m.meta_info_def.stripped_op_list.op]


# --- writing
def test_write_meta_graph_file_is_atomic_and_round_trips(tmp_path):
    m = meta_graph_pb2.MetaGraphDef()
    m.saver_def.CopyFrom(
        saver_pb2.SaverDef(
            filename_tensor_name="save/Const:0",
            save_tensor_name="x:0",
            restore_op_name="save/restore_all",
            version=saver_pb2.SaverDef.V2,
        )
    )
    m.graph_def.node.add(name="a", op="NoOp")
    target = tmp_path / "sub" / "model.meta"  # the parent is created, like TF's write_graph
    meta_graph.write_meta_graph_file(m, target)
    assert meta_graph.read_meta_graph_file(target) == m
    meta_graph.write_meta_graph_file(m, tmp_path / "model.pbtxt", as_text=True)
    assert b"save/restore_all" in (tmp_path / "model.pbtxt").read_bytes()
    assert meta_graph.read_meta_graph_file(tmp_path / "model.pbtxt") == m
    assert sorted(os.listdir(tmp_path)) == ["model.pbtxt", "sub"]
    assert os.listdir(tmp_path / "sub") == ["model.meta"]


# --- names and scopes
@pytest.mark.parametrize(
    "name, scope, want",
    [
        ("outer/w", "outer", "w"),
        ("outer/w:0", "outer/", "w:0"),
        ("^outer/w", "outer", "^w"),
        ("loc:@outer/w", "outer", "loc:@w"),
        ("other/w", "outer", "other/w"),
        ("w", None, "w"),
    ],
)
def test_strip_name_scope(name, scope, want):
    assert meta_graph.strip_name_scope(name, scope) == want


@pytest.mark.parametrize(
    "name, scope, want",
    [
        ("w", "imp", "imp/w"),
        ("w:0", "imp/", "imp/w:0"),
        ("^w", "imp", "^imp/w"),
        ("loc:@w", "imp", "loc:@imp/w"),
        ("w", "", "w"),
    ],
)
def test_prepend_name_scope(name, scope, want):
    assert meta_graph.prepend_name_scope(name, scope) == want


def _node(g, name, op, *inputs):
    g.node.add(name=name, op=op, input=list(inputs))


def test_find_extraneous_saver_nodes_keeps_only_the_given_savers_scope():
    g = graph_pb2.GraphDef()
    _node(g, "w", "VariableV2")
    for scope in ("save", "save_1"):
        _node(g, f"{scope}/Const", "PlaceholderWithDefault")
        _node(g, f"{scope}/SaveV2", "SaveV2", f"{scope}/Const", "w")
        _node(g, f"{scope}/RestoreV2", "RestoreV2", f"{scope}/Const")
        _node(g, f"{scope}/restore_all", "NoOp")
    keep = saver_pb2.SaverDef(
        save_tensor_name="save_1/control_dependency:0", restore_op_name="save_1/restore_all"
    )
    assert meta_graph._find_extraneous_saver_nodes(g, keep) == {
        "save/Const",
        "save/SaveV2",
        "save/RestoreV2",
        "save/restore_all",
    }


def test_node_def_export_scope_marks_unbound_inputs():
    from saverkit.protobuf import node_def_pb2

    n = node_def_pb2.NodeDef(
        name="outer/add", op="Add", input=["outer/x", "other/y", "^elsewhere/z"], device="/device:CPU:0"
    )
    unbound = []
    out = meta_graph._node_def(n, "outer", unbound, clear_devices=True)
    assert out.name == "add"
    assert list(out.input) == ["x", "$unbound_inputs_other/y", "^$unbound_inputs_elsewhere/z"]
    assert unbound == ["$unbound_inputs_other/y", "^$unbound_inputs_elsewhere/z"]
    assert out.device == ""


# --- export / import with saverkit graphs


def _model():
    w = sk.Variable(np.ones((2, 3), np.float32), name="w")
    step = sk.Variable(np.int64(0), name="global_step", trainable=False)
    train_op = sk.group(w.assign_add(np.ones((2, 3), np.float32)), step.assign_add(1), name="train_op")
    return w, step, train_op


def test_collections_are_encoded_as_tf_does():
    g = sk.Graph()
    with g.as_default():
        w, step, train_op = _model()
        sk.add_to_collection("train_op", train_op)
        sk.add_to_collection("tensors", w.value())
        sk.add_to_collection("ints", 3)
        sk.add_to_collection("ints", 4)
        sk.add_to_collection("floats", 0.5)
        sk.add_to_collection("strings", "hello")
        sk.add_to_collection("strings", b"bytes")
        saver = sk.train.Saver()
        sk.add_to_collection(sk.GraphKeys.SAVERS, saver)
        m = sk.train.export_meta_graph(saver_def=saver.saver_def)
    c = m.collection_def
    assert c["train_op"].node_list.value == ["train_op"]
    assert c["tensors"].node_list.value == ["w/read:0"]
    assert list(c["ints"].int64_list.value) == [3, 4]
    assert list(c["floats"].float_list.value) == [0.5]
    assert list(c["strings"].bytes_list.value) == [b"hello", b"bytes"]
    assert saver_pb2.SaverDef.FromString(c["savers"].bytes_list.value[0]) == saver.saver_def
    from saverkit.protobuf import variable_pb2

    defs = [variable_pb2.VariableDef.FromString(b) for b in c["variables"].bytes_list.value]
    assert [(d.variable_name, d.initializer_name, d.snapshot_name, d.trainable) for d in defs] == [
        ("w:0", "w/Assign", "w/read:0", True),
        ("global_step:0", "global_step/Assign", "global_step/read:0", False),
    ]
    assert len(c["trainable_variables"].bytes_list.value) == 1
    assert m.saver_def == saver.saver_def
    assert m.meta_info_def.tensorflow_git_version.startswith("saverkit-")


def test_unencodable_collection_is_skipped_with_a_warning(caplog):
    g = sk.Graph()
    with g.as_default():
        _model()
        sk.add_to_collection("odd", object())
        m = sk.train.export_meta_graph()
    assert "odd" not in m.collection_def
    assert "Error encountered when serializing odd" in caplog.text  # logged, as TF does


def test_stripped_op_list_is_exactly_the_ops_used():
    g = sk.Graph()
    with g.as_default():
        _model()
        saver = sk.train.Saver(sharded=True)
        m = saver.export_meta_graph()
    used = sorted({n.op for n in m.graph_def.node})
    assert [op.name for op in m.meta_info_def.stripped_op_list.op] == used
    for op in m.meta_info_def.stripped_op_list.op:
        assert op == op_registry.get_op_def(op.name)
    assert "MergeV2Checkpoints" in used and "AssignAdd" in used


def test_meta_graph_is_lean():
    g = sk.Graph()
    with g.as_default():
        _model()
        saver = sk.train.Saver()
        m = saver.export_meta_graph()
    consts = sorted(n.name for n in m.graph_def.node if n.op == "Const" and n.name.startswith("save/"))
    assert consts == ["save/SaveV2/shape_and_slices", "save/SaveV2/tensor_names", "save/filename/input"]
    assert not any("_output_shapes" in n.attr for n in m.graph_def.node)
    # the variable's initial value is stored once, in w/initial_value
    sizes = sorted((n.ByteSize(), n.name) for n in m.graph_def.node)
    assert sizes[-1][0] < 200


def test_round_trip_restores_graph_collections_and_values(tmp_path):
    g = sk.Graph()
    with g.as_default():
        w, step, train_op = _model()
        sk.add_to_collection("train_op", train_op)
        sk.add_to_collection("ints", 7)
        saver = sk.train.Saver()
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            sess.run(train_op)
            prefix = saver.save(sess, str(tmp_path / "model"), global_step=step)
    assert prefix == str(tmp_path / "model-1")
    g2 = sk.Graph()
    with g2.as_default():
        saver2 = sk.train.import_meta_graph(prefix + ".meta")
        assert saver2.saver_def == saver.saver_def
        train_op2 = sk.get_collection("train_op")[0]
        assert isinstance(train_op2, sk.Operation) and train_op2.name == "train_op"
        assert sk.get_collection("ints") == [7]
        names = [v.op.name for v in sk.global_variables()]
        assert names == ["w", "global_step"]
        assert [v.op.name for v in sk.trainable_variables()] == ["w"]
        with sk.Session() as sess:
            saver2.restore(sess, prefix)
            sess.run(train_op2)  # training continues from the imported graph
            w2, step2 = sk.global_variables()
            np.testing.assert_array_equal(sess.run(w2), np.full((2, 3), 3, np.float32))
            assert sess.run(step2) == 2


def test_export_scope_import_scope_and_clear_devices(tmp_path):
    g = sk.Graph()
    with g.as_default():
        with sk.name_scope("outer"), sk.device("/cpu:0"):
            v = sk.Variable(np.arange(3, dtype=np.float32), name="v")
        sk.Variable(1.0, name="elsewhere")
        m = sk.train.export_meta_graph(export_scope="outer", clear_devices=True)
    names = {n.name for n in m.graph_def.node}
    assert "v" in names and "v/read" in names and "elsewhere" not in names
    assert all(n.device == "" for n in m.graph_def.node)
    assert [b for b in m.collection_def["variables"].bytes_list.value]  # only outer's variable
    assert len(m.collection_def["variables"].bytes_list.value) == 1
    g2 = sk.Graph()
    with g2.as_default():
        assert sk.train.import_meta_graph(m, import_scope="imp") is not None  # no SaverDef: a default Saver
        (v2,) = sk.global_variables()
        assert v2.op.name == "imp/v"
        with sk.Session() as sess:
            sess.run(v2.initializer)
            np.testing.assert_array_equal(sess.run(v2), np.arange(3, dtype=np.float32))
    del v


def test_clear_extraneous_savers_and_strip_default_attrs():
    g = sk.Graph()
    with g.as_default():
        _model()
        first = sk.train.Saver()
        second = sk.train.Saver()
        sk.add_to_collection(sk.GraphKeys.SAVERS, first)
        sk.add_to_collection(sk.GraphKeys.SAVERS, second)
        m = second.export_meta_graph(clear_extraneous_savers=True, strip_default_attrs=True)
    names = {n.name for n in m.graph_def.node}
    assert "save_1/SaveV2" in names and not any(n.startswith("save/") for n in names)
    assert len(m.collection_def["savers"].bytes_list.value) == 1
    assert m.meta_info_def.stripped_default_attrs
    assign = next(n for n in m.graph_def.node if n.name == "save_1/Assign")
    assert "use_locking" not in assign.attr and "validate_shape" not in assign.attr  # both default true
    assert "T" in assign.attr


def test_import_meta_graph_without_variables_or_saver_returns_none():
    g = sk.Graph()
    with g.as_default():
        sk.constant(1.0, name="c")
        m = sk.train.export_meta_graph()
    with sk.Graph().as_default():
        assert sk.train.import_meta_graph(m) is None


def test_export_writes_text_and_binary(tmp_path):
    g = sk.Graph()
    with g.as_default():
        _model()
        saver = sk.train.Saver()
        saver.export_meta_graph(str(tmp_path / "m.pbtxt"), as_text=True)
        saver.export_meta_graph(str(tmp_path / "m.meta"))
    assert (tmp_path / "m.pbtxt").read_text().startswith("meta_info_def {")
    assert meta_graph.read_meta_graph_file(tmp_path / "m.pbtxt") == meta_graph.read_meta_graph_file(
        tmp_path / "m.meta"
    )


# --- hostile files: Consts declaring far more than they hold (tests/hostile/hostile_meta.py) ----------------
_spec = importlib.util.spec_from_file_location(
    "hostile_meta", pathlib.Path(__file__).parent / "hostile" / "hostile_meta.py")
hostile_meta = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile_meta)


def _value_bytes(node):
    return node.attr["value"].SerializeToString()


@pytest.mark.parametrize("case", hostile_meta.CASES, ids=[c[0] for c in hostile_meta.CASES])
def test_hostile_const_imports_small_and_fails_by_name_when_run(tmp_path, case):
    name, build, dtype, error, text = case
    mg = hostile_meta.meta_graph_def(build, dtype)
    path = tmp_path / f"{name}.meta"
    path.write_bytes(mg.SerializeToString())
    with sk.Graph().as_default() as g:
        tracemalloc.start()
        try:
            sk.train.import_meta_graph(str(path))  # used to decode every Const: MemoryError / ValueError
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20
        big = g.get_tensor_by_name("big:0")
        dims = mg.graph_def.node[1].attr["value"].tensor.tensor_shape.dim
        assert big.shape.as_list() == [d.size for d in dims]
        with sk.Session() as sess:
            np.testing.assert_array_equal(sess.run("small:0"), np.array([1.5, 2.5], np.float32))
            with pytest.raises(error) as info:
                sess.run(big)
        assert str(info.value).startswith(f"Const 'big' (from {path}): ")
        assert text in str(info.value) and info.value.op is big.op
        with pytest.raises(error, match=f"Const 'big' \\(from {re.escape(str(path))}\\)"):
            tensor_util.constant_value(big)  # a user asking for the value: the same error
        exported = meta_graph.export_scoped_meta_graph()[0].graph_def
    # Exported back byte for byte, without being decoded.
    assert [_value_bytes(n) for n in exported.node] == [_value_bytes(n) for n in mg.graph_def.node]
    assert g.get_operation_by_name("big").get_attr("value") == mg.graph_def.node[1].attr["value"].tensor


def test_hostile_const_imported_from_a_proto_names_the_node():
    mg = hostile_meta.meta_graph_def(*hostile_meta.CASES[0][1:3])
    with sk.Graph().as_default():
        sk.train.import_meta_graph(mg, import_scope="x")
        with sk.Session() as sess, pytest.raises(sk.errors.InvalidArgumentError) as info:
            sess.run("x/big:0")
    assert str(info.value).startswith("Const 'x/big': its value, float32 of shape [2147483648]")


def test_const_size_limit_is_the_documented_constant(monkeypatch):
    mg = meta_graph_pb2.MetaGraphDef()
    for name, n in (("fits", 255), ("too_big", 256)):  # float32: 1020 and 1024 bytes
        c = mg.graph_def.node.add(name=name, op="Const")
        c.attr["dtype"].type = 1
        c.attr["value"].tensor.dtype = 1
        c.attr["value"].tensor.tensor_shape.dim.add(size=n)
        c.attr["value"].tensor.float_val.append(3.0)
    monkeypatch.setattr(tensor_util, "MAX_CONST_BYTES", 1024)
    with sk.Graph().as_default():
        sk.train.import_meta_graph(mg)
        with sk.Session() as sess:
            np.testing.assert_array_equal(sess.run("fits:0"), np.full(255, 3.0, np.float32))
            with pytest.raises(sk.errors.InvalidArgumentError, match="less than 1024 bytes"):
                sess.run("too_big:0")


def test_tf_written_consts_run_to_their_values_and_export_unchanged():
    src = FIXTURES / "v1_dtypes" / "model.ckpt-7.meta"
    original = meta_graph.read_meta_graph_file(src)
    with sk.Graph().as_default() as g:
        sk.train.import_meta_graph(str(src))
        consts = [op for op in g.get_operations() if op.type == "Const"]
        assert len(consts) > 10
        with sk.Session() as sess:
            values = sess.run([op.outputs[0] for op in consts])
        exported = {n.name: n for n in g.as_graph_def().node}
    for op, got in zip(consts, values, strict=True):
        want = tensor_util.MakeNdarray(op.get_attr("value"))
        got = np.asarray(got, dtype=object) if want.dtype == object else got  # a string scalar runs to bytes
        assert (got.dtype, got.shape) == (want.dtype, want.shape), op.name
        assert got.tolist() == want.tolist(), op.name
    for node in original.graph_def.node:
        if node.op == "Const":
            assert _value_bytes(exported[node.name]) == _value_bytes(node), node.name


def test_one_name_scope_helper_pair_with_tensorflows_rules():
    """Regression: two copies disagreed on ``a//b``; TF strips every slash after the scope."""
    from saverkit.framework import ops

    assert ops.strip_name_scope is meta_graph.strip_name_scope
    assert ops.prepend_name_scope is meta_graph.prepend_name_scope
    assert meta_graph.strip_name_scope("a//b", "a") == "b"
    assert meta_graph.strip_name_scope("^a///b:0", "a/") == "^b:0"
    assert meta_graph.strip_name_scope("a.b/w", "a*b") == "a.b/w"  # the scope is literal, not a pattern
    assert meta_graph.prepend_name_scope("^w", "imp/") == "^imp/w"
