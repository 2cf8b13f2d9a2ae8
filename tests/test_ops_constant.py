"""constant / convert_to_tensor: TF's dtype inference, shapes, copies, and the Const node's TensorProto."""

import ml_dtypes
import numpy as np
import pytest
import saverkit as sk
from saverkit.framework import tensor_util
from saverkit.protobuf import tensor_pb2


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


@pytest.mark.parametrize(
    "value,dtype",
    [
        (1.5, sk.float32),
        ([1.0, 2], sk.float32),
        (3, sk.int32),
        (2**40, sk.int64),
        (True, sk.bool),
        ("text", sk.string),
        ([b"a", "b"], sk.string),
        (1 + 2j, sk.complex128),
        (np.float64(1.0), sk.float64),
        (np.arange(3, dtype=np.uint16), sk.uint16),
        (np.zeros(2, ml_dtypes.bfloat16), sk.bfloat16),
        ([], sk.float32),
    ],
)
def test_dtype_inference_matches_tf(value, dtype):
    assert sk.constant(value).dtype == dtype


def test_explicit_dtypes_convert_compatible_values():
    assert sk.constant(1, dtype=sk.float32).dtype == sk.float32
    assert sk.constant([1, 2], dtype=sk.int8).dtype == sk.int8
    assert sk.constant(np.array([1.7]), dtype=sk.int32).dtype == sk.int32  # numpy arrays are cast, as TF
    assert sk.constant([], dtype=sk.string).shape.as_list() == [0]
    with pytest.raises(TypeError, match="Expected int32"):
        sk.constant(1.5, dtype=sk.int32)
    with pytest.raises(TypeError, match="out of range"):
        sk.constant(300, dtype=sk.uint8)
    with pytest.raises(TypeError):
        sk.constant("x", dtype=sk.float32)
    with pytest.raises(TypeError):
        sk.constant(1.0, dtype=sk.string)
    with pytest.raises(TypeError):
        sk.constant(True, dtype=sk.float32)
    with pytest.raises(TypeError, match="None"):
        sk.constant(None)


def test_shape_argument_reshapes_or_broadcasts():
    with sk.Session() as sess:
        np.testing.assert_array_equal(sess.run(sk.constant(7, shape=[2, 2])), [[7, 7], [7, 7]])
        np.testing.assert_array_equal(sess.run(sk.constant([1, 2, 3, 4], shape=[2, 2])), [[1, 2], [3, 4]])
    with pytest.raises(TypeError, match="cannot fill"):
        sk.constant([1, 2, 3], shape=[2, 2])
    with pytest.raises(TypeError, match="shape"):
        sk.constant([1, 2], shape=[2, 1], verify_shape=True)


def test_constant_copies_its_value():
    value = np.array([1.0, 2.0], np.float32)
    c = sk.constant(value)
    value[0] = 100
    with sk.Session() as sess:
        np.testing.assert_array_equal(sess.run(c), [1.0, 2.0])


def test_strings_keep_nul_bytes():
    c = sk.constant([b"a\x00b", b"\x00"])
    with sk.Session() as sess:
        assert list(sess.run(c)) == [b"a\x00b", b"\x00"]


def test_broadcast_constant_is_stored_once_in_the_graph_def(graph):
    sk.constant(0.0, shape=[1000, 1000], name="big")
    node = graph.as_graph_def().node[0]
    tensor = node.attr["value"].tensor
    assert not tensor.tensor_content and list(tensor.float_val) == [0.0]
    assert [d.size for d in tensor.tensor_shape.dim] == [1000, 1000]


def test_const_node_matches_tf_encoding(graph):
    sk.constant([[1.0, 2.0]], name="a")
    sk.constant(3, name="b")
    a, b = graph.as_graph_def().node
    assert a.attr["value"].tensor.tensor_content == np.array([1.0, 2.0], np.float32).tobytes()
    assert list(b.attr["value"].tensor.int_val) == [3]
    assert b.attr["value"].tensor.HasField("tensor_shape")


def test_convert_to_tensor():
    t = sk.constant(1.0)
    assert sk.convert_to_tensor(t) is t
    assert sk.convert_to_tensor([1, 2]).dtype == sk.int32
    assert sk.convert_to_tensor(1, preferred_dtype=sk.int64).dtype == sk.int64
    assert sk.convert_to_tensor(1.5, preferred_dtype=sk.int64).dtype == sk.float32  # preference not possible
    with pytest.raises(ValueError, match="requested dtype int32"):
        sk.convert_to_tensor(t, dtype=sk.int32)
    with pytest.raises(TypeError):
        sk.convert_to_tensor(object())


def test_lists_with_tensors_are_packed():
    a = sk.constant(1)
    packed = sk.convert_to_tensor([a, 2, 3])
    assert packed.op.type == "Pack" and packed.shape.as_list() == [3]
    with sk.Session() as sess:
        np.testing.assert_array_equal(sess.run(packed), [1, 2, 3])


