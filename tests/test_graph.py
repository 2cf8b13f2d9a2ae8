"""Graph: names and scopes, devices, colocation, control dependencies, collections, lookup, finalize."""

import contextlib
import threading

import numpy as np
import pytest
import saverkit as sk
from saverkit.framework import ops
from saverkit.protobuf import node_def_pb2


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


# --- names ----------------------------------------------------------------------------------------


def test_op_names_are_uniquified_like_tf(graph):
    names = [sk.constant(1.0, name="c").op.name for _ in range(3)]
    assert names == ["c", "c_1", "c_2"]
    assert sk.constant(1.0).op.name == "Const"
    assert sk.constant(1.0).op.name == "Const_1"


def test_explicit_suffix_is_skipped_by_later_uniquifying(graph):
    assert sk.constant(1, name="w_1").op.name == "w_1"
    assert sk.constant(1, name="w").op.name == "w"
    # "w_1" is taken, so the next "w" becomes "w_2", not a duplicate.
    assert sk.constant(1, name="w").op.name == "w_2"


def test_names_are_case_insensitively_unique(graph):
    assert sk.constant(1, name="Foo").op.name == "Foo"
    assert sk.constant(1, name="foo").op.name == "foo_1"


def test_name_scopes_nest_and_uniquify(graph):
    with sk.name_scope("layer") as scope:
        assert scope == "layer/"
        a = sk.constant(1, name="a")
        with sk.name_scope("inner"):
            b = sk.constant(1, name="b")
    with sk.name_scope("layer") as scope2:
        c = sk.constant(1, name="a")
    assert scope2 == "layer_1/"
    assert (a.op.name, b.op.name, c.op.name) == ("layer/a", "layer/inner/b", "layer_1/a")


def test_name_scope_reentry_and_reset(graph):
    with sk.name_scope("s"):
        pass
    with sk.name_scope("s/"):  # trailing slash re-enters the existing scope
        assert sk.constant(1, name="x").op.name == "s/x"
    with sk.name_scope("outer"):
        with sk.name_scope(None):
            assert sk.constant(1, name="root").op.name == "root"
        with sk.name_scope(""):
            assert graph.get_name_scope() == ""
        assert graph.get_name_scope() == "outer"


def test_name_scope_v1_default_name(graph):
    with sk.name_scope(None, "default") as s:
        assert s == "default/"
    with sk.name_scope("given", "default") as s:
        assert s == "given/"


def test_op_named_like_an_existing_scope_is_uniquified(graph):
    with sk.name_scope("blk"):
        pass
    assert sk.constant(1, name="blk").op.name == "blk_1"


def test_invalid_names_are_rejected(graph):
    with pytest.raises(ValueError, match="not a valid"):
        sk.constant(1, name="bad name")
    with pytest.raises(ValueError, match="not a valid scope name"):
        with sk.name_scope("_leading_underscore"):
            pass


@pytest.mark.parametrize(
    "scopes",
    [
        (),
        ("a",),
        ("a", "b"),
        ("a", "_under"),
        ("a", "_under/"),  # re-entering a scope (absolute): "_under" cannot start an op name
        ("a/",),
        ("a", "a/"),
        ("a\n",),  # the regex's "$" accepts a final newline in the scope name, not in the op name
        ("a", "b\n"),
        ("", "a"),
        (".dot", "x"),
    ],
)
@pytest.mark.parametrize("base", ["Const", "read", "w", "w\n", "_w", "a b", "x/y", ".", "-", "Const"])
def test_op_names_are_validated_as_the_regex_says_whatever_was_seen_before(scopes, base):
    """Op names skip the regex when built from a known-valid scope and a known-valid base name; the result
    must be what the regex says of the full name, whichever names came before (the same base twice)."""
    g = ops.get_default_graph()
    for _ in range(2):
        with contextlib.ExitStack() as stack:
            try:
                for s in scopes:
                    stack.enter_context(g.name_scope(s))
            except ValueError as e:
                assert "not a valid scope name" in str(e)
                continue
            full = g.unique_name(base, mark_as_used=False)
            if ops._VALID_OP_NAME_REGEX.match(full):
                assert sk.constant(1.0, name=base).op.name == full
            else:
                with pytest.raises(ValueError, match="is not a valid node name"):
                    sk.constant(1.0, name=base)


