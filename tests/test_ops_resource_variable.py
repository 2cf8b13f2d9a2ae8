"""Resource-variable ops (what TF-written graphs use): handles, reads as snapshots, assigns, Slice."""

import weakref

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit.framework import resource_variable_ops as rv
from saverkit.framework.op_def_library import apply_op


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


def test_handle_assign_read_update(graph):
    h = rv.var_handle_op(sk.float32, [2], shared_name="v", name="v")
    assert h.dtype == sk.resource and h.shape.as_list() == []
    init = rv.assign_variable_op(h, [1.0, 2.0])
    read = rv.read_variable_op(h, sk.float32)
    add = apply_op("AssignAddVariableOp", resource=h, value=sk.constant([1.0, 1.0]))
    sub = apply_op("AssignSubVariableOp", resource=h, value=sk.constant([0.5, 0.5]))
    with sk.Session() as sess:
        assert not sess.run(rv.var_is_initialized_op(h))
        with pytest.raises(errors.FailedPreconditionError, match="Could not find variable v"):
            sess.run(read)
        sess.run(init)
        np.testing.assert_array_equal(sess.run(read), [1, 2])
        sess.run(add)
        sess.run(sub)
        np.testing.assert_array_equal(sess.run(read), [1.5, 2.5])


def test_reads_are_snapshots_even_when_assigned_later_in_the_run(graph):
    h = rv.var_handle_op(sk.float32, [2], name="v")
    init = rv.assign_variable_op(h, [1.0, 1.0])
    before = rv.read_variable_op(h, sk.float32)
    with sk.control_dependencies([before]):
        overwrite = rv.assign_variable_op(h, [9.0, 9.0])
    with sk.control_dependencies([overwrite]):
        after = rv.read_variable_op(h, sk.float32)
    with sk.Session() as sess:
        sess.run(init)
        b, a = sess.run([before, after])
    np.testing.assert_array_equal(b, [1, 1])
    np.testing.assert_array_equal(a, [9, 9])


def test_assign_reuses_the_buffer_when_nothing_else_holds_it(graph):
    h = rv.var_handle_op(sk.float32, [3], name="v")
    p = sk.placeholder(sk.float32, [3])
    assign = rv.assign_variable_op(h, p)
    with sk.Session() as sess:
        sess.run(assign, {p: [1, 2, 3]})
        buf = weakref.ref(sess._variables.get(("resource", b"", "v")))  # a strong reference would share it
        sess.run(assign, {p: [4, 5, 6]})
        assert sess._variables.get(("resource", b"", "v")) is buf()
        np.testing.assert_array_equal(buf(), [4, 5, 6])


def test_dtype_mismatch_is_rejected(graph):
    h = rv.var_handle_op(sk.float32, [], name="v")
    init = rv.assign_variable_op(h, 1.0)
    as_int = rv.read_variable_op(h, sk.int32)
    with sk.Session() as sess:
        sess.run(init)
        with pytest.raises(errors.InvalidArgumentError, match="as int32"):
            sess.run(as_int)


def test_slice(graph):
    x = sk.constant(np.arange(12).reshape(3, 4))
    s = apply_op("Slice", input=x, begin=[1, 0], size=[-1, 2]).outputs[0]
    assert s.shape.as_list() == [None, 2] or s.shape.as_list() == [3, 2]
    bad = apply_op("Slice", input=x, begin=[2, 0], size=[5, 1]).outputs[0]
    with sk.Session() as sess:
        np.testing.assert_array_equal(sess.run(s), [[4, 5], [8, 9]])
        with pytest.raises(errors.InvalidArgumentError, match="out of bounds"):
            sess.run(bad)
