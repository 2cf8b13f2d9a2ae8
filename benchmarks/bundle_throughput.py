"""Throughput of write_bundle / read_tensors on float32 data, with 1 thread and with every core.

Usage: python benchmarks/bundle_throughput.py [--gib 1.0] [--dir /tmp] [--tensors 1]
The page cache is not dropped: numbers are memory/CRC bound, as for a save followed by a restore.
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
from saverkit import bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--tensors", type=int, default=1)
    args = ap.parse_args()
    n = int(args.gib * (1 << 30) / 4 / args.tensors)
    tensors = [np.random.default_rng(i).standard_normal(n, dtype=np.float32) for i in range(args.tensors)]
    outs = [np.empty_like(t) for t in tensors]
    names = [f"t{i}" for i in range(args.tensors)]
    total = sum(t.nbytes for t in tensors) / (1 << 30)
    d = tempfile.mkdtemp(dir=args.dir)
    try:
        prefix = os.path.join(d, "ckpt")
        for threads in (1, os.cpu_count() or 1):
            bundle.set_io_threads(threads)
            t0 = time.perf_counter()
            bundle.write_bundle(prefix, names, tensors)
            t1 = time.perf_counter()
            bundle.read_tensors(prefix, names, out=outs)
            t2 = time.perf_counter()
            assert all(np.array_equal(a, b) for a, b in zip(tensors, outs, strict=True))
            print(f"{total:.2f} GiB in {args.tensors} tensor(s), {threads} thread(s): "
                  f"write {total / (t1 - t0):.2f} GiB/s, read {total / (t2 - t1):.2f} GiB/s")
    finally:
        shutil.rmtree(d)
        bundle.set_io_threads(None)


if __name__ == "__main__":
    main()