def test_duplicate_exact_name_is_an_error(graph):
    sk.constant(1, name="x")
    with pytest.raises(ValueError, match="Duplicate node name"):
        sk.constant(1, name="x/")


def test_unique_name_without_marking(graph):
    assert graph.unique_name("q", mark_as_used=False) == "q"
    assert graph.unique_name("q", mark_as_used=False) == "q"
    assert graph.unique_name("q") == "q"
    assert graph.unique_name("q") == "q_1"


# --- devices --------------------------------------------------------------------------------------


def test_device_scopes_merge_and_canonicalize(graph):
    with sk.device("/job:ps/task:1"):
        a = sk.constant(1)
        with sk.device("/cpu:0"):
            b = sk.constant(1)
            with sk.device(None):
                c = sk.constant(1)
        with sk.device("/job:worker"):
            d = sk.constant(1)
    assert a.device == "/job:ps/task:1"
    assert b.device == "/job:ps/task:1/device:CPU:0"
    assert c.device == ""
    assert d.device == "/job:worker/task:1"
    assert sk.constant(1).device == ""


def test_device_function(graph):
    def place(op):
        return "/device:GPU:1" if op.type == "Const" else ""

    with sk.device(place):
        a = sk.constant(1.0)
        b = sk.identity(a)
    assert a.device == "/device:GPU:1"
    assert b.device == ""


def test_bad_device_string(graph):
    with pytest.raises(ValueError, match="Unknown attribute"):
        with sk.device("/nonsense:1"):
            pass


def test_colocation_sets_class_attr_and_device(graph):
    with sk.device("/cpu:0"):
        v = sk.Variable(1.0, name="v")
    with sk.colocate_with(v.op):
        x = sk.constant(2.0, name="x")
    assert x.op.get_attr("_class") == [b"loc:@v"]
    assert x.device == "/device:CPU:0"
    assert v.initializer.get_attr("_class") == [b"loc:@v"]
    assert v.value().op.get_attr("_class") == [b"loc:@v"]


# --- control dependencies -------------------------------------------------------------------------


def test_control_dependencies_are_added_and_cleared(graph):
    a = sk.constant(1, name="a")
    b = sk.constant(2, name="b")
    with sk.control_dependencies([a]):
        c = sk.identity(b, name="c")
        with sk.control_dependencies([b.op]):
            d = sk.constant(3, name="d")
            with sk.control_dependencies(None):
                e = sk.constant(4, name="e")
    assert c.op.control_inputs == [a.op]
    assert d.op.control_inputs == [a.op, b.op]
    assert e.op.control_inputs == []


def test_control_dependency_skipped_when_already_a_data_input(graph):
    a = sk.constant(1)
    with sk.control_dependencies([a]):
        b = sk.identity(a)
    assert b.op.control_inputs == []


def test_ops_created_inside_are_not_given_the_dependency_twice(graph):
    a = sk.constant(1)
    with sk.control_dependencies([a]):
        b = sk.constant(2)
        c = sk.identity(b)  # b already waits for a
    assert b.op.control_inputs == [a.op]
    assert c.op.control_inputs == []


def test_control_dependencies_accept_variables_and_tensors(graph):
    v = sk.Variable(1.0, name="v")
    t = sk.constant(1.0, name="t")
    with sk.control_dependencies([v, t]):
        n = sk.no_op()
    assert n.control_inputs == [v.op, t.op]


# --- collections ----------------------------------------------------------------------------------


