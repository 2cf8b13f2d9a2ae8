"""Where the structure is inside a checkpoint's files, so mutations can aim at it.

A deliberately small, independent parser of the `.index` SSTable (format doc §3) and of the
BundleEntryProtos in it (§4). It is used only to *locate* things — block boundaries, handles,
trailers, the footer, each tensor's payload range in its data file — never to judge whether a
read was right: the campaigns compare against values read from the pristine files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from saverkit.protobuf import tensor_bundle_pb2

FOOTER_SIZE = 48
TRAILER_SIZE = 5
MAGIC = bytes.fromhex("57fb808b247547db")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def block_entries(block: bytes) -> list[tuple[bytes, bytes, int]]:
    """(key, value, offset of the entry inside the block) for every entry of a block."""
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    out, pos, key = [], 0, b""
    while pos < end:
        start = pos
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        out.append((key, block[pos : pos + value_len], start))
        pos += value_len
    return out


@dataclass
class Block:
    kind: str  # "data", "metaindex" or "index"
    offset: int
    size: int  # contents only; the 5-byte trailer follows

    @property
    def end(self) -> int:
        return self.offset + self.size + TRAILER_SIZE


@dataclass
class IndexLayout:
    size: int
    blocks: list[Block]
    entries: dict[bytes, tensor_bundle_pb2.BundleEntryProto]
    header: tensor_bundle_pb2.BundleHeaderProto
    # byte offsets inside the file of every entry start in every data block (aimed flips)
    entry_offsets: list[int] = field(default_factory=list)

    def boundaries(self) -> list[int]:
        """Every offset where a block, trailer or the footer starts (truncation points)."""
        cuts = set()
        for b in self.blocks:
            cuts.update((b.offset, b.offset + b.size, b.end))
        cuts.add(self.size - FOOTER_SIZE)
        return sorted(c for c in cuts if 0 <= c < self.size)


def parse_index(data: bytes) -> IndexLayout:
    footer = data[-FOOTER_SIZE:]
    assert footer[-8:] == MAGIC, "not an SSTable"
    meta_off, pos = _varint(footer, 0)
    meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    blocks = []
    entries: dict[bytes, tensor_bundle_pb2.BundleEntryProto] = {}
    entry_offsets = []
    header = tensor_bundle_pb2.BundleHeaderProto()
    for _, handle, _ in block_entries(data[index_off : index_off + index_size]):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        blocks.append(Block("data", off, size))
        for key, value, at in block_entries(data[off : off + size]):
            entry_offsets.append(off + at)
            if key == b"":
                header.ParseFromString(value)
            else:
                e = tensor_bundle_pb2.BundleEntryProto()
                e.ParseFromString(value)
                entries[key] = e
    blocks.append(Block("metaindex", meta_off, meta_size))
    blocks.append(Block("index", index_off, index_size))
    return IndexLayout(len(data), blocks, entries, header, entry_offsets)


def data_filename(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def tensor_ranges(layout: IndexLayout) -> dict[int, list[tuple[int, int]]]:
    """shard id -> sorted (offset, size) payload ranges in that data file."""
    out: dict[int, list[tuple[int, int]]] = {}
    for e in layout.entries.values():
        if e.slices or e.size == 0:
            continue  # full-tensor entry of a partitioned variable, or an empty tensor
        out.setdefault(e.shard_id, []).append((e.offset, e.size))
    return {k: sorted(v) for k, v in out.items()}
