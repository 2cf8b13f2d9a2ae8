"""numpy arrays <-> ``TensorProto`` (the ``value`` of a ``Const`` node), following TensorFlow's encoding.

Arrays of more than one element of a fixed-size type go to ``tensor_content``
(raw little-endian bytes); scalars, strings and the rest use the typed
``*_val`` fields, where a short list means "repeat the last value" (that is how
``zeros([1000, 1000])`` stays a few bytes in a GraphDef).

A Const imported from a GraphDef keeps its value encoded (:class:`SerializedTensor`) until it runs: a
file may declare far more than it holds, and its bytes are exported back unchanged. Decoding refuses a
value of :data:`MAX_CONST_BYTES` or more.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, cast

import numpy as np

from saverkit import dtypes, errors
from saverkit.protobuf import attr_value_pb2, tensor_pb2


def _enums(*types: dtypes.DType) -> frozenset[int]:
    # Sets of DataType numbers, not DTypes: membership is then a C-level int lookup.
    return frozenset(t.as_datatype_enum for t in types)


_CONTENT_TYPES = _enums(
    dtypes.float16, dtypes.float32, dtypes.float64, dtypes.int32, dtypes.uint8, dtypes.int16, dtypes.int8,
    dtypes.int64, dtypes.qint8, dtypes.quint8, dtypes.qint16, dtypes.quint16, dtypes.qint32, dtypes.uint32,
    dtypes.uint64, dtypes.float8_e5m2, dtypes.float8_e4m3fn, dtypes.float8_e4m3fnuz,
    dtypes.float8_e4m3b11fnuz, dtypes.float8_e5m2fnuz, dtypes.float4_e2m1fn, dtypes.bfloat16,
)  # fmt: skip
# tensor_content is also accepted for these when reading (TF writes them in typed fields).
_CONTENT_READABLE = _CONTENT_TYPES | _enums(dtypes.uint16, dtypes.complex64, dtypes.complex128, dtypes.bool_)
_HALF = _enums(dtypes.float16, dtypes.bfloat16)
_FLOAT8 = _enums(
    dtypes.float8_e5m2, dtypes.float8_e4m3fn, dtypes.float8_e4m3fnuz, dtypes.float8_e4m3b11fnuz,
    dtypes.float8_e5m2fnuz, dtypes.float4_e2m1fn,
)  # fmt: skip
_INT_VAL = _enums(
    dtypes.int32, dtypes.uint8, dtypes.uint16, dtypes.int16, dtypes.int8, dtypes.qint32, dtypes.quint8,
    dtypes.qint8, dtypes.qint16, dtypes.quint16, dtypes.int4, dtypes.uint4, dtypes.int2, dtypes.uint2,
)  # fmt: skip
_COMPLEX = _enums(dtypes.complex64, dtypes.complex128)
_STRING = dtypes.string.as_datatype_enum
# Typed field -> numpy type of its elements, for the types stored as plain numbers.
_FIELD = {
    dtypes.float32.as_datatype_enum: ("float_val", np.float32),
    dtypes.float64.as_datatype_enum: ("double_val", np.float64),
    dtypes.int64.as_datatype_enum: ("int64_val", np.int64),
    dtypes.uint32.as_datatype_enum: ("uint32_val", np.uint32),
    dtypes.uint64.as_datatype_enum: ("uint64_val", np.uint64),
    dtypes.bool_.as_datatype_enum: ("bool_val", np.bool_),
}
_LITTLE = sys.byteorder == "little"


def _plain(array: np.ndarray) -> np.ndarray:
    """Quantized types are numpy records of one integer; view them as that integer."""
    if array.dtype.fields is not None:
        return array.view(array.dtype.fields[next(iter(array.dtype.fields))][0])
    return array


def make_tensor_proto(values: Any, dtype: Any = None, shape: Any = None) -> tensor_pb2.TensorProto:
    """Encode ``values`` (array-like) as a TensorProto, like ``tf.make_tensor_proto``."""
    from saverkit.framework.constant_op import as_numpy  # value inference lives with constant()

    array = as_numpy(values, dtype)
    dt = dtypes.as_dtype(dtype) if dtype is not None else dtypes.as_dtype(array.dtype)
    if shape is not None:
        shape = [int(d) for d in shape]
        n = int(np.prod(shape, dtype=np.int64))
        if array.size not in (1, n):
            raise ValueError(f"Cannot encode {array.size} values as a tensor of shape {shape}")
        if array.size == 1 and n != 1:
            array = np.broadcast_to(array.reshape(()), shape)
        else:
            array = array.reshape(shape)
    return encode(array, dt)


def encode(array: np.ndarray, dt: dtypes.DType, out: tensor_pb2.TensorProto | None = None
           ) -> tensor_pb2.TensorProto:
    """TensorProto for an array already of ``dt``'s numpy type (filled into ``out`` if given)."""
    proto = tensor_pb2.TensorProto() if out is None else out
    enum = dt.as_datatype_enum
    proto.dtype = enum
    proto.tensor_shape.SetInParent()
    for d in array.shape:
        proto.tensor_shape.dim.add(size=d)
    # A broadcast value (every stride 0: zeros(), fill, constant(x, shape=...)) is stored once.
    repeated = array.size > 1 and not any(array.strides)
    flat = array.reshape(-1)[:1] if repeated else array.reshape(-1)
    if flat.size > 1 and enum in _CONTENT_TYPES:
        data = np.ascontiguousarray(flat)
        if not _LITTLE:
            data = data.byteswap()
        if data.nbytes >= 1 << 31:
            raise ValueError("Cannot create a tensor proto whose content is larger than 2GB.")
        proto.tensor_content = data.tobytes()
    elif enum == _STRING:
        proto.string_val.extend([_as_bytes(x) for x in flat])
    elif enum in _HALF:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif enum in _FLOAT8:
        proto.float8_val = flat.view(np.uint8).tobytes()
    elif enum in _INT_VAL:
        proto.int_val.extend(_plain(flat).astype(np.int32).tolist())
    elif enum in _COMPLEX:
        pairs = np.stack([flat.real, flat.imag], axis=-1).reshape(-1).tolist()
        (proto.scomplex_val if dt == dtypes.complex64 else proto.dcomplex_val).extend(pairs)
    elif enum in _FIELD:
        getattr(proto, _FIELD[enum][0]).extend(flat.tolist())
    else:
        raise TypeError(f"Cannot encode a tensor of type {dt.name} in a TensorProto")
    return proto


