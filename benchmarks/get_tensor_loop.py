#!/usr/bin/env python3
"""Issue 23: a fresh process reads every tensor of a checkpoint one call at a time, as inspection scripts do:
``r = load_checkpoint(p); values = {k: r.get_tensor(k) for k in keys}``.

Usage: .venv/bin/python benchmarks/get_tensor_loop.py [--runs 5] [--mib 500] [--tensors 50] [--tmp DIR]

The checkpoint (float32 tensors of equal size) is written by TensorFlow when it is importable, else by
saverkit (the bytes are the same). Each run of each system is a new process (imports excluded from the time;
the open, the listing of the keys and every read included), so every result lands in memory the process has
never touched, as in a real script. Prints the median time of the runs per system.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
system, prefix = sys.argv[1], sys.argv[2]
if system == "tensorflow":
    import tensorflow as tf
    load_checkpoint = tf.train.load_checkpoint
else:
    from saverkit import bundle
    from saverkit.train.checkpoint_utils import load_checkpoint
    if system == "saverkit-io_threads=1":
        bundle.set_io_threads(1)
t0, c0 = time.perf_counter(), time.process_time()
reader = load_checkpoint(prefix)
values = {k: reader.get_tensor(k) for k in sorted(reader.get_variable_to_shape_map())}
t1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({"wall": t1 - t0, "cpu": c1 - c0, "bytes": sum(v.nbytes for v in values.values())}))
"""

SYSTEMS = ["saverkit", "saverkit-io_threads=1", "tensorflow"]


def _have_tensorflow() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True)
    return probe.returncode == 0


def _write(prefix: str, mib: int, tensors: int, with_tf: bool) -> None:
    code = r"""
import sys
import numpy as np
prefix, mib, n, with_tf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
elems = mib * 2**20 // 4 // n
names = [f"layer_{i:02d}/kernel" for i in range(n)]
values = [np.arange(elems, dtype=np.float32) * (i + 1) for i in range(n)]
if with_tf:
    import tensorflow as tf
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * n, tensors=values)
else:
    from saverkit import bundle
    bundle.write_bundle(prefix, names, values)
"""
    subprocess.run([sys.executable, *_site_flag(), "-c", code, prefix, str(mib), str(tensors),
                    "1" if with_tf else "0"], check=True)


def _site_flag() -> list[str]:
    # Keep the parent's -S (a side-by-side build put on PYTHONPATH, e.g. to compare two builds).
    return ["-S"] if sys.flags.no_site else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per system")
    parser.add_argument("--mib", type=int, default=500, help="checkpoint payload")
    parser.add_argument("--tensors", type=int, default=50)
    parser.add_argument("--tmp", default=None, help="directory for the checkpoint (default: a temporary one)")
    args = parser.parse_args()
    with_tf = _have_tensorflow()
    systems = [s for s in SYSTEMS if s != "tensorflow" or with_tf]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        prefix = os.path.join(tmp, "ckpt")
        _write(prefix, args.mib, args.tensors, with_tf)
        times: dict[str, list[float]] = {s: [] for s in systems}
        cpus: dict[str, list[float]] = {s: [] for s in systems}
        # Systems interleaved, their order rotated every round: on the benchmark VM a process's first touch
        # of memory is fast or ~3x slower depending on what the previous process left (run to run, not
        # system to system), and a fixed order hands the same system the same neighbour every time.
        for r in range(args.runs):
            for s in systems[r % len(systems):] + systems[: r % len(systems)]:
                out = subprocess.run([sys.executable, *_site_flag(), "-c", CHILD, s, prefix],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                assert r["bytes"] == args.mib * 2**20 // 4 // args.tensors * 4 * args.tensors
                times[s].append(r["wall"])
                cpus[s].append(r["cpu"])
    writer = "TensorFlow" if with_tf else "saverkit (TensorFlow not importable)"
    print(f"{args.mib} MiB in {args.tensors} float32 tensors, written by {writer}; "
          f"load_checkpoint + get_tensor of every key in a fresh process, median of {args.runs}")
    print(f"{'system':<24} {'wall s':>8} {'CPU s':>8} {'GiB/s':>7}")
    for s in systems:
        wall, cpu = statistics.median(times[s]), statistics.median(cpus[s])
        print(f"{s:<24} {wall:8.3f} {cpu:8.3f} {args.mib / 1024 / wall:7.2f}")
    if not with_tf:
        print("tensorflow: not importable here")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
