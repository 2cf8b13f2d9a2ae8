"""Ref-variable ops: ``VariableV2`` (the storage) and ``Assign``/``AssignAdd``/``AssignSub`` writing it."""

from __future__ import annotations

from typing import Any

import numpy as np

from saverkit import dtypes, errors
from saverkit.framework import op_registry, ops
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_shape_fn
from saverkit.framework.tensor_shape import TensorShape, as_shape, scalar
from saverkit.framework.variable_store import Ref

# --- builders -------------------------------------------------------------------------------------


def variable_op_v2(
    shape: Any, dtype: Any, name: str = "Variable", container: str = "", shared_name: str = ""
) -> ops.Tensor:
    """A ``VariableV2`` op; its output is a ref tensor (dtype ``<T>_ref``) naming the storage."""
    dtype = dtypes.as_dtype(dtype).base_dtype
    shape = as_shape(shape)
    g = ops.get_default_graph()
    if container or shared_name:
        attrs = {
            "shape": shape, "dtype": dtype, "container": _bytes(container), "shared_name": _bytes(shared_name)
        }
        op = g._create_op(
            "VariableV2", ops.NO_INPUTS, attrs, [dtype._as_ref], name or "Variable", _VARIABLE_V2,
            output_shapes=[shape],
        )
        return op._outputs[0]
    return _variable(g, shape, dtype, name or "Variable")


def _variable(g: ops.Graph, shape: TensorShape, dtype: dtypes.DType, name: str) -> ops.Tensor:
    """``variable_op_v2(shape, dtype, name)`` in ``g``, ``dtype`` a base DType and ``shape`` a TensorShape
    (what a Variable has at hand): variables are the one op graphs hold by the ten thousand."""
    attrs = _variable_attrs(shape, dtype)
    op = g._create_op(
        "VariableV2", ops.NO_INPUTS, attrs, [dtype._as_ref], name, _VARIABLE_V2,
        output_shapes=[attrs["shape"]],
    )
    return op._outputs[0]


_VARIABLE_ATTRS: dict[tuple, dict[str, Any]] = {}


def _bytes(s: str | bytes) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else s


def _variable_attrs(shape: TensorShape, dtype: dtypes.DType) -> dict[str, Any]:
    """The attrs of ``variable_op_v2(shape, dtype)`` (a base DType), shared by variables of one shape and
    dtype (never mutated: Operation._attrs)."""
    key = (shape._dims, dtype._enum)  # ints: DType.__hash__ is a Python call
    attrs = _VARIABLE_ATTRS.get(key)
    if attrs is None:
        attrs = {"shape": shape, "dtype": dtype, "container": b"", "shared_name": b""}
        if len(_VARIABLE_ATTRS) < 1000:
            _VARIABLE_ATTRS[key] = attrs
    return attrs


def _assign_attrs(dtype: dtypes.DType, validate_shape: bool) -> dict[str, Any]:
    """The attrs of a variable's initializer (``dtype`` its base dtype), shared."""
    # Shared by (dtype, bool validate_shape): any other validate_shape value is stored as given.
    key = (dtype._enum, validate_shape) if type(validate_shape) is bool else None
    attrs = _ASSIGN_ATTRS.get(key)
    if attrs is None:
        attrs = {"T": dtype, "validate_shape": validate_shape, "use_locking": True}
        if key is not None:
            _ASSIGN_ATTRS[key] = attrs  # two per dtype: a few
    return attrs


def _read_attrs(dtype: dtypes.DType) -> dict[str, Any]:
    """The attrs of a variable's ``read`` Identity (``dtype`` its base dtype), shared."""
    attrs = _READ_ATTRS.get(dtype._enum)
    if attrs is None:  # one per dtype: a few
        attrs = _READ_ATTRS[dtype._enum] = {"T": dtype}
    return attrs


def _assign_to_variable(ref: ops.Tensor, value: ops.Tensor, validate_shape: bool) -> ops.Operation:
    """``assign(ref, value)`` for a Variable's initializer: both already tensors of the same dtype."""
    ref_dtype = ref._dtype
    value_dtype = value._dtype
    attrs = _assign_attrs(ref_dtype.base_dtype, validate_shape)
    dtype = attrs["T"]
    if value_dtype is not dtype and value_dtype.base_dtype is not dtype:  # DTypes are singletons
        value_dtype = value_dtype.base_dtype
        raise TypeError(
            f"Input 'value' of 'Assign' Op has type {value_dtype.name} that does not match "
            f"type {dtype.name} of argument 'ref'."
        )
    # The value's shape when not validated or equal to the variable's (see _assign_shape), else the shape
    # function decides.
    shape = value._shape if not validate_shape or ref._shape._dims == value._shape._dims else None
    # Lives with its variable, like every op writing a ref.
    return ref._op._graph._create_op(
        "Assign", (ref, value), attrs, [ref_dtype], "Assign", _ASSIGN, colocate_with=(ref._op,),
        output_shapes=None if shape is None else [shape],
    )


