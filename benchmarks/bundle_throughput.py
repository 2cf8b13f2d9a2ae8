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
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = int(args.gib * (1 << 30) / 4 / args.tensors)
    tensors = [np.random.default_rng(i).standard_normal(n, dtype=np.float32) for i in range(args.tensors)]
    outs = [np.zeros_like(t) for t in tensors]  # touched: measures I/O, not first-touch page faults
    names = [f"t{i}" for i in range(args.tensors)]
    total = sum(t.nbytes for t in tensors) / (1 << 30)
    d = tempfile.mkdtemp(dir=args.dir)
    try:
        for threads in (1, os.cpu_count() or 1):
            bundle.set_io_threads(threads)
            best = {"write": 0.0, "read into out=": 0.0, "read (fresh arrays)": 0.0}
            for r in range(args.repeat):
                prefix = os.path.join(d, f"ckpt-{threads}-{r}")
                os.sync()  # don't time the writeback of the previous round
                t0 = time.perf_counter()
                bundle.write_bundle(prefix, names, tensors)
                t1 = time.perf_counter()
                bundle.read_tensors(prefix, names, out=outs)
                t2 = time.perf_counter()
                fresh = bundle.read_tensors(prefix, names)
                t3 = time.perf_counter()
                assert all(np.array_equal(a, b) for a, b in zip(tensors, outs, strict=True))
                del fresh
                for k, dt in zip(best, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    best[k] = max(best[k], total / dt)
                for f in os.listdir(d):
                    os.remove(os.path.join(d, f))
            summary = ", ".join(f"{k} {v:.2f} GiB/s" for k, v in best.items())
            print(f"{total:.2f} GiB in {args.tensors} tensor(s), {threads} thread(s), best of {args.repeat}: "
                  f"{summary}")
    finally:
        shutil.rmtree(d)
        bundle.set_io_threads(None)


if __name__ == "__main__":
    main()
