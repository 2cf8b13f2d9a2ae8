"""Op attributes: ``AttrValue`` protos <-> the Python values operations keep.

Operations store attributes as plain Python values so building and running a
graph never touches protobufs: ``type`` -> DType, ``shape`` -> TensorShape,
``tensor`` -> read-only numpy array, ``string`` -> bytes, ``int``/``float``/
``bool`` -> themselves, ``list(X)`` -> list of those (colocation groups, ``_class``,
are a tuple: ops colocated with a variable share one). Attributes whose type is
not known (opaque imported ops, ``_``-prefixed extras) keep their ``AttrValue``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saverkit import dtypes
from saverkit.framework import tensor_util
from saverkit.framework.tensor_shape import TensorShape, as_shape
from saverkit.protobuf.attr_value_pb2 import AttrValue


def canonicalize(value: Any, attr_type: str) -> Any:
    """A user-supplied attribute value as the Python value an Operation stores."""
    if isinstance(value, AttrValue):
        return to_python(value, attr_type)
    if attr_type.startswith("list("):
        inner = attr_type[5:-1]
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"Expected a list for an attr of type {attr_type}, got {value!r}")
        value = list(value)
        if inner == "type" and value and set(map(type, value)) == {dtypes.DType}:
            return value  # already DTypes (a Saver's SaveV2 lists one per variable)
        return [canonicalize(v, inner) for v in value]
    if attr_type == "type":
        return dtypes.as_dtype(value)
    if attr_type == "shape":
        return as_shape(value)
    if attr_type == "string":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes):
            return value
        raise TypeError(f"Expected a string attr, got {value!r}")
    if attr_type == "int":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"Expected an int attr, got {value!r}")
        return int(value)
    if attr_type == "float":
        return float(value)
    if attr_type == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"Expected a bool attr, got {value!r}")
        return bool(value)
    if attr_type == "tensor":
        if isinstance(value, np.ndarray):
            return value
        return tensor_util.MakeNdarray(value)
    return value  # func, placeholder: carried as given


def to_python(attr: AttrValue, attr_type: str | None = None) -> Any:
    """Decode an AttrValue; without ``attr_type`` the set oneof field decides."""
    kind = attr.WhichOneof("value")
    if kind == "list":
        lst = attr.list
        inner = attr_type[5:-1] if attr_type and attr_type.startswith("list(") else ""
        for field in ("s", "i", "f", "b", "type", "shape", "tensor", "func"):
            items = getattr(lst, field)
            if items or _LIST_FIELD.get(inner) == field:
                return [_scalar(field, v) for v in items]
        return []
    if kind is None:
        return [] if attr_type and attr_type.startswith("list(") else None
    return _scalar(kind, getattr(attr, kind))


_LIST_FIELD = {
    "string": "s",
    "int": "i",
    "float": "f",
    "bool": "b",
    "type": "type",
    "shape": "shape",
    "tensor": "tensor",
    "func": "func",
}


def _scalar(field: str, v: Any) -> Any:
    if field == "type":
        return dtypes._BY_ENUM.get(v) or dtypes.as_dtype(v)
    if field == "shape":
        return TensorShape(v)
    if field == "tensor":
        return _read_only(tensor_util.MakeNdarray(v))
    if field in ("i", "f", "b", "s"):
        return v
    return v  # func / placeholder: keep the proto


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# Types of the private attrs TF puts on any op, so they encode without guessing.
PRIVATE_ATTR_TYPES = {"_class": "list(string)", "_output_shapes": "list(shape)"}


def to_proto(value: Any, attr_type: str | None) -> AttrValue:
    """Encode a stored attribute value as an AttrValue."""
    if isinstance(value, AttrValue):
        return value
    return fill(AttrValue(), value, attr_type)


def fill(out: AttrValue, value: Any, attr_type: str | None) -> AttrValue:
    """Encode ``value`` into the (empty) AttrValue ``out``, e.g. a NodeDef's ``attr[key]``."""
    if isinstance(value, AttrValue):
        out.CopyFrom(value)
        return out
    if type(value) is tensor_util.SerializedTensor:  # an imported Const's value, still encoded
        out.MergeFromString(value.attr_bytes)
        return out
    if attr_type is None:
        attr_type = _guess_type(value)
    if attr_type == "type":
        out.type = value.as_datatype_enum
    elif attr_type == "shape":
        _fill_shape(out.shape, value)
    elif attr_type == "tensor":
        tensor_util.encode(value, array_dtype(value), out=out.tensor)
    elif attr_type == "string":
        out.s = value.encode("utf-8") if isinstance(value, str) else value
    elif attr_type == "int":
        out.i = value
    elif attr_type == "float":
        out.f = value
    elif attr_type == "bool":
        out.b = value
    elif attr_type == "func":
        out.func.CopyFrom(value)
    elif attr_type.startswith("list("):
        inner = attr_type[5:-1]
        out.list.SetInParent()
        field = getattr(out.list, _LIST_FIELD[inner])
        if inner == "shape":
            for v in value:
                _fill_shape(field.add(), v)
        elif inner in ("tensor", "func"):
            for v in value:
                field.add().CopyFrom(_scalar_proto(v, inner))
        else:
            field.extend([_scalar_proto(v, inner) for v in value])
    else:
        raise TypeError(f"Cannot encode an attr of type {attr_type}")
    return out


