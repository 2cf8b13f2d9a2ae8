#!/usr/bin/env python3
"""Is a 1 GiB page-cache write fast or slow here, and is the VM's free page reporting the reason?

Usage: .venv/bin/python benchmarks/page_reporting.py [--reps 6] [--pause SECONDS] [--mib 1024]

Writes a bundle of MIB MiB (16 MiB tensors) into an emptied directory, REPS times from the main thread and
REPS times from another thread, alternating, each after ``rm`` + ``os.sync()`` (+ PAUSE seconds). Prints each
write's time and how much memory the guest reported free to its host meanwhile
(``/sys/module/page_reporting/parameters/reported_kib``, when the kernel has it). On a VM whose balloon
reports free pages, freed page-cache pages are unmapped by the host and the next write that gets them faults
them in again: such writes take several times longer (see RESULTS.md, 2026-12-06 night).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import numpy as np
from saverkit import bundle

REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def reported_mib() -> float | None:
    try:
        with open(REPORTED) as f:
            return int(f.read()) / 1024
    except OSError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--pause", type=float, default=0.0, help="seconds to wait after each rm + sync")
    p.add_argument("--mib", type=int, default=1024)
    args = p.parse_args()
    arrays = [np.full(4 << 20, i, np.float32) for i in range(max(1, args.mib // 16))]
    names = [f"v{i}" for i in range(len(arrays))]
    root = tempfile.mkdtemp(prefix="sk-page-reporting-")

    def write(d: str) -> None:
        bundle.write_bundle(d + "/m", names, arrays)

    def in_thread(d: str) -> None:
        t = threading.Thread(target=write, args=(d,))
        t.start()
        t.join()

    try:
        for _ in range(args.reps):
            row = []
            for label, fn, d in (("main", write, root + "/a"), ("thread", in_thread, root + "/b")):
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
                os.sync()
                time.sleep(args.pause)
                before = reported_mib()
                t0 = time.perf_counter()
                fn(d)
                ms = (time.perf_counter() - t0) * 1e3
                after = reported_mib()
                meanwhile = "n/a" if before is None or after is None else f"{after - before:.0f} MiB"
                row.append(f"{label:6s} {ms:7.0f} ms (reported meanwhile: {meanwhile})")
            print(" | ".join(row))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
