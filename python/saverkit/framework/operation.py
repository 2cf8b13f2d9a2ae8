"""``Operation``: a node of the graph: an op type, input Tensors, attributes and output Tensors.

Operations are plain data (type, inputs, attrs as Python values); what an op *does* lives in the kernel
table (:mod:`saverkit.framework.op_registry`) and runs in a Session. Only :class:`Graph` creates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from saverkit import dtypes
from saverkit.framework import attrs as attrs_lib
from saverkit.framework import device_spec
from saverkit.framework.tensor import _run_using_default_session
from saverkit.protobuf import node_def_pb2

if TYPE_CHECKING:
    from saverkit.framework.graph import Graph
    from saverkit.framework.op_registry import OpInfo
    from saverkit.framework.tensor import Tensor

_NO_OPS: list = []  # shared "no control inputs" (never mutated: adding one builds a new list)
NO_INPUTS: tuple = ()  # shared inputs of source ops (inputs are never mutated)

class Operation:
    """A node: an op type, input Tensors, attributes, and output Tensors."""

    __slots__ = (
        "_graph",
        "_name",
        "_type",
        "_inputs",
        "_outputs",
        "_control_inputs",
        "_device",
        "_attrs",  # never mutated once the op exists: ops with equal attrs may share the dict
        "_id",
        "_info",
        "_serialized",
        "__weakref__",
    )
    # Set by Graph when it creates the op (no __init__: see Graph._create_op).
    _graph: Graph
    _name: str
    _type: str
    _inputs: Sequence[Tensor]
    _outputs: tuple[Tensor, ...]
    _control_inputs: Sequence[Operation]
    _device: str
    _attrs: dict[str, Any]
    _id: int
    _info: OpInfo | None
    _serialized: bytes | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Operations are created by Graph.create_op or the op functions (constant, add, ...).")

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> str:
        return self._type

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        return tuple(self._inputs)

    @property
    def outputs(self) -> list[Tensor]:
        return list(self._outputs)

    def values(self) -> tuple[Tensor, ...]:
        return tuple(self._outputs)

    @property
    def control_inputs(self) -> list[Operation]:
        return list(self._control_inputs)

    @property
    def device(self) -> str:
        return self._device

    @property
    def op_def(self) -> Any:
        return None if self._info is None else self._info.op_def

    @property
    def node_def(self) -> node_def_pb2.NodeDef:
        """A fresh NodeDef describing this operation."""
        return node_def_pb2.NodeDef.FromString(self._node_def_bytes())

    def _node_def_bytes(self) -> bytes:
        """The serialized NodeDef, cached until the op changes (exports of big graphs repeat often:
        a Saver writes the meta graph with every checkpoint).

        Framed by hand from per-attr bytes (see ``attrs_lib.serialized``) rather than through a NodeDef
        message: building ten thousand protobuf messages is what made the first export slow."""
        cached = self._serialized
        if cached is None:
            varint = _varint
            name = self._name.encode()
            parts = [b"\x0a", varint(len(name)), name, _op_field(self._type)]  # name (1), op (2)
            for t in self._inputs:  # input (3)
                s = t._as_node_def_input().encode()
                parts += (b"\x1a", varint(len(s)), s)
            if self._control_inputs:  # TF sorts them by name
                for c in sorted("^" + c._name for c in self._control_inputs):
                    s = c.encode()
                    parts += (b"\x1a", varint(len(s)), s)
            if self._device:  # device (4)
                s = self._device.encode()
                parts += (b"\x22", varint(len(s)), s)
            types = self._info.attr_types if self._info is not None else attrs_lib.PRIVATE_ATTR_TYPES
            private = attrs_lib.PRIVATE_ATTR_TYPES
            entry = attrs_lib.node_def_attr_entry
            for key, value in self._attrs.items():  # attr (5)
                parts.append(entry(key, value, types.get(key) or private.get(key)))
            cached = self._serialized = b"".join(parts)
        return cached

    def get_attr(self, name: str) -> Any:
        """The attribute ``name`` as TF returns it (DType, bytes, int, TensorShapeProto, TensorProto...)."""
        try:
            value = self._attrs[name]
        except KeyError:
            raise ValueError(f"Operation {self._name!r} has no attr named {name!r}.") from None
        types = self._info.attr_types if self._info is not None else {}
        proto = attrs_lib.to_proto(value, types.get(name))
        kind = proto.WhichOneof("value")
        if kind == "list":
            for field in ("s", "i", "f", "b", "type", "shape", "tensor", "func"):
                items = getattr(proto.list, field)
                if items:
                    return [dtypes.as_dtype(x) for x in items] if field == "type" else list(items)
            return []
        if kind == "type":
            return dtypes.as_dtype(proto.type)
        return None if kind is None else getattr(proto, kind)

    def _get_attr_value(self, name: str) -> Any:
        """The stored Python value of an attribute (DType, TensorShape, numpy array...)."""
        return self._attrs[name]

    def _set_attr(self, name: str, value: Any) -> None:
        """Set an attribute from an AttrValue proto or a Python value."""
        attr_type = self._info.attr_types.get(name) if self._info is not None else None
        if attr_type is not None:
            value = attrs_lib.canonicalize(value, attr_type)
            if attr_type == "tensor":
                value = _read_only(value)
        self._attrs = {**self._attrs, name: value}  # a new dict: ops may share one (see __slots__)
        self._serialized = None

    def _clear_attr(self, name: str) -> None:
        if name in self._attrs:
            self._attrs = {k: v for k, v in self._attrs.items() if k != name}
        self._serialized = None

    def _set_device(self, device: Any) -> None:
        self._serialized = None
        self._device = device_spec.canonical_name(
            device if isinstance(device, str) or device is None else device.to_string()
        )

    def _set_device_from_string(self, device: str) -> None:
        self._set_device(device)

    def _add_control_input(self, op: Operation) -> None:
        self._add_control_inputs([op])

    def _add_control_inputs(self, ops: list[Operation]) -> None:
        for op in ops:
            if not isinstance(op, Operation):
                raise TypeError(f"op must be an Operation: {op!r}")
            if op._graph is not self._graph:
                raise ValueError(f"{op.name} is not from the graph of {self._name}")
            if op not in self._control_inputs:
                self._control_inputs = [*self._control_inputs, op]
        self._graph._edges_version += 1  # cached run plans may now miss this edge
        self._serialized = None

    def _remove_all_control_inputs(self) -> None:
        self._control_inputs = []
        self._serialized = None
        self._graph._edges_version += 1

    def colocation_groups(self) -> list[bytes]:
        cls = self._attrs.get("_class")
        if cls is None:
            return [b"loc:@" + self._name.encode()]
        items = cls.list.s if isinstance(cls, attrs_lib.AttrValue) else cls
        return [s for s in items if isinstance(s, bytes) and s.startswith(b"loc:@")] or [
            b"loc:@" + self._name.encode()
        ]

    def run(self, feed_dict: dict | None = None, session: Any = None) -> None:
        """Run this operation in ``session`` (default: the default session)."""
        _run_using_default_session(self, feed_dict, self._graph, session)

    def __repr__(self) -> str:
        return f"<saverkit.Operation '{self._name}' type={self._type}>"

    def __str__(self) -> str:
        return str(self.node_def)


def distinct_devices(ops: Iterable[Operation]) -> set[str]:
    """``{op.device for op in ops}``, read from the slots: for saverkit's own layers (a Saver groups one
    Assign per variable)."""
    return {op._device for op in ops}


def _read_only(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


_varint = attrs_lib.varint


_OP_FIELDS: dict[str, bytes] = {}


def _op_field(op_type: str) -> bytes:
    """NodeDef field 2 (op), built once per op type."""
    out = _OP_FIELDS.get(op_type)
    if out is None:
        s = op_type.encode()
        out = _OP_FIELDS[op_type] = b"\x12" + _varint(len(s)) + s
    return out