def _snapshot(ref: ops.Tensor) -> ops.Tensor:
    """The ``<var>/read`` Identity of a Variable, colocated with it."""
    attrs = _read_attrs(ref._dtype.base_dtype)
    dtype = attrs["T"]
    op = ref._op._graph._create_op(
        "Identity", (ref,), attrs, [dtype], "read", _IDENTITY, colocate_with=(ref._op,),
        output_shapes=[ref._shape],
    )
    return op._outputs[0]


# The attrs of a variable's Assign and read, by its dtype (and validate_shape), shared: ops colocated with
# the variable get a copy with their "_class" added (Graph._create_op), never these dicts.
_ASSIGN_ATTRS: dict[tuple, dict[str, Any]] = {}
_READ_ATTRS: dict[int, dict[str, Any]] = {}


def assign(
    ref: Any,
    value: Any,
    validate_shape: bool | None = None,
    use_locking: bool | None = None,
    name: str | None = None,
) -> ops.Tensor:
    """Store ``value`` in the variable ``ref``; the result is the ref, holding the new value once run."""
    kwargs = {}
    if validate_shape is not None:
        kwargs["validate_shape"] = validate_shape
    if use_locking is not None:
        kwargs["use_locking"] = use_locking
    return apply_op("Assign", ref=ref, value=value, name=name, **kwargs)._outputs[0]


def assign_add(ref: Any, value: Any, use_locking: bool | None = None, name: str | None = None) -> ops.Tensor:
    kwargs = {} if use_locking is None else {"use_locking": use_locking}
    return apply_op("AssignAdd", ref=ref, value=value, name=name, **kwargs)._outputs[0]


def assign_sub(ref: Any, value: Any, use_locking: bool | None = None, name: str | None = None) -> ops.Tensor:
    kwargs = {} if use_locking is None else {"use_locking": use_locking}
    return apply_op("AssignSub", ref=ref, value=value, name=name, **kwargs)._outputs[0]


def is_variable_initialized(ref: Any, name: str | None = None) -> ops.Tensor:
    """A bool scalar: has ``ref`` been assigned in this session?"""
    return apply_op("IsVariableInitialized", ref=ref, name=name)._outputs[0]


_VARIABLE_V2 = op_registry.get("VariableV2")
_ASSIGN = op_registry.get("Assign")
_IDENTITY = op_registry.get("Identity")


# --- kernels and shapes ---------------------------------------------------------------------------


def _as_ref(ctx: Any, ref: Any) -> Ref:
    if type(ref) is not Ref:
        raise errors.InvalidArgumentError(
            None,
            None,
            f"{ctx.op.type} needs a variable for input 'ref', got a plain value (was a ref tensor fed?)",
        )
    return ref


@register_kernel("VariableV2", hoist=True)
def _variable_v2(ctx: Any) -> list:
    return [ctx.variable_ref()]


@register_shape_fn("VariableV2")
def _variable_v2_shape(op: ops.Operation) -> list:
    return [op._attrs["shape"]]


@register_kernel("Assign")
def _assign(ctx: Any, ref: Any, value: Any) -> list:
    ref = _as_ref(ctx, ref)
    ref.assign(value, ctx.op._attrs["validate_shape"])
    return [ref]


@register_shape_fn("Assign")
def _assign_shape(op: ops.Operation) -> list:
    ref, value = op._inputs[0]._shape, op._inputs[1]._shape
    if not op._attrs["validate_shape"] or ref._dims == value._dims:  # equal: what merge_with returns
        return [value]
    if not ref.is_compatible_with(value):
        raise ValueError(f"Assign {op.name}: shapes must be equal, but are {ref} and {value}")
    return [ref.merge_with(value)]


@register_kernel("AssignAdd")
def _assign_add(ctx: Any, ref: Any, value: Any) -> list:
    ref = _as_ref(ctx, ref)
    ref.update(value, np.add)
    return [ref]


@register_kernel("AssignSub")
def _assign_sub(ctx: Any, ref: Any, value: Any) -> list:
    ref = _as_ref(ctx, ref)
    ref.update(value, np.subtract)
    return [ref]


def _update_shape(op: ops.Operation) -> list:
    ref, value = op._inputs[0]._shape, op._inputs[1]._shape
    if not ref.is_compatible_with(value):
        raise ValueError(f"{op.type} {op.name}: shapes must be equal, but are {ref} and {value}")
    return [ref.merge_with(value)]


register_shape_fn("AssignAdd")(_update_shape)
register_shape_fn("AssignSub")(_update_shape)


@register_kernel("IsVariableInitialized")
def _is_variable_initialized(ctx: Any, ref: Any) -> list:
    return [np.array(ref.is_initialized() if type(ref) is Ref else True)]


register_shape_fn("IsVariableInitialized")(lambda op: [scalar()])
