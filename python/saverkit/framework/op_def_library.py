"""Adding an op from its OpDef: convert the inputs, infer type attrs, fill defaults, check constraints.

``apply_op("AddV2", x=a, y=b, name="sum")`` is TensorFlow's ``_apply_op_helper``:
inputs are converted in OpDef order, and once a type attr (``T``) is known from
one input, later Python values are converted to it (so ``add(t_float, 1)`` works).
"""

from __future__ import annotations

from typing import Any

from saverkit.framework import attrs as attrs_lib
from saverkit.framework import op_registry, ops


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _convert(value: Any, dtype: Any, name: str, as_ref: bool, preferred: Any = None) -> ops.Tensor:
    if isinstance(value, ops.Tensor) and not as_ref:
        return value
    return ops.convert_to_tensor(value, dtype=dtype, name=name, as_ref=as_ref, preferred_dtype=preferred)


def apply_op(op_type: str, name: str | None = None, **keywords: Any) -> ops.Operation:
    """Add an ``op_type`` op to the graph of its inputs (or the default graph) and return it."""
    info = op_registry.get(op_type)
    if info is None:
        raise ValueError(f"Unknown op type {op_type!r}: saverkit has no OpDef for it.")
    input_values = []
    for arg in info.inputs:
        try:
            v = keywords.pop(arg.name)
        except KeyError:
            raise TypeError(f"No argument for input {arg.name} of '{op_type}' Op") from None
        input_values.append(v)
    flat = [x for v in input_values for x in (v if _is_list(v) else (v,))]
    g = ops._get_graph_from_inputs(flat)
    if g is not ops.get_default_graph():
        with g.as_default():
            return _apply(g, info, name, input_values, keywords)
    return _apply(g, info, name, input_values, keywords)


def _apply(
    g: ops.Graph, info: op_registry.OpInfo, name: str | None, input_values: list[Any], given: dict[str, Any]
) -> ops.Operation:
    op_type = info.name
    scope = name[:-1] if name and name[-1] == "/" else g.unique_name(name or op_type)
    attr_types = info.attr_types
    attrs: dict[str, Any] = {}
    for key, value in given.items():
        t = attr_types.get(key)
        if t is None:
            raise TypeError(f"'{op_type}' Op got an unexpected keyword argument '{key}'")
        attrs[key] = attrs_lib.canonicalize(value, t)
    inferred: set[str] = set()
    inputs: list[ops.Tensor] = []
    with g.op_inputs_scope(scope):  # Python values become Consts named "<op>/<arg>", as in TF
        for arg, value in zip(info.inputs, input_values, strict=False):
            if arg.number_attr or arg.type_list_attr:
                if not _is_list(value):
                    raise TypeError(
                        f"Expected list for '{arg.name}' argument to '{op_type}' Op, not {value!r}."
                    )
                if arg.type_list_attr:
                    want = attrs.get(arg.type_list_attr)
                    ts = [
                        _convert(v, want[i] if want else None, f"{arg.name}_{i}", arg.is_ref)
                        for i, v in enumerate(value)
                    ]
                    _infer(
                        attrs, inferred, arg.type_list_attr, [t.dtype.base_dtype for t in ts], op_type, arg
                    )
                else:
                    _infer(attrs, inferred, arg.number_attr, len(value), op_type, arg)
                    ts = []
                    for i, v in enumerate(value):
                        t = _convert_typed(v, arg, attrs, info, f"{arg.name}_{i}")
                        _infer_type(attrs, inferred, arg, t, op_type)
                        ts.append(t)
                inputs.extend(ts)
            else:
                t = _convert_typed(value, arg, attrs, info, arg.name)
                _infer_type(attrs, inferred, arg, t, op_type)
                inputs.append(t)
    ref_ops = []
    if info.has_ref_inputs:
        flags = info.input_is_ref(attrs)
        names = [a.name for a in info.inputs for _ in a.types(attrs)]
        for t, is_ref, arg_name in zip(inputs, flags, names, strict=False):
            if is_ref:
                if not t.dtype.is_ref_dtype:
                    raise TypeError(
                        f"'{op_type}' Op requires that input '{arg_name}' be a mutable tensor "
                        f"(e.g.: a saverkit.Variable); got {t.name}"
                    )
                ref_ops.append(t._op)
    defaults = info.defaults
    if len(attrs) < len(attr_types):
        for key, default in defaults.items():
            if key not in attrs:
                attrs[key] = list(default) if isinstance(default, list) else default
        for key in attr_types:
            if key not in attrs:
                raise TypeError(f"No argument for attr {key} of '{op_type}' Op")
    for key in info.constrained:
        info.check_attr(key, attrs[key])
    # An op writing a variable lives with it (TF colocates ops with their ref inputs).
    return g._create_op(
        op_type, inputs, attrs, info.output_types(attrs), scope + "/", info, colocate_with=ref_ops
    )


def _convert_typed(
    value: Any, arg: op_registry.ArgSpec, attrs: dict[str, Any], info: op_registry.OpInfo, name: str
) -> ops.Tensor:
    if arg.dtype is not None:
        return _convert(value, arg.dtype, name, arg.is_ref)
    known = attrs.get(arg.type_attr)
    preferred = None
    if known is None:
        preferred = info.defaults.get(arg.type_attr)
    return _convert(value, known, name, arg.is_ref, preferred)


def _infer(attrs: dict, inferred: set, key: str, value: Any, op_type: str, arg: Any) -> None:
    if key in attrs and attrs[key] != value:
        raise TypeError(
            f"Input '{arg.name}' of '{op_type}' Op implies {key}={_show(value)}, which does not "
            f"match {key}={_show(attrs[key])}"
        )
    attrs[key] = value
    inferred.add(key)


def _infer_type(attrs: dict, inferred: set, arg: op_registry.ArgSpec, t: ops.Tensor, op_type: str) -> None:
    base = t.dtype.base_dtype
    if arg.dtype is not None:
        if base != arg.dtype:
            raise TypeError(
                f"Input '{arg.name}' of '{op_type}' Op has type {base.name} that does not match "
                f"expected type of {arg.dtype.name}."
            )
        return
    key = arg.type_attr
    if key in attrs and attrs[key] != base:
        how = "argument" if key in inferred else "attr"
        raise TypeError(
            f"Input '{arg.name}' of '{op_type}' Op has type {base.name} that does not match "
            f"type {attrs[key].name} of {how} '{key}'."
        )
    attrs[key] = base
    inferred.add(key)


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return getattr(v, "name", repr(v))
