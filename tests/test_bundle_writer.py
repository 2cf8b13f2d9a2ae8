"""write_bundle: TF's entry encoding, data order, strings, slices, sharding, atomicity, rewriting TF files."""

import os
import pathlib
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
from bundle_helpers import FIXTURES, entry_of, files_of, read_index, rewrite_single_shard
from saverkit import _core, bundle, dtypes, errors
from saverkit.protobuf import tensor_bundle_pb2


def _data(prefix, shard=0, num_shards=1):
    return pathlib.Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}").read_bytes()


def test_entries_are_byte_identical_to_protobufs_serialisation(tmp_path):
    # Our hand-coded encoder must equal protobuf's proto3 output for every entry.
    prefix = str(tmp_path / "m")
    names = ["f32", "scalar", "empty", "neg", "s", "big"]
    tensors = [np.arange(6, dtype="f4").reshape(2, 3), np.float64(2.5), np.zeros((2, 0, 3), "i4"),
               np.array([-1], "i8"), np.array([b"x", b""], dtype=object), np.zeros(300, "u1")]
    bundle.write_bundle(prefix, names, tensors)
    kvs = read_index(prefix)
    assert kvs[0] == (b"", bytes.fromhex("08011a020801"))
    for key, value in kvs[1:]:
        e = tensor_bundle_pb2.BundleEntryProto.FromString(value)
        assert e.SerializeToString() == value, key


def test_spec_entry_example_bytes(tmp_path):
    prefix = str(tmp_path / "m")
    # 77 bytes of padding tensor first so "f32" lands at offset 77.
    bundle.write_bundle(prefix, ["pad", "f32"], [np.zeros(77, "u1"), np.arange(6, dtype="f4").reshape(2, 3)])
    value = dict(read_index(prefix))[b"f32"]
    crc = _core.crc32c_mask(_core.crc32c(np.arange(6, dtype="<f4").tobytes()))
    expected = bytes.fromhex("0801120812020802120208032" + "04d2818") + b"\x35" + crc.to_bytes(4, "little")
    assert value == expected


def test_scalar_keeps_an_empty_shape(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["s"], [np.array(3.0, "f4")])
    assert dict(read_index(prefix))[b"s"].startswith(bytes.fromhex("08011200"))
    assert bundle.read_tensors(prefix, ["s"])[0].shape == ()


def test_the_engine_takes_a_shape_from_the_buffer_when_given_none_and_checks_it_against_the_dtype(tmp_path):
    prefix = str(tmp_path / "m")
    values = [np.arange(24, dtype="f4").reshape(2, 3, 4), np.array(7, "i8"), np.zeros((0, 5), "f8")]
    _core.write_bundle(prefix, [b"a", b"b", b"c"], ["", "", ""], [1, 9, 2], [None] * 3, values, 1, 0, False)
    got = bundle.read_tensors(prefix, ["a", "b", "c"])
    assert [g.shape for g in got] == [(2, 3, 4), (), (0, 5)]
    assert np.array_equal(got[0], values[0]) and got[1] == 7
    # Any buffer works, including exporters whose shape lives in the view itself (bytes).
    _core.write_bundle(prefix + "b", [b"x"], [""], [4], [None], [b"abcdef"], 1, 0, False)
    assert bundle.read_tensors(prefix + "b", ["x"])[0].tolist() == list(b"abcdef")
    # A byte view with no shape given is 16 one-byte elements, which the 2-byte DT_HALF cannot hold.
    raw = np.ones(8, "f2").view("u1")
    with pytest.raises(errors.InvalidArgumentError, match=r"'h'.*shape \[16\]"):
        _core.write_bundle(prefix + "2", [b"h"], [""], [19], [None], [raw], 1, 0, False)


def test_empty_tensors_point_at_end_of_data_with_crc_of_nothing(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a", "e", "es", "z"],
                        [np.ones(3, "f4"), np.zeros((0,), "f4"), np.array([], dtype=object),
                         np.ones(2, "i1")])
    e = entry_of(prefix, b"e")
    assert (e.offset, e.size, e.crc32c) == (12, 0, 0xA282EAD8)
    es = entry_of(prefix, b"es")
    assert (es.offset, es.size, es.crc32c) == (12, 4, 0x640CC1F6)
    assert entry_of(prefix, b"z").offset == 16
    assert _data(prefix)[12:16] == bytes.fromhex("d8ea82a2")


