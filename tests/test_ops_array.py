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


# --- zeros/ones in every context ------------------------------------------------------------------


def _filled_scenario(log: list) -> None:
    """zeros/ones of every kind of shape and dtype, in every context the graph knows, recording errors."""

    def attempt(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, RuntimeError) as e:
            log.append((type(e).__name__, str(e)))
            return None

    g = sk.get_default_graph()
    for shape in ([], [1], [0, 3], [4], (2, 3), np.array([5]), sk.TensorShape([2, 2]), [40, 40], [999],
                  [1000], [1, 1, 1]):
        sk.zeros(shape)
        sk.ones(shape)
    for dtype in (sk.bool, sk.string, sk.int64, sk.float16, sk.complex64, sk.bfloat16, sk.uint8):
        sk.zeros([3], dtype=dtype)
        sk.zeros([50, 50], dtype=dtype)
        attempt(sk.ones, [3], dtype=dtype)  # ones of strings fails
    sk.zeros([3_000_000_000], dtype=sk.int8)  # an int64 shape, never materialized
    sk.zeros([2], name="named")
    sk.zeros([2], name="named")  # named_1
    sk.constant(0, name="taken/shape_as_tensor")
    sk.zeros([2000], name="taken")  # its shape_as_tensor becomes shape_as_tensor_1
    attempt(sk.zeros, [2], name="bad name")
    attempt(sk.zeros, [2], name="_underscore")
    attempt(sk.zeros, [2], name="newline\n")
    attempt(sk.zeros, [None, 2])
    attempt(sk.zeros, "not a shape")
    sk.zeros([2], name="")
    with sk.name_scope("outer"):
        sk.zeros([2])
        sk.zeros([2000])
        sk.zeros([2], name="_fine_inside")
        with sk.device("/cpu:0"):
            sk.zeros([2000], name="on_cpu")
        with sk.device(lambda op: "/gpu:0" if op.type == "Fill" else ""):
            sk.zeros([2000], name="device_fn")
        with sk.name_scope("_x/"):
            attempt(sk.zeros, [2])
    c = sk.constant(1.0, name="c")
    with sk.control_dependencies([c]):
        sk.zeros([2000], name="controlled")
    with g.colocate_with(c.op):
        sk.zeros([2], name="colocated")
    sk.zeros(sk.constant([2, 2]), name="dynamic")
    sk.zeros([2], name="slash/")
    g.finalize()
    attempt(sk.zeros, [2], name="after_finalize")
    g._unsafe_unfinalize()
    sk.zeros([2000])


def test_zeros_and_ones_are_a_const_or_a_fill_in_every_context():
    log: list = []
    with sk.Graph().as_default() as g:
        _filled_scenario(log)
    assert len(log) >= 6 and log[-1][0] == "RuntimeError"  # the attempts above failed
    assert any("not a valid" in m for _, m in log)
    for op in g.get_operations():
        if op.type == "Fill":  # 1000 elements and more: a Fill of a shape and a value Const
            dims, value = op.inputs
            assert dims.op.type == value.op.type == "Const" and op.get_attr("T") == value.dtype
            assert dims.op.name.startswith(op.name + "/shape_as_tensor") or op.name == "dynamic"
    assert g.get_operation_by_name("zeros").type == "Const"  # [] : one element
    assert [t.op.type for t in g.get_operation_by_name("named_1").outputs] == ["Const"]
    assert g.get_operation_by_name("taken/shape_as_tensor_1").type == "Const"
    assert g.get_operation_by_name("outer/on_cpu").device == "/device:CPU:0"
    assert g.get_operation_by_name("outer/device_fn").device == "/device:GPU:0"
    assert g.get_operation_by_name("outer/device_fn/Const").device == ""
    assert [c.name for c in g.get_operation_by_name("controlled/shape_as_tensor").control_inputs] == ["c"]
    assert g.get_operation_by_name("colocated").get_attr("_class") == [b"loc:@c"]
    assert g.get_operation_by_name("slash").type == "Const"
    for op in g.get_operations():  # every name is taken: a new op of that name gets a suffix
        assert g.unique_name(op.name, mark_as_used=False) != op.name
    with sk.Session(graph=g) as sess:
        assert sess.run("named:0").tolist() == [0.0, 0.0]
        assert sess.run("outer/zeros_1:0").tolist() == [0.0] * 2000
        assert sess.run("dynamic:0").tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_fast_zeros_values_run(graph):
    z = sk.zeros([2, 3], dtype=sk.int32)
    big = sk.ones([40, 40])
    with sk.Session() as sess:
        zv, bv = sess.run([z, big])
    assert zv.tolist() == [[0, 0, 0], [0, 0, 0]] and zv.dtype == np.int32
    assert bv.shape == (40, 40) and float(bv.sum()) == 1600.0


def _buffer(sess, var):
    from saverkit.framework.variable_store import variable_key

    return sess._variables._values[variable_key(var.op)]


def test_fill_initializer_becomes_the_variable_buffer_and_refills_it(graph):
    # A zeros initializer must not hold the payload twice (a Fill array the Assign copies and drops):
    # the new array becomes the variable's buffer, and re-running the initializer fills it in place.
    import tracemalloc

    v = sk.Variable(sk.zeros([300, 100]), name="v")
    w = sk.Variable(sk.ones([300, 100], sk.int32), name="w")
    big = [sk.Variable(sk.zeros([1 << 20], sk.uint8), name=f"big{i}") for i in range(16)]
    with sk.Session() as sess:
        sess.run([v.initializer, w.initializer])
        tracemalloc.start()
        try:
            sess.run([b.initializer for b in big])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert 16 << 20 <= peak < 20 << 20  # the 16 MiB payload once, not twice
        buf = _buffer(sess, v)
        assert buf.shape == (300, 100) and buf.dtype == np.float32 and not buf.any()
        assert (_buffer(sess, w) == 1).all()
        sess.run(sk.assign(v, np.full((300, 100), 7, np.float32)))
        assert _buffer(sess, v) is buf and (buf == 7).all()
        sess.run(v.initializer)
        assert _buffer(sess, v) is buf and not buf.any()
        np.testing.assert_array_equal(sess.run(v), np.zeros((300, 100), np.float32))


def test_fill_fetched_with_its_initializer_is_not_shared_with_the_variable(graph):
    # Fetching the initial value in the same run: the Fill output has another user, so the variable
    # gets its own copy and writing the variable leaves the fetched array alone.
    v = sk.Variable(sk.zeros([300, 100]), name="v")
    with sk.Session() as sess:
        init, _ = sess.run([v.initial_value, v.initializer])
        sess.run(sk.assign_add(v, np.ones((300, 100), np.float32)))
        assert not init.any() and (sess.run(v) == 1).all()
