"""The global step: an int64 scalar variable ``global_step`` counting training steps (TF1 semantics)."""

from __future__ import annotations

from typing import Any

from saverkit import dtypes
from saverkit.framework import array_ops, ops
from saverkit.framework.ops import GraphKeys
from saverkit.framework.variables import Variable


def get_global_step(graph: ops.Graph | None = None) -> Any:
    """The global step variable (or tensor) of ``graph``, or None if there is none."""
    graph = graph or ops.get_default_graph()
    steps = graph.get_collection(GraphKeys.GLOBAL_STEP)
    if len(steps) == 1:
        step = steps[0]
    elif not steps:
        try:
            step = graph.get_tensor_by_name("global_step:0")
        except KeyError:
            return None
    else:
        raise TypeError(f"Multiple tensors in global_step collection: {steps}")
    assert_global_step(step)
    return step


def assert_global_step(global_step_tensor: Any) -> None:
    """Raise TypeError unless ``global_step_tensor`` is an integer scalar Variable or Tensor."""
    if not isinstance(global_step_tensor, (Variable, ops.Tensor)):
        raise TypeError(f"Existing 'global_step' must be a Variable or Tensor: {global_step_tensor}.")
    if not global_step_tensor.dtype.base_dtype.is_integer:
        raise TypeError(f"Existing 'global_step' does not have integer type: {global_step_tensor.dtype}")
    shape = global_step_tensor.get_shape()
    if shape.rank != 0 and shape.is_fully_defined():
        raise TypeError(f"Existing 'global_step' is not scalar: {shape}")


def create_global_step(graph: ops.Graph | None = None) -> Variable:
    """Add the ``global_step`` variable (int64 scalar, starting at 0, not trainable) to ``graph``."""
    graph = graph or ops.get_default_graph()
    if get_global_step(graph) is not None:
        raise ValueError("'global_step' already exists.")
    with graph.as_default(), graph.name_scope(None):
        return Variable(
            lambda: array_ops.zeros([], dtypes.int64),
            name=GraphKeys.GLOBAL_STEP,
            trainable=False,
            collections=[GraphKeys.GLOBAL_VARIABLES, GraphKeys.GLOBAL_STEP],
        )


def get_or_create_global_step(graph: ops.Graph | None = None) -> Variable:
    graph = graph or ops.get_default_graph()
    step = get_global_step(graph)
    return step if step is not None else create_global_step(graph)


def global_step(sess: Any, global_step_tensor: Any) -> int:
    """The current value of ``global_step_tensor`` in ``sess``, as an int."""
    return int(sess.run(global_step_tensor))
