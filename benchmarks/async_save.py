#!/usr/bin/env python3
"""Asynchronous saves (issue 21): how long a save blocks the caller, against a memcpy of the payload.

For each workload (W1, W2 of workloads.py) one fresh process per system:

* saverkit: ``Saver.save(sess, path, write_meta_graph=False, write_state=False)`` — synchronous, and with
  ``options=CheckpointOptions(enable_async=True)`` (blocking = until save returns; total = until ``sync()``
  returns), repetitions alternating, peak RSS taken over these; then a plain single-threaded memcpy of
  the payload (``np.copyto`` of one contiguous buffer into a touched one), the reference for blocking,
  alternating with async saves whose blocking time is the one reported;
* saverkit-durable: the same with ``Saver(durable=True)`` (fsync before the save counts as done);
  (an async save writes each snapshot while it is copied when its tensors average >= 1 MiB, W1, on machines
  with 4+ cores, and after the copy otherwise; ``--pipeline-min-bytes`` overrides that, to compare both);
* tensorflow (if importable): TF2 ``tf.train.Checkpoint.write`` synchronous, and with
  ``tf.train.CheckpointOptions(experimental_enable_async_checkpoint=True)`` (blocking until write returns,
  total until ``sync()``).

Each repetition saves into an emptied directory after ``os.sync()``; the synchronous and the asynchronous
save take turns going first (on a VM whose balloon reports freed pages to its host, a write's speed
depends on its place in such a sequence: see page_reporting.py). Medians of N repetitions after one
warm-up (which, for saverkit, sizes the staging memory: later saves reuse it). Peak RSS is the kernel's
high-water mark during the repetitions minus the RSS after imports and a first use of the library (one
small variable saved, sync and async, in a throwaway graph: saverkit loads its graph framework, protobuf
and ml_dtypes only then, ~13 MiB, while `import tensorflow` loads everything). It includes the variables
(1x), the model's graph, Saver and session. The JSON also has the peak over the RSS right after imports
(``peak_rss_over_imports_bytes``, this table's figure before 2026-12-07).

Targets: blocking <= 1.3x memcpy; async total <= 1.1x sync; peak RSS <= 2x payload + 64 MiB.

    .venv/bin/python benchmarks/async_save.py [--workloads W1 W2] [--scale 1] [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20

CHILD = r"""
import json, os, shutil, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
name, scale, reps, system = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
import numpy as np
from workloads import Workload

def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

