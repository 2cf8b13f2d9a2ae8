"""saverkit.framework.meta_graph: reading/writing .meta files, collections, op lists, scopes."""

import os
import pathlib

import pytest
from saverkit.framework import meta_graph
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
