"""BundleReader/read_tensors: TF fixtures vs the manifest, slices, out=, dtypes, paths, versions, BE."""

import os
import shutil
import struct

import numpy as np
import pytest
from bundle_helpers import (
    FIXTURES,
    manifest_checkpoints,
    read_index,
    replace_header,
    tensor_sha256,
    write_index,
)
from saverkit import bundle, dtypes, errors
from saverkit.protobuf import tensor_bundle_pb2


@pytest.mark.parametrize("rel,expected", manifest_checkpoints(), ids=[r for r, _ in manifest_checkpoints()])
def test_tf_fixture_reads_back_exactly_as_the_manifest_says(rel, expected):
    reader = bundle.BundleReader(str(FIXTURES / rel))
    entries = reader.entries()
    assert set(entries) == set(expected)
    names = sorted(expected)
    values = reader.read_many(names)
    for name, value in zip(names, values, strict=True):
        rec = expected[name]
        dtype, shape = entries[name]
        assert dtype.name == rec["dtype"], name
        assert list(shape) == rec["shape"] == list(value.shape), name
        assert tensor_sha256(value, rec["dtype"]) == rec["sha256"], name
        if "hex" in rec:
            assert np.ascontiguousarray(value).tobytes().hex() == rec["hex"]


def test_every_checkpoint_file_in_the_fixtures_opens_and_reads():
    for index in sorted(FIXTURES.glob("*/*.index")):
        reader = bundle.BundleReader(str(index)[: -len(".index")])
        assert len(reader.read_many(list(reader.entries()))) == len(reader.entries())


def test_partitioned_tensor_slices_and_whole():
    reader = bundle.BundleReader(str(FIXTURES / "v1_partitioned" / "model.ckpt"))
    assert reader.entries()["emb"] == (dtypes.float32, (10, 6))
    emb = reader.read("emb")
    np.testing.assert_array_equal(reader.read_slice("emb", "10 6 2,5:1,3"), emb[2:7, 1:4])
    np.testing.assert_array_equal(reader.read_slice("emb", "10 6 0,10:-"), emb)
    wide = reader.read("wide")
    np.testing.assert_array_equal(reader.read_slice("wide", "5 9 -:3,4"), wide[:, 3:7])
    plain = reader.read("plain")
    np.testing.assert_array_equal(reader.read_slice("plain", "4 1,2"), plain[1:3])
    with pytest.raises(errors.InvalidArgumentError, match="does not match the stored shape"):
        reader.read_slice("emb", "10 7 0,2:-")


