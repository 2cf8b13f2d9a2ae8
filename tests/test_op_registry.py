"""The op table: OpDefs from ops.pbtxt, kernels, shape functions, and apply_op's checks."""

import pytest
import saverkit as sk
from google.protobuf import text_format
from saverkit.framework import op_registry
from saverkit.framework.op_def_library import apply_op
from saverkit.protobuf import op_def_pb2

REQUIRED = [
    "Const",
    "Placeholder",
    "PlaceholderWithDefault",
    "Identity",
    "NoOp",
    "VariableV2",
    "Assign",
    "AssignAdd",
    "AssignSub",
    "StringJoin",
    "ShardedFilename",
    "SaveV2",
    "RestoreV2",
    "MergeV2Checkpoints",
    "Add",
    "AddV2",
    "Sub",
    "Mul",
    "MatMul",
    "Sum",
    "Mean",
    "Square",
    "Fill",
]


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


def builtin_ops():
    """The op types of ops.pbtxt (other test modules register test-only ops too)."""
    text = op_registry._OPS_PBTXT.read_text()
    return [o.name for o in text_format.Parse(text, op_def_pb2.OpList()).op]


def test_required_ops_are_registered_with_kernels():
    registered = op_registry.registered_ops()
    for name in REQUIRED:
        assert name in registered and name in builtin_ops()
    for name in builtin_ops():
        info = op_registry.get(name)
        assert info.kernel is not None, f"{name} has an OpDef but no kernel"
        assert info.shape_fn is not None, f"{name} has no shape function"


def test_op_defs_carry_tf_attrs_and_defaults():
    assign = op_registry.get_op_def("Assign")
    assert assign.allows_uninitialized_input
    attrs = {a.name: a for a in assign.attr}
    assert attrs["validate_shape"].default_value.b is True
    assert attrs["use_locking"].default_value.b is True
    save = op_registry.get_op_def("SaveV2")
    assert save.is_stateful and [a.name for a in save.input_arg] == [
        "prefix",
        "tensor_names",
        "shape_and_slices",
        "tensors",
    ]
    assert op_registry.get("VariableV2").outputs[0].is_ref
    assert op_registry.get("NotAnOp") is None


def test_io_kernels_are_expensive_and_restore_wants_output_buffers():
    for name in ("SaveV2", "RestoreV2", "MergeV2Checkpoints"):
        assert op_registry.get(name).expensive
    assert op_registry.get("RestoreV2").output_buffers
    assert not op_registry.get("AddV2").expensive


def test_op_list_is_sorted_and_skips_unknown_types():
    ops = op_registry.op_list(["VariableV2", "Const", "Const", "Mystery"])
    assert [o.name for o in ops.op] == ["Const", "VariableV2"]


def test_register_op_def_is_idempotent_and_refuses_conflicts():
    text = 'name: "RegistryTestOp" output_arg { name: "out" type: DT_FLOAT }'
    first = op_registry.register_op_def(text)
    assert op_registry.register_op_def(text) is first
    with pytest.raises(ValueError, match="different OpDef"):
        op_registry.register_op_def('name: "RegistryTestOp" output_arg { name: "out" type: DT_INT32 }')


def test_kernel_registered_later_is_picked_up(graph):
    op_registry.register_op_def(
        'name: "LateKernelOp" output_arg { name: "out" type: DT_INT32 } is_stateful: true'
    )
    t = apply_op("LateKernelOp").outputs[0]

    @op_registry.register_kernel("LateKernelOp")
    def _late(ctx):
        return [42]

    with sk.Session() as sess:
        assert sess.run(t) == 42


def test_apply_op_checks(graph):
    x = sk.constant(1.0)
    with pytest.raises(ValueError, match="Unknown op type"):
        apply_op("NoSuchOp")
    with pytest.raises(TypeError, match="No argument for input y"):
        apply_op("AddV2", x=x)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        apply_op("Identity", input=x, bogus=1)
    with pytest.raises(TypeError, match="No argument for attr dtype"):
        apply_op("Placeholder", shape=[1])
    with pytest.raises(TypeError, match="Expected list"):
        apply_op("StringJoin", inputs="a")
    with pytest.raises(ValueError, match="at least 1"):
        apply_op("SaveV2", prefix="p", tensor_names=[], shape_and_slices=[], tensors=[])
    empty_join = apply_op("StringJoin", inputs=[]).outputs[0]  # TF allows N=0
    with sk.Session() as sess:
        assert sess.run(empty_join) == b""
    with pytest.raises(TypeError, match="expected type of string"):
        apply_op("ShardedFilename", basename=x, shard=1, num_shards=2)
    op = apply_op("Identity", input=x, name="named")
    assert op.name == "named" and op.get_attr("T") == sk.float32
