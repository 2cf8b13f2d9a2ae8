"""Kill campaign: SIGKILL a process that is saving checkpoints, at random moments, many times.

A child process checks and restores the latest checkpoint of its directory (if any) and then saves
step after step for ever; the values of every variable are a pure function of the step
(:func:`model_values`), so a checker can tell exactly which generation it is looking at. After each
SIGKILL the next child — a *fresh* process — must find the latest checkpoint, read every tensor
(each CRC checked) and restore it through the API that saved it, and see every value equal to the
generation named by the checkpoint's step. The step must also be the one the killed child last
reported saved, or the save that was in flight. Six lanes (directories) are driven in parallel, one
per way of saving (``--mode``):

* ``steps``: ``Saver.save(..., global_step=step)``, single-file and sharded;
* ``same``: ``Saver.save`` to the same prefix every time (no global_step: the step is read from the
  ``global_step`` tensor), single-file and sharded — every save replaces the only checkpoint;
* ``manager``: ``CheckpointManager.save(checkpoint_number=step)`` of a ``Checkpoint``;
* ``convert``: ``saverkit convert SRC DST --force`` into the same DST prefix every time;
* ``async`` (not in the default lanes): ``Saver.save(..., options=CheckpointOptions(enable_async=True))``,
  single-file and sharded, and ``async-manager``: the same through ``CheckpointManager.save``. Right
  after each save returns the child overwrites every variable with garbage, then waits (``sync()``) and
  reports the step saved: kills land in the background write, and a checkpoint holding the garbage (a
  snapshot that was not one) is a wrong value. Odd steps write while the snapshot is copied (pipelined),
  even ones after it.

Leftover temporary files are allowed right after a kill, but the next completed save in the same
directory must remove them: the campaign ends with one clean save per directory and then requires
that no temporary file is left at all.

    python tests/campaigns/kill.py run --kills 200 --report kills.json      # the long run
    python tests/campaigns/kill.py child --dir D [--sharded] [--api saver|bundle] [--saves N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MAX_TO_KEEP = 3
# saverkit's temporaries (saverkit.tempfiles): in-progress files "<final>.sktmp-<owner>-<rand>", the
# previous files of a re-saved prefix "<final>.skprev-<owner>", and a sharded save's marked part
# directory "<prefix>_temp_<hex32>/"; TF's temp names too, in case anything still made them.
TEMP_PATTERN = re.compile(r"\.sktmp-|\.skprev-|_temp|\.saverkit-temp$|\.tempstate\d+|\.tmp[0-9a-f]{32}$")
DEFAULT_MODES = ("steps", "same", "manager", "convert")
MODES = (*DEFAULT_MODES, "async", "async-manager")


def model_values(step: int, sharded: bool) -> dict[str, np.ndarray]:
    """The model's variables after `step` steps (~1.2 MiB, big enough that saves take a while)."""
    import ml_dtypes

    rng = np.random.default_rng(step)
    vals = {f"layer{i}/kernel": rng.standard_normal((256, 256)).astype(np.float32) for i in range(4)}
    vals.update({f"layer{i}/bias": np.full((256,), step + i, np.float32) for i in range(4)})
    vals["embedding"] = rng.standard_normal((300, 64)).astype(ml_dtypes.bfloat16)
    vals["counts"] = np.arange(1000, dtype=np.int64) * step
    vals["vocab"] = np.array([b"step-%d" % step, b"", b"w" * (step % 300)], dtype=object)
    vals["global_step"] = np.array(step, np.int64)
    return vals


def step_of(prefix: str) -> int:
    return int(prefix.rsplit("-", 1)[1])