def test_out_arrays_are_filled_in_place(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a", "b"], [np.arange(6, dtype="f4").reshape(2, 3), np.array([1, 2], "i8")])
    out = np.full((2, 3), -1, "f4")
    got = bundle.read_tensors(prefix, ["a", "b"], out=[out, None])
    assert got[0] is out and out.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert got[1].tolist() == [1, 2]
    for bad, msg in [(np.empty((3, 2), "f4"), "shape"), (np.empty((2, 3), "f8"), "dtype"),
                     (np.empty((3, 2), "f4").T, "contiguous"), ([0] * 6, "numpy")]:
        with pytest.raises(errors.InvalidArgumentError, match=msg):
            bundle.read_tensors(prefix, ["a"], out=[bad])
    ro = np.empty((2, 3), "f4")
    ro.flags.writeable = False
    with pytest.raises(errors.InvalidArgumentError, match="read-only"):
        bundle.read_tensors(prefix, ["a"], out=[ro])


def test_string_out_arrays_get_their_elements_replaced_in_place(tmp_path):
    prefix = str(tmp_path / "m")
    values = np.array([[b"a", b""], [b"\x00z\x00", b"q" * 70_000]], dtype=object)
    bundle.write_bundle(prefix, ["s", "n"], [values, np.arange(3, dtype="i4")])
    out = np.array([[b"old"] * 2] * 2, dtype=object)
    got = bundle.read_tensors(prefix, ["s", "n"], out=[out, None])
    assert got[0] is out and out.tolist() == values.tolist()
    assert got[1].tolist() == [0, 1, 2]
    for bad, msg in [(np.empty((4,), object), "shape"), (np.empty((2, 2), "f4"), "dtype"),
                     (np.empty((2, 2), object).T[:, :1], "shape"), ([b""] * 4, "numpy")]:
        with pytest.raises(errors.InvalidArgumentError, match=msg):
            bundle.read_tensors(prefix, ["s"], out=[bad])
    with pytest.raises(errors.InvalidArgumentError, match="contiguous"):
        bundle.read_tensors(prefix, ["s"], out=[np.empty((2, 2), object).T])
    ro = np.empty((2, 2), object)
    ro.flags.writeable = False
    with pytest.raises(errors.InvalidArgumentError, match="read-only"):
        bundle.read_tensors(prefix, ["s"], out=[ro])


def test_a_failed_string_read_leaves_string_out_arrays_untouched(tmp_path):
    # Elements are swapped into out= arrays only after every tensor of the call was read and checked.
    prefix = str(tmp_path / "m")
    good = np.array([b"g%d" % i for i in range(100)], dtype=object)
    bad = np.array([b"b%d" % i * 50 for i in range(100)], dtype=object)
    bundle.write_bundle(prefix, ["good", "bad"], [good, bad])
    entry = {k: tensor_bundle_pb2.BundleEntryProto.FromString(v) for k, v in read_index(prefix)[1:]}[b"bad"]
    data = f"{prefix}.data-00000-of-00001"
    with open(data, "r+b") as f:  # flip a byte of the last element
        f.seek(entry.offset + entry.size - 1)
        last = f.read(1)
        f.seek(entry.offset + entry.size - 1)
        f.write(bytes([last[0] ^ 1]))
    outs = [np.full(100, b"keep", dtype=object), np.full(100, b"keep", dtype=object)]
    with pytest.raises(errors.DataLossError, match="stored crc32c"):
        bundle.read_tensors(prefix, ["good", "bad"], out=outs)
    assert outs[0].tolist() == [b"keep"] * 100 and outs[1].tolist() == [b"keep"] * 100


def test_restored_strings_are_new_objects_owned_by_the_result(tmp_path):
    # Nothing read may alias another result or the input (bytes are immutable, but the arrays are not).
    prefix = str(tmp_path / "m")
    src = np.array([b"x" * 10, b"y" * 10], dtype=object)
    bundle.write_bundle(prefix, ["s"], [src])
    a, = bundle.read_tensors(prefix, ["s"])
    b, = bundle.read_tensors(prefix, ["s"])
    assert a is not b and a.base is None and a.tolist() == b.tolist() == src.tolist()
    a[0] = b"changed"
    assert b[0] == b"x" * 10 and src[0] == b"x" * 10


def _pymalloc_arenas() -> bool:
    """Whether objects live in pymalloc arenas (not with PYTHONMALLOC=malloc or in free-threaded builds)."""
    import sysconfig

    return (sysconfig.get_config_var("WITH_PYMALLOC") == 1 and not sysconfig.get_config_var("Py_GIL_DISABLED")
            and os.environ.get("PYTHONMALLOC", "") in ("", "pymalloc", "pymalloc_debug", "debug"))


needs_pymalloc = pytest.mark.skipif(not _pymalloc_arenas(), reason="objects are not in pymalloc arenas")


@needs_pymalloc
def test_a_string_restore_reuses_the_memory_of_the_last_ones_freed_strings(tmp_path):
    # Freed arenas of bytes objects stay mapped (up to a cap), so the next restore does not fault in fresh
    # pages: that was half the time of restoring 100,000 strings on the benchmark VM.
    from saverkit import _core

    prefix = str(tmp_path / "m")
    src = [np.array([bytes([i % 251]) * (i % 190) for i in range(j, j + 20_000)], dtype=object)
           for j in (0, 7)]
    bundle.write_bundle(prefix, ["a", "b"], src)
    got = bundle.read_tensors(prefix, ["a", "b"])
    installed, cached_before, reused_before = _core._arena_cache_stats()
    assert installed
    del got  # frees 40,000 bytes objects: ~4 MiB of arenas
    _, cached, _ = _core._arena_cache_stats()
    assert cached > cached_before
    got = bundle.read_tensors(prefix, ["a", "b"])
    _, cached_after, reused = _core._arena_cache_stats()
    assert reused > reused_before and cached_after < cached
    assert [g.tolist() for g in got] == [s.tolist() for s in src]


@needs_pymalloc
def test_the_arena_cache_keeps_no_more_than_its_cap(tmp_path):
    from saverkit import _core

    prefix = str(tmp_path / "m")
    big = np.array([bytes([i % 256]) * 200 for i in range(300_000)], dtype=object)  # ~70 MiB of objects
    bundle.write_bundle(prefix, ["big"], [big])
    got, = bundle.read_tensors(prefix, ["big"])
    assert got.tolist() == big.tolist()
    del got, big
    _, cached, _ = _core._arena_cache_stats()
    assert 0 < cached <= _core._ARENA_CACHE_BYTES


def test_string_reads_across_buffer_sizes_and_long_varints(tmp_path):
    # Small elements are read a buffer-full at a time and copied out, elements of 64 KiB and more are read
    # straight into place, a tensor is read in ~1 MiB runs whose CRCs are stitched, and the lengths are
    # read in growing steps when the varints are longer than a byte or two.
    rng = np.random.default_rng(3)
    mixed = [rng.bytes(int(n)) for n in rng.integers(0, 3000, 2000)]
    mixed[10:10] = [rng.bytes(65536), b"", rng.bytes(300_000), b"\x00" * 65535]
    long_varints = [rng.bytes(20_000 + i) for i in range(120)]  # 3-byte varints: past the first read
    tensors = {"mixed": np.array(mixed, dtype=object), "long": np.array(long_varints, dtype=object),
               "empty": np.array([], dtype=object), "blanks": np.array([b""] * 5, dtype=object).reshape(5, 1)}
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, list(tensors), list(tensors.values()))
    for (name, t), got in zip(tensors.items(), bundle.read_tensors(prefix, list(tensors)), strict=True):
        assert got.shape == t.shape and got.tolist() == t.tolist(), name
    # A flipped byte anywhere in a later run is caught.
    entry = {k: tensor_bundle_pb2.BundleEntryProto.FromString(v) for k, v in read_index(prefix)[1:]}[b"long"]
    data = f"{prefix}.data-00000-of-00001"
    with open(data, "r+b") as f:
        f.seek(entry.offset + entry.size - 5000)
        f.write(b"!")
    with pytest.raises(errors.DataLossError, match="Checksum does not match for tensor 'long'"):
        bundle.read_tensors(prefix, ["long"])