def test_graph_keys_have_tf_values():
    assert sk.GraphKeys.GLOBAL_VARIABLES == "variables"
    assert sk.GraphKeys.TRAINABLE_VARIABLES == "trainable_variables"
    assert sk.GraphKeys.LOCAL_VARIABLES == "local_variables"
    assert sk.GraphKeys.MODEL_VARIABLES == "model_variables"
    assert sk.GraphKeys.SAVERS == "savers"
    assert sk.GraphKeys.GLOBAL_STEP == "global_step"
    assert sk.GraphKeys.UPDATE_OPS == "update_ops"
    assert sk.GraphKeys.TRAIN_OP == "train_op"
    assert sk.GraphKeys.SUMMARIES == "summaries"


def test_collections(graph):
    a = sk.constant(1, name="scope/a")
    b = sk.constant(2, name="other/b")
    sk.add_to_collection("things", a)
    sk.add_to_collections(["things", "more"], b)
    sk.add_to_collections("single", 42)
    assert sk.get_collection("things") == [a, b]
    assert sk.get_collection("things", scope="scope") == [a]
    assert sk.get_collection("single", scope="x") == []  # items without a name never match a scope
    assert sk.get_collection("missing") == []
    ref = sk.get_collection_ref("things")
    ref.append(3)
    assert sk.get_collection("things") == [a, b, 3]
    copy = sk.get_collection("things")
    copy.clear()
    assert len(sk.get_collection("things")) == 3
    assert set(sk.get_all_collection_keys()) == {"things", "more", "single"}
    graph.clear_collection("things")
    assert sk.get_collection("things") == []


def test_add_to_collections_deduplicates_names(graph):
    sk.add_to_collections(["c", "c"], 1)
    assert sk.get_collection("c") == [1]


# --- lookup ---------------------------------------------------------------------------------------


def test_lookup_by_name(graph):
    c = sk.constant([1, 2], name="c")
    assert graph.get_operation_by_name("c") is c.op
    assert graph.get_tensor_by_name("c:0") is c
    assert graph.as_graph_element("c") is c.op
    assert graph.as_graph_element("c:0") is c
    assert graph.get_operations() == [c.op]


def test_lookup_errors_are_clear(graph):
    sk.constant(1, name="c")
    with pytest.raises(KeyError, match="does not exist"):
        graph.get_tensor_by_name("nope:0")
    with pytest.raises(KeyError, match="only has 1 outputs"):
        graph.get_tensor_by_name("c:3")
    with pytest.raises(KeyError, match="not in the graph"):
        graph.get_operation_by_name("nope")
    with pytest.raises(ValueError, match="refers to an Operation"):
        graph.get_tensor_by_name("c")
    with pytest.raises(ValueError, match="appears to refer to a Tensor"):
        graph.get_operation_by_name("c:0")
    with pytest.raises(ValueError, match="not a valid one"):
        graph.as_graph_element("c:x")
    with pytest.raises(TypeError, match="Can not convert"):
        graph.as_graph_element(3.0)


def test_elements_of_another_graph_are_rejected(graph):
    other = sk.Graph()
    with other.as_default():
        t = sk.constant(1)
    with pytest.raises(ValueError, match="not an element of this graph"):
        graph.as_graph_element(t)
    with pytest.raises(ValueError, match="same graph"):
        sk.add(sk.constant(1), t)


def test_tensor_and_operation_properties(graph):
    p = sk.placeholder(sk.float32, [None, 3], name="p")
    assert p.name == "p:0"
    assert p.dtype == sk.float32
    assert p.shape.as_list() == [None, 3]
    assert p.shape.dims == [None, 3]
    assert p.op.type == "Placeholder"
    assert p.value_index == 0
    assert p.graph is graph
    assert p.op.outputs == [p]
    assert p.op.inputs == ()
    assert p.op.get_attr("dtype") == sk.float32
    assert p.op.get_attr("shape").dim[0].size == -1  # a TensorShapeProto, as TF returns
    s = sk.identity(p, name="s")
    assert s.op.inputs == (p,)
    assert p.consumers() == [s.op]
    with pytest.raises(ValueError, match="no attr named"):
        p.op.get_attr("nope")
    with pytest.raises(TypeError, match="Python bool"):
        bool(p)
    with pytest.raises(TypeError, match="numpy"):
        np.asarray(p)
    assert repr(p) == "<saverkit.Tensor 'p:0' shape=(None, 3) dtype=float32>"


