"""Hostile ``.npz`` files for the command line's readers (tests/test_cli.py).

``zip_with_member`` writes a ZIP by hand so a test can give a member any header, any compressed stream
and any sizes in the ZIP directory (``zipfile`` would compute them honestly). ``zeros_bomb`` is a
ZIP_DEFLATED stream of many GiB of zeros built from one repeated compressed block: a few MiB on disk,
made in milliseconds, never holding the zeros it stands for.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

_CHUNK = 1 << 20  # the zeros one repeated compressed block stands for


def npy_header(shape: tuple, descr: str = "<f4", version: int = 1) -> bytes:
    """A .npy magic + header claiming ``shape`` of ``descr`` (any shape: numpy writes what it is given)."""
    out = io.BytesIO()
    write = np.lib.format.write_array_header_1_0 if version == 1 else np.lib.format.write_array_header_2_0
    write(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A + B from crc(A), crc(B) and len(B) (zlib's crc32_combine, which Python lacks)."""

    def times(mat: list[int], vec: int) -> int:
        s, i = 0, 0
        while vec:
            if vec & 1:
                s ^= mat[i]
            vec >>= 1
            i += 1
        return s

    def square(mat: list[int]) -> list[int]:
        return [times(mat, mat[n]) for n in range(32)]

    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = square(odd)  # two zero bits
    odd = square(even)  # four
    while True:
        even = square(odd)
        if len2 & 1:
            crc1 = times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = square(even)
        if len2 & 1:
            crc1 = times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def zeros_bomb(prefix: bytes, n_zeros: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, CRC-32, uncompressed size) of ``prefix`` followed by ``n_zeros`` zero bytes;
    ``n_zeros`` must be a multiple of 1 MiB."""
    assert n_zeros % _CHUNK == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero = bytes(_CHUNK)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor starts afresh: the same input gives the same block every time.
    block = comp.compress(zero) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(zero) + comp.flush(zlib.Z_FULL_FLUSH)
    assert block == again
    n = n_zeros // _CHUNK
    stream = head + block * n + comp.flush()
    crc_zero = zlib.crc32(zero)
    crc_zeros, length = 0, 0  # crc of n chunks of zeros, by doubling
    power_crc, power_len = crc_zero, _CHUNK
    while n:
        if n & 1:
            crc_zeros = crc32_combine(crc_zeros, power_crc, power_len) if length else power_crc
            length += power_len
        power_crc = crc32_combine(power_crc, power_crc, power_len)
        power_len *= 2
        n >>= 1
    crc = crc32_combine(zlib.crc32(prefix), crc_zeros, n_zeros)
    return stream, crc, len(prefix) + n_zeros


def zip_with_member(path, name: str, data: bytes, crc: int, file_size: int, deflated: bool = True,
                    compress_size: int | None = None) -> None:
    """A ZIP archive of one member ``name`` whose stored bytes are ``data``, with the given CRC and
    uncompressed size in its local header and central directory (ZIP64 sizes, as numpy's savez)."""
    method = 8 if deflated else 0
    comp_size = len(data) if compress_size is None else compress_size
    raw_name = name.encode()
    extra = struct.pack("<HHQQ", 1, 16, file_size, comp_size)  # ZIP64: uncompressed, compressed sizes
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                        len(raw_name), len(extra)) + raw_name + extra
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF,
                          0xFFFFFFFF, len(raw_name), len(extra), 0, 0, 0, 0, 0) + raw_name + extra
    offset = len(local) + len(data)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), offset, 0)
    with open(path, "wb") as f:
        f.write(local)
        f.write(data)
        f.write(central)
        f.write(end)
