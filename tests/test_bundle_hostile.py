"""Hostile inputs (tests/hostile/): corrupt, truncated and lying bundles give a clear OpError, never a crash,
a huge allocation or a wrong value."""

import importlib.util
import pathlib

import numpy as np
import pytest
from saverkit import bundle, errors

_spec = importlib.util.spec_from_file_location(
    "hostile_cases", pathlib.Path(__file__).resolve().parent / "hostile" / "hostile_cases.py")
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)


@pytest.mark.parametrize("case", hostile.CASES, ids=[c[0] for c in hostile.CASES])
def test_hostile_bundle_raises_a_named_op_error(tmp_path, case):
    name, build, key, error, text = case
    prefix = str(tmp_path / name)
    build(prefix)
    with pytest.raises(error) as info:
        bundle.read_tensors(prefix, [key])
    assert hostile.expected_text(text, prefix, key) in str(info.value)
    assert prefix in str(info.value) or f"'{key}'" in str(info.value)


def test_the_good_bundle_reads(tmp_path):
    prefix = str(tmp_path / "good")
    hostile.write_good(prefix)
    values = hostile.good_values(prefix)
    np.testing.assert_array_equal(values["p"], hostile.FULL)
    assert values["s"].tolist() == [b"ab", b"", b"xyz"]


def _read_all_or_error(prefix):
    try:
        return hostile.good_values(prefix)
    except errors.OpError as e:
        return e


def _assert_same(values, good):
    assert set(values) == set(good)
    for k, v in good.items():
        assert values[k].dtype == v.dtype and values[k].shape == v.shape
        assert values[k].tolist() == v.tolist(), k


@pytest.mark.parametrize("which", ["index", "data"])
def test_every_flipped_byte_is_detected_or_harmless(tmp_path, which):
    prefix = str(tmp_path / "m")
    hostile.write_good(prefix)
    good = hostile.good_values(prefix)
    path = pathlib.Path(prefix + (".index" if which == "index" else hostile.DATA))
    original = path.read_bytes()
    harmless = 0
    for i in range(len(original)):
        for flip in (0x01, 0x80):
            data = bytearray(original)
            data[i] ^= flip
            path.write_bytes(bytes(data))
            result = _read_all_or_error(prefix)
            if isinstance(result, errors.OpError):
                if which == "data":
                    assert isinstance(result, errors.DataLossError), (i, result)
                assert str(path) in str(result) or "'" in str(result), (i, str(result))
            else:
                _assert_same(result, good)  # e.g. footer padding or the (unread) metaindex block
                harmless += 1
    path.write_bytes(original)
    if which == "data":
        assert harmless == 0  # every payload byte is covered by a CRC
    else:
        assert harmless < 2 * 60  # only footer padding, magic-free bytes and the metaindex block


@pytest.mark.parametrize("cut", [1, 5, 20, 48, 100])
def test_truncation_anywhere_is_data_loss(tmp_path, cut):
    for which in (".index", hostile.DATA):
        prefix = str(tmp_path / ("mi" if which == ".index" else "md"))
        hostile.write_good(prefix)
        path = pathlib.Path(prefix + which)
        data = path.read_bytes()
        path.write_bytes(data[: max(0, len(data) - cut)])
        with pytest.raises(errors.DataLossError):
            hostile.good_values(prefix)


def test_checksum_errors_print_the_crcs_in_hex(tmp_path):
    # Regression: the CRCs were printed in decimal behind a "0x" prefix.
    prefix = str(tmp_path / "crc")
    bundle.write_bundle(prefix, ["v"], [np.arange(16, dtype=np.float32)])
    data = tmp_path / "crc.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(errors.DataLossError) as info:
        bundle.read_tensors(prefix, ["v"])
    import re

    crcs = re.findall(r"0x([0-9a-fA-F]+)", str(info.value))
    assert len(crcs) == 2 and all(len(c) == 8 for c in crcs), str(info.value)
    assert crcs[0] != crcs[1]
