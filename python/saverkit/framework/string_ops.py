"""String ops: ``string_join`` (StringJoin) and ``regex_full_match`` (StaticRegexFullMatch)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from saverkit import errors
from saverkit.framework import common_shapes, ops
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_shape_fn


def string_join(inputs: Any, separator: str = "", name: str | None = None) -> ops.Tensor:
    """Elementwise concatenation of string tensors (scalars broadcast), with ``separator`` between."""
    return apply_op("StringJoin", inputs=list(inputs), separator=separator, name=name).outputs[0]


def regex_full_match(input: Any, pattern: str | bytes, name: str | None = None) -> ops.Tensor:  # noqa: A002
    """Elementwise: does the whole string match ``pattern``? (a constant pattern, as StaticRegexFullMatch)"""
    if not isinstance(pattern, (str, bytes)):
        raise TypeError("regex_full_match supports constant (str/bytes) patterns only")
    return apply_op("StaticRegexFullMatch", input=input, pattern=pattern, name=name).outputs[0]


def _elementwise_strings(inputs: list[Any], what: str) -> tuple[tuple[int, ...], list[Any], list[np.ndarray]]:
    arrays = [np.asarray(x, dtype=object) for x in inputs]
    shapes = {a.shape for a in arrays if a.ndim}
    if len(shapes) > 1:
        raise errors.InvalidArgumentError(None, None, f"{what}: input shapes do not match: {sorted(shapes)}")
    shape = shapes.pop() if shapes else ()
    return shape, [a.reshape(-1) if a.ndim else None for a in arrays], arrays


@register_kernel("StringJoin")
def _string_join(ctx: Any, *inputs: Any) -> list:
    sep = ctx.attr("separator")
    shape, flats, arrays = _elementwise_strings(list(inputs), "StringJoin")
    n = int(np.prod(shape, dtype=np.int64))
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = sep.join(f[i] if f is not None else a[()] for f, a in zip(flats, arrays, strict=False))
    return [out.reshape(shape)]


@register_shape_fn("StringJoin")
def _string_join_shape(op: ops.Operation) -> list:
    return common_shapes.broadcast_all(op)


@register_kernel("StaticRegexFullMatch")
def _static_regex_full_match(ctx: Any, x: Any) -> list:
    rx = re.compile(ctx.attr("pattern"))
    x = np.asarray(x, dtype=object)
    flat = [rx.fullmatch(s) is not None for s in x.reshape(-1)]
    return [np.array(flat, dtype=bool).reshape(x.shape)]


register_shape_fn("StaticRegexFullMatch")(common_shapes.unchanged)