def test_payloads_follow_add_order_and_index_is_sorted(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["zeta", "alpha", "mid"], [np.array([1], "u1"), np.array([2], "u1"),
                                                           np.array([3], "u1")])
    assert _data(prefix) == b"\x01\x02\x03"
    assert [k for k, _ in read_index(prefix)] == [b"", b"alpha", b"mid", b"zeta"]


def test_string_payload_layout_and_crc_match_the_spec(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["s", "h"], [np.array([b"ab", b""], dtype=object), np.array(b"hello world",
                                                                                             dtype=object)])
    data = _data(prefix)
    assert data[:8] == bytes.fromhex("020078270b346162")
    assert data[8:] == bytes.fromhex("0bdba2b4e4") + b"hello world"
    assert entry_of(prefix, b"s").crc32c == 0x4DB08891


def test_strings_accept_str_lists_and_unicode(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["u", "l"], [np.array(["h\u00e9", ""], dtype=object), ["a", b"\x00\xff"]])
    u, lst = bundle.read_tensors(prefix, ["u", "l"])
    assert u.tolist() == ["h\u00e9".encode(), b""]
    assert lst.tolist() == [b"a", b"\x00\xff"]


def test_long_strings_use_multibyte_varints(tmp_path):
    prefix = str(tmp_path / "m")
    items = [b"", b"a", b"x" * 200, bytes(range(256)) * 100]
    bundle.write_bundle(prefix, ["s"], [np.array(items, dtype=object).reshape(2, 2)])
    assert _data(prefix)[:7] == bytes.fromhex("0001c80180c801")
    assert bundle.read_tensors(prefix, ["s"])[0].reshape(-1).tolist() == items


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _reference_string_payload(items: list[bytes]) -> tuple[bytes, int]:
    """Spec 5.3 in plain Python: (payload, unmasked entry CRC)."""
    fixed = b"".join(len(x).to_bytes(4 if len(x) <= 0xFFFFFFFF else 8, "little") for x in items)
    length_crc = _core.crc32c(fixed)
    masked = _core.crc32c_mask(length_crc).to_bytes(4, "little")
    data = b"".join(items)
    crc = _core.crc32c(data, _core.crc32c(masked, length_crc))
    return b"".join(_varint(len(x)) for x in items) + masked + data, crc


def test_string_payloads_match_a_reference_encoder_across_write_paths(tmp_path):
    # Elements are gathered into large writes in runs of about 1 MiB per task, elements of 64 KiB and
    # more are written as they are, and numeric payloads between string ones go out in their own
    # batches: every combination must still put each byte where the format says.
    rng = np.random.default_rng(5)
    sizes = [0, 1, 200, 65535, 65536, 70_000, 300_000, 0, 3]
    big = [rng.bytes(int(n)) for n in rng.integers(0, 2000, 3000)] + [rng.bytes(n) for n in sizes]
    big[7] = b"\x00" * 1000  # embedded NULs
    tensors = {
        "a_num": np.arange(5, dtype="f4"),
        "b_str": np.array(big, dtype=object),
        "c_num": np.arange(7, dtype="i8"),
        "d_num": np.arange(3, dtype="u1"),
        "e_str": np.array([b"", b"", b""], dtype=object),
        "f_str": np.array([rng.bytes(400_000), b"x"], dtype=object).reshape(2, 1),
        "g_num": np.zeros(0, "f4"),
        "h_str": np.array([], dtype=object),
        "i_num": np.arange(2, dtype="f8"),
    }
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, list(tensors), list(tensors.values()))
    expected, crcs = b"", {}
    for name, t in tensors.items():
        if t.dtype == object:
            payload, crc = _reference_string_payload(list(t.reshape(-1)))
        else:
            payload = t.tobytes()
            crc = _core.crc32c(payload)
        e = entry_of(prefix, name.encode())
        assert (e.offset, e.size) == (len(expected), len(payload)), name
        crcs[name] = crc
        expected += payload
    assert _data(prefix) == expected
    for name, crc in crcs.items():
        assert entry_of(prefix, name.encode()).crc32c == _core.crc32c_mask(crc), name
    back = bundle.read_tensors(prefix, list(tensors))
    for (name, t), b in zip(tensors.items(), back, strict=True):
        assert b.shape == t.shape and b.reshape(-1).tolist() == t.reshape(-1).tolist(), name


