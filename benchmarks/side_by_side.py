#!/usr/bin/env python3
"""Before/after figures of two checkouts, measured alternately in one run (issue 18's "every benchmark figure
holds within noise").

Usage: .venv/bin/python benchmarks/side_by_side.py --base /path/to/old/checkout [--head .] [--rounds 3]

Each checkout is measured with its own ``.venv`` and its own copies of the benchmark scripts (set them up
with ``./dev.sh env`` in each). Rounds alternate base, head, base, head... so that both see the same machine
load; each figure is the median over rounds. Rows: graph build (benchmarks/graph_build.py, CPU ms: the
steadier figure on a shared machine; and split into the cyclic GC's passes and the rest, by one script run
in both), ``Saver()`` over 10,000 variables (benchmarks/saver_build.py, CPU ms),
and saverkit's Saver on W1-W4 (benchmarks/io_throughput.py: GB/s and peak RSS above the baseline, MiB).
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

GRAPH_ROWS = {
    "build graph of 10000 variables": "graph build, 10k variables (CPU ms)",
    "build 10000 x Variable(sk.zeros([4]))": "10k x Variable(zeros([4])) (CPU ms)",
    "build 10000 x Variable(sk.zeros([6710])) (W2, a Fill)": "W2 graph, 10k Fill variables (CPU ms)",
    "run initializer": "run initializer, cached plan (CPU ms)",
    "fetch all variables": "fetch all variables, cached plan (CPU ms)",
}
IO_OPS = ("save", "restore", "restore_inplace")  # io_throughput's names: restore = into a new session


def run(checkout: str, args: list[str], timeout: float = 3600) -> str:
    python = os.path.join(checkout, ".venv", "bin", "python")
    out = subprocess.run([python, *args], cwd=checkout, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def graph_figures(checkout: str) -> dict[str, float]:
    text = run(checkout, ["benchmarks/graph_build.py", "--repeat", "3"])
    figures = {}
    for line in text.splitlines():
        m = re.match(r"(.+?)\s+([\d.]+) ms wall\s+([\d.]+) ms cpu", line)
        if m and m.group(1).strip() in GRAPH_ROWS:
            figures[GRAPH_ROWS[m.group(1).strip()]] = float(m.group(3))
    return figures


# The same script for both checkouts (public API only): a graph build's time split into the cyclic GC's
# passes and the rest. Both builds make the same objects and trigger the same passes, but one full pass
# over ~200,000 objects takes 25-56 ms on this VM from one run to the next (memory-bound), so the GC part
# decides how much the "graph build" row moves; the rest is the graph layer's own work.
GC_SPLIT = r"""
import gc, time
import numpy as np
import saverkit as sk
values = [np.full((4,), i, np.float32) for i in range(10000)]
spent, began = [0.0, 0], [0.0]
def on_gc(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - began[0]
        spent[1] += 1
gc.callbacks.append(on_gc)
best = None
for _ in range(4):
    gc.collect()  # each build starts from the same heap (the last graph is garbage with cycles)
    spent[:] = [0.0, 0]
    t0 = time.perf_counter()
    with sk.Graph().as_default():
        for i, v in enumerate(values):
            sk.Variable(v, name=f"v{i}")
        sk.global_variables_initializer()
    total = time.perf_counter() - t0
    if best is None or total - spent[0] < best[0]:
        best = (total - spent[0], spent[0], spent[1])
print(f"{best[0] * 1e3:.2f} {best[1] * 1e3:.2f} {best[2]}")
"""


def gc_split_figures(checkout: str) -> dict[str, float]:
    rest, in_gc, passes = run(checkout, ["-c", GC_SPLIT]).split()
    return {
        "graph build without GC passes (wall ms)": float(rest),
        "  its GC passes (wall ms)": float(in_gc),
        "  its GC passes (count)": float(passes),
    }


def saver_figures(checkout: str) -> dict[str, float]:
    text = run(checkout, ["benchmarks/saver_build.py", "--repeat", "5"])
    m = re.search(r"Saver over 10,000 variables: ([\d.]+) ms wall, ([\d.]+) ms CPU", text)
    if not m:
        raise SystemExit(f"{checkout}: unexpected saver_build output:\n{text}")
    return {"Saver() over 10k variables (CPU ms)": float(m.group(2))}


def io_figures(checkout: str, workloads: str, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "report.json")
        run(checkout, ["benchmarks/io_throughput.py", "--workloads", workloads, "--systems", "saverkit-saver",
                       "--reps", str(reps), "--cold", "none", "--json", path])
        with open(path) as f:
            report = json.load(f)
    figures = {}
    for r in report["results"]:
        if r.get("op") not in IO_OPS or r.get("gbps") is None:
            continue
        figures[f"{r['workload']} {r['op']} (GB/s)"] = r["gbps"]
        if r.get("peak_rss_extra") is not None:
            figures[f"{r['workload']} {r['op']} (peak MiB)"] = r["peak_rss_extra"] / 2**20
    return figures


def measure(checkout: str, args: argparse.Namespace) -> dict[str, float]:
    figures = graph_figures(checkout)
    figures.update(gc_split_figures(checkout))
    figures.update(saver_figures(checkout))
    if args.workloads != "none":
        figures.update(io_figures(checkout, args.workloads, args.reps))
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the old checkout (with its .venv)")
    p.add_argument("--head", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workloads", default="W1,W2,W3,W4", help="io_throughput workloads, or 'none'")
    p.add_argument("--reps", type=int, default=3, help="io_throughput repetitions per round")
    args = p.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    for i in range(args.rounds):
        for side in ("base", "head"):
            print(f"round {i + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
            runs[side].append(measure(getattr(args, side), args))
    rows = list(dict.fromkeys(k for r in runs["base"] + runs["head"] for k in r))
    print(f"base: {args.base}\nhead: {args.head}\nmedian of {args.rounds} alternating rounds; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'figure':48s} {'base':>10s} {'head':>10s} {'head/base':>10s}")
    for row in rows:
        b = [r[row] for r in runs["base"] if row in r]
        h = [r[row] for r in runs["head"] if row in r]
        if not b or not h:
            continue
        mb, mh = statistics.median(b), statistics.median(h)
        print(f"{row:48s} {mb:10.2f} {mh:10.2f} {mh / mb if mb else float('nan'):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