def temp_files(directory: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(directory):
        for n in dirs + files:
            if TEMP_PATTERN.search(n):
                out.append(os.path.relpath(os.path.join(root, n), directory))
    return sorted(out)


# --- saving, two ways: the Saver (the real API), or the bundle + state functions underneath --------
class BundleSaver:
    """What Saver.save does, spelled out with saverkit.bundle and the state-file functions (used until
    the Saver is available, and as a second path under test)."""

    def __init__(self, directory: Path, sharded: bool, durable: bool = False) -> None:
        self.dir, self.sharded, self.durable = directory, sharded, durable

    def save(self, values: dict[str, np.ndarray], step: int) -> str:
        import uuid

        from saverkit import tempfiles
        from saverkit.bundle import merge_bundles, write_bundle
        from saverkit.train import get_checkpoint_state, update_checkpoint_state
        from saverkit.train.checkpoint_management import delete_managed_checkpoint

        prefix = str(self.dir / f"model-{step}")
        names = sorted(values)
        if self.sharded:
            tmp = f"{prefix}_temp_{uuid.uuid4().hex}"
            parts = []
            for shard in range(2):
                part = f"{tmp}/part-{shard:05d}-of-00002"
                mine = names[shard::2]
                write_bundle(part, mine, [values[n] for n in mine], durable=self.durable)
                parts.append(part)
            merge_bundles(parts, prefix, delete_old_dirs=True)
        else:
            write_bundle(prefix, names, [values[n] for n in names], durable=self.durable)
        state = get_checkpoint_state(str(self.dir))
        kept = [p for p in (state.all_model_checkpoint_paths if state else []) if p != prefix] + [prefix]
        update_checkpoint_state(str(self.dir), prefix, kept[-MAX_TO_KEEP:])
        for old in kept[:-MAX_TO_KEEP]:
            delete_managed_checkpoint(old, str(self.dir))
        tempfiles.remove_stale(str(self.dir))
        return prefix

    def restore(self, prefix: str, names: list[str], dtypes: list) -> dict[str, np.ndarray]:
        from saverkit.bundle import read_tensors

        return dict(zip(names, read_tensors(prefix, names, [""] * len(names), dtypes), strict=True))


class SaverSaver:
    """The real thing: variables in a graph, a Session, and saverkit.train.Saver."""

    def __init__(self, directory: Path, sharded: bool, durable: bool = False,
                 template: dict[str, np.ndarray] | None = None, same_prefix: bool = False) -> None:
        import saverkit as sk

        self.dir, self.same_prefix = directory, same_prefix
        self.graph = sk.Graph()
        template = model_values(0, sharded) if template is None else template
        self.vars = {}
        with self.graph.as_default():
            for i, (name, v) in enumerate(sorted(template.items())):
                device = f"/cpu:{i % 2}" if sharded else ""
                with sk.device(device):
                    self.vars[name] = sk.Variable(v, name=name)
            kwargs = {"durable": True} if durable else {}
            self.saver = sk.train.Saver(max_to_keep=MAX_TO_KEEP, sharded=sharded, **kwargs)
            self.init = sk.global_variables_initializer()
        self.sess = sk.Session(graph=self.graph)
        self.sess.run(self.init)

    def save(self, values: dict[str, np.ndarray], step: int) -> str:
        for name, var in self.vars.items():
            var.load(values[name], self.sess)
        step_arg = None if self.same_prefix else step
        return self.saver.save(self.sess, str(self.dir / "model"), global_step=step_arg)

    def restore(self, prefix: str, names: list[str], dtypes: list) -> dict[str, np.ndarray]:
        self.saver.restore(self.sess, prefix)
        return dict(zip(names, self.sess.run([self.vars[n] for n in names]), strict=True))


def _async_options(step: int):
    """Async options; odd steps write each snapshot while it is copied (pipelined, as for big tensors),
    even steps after the copy (as for this model's small ones)."""
    from saverkit.train import CheckpointOptions, async_save

    async_save._PIPELINE_MIN_AVERAGE_BYTES = 0 if step % 2 else 1 << 62  # noqa: SLF001 - both paths
    return CheckpointOptions(enable_async=True)


def _scribble(saver: SaverSaver, step: int) -> None:
    """Overwrite every variable right after an async save returned: none of it may reach the checkpoint."""
    for var in saver.vars.values():
        value = saver.sess.run(var)
        var.load(np.full_like(value, b"garbage" if value.dtype == object else -step), saver.sess)


class AsyncSaverSaver(SaverSaver):
    """Saver.save(..., options=CheckpointOptions(enable_async=True)), then garbage, then sync()."""

    def save(self, values: dict[str, np.ndarray], step: int) -> str:
        for name, var in self.vars.items():
            var.load(values[name], self.sess)
        options = _async_options(step)
        path = self.saver.save(self.sess, str(self.dir / "model"), global_step=step, options=options)
        _scribble(self, step)
        self.saver.sync()
        return path


class ManagerSaver(SaverSaver):
    """A Checkpoint of the same variables, saved by a CheckpointManager as ckpt-<step>."""

    def __init__(self, directory: Path) -> None:
        from saverkit.train import Checkpoint, CheckpointManager

        super().__init__(directory, sharded=False)
        with self.graph.as_default():
            self.ckpt = Checkpoint(**{self._attr(n): v for n, v in self.vars.items()})
        self.manager = CheckpointManager(self.ckpt, str(directory), max_to_keep=MAX_TO_KEEP,
                                         session=self.sess)

    @staticmethod
    def _attr(name: str) -> str:
        return name.replace("/", "_")

    def key(self, name: str) -> str:
        return f"{self._attr(name)}/.ATTRIBUTES/VARIABLE_VALUE"

    def save(self, values: dict[str, np.ndarray], step: int) -> str:
        for name, var in self.vars.items():
            var.load(values[name], self.sess)
        return self.manager.save(checkpoint_number=step)


class AsyncManagerSaver(ManagerSaver):
    """CheckpointManager.save(..., options=CheckpointOptions(enable_async=True)), garbage, then sync()."""

    def save(self, values: dict[str, np.ndarray], step: int) -> str:
        for name, var in self.vars.items():
            var.load(values[name], self.sess)
        path = self.manager.save(checkpoint_number=step, options=_async_options(step))
        _scribble(self, step)
        self.manager.sync()
        return path

    def restore(self, prefix: str, names: list[str], dtypes: list) -> dict[str, np.ndarray]:
        self.ckpt.restore(prefix, session=self.sess).assert_existing_objects_matched()
        return dict(zip(names, self.sess.run([self.vars[n] for n in names]), strict=True))


class ConvertSaver:
    """Writes each generation to SRC (the engine), then `saverkit convert SRC DST --force` into one DST."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.src, self.dst = directory / "src" / "model", directory / "model"

    def latest(self) -> str | None:
        from saverkit import checkpoint_paths

        return str(self.dst) if checkpoint_paths.prefix_exists(str(self.dst)) else None

    def save(self, values: dict[str, np.ndarray], step: int) -> str:
        from saverkit import cli
        from saverkit.bundle import write_bundle

        names = sorted(values)
        write_bundle(str(self.src), names, [values[n] for n in names])
        if cli.main(["convert", str(self.src), str(self.dst), "--force"]) != 0:
            raise RuntimeError("saverkit convert failed")
        return str(self.dst)

    def restore(self, prefix: str, names: list[str], dtypes: list) -> dict[str, np.ndarray]:
        from saverkit.bundle import read_tensors

        return dict(zip(names, read_tensors(prefix, names, [""] * len(names), dtypes), strict=True))


def make_saver(api: str, directory: Path, sharded: bool, durable: bool = False, mode: str = "steps"):
    if mode == "manager":
        return ManagerSaver(directory)
    if mode == "async-manager":
        return AsyncManagerSaver(directory)
    if mode == "async":
        return AsyncSaverSaver(directory, sharded, durable)
    if mode == "convert":
        return ConvertSaver(directory)
    if api == "saver":
        return SaverSaver(directory, sharded, durable, same_prefix=mode == "same")
    return BundleSaver(directory, sharded, durable)


# --- child: check what it finds, restore, then save for ever ---------------------------------------
def child(directory: Path, sharded: bool, api: str, saves: int | None, durable: bool,
          mode: str = "steps") -> None:
    """Prints `check <json>` (what this fresh process finds), `ready <step>`, then
    `saving <step> <t>` / `saved <step> <t>` around every save."""
    directory.mkdir(parents=True, exist_ok=True)
    saver = make_saver(api, directory, sharded, durable, mode)
    report = check(directory, sharded, saver)
    print("check " + json.dumps(report), flush=True)
    if report["problems"]:
        raise SystemExit(1)
    step = report["step"] or 0
    # ml_dtypes is imported on first use (issue 23); its ~0.8 s import must not fill the window in which
    # kills land, or they would all fall before the first save's real work.
    model_values(0, sharded)
    print(f"ready {step}", flush=True)
    done = 0
    while saves is None or done < saves:
        step += 1
        print(f"saving {step} {time.monotonic():.6f}", flush=True)
        saver.save(model_values(step, sharded), step)
        print(f"saved {step} {time.monotonic():.6f}", flush=True)
        done += 1


def check(directory: Path, sharded: bool, saver) -> dict:
    """Finds the latest checkpoint, reads every tensor (each CRC checked) and restores it through
    `saver`; every value must be the generation its step names. Never raises."""
    from saverkit.train import latest_checkpoint, load_checkpoint

    out: dict = {"latest": None, "step": None, "problems": [], "temps": temp_files(directory)}
    key = getattr(saver, "key", lambda name: name)
    try:
        latest = saver.latest() if hasattr(saver, "latest") else latest_checkpoint(str(directory))
        out["latest"] = latest
        if latest is None:
            return out
        reader = load_checkpoint(latest)
        if os.path.basename(latest) == "model":  # one prefix re-saved: the step is in the checkpoint
            step = out["step"] = int(reader.get_tensor(key("global_step")))
        else:
            step = out["step"] = step_of(latest)
        want = model_values(step, sharded)
        names = sorted(want)
        got_map = reader.get_variable_to_shape_map()
        if not {key(n) for n in names} <= set(got_map):
            out["problems"].append(f"keys {sorted(got_map)} lack some of {names}")
        for n in names:
            _compare(out, "load_checkpoint", n, reader.get_tensor(key(n)), want[n])
        dtypes = [want[n].dtype if want[n].dtype != object else "string" for n in names]
        restored = saver.restore(latest, names, dtypes)
        for n in names:
            _compare(out, "restore", n, restored[n], want[n])
    except Exception as e:  # noqa: BLE001 - the report says what went wrong
        out["problems"].append(f"{type(e).__name__}: {e}")
    return out


def _compare(out: dict, how: str, name: str, got, want: np.ndarray) -> None:
    # A 0-d string tensor read through get_tensor is bytes (as TF's reader returns it): an object scalar.
    got = np.array(got, dtype=object) if isinstance(got, bytes) else np.asarray(got)
    if want.dtype == object:
        same = got.shape == want.shape and got.dtype == object and list(got.flat) == list(want.flat)
    else:
        same = got.shape == want.shape and got.dtype == want.dtype and got.tobytes() == want.tobytes()
    if not same:
        out["problems"].append(f"{how}: {name} differs from generation {out['step']}")


# --- parent: the campaign -------------------------------------------------------------------------------
class ChildWatch:
    """Runs a child and follows what it reports on stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        self.check: dict | None = None
        self.saved: int | None = None
        self.saving: int | None = None
        self.save_times: list[float] = []
        self._t = threading.Thread(target=self._follow, daemon=True)
        self._t.start()

    def _follow(self) -> None:
        started = None
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            if word == "check":
                self.check = json.loads(rest)
            elif word == "ready":
                self.ready.set()
            elif word == "saving":
                self.saving, started = int(rest.split()[0]), float(rest.split()[1])
            elif word == "saved":
                self.saved = int(rest.split()[0])
                if started is not None:
                    self.save_times.append(float(rest.split()[1]) - started)
        self.ready.set()  # EOF: don't keep the parent waiting

    def finish(self) -> tuple[int, str]:
        rc = self.proc.wait()
        self._t.join()
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        self.proc.stdout.close()
        return rc, err


def _script_argv(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _temp_kind(name: str) -> str:
    if "_temp" in name or ".saverkit-temp" in name:
        return "part directory"
    if ".skprev-" in name:
        return "re-save backup"
    for kind in (".index.", ".data-", ".meta.", "checkpoint.", ".npz."):
        if kind in name:
            return kind.strip(".") + " temp"
    return "other temp"


class Lane:
    """One save directory (sharded or not) and what is known about it between kills."""

    def __init__(self, root: Path, sharded: bool, api: str, seed: int, mode: str = "steps") -> None:
        self.sharded = sharded
        self.dir = root / f"{mode}-{'sharded' if sharded else 'single'}"
        self.flags = ["--dir", str(self.dir), "--api", api, "--mode", mode]
        self.flags += ["--sharded"] if sharded else []
        self.rng = random.Random(seed)
        self.last_saved: int | None = None  # highest step known to be saved (state file updated)
        self.kills = self.mid_save = self.temps_seen = 0
        self.temp_kinds: dict[str, int] = {}  # where the kills landed, as told by what they left
        self.problems: list[str] = []
        self.save_times: list[float] = []
        # Until one save completes, a guess of the time per save; doubled after each kill that came before
        # any save finished (on a loaded machine a fixed 0.1 s kept every kill before the first save).
        self.save_guess = 0.1

    def judge_check(self, label: str, res: dict | None, stderr: str) -> None:
        """The fresh process's view must be the last saved step, or the one in flight."""
        if res is None:
            self.problems.append(f"{label}: child reported no check: {stderr[-2000:]}")
            return
        problems = list(res["problems"])
        lo = self.last_saved
        if res["latest"] is None and lo is not None:
            problems.append(f"latest_checkpoint is None after step {lo} was saved")
        if res["step"] is not None and lo is not None and not lo <= res["step"] <= lo + 1:
            problems.append(f"latest step {res['step']} but the child last saved {lo}")
        if res["step"] is not None:
            self.last_saved = res["step"]
        self.problems += [f"{label} ({self.dir.name}): {p}" for p in problems]

    def kill_once(self, k: int) -> None:
        watch = ChildWatch(_script_argv("child", *self.flags))
        if not watch.ready.wait(300):
            self.problems.append(f"kill {k}: child never became ready")
        # land anywhere in the next few saves
        per_save = float(np.median(self.save_times)) if self.save_times else self.save_guess
        time.sleep(self.rng.uniform(0, 6 * per_save))
        mid_save = watch.saving is not None and watch.saving != watch.saved
        watch.proc.send_signal(signal.SIGKILL)
        rc, err = watch.finish()
        # the check this child made at start-up judges the previous kill
        self.judge_check(f"after kill {k - 1}" if k else "start", watch.check, err)
        if rc != -signal.SIGKILL:
            self.problems.append(f"kill {k}: child exited by itself ({rc}): {err[-2000:]}")
        self.kills += 1
        self.mid_save += mid_save
        self.temps_seen += bool(watch.check and watch.check["temps"])
        for kind in {_temp_kind(t) for t in (watch.check or {}).get("temps", [])}:
            self.temp_kinds[kind] = self.temp_kinds.get(kind, 0) + 1
        self.save_times += watch.save_times
        if not self.save_times:
            self.save_guess *= 2
        if watch.saved is not None:
            self.last_saved = watch.saved

    def finish(self) -> list[str]:
        """A fresh process checks the last kill; one clean save; then no temporary file may remain."""
        r = subprocess.run(_script_argv("child", *self.flags, "--saves", "1"), capture_output=True, text=True,
                           timeout=600)
        checks = [json.loads(line[6:]) for line in r.stdout.splitlines() if line.startswith("check ")]
        self.judge_check("after the last kill", checks[0] if checks else None, r.stderr)
        if r.returncode != 0:
            self.problems.append(f"final save in {self.dir.name} failed: {r.stderr[-2000:]}")
        else:
            self.last_saved = (self.last_saved or 0) + 1
        r = subprocess.run(_script_argv("child", *self.flags, "--saves", "0"), capture_output=True, text=True,
                           timeout=600)
        checks = [json.loads(line[6:]) for line in r.stdout.splitlines() if line.startswith("check ")]
        self.judge_check("after the clean save", checks[0] if checks else None, r.stderr)
        return checks[0]["temps"] if checks else []


def run_campaign(kills: int, seed: int = 0, api: str = "saver", workdir: Path | None = None,
                 progress: bool = False, modes: tuple[str, ...] = DEFAULT_MODES) -> dict:
    """`kills` SIGKILLs spread over the lanes (every mode of saving; the bundle API only has the
    steps lanes), all driven in parallel."""
    root = Path(tempfile.mkdtemp(prefix="sk-kill-", dir=workdir))
    started = time.monotonic()
    kinds = [("steps", False), ("steps", True)]
    if api == "saver":
        kinds += [("same", False), ("same", True), ("manager", False), ("convert", False),
                  ("async", False), ("async", True), ("async-manager", False)]
    kinds = [(mode, sharded) for mode, sharded in kinds if mode in modes]
    lanes = [Lane(root, sharded, api, seed * 8 + i, mode) for i, (mode, sharded) in enumerate(kinds)]
    final_temps: dict[str, list[str]] = {}

    def drive(lane: Lane, n: int) -> None:
        for k in range(n):
            lane.kill_once(k)
            if progress and (k + 1) % 10 == 0:
                print(f"{lane.dir.name}: {k + 1}/{n} kills, {len(lane.problems)} problems, "
                      f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        final_temps[lane.dir.name] = lane.finish()

    try:
        threads = [threading.Thread(target=drive, args=(lane, kills // len(lanes) + (i < kills % len(lanes))))
                   for i, lane in enumerate(lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    times = [t for lane in lanes for t in lane.save_times]
    return {
        "api": api,
        "kills": sum(lane.kills for lane in lanes),
        "kills_mid_save": sum(lane.mid_save for lane in lanes),
        "problems": [p for lane in lanes for p in lane.problems],
        "temps_seen_after_kill": sum(lane.temps_seen for lane in lanes),
        "temps_seen_by_kind": {k: sum(lane.temp_kinds.get(k, 0) for lane in lanes)
                               for k in sorted({k for lane in lanes for k in lane.temp_kinds})},
        "temps_not_cleaned": [f"{name}/{t}" for name, ts in final_temps.items() for t in ts],
        "max_step": {lane.dir.name: lane.last_saved for lane in lanes},
        "save_seconds_median": round(float(np.median(times)), 4) if times else None,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("child")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--sharded", action="store_true")
    p.add_argument("--api", choices=["saver", "bundle"], default="saver")
    p.add_argument("--saves", type=int, default=None, help="stop after this many saves")
    p.add_argument("--durable", action="store_true")
    p.add_argument("--mode", choices=MODES, default="steps")
    p = sub.add_parser("run")
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api", choices=["saver", "bundle"], default="saver")
    p.add_argument("--report", type=Path)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES),
                   help="which ways of saving get lanes (same: one prefix re-saved)")
    args = ap.parse_args(argv)
    if args.cmd == "child":
        child(args.dir, args.sharded, args.api, args.saves, args.durable, args.mode)
        return 0
    report = run_campaign(args.kills, args.seed, args.api, progress=True, modes=tuple(args.modes))
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text)
    print(text)
    return 0 if not report["problems"] and not report["temps_not_cleaned"] else 1


if __name__ == "__main__":
    sys.exit(main())
