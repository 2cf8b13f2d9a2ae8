"""import_graph_def: round trips, prefixes, input_map, return_elements, TF-written graphs, opaque ops."""

import pathlib

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit.protobuf import graph_pb2, meta_graph_pb2

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"


def build_model():
    g = sk.Graph()
    with g.as_default():
        w = sk.Variable(np.array([[1.0, 2.0]], np.float32), name="w")
        x = sk.placeholder(sk.float32, [2, 1], name="x")
        with sk.device("/cpu:0"):
            y = sk.matmul(w, x, name="y")
        with sk.control_dependencies([w.initializer]):
            sk.no_op(name="after_init")
        sk.global_variables_initializer()
    return g, y


def test_round_trip_preserves_every_node():
    g, _ = build_model()
    gd = g.as_graph_def()
    with sk.Graph().as_default() as g2:
        assert sk.import_graph_def(gd, name="") is None
        gd2 = g2.as_graph_def()
    assert gd2 == gd  # same nodes, inputs, devices, attrs, versions


def test_imported_graph_runs():
    g, _ = build_model()
    with sk.Graph().as_default() as g2:
        sk.import_graph_def(g.as_graph_def())
        y = g2.get_tensor_by_name("import/y:0")
        assert y.op.device == "/device:CPU:0"
        assert y.shape.as_list() == [1, 1]
        with sk.Session() as sess:
            sess.run("import/init")
            out = sess.run(y, {"import/x:0": [[1.0], [1.0]]})
    np.testing.assert_array_equal(out, [[3.0]])


def test_prefix_is_uniquified_and_colocation_follows():
    g, _ = build_model()
    gd = g.as_graph_def()
    with sk.Graph().as_default() as g2:
        sk.import_graph_def(gd)
        sk.import_graph_def(gd)
        sk.import_graph_def(gd, name="mine")
        names = {op.name for op in g2.get_operations()}
        assert {"import/w", "import_1/w", "mine/w"} <= names
        assert g2.get_operation_by_name("import_1/w/Assign").get_attr("_class") == [b"loc:@import_1/w"]
        # Creating an op with an imported name afterwards still gets a unique name.
        assert sk.constant(1, name="mine/w").op.name == "mine/w_1"


def test_empty_prefix_uniquifies_clashing_names():
    g, _ = build_model()
    with sk.Graph().as_default() as g2:
        sk.constant(0, name="w")
        sk.import_graph_def(g.as_graph_def(), name="")
        assert g2.get_operation_by_name("w_1").type == "VariableV2"
        # Only the clashing node is renamed (TF's uniquify_names); its readers follow it.
        assert [t.op.name for t in g2.get_operation_by_name("w/Assign").inputs] == ["w_1", "w/initial_value"]


def test_input_map_and_return_elements():
    g, _ = build_model()
    with sk.Graph().as_default():
        feed = sk.constant([[10.0], [1.0]], name="feed")
        gate = sk.no_op(name="gate")
        y, init = sk.import_graph_def(
            g.as_graph_def(), input_map={"x:0": feed, "^w/Assign": gate}, return_elements=["y:0", "init"]
        )
        assert y.op.inputs[1] is feed
        assert y.name == "import/y:0" and init.name == "import/init"
        g2 = y.graph
        assert g2.get_operation_by_name("import/after_init").control_inputs == [gate]
        assert init.control_inputs == [gate]  # "^w/Assign" was remapped
        with sk.Session() as sess:
            sess.run(init)
            with pytest.raises(errors.FailedPreconditionError):
                sess.run(y)
            sess.run("import/w/Assign")
            np.testing.assert_array_equal(sess.run(y), [[12.0]])


def test_input_map_errors():
    g, _ = build_model()
    with sk.Graph().as_default():
        with pytest.raises(ValueError, match=r"not found in graph_def: \[nope:0\]"):
            sk.import_graph_def(g.as_graph_def(), input_map={"nope:0": sk.constant(1.0)})
        with pytest.raises(ValueError, match="return_element"):
            sk.import_graph_def(g.as_graph_def(), return_elements=["missing"])


def test_unordered_graph_def_and_cycles():
    g, _ = build_model()
    gd = g.as_graph_def()
    shuffled = graph_pb2.GraphDef()
    shuffled.versions.CopyFrom(gd.versions)
    shuffled.node.extend(reversed(gd.node))
    with sk.Graph().as_default() as g2:
        sk.import_graph_def(shuffled, name="")
        assert len(g2.get_operations()) == len(gd.node)
    cyc = graph_pb2.GraphDef()
    a = cyc.node.add(name="a", op="Identity", input=["b"])
    a.attr["T"].type = 1
    b = cyc.node.add(name="b", op="Identity", input=["a"])
    b.attr["T"].type = 1
    with sk.Graph().as_default():
        with pytest.raises(ValueError, match="cycle"):
            sk.import_graph_def(cyc)


