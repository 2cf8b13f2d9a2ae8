"""BundleReader/read_tensors: TF fixtures vs the manifest, slices, out=, dtypes, paths, versions, BE."""

import os
import shutil
import struct
import time

import numpy as np
import pytest
from bundle_helpers import (
    FIXTURES,
    data_blocks,
    manifest_checkpoints,
    read_index,
    replace_header,
    tensor_sha256,
    write_index,
)
from saverkit import _core, bundle, dtypes, errors
from saverkit.protobuf import tensor_bundle_pb2
from saverkit.train.checkpoint_utils import load_checkpoint


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


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("elements", [300_001, 700_003, 2_621_447])
def test_a_lone_tensor_read_in_parts_across_the_threads_matches(tmp_path, threads, elements):
    # One tensor in a call is split evenly over the I/O threads (parts of 512 KiB and up, 64 KiB-aligned):
    # odd sizes leave a short last part, and a flipped byte in any part is caught by the combined CRC.
    prefix = str(tmp_path / "m")
    value = np.random.default_rng(elements).integers(-2**15, 2**15, elements, dtype="i2")
    bundle.write_bundle(prefix, ["t"], [value])
    before = bundle.get_io_threads()
    try:
        bundle.set_io_threads(threads)
        np.testing.assert_array_equal(bundle.read_tensors(prefix, ["t"])[0], value)
        out = np.zeros_like(value)
        bundle.read_tensors(prefix, ["t"], out=[out])
        np.testing.assert_array_equal(out, value)
        with open(prefix + ".data-00000-of-00001", "r+b") as f:
            f.seek(2 * elements - 3)
            b = f.read(1)
            f.seek(2 * elements - 3)
            f.write(bytes([b[0] ^ 0x01]))
        with pytest.raises(errors.DataLossError, match=r"'t'.*stored crc32c"):
            bundle.read_tensors(prefix, ["t"])
    finally:
        bundle.set_io_threads(before)


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


def test_execute_reuses_prepared_plans_for_an_equal_request_but_not_for_lists_changed_in_place(tmp_path):
    # prepare()'s plans are kept for the execute() that follows, matched by the requests' content: a new
    # list of equal keys and specs reuses them; a list changed in place since prepare() is planned again
    # (plans kept by list identity read the old tensor into the new one's buffer).
    prefix = str(tmp_path / "m")
    tensors = [np.arange(3, dtype=np.int64), np.arange(5, dtype=np.float32), np.array([b"x", b"yz"], object)]
    bundle.write_bundle(prefix, ["a", "b", "s"], tensors)
    reader = _core.Reader(prefix)
    reader.prepare([b"a", b"s"], ["3 0,2", ""])
    equal_keys = [bytes(bytearray(b"a")), bytes(bytearray(b"s"))]  # equal, but other objects
    equal_specs = ["".join(["3 0", ",2"]), ""]
    out_a = np.zeros(2, dtype=np.int64)
    _, s = reader.execute(equal_keys, equal_specs, [out_a, None])
    assert reader._plan_cache_hits == 1
    assert out_a.tolist() == [0, 1] and s.tolist() == [b"x", b"yz"]

    keys, specs = [b"a", b"s"], ["", ""]
    reader.prepare(keys, specs)
    keys[0] = b"b"
    out_b = np.zeros(5, dtype=np.float32)
    reader.execute(keys, specs, [out_b, None])
    assert out_b.tolist() == [0, 1, 2, 3, 4]

    keys, specs = [b"a"], [""]
    reader.prepare(keys, specs)
    specs[0] = "3 1,2"
    out_slice = np.zeros(2, dtype=np.int64)
    reader.execute(keys, specs, [out_slice])
    assert out_slice.tolist() == [1, 2]
    assert reader._plan_cache_hits == 1  # neither changed list was given the old plans

    with bundle.BundleReader(prefix) as r:  # the Python API's own prepare/execute pairs hit
        assert r.read_many(["b", "s"])[0].tolist() == [0, 1, 2, 3, 4]
        assert r._core._plan_cache_hits == 1