def test_dtype_mismatch_and_missing_keys_name_everything(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a"], [np.ones(2, "f4")])
    with pytest.raises(errors.InvalidArgumentError, match=r"'a'.*float32.*int32"):
        bundle.read_tensors(prefix, ["a"], dtypes=[dtypes.int32])
    assert bundle.read_tensors(prefix, ["a"], dtypes=[dtypes.float32])[0].dtype == np.float32
    with pytest.raises(errors.NotFoundError, match=r"'nope' not found in checkpoint .*m"):
        bundle.read_tensors(prefix, ["nope"])


def test_slice_keys_are_hidden_from_entries():
    reader = bundle.BundleReader(str(FIXTURES / "v1_partitioned" / "model.ckpt"))
    assert sorted(reader.entries()) == ["emb", "plain", "wide"]
    assert not reader.has_tensor(b"\x00emb") and reader.has_tensor("emb")


def test_strings_come_back_as_object_arrays_of_bytes():
    reader = bundle.BundleReader(str(FIXTURES / "v1_dtypes" / "model.ckpt-7"))
    s = reader.read("string/mat")
    assert s.dtype == object and s.shape == (3, 2) and all(isinstance(x, bytes) for x in s.reshape(-1))
    assert reader.read("string/scalar").shape == ()


def test_names_can_be_arbitrary_bytes(tmp_path):
    prefix = str(tmp_path / "m")
    names = [b"we\x01ird\xc3\xbf", b"a\x00b\xffc", "\u00e9t\u00e9"]
    bundle.write_bundle(prefix, names, [np.array([i], "i4") for i in range(3)])
    reader = bundle.BundleReader(prefix)
    assert [reader.read(n).tolist() for n in names] == [[0], [1], [2]]
    assert "\u00e9t\u00e9" in reader.entries()
    for name in reader.entries():  # surrogate-escaped names round-trip
        assert reader.read(name).shape == (1,)


@pytest.mark.parametrize("suffix", ["", ".index", ".data-00000-of-00001", ".meta"])
def test_prefix_can_be_given_as_any_of_the_checkpoint_files(suffix):
    prefix = str(FIXTURES / "v1_dtypes" / "model.ckpt-7")
    assert bundle.resolve_prefix(prefix + suffix) == prefix
    assert bundle.BundleReader(prefix + suffix).prefix == prefix


def test_directory_resolves_through_the_checkpoint_state_file():
    d = FIXTURES / "tf2_object"
    assert bundle.resolve_prefix(str(d)) == str(d / "ckpt-4")
    assert bundle.resolve_prefix(d) == str(d / "ckpt-4")


def test_wrong_paths_say_what_was_looked_for_and_found(tmp_path):
    with pytest.raises(errors.NotFoundError, match=r"looked for .*model\.index.*found nothing.*ckpt-7"):
        bundle.BundleReader(str(FIXTURES / "v1_dtypes" / "model"))
    with pytest.raises(errors.NotFoundError, match="'checkpoint' state file"):
        bundle.BundleReader(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(errors.NotFoundError, match="not part of a checkpoint"):
        bundle.BundleReader(str(tmp_path / "notes.txt"))


def test_moved_directory_with_absolute_state_entries_resolves_by_basename(tmp_path):
    d = tmp_path / "moved"
    shutil.copytree(FIXTURES / "v1_max_to_keep", d)
    (d / "checkpoint").write_text('model_checkpoint_path: "/gone/away/model.ckpt-4"\n')
    with pytest.warns(UserWarning, match="model.ckpt-4"):
        assert bundle.resolve_prefix(str(d)) == str(d / "model.ckpt-4")


def test_missing_data_file_is_not_found_naming_it(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a"], [np.ones(2, "f4")])
    os.remove(prefix + ".data-00000-of-00001")
    with pytest.raises(errors.NotFoundError, match=r"m\.data-00000-of-00001.*'a'"):
        bundle.read_tensors(prefix, ["a"])


@pytest.mark.parametrize("mutate,ok", [
    (lambda h: setattr(h.version, "min_consumer", 2), False),
    (lambda h: h.version.bad_consumers.append(1), False),
    (lambda h: setattr(h.version, "producer", 0), True),
    (lambda h: setattr(h.version, "producer", 99), True),
    (lambda h: setattr(h.version, "min_consumer", 1), True),
    (lambda h: h.ClearField("version"), True),
])
def test_header_version_rules(tmp_path, mutate, ok):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a"], [np.ones(2, "f4")])
    replace_header(prefix, mutate)
    if ok:
        assert bundle.read_tensors(prefix, ["a"])[0].tolist() == [1, 1]
    else:
        with pytest.raises(errors.InvalidArgumentError, match="consumer version"):
            bundle.BundleReader(prefix)


def _be_bundle(prefix):
    """A big-endian bundle, as a BE producer would write it (spec 5.5)."""
    from saverkit import _core

    f32 = np.array([1.5, -2.0], ">f4").tobytes()
    c64 = np.array([1 + 2j], ">c8").tobytes()
    items = [b"ab", b""]
    lengths = b"".join(struct.pack(">I", len(s)) for s in items)
    c_len = _core.crc32c(lengths)
    masked = struct.pack(">I", _core.crc32c_mask(c_len))
    strings = bytes([2, 0]) + masked + b"ab"
    string_crc = _core.crc32c(b"ab", _core.crc32c(masked, c_len))
    data = f32 + c64 + strings
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)
    kvs = [(b"", tensor_bundle_pb2.BundleHeaderProto(num_shards=1, endianness=1).SerializeToString())]

    def entry(dtype, shape, offset, payload, crc):
        e = tensor_bundle_pb2.BundleEntryProto(dtype=dtype, offset=offset, size=len(payload),
                                               crc32c=_core.crc32c_mask(crc))
        for d in shape:
            e.shape.dim.add(size=d)
        return e.SerializeToString()

    kvs.append((b"c", entry(8, [1], 8, c64, _core.crc32c(c64))))
    kvs.append((b"f", entry(1, [2], 0, f32, _core.crc32c(f32))))
    kvs.append((b"s", entry(7, [2], 16, strings, string_crc)))
    write_index(prefix, kvs)


def test_big_endian_bundles_are_swapped_after_the_crc_check(tmp_path):
    prefix = str(tmp_path / "be")
    _be_bundle(prefix)
    f, c, s = bundle.read_tensors(prefix, ["f", "c", "s"])
    assert f.dtype == np.dtype("<f4") and f.tolist() == [1.5, -2.0]
    assert c.tolist() == [1 + 2j]
    assert s.tolist() == [b"ab", b""]


def test_large_tensors_read_in_parallel_chunks_match(tmp_path):
    prefix = str(tmp_path / "m")
    rng = np.random.default_rng(0)
    big = rng.standard_normal(6_000_000).astype("f8")  # 48 MB: six 8 MiB chunks
    small = [rng.integers(0, 100, 50, dtype="i4") for _ in range(20)]
    bundle.write_bundle(prefix, ["big"] + [f"s{i}" for i in range(20)], [big] + small)
    before = bundle.get_io_threads()
    try:
        for n in (1, 3):
            bundle.set_io_threads(n)
            got = bundle.read_tensors(prefix, ["big"] + [f"s{i}" for i in range(20)])
            np.testing.assert_array_equal(got[0], big)
            for a, b in zip(got[1:], small, strict=True):
                np.testing.assert_array_equal(a, b)
    finally:
        bundle.set_io_threads(before)
    # A flipped byte inside the last chunk is caught by the combined CRC.
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(47_000_000)
        b = f.read(1)
        f.seek(47_000_000)
        f.write(bytes([b[0] ^ 0x10]))
    with pytest.raises(errors.DataLossError, match=r"'big'.*offset 0.*stored crc32c"):
        bundle.read_tensors(prefix, ["big"])


def test_reader_context_manager_and_num_shards():
    with bundle.BundleReader(str(FIXTURES / "v1_sharded" / "model.ckpt")) as r:
        assert r.num_shards == 3
        assert r.read("dev2/b").shape == (17,)
    with pytest.raises(errors.FailedPreconditionError, match="closed"):
        r.read("dev2/b")


def test_index_without_tensors_reads_as_empty(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, [], [])
    assert bundle.BundleReader(prefix).entries() == {}
    assert read_index(prefix) == [(b"", bytes.fromhex("08011a020801"))]
    assert os.path.getsize(prefix + ".data-00000-of-00001") == 0


def test_concurrent_calls_share_the_pool_and_stay_correct(tmp_path):
    import threading

    rng = np.random.default_rng(5)
    values = [rng.standard_normal(2_500_000).astype("f4") for _ in range(3)]
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["a", "b", "c"], values)
    failures = []

    def worker(i):
        try:
            for _ in range(3):
                got = bundle.read_tensors(prefix, ["a", "b", "c"])
                if not all(np.array_equal(g, v) for g, v in zip(got, values, strict=True)):
                    failures.append(i)
                bundle.write_bundle(str(tmp_path / f"w{i}"), ["x"], [values[i % 3]])
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    before = bundle.get_io_threads()
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        bundle.set_io_threads(3)  # resizing while calls are in flight
        for t in threads:
            t.join()
    finally:
        bundle.set_io_threads(before)
    assert failures == []


def test_the_engine_refuses_an_output_buffer_of_the_wrong_size_naming_the_tensor(tmp_path):
    # The Python API checks shapes first; the engine checks again before reading into a caller's buffer.
    from saverkit import _core

    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["x"], [np.arange(5, dtype=np.int64)])
    reader = _core.Reader(prefix)
    small = np.zeros(4, dtype=np.int64)
    wrong_size = "Output buffer for tensor 'x' holds 32 bytes; 40 needed"
    with pytest.raises(errors.InvalidArgumentError, match=wrong_size):
        reader.execute([b"x"], [""], [small])
    assert small.tolist() == [0] * 4


def test_a_corrupt_index_entry_names_its_tensor_and_the_index_file(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["good", "layer/bad"], [np.ones(2, "f4"), np.ones(3, "f4")])
    kvs = read_index(prefix)
    # A truncated varint: the entry cannot be decoded at all.
    write_index(prefix, [(k, b"\x08\xff" if k == b"layer/bad" else v) for k, v in kvs])
    with pytest.raises(errors.DataLossError, match=r"BundleEntryProto for tensor 'layer/bad' in .*m\.index"):
        bundle.BundleReader(prefix)