def test_bad_graph_defs_are_rejected_clearly():
    with sk.Graph().as_default():
        gd = graph_pb2.GraphDef()
        gd.node.add(name="i", op="Identity", input=["missing"]).attr["T"].type = 1
        with pytest.raises(ValueError, match="input 'missing' is not in the graph_def"):
            sk.import_graph_def(gd)
        gd = graph_pb2.GraphDef()
        c = gd.node.add(name="c", op="Const")
        c.attr["dtype"].type = 1
        c.attr["value"].tensor.dtype = 1
        c.attr["bogus"].i = 1
        with pytest.raises(ValueError, match="attr 'bogus' not in Op"):
            sk.import_graph_def(gd)
        gd = graph_pb2.GraphDef()
        gd.node.add(name="p", op="Placeholder")
        with pytest.raises(ValueError, match="missing attrs"):
            sk.import_graph_def(gd)
        gd = graph_pb2.GraphDef()
        c = gd.node.add(name="c", op="Const")
        c.attr["dtype"].type = 3
        c.attr["value"].tensor.dtype = 3
        c.attr["value"].tensor.int_val.append(1)
        gd.node.add(name="s", op="Square", input=["c"]).attr["T"].type = 1  # float32 declared, int32 given
        with pytest.raises(ValueError, match="incompatible with expected float32"):
            sk.import_graph_def(gd)


def test_default_attrs_are_filled_in():
    gd = graph_pb2.GraphDef()
    a = gd.node.add(name="a", op="Const")
    a.attr["dtype"].type = 1
    a.attr["value"].tensor.dtype = 1
    a.attr["value"].tensor.tensor_shape.dim.add(size=2)
    a.attr["value"].tensor.float_val.append(3.0)
    v = gd.node.add(name="v", op="VariableV2")
    v.attr["dtype"].type = 1
    v.attr["shape"].shape.dim.add(size=2)
    gd.node.add(name="assign", op="Assign", input=["v", "a"]).attr["T"].type = 1
    with sk.Graph().as_default() as g:
        sk.import_graph_def(gd, name="")
        assert g.get_operation_by_name("v").get_attr("container") == b""
        assert g.get_operation_by_name("assign").get_attr("validate_shape") is True
        with sk.Session() as sess:
            np.testing.assert_array_equal(sess.run("assign:0"), [3.0, 3.0])


def test_unknown_ops_import_as_opaque_nodes_and_export_unchanged():
    gd = graph_pb2.GraphDef()
    h = gd.node.add(name="h", op="FancyHandleOp")
    h.attr["dtype"].type = 1
    h.attr["shape"].shape.dim.add(size=3)
    h.attr["_class"].list.s.append(b"loc:@h")
    gd.node.add(name="r", op="FancyReadOp", input=["h"]).attr["dtype"].type = 1
    i = gd.node.add(name="i", op="Identity", input=["r"])
    i.attr["T"].type = 1
    c = gd.node.add(name="c", op="Const")
    c.attr["dtype"].type = 3
    c.attr["value"].tensor.dtype = 3
    c.attr["value"].tensor.int_val.append(7)
    with sk.Graph().as_default() as g:
        sk.import_graph_def(gd, name="")
        r = g.get_operation_by_name("r")
        assert r.type == "FancyReadOp" and r.op_def is None
        assert r.outputs[0].dtype == sk.float32  # learnt from the Identity consuming it
        assert g.as_graph_def().node[0] == gd.node[0]
        with sk.Session() as sess:
            assert sess.run("c:0") == 7  # the known part runs
            with pytest.raises(errors.NotFoundError, match="FancyHandleOp.*opaque node"):
                sess.run("i:0")


def test_accepts_serialized_bytes():
    g, _ = build_model()
    with sk.Graph().as_default() as g2:
        sk.import_graph_def(g.as_graph_def().SerializeToString(), name="b")
        assert g2.get_operation_by_name("b/y").type == "MatMul"