def test_a_corrupt_index_entry_names_its_tensor_and_the_index_file_when_read_or_listed(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["good", "layer/bad"], [np.ones(2, "f4"), np.ones(3, "f4")])
    kvs = read_index(prefix)
    # A truncated varint: the entry cannot be decoded at all.
    write_index(prefix, [(k, b"\x08\xff" if k == b"layer/bad" else v) for k, v in kvs])
    reader = bundle.BundleReader(prefix)  # opening reads the header only, as TF
    assert reader.read("good").tolist() == [1.0, 1.0]
    bad = r"BundleEntryProto for tensor 'layer/bad' in .*m\.index"
    with pytest.raises(errors.DataLossError, match=bad):
        reader.read("layer/bad")
    with pytest.raises(errors.DataLossError, match=bad):
        reader.entries()


# --- a read costs what it reads, not what the checkpoint holds ------------------------------------

def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _write_scalar_index(prefix: str, n: int, window: int = 1024) -> None:
    """An index of n float32 scalars 't/0000000'...; tensor i holds float(i % window) (n payloads share
    `window` data-file slots, so that building a million entries takes about a second)."""
    data = np.arange(window, dtype="<f4").tobytes()
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)
    # BundleEntryProto{dtype: DT_FLOAT, shape: {}, offset, size: 4, crc32c}, encoded by hand for speed.
    crcs = [_core.crc32c_mask(_core.crc32c(data[4 * j:4 * j + 4])) for j in range(window)]
    values = [b"\x08\x01\x12\x00" + (b"\x20" + _varint(4 * j) if j else b"") + b"\x28\x04\x35"
              + struct.pack("<I", crcs[j]) for j in range(window)]
    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=1)
    header.version.producer = 1
    kvs = [(b"", header.SerializeToString())]
    kvs += [(b"t/%07d" % i, values[i % window]) for i in range(n)]
    write_index(prefix, kvs)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def million_entry_index(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("big") / "m")
    _write_scalar_index(prefix, 1_000_000)
    return prefix


def test_opening_a_million_entry_index_and_reading_one_scalar_reads_almost_nothing(million_entry_index):
    # The whole index parsed on open cost ~150 MB and ~1 s here; now: the footer, the index block and the
    # two data blocks holding the header and the key.
    before = _rss_kib()
    reader = bundle.BundleReader(million_entry_index)
    value = reader.read("t/0777777")
    grown = _rss_kib() - before
    assert value.shape == () and value == 777_777 % 1024
    assert reader.has_tensor("t/0999999") and not reader.has_tensor("t/1000000")
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
    ckpt = load_checkpoint(million_entry_index)
    assert ckpt.get_tensor("t/0000003") == 3 and ckpt.has_tensor("t/0000003")
    assert _rss_kib() - before < 16 * 1024


