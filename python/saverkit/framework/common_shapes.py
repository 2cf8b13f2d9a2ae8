"""Shape functions shared by several ops: ``fn(op) -> [TensorShape per output]``."""

from __future__ import annotations

from typing import Any

from saverkit.framework.tensor_shape import TensorShape, scalar, unknown_shape


def unchanged(op: Any) -> list[TensorShape]:
    return [op._inputs[0]._shape]


def scalar_output(op: Any) -> list[TensorShape]:
    return [scalar()] * len(op._outputs)


def no_outputs(op: Any) -> list[TensorShape]:
    return []


def unknown(op: Any) -> list[TensorShape]:
    return [unknown_shape()] * len(op._outputs)


def broadcast(a: TensorShape, b: TensorShape) -> TensorShape:
    """numpy/TF broadcasting of two static shapes; ValueError if they cannot broadcast."""
    if a.rank is None or b.rank is None:
        return unknown_shape()
    x, y = a.as_list(), b.as_list()
    n = max(len(x), len(y))
    one: list[int | None] = [1]
    x = one * (n - len(x)) + x
    y = one * (n - len(y)) + y
    out = []
    for p, q in zip(x, y, strict=False):
        if p == 1:
            out.append(q)
        elif q == 1:
            out.append(p)
        elif p is None or q is None:
            out.append(p if q is None else q)
        elif p == q:
            out.append(p)
        else:
            raise ValueError(
                f"Dimensions must be equal, but are {p} and {q}: shapes {a} and {b} do not broadcast"
            )
    return TensorShape(out)


def broadcast_all(op: Any) -> list[TensorShape]:
    if not op._inputs:
        return [scalar()]
    shape = op._inputs[0]._shape
    for t in op._inputs[1:]:
        shape = broadcast(shape, t._shape)
    return [shape]
