"""Resource-variable ops (``VarHandleOp``, ``ReadVariableOp``, ``AssignVariableOp``...), so graphs written
by TensorFlow 2 / ``tf.compat.v1`` with resource variables (what TF's Saver meta graphs hold today) run
in a saverkit Session. Reads are snapshots: an assign never overwrites a value read earlier in a run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saverkit import errors
from saverkit.framework import common_shapes, ops, tensor_util
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_shape_fn
from saverkit.framework.tensor_shape import TensorShape, as_shape, scalar, unknown_shape
from saverkit.framework.variable_store import Ref, resource_key


class ResourceHandle:
    """The value of a ``resource`` tensor: names a variable in the session's store."""

    __slots__ = ("ref",)

    def __init__(self, ref: Ref) -> None:
        self.ref = ref

    def __repr__(self) -> str:
        return f"<ResourceHandle {self.ref.name} {self.ref.dtype.name}{list(self.ref.shape.dims or [])}>"


# --- builders (TF's gen_resource_variable_ops names) ----------------------------------------------------


def var_handle_op(
    dtype: Any, shape: Any, container: str = "", shared_name: str = "", name: str | None = None
) -> ops.Tensor:
    return apply_op(
        "VarHandleOp",
        dtype=dtype,
        shape=as_shape(shape),
        container=container,
        shared_name=shared_name,
        name=name,
    )._outputs[0]


def read_variable_op(resource: Any, dtype: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("ReadVariableOp", resource=resource, dtype=dtype, name=name)._outputs[0]


def assign_variable_op(
    resource: Any, value: Any, validate_shape: bool = False, name: str | None = None
) -> ops.Operation:
    return apply_op(
        "AssignVariableOp", resource=resource, value=value, validate_shape=validate_shape, name=name
    )


def var_is_initialized_op(resource: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("VarIsInitializedOp", resource=resource, name=name)._outputs[0]


# --- kernels -------------------------------------------------------------------------------------------


def _handle(ctx: Any, h: Any) -> Ref:
    if type(h) is not ResourceHandle:
        raise errors.InvalidArgumentError(None, None, f"{ctx.op.type} needs a resource handle, got {type(h)}")
    ref = h.ref
    want = ctx.op._attrs.get("dtype")
    if want is not None and want.base_dtype != ref.dtype:
        raise errors.InvalidArgumentError(
            None, None, f"Trying to access variable {ref.name} of dtype {ref.dtype.name} as {want.name}"
        )
    return ref


@register_kernel("VarHandleOp", hoist=True)
def _var_handle_op(ctx: Any) -> list:
    if ctx._ref is None:
        op = ctx.op
        key = resource_key(op)
        ctx._ref = ctx.variables.ref(key, key[-1], op._attrs["dtype"], op._attrs["shape"])
    return [ResourceHandle(ctx._ref)]


@register_kernel("ReadVariableOp")
def _read_variable_op(ctx: Any, h: Any) -> list:
    ref = _handle(ctx, h)
    if not ref.is_initialized():
        raise errors.FailedPreconditionError(
            None,
            None,
            f"Could not find variable {ref.name}. In TF1 graphs this means the variable is uninitialized.",
        )
    return [ref.value()]


@register_kernel("AssignVariableOp")
def _assign_variable_op(ctx: Any, h: Any, value: Any) -> list:
    _handle(ctx, h).assign(value, ctx.attr("validate_shape"), copy_on_write=True)
    return []


@register_kernel("AssignAddVariableOp")
def _assign_add_variable_op(ctx: Any, h: Any, value: Any) -> list:
    _handle(ctx, h).update(value, np.add, copy_on_write=True)
    return []


@register_kernel("AssignSubVariableOp")
def _assign_sub_variable_op(ctx: Any, h: Any, value: Any) -> list:
    _handle(ctx, h).update(value, np.subtract, copy_on_write=True)
    return []


@register_kernel("VarIsInitializedOp")
def _var_is_initialized_op(ctx: Any, h: Any) -> list:
    return [np.array(h.ref.is_initialized())]


@register_kernel("DisableCopyOnRead")
def _disable_copy_on_read(ctx: Any, h: Any) -> list:
    return []  # a hint about TF's buffer sharing; reads here never copy anyway


@register_kernel("Slice")
def _slice(ctx: Any, x: Any, begin: Any, size: Any) -> list:
    x = np.asarray(x)
    begin, size = np.asarray(begin).reshape(-1), np.asarray(size).reshape(-1)
    if len(begin) != x.ndim or len(size) != x.ndim:
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Slice of a rank-{x.ndim} tensor needs {x.ndim} begin "
            f"and size values, got {len(begin)} and {len(size)}",
        )
    index = []
    for d, (b, n) in enumerate(zip(begin.tolist(), size.tolist(), strict=True)):
        end = x.shape[d] if n == -1 else b + n
        if not 0 <= b <= end <= x.shape[d]:
            raise errors.InvalidArgumentError(
                None, None, f"Slice [{b}, {end}) is out of bounds for dimension {d} of size {x.shape[d]}"
            )
        index.append(slice(b, end))
    return [x[tuple(index)]]


register_shape_fn("VarHandleOp")(common_shapes.scalar_output)
register_shape_fn("ReadVariableOp")(lambda op: [unknown_shape()])
register_shape_fn("AssignVariableOp")(common_shapes.no_outputs)
register_shape_fn("AssignAddVariableOp")(common_shapes.no_outputs)
register_shape_fn("AssignSubVariableOp")(common_shapes.no_outputs)
register_shape_fn("DisableCopyOnRead")(common_shapes.no_outputs)
register_shape_fn("VarIsInitializedOp")(lambda op: [scalar()])


@register_shape_fn("Slice")
def _slice_shape(op: ops.Operation) -> list:
    size = tensor_util.constant_value(op._inputs[2])
    shape = op._inputs[0]._shape
    if size is None or shape.rank is None:
        return [unknown_shape(shape.rank)]
    return [TensorShape([shape[i] if s == -1 else int(s) for i, s in enumerate(size.reshape(-1).tolist())])]
