"""Checkpoint I/O throughput: saverkit against its peers and the machine's physical bounds (issue 6).

Every (workload, system, operation) is measured in a fresh subprocess so that its peak RSS is its own:
the child takes an RSS baseline after its imports (before any payload exists), builds its state, resets
the kernel's peak-RSS counter (/proc/self/clear_refs 5), runs warm-up + timed repetitions and reports the
median time and peak RSS minus baseline. Saves write into an emptied directory after os.sync(), so each
repetition starts with no dirty pages. Children run with MALLOC_MMAP_THRESHOLD_ fixed at 1 MiB so freed
large buffers go back to the OS: RSS stays attributable, and a fresh-array restore pays its page faults
each repetition, as it would in a new process.

    ./dev.sh bench                       full run (W1-W4, every installed system)
    ./dev.sh bench --quick               a few minutes: W1/W2/W4 at 1/4 size, 3 repetitions, no cold cache
    ./dev.sh bench --workloads W1 --systems saverkit,bounds --reps 3 --json out.json --png chart.png
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import systems as S  # noqa: E402
from workloads import DESCRIPTIONS, WORKLOADS, Workload, same  # noqa: E402

OPS = ("construct", "save", "restore", "restore_inplace", "restore_cold", "restore_inplace_cold")
OP_TITLES = {
    "construct": "Saver() s",
    "save": "save",
    "restore": "restore fresh",
    "restore_inplace": "restore in place",
    "restore_cold": "fresh, cold",
    "restore_inplace_cold": "in place, cold",
}
DROP_CACHES = "/proc/sys/vm/drop_caches"
MiB = 1 << 20


# =========================================================================== child side


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _drop_caches() -> None:
    os.sync()
    with open(DROP_CACHES, "w") as f:
        f.write("3\n")


def _empty_dir(path: str) -> None:
    d = os.path.dirname(path)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d, exist_ok=True)
    os.sync()


def run_child(spec: dict) -> dict:
    system = S.BY_NAME[spec["system"]]()
    system.load()
    wl = Workload.make(spec["workload"], spec["scale"])
    op, cold, path = spec["op"], spec["cold"], spec["path"]
    warmup, reps = spec["warmup"], spec["reps"]
    res = {"payload_bytes": wl.nbytes, "elements": wl.elements}
    gc.collect()
    _trim_heap()
    baseline = _status_kb("VmRSS")

    if op == "construct":
        if system.slow_construct:
            warmup, reps = 0, 1
        builds, times = [], []
        for r in range(warmup + reps):
            b, c = system.construct(wl)
            if r >= warmup:
                builds.append(b)
                times.append(c)
        return {**res, "times_s": times, "build_s": builds, "median_s": statistics.median(times),
                "median_build_s": statistics.median(builds)}

    base_op = op.removesuffix("_cold")
    ctx = system.setup(wl, base_op, path)
    gc.collect()
    _trim_heap()  # small buffers freed during setup must not count as the operation's memory
    steady = _status_kb("VmRSS")
    peak_reset = _reset_peak()
    times, warm, peak, verified = [], [], None, None
    for r in range(warmup + reps):
        if base_op == "save":
            _empty_dir(path)
        elif cold:
            _drop_caches()
        system.before_rep(ctx)
        t0 = time.perf_counter()
        out = system.save(ctx, path) if base_op == "save" else system.restore(ctx, path)
        dt = time.perf_counter() - t0
        (times if r >= warmup else warm).append(dt)
        if r == warmup + reps - 1:
            peak = _status_kb("VmHWM")  # before verification allocates its expected values
            if base_op != "save":
                verified = all(same(system.value(ctx, out, i), wl.expected(i)) for i in {0, wl.count - 1})
        system.after_rep(ctx, out)
        del out
    if verified is False:
        raise AssertionError(f"{system.name} restored wrong values")
    return {**res, "times_s": times, "warmup_s": warm, "median_s": statistics.median(times),
            "baseline_rss": baseline, "steady_rss": steady, "peak_rss": peak,
            # max(): setup may free a little import-time garbage below the baseline
            "peak_rss_extra": max(0, peak - baseline), "peak_reset": peak_reset, "verified": verified}


def child_main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    out = run_child(spec)
    with open(spec["out"], "w") as f:
        json.dump(out, f)


# =========================================================================== parent side


def machine_info(scratch: str) -> dict:
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            mem[k] = int(v.split()[0]) * 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fs = subprocess.run(["df", "-T", scratch], capture_output=True, text=True).stdout.splitlines()[-1:]
    thp = ""
    if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "uname": " ".join(platform.uname()),
        "mem_total": mem.get("MemTotal"), "mem_available": mem.get("MemAvailable"),
        "loadavg_start": os.getloadavg(), "filesystem": fs[0] if fs else "", "thp": thp,
        "python": sys.version.split()[0], "crc32c": _crc_implementation(),
    }


def _crc_implementation() -> str:
    # Which CRC32C code the engine picked on this CPU: it decides how close a
    # verified restore can come to the bare preadv bound.
    from saverkit import _core

    return _core.crc32c_implementation()


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("saverkit", "numpy", "tensorflow-cpu", "safetensors", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def spawn(spec: dict, timeout: float) -> dict:
    """Run one measurement in a fresh interpreter; returns its result or {'error': ...}."""
    fd, spec_path = tempfile.mkstemp(suffix=".json")
    spec = {**spec, "out": spec_path + ".out"}
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MiB), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec_path],
                              env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-3:]
            return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
        with open(spec["out"]) as f:
            return json.load(f)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        for p in (spec_path, spec["out"]):
            if os.path.exists(p):
                os.unlink(p)


def pick_systems(arg: str) -> list[type[S.System]]:
    groups = {"saverkit": "saverkit", "peers": "peer", "bounds": "bound"}
    chosen = []
    for token in arg.split(","):
        token = token.strip()
        if token == "all":
            chosen += S.ALL
        elif token in groups:
            chosen += [c for c in S.ALL if c.group == groups[token]]
        elif token in S.BY_NAME:
            chosen.append(S.BY_NAME[token])
        else:
            raise SystemExit(f"unknown system {token!r}; choose from all, saverkit, peers, bounds, "
                             + ", ".join(S.BY_NAME))
    return [c for c in S.ALL if c in chosen]  # canonical order, no duplicates


def memory_note(name: str, scale: float) -> str | None:
    """W3 needs room for the payload several times over (TF restores hold 2x, plus page cache)."""
    total = int(WORKLOADS[name][0] * scale) if WORKLOADS[name][2] == "float32" else 0
    with open("/proc/meminfo") as f:
        avail = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable"))
    if name == "W3" and avail < 3 * total + (2 << 30):
        need = (3 * total + (2 << 30)) / 2**30
        return f"skipped: needs ~{need:.0f} GiB available, {avail / 2**30:.1f} GiB is"
    return None


def measure(args) -> dict:
    scratch = args.dir or tempfile.mkdtemp(prefix="saverkit-bench-", dir=args.tmp)
    os.makedirs(scratch, exist_ok=True)
    report = {"machine": machine_info(scratch), "versions": _versions(),
              "config": {"workloads": args.workloads, "scale": args.scale, "reps": args.reps,
                         "warmup": args.warmup, "cold": args.cold, "quick": args.quick,
                         "malloc_mmap_threshold": MiB},
              "notes": [], "results": []}
    cold_ok = os.access(DROP_CACHES, os.W_OK)
    if args.cold and not cold_ok:
        report["notes"].append(f"cold-cache restores skipped: {DROP_CACHES} is not writable")
    systems = pick_systems(args.systems)
    t_start = time.time()
    try:
        for wname in args.workloads:
            note = memory_note(wname, args.scale)
            if note:
                report["notes"].append(f"{wname}: {note}")
                print(f"{wname}: {note}", file=sys.stderr)
                continue
            wl = Workload.make(wname, args.scale)
            wdir = os.path.join(scratch, wname)
            for cls in systems:
                system = cls()
                why = system.unavailable()
                if wl.kind not in system.kinds:
                    continue
                if why:
                    report["results"].append({"workload": wname, "system": cls.name, "op": "*",
                                              "error": f"unavailable: {why}"})
                    continue
                if args.quick and wname == "W2" and cls.module == "tensorflow":
                    # Building 10,000 TF variables takes about a minute in every subprocess.
                    report["results"].append({"workload": wname, "system": cls.name, "op": "*",
                                              "error": "unavailable: skipped by --quick (minutes per run)"})
                    continue
                ops = [op for op in cls.ops if op != "construct" or wname == "W2"]
                if cold_ok and wname in args.cold:
                    ops += [op + "_cold" for op in cls.ops if op.startswith("restore")]
                sub = S.BoundRead.shared_dir if issubclass(cls, S.BoundRead) else cls.name
                path = os.path.join(wdir, sub, "ckpt")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                save_failed = None
                for op in ops:
                    if save_failed and op != "construct":
                        res = {"error": f"no checkpoint: save failed ({save_failed})"}
                    else:
                        spec = {"system": cls.name, "workload": wname, "scale": args.scale, "op": op,
                                "cold": op.endswith("_cold"), "path": path, "warmup": args.warmup,
                                "reps": args.reps}
                        res = spawn(spec, args.timeout)
                        if op == "save" and "error" in res:
                            save_failed = res["error"]
                    row = {"workload": wname, "system": cls.name, "group": cls.group, "op": op, **res}
                    add_rates(row)
                    report["results"].append(row)
                    print(f"  {wname} {cls.name:24s} {op:22s} {cell(row, wl.kind)}", file=sys.stderr)
                if sub == cls.name:  # only its own ops read it: free the disk (W3 is 4 GiB per system)
                    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            shutil.rmtree(wdir, ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["elapsed_s"] = time.time() - t_start
    report["ratios"] = ratios(report["results"])
    report["targets"] = targets(report)
    report["extras"] = extras(report["results"])
    return report


def extras(results: list[dict]) -> list[str]:
    """Figures that are not rates: durability cost, graph-building and first-save times."""
    got = lookup(results)
    out = []
    for w in ("W1", "W3"):
        for plain, durable in (("saverkit-saver", "saverkit-saver-durable"),
                               ("saverkit-engine", "saverkit-engine-durable"),
                               ("bound-write-1file", "bound-write-fdatasync")):
            a, b = got.get((w, plain, "save")), got.get((w, durable, "save"))
            if a and b:
                out.append(f"{w} durable cost, {durable}: {b['median_s']:.3f} s vs {a['median_s']:.3f} s "
                           f"(+{(b['median_s'] - a['median_s']) / (a['payload_bytes'] / 2**30):.2f} s/GiB)")
    for s in ("saverkit-saver", "tf1-saver"):
        c = got.get(("W2", s, "construct"))
        if c:
            out.append(f"W2 {s}: building 10,000 variables {c['median_build_s']:.3f} s, "
                       f"Saver construction {c['median_s']:.3f} s")
        sv = got.get(("W2", s, "save"))
        if sv and sv.get("warmup_s"):
            out.append(f"W2 {s}: first save {sv['warmup_s'][0]:.3f} s, later saves {sv['median_s']:.3f} s")
    # Peak RSS splits into what existed before the operation (graph, session, variables: "state") and
    # what the operation itself added; with 10,000 variables the graph alone is tens of MiB.
    for (w, s, op), r in sorted(got.items()):
        if s == "saverkit-saver" and r.get("steady_rss") is not None and r.get("peak_rss") is not None:
            state = max(0, r["steady_rss"] - r["baseline_rss"]) / MiB
            added = max(0, r["peak_rss"] - r["steady_rss"]) / MiB
            out.append(f"{w} {s} {op}: peak RSS = state before the operation {state:.0f} MiB "
                       f"+ added by it {added:.0f} MiB (payload {r['payload_bytes'] / MiB:.0f} MiB)")
    return out


def add_rates(row: dict) -> None:
    if "median_s" in row and row["op"] != "construct" and row["median_s"] > 0:
        row["gbps"] = row["payload_bytes"] / row["median_s"] / 1e9
        row["elements_per_s"] = row["elements"] / row["median_s"]


# =========================================================================== analysis


def lookup(results: list[dict]) -> dict:
    return {(r["workload"], r["system"], r["op"]): r for r in results if "error" not in r}


def bound_for(system: str, op: str) -> list[str]:
    if op == "save":
        if "sharded" in system:
            return ["bound-write-2files"]
        if "durable" in system:
            return ["bound-write-fdatasync"]
        return ["bound-write-1file"]
    if op.startswith("restore"):
        return ["bound-preadv-2threads", "bound-preadv-1thread"]
    return []


def _rate(r: dict, kind: str) -> float:
    return r["elements_per_s"] if kind == "string" else r["gbps"]


def ratios(results: list[dict]) -> list[dict]:
    """Each saverkit figure divided by every peer's and bound's figure for the same workload and op."""
    got = lookup(results)
    out = []
    for (w, sysname, op), r in got.items():
        if S.BY_NAME[sysname].group != "saverkit" or op == "construct":
            continue
        kind = WORKLOADS[w][2]
        refs = [s for s in S.BY_NAME if S.BY_NAME[s].group == "peer"] + bound_for(sysname, op)
        for ref in refs:
            other = got.get((w, ref, op))
            if other is None and S.BY_NAME[ref].group == "bound":
                # the read bounds fill touched arrays; fresh restores are held to them too
                other = got.get((w, ref, op.replace("restore", "restore_inplace", 1).replace(
                    "_inplace_inplace", "_inplace")))
            if other is not None:
                out.append({"workload": w, "system": sysname, "op": op, "versus": ref,
                            "ratio": _rate(r, kind) / _rate(other, kind)})
    return out


def targets(report: dict) -> list[dict]:
    """Issue 6's targets, evaluated on this run's figures (None when a figure is missing)."""
    got = lookup(report["results"])

    def rate(w, s, op):
        r = got.get((w, s, op))
        return None if r is None else _rate(r, WORKLOADS[w][2])

    def best(w, s, ops):
        vals = [v for v in (rate(w, s, op) for op in ops) if v is not None]
        return max(vals) if vals else None

    def ratio(a, b):
        return None if a is None or b is None else a / b

    def rss(w, s, op):
        r = got.get((w, s, op))
        return None if r is None else r["peak_rss_extra"]

    def payload(w):
        r = next((r for (w2, _, _), r in got.items() if w2 == w), None)
        return None if r is None else r["payload_bytes"]

    sk, tf = "saverkit-saver", "tf1-saver"
    if not any(k[1] == sk for k in got):  # Saver not measured: hold the raw engine to the same targets
        sk = "saverkit-engine"
    c = got.get(("W2", sk, "construct"))
    rows = [
        ("W1 save >= 0.9x one-file page-cache write bound",
         ratio(rate("W1", sk, "save"), rate("W1", "bound-write-1file", "save")), 0.9),
        ("W1 save above safetensors", ratio(rate("W1", sk, "save"), rate("W1", "safetensors", "save")), 1.0),
        ("W1 sharded save (2 devices) >= 0.9x two-file bound",
         ratio(rate("W1", sk + "-sharded", "save"), rate("W1", "bound-write-2files", "save")), 0.9),
        ("W1 restore in place >= 0.75x two-thread preadv bound",
         ratio(rate("W1", sk, "restore_inplace"),
               rate("W1", "bound-preadv-2threads", "restore_inplace")), 0.75),
        ("W1 restore into fresh arrays >= 1.5x TF Saver (best of TF's restores)",
         ratio(rate("W1", sk, "restore"), best("W1", tf, ["restore", "restore_inplace"])), 1.5),
        ("W2 Saver construction for 10,000 variables <= 0.1 s", None if c is None else c["median_s"], 0.1),
        ("W2 save >= safetensors", ratio(rate("W2", sk, "save"), rate("W2", "safetensors", "save")), 1.0),
        ("W2 restore >= safetensors (fresh arrays)",
         ratio(rate("W2", sk, "restore"), rate("W2", "safetensors", "restore")), 1.0),
        ("W4 save >= 3x TF Saver (elements/s)", ratio(rate("W4", sk, "save"), rate("W4", tf, "save")), 3.0),
        ("W4 restore >= 3x TF Saver (elements/s, best of TF's restores)",
         ratio(best("W4", sk, ["restore", "restore_inplace"]),
               best("W4", tf, ["restore", "restore_inplace"])),
         3.0),
        ("Durable save >= 0.9x dd conv=fdatasync bound",
         ratio(rate("W1", sk + "-durable", "save"), rate("W1", "bound-write-fdatasync", "save")), 0.9),
    ]
    if sk == "saverkit-engine":
        rows = [(f"[engine] {name}", v, th) for name, v, th in rows]
    out = [{"target": name, "value": v, "threshold": th, "kind": "max" if "<=" in name and "Saver con" in name
            else "min"} for name, v, th in rows]
    for w in ("W1", "W2", "W3", "W4"):
        p = payload(w)
        for op, what in (("save", "save"), ("restore_inplace", "in-place restore"),
                         ("restore", "fresh-array restore")):
            v = rss(w, sk, op)
            limit = None if p is None else p + 64 * MiB
            out.append({"target": f"{w} peak RSS ({sk}) of {what} <= payload + 64 MiB",
                        "value": None if v is None else v / MiB,
                        "threshold": None if limit is None else limit / MiB, "kind": "max"})
    for t in out:
        v, th = t["value"], t["threshold"]
        t["met"] = None if v is None or th is None else (v <= th if t["kind"] == "max" else v >= th)
    return out


# =========================================================================== output


def cell(r: dict, kind: str) -> str:
    if "error" in r:
        return "err" if not r["error"].startswith("unavailable") else "n/a"
    if r["op"] == "construct":
        return f"{r['median_s']:.3f}s (build {r['median_build_s']:.2f}s)"
    rate = f"{r['elements_per_s'] / 1e6:.2f}M" if kind == "string" else f"{r['gbps']:.2f}"
    return f"{rate} ({r['peak_rss_extra'] / MiB:.0f})"


def render(report: dict) -> str:
    lines = []
    m = report["machine"]
    lines.append(f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_total'] / 2**30:.1f} GiB RAM, "
                 f"{m['uname']}")
    lines.append(f"filesystem: {m['filesystem']}; THP {m['thp']}; CRC32C {m.get('crc32c', '?')}")
    la0, la1 = m["loadavg_start"], m.get("loadavg_end", ("?",) * 3)
    lines.append(f"load average start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, end "
                 + " ".join(f"{x:.2f}" if isinstance(x, float) else x for x in la1))
    cfg = report["config"]
    lines.append(f"median of {cfg['reps']} runs after {cfg['warmup']} warm-up, scale {cfg['scale']}; "
                 "GB = 1e9 bytes; (n) = peak RSS minus baseline, MiB")
    by_wl: dict[str, list[dict]] = {}
    for r in report["results"]:
        by_wl.setdefault(r["workload"], []).append(r)
    for w, rows in by_wl.items():
        kind = WORKLOADS[w][2]
        payload = next((r["payload_bytes"] for r in rows if "payload_bytes" in r), 0)
        unit = "M elements/s" if kind == "string" else "GB/s"
        lines.append("")
        lines.append(f"{w}: {DESCRIPTIONS[w]} (scale {cfg['scale']}: {payload / 1e6:.1f} MB) -- {unit}")
        ops = [op for op in OPS if any(r["op"] == op for r in rows)]
        systems = list(dict.fromkeys(r["system"] for r in rows))
        widths = [max(24, max(len(s) for s in systems))] + [max(16, len(OP_TITLES[o])) for o in ops]
        if "construct" in ops:
            widths[1 + ops.index("construct")] = 24
        header = ["system"] + [OP_TITLES[o] for o in ops]
        lines.append("  ".join(t.ljust(wd) for t, wd in zip(header, widths, strict=True)))
        for s in systems:
            srows = {r["op"]: r for r in rows if r["system"] == s}
            if "*" in srows:
                lines.append(f"{s.ljust(widths[0])}  {srows['*']['error']}")
                continue
            cells = [cell(srows[o], kind) if o in srows else "" for o in ops]
            lines.append("  ".join(t.ljust(wd) for t, wd in zip([s] + cells, widths, strict=True)))
        for r in rows:
            if "error" in r and r["op"] != "*":
                lines.append(f"  ! {r['system']} {r['op']}: {r['error'][:200]}")
    if report["ratios"]:
        lines.append("")
        lines.append("ratios (saverkit / reference, same workload and operation; >1 = saverkit faster)")
        groups: dict[tuple, list[str]] = {}
        for q in report["ratios"]:
            groups.setdefault((q["workload"], q["system"], q["op"]), []).append(
                f"{q['versus']} x{q['ratio']:.2f}")
        for (w, s, op), parts in groups.items():
            lines.append(f"  {w} {s} {op}: " + ", ".join(parts))
    if report.get("extras"):
        lines.append("")
        lines += report["extras"]
    lines.append("")
    lines.append("targets (issue 6)")
    for t in report["targets"]:
        v = t["value"]
        status = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
        shown = "-" if v is None else (f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}")
        th = "" if t["threshold"] is None else f" (limit {t['threshold']:.4g})"
        lines.append(f"  {status} {t['target']}: {shown}{th}")
    for n in report["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def chart(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    got = lookup(report["results"])
    wls = [w for w in ("W1", "W2", "W3") if any(k[0] == w for k in got)]
    if not wls:
        return
    ops = ["save", "restore", "restore_inplace"]
    colors = {"save": "#4c72b0", "restore": "#dd8452", "restore_inplace": "#55a868"}
    fig, axes = plt.subplots(1, len(wls), figsize=(4.2 * len(wls), 4.6), squeeze=False)
    for ax, w in zip(axes[0], wls, strict=True):
        systems = list(dict.fromkeys(k[1] for k in got if k[0] == w and k[2] in ops))
        for j, op in enumerate(ops):
            ys = [i + (j - 1) * 0.27 for i in range(len(systems))]
            xs = [got[(w, s, op)]["gbps"] if (w, s, op) in got else 0 for s in systems]
            ax.barh(ys, xs, height=0.27, color=colors[op], label=OP_TITLES[op])
        ax.set_yticks(range(len(systems)), systems, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("GB/s", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{w}: {DESCRIPTIONS[w]}", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    m = report["machine"]
    fig.suptitle(f"saverkit checkpoint I/O, {m['nproc']} vCPUs, page cache warm", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workloads", default=None,
                   help="comma list of W1,W2,W3,W4 (default all; --quick: W1,W2,W4)")
    p.add_argument("--systems", default="all",
                   help="comma list of system names or groups: all, saverkit, peers, bounds")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5; --quick: 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--scale", type=float, default=None, help="payload size factor (default 1; --quick: 0.25)")
    p.add_argument("--cold", default=None,
                   help="workloads whose restores are also measured after dropping the page cache "
                        "(default W1 where /proc/sys/vm/drop_caches is writable; 'none' for none)")
    p.add_argument("--quick", action="store_true", help="smoke-test settings (a few minutes)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON ('-' for stdout)")
    p.add_argument("--png", metavar="PATH", help="write a bar chart (needs matplotlib)")
    p.add_argument("--text", metavar="PATH", help="also write the printed report to a file")
    p.add_argument("--dir", help="scratch directory (default: a temporary one under --tmp, removed after)")
    p.add_argument("--tmp", default=None, help="where to create the scratch directory")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement subprocess")
    p.add_argument("--list", action="store_true", help="list the systems and exit")
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    if args.list:
        for cls in S.ALL:
            why = cls().unavailable()
            print(f"{cls.name:26s} {cls.group:9s} {','.join(cls.ops):42s} {cls.about}"
                  + (f"  [{why}]" if why else ""))
        return 0
    args.workloads = (args.workloads or ("W1,W2,W4" if args.quick else "W1,W2,W3,W4")).split(",")
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad:
        raise SystemExit(f"unknown workloads {bad}; choose from {list(WORKLOADS)}")
    args.reps = args.reps or (3 if args.quick else 5)
    args.scale = args.scale or (0.25 if args.quick else 1.0)
    if args.cold is None:
        args.cold = "none" if args.quick else "W1"
    args.cold = [] if args.cold == "none" else args.cold.split(",")
    report = measure(args)
    text = render(report)
    if args.json == "-":
        print(json.dumps(report, indent=1))
        print(text, file=sys.stderr)
    else:
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    if args.text:
        with open(args.text, "w") as f:
            f.write(text + "\n")
    if args.png:
        chart(report, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
