"""Corruption campaign: damage real checkpoints thousands of ways and read every tensor.

Every read must either return the exact original value or raise a saverkit.errors.OpError.
Reads run in a subprocess (subprocess_runner.Worker), so a segfault or abort is *counted* as a
crash and a read that never returns is counted as a hang; the worker runs under an address-space
limit so an allocation sized by a corrupt field fails loudly instead of passing unnoticed.

    python tests/campaigns/corruption.py --mutations 10000 --seed 1 --report report.json

Subjects: the TensorFlow-written fixtures in tests/fixtures/tf-2.21/ and checkpoints written by
saverkit itself (every dtype with strings/scalars/empty tensors, a two-shard merged bundle, a
partitioned variable, an index with more than one data block, and three generations of one model
whose files get swapped with each other).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `campaigns` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from campaigns.mutations import Generator, Mutation, Subject
from campaigns.subprocess_runner import Worker, WorkerCrashed, WorkerHung

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tf-2.21"


# --- subjects ------------------------------------------------------------------------------------
def _load_files(directory: Path, prefix: str) -> dict[str, bytes]:
    names = [prefix + ".index"] + sorted(p.name for p in directory.glob(prefix + ".data-*"))
    return {n: (directory / n).read_bytes() for n in names}


def tf_fixture_subjects() -> list[tuple[Path, str, str]]:
    """(directory, prefix, group) for every checkpoint among the TF fixtures."""
    out = []
    for case in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        for index in sorted(case.glob("*.index")):
            out.append((case, index.name[: -len(".index")], "tf:" + case.name))
    return out


def generation_values(step: int) -> dict[str, np.ndarray]:
    """One model's variables at a given step; some tensors never change between generations."""
    rng = np.random.default_rng(step)
    return {
        "dense/kernel": rng.standard_normal((16, 8)).astype(np.float32),
        "dense/bias": np.full((8,), step, np.float32),
        "embedding": rng.standard_normal((40, 4)).astype(np.float64),
        "global_step": np.array(step, np.int64),
        "vocab": np.array([b"fixed", b"token-%d" % step, b"x" * (100 + step)], dtype=object),
        "frozen": np.arange(12, dtype=np.int32).reshape(3, 4),  # identical in every generation
    }


def dtype_zoo() -> dict[str, np.ndarray]:
    import ml_dtypes

    rng = np.random.default_rng(7)
    out: dict[str, np.ndarray] = {}
    for name in ["float16", "float32", "float64", "int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64", "complex64", "complex128"]:
        out[f"zoo/{name}"] = (rng.standard_normal((3, 5)) * 100).astype(name)
    out["zoo/bfloat16"] = rng.standard_normal((7,)).astype(ml_dtypes.bfloat16)
    out["zoo/bool"] = rng.random((9,)) < 0.5
    out["zoo/scalar_f32"] = np.array(3.5, np.float32)
    out["zoo/empty_f32"] = np.zeros((2, 0), np.float32)
    out["zoo/str_scalar"] = np.array(b"hello world", dtype=object)
    out["zoo/str_empty"] = np.zeros((0,), dtype=object)
    out["zoo/str_mixed"] = np.array([b"", b"a", bytes(range(256)), b"z" * 300, "h\u00e9".encode()],
                                    dtype=object)
    return out


