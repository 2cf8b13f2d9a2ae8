"""The LevelDB table pieces on their own: blocks, trailers, index separators, footer, reader checks."""

import bisect
import pathlib
import struct

import numpy as np
import pytest
from saverkit import _core, bundle, errors

# Spec 3.9: the 142-byte index TF writes for SaveV2(['b','a'], [[b'ab', b''], [1.0, 2.0]]).
SPEC_INDEX = bytes.fromhex(
    "000006080 11a020801".replace(" ", "")
    + "0001116108011204120208022008280835593ce535"
    + "00010f620807120412020802280835918 8b04d".replace(" ", "")
    + "0000000001000000"
    + "003903 87a5".replace(" ", "")
    + "0000000001000000" + "00c0f2a1b0"
    + "000102630039" + "0000000001000000"
    + "00a1756bff"
    + "3e084b0e" + "00" * 36 + "57fb808b247547db"
)
SPEC_DATA = bytes.fromhex("0200" + "78270b34" + "6162" + "0000803f00000040")
HEADER = bytes.fromhex("08011a020801")
ENTRY_A = bytes.fromhex("08011204120208022008280835593ce535")
ENTRY_B = bytes.fromhex("0807120412020802280835918 8b04d".replace(" ", ""))


def test_spec_example_is_142_bytes():
    assert len(SPEC_INDEX) == 142


def test_block_builder_golden_bytes():
    block = _core.build_block([(b"", HEADER), (b"a", ENTRY_A), (b"b", ENTRY_B)], 16)
    assert block == SPEC_INDEX[:0x39]
    assert _core.block_trailer(block, 0) == bytes.fromhex("00390387a5")


def test_empty_block_and_its_trailer():
    assert _core.build_block([], 16) == bytes.fromhex("0000000001000000")
    assert _core.block_trailer(bytes.fromhex("0000000001000000"), 0) == bytes.fromhex("00c0f2a1b0")


def test_table_builder_reproduces_spec_index(tmp_path):
    path = str(tmp_path / "t.index")
    _core.write_table(path, [(b"", HEADER), (b"a", ENTRY_A), (b"b", ENTRY_B)])
    assert pathlib.Path(path).read_bytes() == SPEC_INDEX
    assert _core.read_table(path) == [(b"", HEADER), (b"a", ENTRY_A), (b"b", ENTRY_B)]


def test_bundle_writer_reproduces_spec_example(tmp_path):
    prefix = str(tmp_path / "m")
    strings = np.array([b"ab", b""], dtype=object)
    bundle.write_bundle(prefix, ["b", "a"], [strings, np.array([1.0, 2.0], "f4")])
    assert pathlib.Path(prefix + ".index").read_bytes() == SPEC_INDEX
    assert pathlib.Path(prefix + ".data-00000-of-00001").read_bytes() == SPEC_DATA


def test_prefix_compression_and_restart_every_16_entries():
    kvs = [(f"key{i:03d}".encode(), b"v") for i in range(20)]
    block = _core.build_block(kvs, 16)
    n = struct.unpack("<I", block[-4:])[0]
    restarts = struct.unpack(f"<{n}I", block[-4 - 4 * n:-4])
    assert n == 2 and restarts[0] == 0
    # Entry 1 shares "key00" (5 bytes) with entry 0; entry 16 is a restart with shared 0.
    first = 3 + 6 + 1
    assert block[first:first + 3] == bytes([5, 1, 1])
    assert block[restarts[1]:restarts[1] + 3] == bytes([0, 6, 1])


def test_index_blocks_restart_at_every_entry():
    kvs = [(f"k{i}".encode(), b"x") for i in range(5)]
    block = _core.build_block(kvs, 1)
    assert struct.unpack("<I", block[-4:])[0] == 5


@pytest.mark.parametrize("key,succ", [(b"u8", b"v"), (b"b", b"c"), (b"pv", b"q"), (b"z" * 30, b"{"),
                                      (b"\xff\xff", b"\xff\xff"), (b"", b""), (b"\xffa", b"\xffb")])
def test_short_successor(key, succ):
    assert _core.find_short_successor(key) == succ


@pytest.mark.parametrize("start,limit,sep", [
    (b"abc", b"abe", b"abd"),        # gap of two: increment and cut
    (b"abc", b"abd", b"abc"),        # adjacent bytes: unchanged
    (b"zzz", b"zzzb", b"zzz"),       # prefix: unchanged
    (b"a\xff1", b"b", b"a\xff1"),    # 'a'+1 == 'b' is not < limit
    (b"abc", b"b", b"abc"),
    (b"a", b"c", b"b"),
    (b"a\x05zz", b"a\x09", b"a\x06"),
])
def test_shortest_separator(start, limit, sep):
    got = _core.find_shortest_separator(start, limit)
    assert got == sep
    assert start <= got < limit