def test_set_attr_and_node_def(graph):
    c = sk.constant(1.0, name="c")
    c.op._set_attr("_custom", [b"x"])
    nd = c.op.node_def
    assert nd.name == "c" and nd.op == "Const"
    assert list(nd.attr["_custom"].list.s) == [b"x"]
    assert nd.attr["dtype"].type == sk.float32.as_datatype_enum


def test_set_shape(graph):
    p = sk.placeholder(sk.float32, [None, 3])
    p.set_shape([2, None])
    assert p.shape.as_list() == [2, 3]
    with pytest.raises(ValueError, match="not compatible"):
        p.set_shape([4, 3])


def test_shapes_are_inferred_and_mismatches_raise(graph):
    a = sk.constant(np.zeros((2, 3), np.float32))
    b = sk.constant(np.zeros((3, 4), np.float32))
    assert sk.matmul(a, b).shape.as_list() == [2, 4]
    assert (a + 1.0).shape.as_list() == [2, 3]
    with pytest.raises(ValueError, match="Dimensions must be equal"):
        sk.matmul(a, a)
    with pytest.raises(ValueError, match="broadcast"):
        sk.add(a, sk.constant(np.zeros((4,), np.float32)))
    # The failing op was not added.
    assert [op.type for op in graph.get_operations()].count("MatMul") == 1


# --- finalize, default graph ----------------------------------------------------------------------


def test_finalize(graph):
    sk.constant(1)
    graph.finalize()
    assert graph.finalized
    with pytest.raises(RuntimeError, match="finalized"):
        sk.constant(2)
    with pytest.raises(RuntimeError, match="finalized"):
        sk.add_to_collection("x", 1)
    graph._unsafe_unfinalize()
    sk.constant(2)


def test_default_graph_stack(graph):
    assert sk.get_default_graph() is graph
    g2 = sk.Graph()
    with g2.as_default():
        assert sk.get_default_graph() is g2
        assert sk.constant(1).graph is g2
    assert sk.get_default_graph() is graph


def test_reset_default_graph_refuses_inside_a_nested_graph(graph):
    with pytest.raises(AssertionError, match="nested"):
        sk.reset_default_graph()


def test_reset_default_graph_replaces_the_global_graph():
    def body():
        before = sk.get_default_graph()
        sk.reset_default_graph()
        after = sk.get_default_graph()
        results.append(before is not after and after.get_operations() == [])

    results = []
    t = threading.Thread(target=body)  # a thread without as_default() nesting sees the global graph
    t.start()
    t.join()
    assert results == [True]


def test_default_graph_is_per_thread(graph):
    seen = []
    t = threading.Thread(target=lambda: seen.append(sk.get_default_graph()))
    t.start()
    t.join()
    assert seen[0] is not graph


def test_graph_def_has_tf_producer_and_all_nodes(graph):
    a = sk.constant([1.0, 2.0], name="a")
    b = sk.placeholder(sk.float32, name="b")
    with sk.control_dependencies([b]):
        sk.add(a, a, name="c")
    gd = graph.as_graph_def()
    assert gd.versions.producer == ops.GRAPH_DEF_VERSION
    assert [n.name for n in gd.node] == ["a", "b", "c"]
    assert list(gd.node[2].input) == ["a", "a", "^b"]
    gd2 = graph.as_graph_def(add_shapes=True)
    assert gd2.node[0].attr["_output_shapes"].list.shape[0].dim[0].size == 2
    assert gd2.node[1].attr["_output_shapes"].list.shape[0].unknown_rank
    assert [n.name for n in graph.as_graph_def(from_version=1).node] == ["b", "c"]


