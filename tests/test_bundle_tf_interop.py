"""Real TensorFlow reads what saverkit writes; saverkit reproduces what TensorFlow writes, byte for byte."""

import pathlib
import tempfile

import numpy as np
import pytest
from bundle_helpers import files_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saverkit import bundle, dtypes

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


TF_READABLE = [d for d in dtypes._BY_ENUM.values()
               if not d.is_ref_dtype and d.is_numeric and d not in (dtypes.resource, dtypes.variant)]
# Types TF can build constants of (the SaveV2 direction).
TF_CONSTANT = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
               "uint16", "uint32", "uint64", "bool", "complex64", "complex128"]


def _raw(dtype, n, seed):
    """n random elements of `dtype` as bytes: finite floats (so values compare bit-exactly), valid sub-byte
    values, 0/1 bools."""
    if dtype.is_floating or dtype.is_complex:
        return _finite_bytes(dtype, n, seed)
    raw = np.random.default_rng(seed).integers(0, 256, n * dtype.size, dtype=np.uint8)
    if dtype.name in ("int4", "uint4"):
        raw &= 0x0F
    elif dtype.name in ("int2", "uint2"):
        raw &= 0x03
    elif dtype == dtypes.bool_:
        raw &= 1
    return raw


def _finite_bytes(dtype, n, seed):
    rng = np.random.default_rng(seed)
    if dtype.is_complex:
        part = np.float32 if dtype == dtypes.complex64 else np.float64
        return (rng.standard_normal(2 * n) * 3).astype(part).view(np.uint8)
    vals = (rng.standard_normal(n) * 3).astype(np.float32).astype(dtype.np_dtype)
    return vals.view(np.uint8)


def _tf_bytes(value):
    return np.ascontiguousarray(np.asarray(value)).tobytes()


def test_tf_reads_every_dtype_we_write(tmp_path, tf):
    prefix = str(tmp_path / "all")
    names, tensors, given_dtypes = [], [], []
    for i, d in enumerate(TF_READABLE):
        for j, shape in enumerate([(), (0,), (2, 3)]):
            n = int(np.prod(shape))
            raw = _raw(d, n, 10 * i + j)
            names.append(f"{d.name}/{j}")
            tensors.append(raw.view(d.np_dtype).reshape(shape))
            given_dtypes.append(d)
    bundle.write_bundle(prefix, names, tensors, dtypes=given_dtypes)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    tf_dtypes = reader.get_variable_to_dtype_map()
    for name, t, d in zip(names, tensors, given_dtypes, strict=True):
        assert shapes[name] == list(t.shape), name
        assert tf_dtypes[name].as_datatype_enum == d.as_datatype_enum, name
        got = reader.get_tensor(name)
        assert np.asarray(got).shape == t.shape, name
        assert _tf_bytes(got) == t.tobytes(), name


def test_tf_reads_strings_scalars_and_empty_tensors(tmp_path, tf):
    prefix = str(tmp_path / "s")
    values = {
        "mixed": np.array([b"", "h\u00e9llo \u2603".encode(), bytes(range(256)), b"\x00\x00", b"z" * 300],
                          dtype=object),
        "scalar": np.array(b"only", dtype=object),
        "empty": np.array([], dtype=object).reshape(0, 3),
        "mat": np.array([[b"a", b""], [b"\xff", b"x" * 70000]], dtype=object),
        "f_scalar": np.float32(-0.5),
        "i_empty": np.zeros((3, 0), "i8"),
    }
    bundle.write_bundle(prefix, list(values), list(values.values()))
    reader = tf.train.load_checkpoint(prefix)
    for name, v in values.items():
        got = np.asarray(reader.get_tensor(name))
        assert got.shape == v.shape, name
        if v.dtype == object:
            assert got.reshape(-1).tolist() == v.reshape(-1).tolist(), name
        else:
            assert got.tobytes() == v.tobytes() and got.dtype == v.dtype, name


def test_tf_reads_a_three_shard_checkpoint_after_merge(tmp_path, tf):
    rng = np.random.default_rng(3)
    parts, expected = [], {}
    for k in range(3):
        names = [f"dev{k}/a", f"dev{k}/s"]
        values = [rng.standard_normal((64, 33)).astype("f4"), np.array([b"x%d" % k, b""], dtype=object)]
        p = str(tmp_path / "model_temp" / f"part-{k:05d}-of-00003")
        bundle.write_bundle(p, names, values)
        parts.append(p)
        expected.update(zip(names, values, strict=True))
    prefix = str(tmp_path / "model")
    bundle.merge_bundles(parts, prefix)
    assert sorted(files_of(prefix)) == [f".data-0000{k}-of-00003" for k in range(3)] + [".index"]
    reader = tf.train.load_checkpoint(prefix)
    for name, v in expected.items():
        got = np.asarray(reader.get_tensor(name))
        assert got.reshape(-1).tolist() == v.reshape(-1).tolist()


