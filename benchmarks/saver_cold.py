#!/usr/bin/env python3
"""The cold case of the issue-6 target "Saver() for 10,000 variables <= 0.1 s": the first Saver() in a fresh
process, right after building the W2 graph (as io_throughput.py's `construct` does), one process per run.

Usage: .venv/bin/python benchmarks/saver_cold.py [--runs 5]
Each run prints the Saver() wall and CPU time, the minor page faults it took, and the cyclic-GC passes that
ran inside it (Saver construction pauses the collector; the young objects are collected when it resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import gc, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import saverkit as sk
from workloads import Workload

wl = Workload.make("W2")
g = sk.Graph()
with g.as_default():
    variables = [sk.Variable(sk.zeros(wl.shape(i), dtype=sk.float32), name=n) for i, n in enumerate(wl.names)]
    passes = []
    gc.callbacks.append(lambda phase, info: passes.append((phase, info["generation"], time.perf_counter())))
    r0, t0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
    sk.train.Saver(variables)
    t1, c1, r1 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
gc_ms = [(gen, (b[2] - a[2]) * 1e3) for a, b in zip(passes[::2], passes[1::2]) for gen in (a[1],)]
print(json.dumps({"wall_ms": (t1 - t0) * 1e3, "cpu_ms": (c1 - c0) * 1e3,
                  "minor_faults": r1.ru_minflt - r0.ru_minflt, "gc": gc_ms}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    walls = []
    for i in range(args.runs):
        out = subprocess.run([sys.executable, "-c", CHILD, here], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        walls.append(r["wall_ms"])
        gc_text = ", ".join(f"gen{g} {ms:.1f} ms" for g, ms in r["gc"]) or "none"
        print(f"run {i + 1}: Saver() {r['wall_ms']:.1f} ms wall, {r['cpu_ms']:.1f} ms CPU, "
              f"{r['minor_faults']} minor faults, GC passes inside: {gc_text}")
    load = os.getloadavg()[0]
    print(f"median {statistics.median(walls):.1f} ms, max {max(walls):.1f} ms "
          f"(target <= 100 ms; load average {load:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