_CHURN_DURING_SAVES = """
import sys, tempfile, threading
import numpy as np
from saverkit import bundle

n, size, tensors = 2000, 20000, int(sys.argv[2])
arrs = [np.empty(n // tensors, dtype=object) for _ in range(tensors)]
stop = threading.Event()

def churn():
    junk = []
    while not stop.is_set():
        for arr in arrs:
            for i in range(len(arr)):
                arr[i] = b"new"  # the old element loses its last reference...
                junk.append(b"\\xfe" * size)  # ...and its memory goes to this
        junk.clear()

t = threading.Thread(target=churn)
t.start()
d = tempfile.mkdtemp(dir=sys.argv[1])
try:
    for k in range(10):
        for arr in arrs:
            arr[:] = [bytes([i % 251]) * size for i in range(len(arr))]  # held by the array alone
        names = [f"s{t}" for t in range(tensors)]
        bundle.write_bundle(f"{d}/m{k}", names, arrs)
        for got in bundle.read_tensors(f"{d}/m{k}", names):
            bad = [i for i, x in enumerate(got.tolist()) if x not in (bytes([i % 251]) * size, b"new")]
            assert not bad, f"save {k}: elements {bad[:5]} hold bytes they never had"
finally:
    stop.set()
    t.join()
"""


