"""Array ops: placeholders, identity, zeros/ones/fill, stack, reshape, shape, squeeze, gather, where."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from saverkit import dtypes, errors
from saverkit.framework import common_shapes, constant_op, op_registry, ops, tensor_util
from saverkit.framework.constant_op import constant
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_shape_fn
from saverkit.framework.tensor_shape import TensorShape, as_shape, shape_of, unknown_shape

# --- builders -------------------------------------------------------------------------------------


def placeholder(dtype: Any, shape: Any = None, name: str | None = None) -> ops.Tensor:
    """A tensor that must be fed: ``sess.run(..., feed_dict={p: value})``."""
    return apply_op("Placeholder", dtype=dtype, shape=as_shape(shape), name=name)._outputs[0]


def placeholder_with_default(input: Any, shape: Any, name: str | None = None) -> ops.Tensor:  # noqa: A002
    """``input`` unless a value is fed for the result."""
    return apply_op("PlaceholderWithDefault", input=input, shape=as_shape(shape), name=name)._outputs[0]


def identity(input: Any, name: str | None = None) -> ops.Tensor:  # noqa: A002
    return apply_op("Identity", input=input, name=name)._outputs[0]


def fill(dims: Any, value: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("Fill", dims=dims, value=value, name=name)._outputs[0]


def _filled(value: Any, shape: Any, dtype: Any, name: str | None, default_name: str) -> ops.Tensor:
    """``zeros``/``ones``: a scalar ``value`` filling ``shape``. Small results of a static shape become one
    Const (TF does the same: < 1000 elements), big ones a Fill of two Consts, so GraphDefs stay small."""
    dtype = dtypes.as_dtype(dtype).base_dtype
    if isinstance(shape, ops.Tensor):
        with ops.name_scope(name, default_name, [shape]) as scope:
            return fill(shape, constant(value, dtype=dtype), name=scope)
    static = _static_shape(shape)
    g = ops.get_default_graph()
    n = None if static is None else static.num_elements()
    if name is None and n is not None and n < 1000 and static is not None:
        # The one Const takes the name the scope below would have (default_name made unique, a name
        # always valid as a scope): opening the scope only to leave it is most of the cost of zeros().
        dims = cast("tuple[int, ...]", static._dims)  # fully defined (_static_shape)
        try:
            attrs = _shared_attrs(_full_key(value, dtype, dims), _full_const_attrs, value, dtype, dims)
        except (TypeError, ValueError):
            attrs = None  # raised again below, inside the scope, as it always was
        if attrs is not None:
            op = g._create_op(
                "Const", ops.NO_INPUTS, attrs, [dtype], default_name, _CONST, output_shapes=[static]
            )
            return op._outputs[0]
    with g.name_scope(default_name if name is None else name) as scope:  # ops.name_scope(name, default_name)
        if static is None:
            dims_t = ops.convert_to_tensor(shape, dtype=dtypes.int32)
            return fill(dims_t, constant(value, dtype=dtype), name=scope)
        dims = cast("tuple[int, ...]", static._dims)  # fully defined: n is an int too
        if cast(int, n) < 1000:  # constant(value, dtype, shape=static, name=scope), attrs shared by value
            attrs = _shared_attrs(_full_key(value, dtype, dims), _full_const_attrs, value, dtype, dims)
            op = g._create_op(
                "Const", ops.NO_INPUTS, attrs, [dtype], scope or "Const", _CONST, output_shapes=[static]
            )
            return op._outputs[0]
        # One lookup for the three ops' attrs (DType keys would be a Python __hash__ call each: ints).
        key = ("fill", type(value), value, dtype._enum, dims) if _shareable(value) else None
        index, dims_attrs, value_attrs, fill_attrs = _shared_attrs(key, _fill_attrs, value, dtype, dims)
        dims_t = g._create_op(
            "Const", ops.NO_INPUTS, dims_attrs, [index], "shape_as_tensor", _CONST,
            output_shapes=[shape_of((len(dims),))],
        )._outputs[0]
        value_t = g._create_op(
            "Const", ops.NO_INPUTS, value_attrs, [dtype], "Const", _CONST, output_shapes=[_SCALAR_SHAPE]
        )._outputs[0]
        return g._create_op(
            "Fill", (dims_t, value_t), fill_attrs, [dtype], scope or "Fill", _FILL, output_shapes=[static]
        )._outputs[0]


def _shareable(value: Any) -> bool:
    """Can attrs made from ``value`` be shared by key: hashable and equal to itself (not NaN)?"""
    return type(value) in (bool, int, float, bytes) and value == value


def _full_key(value: Any, dtype: dtypes.DType, dims: tuple) -> tuple | None:
    return ("full", type(value), value, dtype._enum, dims) if _shareable(value) else None


def _fill_attrs(value: Any, dtype: dtypes.DType, dims: tuple) -> tuple:
    """(index dtype, attrs of the dims Const, of the value Const, of the Fill) for a Fill of ``dims``."""
    index = dtypes.int32 if max(dims, default=0) < 2**31 else dtypes.int64
    fill_attrs = {"index_type": index, "T": dtype}
    return index, _dims_const_attrs(dims, index), _scalar_const_attrs(value, dtype), fill_attrs


def _static_shape(shape: Any) -> TensorShape | None:
    """``shape`` as a fully defined TensorShape (interned: see shape_of), else None."""
    if type(shape) in (list, tuple) and all(type(d) is int and d >= 0 for d in shape):
        return shape_of(tuple(shape))  # the usual zeros([4]): no TensorShape built per call
    try:
        static = as_shape(shape)
    except (TypeError, ValueError):
        return None
    return static if static.is_fully_defined() else None


# Attr dicts (with their read-only arrays) shared by the ops zeros()/ones() make, by what they hold: a
# model's Variable(zeros(shape)) per layer made these three ops' attrs (dicts, scalar and shape arrays) a
# tenth of its graph's memory. Sharing is safe: an op's attrs are never mutated (Operation._attrs) and Const
# values are read-only. Bounded, since shapes come from user code.
_SHARED_ATTRS: dict[tuple, dict[str, Any]] = {}
_MAX_SHARED_ATTRS = 256
_SCALAR_SHAPE = shape_of(())


def _shared_attrs(key: tuple | None, make: Any, *args: Any) -> Any:
    """``make(*args)``, shared by ``key`` (None: not shareable, made anew)."""
    attrs = _SHARED_ATTRS.get(key) if key is not None else None
    if attrs is None:
        attrs = make(*args)
        if key is not None and len(_SHARED_ATTRS) < _MAX_SHARED_ATTRS:
            _SHARED_ATTRS[key] = attrs
    return attrs


def _scalar_const_attrs(value: Any, dtype: dtypes.DType) -> dict[str, Any]:
    """``{"value": as_numpy(value, dtype) (read-only), "dtype": dtype}``, shared for Python scalars."""
    key = ("scalar", type(value), value, dtype._enum) if _shareable(value) else None
    return _shared_attrs(key, _make_scalar_const_attrs, value, dtype)


def _make_scalar_const_attrs(value: Any, dtype: dtypes.DType) -> dict[str, Any]:
    arr = constant_op.as_numpy(value, dtype)
    arr.setflags(write=False)
    return {"value": arr, "dtype": dtype}


def _full_const_attrs(value: Any, dtype: dtypes.DType, dims: tuple) -> dict[str, Any]:
    value_attrs = _scalar_const_attrs(value, dtype)
    arr = value_attrs["value"]
    n = int(np.prod(dims)) if dims else 1
    full = arr.reshape(dims) if n == 1 else constant_op._broadcast_scalar(arr, dims)
    full.setflags(write=False)
    return {"value": full, "dtype": value_attrs["dtype"]}


def _dims_const_attrs(dims: tuple, index: dtypes.DType) -> dict[str, Any]:
    dims_arr = np.array(dims, dtype=index.as_numpy_dtype)
    dims_arr.setflags(write=False)
    return {"value": dims_arr, "dtype": index}


def zeros(shape: Any, dtype: Any = dtypes.float32, name: str | None = None) -> ops.Tensor:
    dt = dtypes.as_dtype(dtype)
    zero = False if dt is dtypes.bool_ else b"" if dt is dtypes.string else 0  # DTypes are singletons
    return _filled(zero, shape, dt, name, "zeros")


def ones(shape: Any, dtype: Any = dtypes.float32, name: str | None = None) -> ops.Tensor:
    dt = dtypes.as_dtype(dtype)
    return _filled(True if dt is dtypes.bool_ else 1, shape, dt, name, "ones")


def stack(values: Any, axis: int = 0, name: str = "stack") -> ops.Tensor:
    return apply_op("Pack", values=list(values), axis=axis, name=name)._outputs[0]


def reshape(tensor: Any, shape: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("Reshape", tensor=tensor, shape=shape, name=name)._outputs[0]


def shape(input: Any, name: str | None = None, out_type: Any = dtypes.int32) -> ops.Tensor:  # noqa: A002
    return apply_op("Shape", input=input, out_type=out_type, name=name)._outputs[0]


def squeeze(input: Any, axis: Any = None, name: str | None = None) -> ops.Tensor:  # noqa: A002
    axis = [] if axis is None else [axis] if isinstance(axis, int) else list(axis)
    return apply_op("Squeeze", input=input, squeeze_dims=axis, name=name)._outputs[0]


def gather(params: Any, indices: Any, axis: Any = 0, name: str | None = None) -> ops.Tensor:
    return apply_op("GatherV2", params=params, indices=indices, axis=axis, name=name)._outputs[0]


def where(condition: Any, x: Any = None, y: Any = None, name: str | None = None) -> ops.Tensor:
    """TF1 ``where``: indices of true elements (``Where``), or elementwise choice (``Select``)."""
    if x is None and y is None:
        return apply_op("Where", input=condition, name=name)._outputs[0]
    if x is None or y is None:
        raise ValueError("x and y must both be given, or neither")
    return apply_op("Select", condition=condition, t=x, e=y, name=name)._outputs[0]


def boolean_mask(tensor: Any, mask: Any, name: str = "boolean_mask") -> ops.Tensor:
    """The elements of ``tensor`` (along its first dimension) where the 1-D ``mask`` is true."""
    with ops.name_scope(name, values=[tensor, mask]):
        tensor = ops.convert_to_tensor(tensor, name="tensor")
        mask = ops.convert_to_tensor(mask, name="mask")
        if mask.shape.rank not in (None, 1):
            raise ValueError(f"boolean_mask supports 1-D masks, got shape {mask.shape}")
        indices = squeeze(where(mask), axis=[1])
        return gather(tensor, indices, axis=0)


def _autopack(value: Any, dtype: Any = None, name: str | None = None, as_ref: bool = False) -> Any:
    """Lists holding tensors become a ``Pack`` of their (converted) elements, as in TF."""
    if not _has_tensor(value):
        return NotImplemented
    with ops.name_scope(name or "packed", values=_flat_tensors(value)) as scope:
        parts = [ops.convert_to_tensor(v, dtype=dtype) for v in value]
        return stack(parts, name=scope)


def _flat_tensors(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat_tensors(v)]
    return [value] if _has_tensor(value) else []


def _has_tensor(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    return isinstance(value, ops.Tensor) or hasattr(value, "_as_graph_element")


ops.register_tensor_conversion_function((list, tuple), _autopack, priority=99)


# --- kernels and shapes ---------------------------------------------------------------------------


@register_kernel("Placeholder")
def _placeholder(ctx: Any) -> list:
    shape = ctx.attr("shape")
    shown = (
        "<unknown>"
        if shape.rank is None
        else "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
    )
    raise errors.InvalidArgumentError(
        None,
        None,
        f"You must feed a value for placeholder tensor '{ctx.op.name}' "
        f"with dtype {ctx.attr('dtype').name} and shape {shown}",
    )


@register_shape_fn("Placeholder")
def _placeholder_shape(op: ops.Operation) -> list:
    return [op._attrs["shape"]]


@register_kernel("PlaceholderWithDefault")
def _placeholder_with_default(ctx: Any, x: Any) -> list:
    if not ctx.attr("shape").is_compatible_with(np.shape(x)):
        raise errors.InvalidArgumentError(
            None,
            None,
            f"The default value of {ctx.op.name} has shape "
            f"{np.shape(x)}, not compatible with {ctx.attr('shape')}",
        )
    return [x]


@register_shape_fn("PlaceholderWithDefault")
def _placeholder_with_default_shape(op: ops.Operation) -> list:
    declared = op._attrs["shape"]
    if not declared.is_compatible_with(op._inputs[0]._shape):
        raise ValueError(
            f"PlaceholderWithDefault {op.name}: default of shape {op._inputs[0]._shape} is not "
            f"compatible with shape {declared}"
        )
    return [declared]


register_kernel("Identity")(lambda ctx, x: [x])
register_shape_fn("Identity")(common_shapes.unchanged)


@register_kernel("Fill", output_buffers=True)
def _fill(ctx: Any, dims: Any, value: Any) -> list:
    value = np.asarray(value)
    if value.ndim != 0:
        raise errors.InvalidArgumentError(None, None, f"value must be a scalar, got shape {value.shape}")
    dims = np.asarray(dims)
    if dims.ndim != 1:
        raise errors.InvalidArgumentError(None, None, f"dims must be a vector, got shape {dims.shape}")
    if (dims < 0).any():
        raise errors.InvalidArgumentError(None, None, f"dims must be non-negative, got {dims.tolist()}")
    shape = tuple(dims.tolist())
    # A Fill that only initializes a variable (zeros/ones initializers) fills the variable's own buffer,
    # or hands its new array to the still-uninitialized variable: initializing 10,000 variables then
    # holds the payload once, not a second time in arrays the Assigns would copy and drop.
    buf = ctx.output_buffer(0)
    if buf is not None and buf.shape == shape and buf.dtype == value.dtype:
        buf.fill(value)
        return [buf]
    out = np.full(shape, value, dtype=value.dtype)
    target = ctx.output_target(0)
    if target is not None:
        target.adopt(out)
    return [out]


@register_shape_fn("Fill")
def _fill_shape(op: ops.Operation) -> list:
    dims = tensor_util.constant_value(op._inputs[0])
    if dims is not None:
        return [TensorShape([int(d) for d in dims.reshape(-1)])]
    n = op._inputs[0]._shape
    return [unknown_shape(n[0] if n.rank == 1 else None)]


@register_kernel("Pack")
def _pack(ctx: Any, *values: Any) -> list:
    return [np.stack([np.asarray(v) for v in values], axis=ctx.attr("axis"))]


@register_shape_fn("Pack")
def _pack_shape(op: ops.Operation) -> list:
    shape = op._inputs[0]._shape
    for t in op._inputs[1:]:
        shape = shape.merge_with(t._shape)
    if shape.rank is None:
        return [unknown_shape()]
    dims = shape.as_list()
    axis = op._attrs["axis"]
    if axis < 0:
        axis += len(dims) + 1
    if not 0 <= axis <= len(dims):
        raise ValueError(f"axis {op._attrs['axis']} is out of range for packing tensors of rank {len(dims)}")
    return [TensorShape(dims[:axis] + [len(op._inputs)] + dims[axis:])]


@register_kernel("Reshape")
def _reshape(ctx: Any, x: Any, shape: Any) -> list:
    return [np.reshape(x, tuple(np.asarray(shape).reshape(-1).tolist()))]


@register_shape_fn("Reshape")
def _reshape_shape(op: ops.Operation) -> list:
    target = tensor_util.constant_value(op._inputs[1])
    if target is None:
        return [unknown_shape()]
    dims = [int(d) for d in target.reshape(-1)]
    n = op._inputs[0]._shape.num_elements()
    if -1 in dims and n is not None:
        known = int(np.prod([d for d in dims if d != -1]))
        dims = [n // known if d == -1 and known else d for d in dims]
    return [TensorShape([None if d == -1 else d for d in dims])]


@register_kernel("Shape")
def _shape(ctx: Any, x: Any) -> list:
    return [np.array(np.shape(x), dtype=ctx.attr("out_type").as_numpy_dtype)]


@register_shape_fn("Shape")
def _shape_shape(op: ops.Operation) -> list:
    return [TensorShape([op._inputs[0]._shape.rank])]


@register_kernel("Squeeze")
def _squeeze(ctx: Any, x: Any) -> list:
    dims = ctx.attr("squeeze_dims")
    return [np.squeeze(x, axis=tuple(dims)) if dims else np.squeeze(x)]


@register_shape_fn("Squeeze")
def _squeeze_shape(op: ops.Operation) -> list:
    shape = op._inputs[0]._shape
    if shape.rank is None:
        return [unknown_shape()]
    dims = shape.as_list()
    axes = {a % len(dims) for a in op._attrs["squeeze_dims"]} if dims else set()
    if axes:
        for a in axes:
            if dims[a] not in (1, None):
                raise ValueError(f"Can not squeeze dim[{a}], expected a dimension of 1, got {dims[a]}")
        return [TensorShape([d for i, d in enumerate(dims) if i not in axes])]
    if None in dims:
        return [unknown_shape()]
    return [TensorShape([d for d in dims if d != 1])]


@register_kernel("Where")
def _where(ctx: Any, x: Any) -> list:
    return [np.argwhere(np.asarray(x)).astype(np.int64)]


@register_shape_fn("Where")
def _where_shape(op: ops.Operation) -> list:
    return [TensorShape([None, op._inputs[0]._shape.rank])]


@register_kernel("GatherV2")
def _gather_v2(ctx: Any, params: Any, indices: Any, axis: Any) -> list:
    if ctx.attr("batch_dims") != 0:
        raise errors.UnimplementedError(None, None, "GatherV2 with batch_dims != 0 is not supported")
    return [np.take(params, indices, axis=int(axis))]


@register_shape_fn("GatherV2")
def _gather_v2_shape(op: ops.Operation) -> list:
    params, indices = op._inputs[0]._shape, op._inputs[1]._shape
    axis = tensor_util.constant_value(op._inputs[2])
    if params.rank is None or indices.rank is None or axis is None:
        return [unknown_shape()]
    a = int(axis) % max(params.rank, 1)
    dims = params.as_list()
    return [TensorShape(dims[:a] + indices.as_list() + dims[a + 1 :])]


@register_kernel("Select")
def _select(ctx: Any, cond: Any, t: Any, e: Any) -> list:
    cond, t, e = np.asarray(cond), np.asarray(t), np.asarray(e)
    if t.shape != e.shape:
        raise errors.InvalidArgumentError(
            None, None, f"'then' and 'else' must have the same size, got {t.shape} and {e.shape}"
        )
    if cond.ndim == 1 and t.ndim > 1:  # a vector condition picks whole rows
        cond = cond.reshape((-1,) + (1,) * (t.ndim - 1))
    elif cond.shape != t.shape and cond.ndim != 0:
        raise errors.InvalidArgumentError(
            None, None, f"condition of shape {cond.shape} does not match {t.shape}"
        )
    return [np.where(cond, t, e)]


@register_shape_fn("Select")
def _select_shape(op: ops.Operation) -> list:
    return [op._inputs[1]._shape.merge_with(op._inputs[2]._shape)]


_CONST = op_registry.get("Const")
_FILL = op_registry.get("Fill")