varint = tensor_util.varint

# NodeDef ``attr`` map entries of immutable, hashable attr values (a dtype, a shape, a flag): a big
# graph repeats the same few thousands of times, so each is encoded by protobuf once. Floats are left
# out (0.0 == -0.0 and NaN != NaN would make a dict key lie).
_ENTRIES: dict[tuple, bytes] = {}
_CACHEABLE = (dtypes.DType, TensorShape, bool, int, bytes, str)


def node_def_attr_entry(key: str, value: Any, attr_type: str | None) -> bytes:
    """The serialized ``NodeDef.attr`` field (number 5) holding ``key: value``, as protobuf would write
    ``fill(node_def.attr[key], value, attr_type)``."""
    kind = type(value)
    if kind in _CACHEABLE:
        cache_key = (key, attr_type, kind, value)
        out = _ENTRIES.get(cache_key)
        if out is None:
            out = _entry(key, fill(AttrValue(), value, attr_type).SerializeToString())
            if len(_ENTRIES) < 10_000:
                _ENTRIES[cache_key] = out
        return out
    if (
        (kind is list or kind is tuple)
        and attr_type == "list(string)"
        and all(type(s) is bytes for s in value)
    ):
        # e.g. every colocated op's _class: AttrValue.list (1) -> ListValue.s (2), framed by hand.
        items = b"".join([b"\x12" + varint(len(s)) + s for s in value])
        return _entry(key, b"\x0a" + varint(len(items)) + items)
    if kind is AttrValue:
        return _entry(key, value.SerializeToString())
    if kind is tensor_util.SerializedTensor:  # an imported Const's value: written back as it was read
        return _entry(key, value.attr_bytes)
    if attr_type == "tensor" and isinstance(value, np.ndarray):
        tensor = tensor_util.serialized(value, array_dtype(value))
        return _entry(key, b"\x42" + varint(len(tensor)) + tensor)  # AttrValue.tensor (8)
    return _entry(key, fill(AttrValue(), value, attr_type).SerializeToString())


def _entry(key: str, attr: bytes) -> bytes:
    k = key.encode()
    entry = b"\x0a" + varint(len(k)) + k + b"\x12" + varint(len(attr)) + attr
    return b"\x2a" + varint(len(entry)) + entry


def _fill_shape(out: Any, shape: TensorShape) -> None:
    dims = shape._dims
    if dims is None:
        out.unknown_rank = True
    else:
        out.SetInParent()
        for d in dims:
            out.dim.add(size=-1 if d is None else d)


def _scalar_proto(v: Any, inner: str) -> Any:
    if inner == "type":
        return v.as_datatype_enum
    if inner == "shape":
        return v.as_proto()
    if inner == "tensor":
        return to_proto(v, "tensor").tensor
    if inner == "string" and isinstance(v, str):
        return v.encode("utf-8")
    return v


def array_dtype(a: np.ndarray) -> dtypes.DType:
    """The DType of an array; quantized types are numpy records named after the type."""
    dt = dtypes._BY_NUMPY.get(a.dtype)
    if dt is not None:
        return dt
    if a.dtype.fields:
        return dtypes.as_dtype(next(iter(a.dtype.fields)))
    return dtypes.as_dtype(a.dtype)


def _guess_type(value: Any) -> str:
    """Attr type of a value set without an OpDef to say (e.g. ``_class`` on any op)."""
    if isinstance(value, (list, tuple)):
        return f"list({_guess_type(value[0])})" if value else "list(string)"
    for t, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "float"),
        (bytes, "string"),
        (str, "string"),
        (dtypes.DType, "type"),
        (TensorShape, "shape"),
        (np.ndarray, "tensor"),
    ):
        if isinstance(value, t):
            return name
    raise TypeError(f"Cannot tell the attr type of {value!r}")
