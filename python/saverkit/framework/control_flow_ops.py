"""Grouping and sequencing: ``no_op``, ``group``, ``tuple``, ``with_dependencies``."""

from __future__ import annotations

import builtins
from typing import Any

from saverkit.framework import array_ops, common_shapes, ops
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_shape_fn


def no_op(name: str | None = None) -> ops.Operation:
    return apply_op("NoOp", name=name)


def _as_op(x: Any, graph: ops.Graph) -> ops.Operation:
    el = graph.as_graph_element(x)
    return el.op if isinstance(el, ops.Tensor) else el


def group(*inputs: Any, name: str | None = None) -> ops.Operation:
    """An op that runs after all ``inputs`` (ops, tensors or variables) -- one ``NoOp`` per device."""
    flat: list[Any] = []
    for x in inputs:
        flat.extend(x if isinstance(x, (list, builtins.tuple)) else [x])
    if not flat:
        return no_op(name=name)
    g = ops._get_graph_from_inputs(flat)
    with g.as_default(), g.name_scope(name or "group_deps") as scope:
        by_device: dict[str, list[ops.Operation]] = {}
        for x in flat:
            op = _as_op(x, g)
            by_device.setdefault(op.device, []).append(op)
        if len(by_device) == 1:
            ((dev, deps),) = by_device.items()
            return _group_on(g, dev, deps, scope)
        per_device = [_group_on(g, dev, by_device[dev], None) for dev in sorted(by_device)]
        with g.control_dependencies(per_device):
            return no_op(name=scope)


def _group_on(g: ops.Graph, dev: str, deps: list[ops.Operation], name: str | None) -> ops.Operation:
    with g.control_dependencies(deps), g.device(dev or None):
        return no_op(name=name)


def with_dependencies(dependencies: Any, output_tensor: Any, name: str | None = None) -> ops.Tensor:
    """``output_tensor``, computed only after ``dependencies`` have run (an Identity with control inputs)."""
    with ops.name_scope(name, "control_dependency", list(dependencies) + [output_tensor]) as scope:
        with ops.control_dependencies(dependencies):
            output_tensor = ops.convert_to_tensor(output_tensor)
            return array_ops.identity(output_tensor, name=scope)


def tuple(tensors: Any, name: str | None = None, control_inputs: Any = None) -> list:  # noqa: A001
    """The ``tensors``, each available only once all of them (and ``control_inputs``) are computed."""
    with ops.name_scope(name, "tuple", [t for t in tensors if t is not None]):
        g = ops.get_default_graph()
        gating = [_as_op(t, g) for t in tensors if t is not None]
        if control_inputs:
            gating += [_as_op(c, g) for c in control_inputs]
        gating = sorted(set(gating), key=lambda op: op._id)
        if not gating:
            raise ValueError(f"Must have at least one Tensor: {tensors}")
        gate = group(*gating)
        return [None if t is None else with_dependencies([gate], t) for t in tensors]


register_kernel("NoOp")(lambda ctx: [])
register_shape_fn("NoOp")(common_shapes.no_outputs)
