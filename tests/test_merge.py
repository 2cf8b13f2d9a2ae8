"""merge_bundles: MergeV2Checkpoints semantics, byte-identical to TF's sharded Saver output."""

import os

import numpy as np
import pytest
from bundle_helpers import FIXTURES, entry_of, files_of, read_index, stored_payloads_in_data_order
from saverkit import bundle, errors


def _parts(tmp_path, groups):
    """Write each group {name: array} as its own single-shard part; return the part prefixes."""
    temp = tmp_path / "model_temp"
    prefixes = []
    for k, group in enumerate(groups):
        p = str(temp / f"part-{k:05d}-of-{len(groups):05d}")
        bundle.write_bundle(p, list(group), list(group.values()))
        prefixes.append(p)
    return prefixes


def test_v1_sharded_fixture_is_reproduced_byte_for_byte(tmp_path):
    src = str(FIXTURES / "v1_sharded" / "model.ckpt")
    reader = bundle.BundleReader(src)
    items = stored_payloads_in_data_order(src)
    prefixes = []
    for shard in range(3):
        names = [name for s, _, name, _, _ in items if s == shard]
        p = str(tmp_path / "model.ckpt_temp" / f"part-{shard:05d}-of-00003")
        bundle.write_bundle(p, names, reader.read_many(names))
        prefixes.append(p)
    dst = str(tmp_path / "model.ckpt")
    bundle.merge_bundles(prefixes, dst)
    expected = {k: v for k, v in files_of(src).items() if k != ".meta"}
    assert files_of(dst) == expected
    assert not (tmp_path / "model.ckpt_temp").exists()  # delete_old_dirs


def test_merge_renames_data_files_and_assigns_shard_ids(tmp_path):
    prefixes = _parts(tmp_path, [{"b": np.ones(2, "f4")}, {"a": np.zeros(3, "i4"), "c": np.ones(1, "i1")}])
    dst = str(tmp_path / "out" / "m")
    bundle.merge_bundles(prefixes, dst, delete_old_dirs=False)
    assert sorted(files_of(dst)) == [".data-00000-of-00002", ".data-00001-of-00002", ".index"]
    assert read_index(dst)[0][1] == bytes.fromhex("08021a020801")
    assert [entry_of(dst, k).shard_id for k in (b"a", b"b", b"c")] == [1, 0, 1]
    a, b, c = bundle.read_tensors(dst, ["a", "b", "c"])
    assert a.tolist() == [0, 0, 0] and b.tolist() == [1, 1] and c.tolist() == [1]
    assert os.path.isdir(tmp_path / "model_temp")  # kept: delete_old_dirs=False
    assert not [f for f in os.listdir(tmp_path / "model_temp") if f.endswith(".index")]


def test_duplicate_keys_across_parts_are_rejected(tmp_path):
    prefixes = _parts(tmp_path, [{"x": np.ones(1)}, {"x": np.ones(1)}])
    with pytest.raises(errors.InvalidArgumentError, match=r"Duplicate tensor keyed by 'x'.*part-00001"):
        bundle.merge_bundles(prefixes, str(tmp_path / "m"))


def test_missing_parts_error_unless_allowed(tmp_path):
    prefixes = _parts(tmp_path, [{"x": np.ones(1)}])
    missing = str(tmp_path / "model_temp" / "nothere")
    with pytest.raises(errors.NotFoundError, match=r"nothere\.index"):
        bundle.merge_bundles([missing] + prefixes, str(tmp_path / "m"))
    bundle.merge_bundles([missing] + prefixes, str(tmp_path / "m"), allow_missing_files=True)
    assert bundle.read_tensors(str(tmp_path / "m"), ["x"])[0].tolist() == [1.0]
    with pytest.raises(errors.InvalidArgumentError, match="At least one"):
        bundle.merge_bundles([missing], str(tmp_path / "m2"), allow_missing_files=True)


def test_empty_parts_do_not_break_the_shard_count(tmp_path):
    prefixes = _parts(tmp_path, [{"x": np.ones(1)}, {}, {"y": np.zeros(2)}])
    dst = str(tmp_path / "m")
    bundle.merge_bundles(prefixes, dst, delete_old_dirs=False)
    assert read_index(dst)[0][1] == bytes.fromhex("08021a020801")
    assert sorted(files_of(dst)) == [".data-00000-of-00002", ".data-00001-of-00002", ".index"]
    x, y = bundle.read_tensors(dst, ["x", "y"])
    assert x.tolist() == [1.0] and y.tolist() == [0.0, 0.0]


def test_slices_from_different_parts_are_merged_in_part_order(tmp_path):
    full = np.arange(12, dtype="f4").reshape(6, 2)
    p0 = str(tmp_path / "t" / "part-00000-of-00002")
    p1 = str(tmp_path / "t" / "part-00001-of-00002")
    bundle.write_bundle(p0, ["other", "v"], [np.ones(1, "f4"), full[3:]], ["", "6 2 3,3:-"])
    bundle.write_bundle(p1, ["v"], [full[:3]], ["6 2 0,3:-"])
    dst = str(tmp_path / "m")
    bundle.merge_bundles([p0, p1], dst)
    e = entry_of(dst, b"v")
    assert [s.extent[0].start for s in e.slices] == [3, 0]
    np.testing.assert_array_equal(bundle.read_tensors(dst, ["v"])[0], full)


def test_sliced_entry_takes_the_shard_of_the_part_where_it_first_appears(tmp_path):
    full = np.arange(4, dtype="f4")
    p0 = str(tmp_path / "t" / "p0")
    p1 = str(tmp_path / "t" / "p1")
    bundle.write_bundle(p0, ["a"], [np.ones(1, "f4")])
    bundle.write_bundle(p1, ["sl2"], [full[:2]], ["4 0,2"])
    dst = str(tmp_path / "m")
    bundle.merge_bundles([p0, p1], dst)
    assert entry_of(dst, b"sl2").shard_id == 1


def test_conflicting_slices_are_rejected(tmp_path):
    p0 = str(tmp_path / "t" / "p0")
    p1 = str(tmp_path / "t" / "p1")
    bundle.write_bundle(p0, ["v"], [np.ones(2, "f4")], ["4 0,2"])
    bundle.write_bundle(p1, ["v"], [np.ones(2, "f8")], ["4 2,2"])
    with pytest.raises(errors.FailedPreconditionError, match="'v'"):
        bundle.merge_bundles([p0, p1], str(tmp_path / "m"))