@pytest.mark.parametrize("meta", sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*.meta")))
def test_tf_written_meta_graphs_import(meta):
    mg = meta_graph_pb2.MetaGraphDef.FromString((FIXTURES / meta).read_bytes())
    with sk.Graph().as_default() as g:
        sk.import_graph_def(mg.graph_def, name="")
        assert len(g.get_operations()) == len(mg.graph_def.node)
        save = g.get_operation_by_name(mg.saver_def.save_tensor_name.split(":")[0])
        assert save.type == "Identity"
        # TF's saver graph round-trips: the same node list comes back out.
        out = g.as_graph_def()
        assert [n.name for n in out.node] == [n.name for n in mg.graph_def.node]
        assert [list(n.input) for n in out.node] == [list(n.input) for n in mg.graph_def.node]


def _manifest_sha256(arr, dtype_name):
    """The manifest's digest: raw little-endian bytes, or len(8-byte LE) + bytes per string element."""
    import hashlib

    h = hashlib.sha256()
    if dtype_name == "string":
        for x in np.asarray(arr, dtype=object).reshape(-1):
            h.update(len(x).to_bytes(8, "little"))
            h.update(x)
    else:
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("case", ["v1_dtypes", "v1_sharded", "v1_partitioned", "v1_max_to_keep"])
def test_tf_saver_graphs_restore_and_save_in_saverkit(case, tmp_path):
    """TF's own Saver graph (resource variables, RestoreV2 -> AssignVariableOp, sharded SaveV2 + merge)
    runs in a saverkit Session: restore gives the manifest's values, save writes the same tensors."""
    import json

    from saverkit import bundle

    manifest = json.loads((FIXTURES / "manifest.json").read_text())["cases"][case]["checkpoints"]
    prefix_name = sorted(manifest)[-1]
    meta_path = FIXTURES / (prefix_name + ".meta")
    if not meta_path.exists():
        pytest.skip(f"{prefix_name} has no meta graph")
    mg = meta_graph_pb2.MetaGraphDef.FromString(meta_path.read_bytes())
    saver_def = mg.saver_def
    with sk.Graph().as_default():
        sk.import_graph_def(mg.graph_def, name="")
        with sk.Session() as sess:
            sess.run(saver_def.restore_op_name, {saver_def.filename_tensor_name: str(FIXTURES / prefix_name)})
            out_prefix = str(tmp_path / "resaved")
            written = sess.run(saver_def.save_tensor_name, {saver_def.filename_tensor_name: out_prefix})
    assert written == out_prefix.encode()
    original = bundle.BundleReader(str(FIXTURES / prefix_name))
    resaved = bundle.BundleReader(out_prefix)
    assert resaved.entries() == original.entries()
    for name, entry in manifest[prefix_name].items():
        got = resaved.read(name)
        assert list(got.shape) == entry["shape"], name
        assert _manifest_sha256(got, entry["dtype"]) == entry["sha256"], name


def test_self_loop_is_a_cycle_not_an_ordered_graph():
    # Regression: the in-order fast path must not count a node's own name as an earlier node.
    gd = graph_pb2.GraphDef()
    a = gd.node.add(name="a", op="Identity", input=["a"])
    a.attr["T"].type = 1
    with sk.Graph().as_default():
        with pytest.raises(ValueError, match="cycle"):
            sk.import_graph_def(gd)


def test_repeated_imports_decode_attrs_identically_and_do_not_share_lists():
    # The decoded-attr cache must give every op the same values as a fresh decode, and its own lists.
    g = sk.Graph()
    with g.as_default():
        for i in range(3):
            v = sk.Variable(np.full((2, i + 1), i, np.float32), name=f"v{i}")
            sk.stack([v.value(), v.value()], axis=1, name=f"cat{i}")
        op = g.get_operation_by_name("cat0")
        op._set_attr("_list", [b"a", b"b"])
        sk.global_variables_initializer()
    gd = g.as_graph_def()
    graphs = []
    for _ in range(2):
        with sk.Graph().as_default() as g2:
            sk.import_graph_def(gd, name="")
        assert g2.as_graph_def() == gd
        graphs.append(g2)
    ops1, ops2 = (gr.get_operation_by_name("cat0") for gr in graphs)
    assert ops1._attrs["N"] == 2 and ops1._attrs["T"] == sk.float32
    for key, value in ops1._attrs.items():
        if isinstance(value, list):
            assert value is not ops2._attrs[key]
    shapes = [gr.get_operation_by_name("v1")._attrs["shape"] for gr in graphs]
    assert shapes[0] == sk.TensorShape([2, 2]) == shapes[1]


def _tensor_attr(dtype_enum: int, dims, content: bytes, unknown_rank: bool = False):
    from saverkit.framework import attrs as attrs_lib

    attr = attrs_lib.AttrValue()
    attr.tensor.dtype = dtype_enum
    attr.tensor.tensor_shape.SetInParent()
    attr.tensor.tensor_shape.unknown_rank = unknown_rank
    for d in dims:
        attr.tensor.tensor_shape.dim.add(size=d)
    attr.tensor.tensor_content = content
    return attr


def _const_graph(attr, dtype_enum=None):
    gd = graph_pb2.GraphDef()
    c = gd.node.add(name="c", op="Const")
    c.attr["dtype"].type = attr.tensor.dtype if dtype_enum is None else dtype_enum
    c.attr["value"].CopyFrom(attr)
    return gd


def _run_imported_const(attr):
    """(dtype, shape, bytes) of the imported Const's value when run, or (error type, message)."""
    with sk.Graph().as_default():
        try:
            sk.import_graph_def(_const_graph(attr), name="")
        except ValueError as e:
            return ValueError, str(e)
        with sk.Session() as sess:
            try:
                v = sess.run("c:0")
            except errors.OpError as e:
                return type(e), e.message
    return v.dtype, v.shape, v.tobytes()


@pytest.mark.parametrize(
    "dtype, dims, content",
    [
        (sk.float32, [4], np.arange(4, dtype=np.float32).tobytes()),
        (sk.float32, [2, 3], np.arange(6, dtype=np.float32).tobytes()),
        (sk.float64, [], np.float64(2.5).tobytes()),
        (sk.int64, [1, 1, 2], np.array([-1, 2**40], np.int64).tobytes()),
        (sk.uint16, [3], np.array([1, 2, 65535], np.uint16).tobytes()),
        (sk.int8, [0, 3], b""),
        (sk.float32, [4], b"\x00" * 15),  # too short: an error either way
        (sk.float32, [4], b"\x00" * 20),  # too long
        (sk.bfloat16, [2], b"\x00" * 4),
        (sk.string, [1], b"x"),  # content is not valid for strings
    ],
)
def test_imported_const_runs_to_what_the_generic_decoder_gives(dtype, dims, content):
    from saverkit.framework import attrs as attrs_lib

    attr = _tensor_attr(dtype.as_datatype_enum, dims, content)
    try:
        v = attrs_lib.to_python(attr, "tensor")
        expected = (v.dtype, v.shape, v.tobytes())
    except (ValueError, TypeError) as e:
        expected = (errors.InvalidArgumentError, str(e))
    got = _run_imported_const(attr)
    if expected[0] is errors.InvalidArgumentError:  # the same complaint, now naming the node, when run
        assert got[0] is errors.InvalidArgumentError and got[1].endswith(expected[1])
        assert got[1].startswith("Const 'c': cannot decode its value: ")
    else:
        assert got == expected


@pytest.mark.parametrize("dims, problem", [
    ([-1], "[-1] is not fully defined (a dimension is negative)"),  # TF: "Shape [-1] is not fully defined"
    ([3, -5], "[3, -5] is not fully defined (a dimension is negative)"),
    ([2**62, 4], "[4611686018427387904, 4] is too large (more than 2**63 - 1 elements)"),
    ([1] * 255, "has 255 dimensions, more than TensorFlow's 254"),
])
def test_imported_const_with_a_shape_tensorflow_refuses_is_refused_on_import(dims, problem):
    # As TensorFlow's import_graph_def (TensorShape::IsValidShape in the Const shape function).
    attr = _tensor_attr(sk.float32.as_datatype_enum, dims, b"")
    attr.tensor.float_val.append(1.0)
    assert _run_imported_const(attr) == (ValueError, f"NodeDef 'c' (Const): the shape of its value {problem}")


def test_imported_const_with_unknown_rank_shape_runs_as_the_generic_decoder_decodes():
    from saverkit.framework import attrs as attrs_lib

    for content in (b"\x00" * 4, b"\x00" * 8):
        attr = _tensor_attr(sk.float32.as_datatype_enum, [], content, unknown_rank=True)
        try:
            v = attrs_lib.to_python(attr, "tensor")
            expected = (v.dtype, v.shape, v.tobytes())
        except ValueError as e:
            expected = (errors.InvalidArgumentError, f"Const 'c': cannot decode its value: {e}")
        assert _run_imported_const(attr) == expected


def test_const_whose_value_attr_holds_no_tensor_is_refused_on_import():
    # Regression: was an AttributeError ('NoneType' object has no attribute 'setflags').
    for fill in (lambda a: None, lambda a: a.list.i.append(1)):
        gd = graph_pb2.GraphDef()
        c = gd.node.add(name="c", op="Const")
        c.attr["dtype"].type = 1
        fill(c.attr["value"])
        with sk.Graph().as_default(), pytest.raises(ValueError, match=r"NodeDef 'c' \(Const\): attr 'value' "
                                                                      "holds (nothing|list), not a tensor"):
            sk.import_graph_def(gd)
