"""Hostile checkpoint files: truncated, bit-flipped and lying variants of one good bundle.

Used by tests/test_bundle_hostile.py, which generates them into a temporary directory. To look at them:
``python tests/hostile/hostile_cases.py OUT_DIR`` writes every case as OUT_DIR/<case>.{index,data-...}.

Each case is (name, build(prefix), key to read, expected error class, text the message must contain).
The text is "{file}" (the index or data file path), "{key}" or a literal.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys

import numpy as np
from saverkit import _core, bundle, errors
from saverkit.protobuf import tensor_bundle_pb2

DATA = ".data-00000-of-00001"
FULL = np.arange(12, dtype="f4").reshape(4, 3)


def write_good(prefix: str) -> None:
    bundle.write_bundle(
        prefix,
        ["f", "s", "i", "p", "p"],
        [np.arange(20, dtype="f4").reshape(4, 5), np.array([b"ab", b"", b"xyz"], dtype=object), np.int64(7),
         FULL[:2], FULL[2:]],
        ["", "", "", "4 3 0,2:-", "4 3 2,2:-"],
    )


def good_values(prefix: str) -> dict[str, object]:
    r = bundle.BundleReader(prefix)
    return {k: r.read(k) for k in r.entries()}


# --- helpers that edit a bundle in place -------------------------------------------

def _kvs(prefix):
    return _core.read_table(prefix + ".index")


def _write(prefix, kvs):
    _core.write_table(prefix + ".index", kvs)


def _edit_entry(key: bytes, mutate):
    def build(prefix):
        write_good(prefix)
        kvs = []
        for k, v in _kvs(prefix):
            if k == key:
                e = tensor_bundle_pb2.BundleEntryProto.FromString(v)
                mutate(e)
                v = e.SerializeToString()
            kvs.append((k, v))
        _write(prefix, kvs)
    return build


def _edit_header(mutate):
    def build(prefix):
        write_good(prefix)
        kvs = _kvs(prefix)
        h = tensor_bundle_pb2.BundleHeaderProto.FromString(kvs[0][1])
        mutate(h)
        kvs[0] = (b"", h.SerializeToString())
        _write(prefix, kvs)
    return build


def _edit_file(suffix: str, fn):
    def build(prefix):
        write_good(prefix)
        path = prefix + suffix
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data = fn(data)
        with open(path, "wb") as f:
            f.write(bytes(data))
    return build


def _set_shape(e, dims):
    e.shape.ClearField("dim")
    for d in dims:
        e.shape.dim.add(size=d)


def _varint(buf, i):
    shift = v = 0
    while True:
        b = buf[i]
        v |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return v, i
        shift += 7


def first_data_block(index: bytes) -> tuple[int, int]:
    """(offset, size) of the first data block, read through the footer and index block."""
    footer = index[-48:]
    _, i = _varint(footer, 0)
    _, i = _varint(footer, i)
    off, i = _varint(footer, i)
    size, _ = _varint(footer, i)
    block = index[off:off + size]
    _, j = _varint(block, 0)
    nk, j = _varint(block, j)
    _, j = _varint(block, j)
    j += nk
    boff, j = _varint(block, j)
    bsize, _ = _varint(block, j)
    return boff, bsize


def _patch_block(fn):
    """Change the first data block's contents, then fix its CRC so only the parser can object."""
    def edit(data):
        off, size = first_data_block(bytes(data))
        contents = bytes(fn(bytearray(data[off:off + size])))
        assert len(contents) == size
        data[off:off + size + 5] = contents + _core.block_trailer(contents, 0)
        return data
    return edit


def _huge_restarts(block):
    block[-4:] = struct.pack("<I", 0xFFFFFFF)
    return block


def _entry_past_block(block):
    # The header entry claims a value far longer than the block.
    block[2] = 0x7F
    return block


def _bad_string_length(data):
    data[0] = 0xFF  # first varint becomes a huge multi-byte length
    data[1] = 0xFF
    return data


def _drop_slice_entry(prefix):
    write_good(prefix)
    _write(prefix, [(k, v) for k, v in _kvs(prefix) if not k.startswith(b"\x00p\x00\x01\x01\x02\x82")])


def _overlapping_slices(prefix):
    write_good(prefix)
    kvs = dict(_kvs(prefix))
    e = tensor_bundle_pb2.BundleEntryProto.FromString(kvs[b"p"])
    e.slices[1].extent[0].start = 1  # rows 1..2 overlap rows 0..1
    kvs[b"p"] = e.SerializeToString()
    kvs[_core.slice_key("p", "4 3 1,2:-")] = kvs[_core.slice_key("p", "4 3 2,2:-")]
    _write(prefix, sorted(kvs.items()))


def _no_header(prefix):
    write_good(prefix)
    _write(prefix, _kvs(prefix)[1:])


def _string_offset(prefix):
    return tensor_bundle_pb2.BundleEntryProto.FromString(dict(_kvs(prefix))[b"s"]).offset


def _corrupt_strings(at):
    def build(prefix):
        write_good(prefix)
        off = _string_offset(prefix)
        with open(prefix + DATA, "r+b") as f:
            f.seek(off + at)
            b = f.read(1)
            f.seek(off + at)
            f.write(bytes([b[0] ^ 0x40]))
    return build


def _string_lengths_huge(prefix):
    write_good(prefix)
    off = _string_offset(prefix)
    with open(prefix + DATA, "r+b") as f:
        f.seek(off)
        f.write(_bad_string_length(bytearray(f.read(2))))


