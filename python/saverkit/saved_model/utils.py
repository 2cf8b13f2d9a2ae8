"""TensorInfo helpers (TensorFlow's ``saved_model.utils``): a signature names graph tensors through them."""

from __future__ import annotations

from typing import Any

from saverkit.protobuf import meta_graph_pb2


def build_tensor_info(tensor: Any) -> meta_graph_pb2.TensorInfo:
    """The ``TensorInfo`` of a graph tensor: its name, dtype and (possibly partial) shape."""
    from saverkit.framework import tensor as tensor_mod

    if not isinstance(tensor, tensor_mod.Tensor):
        raise TypeError(f"build_tensor_info expects a graph Tensor, got {type(tensor).__name__}: {tensor!r}")
    info = meta_graph_pb2.TensorInfo(name=tensor.name, dtype=tensor.dtype.as_datatype_enum)
    info.tensor_shape.CopyFrom(tensor.get_shape().as_proto())
    return info


def get_tensor_from_tensor_info(
    tensor_info: meta_graph_pb2.TensorInfo, graph: Any = None, import_scope: str | None = None
) -> Any:
    """The tensor of ``graph`` (default graph) that ``tensor_info`` names, under ``import_scope``."""
    from saverkit.framework import meta_graph, ops

    encoding = tensor_info.WhichOneof("encoding")
    if encoding != "name":
        raise ValueError(f"Unsupported TensorInfo encoding {encoding!r}: saverkit reads dense tensors only "
                         f"(TensorInfo {tensor_info})")
    graph = graph or ops.get_default_graph()
    return graph.get_tensor_by_name(meta_graph.prepend_name_scope(tensor_info.name, import_scope))


def get_element_from_tensor_info(
    tensor_info: meta_graph_pb2.TensorInfo, graph: Any = None, import_scope: str | None = None
) -> Any:
    """The operation or tensor ``tensor_info.name`` names (init ops are stored as operation names)."""
    from saverkit.framework import meta_graph, ops

    graph = graph or ops.get_default_graph()
    return graph.as_graph_element(meta_graph.prepend_name_scope(tensor_info.name, import_scope))