def _blocks(path):
    """(offset, size, type) of every data block, from the footer and index block."""
    data = pathlib.Path(path).read_bytes()
    footer = data[-48:]
    assert footer[40:] == bytes.fromhex("57fb808b247547db")

    def varint(buf, i):
        shift = v = 0
        while True:
            b = buf[i]
            v |= (b & 0x7F) << shift
            i += 1
            if b < 0x80:
                return v, i
            shift += 7

    _, i = varint(footer, 0)
    _, i = varint(footer, i)
    index_off, i = varint(footer, i)
    index_size, _ = varint(footer, i)
    index = data[index_off:index_off + index_size]
    n = struct.unpack("<I", index[-4:])[0]
    body = index[: len(index) - 4 - 4 * n]
    out, i = [], 0
    while i < len(body):
        shared, i = varint(body, i)
        nk, i = varint(body, i)
        nv, i = varint(body, i)
        assert shared == 0
        j = i + nk
        off, k = varint(body, j)
        size, _ = varint(body, k)
        out.append((body[i:j], off, size, data[off + size]))
        i = j + nv
    return out


def test_blocks_are_cut_at_256_kib(tmp_path):
    path = str(tmp_path / "many.index")
    kvs = [(f"tensor/{i:05d}".encode(), bytes(60)) for i in range(6000)]
    _core.write_table(path, kvs)
    blocks = _blocks(path)
    assert len(blocks) == 2
    assert all(t == 0 for *_, t in blocks)  # never compressed
    first_size = blocks[0][2]
    assert 262144 <= first_size < 262144 + 100
    assert _core.read_table(path) == kvs


def test_oversized_entry_gets_a_block_of_its_own(tmp_path):
    path = str(tmp_path / "big.index")
    kvs = [(b"a", b"small"), (b"b" + b"k" * 600_000, b"v")]
    _core.write_table(path, kvs)
    blocks = _blocks(path)
    assert len(blocks) == 2
    assert blocks[0][0] == b"a"  # "a"+1 == "b" is not below the limit: unchanged
    assert blocks[1][2] == 1 + 3 + 1 + 600_001 + 1 + 8  # varints, key, value, restart array
    assert _core.read_table(path) == kvs


def test_keys_out_of_order_are_rejected_by_the_builder(tmp_path):
    with pytest.raises(errors.InternalError):
        _core.write_table(str(tmp_path / "x"), [(b"b", b""), (b"a", b"")])


# --- Snappy blocks (TF's reader accepts them; TF never writes them) -------------------------------

def _snappy_literal(data: bytes) -> bytes:
    out = bytearray()
    n = len(data)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    for i in range(0, len(data), 60):  # literals of up to 60 bytes use a one-byte tag
        chunk = data[i:i + 60]
        out.append((len(chunk) - 1) << 2)
        out += chunk
    return bytes(out)


def test_snappy_decoder_literals_and_copies():
    # "ab" then a 1-byte-offset copy of 8 bytes at distance 2.
    assert _core.snappy_uncompress(bytes([10, 0x04]) + b"ab" + bytes([0x11, 0x02])) == b"ab" * 5
    assert _core.snappy_uncompress(_snappy_literal(b"hello" * 50)) == b"hello" * 50


@pytest.mark.parametrize("bad", [
    bytes([10, 0x04]) + b"ab",                  # shorter than the header says
    bytes([3, 0x11, 0x05]),                     # copy before the start
    bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),      # absurd length
    bytes([4, 0x0C]) + b"a",                    # truncated literal
])
def test_snappy_decoder_rejects_corrupt_input(bad):
    with pytest.raises(errors.DataLossError):
        _core.snappy_uncompress(bad)


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def test_reader_accepts_snappy_compressed_blocks(tmp_path):
    kvs = [(f"k{i:04d}".encode(), b"value-%d" % i) for i in range(100)]
    contents = _core.build_block(kvs, 16)
    compressed = _snappy_literal(contents)
    data = compressed + _core.block_trailer(compressed, 1)
    meta = _core.build_block([], 16)
    meta_off = len(data)
    data += meta + _core.block_trailer(meta, 0)
    index = _core.build_block([(b"l", _varint(0) + _varint(len(compressed)))], 1)
    index_off = len(data)
    data += index + _core.block_trailer(index, 0)
    handles = _varint(meta_off) + _varint(len(meta)) + _varint(index_off) + _varint(len(index))
    data += handles + bytes(40 - len(handles)) + bytes.fromhex("57fb808b247547db")
    path = tmp_path / "snappy.index"
    path.write_bytes(data)
    assert _core.read_table(str(path)) == kvs