CASES = [
    ("index_empty", _edit_file(".index", lambda d: d[:0]), "f", errors.DataLossError, "{index}"),
    ("index_truncated_47", _edit_file(".index", lambda d: d[:47]), "f", errors.DataLossError, "too short"),
    ("index_truncated_tail", _edit_file(".index", lambda d: d[:-1]), "f", errors.DataLossError, "{index}"),
    ("index_truncated_half", _edit_file(".index", lambda d: d[: len(d) // 2]), "f", errors.DataLossError,
     "{index}"),
    ("bad_magic", _edit_file(".index", lambda d: d[:-1] + b"\x00"), "f", errors.DataLossError, "magic"),
    ("index_handle_outside_file", _edit_file(".index", lambda d: d[:-48] + bytes([0, 0, 0xFF, 0xFF, 0x7F, 5])
                                             + d[-42:]), "f", errors.DataLossError, "outside"),
    ("block_crc_flipped", _edit_file(".index", lambda d: d[:5] + bytes([d[5] ^ 1]) + d[6:]), "f",
     errors.DataLossError, "checksum"),
    ("block_restart_count_huge", _edit_file(".index", _patch_block(_huge_restarts)), "f",
     errors.DataLossError, "restart"),
    ("block_entry_past_end", _edit_file(".index", _patch_block(_entry_past_block)), "f", errors.DataLossError,
     "{index}"),
    ("no_header_entry", _no_header, "f", errors.DataLossError, "header"),
    ("min_consumer_too_new", _edit_header(lambda h: setattr(h.version, "min_consumer", 5)), "f",
     errors.InvalidArgumentError, "consumer version"),
    ("bad_consumer_listed", _edit_header(lambda h: h.version.bad_consumers.append(1)), "f",
     errors.InvalidArgumentError, "disallows"),
    ("num_shards_zero", _edit_header(lambda h: setattr(h, "num_shards", 0)), "f", errors.DataLossError,
     "num_shards"),
    ("endianness_unknown", _edit_header(lambda h: setattr(h, "endianness", 7)), "f", errors.DataLossError,
     "endianness"),
    ("data_truncated", _edit_file(DATA, lambda d: d[:40]), "f", errors.DataLossError, "{data}"),
    ("data_missing", lambda p: (write_good(p), os.remove(p + DATA)), "f", errors.NotFoundError, "{data}"),
    ("size_huge", _edit_entry(b"f", lambda e: setattr(e, "size", 1 << 62)), "f", errors.DataLossError,
     "{key}"),
    ("size_wrong", _edit_entry(b"f", lambda e: setattr(e, "size", 76)), "f", errors.DataLossError,
     "Invalid size"),
    ("offset_outside_data", _edit_entry(b"f", lambda e: setattr(e, "offset", 10_000)), "f",
     errors.DataLossError, "outside its data file"),
    ("offset_negative", _edit_entry(b"f", lambda e: setattr(e, "offset", -8)), "f", errors.DataLossError,
     "{key}"),
    ("shape_huge", _edit_entry(b"f", lambda e: _set_shape(e, [1 << 40, 1 << 40])), "f", errors.DataLossError,
     "{key}"),
    ("shape_overflows", _edit_entry(b"f", lambda e: _set_shape(e, [1 << 62, 1 << 62, 0])), "f",
     errors.DataLossError, "shape"),
    ("shape_negative", _edit_entry(b"f", lambda e: _set_shape(e, [-4, -5])), "f", errors.DataLossError,
     "shape"),
    ("dtype_unknown", _edit_entry(b"f", lambda e: setattr(e, "dtype", 99)), "f", errors.DataLossError,
     "dtype"),
    ("dtype_variant", _edit_entry(b"f", lambda e: setattr(e, "dtype", 21)), "f", errors.UnimplementedError,
     "{key}"),
    ("shard_id_out_of_range", _edit_entry(b"f", lambda e: setattr(e, "shard_id", 7)), "f",
     errors.DataLossError, "shard"),
    ("crc_wrong", _edit_entry(b"f", lambda e: setattr(e, "crc32c", e.crc32c ^ 1)), "f", errors.DataLossError,
     "stored crc32c"),
    ("string_count_exceeds_size", _edit_entry(b"s", lambda e: _set_shape(e, [1 << 40])), "s",
     errors.DataLossError, "{key}"),
    ("string_length_huge", _string_lengths_huge, "s", errors.DataLossError, "Corrupt length"),
    ("string_length_checksum", _corrupt_strings(3), "s", errors.DataLossError, "length checksum"),
    ("string_bytes_flipped", _corrupt_strings(8), "s", errors.DataLossError, "stored crc32c"),
    ("slice_entry_missing", _drop_slice_entry, "p", errors.DataLossError, "missing"),
    ("slices_overlap", _overlapping_slices, "p", errors.DataLossError, "Overlapping"),
    ("slice_out_of_bounds", _edit_entry(b"p", lambda e: setattr(e.slices[1].extent[0], "length", 9)), "p",
     errors.DataLossError, "out of bounds"),
]


def expected_text(template: str, prefix: str, key: str) -> str:
    return template.format(index=prefix + ".index", data=prefix + DATA, key=f"'{key}'")


if __name__ == "__main__":
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name, build, *_ in CASES:
        build(os.path.join(out, name))
    print(f"wrote {len(CASES)} hostile bundles to {out}")
