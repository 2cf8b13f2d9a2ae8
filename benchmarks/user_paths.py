#!/usr/bin/env python3
"""Where users actually are (issue 23): start-up and first-read costs, each a median of fresh processes.

Usage: .venv/bin/python benchmarks/user_paths.py [--runs 15] [--read-runs 5] [--dir DIR] [--skip-read]

Rows, each timed from the parent around a whole child process (interpreter start included):
  * `import saverkit` against `import numpy, google.protobuf` (the floor saverkit builds on), interleaved
    run by run so that both see the same machine load; the ratio is the median of the run-by-run ratios;
    target: <= 1.3;
  * `python -m saverkit inspect` of a small TF-written checkpoint (tests/fixtures/tf-2.21/v1_dtypes: 38
    tensors of 17 dtypes, bfloat16 among them); target: <= 0.5 s;
  * a get_tensor loop over 500 MiB in 50 float32 tensors (10 MiB each) written by TF's SaveV2: open with
    `load_checkpoint` and `get_tensor` every tensor, saverkit (its default read policy) against TF 2.21;
    the children also report their import time and the loop alone. Page cache warm (the first run reads
    the file in; it is not counted). Needs tensorflow (a test dependency) to write the checkpoint once,
    into DIR (default: a saverkit_user_paths directory in the temp directory), and to be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = os.path.join(ROOT, "tests", "fixtures", "tf-2.21", "v1_dtypes")
N_TENSORS, ROWS, COLS = 50, 2560, 1024  # 50 x 10 MiB float32
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

WRITE_WITH_TF = r"""
import sys
import numpy as np, tensorflow as tf
prefix, n, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
names = [f"layer_{i:02d}/kernel" for i in range(n)]
ramp = np.arange(cols, dtype=np.float32)
values = [tf.constant(np.full((rows, cols), i, np.float32) + ramp) for i in range(n)]
tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * n, tensors=values)
"""

READ_LOOP = r"""
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "saverkit":
    import saverkit
    load = saverkit.train.load_checkpoint
else:
    import tensorflow as tf
    load = tf.train.load_checkpoint
t1 = time.perf_counter()
reader = load(sys.argv[2])
total = 0
for name in sorted(reader.get_variable_to_shape_map()):
    total += reader.get_tensor(name).nbytes
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "loop_s": t2 - t1, "bytes": total}))
"""


def wall(argv: list[str]) -> tuple[float, str]:
    """Seconds for one child process to run to completion, and its stdout."""
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{out.stderr[-2000:]}")
    return elapsed, out.stdout


def median_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.0f} ms"


def spread(xs: list[float]) -> str:
    return f"{min(xs) * 1e3:.0f}-{max(xs) * 1e3:.0f} ms"


def ensure_big_checkpoint(directory: str) -> str:
    prefix = os.path.join(directory, "tf_500mib")
    if os.path.exists(prefix + ".index"):
        return prefix
    os.makedirs(directory, exist_ok=True)
    print(f"writing 500 MiB in {N_TENSORS} float32 tensors with TF's SaveV2 to {prefix} ...", file=sys.stderr)
    wall([sys.executable, "-c", WRITE_WITH_TF, prefix, str(N_TENSORS), str(ROWS), str(COLS)])
    return prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per import/inspect row")
    parser.add_argument("--read-runs", type=int, default=5, help="fresh processes per read-loop row")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "saverkit_user_paths"))
    parser.add_argument("--skip-read", action="store_true", help="skip the 500 MiB rows (no TF needed)")
    args = parser.parse_args()
    py = sys.executable

    # Interleaved, so both sides of each ratio see the same load; one warm-up of each first.
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "import numpy, google.protobuf": [py, "-c", "import numpy, google.protobuf"],
        "import saverkit": [py, "-c", "import saverkit"],
        "saverkit inspect (small checkpoint)": [py, "-m", "saverkit", "inspect", SMALL],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for argv in cases.values():
        wall(argv)
    for _ in range(args.runs):
        for name, argv in cases.items():
            times[name].append(wall(argv)[0])
    # The median of run-by-run ratios: each pair ran back to back, so a load change shifts both sides.
    ratio = statistics.median(
        s / f for s, f in zip(times["import saverkit"], times["import numpy, google.protobuf"], strict=True)
    )
    inspect = "saverkit inspect (small checkpoint)"
    inspect_s = statistics.median(times[inspect])

    rows = [
        ("`python -c pass` (interpreter alone)", median_ms(times["python -c pass"]),
         spread(times["python -c pass"]), ""),
        ("`import numpy, google.protobuf`", median_ms(times["import numpy, google.protobuf"]),
         spread(times["import numpy, google.protobuf"]), ""),
        ("`import saverkit`", median_ms(times["import saverkit"]), spread(times["import saverkit"]),
         f"{ratio:.2f}x numpy+protobuf (target <= 1.3x): {'met' if ratio <= 1.3 else 'MISSED'}"),
        ("`saverkit inspect` of v1_dtypes (38 tensors)", median_ms(times[inspect]), spread(times[inspect]),
         f"target <= 500 ms: {'met' if inspect_s <= 0.5 else 'MISSED'}"),
    ]

    if not args.skip_read:
        prefix = ensure_big_checkpoint(args.dir)
        reads: dict[str, list[tuple[float, dict]]] = {"saverkit": [], "tensorflow": []}
        for system in reads:
            wall([py, "-c", READ_LOOP, system, prefix])  # warm-up: page cache, .pyc files
        for _ in range(args.read_runs):
            for system in reads:
                elapsed, out = wall([py, "-c", READ_LOOP, system, prefix])
                reads[system].append((elapsed, json.loads(out.strip().splitlines()[-1])))
        for system, label in (("saverkit", "saverkit (default read policy)"), ("tensorflow", "TF 2.21")):
            walls = [w for w, _ in reads[system]]
            loops = [r["loop_s"] for _, r in reads[system]]
            imports = [r["import_s"] for _, r in reads[system]]
            gbs = reads[system][0][1]["bytes"] / statistics.median(loops) / 1e9
            notes = f"import {median_ms(imports)}, open + 50 get_tensor {median_ms(loops)} ({gbs:.2f} GB/s)"
            rows.append((f"500 MiB get_tensor loop, {label}", median_ms(walls), spread(walls), notes))

    load = os.getloadavg()[0]
    print(f"# user paths: median of {args.runs} fresh processes ({args.read_runs} for the 500 MiB rows), "
          f"wall from the parent; load average {load:.1f} on {os.cpu_count()} CPUs\n")
    header = ("path", "median", "min-max", "notes")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