def test_create_op_low_level(graph):
    a = sk.constant(1.0)
    op = graph.create_op("Identity", [a], name="ident")
    assert op.outputs[0].dtype == sk.float32
    opaque = graph.create_op("MyCustomOp", [a], dtypes=[sk.int32], attrs={"k": 3})
    assert opaque.outputs[0].dtype == sk.int32
    assert opaque.node_def.attr["k"].i == 3
    with pytest.raises(ValueError, match="output dtypes"):
        graph.create_op("AnotherUnknown", [a])


def test_graph_def_reflects_changes_after_an_earlier_export(graph):
    a = sk.constant(1.0, name="a")
    b = sk.identity(a, name="b")
    first = graph.as_graph_def()
    assert first.node[1].device == "" and list(first.node[1].input) == ["a"]
    b.op._set_device("/cpu:0")
    b.op._set_attr("_note", [b"x"])
    c = sk.no_op(name="c")
    b.op._add_control_input(c)
    second = graph.as_graph_def()
    node = second.node[1]
    assert node.device == "/device:CPU:0"
    assert list(node.attr["_note"].list.s) == [b"x"]
    assert list(node.input) == ["a", "^c"]
    assert graph.as_graph_def() == second
    b.op._remove_all_control_inputs()
    assert list(graph.as_graph_def().node[1].input) == ["a"]


# --- export encoding ------------------------------------------------------------------------------


def _node_def_via_protobuf(op):
    """A NodeDef built field by field through protobuf messages (the reference for the hand framing)."""
    from saverkit.framework import attrs as attrs_lib

    nd = node_def_pb2.NodeDef(name=op.name, op=op.type, device=op.device)
    nd.input.extend([t._as_node_def_input() for t in op._inputs])
    nd.input.extend(sorted("^" + c.name for c in op._control_inputs))
    types = op._info.attr_types if op._info is not None else attrs_lib.PRIVATE_ATTR_TYPES
    for key, value in op._attrs.items():
        attrs_lib.fill(nd.attr[key], value, types.get(key) or attrs_lib.PRIVATE_ATTR_TYPES.get(key))
    return nd


def test_hand_framed_node_defs_equal_protobuf_built_ones(graph):
    # Regression for the fast export path: every kind of attr value, device, control input, colocation.
    with sk.device("/job:w/task:1/device:CPU:0"):
        v = sk.Variable(np.arange(6, dtype=np.float64).reshape(2, 3), name="v")
    w = sk.Variable(np.zeros((200, 3), np.float32), name="w")  # broadcast-free big value, 2-byte varints
    ints = sk.Variable(np.array([1, -2, 3], np.int64), name="ints")
    one = sk.constant(7.5)  # scalar: typed field, not tensor_content
    zeros = sk.zeros([4, 5])  # broadcast: stored once
    empty = sk.constant(np.zeros((0, 3), np.float32))
    strings = sk.constant(["a", "b\x00c"])
    halves = sk.constant(np.array([1.5, -2.0], np.float16))
    with sk.control_dependencies([v.initializer, w.initializer]):
        total = sk.identity(ints.value(), name="total")
    with sk.colocate_with(v.op):
        moved = sk.identity(v.value(), name="moved")
    opaque = graph.create_op(
        "MyCustomOp", [one], dtypes=[sk.int32], attrs={"k": 3, "f": -0.0, "flag": False, "s": "x"}
    )
    opaque._set_attr("_class", [b"loc:@v", b"other"])
    one.op._set_attr("_empty", [])
    one.op._set_attr("_shapes", [sk.TensorShape([2, None]), sk.TensorShape(None)])
    assert {total.op, moved.op, zeros.op, empty.op, strings.op, halves.op} <= set(graph.get_operations())
    for op in graph.get_operations():
        assert node_def_pb2.NodeDef.FromString(op._node_def_bytes()) == _node_def_via_protobuf(op), op.name
    graph_def = graph.as_graph_def()
    assert [n.name for n in graph_def.node] == [op.name for op in graph.get_operations()]
    # A float attr of -0.0 must not come from a cache shared with 0.0.
    assert str(graph_def.node[-1].attr["f"].f) == "-0.0"


