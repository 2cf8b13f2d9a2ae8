#!/usr/bin/env python3
"""How fast is a Saver? Build one over N variables, save, restore.

Usage: .venv/bin/python benchmarks/saver_build.py [--n 10000] [--repeat 5]
Target (issue 5): building a Saver for 10,000 variables <= 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import saverkit as sk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of variables")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (best is reported)")
    args = parser.parse_args()
    g = sk.Graph()
    with g.as_default():
        for i in range(args.n):
            sk.Variable(np.full(16, i, np.float32), name=f"layer{i // 100}/v{i}")
        wall = cpu = float("inf")
        for i in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            saver = sk.train.Saver(name=f"save_{i}")
            wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
        print(
            f"Saver over {args.n:,d} variables: {wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU "
            f"(best of {args.repeat}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
        with sk.Session() as sess, tempfile.TemporaryDirectory() as d:
            sess.run(sk.global_variables_initializer())
            t0 = time.perf_counter()
            prefix = saver.save(sess, os.path.join(d, "model"), write_meta_graph=False)
            t1 = time.perf_counter()
            saver.restore(sess, prefix)
            t2 = time.perf_counter()
            print(f"save {(t1 - t0) * 1e3:.1f} ms, restore {(t2 - t1) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
