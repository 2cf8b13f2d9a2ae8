"""``constant``: Python/numpy values as ``Const`` ops, with TensorFlow's dtype inference."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from saverkit import dtypes
from saverkit.framework import op_registry, ops
from saverkit.framework.tensor_shape import TensorShape, as_shape, shape_of


def _bytes_array(values: Any) -> np.ndarray:
    """An object array of bytes (str elements UTF-8 encoded); built element-wise so NULs survive."""
    arr = np.array(values, dtype=object)
    flat = arr.reshape(-1)
    for i, x in enumerate(flat):
        if isinstance(x, str):
            flat[i] = x.encode("utf-8")
        elif isinstance(x, np.str_):
            flat[i] = str(x).encode("utf-8")
        elif isinstance(x, (bytes, np.bytes_)):
            flat[i] = bytes(x)
        else:
            raise TypeError(
                f"Expected string or bytes for a string tensor, got {x!r} of type {type(x).__name__}"
            )
    return arr


_KIND_OK = {  # target kind -> natural kinds of Python values that may be converted to it
    "f": "iuf",
    "c": "iufc",
    "i": "iu",
    "u": "iu",
    "b": "b",
    "V": "iu",
}


def as_numpy(values: Any, dtype: Any = None) -> np.ndarray:
    """``values`` as a new numpy array of ``dtype`` (default: TF's inference: Python float -> float32,
    int -> int32 (int64 if needed), str/bytes -> object array of bytes)."""
    dt = dtypes.as_dtype(dtype) if dtype is not None else None
    if values is None:
        raise TypeError("Cannot convert None to a tensor")
    if isinstance(values, (np.ndarray, np.generic)):
        arr = np.asarray(values)
        if arr.dtype.kind in "USO":
            arr = _bytes_array(arr)
            if dt is not None and dt != dtypes.string:
                raise TypeError(f"Expected {dt.name}, but got a string array")
            return arr
        if dt is None:
            return arr.copy()
        if dt == dtypes.string:
            raise TypeError(f"Expected string, but got an array of {arr.dtype}")
        return _astype(arr, dt)
    if isinstance(values, (str, bytes)) or _first_leaf_is_string(values) or dt == dtypes.string:
        if dt is not None and dt != dtypes.string:
            raise TypeError(f"Expected {dt.name}, but got {values!r} (strings)")
        return _bytes_array(values)
    try:
        natural = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise ValueError(f"Cannot convert {values!r} to a tensor: {e}") from None
    if natural.dtype.kind not in "biufc":
        raise TypeError(f"Cannot convert {values!r} of type {type(values).__name__} to a tensor")
    if dt is None:
        if natural.dtype.kind == "f":
            return natural.astype(np.float32)
        if natural.dtype.kind in "iu":
            if natural.size == 0 or (natural.min() >= -(2**31) and natural.max() < 2**31):
                return natural.astype(np.int32)
            return natural.astype(np.int64)
        return natural
    if dt == dtypes.string:
        raise TypeError(f"Expected string, but got {values!r}")
    np_type = np.dtype(dt.as_numpy_dtype)
    target_kind = "f" if dt.is_floating else np_type.kind
    if natural.size and natural.dtype.kind not in _KIND_OK.get(target_kind, ""):
        raise TypeError(f"Expected {dt.name}, but got {values!r} of type '{type(values).__name__}'.")
    if dt.is_integer or dt.is_quantized:
        base = _int_base(np_type)
        info = ml_dtypes.iinfo(base)
        if natural.size and (natural.min() < info.min or natural.max() > info.max):
            raise TypeError(f"Value {values!r} is out of range for {dt.name}")
        return natural.astype(base).view(np_type) if dt.is_quantized else natural.astype(np_type)
    return natural.astype(np_type)


def _int_base(np_type: np.dtype) -> np.dtype:
    return np_type.fields[next(iter(np_type.fields))][0] if np_type.fields else np_type


def _astype(arr: np.ndarray, dt: dtypes.DType) -> np.ndarray:
    if dt.is_quantized:
        return arr.astype(_int_base(np.dtype(dt.as_numpy_dtype))).view(dt.as_numpy_dtype)
    return arr.astype(dt.as_numpy_dtype)


def _first_leaf_is_string(values: Any) -> bool:
    while isinstance(values, (list, tuple)) and values:
        values = values[0]
    return isinstance(values, (str, bytes, np.str_, np.bytes_))


def _dtype_of(arr: np.ndarray) -> dtypes.DType:
    dt = dtypes._BY_NUMPY.get(arr.dtype)
    if dt is not None:
        return dt
    if arr.dtype == object:
        return dtypes.string
    if arr.dtype.fields:
        return dtypes.as_dtype(next(iter(arr.dtype.fields)))
    return dtypes.as_dtype(arr.dtype)


def constant(
    value: Any, dtype: Any = None, shape: Any = None, name: str = "Const", verify_shape: bool = False
) -> ops.Tensor:
    """A ``Const`` op holding ``value`` (copied), optionally converted to ``dtype`` and reshaped/broadcast
    to ``shape``."""
    arr = as_numpy(value, dtype)
    if shape is not None:
        shape = as_shape(shape)
        if not shape.is_fully_defined():
            raise ValueError(f"constant() needs a fully defined shape, got {shape}")
        dims = tuple(shape.as_list())
        n = shape.num_elements()
        if verify_shape and arr.shape != dims:
            raise TypeError(f"Expected Tensor's shape: {dims}, but got {arr.shape}.")
        if arr.size == n:
            arr = arr.reshape(dims)
        elif arr.size == 1:
            arr = _broadcast_scalar(arr, dims)  # stored once in the GraphDef
        else:
            raise TypeError(f"{arr.size} values cannot fill a tensor of shape {dims}")
    return _const(arr, _dtype_of(arr) if dtype is None else dtypes.as_dtype(dtype), name)


def _broadcast_scalar(arr: np.ndarray, dims: tuple) -> np.ndarray:
    """``np.broadcast_to(arr.reshape(()), dims)`` (a read-only zero-stride view), without its Python-level
    overhead for the numeric case: every small ``zeros``/``ones``/``fill`` goes through here."""
    if arr.dtype.hasobject or not arr.flags.c_contiguous:
        return np.broadcast_to(arr.reshape(()), dims)
    view = np.ndarray(dims, arr.dtype, buffer=arr, strides=(0,) * len(dims))
    view.flags.writeable = False
    return view


def _const(arr: np.ndarray, dt: dtypes.DType, name: str) -> ops.Tensor:
    arr.setflags(write=False)  # Const values are shared by every run: nobody may write them
    g = ops.get_default_graph()
    op = g._create_op("Const", ops.NO_INPUTS, {"value": arr, "dtype": dt}, [dt], name or "Const", _CONST)
    return op._outputs[0]


_CONST = op_registry.get("Const")


@op_registry.register_shape_fn("Const")
def _const_shape(op: ops.Operation) -> list[TensorShape]:
    return [shape_of(op._attrs["value"].shape)]


@op_registry.register_kernel("Const", hoist=True)
def _const_kernel(ctx: Any) -> list:
    value = ctx.op._attrs["value"]
    # An imported Const holds its value encoded until it runs (tensor_util.SerializedTensor).
    return [value if type(value) is np.ndarray else value.value(ctx.op)]


def _constant_conversion(
    value: Any, dtype: Any = None, name: str | None = None, as_ref: bool = False
) -> ops.Tensor:
    return constant(value, dtype=dtype, name=name or "Const")


ops.register_tensor_conversion_function(object, _constant_conversion, priority=200)