def serialized(array: np.ndarray, dt: dtypes.DType) -> bytes:
    """``encode(array, dt).SerializeToString()``; the common case (a multi-element array stored as
    ``tensor_content``) is framed by hand: a graph export encodes every Const, and a TensorProto
    message per Const was most of the cost of the first export."""
    enum = dt.as_datatype_enum
    shape = array.shape
    if (
        enum not in _CONTENT_TYPES
        or not _LITTLE
        or array.size < 2
        or array.nbytes >= 1 << 31
        or not any(array.strides)  # broadcast value: stored once, see encode()
        or 0 in shape
    ):
        return encode(array, dt).SerializeToString()
    head = _HEADS.get((enum, shape))
    if head is None:
        dims = b"".join([_length_delimited(b"\x12", b"\x08" + varint(d)) for d in shape])  # Dim.size (1)
        head = b"\x08" + varint(enum) + _length_delimited(b"\x12", dims)
        if len(_HEADS) < 10_000:
            _HEADS[(enum, shape)] = head
    # TensorProto: dtype (1), tensor_shape (2) of dim (2) entries, then tensor_content (4).
    data = np.ascontiguousarray(array).tobytes()
    return head + b"\x22" + varint(len(data)) + data


_HEADS: dict[tuple, bytes] = {}  # (dtype enum, shape) -> TensorProto fields 1 and 2


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def varint(n: int) -> bytes:
    """A protobuf base-128 varint (n >= 0)."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes([i]) for i in range(0x80)]


def MakeNdarray(tensor: tensor_pb2.TensorProto) -> np.ndarray:  # noqa: N802 - TensorFlow's name
    """Decode a TensorProto into a new numpy array, like ``tf.make_ndarray``."""
    shape = [d.size for d in tensor.tensor_shape.dim]
    n = 1
    for d in shape:  # not np.prod: for small tensors its overhead dominates an import
        n *= d
    if not -(1 << 63) <= n < 1 << 63:  # the int64 np.prod computed would have wrapped
        n = int(np.prod(shape, dtype=np.int64))
    enum = tensor.dtype
    dt = dtypes._BY_ENUM.get(enum) or dtypes.as_dtype(enum)
    np_type = np.dtype(dt.as_numpy_dtype)
    content = tensor.tensor_content
    if content:
        if enum not in _CONTENT_READABLE:
            raise TypeError(f"tensor_content is not valid for {dt.name}")
        if len(content) != n * np_type.itemsize:
            raise ValueError(
                f"TensorProto of {dt.name}{shape} has {len(content)} content bytes, "
                f"expected {n * np_type.itemsize}"
            )
        values = np.frombuffer(content, dtype=np_type).copy()
        if not _LITTLE:
            values = values.byteswap()
        return values.reshape(shape)
    if enum == _STRING:
        values = tensor.string_val
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
    elif enum in _HALF:
        out = np.array(tensor.half_val, dtype=np.uint16).view(np_type)
    elif enum in _FLOAT8:
        out = np.frombuffer(tensor.float8_val, dtype=np.uint8).view(np_type)
    elif enum in _INT_VAL:
        base = np_type.fields[next(iter(np_type.fields))][0] if np_type.fields else np_type
        out = np.array(tensor.int_val, dtype=np.int64).astype(base).view(np_type)
    elif enum in _COMPLEX:
        raw = np.array(tensor.scomplex_val if dt == dtypes.complex64 else tensor.dcomplex_val)
        out = (raw[0::2] + 1j * raw[1::2]).astype(np_type) if raw.size else np.zeros(0, np_type)
    elif enum in _FIELD:
        out = np.array(getattr(tensor, _FIELD[enum][0]), dtype=_FIELD[enum][1])
    else:
        raise TypeError(f"Cannot decode a TensorProto of type {dt.name}")
    if out.size == 0:
        return np.zeros(shape, np_type) if enum != _STRING else np.full(shape, b"", dtype=object)
    if out.size > n:
        raise ValueError(f"TensorProto of shape {shape} holds {out.size} values")
    if out.size < n:  # the last value repeats: filled in place, no n-element temporaries
        full = np.empty(n, out.dtype)
        full[: out.size] = out
        full[out.size :] = out[-1]
        out = full
    return out.reshape(shape)


def _as_bytes(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview, np.bytes_)):
        return bytes(x)
    raise TypeError(f"Expected bytes or str for a string tensor, got {type(x).__name__}: {x!r}")


def constant_value(tensor: Any) -> np.ndarray | None:
    """The value of ``tensor`` if it is known while building the graph (a Const output), else None."""
    op = getattr(tensor, "op", None)
    if op is None:
        return None
    if op.type == "Const":
        return const_value(op)
    if op.type == "Identity":
        return constant_value(op.inputs[0])
    if op.type == "Shape" and op.inputs[0].shape.is_fully_defined():
        return np.array(op.inputs[0].shape.as_list(), dtype=op._attrs["out_type"].as_numpy_dtype)
    if op.type == "Pack":
        parts = [constant_value(t) for t in op.inputs]
        if any(p is None for p in parts):
            return None
        return np.stack(cast("list[np.ndarray]", parts), axis=op._attrs["axis"])
    return None


# --- Const values of imported graphs ----------------------------------------------------------------------

MAX_CONST_BYTES = 1 << 31
"""A Const value imported from a GraphDef is refused when it runs (InvalidArgumentError naming the node)
if its decoded array would take this many bytes or more (strings: 8 bytes, one reference, per element).
That is the 2 GiB TensorFlow puts on a constant (``make_tensor_proto`` refuses bigger ones; a GraphDef
cannot hold more), but a GraphDef may still *declare* more: one ``float_val`` with the shape ``[2**40]``
reads as "fill 4 TiB with this value". Raise it to run such graphs on a machine that can hold them."""

MAX_NUMPY_RANK = 64  # numpy 2's limit; TensorFlow allows 254 (TensorShape::MaxDimensions)
MAX_TF_RANK = 254


def check_const_shape(dims: tuple[int, ...]) -> str | None:
    """Why a Const value's shape is one TensorFlow would refuse when importing (TensorShape::IsValidShape),
    or None: a negative dimension, more than 2**63 - 1 elements, more than 254 dimensions."""
    if len(dims) > MAX_TF_RANK:
        return f"has {len(dims)} dimensions, more than TensorFlow's {MAX_TF_RANK}"
    n = 1
    for d in dims:
        if d < 0:
            return f"{list(dims)} is not fully defined (a dimension is negative)"
        n *= d
    if n >= 1 << 63:
        return f"{list(dims)} is too large (more than 2**63 - 1 elements)"
    return None


class SerializedTensor:
    """The ``value`` of an imported Const: its ``AttrValue`` as serialized in the GraphDef, decoded only
    when the Const runs or its value is asked for (:func:`const_value`).

    Exports write ``attr_bytes`` back unchanged. ``shape`` (the dims, checked by the importer) is what
    shape inference needs. A decoded value under 64 KiB is kept (a graph has thousands of those, and each
    new session would decode them again); a bigger one only while something uses it (a weak reference),
    so an unused graph holds its big constants once, encoded.
    """

    __slots__ = ("attr_bytes", "enum", "shape", "source", "_array", "_weak")

    def __init__(self, attr_bytes: bytes, enum: int, shape: tuple[int, ...], source: str | None) -> None:
        self.attr_bytes = attr_bytes
        self.enum = enum  # the TensorProto's DataType number, checked when decoding
        self.shape = shape
        self.source = source  # the file the graph came from, for error messages
        self._array: np.ndarray | None = None
        self._weak: Any = None

    def __repr__(self) -> str:
        return f"<SerializedTensor dtype={self.enum} shape={list(self.shape)}>"

    def value(self, op: Any = None) -> np.ndarray:
        """The decoded, read-only array; OpErrors name ``op`` (the Const) and the source file."""
        decoded = self._array
        if decoded is None and self._weak is not None:
            decoded = self._weak()
        if decoded is not None:
            return decoded
        problem = self._problem(op)
        if problem is None:
            try:
                decoded = MakeNdarray(attr_value_pb2.AttrValue.FromString(self.attr_bytes).tensor)
            except (ValueError, TypeError) as e:
                problem = errors.InvalidArgumentError, f"cannot decode its value: {e}"
        if problem is not None:
            error, message = problem
            where = f"Const '{op.name}'" if op is not None else "Const value"
            if self.source:
                where += f" (from {self.source})"
            raise error(op.node_def if op is not None else None, op, f"{where}: {message}") from None
        assert decoded is not None  # no problem: decoded above
        decoded.flags.writeable = False
        if decoded.nbytes < _KEEP_DECODED_BELOW:
            self._array = decoded
        else:
            self._weak = weakref.ref(decoded)
        return decoded

    def _problem(self, op: Any) -> tuple[type, str] | None:
        """(error class, message) if the value must not be decoded: checked before allocating anything."""
        dt = dtypes._BY_ENUM.get(self.enum) if self.enum else None
        if dt is None:
            return errors.InvalidArgumentError, f"its TensorProto has the invalid dtype {self.enum}"
        declared = op._attrs.get("dtype") if op is not None else None
        if declared is not None and declared != dt:
            return errors.InvalidArgumentError, (f"type mismatch between value ({dt.name}) and dtype "
                                                 f"({declared.name})")
        if len(self.shape) > MAX_NUMPY_RANK:
            return errors.UnimplementedError, (
                f"its value has rank {len(self.shape)}; saverkit holds values as numpy arrays, which have at "
                f"most {MAX_NUMPY_RANK} dimensions")
        n = 1
        for d in self.shape:
            n *= d
        nbytes = n * (8 if self.enum == _STRING else np.dtype(dt.as_numpy_dtype).itemsize)
        if nbytes >= MAX_CONST_BYTES:
            return errors.InvalidArgumentError, (
                f"its value, {dt.name} of shape {list(self.shape)}, would take {nbytes} bytes "
                f"({nbytes / 2**30:.1f} GiB) decoded; saverkit decodes constants of less than "
                f"{MAX_CONST_BYTES} bytes (saverkit.framework.tensor_util.MAX_CONST_BYTES)")
        return None


_KEEP_DECODED_BELOW = 64 << 10


def const_value(op: Any) -> np.ndarray:
    """The value of a Const op: its array, decoded first if the op was imported."""
    value = op._attrs["value"]
    return value if type(value) is np.ndarray else value.value(op)