def test_ops_sharing_an_attrs_dict_change_independently(graph):
    """Builders may give ops with equal attrs one dict (variables of one shape and dtype do): setting
    or clearing an attr of one op must leave the others alone."""
    a = sk.Variable(np.zeros(3, np.float32), name="a").op
    b = sk.Variable(np.ones(3, np.float32), name="b").op
    assert a._attrs is b._attrs  # what makes this test meaningful
    a._set_attr("shared_name", b"mine")
    assert a.get_attr("shared_name") == b"mine" and b.get_attr("shared_name") == b""
    b._clear_attr("container")
    assert "container" not in b._attrs and a.get_attr("container") == b""
    assert b"mine" in a._node_def_bytes() and b"mine" not in b._node_def_bytes()
    c = sk.Variable(np.zeros(3, np.float32), name="c").op
    assert c.get_attr("shared_name") == b"" and c.get_attr("container") == b""


@pytest.mark.parametrize("n", [1, 7, 300])
@pytest.mark.parametrize("scope", ["save", "Save"])  # mixed case: names and their keys differ
@pytest.mark.parametrize("taken", [0, 1, 3, "middle"])
def test_unique_names_are_what_as_many_unique_name_calls_give(n, scope, taken):
    def graph():
        g = sk.Graph()
        with g.name_scope(scope):
            if taken == "middle":  # one of the names the batch would take is in use already
                g.unique_name("Assign_5")
            else:
                for _ in range(taken):
                    g.unique_name("Assign")
        return g

    batch, one_by_one = graph(), graph()
    with batch.name_scope(scope + "/"):
        names = batch.unique_names("Assign", n)
    with one_by_one.name_scope(scope + "/"):
        expected = [one_by_one.unique_name("Assign") for _ in range(n)]
    assert names == expected
    assert batch._names_in_use == one_by_one._names_in_use
    with batch.name_scope(scope + "/"), one_by_one.name_scope(scope + "/"):
        assert batch.unique_name("Assign") == one_by_one.unique_name("Assign")



# --- batched op creation and what saverkit's own layers read (issue 18) ---------------------------
def _assign_batch(graph, refs, values, **kwargs):
    attrs = [{"T": r.dtype.base_dtype, "validate_shape": True, "use_locking": True} for r in refs]
    return graph.create_ops(
        "Assign", list(zip(refs, values, strict=True)), attrs, [r.dtype for r in refs], "Assign", **kwargs
    )


def test_create_ops_makes_what_create_op_would(graph):
    vs = [sk.Variable(np.zeros(3, np.float32), name=f"v{i}") for i in range(10)]  # >= 8: names in one batch
    refs = [v.op.outputs[0] for v in vs]
    values = [sk.constant(np.ones(3, np.float32)) for _ in vs]
    made = _assign_batch(graph, refs, values, shapes=[r.shape for r in refs], devices=["/device:CPU:0"] * 10)
    assert [op.name for op in made] == ["Assign", *(f"Assign_{i}" for i in range(1, 10))]
    for op, ref, value in zip(made, refs, values, strict=True):
        assert op.type == "Assign" and list(op.inputs) == [ref, value]
        assert op.outputs[0].dtype == ref.dtype and op.outputs[0].shape == ref.shape
        assert op.device == "/device:CPU:0" and op.control_inputs == []
        assert graph.get_operation_by_name(op.name) is op and op in value.consumers()
    # Op by op (no shapes given): the same names continue, shapes from the shape function.
    more = _assign_batch(graph, refs[:2], values[:2])
    assert [op.name for op in more] == ["Assign_10", "Assign_11"]
    assert more[0].outputs[0].shape == refs[0].shape


