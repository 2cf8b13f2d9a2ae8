"""Math ops: add, subtract, multiply, matmul, reductions, square, negative, cast, logical_not."""

from __future__ import annotations

from typing import Any

import numpy as np

from saverkit import dtypes, errors
from saverkit.framework import common_shapes, ops, tensor_util
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_shape_fn
from saverkit.framework.tensor_shape import TensorShape, unknown_shape

# --- builders -------------------------------------------------------------------------------------


def add(x: Any, y: Any, name: str | None = None) -> ops.Tensor:
    """``x + y`` elementwise with broadcasting (op ``AddV2``, as TF emits)."""
    return apply_op("AddV2", x=x, y=y, name=name or "Add")._outputs[0]  # TF names it "Add"


def subtract(x: Any, y: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("Sub", x=x, y=y, name=name)._outputs[0]


def multiply(x: Any, y: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("Mul", x=x, y=y, name=name)._outputs[0]


def matmul(
    a: Any, b: Any, transpose_a: bool = False, transpose_b: bool = False, name: str | None = None
) -> ops.Tensor:
    return apply_op("MatMul", a=a, b=b, transpose_a=transpose_a, transpose_b=transpose_b, name=name)._outputs[
        0
    ]


def square(x: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("Square", x=x, name=name)._outputs[0]


def negative(x: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("Neg", x=x, name=name)._outputs[0]


def cast(x: Any, dtype: Any, name: str | None = None) -> ops.Tensor:
    x = ops.convert_to_tensor(x)
    dtype = dtypes.as_dtype(dtype).base_dtype
    if x.dtype.base_dtype == dtype:
        return x
    return apply_op("Cast", x=x, DstT=dtype, name=name or "Cast")._outputs[0]


def logical_not(x: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("LogicalNot", x=x, name=name)._outputs[0]


def _reduction(
    op_type: str, default_name: str, input_tensor: Any, axis: Any, keepdims: bool, name: str | None
) -> ops.Tensor:
    with ops.name_scope(name, default_name, [input_tensor]) as scope:
        x = ops.convert_to_tensor(input_tensor, name="input")
        if axis is None:
            # All axes: a Const when the rank is known (TF does the same), else range over the rank.
            if x.shape.rank is None:
                raise ValueError(f"{default_name} over all axes needs a tensor of known rank, got {x.shape}")
            axis = list(range(x.shape.rank))
        return apply_op(
            op_type, input=x, reduction_indices=axis, keep_dims=bool(keepdims), name=scope
        )._outputs[0]


def reduce_sum(
    input_tensor: Any, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> ops.Tensor:
    return _reduction("Sum", "Sum", input_tensor, axis, keepdims, name)


def reduce_mean(
    input_tensor: Any, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> ops.Tensor:
    return _reduction("Mean", "Mean", input_tensor, axis, keepdims, name)


# --- kernels and shapes ---------------------------------------------------------------------------


def _binary_kernel(fn: Any) -> Any:
    return lambda ctx, x, y: [fn(x, y)]


for _name, _fn in (("Add", np.add), ("AddV2", np.add), ("Sub", np.subtract), ("Mul", np.multiply)):
    register_kernel(_name)(_binary_kernel(_fn))
    register_shape_fn(_name)(common_shapes.broadcast_all)

register_kernel("Square")(lambda ctx, x: [np.multiply(x, x)])
register_kernel("Neg")(lambda ctx, x: [np.negative(x)])
register_kernel("LogicalNot")(lambda ctx, x: [np.logical_not(x)])
for _name in ("Square", "Neg", "LogicalNot", "Cast"):
    register_shape_fn(_name)(common_shapes.unchanged)


@register_kernel("Cast")
def _cast(ctx: Any, x: Any) -> list:
    src, dst = ctx.attr("SrcT"), ctx.attr("DstT")
    if dtypes.string in (src, dst) and src != dst:
        raise errors.UnimplementedError(None, None, f"Cast {src.name} to {dst.name} is not supported")
    return [np.asarray(x).astype(dst.as_numpy_dtype)]


@register_kernel("MatMul")
def _matmul(ctx: Any, a: Any, b: Any) -> list:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise errors.InvalidArgumentError(
            None, None, f"MatMul needs 2-D inputs, got shapes {a.shape} and {b.shape}"
        )
    if ctx.attr("transpose_a"):
        a = a.T
    if ctx.attr("transpose_b"):
        b = b.T
    if a.shape[1] != b.shape[0]:
        raise errors.InvalidArgumentError(
            None, None, f"Matrix size-incompatible: In[0]: {list(a.shape)}, In[1]: {list(b.shape)}"
        )
    return [np.matmul(a, b)]


@register_shape_fn("MatMul")
def _matmul_shape(op: ops.Operation) -> list:
    a, b = op._inputs[0]._shape.with_rank(2), op._inputs[1]._shape.with_rank(2)
    if a.rank is None or b.rank is None:
        return [unknown_shape(2)]
    m, ka = (a[1], a[0]) if op._attrs["transpose_a"] else (a[0], a[1])
    kb, n = (b[1], b[0]) if op._attrs["transpose_b"] else (b[0], b[1])
    if ka is not None and kb is not None and ka != kb:
        raise ValueError(
            f"Dimensions must be equal, but are {ka} and {kb} for MatMul {op.name} with input shapes {a}, {b}"
        )
    return [TensorShape([m, n])]


def _axes(x: np.ndarray, reduction_indices: Any) -> tuple[int, ...]:
    axes = np.asarray(reduction_indices).reshape(-1).tolist()
    rank = x.ndim
    for a in axes:
        if not -rank <= a < max(rank, 1):
            raise errors.InvalidArgumentError(
                None, None, f"Invalid reduction dimension ({a} for input with {rank} dimension(s)"
            )
    return tuple(sorted({a % rank for a in axes})) if rank else ()


@register_kernel("Sum")
def _sum(ctx: Any, x: Any, reduction_indices: Any) -> list:
    x = np.asarray(x)
    return [np.sum(x, axis=_axes(x, reduction_indices), keepdims=ctx.attr("keep_dims"), dtype=x.dtype)]


@register_kernel("Mean")
def _mean(ctx: Any, x: Any, reduction_indices: Any) -> list:
    x = np.asarray(x)
    axes = _axes(x, reduction_indices)
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    total = np.sum(x, axis=axes, keepdims=ctx.attr("keep_dims"), dtype=x.dtype)
    if x.dtype.kind in "iu":  # integer mean truncates toward zero, as in TF
        if count == 0:
            return [np.zeros_like(total)]
        return [(np.sign(total) * (np.abs(total) // count)).astype(x.dtype)]
    return [np.divide(total, count).astype(x.dtype)]


def _reduction_shape(op: ops.Operation) -> list:
    shape = op._inputs[0]._shape
    axes = tensor_util.constant_value(op._inputs[1])
    keep = op._attrs["keep_dims"]
    if shape.rank is None:
        return [unknown_shape()]
    if axes is None:
        return [unknown_shape(shape.rank) if keep else unknown_shape()]
    rank = shape.rank
    chosen = set()
    for a in axes.reshape(-1).tolist():
        if not -rank <= a < max(rank, 1):
            raise ValueError(f"Invalid reduction dimension {a} for input with {rank} dimensions ({op.name})")
        chosen.add(a % rank if rank else 0)
    dims = shape.as_list()
    if keep:
        return [TensorShape([1 if i in chosen else d for i, d in enumerate(dims)])]
    return [TensorShape([d for i, d in enumerate(dims) if i not in chosen])]


register_shape_fn("Sum")(_reduction_shape)
register_shape_fn("Mean")(_reduction_shape)