ALL_DTYPES = [
    sk.float16,
    sk.bfloat16,
    sk.float32,
    sk.float64,
    sk.int8,
    sk.int16,
    sk.int32,
    sk.int64,
    sk.uint8,
    sk.uint16,
    sk.uint32,
    sk.uint64,
    sk.bool,
    sk.complex64,
    sk.complex128,
    sk.string,
    sk.float8_e5m2,
    sk.float8_e4m3fn,
    sk.int4,
    sk.uint4,
    sk.qint8,
    sk.quint8,
    sk.qint32,
]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(), (1,), (2, 3), (0, 4)], ids=str)
def test_tensor_proto_round_trip(dtype, shape):
    n = int(np.prod(shape))
    if dtype == sk.string:
        arr = np.array([bytes([65 + i]) * i for i in range(n)], dtype=object).reshape(shape)
    elif dtype == sk.bool:
        arr = (np.arange(n) % 2 == 0).reshape(shape)
    elif dtype.is_complex:
        arr = (np.arange(n) + 1j * np.arange(n)).astype(dtype.as_numpy_dtype).reshape(shape)
    elif dtype.is_quantized:
        arr = np.arange(n).astype(
            np.int8 if dtype == sk.qint8 else np.uint8 if dtype == sk.quint8 else np.int32
        )
        arr = arr.view(dtype.as_numpy_dtype).reshape(shape)
    else:
        arr = (np.arange(n) % 7).astype(dtype.as_numpy_dtype).reshape(shape)
    proto = tensor_util.make_tensor_proto(arr, dtype)
    assert proto.dtype == dtype.as_datatype_enum
    back = tensor_util.MakeNdarray(proto)
    assert back.shape == shape and back.dtype == np.dtype(dtype.as_numpy_dtype)
    if dtype == sk.string:
        assert back.tolist() == arr.tolist()
    else:
        assert back.tobytes() == arr.tobytes()


def test_make_ndarray_repeats_the_last_value_and_checks_sizes():
    proto = tensor_pb2.TensorProto(dtype=sk.int32.as_datatype_enum, int_val=[1, 2])
    proto.tensor_shape.dim.add(size=4)
    np.testing.assert_array_equal(tensor_util.MakeNdarray(proto), [1, 2, 2, 2])
    proto.tensor_shape.dim[0].size = 1
    with pytest.raises(ValueError, match="holds 2 values"):
        tensor_util.MakeNdarray(proto)
    bad = tensor_util.make_tensor_proto(np.arange(4, dtype=np.float32), sk.float32)
    bad.tensor_shape.dim[0].size = 5
    with pytest.raises(ValueError, match="content bytes"):
        tensor_util.MakeNdarray(bad)


@pytest.mark.parametrize("dtype, field, value, itemsize", [
    (sk.float32, "float_val", 1.5, 4),
    (sk.string, "string_val", b"ab", 8),  # one reference per element, to one bytes object
    (sk.qint8, "int_val", 3, 1),
])
def test_make_ndarray_fills_a_repeated_value_without_temporaries(dtype, field, value, itemsize):
    import tracemalloc

    n = 4 << 20
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    proto.tensor_shape.dim.add(size=n)
    getattr(proto, field).append(value)
    tracemalloc.start()
    try:
        out = tensor_util.MakeNdarray(proto)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum, **{field: [value]})
    one.tensor_shape.dim.add(size=1)
    assert out.shape == (n,) and out[[0, -1]].tolist() == tensor_util.MakeNdarray(one).tolist() * 2
    assert peak < n * itemsize * 1.1 + (1 << 20)  # the result, not two or three copies of it


def test_python_constants_keep_their_array_and_imported_ones_decode_on_use(graph):
    from saverkit.framework import importer

    c = sk.constant(np.arange(3, dtype=np.float32), name="c")
    value = c.op._attrs["value"]
    assert type(value) is np.ndarray and not value.flags.writeable
    with sk.Graph().as_default() as g2:
        importer.import_graph_def(graph.as_graph_def(), name="")
        imported = g2.get_operation_by_name("c")
        assert type(imported._attrs["value"]) is tensor_util.SerializedTensor
        got = tensor_util.constant_value(imported.outputs[0])
        np.testing.assert_array_equal(got, [0.0, 1.0, 2.0])
        assert not got.flags.writeable
        assert tensor_util.constant_value(imported.outputs[0]) is got  # one decoded copy while in use
        assert imported.node_def == c.op.node_def


def test_big_imported_constants_stay_decoded_only_while_in_use(graph):
    import gc

    from saverkit.framework import importer

    sk.constant(np.arange(1 << 16, dtype=np.float32), name="big")  # 256 KiB: above the 64 KiB kept
    with sk.Graph().as_default() as g2:
        importer.import_graph_def(graph.as_graph_def(), name="")
        big = g2.get_tensor_by_name("big:0")
        first = tensor_util.constant_value(big)
        assert tensor_util.constant_value(big) is first  # shared while in use (by every plan, too)
        value = big.op._attrs["value"]
        assert value._array is None  # not kept by the op itself
        del first
        gc.collect()
        assert value._weak() is None  # freed with its last user
        np.testing.assert_array_equal(tensor_util.constant_value(big), np.arange(1 << 16, dtype=np.float32))