def test_create_ops_inside_a_context_applies_it(graph):
    vs = [sk.Variable(np.zeros(2, np.float32), name=f"v{i}") for i in range(9)]
    refs = [v.op.outputs[0] for v in vs]
    dep = sk.no_op(name="first")
    with graph.control_dependencies([dep]), graph.name_scope("restore"):
        made = _assign_batch(graph, refs, [v.initial_value for v in vs], shapes=[r.shape for r in refs])
    assert made[0].name == "restore/Assign" and all(op.control_inputs == [dep] for op in made)


def test_create_ops_rejects_a_tensor_of_another_graph(graph):
    vs = [sk.Variable(np.zeros(2, np.float32), name=f"v{i}") for i in range(9)]
    refs = [v.op.outputs[0] for v in vs]
    with sk.Graph().as_default():
        foreign = sk.constant(np.ones(2, np.float32))
    values = [v.initial_value for v in vs[:-1]] + [foreign]
    before = len(graph.get_operations())
    with pytest.raises(ValueError, match="must be from the same graph"):
        _assign_batch(graph, refs, values, shapes=[r.shape for r in refs])
    assert len(graph.get_operations()) == before + 8  # what was made stays made


def test_layer_cache_is_per_graph_and_per_owner(graph):
    cache = graph.layer_cache("checkpoint")
    assert cache == {} and graph.layer_cache("checkpoint") is cache
    assert graph.layer_cache("variable_assign") is not cache
    assert sk.Graph().layer_cache("checkpoint") is not cache


def test_bulk_readers_match_the_public_properties(graph):
    from saverkit.framework import operation, tensor, variables

    with graph.device("/cpu:0"):
        a = sk.Variable(np.zeros((2, 3), np.float32), name="a")
    b = sk.Variable(np.zeros(4, np.int64), name="b")
    ts = [a.op.outputs[0], b.op.outputs[0], a.value()]
    assert tensor.dtypes_of(ts) == [t.dtype for t in ts]
    assert tensor.shapes_of(ts) == [t.shape for t in ts]
    assert tensor.devices_of(ts) == [t.device for t in ts]
    assert tensor.ops_of(ts) == [t.op for t in ts]
    assert tensor.op_types_of(ts) == {"VariableV2", "Identity"}
    assert operation.distinct_devices([a.op, b.op, a.initializer]) == {a.device, b.device}
    assert variables.ref_tensor(a) is a.op.outputs[0]
    assert variables.save_slice_info(a) is None


def test_plain_ref_variables_by_name(graph):
    from saverkit.framework import variables

    a = sk.Variable(1.0, name="a")
    b = sk.Variable(2.0, name="s/b")
    assert variables.plain_ref_variables_by_name([a, b]) == {"a": a.op.outputs[0], "s/b": b.op.outputs[0]}
    assert variables.plain_ref_variables_by_name((b,)) == {"s/b": b.op.outputs[0]}
    # Anything else is left to the caller's general path: None.
    assert variables.plain_ref_variables_by_name([]) is None
    assert variables.plain_ref_variables_by_name([a, a]) is None  # one name twice
    assert variables.plain_ref_variables_by_name([a, [b]]) is None  # nested
    assert variables.plain_ref_variables_by_name([a, b.op.outputs[0]]) is None  # a tensor
    part = sk.get_variable(
        "p", shape=[4], partitioner=sk.fixed_size_partitioner(2), initializer=sk.zeros_initializer()
    )
    assert variables.plain_ref_variables_by_name([a, *part]) is None  # slices of a partitioned variable