def write_own_checkpoints(root: Path) -> list[tuple[Path, str, str]]:
    """Writes saverkit checkpoints for the campaign; returns (directory, prefix, group)."""
    from saverkit.bundle import merge_bundles, write_bundle

    root.mkdir(parents=True, exist_ok=True)
    out = []

    def save(prefix: str, values: dict[str, np.ndarray]) -> None:
        write_bundle(str(root / prefix), list(values), list(values.values()))

    zoo = dtype_zoo()
    save("zoo", zoo)
    out.append((root, "zoo", "own:zoo"))

    for step in (1, 2, 3):
        save(f"gen-{step}", generation_values(step))
        out.append((root, f"gen-{step}", "own:gen"))

    # two shards written separately then merged, as a sharded Saver does
    values = generation_values(10)
    names = sorted(values)
    parts = []
    for shard in range(2):
        part = root / "sharded_temp" / f"part-{shard:05d}-of-00002"
        part.parent.mkdir(exist_ok=True)
        mine = names[shard::2]
        write_bundle(str(part), mine, [values[n] for n in mine])
        parts.append(str(part))
    merge_bundles(parts, str(root / "sharded"), delete_old_dirs=True)
    out.append((root, "sharded", "own:sharded"))

    # a partitioned variable: three row slices of one [6, 4] tensor, plus a plain neighbour
    full = np.arange(24, dtype=np.float32).reshape(6, 4)
    specs = ["6 4 0,2:-", "6 4 2,2:-", "6 4 4,2:-"]
    write_bundle(str(root / "partitioned"), ["part", "part", "part", "plain"],
                 [full[0:2], full[2:4], full[4:6], np.ones(3, np.int32)], specs + [""])
    out.append((root, "partitioned", "own:partitioned"))

    # more than one data block in the index (> 256 KiB of entries)
    many = {f"layer_{i:03d}/" + "k" * 1000: np.array(i, np.int32) for i in range(300)}
    save("multiblock", many)
    out.append((root, "multiblock", "own:multiblock"))
    return out


