"""What a big graph, its Saver and its initializer run hold per variable (issue 6: peak RSS of a save/restore
of 10,000 variables must stay within the payload + 64 MiB, so the graph layer's per-variable memory counts).

Bounds are per variable, measured with tracemalloc, with margin: the code before these bounds were set held
~5,760 B (graph + Saver) and ~2,620 B (initializer run) per variable; it now holds ~4,290 B and ~1,400 B."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import saverkit as sk
from saverkit.framework import executor

N = 2000
SHAPE = (1100,)  # over 1000 elements: zeros() makes a Fill of two Consts, as for the benchmark's W2


def _build(n: int = N):
    g = sk.Graph()
    with g.as_default():
        vs = [sk.Variable(sk.zeros(SHAPE, dtype=sk.float32), name=f"layer_{i}/kernel") for i in range(n)]
        saver = sk.train.Saver(vs)
    return g, vs, saver


def test_graph_and_saver_memory_per_variable():
    _build(50)  # module-level caches (shared attrs, op registry lookups) filled outside the measurement
    gc.collect()
    tracemalloc.start()
    try:
        g, vs, saver = _build()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(g.get_operations()) == 7 * N + 9
    assert held / N < 4800, f"{held / N:.0f} bytes per variable"


def test_initializer_run_memory_per_variable():
    g, vs, _ = _build()
    with sk.Session(graph=g) as sess:
        gc.collect()
        tracemalloc.start()
        try:
            sess.run([v.initializer for v in vs])
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - N * int(np.prod(SHAPE)) * 4  # minus the values
        finally:
            tracemalloc.stop()
        assert sess.run(vs[-1]).tolist() == [0.0] * SHAPE[0]
    assert held / N < 2000, f"{held / N:.0f} bytes per variable"


def test_zeros_ops_share_their_attrs_and_keep_them_read_only():
    with sk.Graph().as_default() as g:
        a = sk.zeros(SHAPE, name="a")
        b = sk.zeros(SHAPE, name="b")
        small_a, small_b = sk.zeros((2, 3)), sk.ones((2, 3))
        c = sk.zeros(SHAPE, dtype=sk.int32, name="c")
    fill_a, fill_b = a.op, b.op
    assert fill_a._attrs is fill_b._attrs
    for i in range(2):
        assert fill_a.inputs[i].op._attrs is fill_b.inputs[i].op._attrs
    assert c.op.inputs[1].op._attrs is not fill_a.inputs[1].op._attrs  # another dtype, another value
    assert c.op.inputs[1].op.get_attr("dtype") == sk.int32
    value = fill_a.inputs[1].op._get_attr_value("value")
    with pytest.raises(ValueError):
        value[...] = 1
    assert small_a.op._get_attr_value("value").tolist() == [[0.0] * 3] * 2
    assert small_b.op._get_attr_value("value").tolist() == [[1.0] * 3] * 2
    # A shared attrs dict is replaced, never edited: the other op keeps its value.
    fill_a._set_attr("T", sk.float64)
    assert fill_b.get_attr("T") == sk.float32 and fill_a.get_attr("T") == sk.float64
    assert [op.name for op in g.get_operations()][:3] == ["a/shape_as_tensor", "a/Const", "a"]


def test_consumers_in_creation_order_for_any_count():
    with sk.Graph().as_default():
        x = sk.constant(1.0, name="x")
        assert x.consumers() == []
        ys = []
        for i in range(4):
            ys.append(sk.identity(x, name=f"y{i}"))
            assert [op.name for op in x.consumers()] == [f"y{j}" for j in range(i + 1)]
        listed = x.consumers()
        listed.clear()  # a copy: the graph's own record is unchanged
        assert len(x.consumers()) == 4
        assert ys[0].consumers() == []


def test_plan_template_does_not_keep_its_pruning_map():
    g, vs, _ = _build(20)
    template = executor.template_for(g, [], [v.initializer for v in vs], [])
    assert not hasattr(template, "deps")
    assert all(type(it.in_slots) is tuple and type(it.deref) is tuple for it in template.items)
    # Each VariableV2, and the two Consts every zeros() of that shape shares (one slot for each pair).
    assert len(template.hoisted) == 20 + 2
    fills = [it for it in template.items if it.op.type == "Fill"]
    assert len(fills) == 20 and len({it.in_slots for it in fills}) == 1


def test_consts_sharing_attrs_share_a_slot_and_still_give_their_values():
    with sk.Graph().as_default() as g:
        a, b = sk.zeros(SHAPE, name="a"), sk.zeros(SHAPE, name="b")
        c = sk.constant(np.float32(0), name="c")  # equal value, own attrs: its own slot
        total = sk.add(a, b, name="total")
        const_a, const_b = a.op.inputs[1], b.op.inputs[1]
        with sk.Session() as sess:
            values = sess.run([total, const_a, const_b, c, a.op.inputs[0]])
            assert values[0].tolist() == [0.0] * SHAPE[0]
            assert [float(v) for v in values[1:4]] == [0.0, 0.0, 0.0] and values[4].tolist() == list(SHAPE)
            # Feeding one of the sharing Consts leaves the other's value alone.
            fed = sess.run([a, b], {const_a: np.float32(2)})
            assert fed[0].tolist() == [2.0] * SHAPE[0] and fed[1].tolist() == [0.0] * SHAPE[0]
    template = executor.template_for(g, [total], [], [])
    assert len(template.hoisted) == 2  # shape and value Consts, each shared by a and b
