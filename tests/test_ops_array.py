"""Array ops: placeholders, identity, zeros/ones/fill, stack, reshape, shape, squeeze, gather, where."""

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


def run(fetches, feed=None):
    with sk.Session() as sess:
        return sess.run(fetches, feed)


def test_placeholder_shapes(graph):
    assert sk.placeholder(sk.float32).shape.rank is None
    assert sk.placeholder(sk.int64, [None, 2]).shape.as_list() == [None, 2]
    p = sk.placeholder(sk.string, [], name="p")
    assert p.op.node_def.attr["shape"].shape.dim == []
    assert not p.op.node_def.attr["shape"].shape.unknown_rank


def test_placeholder_with_default_checks_its_default(graph):
    with pytest.raises(ValueError, match="not compatible"):
        sk.placeholder_with_default([1, 2, 3], [2])
    p = sk.placeholder_with_default([1, 2], [None])
    assert p.shape.as_list() == [None]
    assert p.op.inputs[0].op.name == "PlaceholderWithDefault_1/input"  # TF's naming of converted inputs


def test_identity_of_ref_reads_the_value(graph):
    v = sk.Variable([1, 2], name="v")
    i = sk.identity(v)
    assert i.dtype == sk.int32  # not a ref
    with sk.Session() as sess:
        sess.run(v.initializer)
        np.testing.assert_array_equal(sess.run(i), [1, 2])


def test_zeros_and_ones_small_are_constants(graph):
    z = sk.zeros([2, 3])
    o = sk.ones([2], sk.int32, name="one")
    b = sk.zeros([2], sk.bool)
    s = sk.zeros([1], sk.string)
    assert z.op.type == "Const" and z.op.name == "zeros" and z.dtype == sk.float32
    assert o.op.name == "one"
    np.testing.assert_array_equal(run(z), np.zeros((2, 3)))
    np.testing.assert_array_equal(run(o), [1, 1])
    assert run(b).tolist() == [False, False]
    assert run(s).tolist() == [b""]


def test_zeros_large_is_a_fill(graph):
    z = sk.zeros([100, 100], sk.float16)
    assert z.op.type == "Fill" and z.op.name == "zeros"
    assert [t.op.name for t in z.op.inputs] == ["zeros/shape_as_tensor", "zeros/Const"]
    assert z.shape.as_list() == [100, 100]
    out = run(z)
    assert out.shape == (100, 100) and out.dtype == np.float16 and not out.any()


def test_zeros_with_a_dynamic_shape(graph):
    n = sk.placeholder(sk.int32, [])
    z = sk.zeros([n, 2])
    assert z.shape.as_list() == [None, 2] or z.shape.rank == 2
    assert run(z, {n: 3}).shape == (3, 2)


def test_fill(graph):
    f = sk.fill([2, 2], 5.0)
    assert f.shape.as_list() == [2, 2]
    np.testing.assert_array_equal(run(f), [[5, 5], [5, 5]])
    dims = sk.placeholder(sk.int32, [None])
    with pytest.raises(errors.InvalidArgumentError, match="non-negative"):
        run(sk.fill(dims, 1), {dims: [-1]})


def test_stack_reshape_shape_squeeze(graph):
    a, b = sk.constant([1, 2]), sk.constant([3, 4])
    s = sk.stack([a, b], axis=1)
    assert s.shape.as_list() == [2, 2]
    r = sk.reshape(s, [-1])
    assert r.shape.as_list() == [4]
    sq = sk.squeeze(sk.reshape(s, [1, 4, 1]))
    assert sq.shape.as_list() == [4]
    sq1 = sk.squeeze(sk.reshape(s, [1, 4, 1]), axis=[2])
    assert sq1.shape.as_list() == [1, 4]
    sh = sk.shape(s)
    assert sh.shape.as_list() == [2]
    out = run([s, r, sq, sq1, sh])
    np.testing.assert_array_equal(out[0], [[1, 3], [2, 4]])
    np.testing.assert_array_equal(out[1], [1, 3, 2, 4])
    np.testing.assert_array_equal(out[2], [1, 3, 2, 4])
    assert out[3].shape == (1, 4)
    np.testing.assert_array_equal(out[4], [2, 2])
    with pytest.raises(ValueError, match="squeeze"):
        sk.squeeze(s, axis=[0])


def test_gather_where_boolean_mask(graph):
    params = sk.constant([b"a", b"b", b"c"])
    g = sk.gather(params, [2, 0])
    assert g.shape.as_list() == [2]
    w = sk.where([True, False, True])
    assert w.shape.as_list() == [None, 1] and w.dtype == sk.int64
    m = sk.boolean_mask(params, [False, True, True])
    sel = sk.where([True, False], [1, 2], [10, 20])
    out = run([g, w, m, sel])
    assert out[0].tolist() == [b"c", b"a"]
    assert out[1].tolist() == [[0], [2]]
    assert out[2].tolist() == [b"b", b"c"]
    assert out[3].tolist() == [1, 20]
    bad = sk.gather(params, sk.placeholder(sk.int32, [None], name="i"))
    with pytest.raises(errors.InvalidArgumentError):
        run(bad, {"i:0": [5]})


def test_select_with_a_vector_condition_picks_rows(graph):
    t = sk.constant([[1, 2], [3, 4]])
    e = sk.constant([[10, 20], [30, 40]])
    assert run(sk.where([False, True], t, e)).tolist() == [[10, 20], [3, 4]]