def fresh(d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.sync()

def repetitions(sync_save, async_save):
    # One warm-up of each (for saverkit it sizes the staging memory), the peak RSS reset, then reps
    # repetitions in which the two take turns going first (see "Each repetition" in the docstring).
    runs = {"sync": [], "async": [], "blocking": []}
    for f in (sync_save, async_save):
        fresh(root + "/w"); f(root + "/w")
    reset_peak()
    for r in range(reps):
        for kind in (("sync", "async") if r % 2 == 0 else ("async", "sync")):
            if kind == "sync":
                fresh(root + "/s"); runs["sync"].append(sync_save(root + "/s")[0])
            else:
                fresh(root + "/a"); total, blocking = async_save(root + "/a")
                runs["async"].append(total); runs["blocking"].append(blocking)
    return runs

wl = Workload.make(name, scale)
root = tempfile.mkdtemp(prefix="sk-async-bench-", dir=os.environ.get("BENCH_DIR"))
out = {"workload": name, "system": system, "payload_bytes": wl.nbytes}
if system.startswith("saverkit"):
    import saverkit
    from saverkit.train import CheckpointOptions, async_save as sk_async
    from systems import SaverkitSaver, SaverkitSaverDurable
    if os.environ.get("SK_PIPELINE_MIN_BYTES"):  # --pipeline-min-bytes
        sk_async._PIPELINE_MIN_AVERAGE_BYTES = int(os.environ["SK_PIPELINE_MIN_BYTES"])
    imports = status_kb("VmRSS")
    os.makedirs(root + "/warm")
    # The library's first use (one small variable saved, sync and async, in a graph of its own) loads
    # what `import saverkit` leaves for later: the graph framework, protobuf and ml_dtypes (~13 MiB).
    # That is library code, as TensorFlow's whole framework is in its row's baseline: not the save's.
    warm_g = saverkit.Graph()
    with warm_g.as_default():
        warm_v = saverkit.Variable(saverkit.zeros([1024], dtype=saverkit.float32), name="warm")
        warm_saver = saverkit.train.Saver([warm_v])
        warm_sess = saverkit.Session(graph=warm_g)
        warm_sess.run(warm_v.initializer)
        warm_saver.save(warm_sess, root + "/warm/m", write_meta_graph=False, write_state=False)
        warm_saver.save(warm_sess, root + "/warm/m", write_meta_graph=False, write_state=False,
                        options=CheckpointOptions(enable_async=True))
        warm_saver.sync()
    del warm_g, warm_v, warm_saver, warm_sess
    base = status_kb("VmRSS")
    s = SaverkitSaverDurable() if system == "saverkit-durable" else SaverkitSaver()
    s.load()
    ctx = s.setup(wl, "save", root)
    saver, sess = ctx["saver"], ctx["sess"]
    opts = CheckpointOptions(enable_async=True)
    def sync_save(d):
        t0 = time.perf_counter()
        saver.save(sess, d + "/m", write_meta_graph=False, write_state=False)
        return time.perf_counter() - t0, None
    def async_save(d):
        t0 = time.perf_counter()
        saver.save(sess, d + "/m", write_meta_graph=False, write_state=False, options=opts)
        t1 = time.perf_counter()
        saver.sync()
        return time.perf_counter() - t0, t1 - t0
    runs = repetitions(sync_save, async_save)
    out["peak_rss_bytes"] = (status_kb("VmHWM") - base) * 1024
    out["peak_rss_over_imports_bytes"] = (status_kb("VmHWM") - imports) * 1024
    r = saverkit.train.load_checkpoint(root + "/a/m")
    last = wl.expected(wl.count - 1).view(np.uint32)
    assert np.array_equal(r.get_tensor(wl.names[-1]).view(np.uint32), last)
    del r
    # Blocking time against a memcpy of the payload, interleaved (the machine's load moves both alike).
    src = np.ones(wl.nbytes, np.uint8)
    dst = np.ones(wl.nbytes, np.uint8)
    copies, blocking = [], []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        copies.append(time.perf_counter() - t0)
        fresh(root + "/b")
        blocking.append(async_save(root + "/b")[1])
    out["memcpy_s"] = statistics.median(copies[1:])
    out.update({k + "_s": statistics.median(v) for k, v in runs.items()})
    out["blocking_s"] = statistics.median(blocking[1:])
    out["blocking_phase1_s"] = statistics.median(runs["blocking"])
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    imports = status_kb("VmRSS")
    os.makedirs(root + "/warm")
    warm_v = tf.Variable(np.zeros(1024, np.float32), name="warm")  # TF's first use, as saverkit's above
    warm_ckpt = tf.train.Checkpoint(v=warm_v)
    warm_ckpt.write(root + "/warm/m")
    warm_ckpt.write(
        root + "/warm/m", options=tf.train.CheckpointOptions(experimental_enable_async_checkpoint=True)
    )
    warm_ckpt.sync()
    del warm_v, warm_ckpt
    base = status_kb("VmRSS")
    arrays = wl.arrays()
    variables = [tf.Variable(a, name=n) for a, n in zip(arrays, wl.names)]
    del arrays
    ckpt = tf.train.Checkpoint(vars=variables)
    opts = tf.train.CheckpointOptions(experimental_enable_async_checkpoint=True)
    def sync_save(d):
        t0 = time.perf_counter(); ckpt.write(d + "/m"); return time.perf_counter() - t0, None
    def async_save(d):
        t0 = time.perf_counter(); ckpt.write(d + "/m", options=opts); t1 = time.perf_counter()
        ckpt.sync()
        return time.perf_counter() - t0, t1 - t0
    runs = repetitions(sync_save, async_save)
    out["peak_rss_bytes"] = (status_kb("VmHWM") - base) * 1024
    out["peak_rss_over_imports_bytes"] = (status_kb("VmHWM") - imports) * 1024
    out.update({k + "_s": statistics.median(v) for k, v in runs.items()})
shutil.rmtree(root, ignore_errors=True)
print("RESULT " + json.dumps(out))
"""


def run_child(
    workload: str, scale: float, reps: int, system: str, pipeline_min: int | None = None
) -> dict | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MiB))
    if pipeline_min is not None:
        env["SK_PIPELINE_MIN_BYTES"] = str(pipeline_min)
    r = subprocess.run([sys.executable, "-c", CHILD, HERE, workload, str(scale), str(reps), system],
                       capture_output=True, text=True, env=env)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"{workload} {system} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
    return None


def table(results: list[dict]) -> str:
    rows = [
        "| workload | system | memcpy of payload | blocking | blocking / memcpy | sync save | async total "
        "| async / sync | peak RSS | RSS / payload | peak RSS over imports |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    memcpy: dict[str, float] = {}
    for r in results:
        if "memcpy_s" in r:
            memcpy.setdefault(r["workload"], r["memcpy_s"])
    for r in results:
        m = r.get("memcpy_s") or memcpy.get(r["workload"])  # TF rows: the first saverkit row's memcpy
        pay = r["payload_bytes"]
        ratio = f"{r['blocking_s'] / m:.2f}x" if m else "-"
        rows.append(
            f"| {r['workload']} | {r['system']} | {f'{m * 1e3:.1f} ms' if m else '-'} "
            f"| {r['blocking_s'] * 1e3:.1f} ms "
            f"| {ratio} "
            f"| {r['sync_s'] * 1e3:.1f} ms | {r['async_s'] * 1e3:.1f} ms | {r['async_s'] / r['sync_s']:.2f}x "
            f"| {r['peak_rss_bytes'] / MiB:.0f} MiB | {r['peak_rss_bytes'] / pay:.2f}x "
            f"(limit {(2 * pay + 64 * MiB) / MiB:.0f} MiB) "
            f"| {r.get('peak_rss_over_imports_bytes', r['peak_rss_bytes']) / MiB:.0f} MiB |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["W1", "W2"])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--systems", nargs="+", default=["saverkit", "saverkit-durable", "tensorflow"],
                    help="saverkit-durable: Saver(durable=True), where the write, not the copy, dominates")
    ap.add_argument("--pipeline-min-bytes", type=int,
                    help="saverkit rows: write a snapshot while it is copied when its tensors average at "
                         "least this many bytes (default: the library's; 0: always; huge: never)")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()
    results = []
    for w in args.workloads:
        for s in args.systems:
            r = run_child(w, args.scale, args.reps, s, args.pipeline_min_bytes)
            if r is not None:
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results))
    print(f"\nscale {args.scale}, {args.reps} repetitions, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; medians")


if __name__ == "__main__":
    main()