def test_reader_names_file_and_offset_on_block_checksum_error(tmp_path):
    path = tmp_path / "t.index"
    _core.write_table(str(path), [(b"", HEADER), (b"a", ENTRY_A), (b"b", ENTRY_B)])
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(errors.DataLossError, match=r"t\.index.*offset 0.*expected crc32c"):
        _core.read_table(str(path))


def test_reader_rejects_bad_magic_and_short_files(tmp_path):
    path = tmp_path / "t.index"
    path.write_bytes(SPEC_INDEX[:-1] + b"\x00")
    with pytest.raises(errors.DataLossError, match="magic"):
        _core.read_table(str(path))
    path.write_bytes(SPEC_INDEX[:40])
    with pytest.raises(errors.DataLossError, match="too short"):
        _core.read_table(str(path))


# --- point lookups: only the block that can hold a key is read ------------------------------------

def _many_block_table(tmp_path, n=20_000):
    path = str(tmp_path / "many.index")
    kvs = [(f"tensor/{i:06d}".encode(), b"v%d" % i + bytes(40)) for i in range(n)]
    _core.write_table(path, kvs)
    blocks = _blocks(path)
    assert len(blocks) >= 4
    return path, kvs, blocks


def test_lookups_find_every_key_and_only_those_keys(tmp_path):
    path, kvs, blocks = _many_block_table(tmp_path)
    probe = [kvs[0][0], kvs[-1][0], kvs[4_321][0], kvs[15_000][0]]
    # Each block's last key and the first key after it; the index separators themselves (not keys).
    keys = [k for k, _ in kvs]
    for sep, _, _, _ in blocks:
        i = bisect.bisect_right(keys, sep)  # keys[i - 1] ends the block, keys[i] starts the next
        probe += keys[i - 1:i + 1]
    missing = [b"", b"a", b"tensor/", b"tensor/004321x", b"tensor/9", b"\xff" * 3] + [s for s, *_ in blocks]
    got = _core.table_get(path, probe + missing)
    expected = dict(kvs)
    assert got[: len(probe)] == [expected[k] for k in probe]
    assert got[len(probe):] == [expected.get(k) for k in missing]


def test_a_corrupt_data_block_is_reported_only_by_lookups_in_it(tmp_path):
    path, kvs, blocks = _many_block_table(tmp_path)
    _, off, size, _ = blocks[2]
    data = bytearray(pathlib.Path(path).read_bytes())
    data[off + size // 2] ^= 0x01
    pathlib.Path(path).write_bytes(bytes(data))
    in_block = [k for k, _ in kvs if blocks[1][0] < k <= blocks[2][0]]
    assert _core.table_get(path, [kvs[0][0], kvs[-1][0]]) == [kvs[0][1], kvs[-1][1]]
    with pytest.raises(errors.DataLossError, match=rf"many\.index at offset {off}.*expected crc32c"):
        _core.table_get(path, [in_block[len(in_block) // 2]])
    with pytest.raises(errors.DataLossError, match=r"many\.index"):
        _core.read_table(path)


def test_a_block_holding_keys_its_index_entry_does_not_cover_is_data_loss(tmp_path):
    # Two blocks whose index separators are swapped: every CRC is valid, but a lookup would miss keys.
    first = _core.build_block([(b"a", b"1"), (b"b", b"2")], 16)
    second = _core.build_block([(b"c", b"3"), (b"d", b"4")], 16)
    data = first + _core.block_trailer(first, 0)
    second_off = len(data)
    data += second + _core.block_trailer(second, 0)
    meta = _core.build_block([], 16)
    meta_off = len(data)
    data += meta + _core.block_trailer(meta, 0)
    index = _core.build_block([(b"a", _varint(0) + _varint(len(first))),
                               (b"e", _varint(second_off) + _varint(len(second)))], 1)
    index_off = len(data)
    data += index + _core.block_trailer(index, 0)
    handles = _varint(meta_off) + _varint(len(meta)) + _varint(index_off) + _varint(len(index))
    data += handles + bytes(40 - len(handles)) + bytes.fromhex("57fb808b247547db")
    path = tmp_path / "t.index"
    path.write_bytes(data)
    with pytest.raises(errors.DataLossError, match="out of order with the index block"):
        _core.table_get(str(path), [b"a"])
    with pytest.raises(errors.DataLossError, match="out of order with the index block"):
        _core.read_table(str(path))
    assert _core.table_get(str(path), [b"d"]) == [b"4"]  # the second block is consistent
