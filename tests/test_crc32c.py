"""CRC32C: published vectors, hardware == software, combine, masking, and CRCs stored by real TF."""

import numpy as np
import pytest
from bundle_helpers import FIXTURES, read_index
from saverkit import _core
from saverkit.protobuf import tensor_bundle_pb2

VECTORS = [
    (b"123456789", 0xE3069283),
    (b"", 0),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
]

IMPLS = [_core.crc32c, _core.crc32c_software]
if _core.crc32c_hardware_available():
    IMPLS.append(_core.crc32c_hardware)
if _core.crc32c_folding_available():
    IMPLS.append(_core.crc32c_folding)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("data,expected", VECTORS)
def test_published_vectors(impl, data, expected):
    assert impl(data) == expected


def test_hardware_instruction_is_used_on_x86_64():
    import platform

    if platform.machine() in ("x86_64", "AMD64"):
        assert _core.crc32c_hardware_available()


@pytest.mark.skipif(not _core.crc32c_hardware_available(), reason="no CRC instruction")
def test_hardware_equals_software_on_random_data_of_every_alignment():
    rng = np.random.default_rng(1)
    buf = rng.integers(0, 256, 70_000, dtype=np.uint8).tobytes()
    for start in range(0, 9):
        for length in [0, 1, 7, 8, 9, 31, 32, 33, 255, 4096, 65_537]:
            piece = buf[start:start + length]
            assert _core.crc32c_hardware(piece) == _core.crc32c_software(piece)


@pytest.mark.skipif(not _core.crc32c_folding_available(), reason="no AVX-512 VPCLMULQDQ")
def test_folding_equals_software_across_every_fold_boundary_and_alignment():
    # Lengths around the 256-byte main loop, the 64-byte fold, the tail and the
    # 44 KiB hybrid block (vector folds beside three crc32 stripes), from every
    # start offset within a cache line, with and without a running CRC.
    rng = np.random.default_rng(3)
    buf = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    lengths = [0, 1, 15, 16, 63, 64, 65, 255, 256, 257, 319, 320, 321, 511, 512, 513, 767, 768, 1000,
               4096, 45_055, 45_056, 45_057, 65_537, 90_112 + 300, 262_144, 262_144 + 63]
    for start in range(0, 65):
        for length in lengths:
            piece = buf[start:start + length]
            for init in (0, 0xE3069283):
                expected = _core.crc32c_software(piece, init)
                assert _core.crc32c_folding(piece, init) == expected, (start, length)


@pytest.mark.skipif(not _core.crc32c_folding_available(), reason="no AVX-512 VPCLMULQDQ")
def test_folding_on_structured_data_that_cancels_in_xor():
    # All-ones and repeated patterns make lanes equal: an XOR of two lanes that
    # should have been multiplied first would cancel to zero and go unnoticed on
    # random data less often than here.
    for data in (b"\xff" * 4096, b"\x00" * 4096, bytes(range(256)) * 16, b"\x01" + bytes(4095)):
        assert _core.crc32c_folding(data) == _core.crc32c_software(data)


def test_extend_uses_the_fastest_implementation_the_cpu_has():
    impl = _core.crc32c_implementation()
    if _core.crc32c_folding_available():
        assert impl == "vpclmulqdq-avx512"
    elif _core.crc32c_hardware_available():
        assert impl == "crc32-instruction"
    else:
        assert impl == "table"


def test_extend_equals_crc_of_concatenation():
    a, b = b"hello, ", b"world" * 100
    assert _core.crc32c(b, _core.crc32c(a)) == _core.crc32c(a + b)
    assert _core.crc32c_software(b, _core.crc32c_software(a)) == _core.crc32c(a + b)


def test_combine_matches_crc_of_concatenation():
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    for cut in [0, 1, 8, 1000, 65_536, 99_999, 100_000]:
        a, b = data[:cut], data[cut:]
        assert _core.crc32c_combine(_core.crc32c(a), _core.crc32c(b), len(b)) == _core.crc32c(data)


def test_combine_handles_huge_lengths_without_data():
    # crc(zeros(n)) for n = 2^33 via repeated doubling must agree with combine's own shift.
    crc = _core.crc32c(bytes(1 << 20))
    n = 1 << 20
    while n < (1 << 33):
        crc = _core.crc32c_combine(crc, crc, n)
        n *= 2
    # Splitting differently gives the same answer.
    half = _core.crc32c(bytes(1 << 19))
    other = half
    m = 1 << 19
    while m < (1 << 33):
        other = _core.crc32c_combine(other, other, m)
        m *= 2
    assert crc == other


def test_mask_is_tfs_rotate_and_add():
    assert _core.crc32c_mask(0) == 0xA282EAD8
    assert _core.crc32c_mask(0x28C0C9B1) == 0x35E53C59  # spec 5.2 float32 [1.0, 2.0]
    for v in [0, 1, 0xFFFFFFFF, 0x12345678, 0xE3069283]:
        assert _core.crc32c_unmask(_core.crc32c_mask(v)) == v


def test_crc_of_spec_float_example():
    assert _core.crc32c(np.array([1.0, 2.0], "<f4").tobytes()) == 0x28C0C9B1


def test_every_numeric_crc_stored_by_tf_matches():
    checked = 0
    for index in FIXTURES.glob("*/*.index"):
        prefix = str(index)[: -len(".index")]
        kvs = read_index(prefix)
        num_shards = tensor_bundle_pb2.BundleHeaderProto.FromString(kvs[0][1]).num_shards
        for key, value in kvs[1:]:
            e = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            if e.slices or e.dtype == 7:
                continue
            data_file = index.parent / f"{index.name[:-6]}.data-{e.shard_id:05d}-of-{num_shards:05d}"
            data = data_file.read_bytes()
            payload = data[e.offset:e.offset + e.size]
            assert _core.crc32c_mask(_core.crc32c(payload)) == e.crc32c, key
            checked += 1
    assert checked > 50
