"""Math ops: add/subtract/multiply/matmul, reductions, square, negative, cast, logical_not, operators."""

import ml_dtypes
import numpy as np
import pytest
import saverkit as sk


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


def run(fetches, feed=None):
    with sk.Session() as sess:
        return sess.run(fetches, feed)


def test_binary_ops_use_tf_op_types(graph):
    a = sk.constant([1.0, 2.0])
    assert (a + a).op.name == "add" and (a - a).op.name == "sub" and (a * a).op.name == "mul"
    assert sk.add(a, a).op.type == "AddV2"
    assert sk.subtract(a, a).op.type == "Sub"
    m = sk.multiply(a, a)
    assert m.op.type == "Mul" and m.op.name == "Mul_1"  # "mul" is taken, case-insensitively


def test_arithmetic_and_broadcasting(graph):
    a = sk.constant([[1.0, 2.0], [3.0, 4.0]])
    b = sk.constant([10.0, 20.0])
    out = run([a + b, a - b, a * b, 2.0 * a, 1.0 - a, -a, sk.square(b)])
    np.testing.assert_array_equal(out[0], [[11, 22], [13, 24]])
    np.testing.assert_array_equal(out[1], [[-9, -18], [-7, -16]])
    np.testing.assert_array_equal(out[2], [[10, 40], [30, 80]])
    np.testing.assert_array_equal(out[3], [[2, 4], [6, 8]])
    np.testing.assert_array_equal(out[4], [[0, -1], [-2, -3]])
    np.testing.assert_array_equal(out[5], [[-1, -2], [-3, -4]])
    np.testing.assert_array_equal(out[6], [100, 400])
    assert all(o.dtype == np.float32 for o in out)


def test_python_values_take_the_tensor_dtype_but_mismatched_tensors_fail(graph):
    i = sk.constant([1, 2], dtype=sk.int64)
    assert (i + 1).dtype == sk.int64
    assert sk.add(i, 1).dtype == sk.int64  # once T is known from x, y converts to it
    with pytest.raises(TypeError, match="does not match"):
        sk.add(i, sk.constant([1.0, 2.0]))
    with pytest.raises(TypeError, match="not in the list of allowed values"):
        sk.matmul(sk.constant([[True]]), sk.constant([[True]]))


def test_matmul(graph):
    a = sk.constant(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = sk.constant(np.arange(6, dtype=np.float32).reshape(3, 2))
    out = run([sk.matmul(a, b), sk.matmul(a, a, transpose_b=True), sk.matmul(a, a, transpose_a=True), a @ b])
    np.testing.assert_array_equal(out[0], np.arange(6).reshape(2, 3) @ np.arange(6).reshape(3, 2))
    assert out[1].shape == (2, 2) and out[2].shape == (3, 3)
    np.testing.assert_array_equal(out[3], out[0])


def test_reductions(graph):
    x = sk.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    s_all = sk.reduce_sum(x)
    s0 = sk.reduce_sum(x, axis=0)
    s1k = sk.reduce_sum(x, axis=1, keepdims=True)
    m = sk.reduce_mean(x)
    m_neg = sk.reduce_mean(x, axis=-1)
    assert (s_all.shape.as_list(), s0.shape.as_list(), s1k.shape.as_list()) == ([], [3], [2, 1])
    assert s_all.op.type == "Sum" and m.op.type == "Mean"
    out = run([s_all, s0, s1k, m, m_neg])
    assert out[0] == 21 and out[3] == 3.5
    np.testing.assert_array_equal(out[1], [5, 7, 9])
    np.testing.assert_array_equal(out[2], [[6], [15]])
    np.testing.assert_array_equal(out[4], [2, 5])
    with pytest.raises(ValueError, match="Invalid reduction dimension"):
        sk.reduce_sum(x, axis=2)


def test_integer_mean_truncates_toward_zero_and_empty_mean_is_nan(graph):
    assert run(sk.reduce_mean(sk.constant([-3, -4]))) == -3
    assert run(sk.reduce_mean(sk.constant([1, 2]))) == 1
    empty = sk.placeholder(sk.float32, [None])
    assert np.isnan(run(sk.reduce_mean(empty), {empty: np.zeros(0, np.float32)}))


def test_overflow_and_nan_are_values_not_errors(graph):
    big = sk.constant(np.array([2**31 - 1], np.int32))
    assert run(big + 1)[0] == -(2**31)
    z = sk.constant(0.0)
    assert np.isnan(run(sk.multiply(z, float("inf"))))


def test_cast_and_logical_not(graph):
    c = sk.cast(sk.constant([1.7, -1.2]), sk.int32)
    b = sk.cast(sk.constant([1.5]), sk.bfloat16)
    same = sk.constant([1.0])
    assert sk.cast(same, sk.float32) is same
    out = run([c, b, sk.logical_not([True, False])])
    np.testing.assert_array_equal(out[0], [1, -1])
    assert out[1].dtype == ml_dtypes.bfloat16
    assert out[2].tolist() == [False, True]


def test_bfloat16_arithmetic(graph):
    a = sk.constant(np.array([1.5, 2.0], ml_dtypes.bfloat16))
    out = run(a * a)
    assert out.dtype == ml_dtypes.bfloat16 and out.astype(np.float32).tolist() == [2.25, 4.0]
