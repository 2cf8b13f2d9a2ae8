"""A SavedModel's tag sets and signatures as text, in the layout of ``saved_model_cli show --all``.

Protobuf only (no graph layer): ``saverkit inspect EXPORT_DIR`` prints this, then the variables."""

from __future__ import annotations

from typing import IO

from saverkit.protobuf import meta_graph_pb2, saved_model_pb2, types_pb2


def _dtype_name(enum: int) -> str:
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"<unknown dtype {enum}>"


def _shape(info: meta_graph_pb2.TensorInfo) -> str:
    shape = info.tensor_shape
    if shape.unknown_rank:
        return "unknown_rank"
    dims = [str(d.size) for d in shape.dim]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _tensor_lines(kind: str, key: str, info: meta_graph_pb2.TensorInfo) -> list[str]:
    lines = [f"    {kind}['{key}'] tensor_info:", f"        dtype: {_dtype_name(info.dtype)}",
             f"        shape: {_shape(info)}"]
    encoding = info.WhichOneof("encoding")
    if encoding == "name":
        lines.append(f"        name: {info.name}")
    elif encoding == "coo_sparse":
        lines.append(f"        sparse values: {info.coo_sparse.values_tensor_name}")
    elif encoding is not None:
        lines.append(f"        ({encoding.replace('_', ' ')})")
    return lines


def signature_lines(key: str, signature_def: meta_graph_pb2.SignatureDef) -> list[str]:
    lines = [f"signature_def['{key}']:",
             "  The given SavedModel SignatureDef contains the following input(s):"]
    for k in sorted(signature_def.inputs):
        lines += _tensor_lines("inputs", k, signature_def.inputs[k])
    lines.append("  The given SavedModel SignatureDef contains the following output(s):")
    for k in sorted(signature_def.outputs):
        lines += _tensor_lines("outputs", k, signature_def.outputs[k])
    lines.append(f"  Method name is: {signature_def.method_name}")
    return lines


def show_all(saved_model: saved_model_pb2.SavedModel, out: IO[str]) -> None:
    """Every MetaGraphDef: its tag set, TF2 object graph size if any, and each signature's inputs and
    outputs (dtype, shape, tensor name) and method."""
    for meta_graph_def in saved_model.meta_graphs:
        tags = ", ".join(meta_graph_def.meta_info_def.tags)
        print(f"MetaGraphDef with tag-set: '{tags}' contains the following SignatureDefs:", file=out)
        nodes = len(meta_graph_def.object_graph_def.nodes)
        if nodes:
            print(f"(written by TF2 tf.saved_model.save: an object graph of {nodes} nodes; its functions "
                  "need TensorFlow to run)", file=out)
        for key in sorted(meta_graph_def.signature_def):
            print(file=out)
            print("\n".join(signature_lines(key, meta_graph_def.signature_def[key])), file=out)
        print(file=out)
