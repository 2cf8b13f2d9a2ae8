"""The generated protobuf modules exist, import, and speak TensorFlow's wire format."""

import importlib
import pathlib

import pytest

PROTO_DIR = pathlib.Path(__file__).resolve().parents[1] / "proto" / "saverkit" / "protobuf"
STEMS = sorted(p.stem for p in PROTO_DIR.glob("*.proto"))


def test_every_proto_file_has_a_generated_module():
    assert len(STEMS) >= 15
    for stem in STEMS:
        importlib.import_module(f"saverkit.protobuf.{stem}_pb2")


@pytest.mark.parametrize(
    "module,message",
    [
        ("tensor_shape_pb2", "TensorShapeProto"),
        ("tensor_pb2", "TensorProto"),
        ("attr_value_pb2", "AttrValue"),
        ("node_def_pb2", "NodeDef"),
        ("graph_pb2", "GraphDef"),
        ("versions_pb2", "VersionDef"),
        ("op_def_pb2", "OpDef"),
        ("saver_pb2", "SaverDef"),
        ("checkpoint_state_pb2", "CheckpointState"),
        ("meta_graph_pb2", "MetaGraphDef"),
        ("meta_graph_pb2", "CollectionDef"),
        ("meta_graph_pb2", "SignatureDef"),
        ("tensor_bundle_pb2", "BundleHeaderProto"),
        ("tensor_bundle_pb2", "BundleEntryProto"),
        ("tensor_slice_pb2", "TensorSliceProto"),
        ("trackable_object_graph_pb2", "TrackableObjectGraph"),
        ("variable_pb2", "VariableDef"),
        ("saved_model_pb2", "SavedModel"),
        ("saved_object_graph_pb2", "SavedObjectGraph"),
    ],
)
def test_message_round_trips_through_bytes(module, message):
    cls = getattr(importlib.import_module(f"saverkit.protobuf.{module}"), message)
    msg = cls()
    assert cls.FromString(msg.SerializeToString()) == msg


def test_bundle_entry_matches_the_spec_golden_bytes():
    # Spec 4.2: f32, shape [2,3], offset 77, size 24.
    from saverkit.protobuf import tensor_bundle_pb2, types_pb2

    e = tensor_bundle_pb2.BundleEntryProto(dtype=types_pb2.DT_FLOAT, offset=77, size=24, crc32c=0xEF9E0285)
    e.shape.dim.add(size=2)
    e.shape.dim.add(size=3)
    assert e.SerializeToString().hex() == "0801120812020802120208032" + "04d28183585029eef"


def test_scalar_shape_is_emitted_even_when_empty():
    from saverkit.protobuf import tensor_bundle_pb2

    e = tensor_bundle_pb2.BundleEntryProto(dtype=1)
    e.shape.SetInParent()
    assert e.SerializeToString() == bytes.fromhex("08011200")


def test_slice_extent_length_presence_is_kept():
    from saverkit.protobuf import tensor_slice_pb2

    s = tensor_slice_pb2.TensorSliceProto()
    s.extent.add(start=4, length=3)
    s.extent.add()
    assert s.SerializeToString() == bytes.fromhex("0a04080410030a00")
    back = tensor_slice_pb2.TensorSliceProto.FromString(s.SerializeToString())
    assert back.extent[0].HasField("length") and not back.extent[1].HasField("length")


def test_meta_graph_round_trip_with_collections():
    from saverkit.protobuf import meta_graph_pb2

    m = meta_graph_pb2.MetaGraphDef()
    m.meta_info_def.stripped_op_list.op.add(name="VariableV2")
    m.saver_def.filename_tensor_name = "save/Const:0"
    m.saver_def.keep_checkpoint_every_n_hours = 10000.0
    m.collection_def["variables"].bytes_list.value.append(b"\x0a\x03w:0")
    m.graph_def.node.add(name="w", op="VariableV2").attr["dtype"].type = 1
    back = meta_graph_pb2.MetaGraphDef.FromString(m.SerializeToString())
    assert back == m
    assert back.graph_def.node[0].attr["dtype"].type == 1