def test_a_corrupt_index_data_block_is_reported_when_a_key_in_it_is_read_or_listed(tmp_path):
    prefix = str(tmp_path / "m")
    _write_scalar_index(prefix, 30_000)
    blocks = data_blocks(prefix + ".index")
    assert len(blocks) >= 3
    sep, off, size = blocks[1]
    with open(prefix + ".index", "r+b") as f:
        f.seek(off + size // 2)
        b = f.read(1)
        f.seek(off + size // 2)
        f.write(bytes([b[0] ^ 0x10]))
    reader = bundle.BundleReader(prefix)
    assert reader.read_many(["t/0000000", "t/0029999"]) == [0, 29_999 % 1024]
    bad = rf"Block checksum mismatch in {prefix}\.index at offset {off}"
    with pytest.raises(errors.DataLossError, match=bad):
        reader.read(sep.decode())  # the block's last key is at most its separator: in that block
    with pytest.raises(errors.DataLossError, match=bad):
        reader.read_many(["t/0000000", sep.decode()])
    with pytest.raises(errors.DataLossError, match=bad):
        reader.entries()
    with pytest.raises(errors.DataLossError, match=bad):
        load_checkpoint(prefix).get_variable_to_shape_map()


def test_many_keys_in_any_order_across_many_index_blocks_read_right(tmp_path):
    prefix = str(tmp_path / "m")
    _write_scalar_index(prefix, 150_000, window=150_000)
    assert len(data_blocks(prefix + ".index")) > 8  # more than the reader keeps
    rng = np.random.default_rng(7)
    picks = [int(i) for i in rng.choice(150_000, 5_000, replace=False)] + [12, 12, 149_999]
    values = bundle.read_tensors(prefix, [f"t/{i:07d}" for i in picks])
    assert [float(v) for v in values] == [float(i) for i in picks]
    with pytest.raises(errors.NotFoundError, match="'t/0150000' not found"):
        bundle.read_tensors(prefix, ["t/0000001", "t/0150000"])


# --- partitioned tensors: assembly grows linearly with the slice count ----------------------------

def _write_partitioned(prefix: str, full: np.ndarray, boxes: list[tuple[tuple[int, int], ...]]) -> None:
    """Saves `full` as the slices `boxes` (per dimension: (start, length)) of one partitioned tensor."""
    dims = " ".join(str(d) for d in full.shape)
    specs = [dims + " " + ":".join(f"{s},{n}" for s, n in box) for box in boxes]
    parts = [np.ascontiguousarray(full[tuple(slice(s, s + n) for s, n in box)]) for box in boxes]
    bundle.write_bundle(prefix, ["p"] * len(boxes), parts, specs)


def _box_operations_to_read(prefix: str, full: np.ndarray, spec: str, want: np.ndarray) -> int:
    reader = bundle.BundleReader(prefix)
    before = _core._box_operations()
    whole = reader.read("p")
    part = reader.read_slice("p", spec)
    count = _core._box_operations() - before
    np.testing.assert_array_equal(whole, full)
    np.testing.assert_array_equal(part, want)
    return count


@pytest.mark.parametrize("layout", ["rows", "grid"])
def test_reading_a_partitioned_tensor_grows_linearly_with_its_slice_count(tmp_path, layout):
    # 32,000 slices took 57 s (every slice checked against every other); the counted box operations
    # (intersections, and boxes visited while looking for overlaps) now grow with the count, not its square.
    counts = []
    for n in (2_000, 8_000):
        if layout == "rows":  # one axis cut, as TF's partitioners do
            full = np.arange(n * 2 * 3, dtype="f4").reshape(n * 2, 3)
            boxes = [((2 * i, 2), (0, 3)) for i in range(n)]
            rows = n * 2
        else:  # a grid of 4 columns of row blocks, the rows of each column offset like bricks
            rows = n // 4 * 2
            full = np.arange(rows * 8, dtype="i4").reshape(rows, 8)
            boxes = []
            for c in range(4):
                cuts = [0] + list(range(1 + c % 2, rows, 2))[: n // 4 - 1] + [rows]
                boxes += [((a, b - a), (2 * c, 2)) for a, b in zip(cuts, cuts[1:], strict=False)]
            assert len(boxes) == n
        prefix = str(tmp_path / f"{layout}{n}")
        _write_partitioned(prefix, full, boxes)
        lo, hi = rows // 4, rows // 2
        counts.append(_box_operations_to_read(prefix, full, f"{rows} {full.shape[1]} {lo},{hi - lo}:1,2",
                                              full[lo:hi, 1:3]))
    assert counts[1] < 5 * counts[0], counts  # quadratic: 16x


def test_slices_no_cut_separates_are_still_checked_pairwise(tmp_path):
    # A pinwheel: five boxes tiling 3x3 that no straight cut splits, so they are compared pairwise.
    full = np.arange(9, dtype="i8").reshape(3, 3)
    pinwheel = [((0, 2), (0, 1)), ((0, 1), (1, 2)), ((1, 2), (2, 1)), ((2, 1), (0, 2)), ((1, 1), (1, 1))]
    _write_partitioned(str(tmp_path / "ok"), full, pinwheel)
    reader = bundle.BundleReader(str(tmp_path / "ok"))
    np.testing.assert_array_equal(reader.read("p"), full)
    np.testing.assert_array_equal(reader.read_slice("p", "3 3 1,2:0,2"), full[1:3, 0:2])
    # The centre piece widened over its left neighbour.
    _write_partitioned(str(tmp_path / "bad"), full, pinwheel[:4] + [((1, 1), (0, 2))])
    overlap = r"Overlapping slices 0,2:0,1 and 1,1:0,2 stored for tensor 'p'"
    with pytest.raises(errors.DataLossError, match=overlap):
        bundle.read_tensors(str(tmp_path / "bad"), ["p"])


def test_overlapping_slices_among_many_are_found(tmp_path):
    n = 3_000
    full = np.arange(n * 2, dtype="f4").reshape(n, 2)
    boxes = [((i, 1), (0, 2)) for i in range(n)]
    boxes[1_500] = ((1_499, 2), (0, 2))  # reaches into its predecessor's row
    _write_partitioned(str(tmp_path / "m"), full, boxes)
    with pytest.raises(errors.DataLossError, match="Overlapping slices 1499,1:0,2 and 1499,2:0,2"):
        bundle.read_tensors(str(tmp_path / "m"), ["p"])
    # Reading rows away from the overlap still works, as before.
    part = bundle.read_tensors(str(tmp_path / "m"), ["p"], [f"{n} 2 0,1000:-"])[0]
    np.testing.assert_array_equal(part, full[:1000])


# --- ranks numpy cannot hold ----------------------------------------------------------------------

def test_a_tensor_of_rank_above_numpys_limit_is_unimplemented_but_listed(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["deep", "ok", "words"],
                        [np.float32(2.5), np.arange(3, dtype="i4"), np.array([b"a"], dtype=object)])
    deep = (1,) * 70  # TF allows up to 254 dimensions
    kvs = []
    for k, v in read_index(prefix):
        if k in (b"deep", b"words"):
            e = tensor_bundle_pb2.BundleEntryProto.FromString(v)
            e.shape.ClearField("dim")
            for d in deep:
                e.shape.dim.add(size=d)
            v = e.SerializeToString()
        kvs.append((k, v))
    write_index(prefix, kvs)
    reader = bundle.BundleReader(prefix)
    assert reader.entries()["deep"] == (dtypes.float32, deep)
    assert load_checkpoint(prefix).get_variable_to_shape_map()["deep"] == list(deep)
    for key in ("deep", "words"):
        too_deep = rf"tensor '{key}' of checkpoint {prefix}: its rank 70"
        with pytest.raises(errors.UnimplementedError, match=too_deep):
            reader.read(key)
    with pytest.raises(errors.UnimplementedError, match="rank 70"):
        reader.read_slice("deep", " ".join(["1"] * 70) + " " + ":".join(["-"] * 70))
    assert reader.read("ok").tolist() == [0, 1, 2]


@pytest.fixture(params=[1, 0], ids=["bounced", "direct"])
def read_bounce(request):
    # env.cc bounces aliased reads only on AMD CPUs by default: test both paths on every machine
    _core._set_read_bounce(request.param)
    assert _core._read_bounce_active() == bool(request.param)
    yield
    _core._set_read_bounce(-1)


def test_reads_into_every_alignment_of_destination_and_source(tmp_path, read_bounce):
    # Destinations a few bytes ahead of the source within a page are read through a bounce buffer
    # (env.cc): every placement of both, across piece boundaries, must give the same bytes and CRC
    # check; a corrupt byte is still caught.
    prefix = str(tmp_path / "a")
    rng = np.random.default_rng(23)
    lead = rng.integers(0, 255, 4096 + 48, dtype=np.uint8)  # the next tensor starts 48 bytes into a page
    big = rng.integers(0, 2**31, (300 << 10) + 5, dtype=np.int32)  # > one 256 KiB bounce piece
    bundle.write_bundle(prefix, ["a_lead", "b_big"], [lead, big])
    raw = np.empty(big.nbytes + 8192, np.uint8)
    base = raw.ctypes.data
    for ahead in (0, 1, 16, 31, 32, 47, 48, 49, 63, 64, 100, 2048, 4095):
        start = (48 + ahead - base) % 4096  # destination `ahead` bytes past the source within a page
        out = raw[start:start + big.nbytes].view(np.int32)
        out[:] = -1
        bundle.BundleReader(prefix).read_many(["b_big"], out=[out])
        assert np.array_equal(out, big), ahead
    np.testing.assert_array_equal(bundle.BundleReader(prefix).read("b_big"), big)
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.seek(lead.nbytes + 300_000)
        byte = f.read(1)
        f.seek(lead.nbytes + 300_000)
        f.write(bytes([byte[0] ^ 1]))
    for ahead in (0, 16):
        start = (48 + ahead - base) % 4096
        out = raw[start:start + big.nbytes].view(np.int32)
        with pytest.raises(errors.DataLossError):
            bundle.BundleReader(prefix).read_many(["b_big"], out=[out])


def test_a_reader_opened_from_the_index_bytes_never_opens_the_index_file(tmp_path):
    prefix = str(tmp_path / "m")
    value = np.arange(40, dtype=np.float32).reshape(8, 5)
    bundle.write_bundle(prefix, ["w", "s"], [value, np.array([b"a", b"bc"], dtype=object)])
    index = (tmp_path / "m.index").read_bytes()
    os.rename(tmp_path / "m.index", tmp_path / "elsewhere")  # another process read it: not here
    with bundle.BundleReader(prefix, index=index) as r:
        assert r.entries() == {"w": (dtypes.float32, (8, 5)), "s": (dtypes.string, (2,))}
        np.testing.assert_array_equal(r.read("w"), value)
        np.testing.assert_array_equal(r.read_slice("w", "8 5 2,3:-"), value[2:5])
        assert list(r.read("s")) == [b"a", b"bc"]
    os.remove(tmp_path / "m.data-00000-of-00001")
    with pytest.raises(errors.NotFoundError, match="m.data-00000-of-00001"):
        bundle.BundleReader(prefix, index=index).read("w")


@pytest.fixture
def page_test_state():
    """I/O threads, populate and the page-buffer cache as tests left them: restored afterwards."""
    before = bundle.get_io_threads()
    yield
    bundle.set_io_threads(before)
    _core._set_populate_disabled(False)
    _core._clear_page_cache()


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("lead", [0, 4, 16, 48, 4095])
@pytest.mark.parametrize("dtype", ["f4", "i1", "c16", "bfloat16"])
def test_a_lone_large_tensor_is_read_into_memory_placed_like_its_bytes_in_the_file(tmp_path, lead, dtype):
    # get_tensor of more than 1 MiB: a PageBuffer at the tensor's offset within a page (no bounce copy).
    prefix = str(tmp_path / "p")
    np_dtype = dtypes.as_dtype(dtype).np_dtype
    value = (np.arange((3 << 20) // np_dtype.itemsize + 7) % 251).astype(np_dtype).reshape(-1, 1)
    bundle.write_bundle(prefix, ["a_lead", "b"], [np.zeros(lead, np.uint8), value])
    reader = load_checkpoint(prefix)
    got = reader.get_tensor("b")
    offset = reader._reader._core.entry(b"b")["offset"]
    assert offset == lead
    assert isinstance(got.base, _core.PageBuffer)
    assert got.ctypes.data % 4096 == offset % 4096
    assert got.dtype == np_dtype and got.shape == value.shape
    assert got.flags.writeable and got.flags.c_contiguous
    np.testing.assert_array_equal(got, value)
    del reader
    got[0] = 1  # the array's memory outlives the reader, and is its own
    np.testing.assert_array_equal(got[1:], value[1:])
    np.testing.assert_array_equal(load_checkpoint(prefix).get_tensor("b"), value)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("populate", [True, False])
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_a_flipped_byte_anywhere_in_a_paged_read_is_data_loss_naming_file_and_key(
        tmp_path, page_test_state, threads, populate, where):
    # The reader checks the CRC of every byte whether or not the helper faulted its page in first, and
    # where the kernel refuses MADV_POPULATE_WRITE (older than 5.14) the read faults the pages itself.
    bundle.set_io_threads(threads)
    _core._set_populate_disabled(not populate)
    prefix = str(tmp_path / "c")
    value = np.random.default_rng(3).standard_normal(1_500_001).astype("f4")  # ~5.7 MiB
    bundle.write_bundle(prefix, ["s", "t"], [np.arange(3, dtype="i8"), value])
    reader = load_checkpoint(prefix)
    np.testing.assert_array_equal(reader.get_tensor("t"), value)
    data = prefix + ".data-00000-of-00001"
    _flip(data, 24 + int(where * value.nbytes) % value.nbytes)
    with pytest.raises(errors.DataLossError, match=rf"'t' in {data}.*stored crc32c"):
        load_checkpoint(prefix).get_tensor("t")
    assert load_checkpoint(prefix).get_tensor("s").tolist() == [0, 1, 2]


def test_freed_page_buffers_are_reused_and_fully_overwritten(tmp_path, page_test_state):
    prefix = str(tmp_path / "r")
    rng = np.random.default_rng(5)
    values = [rng.standard_normal(700_000).astype("f4") for _ in range(3)]  # 2.7 MB each
    bundle.write_bundle(prefix, ["a", "b", "c"], values)
    _core._clear_page_cache()
    reader = load_checkpoint(prefix)
    first = reader.get_tensor("a")
    assert first.base.fresh
    del first
    # Freed now, or (rarely) once the helper that was faulting its pages in lets go of it.
    deadline = time.monotonic() + 10
    while _core._page_cache_stats()[0] < values[0].nbytes and time.monotonic() < deadline:
        time.sleep(0.01)
    cached, reused = _core._page_cache_stats()
    assert cached >= values[0].nbytes
    second = reader.get_tensor("b")  # in the memory "a" had: every byte rewritten, the CRC checked
    assert not second.base.fresh
    assert _core._page_cache_stats()[1] == reused + 1
    np.testing.assert_array_equal(second, values[1])
    np.testing.assert_array_equal(reader.get_tensor("c"), values[2])


def test_the_page_buffer_cache_keeps_no_more_than_its_cap(tmp_path, page_test_state):
    prefix = str(tmp_path / "cap")
    n = 5
    values = [np.full(5 << 20, i, np.float32) for i in range(n)]
    bundle.write_bundle(prefix, [f"t{i}" for i in range(n)], values)
    reader = load_checkpoint(prefix)
    arrays = [reader.get_tensor(f"t{i}") for i in range(n)]  # 100 MiB
    assert [int(a[123]) for a in arrays] == list(range(n))
    del arrays
    assert 0 < _core._page_cache_stats()[0] <= _core._PAGE_CACHE_BYTES


def test_only_lone_large_reads_into_new_arrays_are_paged(tmp_path):
    prefix = str(tmp_path / "o")
    big = np.arange(1 << 19, dtype="i4")  # 2 MiB
    small = np.arange(1 << 18, dtype="i4")  # 1 MiB: numpy's, as before
    bundle.write_bundle(prefix, ["big", "small"], [big, small])
    reader = bundle.BundleReader(prefix)
    assert isinstance(reader.read("big").base, _core.PageBuffer)
    assert reader.read("small").base is None
    assert all(a.base is None for a in reader.read_many(["big", "small"]))  # a batch: numpy's arrays
    out = np.zeros_like(big)
    assert reader.read_many(["big"], out=[out])[0] is out
    np.testing.assert_array_equal(out, big)
    assert reader.read_slice("big", "524288 0,1000").base is None


def test_lone_paged_reads_of_a_partitioned_and_of_a_very_large_tensor_match(tmp_path, page_test_state):
    # A tensor assembled from slices has no one place in the file (phase 0); above 64 MiB the read is
    # split over the threads into the PageBuffer.
    prefix = str(tmp_path / "v")
    huge = (np.arange((64 << 20) + 4096 + 3) % 253).astype(np.uint8)
    part = np.random.default_rng(7).standard_normal((2000, 300)).astype("f4")
    bundle.write_bundle(prefix, ["huge", "part", "part"], [huge, part[:1000], part[1000:]],
                        ["", "2000 300 0,1000:-", "2000 300 1000,1000:-"])
    for threads in (1, 2):
        bundle.set_io_threads(threads)
        reader = load_checkpoint(prefix)
        got = reader.get_tensor("huge")
        assert isinstance(got.base, _core.PageBuffer)
        np.testing.assert_array_equal(got, huge)
        del got
        got = reader.get_tensor("part")
        assert isinstance(got.base, _core.PageBuffer)
        np.testing.assert_array_equal(got, part)
    _flip(prefix + ".data-00000-of-00001", huge.nbytes - 5)
    with pytest.raises(errors.DataLossError, match="'huge'"):
        load_checkpoint(prefix).get_tensor("huge")