@pytest.mark.parametrize("tensors", [1, 4])
def test_string_elements_replaced_during_a_save_are_not_freed_under_the_writer(tmp_path, tensors):
    # The engine writes string elements with the GIL released: it must hold them, so that another
    # thread replacing (and so freeing) the array's elements cannot leave it reading freed memory
    # (it crashed, or saved junk, before). In a subprocess: the failure mode is a segfault. Several
    # tensors: each is being written while the next one's elements are gathered, and must stay held
    # until its writes are done.
    r = subprocess.run([sys.executable, "-c", _CHURN_DURING_SAVES, str(tmp_path), str(tensors)],
                       capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_save_rejected_after_string_tensors_started_writing_leaves_nothing(tmp_path):
    # String tensors are written from the moment they are added: when a later tensor is rejected, the
    # writer must finish those writes before the elements are released and the files removed (freeing
    # the elements first was a use-after-free, visible under ASan) and leave no file behind.
    prefix = str(tmp_path / "m")
    first = np.empty(20000, dtype=object)
    first[:] = [bytes([i % 251]) * (i % 300) for i in range(20000)]  # held by the array alone
    expected = first.tolist()
    bad = np.array([b"ok", 7], dtype=object)
    with pytest.raises(errors.InvalidArgumentError, match="element of type int"):
        bundle.write_bundle(prefix, ["a", "b", "c"], [first, first.copy(), bad])
    assert os.listdir(tmp_path) == []
    assert first.tolist() == expected
    with pytest.raises(errors.InvalidArgumentError, match="duplicate"):
        bundle.write_bundle(prefix, ["a", "a"], [first, first])
    assert os.listdir(tmp_path) == []


ALL_NUMERIC = [d for d in dtypes._BY_ENUM.values()
               if not d.is_ref_dtype and d.is_numeric and d not in (dtypes.resource, dtypes.variant)]


@pytest.mark.parametrize("dtype", ALL_NUMERIC, ids=lambda d: d.name)
def test_every_numeric_dtype_round_trips(tmp_path, dtype):
    prefix = str(tmp_path / "m")
    raw = np.random.default_rng(dtype.as_datatype_enum).integers(0, 256, 24 * dtype.size, dtype=np.uint8)
    if dtype.name in ("int4", "uint4", "float4_e2m1fn"):
        raw &= 0x0F
    if dtype.name in ("int2", "uint2"):
        raw &= 0x03
    if dtype == dtypes.bool_:
        raw &= 1
    value = raw.view(dtype.np_dtype).reshape(2, 3, 4)
    bundle.write_bundle(prefix, ["t"], [value], dtypes=[dtype])
    assert entry_of(prefix, b"t").dtype == dtype.as_datatype_enum
    assert _data(prefix) == raw.tobytes()
    back = bundle.read_tensors(prefix, ["t"])[0]
    assert back.dtype == dtype.np_dtype and back.shape == (2, 3, 4)
    assert back.tobytes() == raw.tobytes()


def test_dtype_is_inferred_from_numpy(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["b", "h", "c"], [np.ones(2, ml_dtypes.bfloat16), np.ones(2, np.float16),
                                                  np.ones(2, np.complex64)])
    assert [entry_of(prefix, k).dtype for k in (b"b", b"h", b"c")] == [14, 19, 8]


def test_quantized_override_reinterprets_plain_integers(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["q"], [np.array([-1, 2], "i1")], dtypes=[dtypes.qint8])
    back = bundle.read_tensors(prefix, ["q"], dtypes=[dtypes.qint8])[0]
    assert back.dtype == dtypes.qint8.np_dtype and back.view(np.int8).tolist() == [-1, 2]


def test_dtype_override_mismatch_is_an_error(tmp_path):
    with pytest.raises(errors.InvalidArgumentError, match="float64"):
        bundle.write_bundle(str(tmp_path / "m"), ["x"], [np.ones(2, "f8")], dtypes=[dtypes.float32])


def test_non_contiguous_arrays_are_written_in_c_order(tmp_path):
    prefix = str(tmp_path / "m")
    a = np.arange(12, dtype="i4").reshape(3, 4)
    bundle.write_bundle(prefix, ["t", "f"], [a.T, np.asfortranarray(a)])
    t, f = bundle.read_tensors(prefix, ["t", "f"])
    np.testing.assert_array_equal(t, a.T)
    np.testing.assert_array_equal(f, a)


def test_duplicate_names_are_rejected(tmp_path):
    with pytest.raises(errors.InvalidArgumentError, match="duplicate key 'x'"):
        bundle.write_bundle(str(tmp_path / "m"), ["x", b"x"], [np.ones(1), np.ones(1)])
    assert not list(tmp_path.iterdir()) or not (tmp_path / "m.index").exists()


def test_slices_make_a_full_entry_and_ordered_code_slice_entries(tmp_path):
    prefix = str(tmp_path / "m")
    full = np.arange(40, dtype="f4").reshape(10, 4)
    bundle.write_bundle(prefix, ["v", "v"], [full[4:7], full[0:4]], ["10 4 4,3:-", "10 4 0,4:0,4"])
    kvs = dict(read_index(prefix))
    e = tensor_bundle_pb2.BundleEntryProto.FromString(kvs[b"v"])
    assert [d.size for d in e.shape.dim] == [10, 4] and e.size == 0 and e.offset == 0
    assert e.slices[0].SerializeToString() == bytes.fromhex("0a04080410030a00")
    assert e.slices[1].SerializeToString() == bytes.fromhex("0a0210040a021004")
    assert bytes.fromhex("0076000101028483807f") in kvs  # spec 6.3 "-" key shape
    assert _core.slice_key("v", "10 4 0,4:0,4") in kvs
    with pytest.raises(errors.DataLossError, match="sufficient slices"):
        bundle.read_tensors(prefix, ["v"])  # rows 7..9 never saved
    np.testing.assert_array_equal(bundle.read_tensors(prefix, ["v"], ["10 4 0,7:-"])[0], full[:7])


def test_a_slice_covering_everything_is_stored_plainly(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["v"], [np.ones((3, 2), "f4")], ["3 2 0,3:-"])
    assert [k for k, _ in read_index(prefix)] == [b"", b"v"]
    assert not entry_of(prefix, b"v").slices


@pytest.mark.parametrize("spec,shape,msg", [
    ("10 4 0,5:-", (4, 4), "shape"),
    ("10 4 8,5:-", (5, 4), "out of bounds"),
    ("10 4 0,4", (4, 4), "rank"),
    ("10 x 0,4:-", (4, 4), "dimension"),
    ("0,4:-", (4, 4), "two elements"),
])
def test_bad_slice_specs_are_invalid_arguments(tmp_path, spec, shape, msg):
    with pytest.raises(errors.InvalidArgumentError, match=msg):
        bundle.write_bundle(str(tmp_path / "m"), ["v"], [np.ones(shape, "f4")], [spec])


def test_num_shards_and_shard_id_name_the_data_file(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a"], [np.ones(2, "f4")], num_shards=3, shard_id=2)
    assert sorted(files_of(prefix)) == [".data-00002-of-00003", ".index"]
    assert read_index(prefix)[0][1] == bytes.fromhex("08031a020801")
    assert entry_of(prefix, b"a").shard_id == 2
    with pytest.raises(errors.InvalidArgumentError):
        bundle.write_bundle(prefix, ["a"], [np.ones(2)], num_shards=2, shard_id=2)


def test_durable_write_and_creates_parent_dirs(tmp_path):
    prefix = str(tmp_path / "a" / "b" / "m")
    bundle.write_bundle(prefix, ["a"], [np.ones(2, "f4")], durable=True)
    assert bundle.read_tensors(prefix, ["a"])[0].tolist() == [1, 1]


def test_no_temporary_files_remain_and_failure_leaves_nothing_behind(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a"], [np.ones(2, "f4")])
    assert sorted(os.listdir(tmp_path)) == ["m.data-00000-of-00001", "m.index"]
    # A directory squatting on the data file name makes the final rename fail.
    other = str(tmp_path / "o")
    os.mkdir(other + ".data-00000-of-00001")
    with pytest.raises(errors.OpError, match="rename"):
        bundle.write_bundle(other, ["a"], [np.ones(2, "f4")])
    assert sorted(os.listdir(tmp_path)) == ["m.data-00000-of-00001", "m.index", "o.data-00000-of-00001"]


def test_rewriting_replaces_an_existing_checkpoint(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a"], [np.ones(2, "f4")])
    bundle.write_bundle(prefix, ["a"], [np.zeros(3, "f4")])
    assert bundle.read_tensors(prefix, ["a"])[0].tolist() == [0, 0, 0]


def test_file_size_limit_is_resource_exhausted(tmp_path):
    # EFBIG from RLIMIT_FSIZE stands in for a full disk (ENOSPC maps the same way).
    script = textwrap.dedent(f"""
        import resource, signal, numpy as np
        from saverkit import bundle, errors
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        try:
            bundle.write_bundle({str(tmp_path / 'm')!r}, ["a"], [np.ones(1_000_000, "f4")])
        except errors.ResourceExhaustedError as e:
            print("RESOURCE_EXHAUSTED", e)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "RESOURCE_EXHAUSTED" in out.stdout, out.stderr
    assert "m.data-00000-of-00001" in out.stdout
    assert not [f for f in os.listdir(tmp_path) if ".sktmp-" in f]


@pytest.mark.parametrize("rel", ["v1_dtypes/model.ckpt-7", "tf2_object/ckpt-4", "tf2_object/ckpt-2",
                                 "v1_max_to_keep/model.ckpt-4", "v1_partitioned/model.ckpt"])
def test_rewriting_a_tf_checkpoint_is_byte_identical(tmp_path, rel):
    src = str(FIXTURES / rel)
    dst = str(tmp_path / "copy")
    rewrite_single_shard(src, dst)
    tf_files = {k: v for k, v in files_of(src).items() if k != ".meta"}
    assert files_of(dst) == tf_files


def test_many_threads_and_one_thread_write_the_same_bytes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = [rng.standard_normal(n).astype("f4") for n in (3_000_000, 10, 0, 5_000_000, 7)]
    names = [f"t{i}" for i in range(len(tensors))]
    before = bundle.get_io_threads()
    try:
        bundle.set_io_threads(1)
        bundle.write_bundle(str(tmp_path / "one"), names, tensors)
        bundle.set_io_threads(4)
        assert bundle.get_io_threads() == 4
        bundle.write_bundle(str(tmp_path / "four"), names, tensors)
    finally:
        bundle.set_io_threads(before)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "four")
    for i, t in enumerate(bundle.read_tensors(str(tmp_path / "four"), names)):
        np.testing.assert_array_equal(t, tensors[i])


def test_concurrent_writers_write_what_one_writer_writes(tmp_path):
    # Concurrent numeric writers checksum their own data as they write it (no helper tasks): the
    # bytes, CRCs included, must be those of a writer alone, whatever mix of paths each chunk took.
    import threading

    rng = np.random.default_rng(1)
    sizes = (9_000_000, 10, 0, 70_000, 4_200_000, 3)  # chunks of 8 MiB, pieces of 256 KiB, and tails
    tensors = [rng.standard_normal(n).astype("f4") for n in sizes]
    names = [f"t{i}" for i in range(len(tensors))]
    tensors.append(np.array([b"a", b"bc" * 1000, b""], dtype=object))  # a string payload among them
    names.append("s")
    bundle.write_bundle(str(tmp_path / "alone"), names, tensors)
    errors_seen = []

    def write(k: int) -> None:
        try:
            for r in range(3):
                bundle.write_bundle(str(tmp_path / f"w{k}-{r}"), names, tensors)
        except Exception as e:  # noqa: BLE001 - reported below
            errors_seen.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors_seen
    expected = files_of(tmp_path / "alone")
    for k in range(3):
        for r in range(3):
            assert files_of(tmp_path / f"w{k}-{r}") == expected


def test_a_string_list_longer_than_its_length_is_an_internal_error_not_a_moved_buffer(tmp_path):
    # The binding sizes one element vector for the call from len() of each string list, and the writer
    # points into it from the moment a tensor is added: a sequence yielding more elements than len()
    # said must be refused, not make the vector grow (and move) under writes in flight.
    class ShortLen(list):
        def __len__(self) -> int:
            return 1

    prefix = str(tmp_path / "m")
    with pytest.raises(errors.InternalError, match="more string elements than counted"):
        _core.write_bundle(prefix, [b"s"], [""], [dtypes.string.as_datatype_enum], [[2]],
                           [ShortLen([b"a", b"b"])], 1, 0, False)
    assert os.listdir(tmp_path) == []


def test_the_engine_refuses_strided_buffers_rather_than_writing_the_wrong_bytes(tmp_path):
    # The engine writes and reads each numeric buffer as one flat run of bytes. A strided view handed to it
    # directly (the Python API makes arrays contiguous first) used to be accepted: its first bytes were
    # written or overwritten as if it were contiguous.
    strided = np.arange(10, dtype=np.int64)[::2]
    prefix = str(tmp_path / "m")
    int64 = dtypes.int64.as_datatype_enum
    with pytest.raises(errors.InvalidArgumentError, match="Buffer for tensor 'x' must be a C-contiguous buf"):
        _core.write_bundle(prefix, [b"x"], [""], [int64], [[5]], [strided], 1, 0, False)
    assert os.listdir(tmp_path) == []
    bundle.write_bundle(prefix, ["x"], [strided])  # made contiguous on the way in
    assert bundle.read_tensors(prefix, ["x"])[0].tolist() == [0, 2, 4, 6, 8]
    reader = _core.Reader(prefix)
    reader.prepare([b"x"], [""])
    base = np.zeros(10, dtype=np.int64)
    unusable = "Output buffer for tensor 'x' must be a C-contiguous, writable buffer"
    with pytest.raises(errors.InvalidArgumentError, match=unusable):
        reader.execute([b"x"], [""], [base[::2]])
    read_only = np.frombuffer(bytes(40), dtype=np.int64)
    with pytest.raises(errors.InvalidArgumentError, match=unusable):
        reader.execute([b"x"], [""], [read_only])
    assert base.tolist() == [0] * 10