def test_tf_assembles_our_partitioned_slices(tmp_path, tf):
    prefix = str(tmp_path / "p")
    full = np.arange(60, dtype="f4").reshape(10, 6)
    wide = np.arange(45, dtype="i8").reshape(5, 9)
    bundle.write_bundle(prefix, ["emb", "emb", "emb", "wide", "wide"],
                        [full[0:4], full[4:7], full[7:], wide[:, :5], wide[:, 5:]],
                        ["10 6 0,4:0,6", "10 6 4,3:-", "10 6 7,3:-", "5 9 -:0,5", "5 9 -:5,4"])
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_variable_to_shape_map() == {"emb": [10, 6], "wide": [5, 9]}
    np.testing.assert_array_equal(reader.get_tensor("emb"), full)
    np.testing.assert_array_equal(reader.get_tensor("wide"), wide)
    # RestoreV2 of one stored slice.
    got = tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=["emb"], shape_and_slices=["10 6 4,3:-"],
                               dtypes=[tf.float32])[0]
    np.testing.assert_array_equal(got.numpy(), full[4:7])


def test_we_read_tf_slices_written_by_savev2(tmp_path, tf):
    prefix = str(tmp_path / "tfp")
    full = np.arange(40, dtype="f4").reshape(10, 4)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["v", "v", "v"],
                      shape_and_slices=["10 4 0,4:0,4", "10 4 4,3:-", "10 4 7,3:-"],
                      tensors=[tf.constant(full[:4]), tf.constant(full[4:7]), tf.constant(full[7:])])
    np.testing.assert_array_equal(bundle.read_tensors(prefix, ["v"])[0], full)
    out = str(tmp_path / "ours")
    bundle.write_bundle(out, ["v", "v", "v"], [full[:4], full[4:7], full[7:]],
                        ["10 4 0,4:0,4", "10 4 4,3:-", "10 4 7,3:-"])
    assert files_of(out) == files_of(prefix)


names_st = st.lists(
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1,
            max_size=12),
    min_size=1, max_size=6, unique=True)
shape_st = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
strings_st = st.lists(st.binary(max_size=40), min_size=0, max_size=30)


@st.composite
def bundles(draw, dtype_names):
    names = draw(names_st)
    out = []
    for i, _ in enumerate(names):
        dname = draw(st.sampled_from(dtype_names))
        shape = draw(shape_st)
        n = int(np.prod(shape))
        if dname == "string":
            items = draw(st.lists(st.binary(max_size=40), min_size=n, max_size=n))
            value = np.empty(n, dtype=object)
            value[:] = items
            out.append((dtypes.string, value.reshape(shape)))
        else:
            d = dtypes.as_dtype(dname)
            seed = draw(st.integers(0, 2**32 - 1)) + i
            out.append((d, _raw(d, n, seed).view(d.np_dtype).reshape(shape)))
    return names, out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundles([d.name for d in TF_READABLE] + ["string"]))
def test_property_round_trip_through_saverkit_and_tf(tf, case):
    names, items = case
    with tempfile.TemporaryDirectory() as d:
        prefix = str(pathlib.Path(d) / "ckpt")
        bundle.write_bundle(prefix, names, [v for _, v in items], dtypes=[t for t, _ in items])
        ours = bundle.read_tensors(prefix, names, dtypes=[t for t, _ in items])
        reader = tf.train.load_checkpoint(prefix)
        for name, (dt, v), back in zip(names, items, ours, strict=True):
            assert back.shape == v.shape
            # object dtype for strings: np.asarray(b"\x00") would be an 'S1' array, which drops trailing NULs
            tf_value = np.asarray(reader.get_tensor(name), dtype=object if dt == dtypes.string else None)
            assert tf_value.shape == v.shape
            if dt == dtypes.string:
                assert back.reshape(-1).tolist() == v.reshape(-1).tolist()
                assert tf_value.reshape(-1).tolist() == v.reshape(-1).tolist()
            else:
                assert back.tobytes() == v.tobytes()
                assert _tf_bytes(tf_value) == v.tobytes()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundles(TF_CONSTANT + ["string"]))
def test_property_tf_savev2_output_is_reproduced_byte_for_byte(tf, case):
    names, items = case
    with tempfile.TemporaryDirectory() as d:
        theirs = str(pathlib.Path(d) / "tf")
        tf.raw_ops.SaveV2(prefix=theirs, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(v, dtype=tf.as_dtype(t.name)) for t, v in items])
        ours = str(pathlib.Path(d) / "ours")
        bundle.write_bundle(ours, names, [v for _, v in items], dtypes=[t for t, _ in items])
        assert files_of(ours) == files_of(theirs)
        back = bundle.read_tensors(theirs, names)
        for (t, v), b in zip(items, back, strict=True):
            if t == dtypes.string:
                assert b.reshape(-1).tolist() == v.reshape(-1).tolist()
            else:
                assert b.tobytes() == v.tobytes()


@pytest.mark.slow
def test_tensor_over_1_gib_round_trips_through_saverkit_and_tf(tmp_path, tf):
    n = (1 << 30) // 4 + 12_345  # just over 1 GiB of float32
    big = np.arange(n, dtype=np.float32)
    big[::7] *= -1.5
    prefix = str(tmp_path / "big")
    bundle.write_bundle(prefix, ["big", "tail"], [big, np.ones(3, "f4")])
    back = bundle.read_tensors(prefix, ["big"])[0]
    assert np.array_equal(back, big)
    del back
    got = tf.train.load_checkpoint(prefix).get_tensor("big")
    assert np.array_equal(got, big)