def pristine_subjects(worker: Worker, sources: list[tuple[Path, str, str]]) -> list[Subject]:
    """Reads every tensor of every source once; these values are the campaign's ground truth."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["cases"]
    subjects = []
    for directory, prefix, group in sources:
        files = _load_files(directory, prefix)
        listing = {"prefix": str(directory / prefix), "names": [], "dtypes": [], "modes": ["reader"]}
        ans = worker.request(listing, timeout=60)["modes"]["reader"]
        if ans["open"] is not None:
            raise RuntimeError(f"cannot open pristine {directory / prefix}: {ans['open']}")
        entries = ans["entries"]
        names = sorted(entries)
        dtypes = [entries[n][0] for n in names]
        ans = worker.request({"prefix": str(directory / prefix), "names": names, "dtypes": dtypes,
                              "modes": ["reader"]}, timeout=60)["modes"]["reader"]
        digests = {}
        for n in names:
            v = ans["values"][n]
            if "digest" not in v:
                raise RuntimeError(f"cannot read pristine {directory / prefix}:{n}: {v}")
            digests[n] = {"digest": v["digest"], "shape": v["shape"], "dtype": entries[n][0]}
        if group.startswith("tf:"):  # the engine's pristine reads must match what TF wrote
            case = manifest[group[3:]]["checkpoints"].get(f"{group[3:]}/{prefix}", {})
            for n, rec in case.items():
                if n in digests and digests[n]["digest"] != rec["sha256"]:
                    raise RuntimeError(f"pristine {prefix}:{n} does not match the manifest")
        label = ("tf:" if group.startswith("tf:") else "own:") + (
            f"{directory.name}/{prefix}" if group.startswith("tf:") else prefix)
        subjects.append(Subject(label, prefix, files, digests, group))
    return subjects


# --- judging one mutation ----------------------------------------------------------------------------
def judge(m: Mutation, answer: dict) -> tuple[str, list[str]]:
    """('intact' | 'detected' | 'wrong' | 'bad_exception', problems) for one worker answer."""
    expected = m.expected()
    problems = []
    detected = False
    for mode, res in answer["modes"].items():
        outcomes = [res["open"]] if res["open"] is not None else list(res["values"].values())
        for o in outcomes:
            if "error" in o:
                detected = True
                if not o["op_error"]:
                    tb = o.get("traceback", "")
                    problems.append(f"[{mode}] non-OpError {o['error']}: {o['message']}\n{tb}")
        if res["open"] is not None:
            continue
        if res["entries"] is not None:
            want = {n: [d["dtype"], d["shape"]] for n, d in expected.digests.items()}
            got = res["entries"]
            if got != want:
                diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                problems.append(f"[{mode}] WRONG entry listing, differs at {diff[:4]}")
        for n, o in res["values"].items():
            if "digest" in o:
                exp = expected.digests[n]
                if o["digest"] != exp["digest"] or o["shape"] != exp["shape"]:
                    problems.append(f"[{mode}] WRONG value for {n!r}")
    if any("WRONG" in p for p in problems):
        return "wrong", problems
    if problems:
        return "bad_exception", problems
    return ("detected" if detected else "intact"), problems


def _errors_not_naming_the_checkpoint(answer: dict) -> list[str]:
    out = []
    for res in answer["modes"].values():
        outcomes = [res["open"]] if res["open"] is not None else list(res["values"].values())
        out += [o["message"][:300] for o in outcomes if "error" in o and not o["names_checkpoint"]]
    return out


def _distinct(messages: list[str]) -> list[str]:
    """One example per message template (digits and quoted keys blanked)."""
    seen, out = set(), []
    for m in messages:
        shape = re.sub(r"'[^']*'|\d+", "#", m.split(": ", 1)[-1])
        if shape not in seen:
            seen.add(shape)
            out.append(m)
    return out


# --- the campaign ---------------------------------------------------------------------------------------
def run_campaign(total: int, seed: int = 1, timeout: float = 20.0, save_failures: Path | None = None,
                 progress: bool = False, workdir: Path | None = None) -> dict:
    started = time.monotonic()
    scratch_root = Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    tmp = Path(tempfile.mkdtemp(prefix="sk-corrupt-", dir=workdir or scratch_root))
    try:
        with Worker() as worker:
            sources = tf_fixture_subjects() + write_own_checkpoints(tmp / "own")
            subjects = pristine_subjects(worker, sources)
            gen = Generator(subjects, seed)
            mutations = gen.mutations(total)
            stats: dict[str, Counter] = defaultdict(Counter)
            failures = []
            unnamed_errors = []
            maxrss = 0
            case_dir = tmp / "case"
            for i, m in enumerate(mutations):
                files = m.apply()
                shutil.rmtree(case_dir, ignore_errors=True)
                case_dir.mkdir()
                for name, data in files.items():
                    (case_dir / name).write_bytes(data)
                expected = m.expected()
                names = sorted(expected.digests)
                req = {"prefix": str(case_dir / m.subject.prefix), "names": names,
                       "dtypes": [expected.digests[n]["dtype"] for n in names],
                       "modes": ["reader", ("batch", "load")[i % 2]]}
                try:
                    answer = worker.request(req, timeout)
                    verdict, problems = judge(m, answer)
                    maxrss = max(maxrss, answer.get("maxrss_kib", 0))
                    unnamed = _errors_not_naming_the_checkpoint(answer)
                    unnamed_errors += [f"{m.describe()}: {msg}" for msg in unnamed]
                except WorkerCrashed as e:
                    verdict, problems = "crash", [str(e)]
                except WorkerHung as e:
                    verdict, problems = "hang", [str(e)]
                stats[m.kind][verdict] += 1
                stats[m.kind]["tried"] += 1
                if verdict in ("crash", "hang", "wrong", "bad_exception"):
                    failures.append({"mutation": m.describe(), "verdict": verdict, "problems": problems[:3]})
                    if save_failures is not None:
                        dest = save_failures / f"{len(failures):04d}-{verdict}-{m.kind}"
                        shutil.copytree(case_dir, dest, dirs_exist_ok=True)
                        (dest / "MUTATION.txt").write_text(m.describe() + "\n" + "\n".join(problems))
                if progress and (i + 1) % 500 == 0:
                    print(f"{i + 1}/{len(mutations)} mutations, {len(failures)} failures, "
                          f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            totals = Counter()
            for c in stats.values():
                totals.update(c)
            return {
                "mutations": len(mutations),
                "seed": seed,
                "subjects": [s.name for s in subjects],
                "totals": {k: totals[k] for k in ("tried", "intact", "detected", "wrong", "bad_exception",
                                                  "crash", "hang")},
                "by_kind": {k: dict(v) for k, v in sorted(stats.items())},
                "errors_not_naming_the_checkpoint": len(unnamed_errors),
                "examples_not_naming_the_checkpoint": _distinct(unnamed_errors)[:10],
                "worker_restarts": worker.restarts,
                "worker_max_rss_kib": maxrss,
                "seconds": round(time.monotonic() - started, 1),
                "failures": failures[:50],
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mutations", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a read counts as a hang")
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--save-failures", type=Path, help="copy each failing case's files here")
    args = ap.parse_args(argv)
    report = run_campaign(args.mutations, args.seed, args.timeout, args.save_failures, progress=True)
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text)
    print(text)
    t = report["totals"]
    return 0 if t["wrong"] == t["bad_exception"] == t["crash"] == t["hang"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
