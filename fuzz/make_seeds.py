"""Builds the committed seed corpus of the fuzz targets from real checkpoints.

    python fuzz/make_seeds.py [CHECKPOINT_DIR...]

Always packs the TensorFlow fixtures (tests/fixtures/tf-2.21); extra directories (e.g. checkpoints
written by saverkit) are added too. table_fuzzer seeds are raw `.index` files; bundle_fuzzer seeds
are `u32le length + bytes` chunks: the index first, then each data file in shard order (see
fuzz/fuzz_files.h). Bundles larger than 64 KiB are skipped (the runs use -max_len=65536).
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LEN = 65536


def chunk(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def pack(index: Path) -> bytes:
    prefix = str(index)[: -len(".index")]
    datas = sorted(Path(prefix).parent.glob(Path(prefix).name + ".data-*"))
    return chunk(index.read_bytes()) + b"".join(chunk(d.read_bytes()) for d in datas)


def write_seed(directory: Path, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main(extra: list[str]) -> None:
    dirs = [ROOT / "tests" / "fixtures" / "tf-2.21"] + [Path(d) for d in extra]
    for d in dirs:
        for index in sorted(d.rglob("*.index")):
            write_seed(ROOT / "fuzz" / "corpus" / "table_fuzzer", index.read_bytes())
            bundle = pack(index)
            if len(bundle) <= MAX_LEN:
                write_seed(ROOT / "fuzz" / "corpus" / "bundle_fuzzer", bundle)


if __name__ == "__main__":
    main(sys.argv[1:])
