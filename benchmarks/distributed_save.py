"""Distributed save throughput: N = 1, 2, 4 MPI ranks each saving MIB MiB into ONE checkpoint in one
directory, next to an N-process pwrite bound measured in the same run; restore throughput with each
rank's slices matching the save (same world) and shifted by half a part, so that each stored slice is
split between two ranks (the reads of a different world size: every row read once, each rank reading
one part's bytes); merge + commit time for 10,000 keys; and an asynchronous save of the same variables
(``CheckpointOptions(enable_async=True)``): how long each rank blocks (the longest rank), next to a
memcpy of the payload that every rank makes at once in the same run, and its total time (until every
rank's ``sync()`` returned) next to the synchronous save's.

    python benchmarks/distributed_save.py [--ranks 1 2 4] [--mib 256] [--repeats 3] [--dir DIR]

The driver launches ``mpiexec -n N`` (the mpich wheel's) for each N and prints a Markdown table. The
files go to page cache (no fsync): the bound is what N processes writing N new files at once get here,
measured interleaved with the saves, each step after a sync() so no step pays for another's writeback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS_PER_MIB = 1 << 16  # float32 rows of 4 values: 16 B per row


def _pwrite_bound(coord, directory: str, nbytes: int) -> float:
    """Seconds for every rank to write ``nbytes`` into its own new file (max over ranks)."""
    buf = np.full(nbytes, coord.rank + 1, np.uint8)
    chunk = 64 << 20
    path = os.path.join(directory, f"pwrite-{coord.rank}")
    coord.barrier()
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(buf)
        for off in range(0, nbytes, chunk):
            os.pwrite(fd, view[off:off + chunk], off)
    finally:
        os.close(fd)
    coord.barrier()
    elapsed = time.perf_counter() - t0
    os.unlink(path)
    return elapsed


def _settle(coord) -> None:
    """Before each timed step: no dirty pages of earlier steps (or other programs) left to throttle it."""
    os.sync()
    coord.barrier()


def worker(args) -> None:
    import saverkit as sk
    from saverkit import distributed as dist

    coord = dist.MPICoordinator(timeout=600)
    rank, n = coord.rank, coord.world_size
    nbytes = args.mib << 20
    rows = args.mib * ROWS_PER_MIB
    directory = args.dir
    out: dict = {"ranks": n, "mib_per_rank": args.mib}

    bound = []
    g = sk.Graph()
    with g.as_default():
        full_rows = n * rows
        value = np.full((rows, 4), rank, np.float32)
        v = sk.Variable(value, name=f"emb/part_{rank}")
        v._set_save_slice_info(sk.Variable.SaveSliceInfo("emb", [full_rows, 4], [rank * rows, 0], [rows, 4]))
        saver = sk.train.Saver([v], coordinator=coord, max_to_keep=None)
        # the same variable read in slices shifted by half a part (another world size's reads): every
        # stored slice is split between two ranks, every row read by exactly one rank, each rank reading
        # one part's bytes (the last rank: the first half part and the last half part, as two slices)
        shift = rows // 2 if n > 1 else 0
        ranges = [(rank * rows + shift, rows)] if rank < n - 1 or n == 1 else \
            [(0, shift), ((n - 1) * rows + shift, rows - shift)]
        shifted_vars = []
        for k, (lo, length) in enumerate(ranges):
            w = sk.Variable(np.zeros((length, 4), np.float32), name=f"shifted/part_{rank}_{k}")
            w._set_save_slice_info(sk.Variable.SaveSliceInfo("emb", [full_rows, 4], [lo, 0], [length, 4]))
            shifted_vars.append(w)
        shifted = sk.train.Saver(shifted_vars, coordinator=coord, max_to_keep=None)
        with sk.Session(graph=g) as sess:
            sess.run(sk.global_variables_initializer())
            saves, restores, restores_shifted = [], [], []
            copies, blocked, async_totals = [], [], []
            scratch = np.empty_like(value)
            options = sk.train.CheckpointOptions(enable_async=True)
            for r in range(args.repeats):  # the bound and the save measured alike, interleaved
                _settle(coord)
                bound.append(_pwrite_bound(coord, directory, nbytes))
                prefix = os.path.join(directory, f"ckpt-{r}")
                _settle(coord)
                t0 = time.perf_counter()
                saver.save(sess, prefix, write_meta_graph=False)
                coord.barrier()
                saves.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                saver.restore(sess, prefix)
                coord.barrier()
                restores.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                shifted.restore(sess, prefix)
                coord.barrier()
                restores_shifted.append(time.perf_counter() - t0)
                _settle(coord)
                t0 = time.perf_counter()
                np.copyto(scratch, value)
                copies.append(max(coord.all_gather(time.perf_counter() - t0)))
                _settle(coord)
                t0 = time.perf_counter()
                saver.save(sess, prefix + "-async", write_meta_graph=False, options=options)
                t1 = time.perf_counter()
                saver.sync()
                coord.barrier()
                async_totals.append(time.perf_counter() - t0)
                blocked.append(max(coord.all_gather(t1 - t0)))
                if rank == 0:
                    for name in os.listdir(directory):
                        if name.startswith((f"ckpt-{r}.", f"ckpt-{r}-async.")):
                            os.unlink(os.path.join(directory, name))
            for w, (lo, length) in zip(shifted_vars, ranges, strict=True):
                got = sess.run(w)
                assert got[0, 0] == lo // rows and got[-1, 0] == (lo + length - 1) // rows, \
                    "shifted restore read the wrong rows"
    total = n * nbytes / 1e9
    out.update(
        pwrite_gbps=total / min(bound),
        save_gbps=total / min(saves),
        restore_gbps=total / min(restores),
        restore_other_world_gbps=total / min(restores_shifted),
        save_seconds=min(saves),
        memcpy_ms=min(copies) * 1e3,
        async_blocks_ms=min(blocked) * 1e3,
        async_total_vs_sync=min(async_totals) / min(saves),
    )
    out["save_vs_bound"] = out["save_gbps"] / out["pwrite_gbps"]
    if rank == 0:
        out.update(_merge_10k(directory, n))
        print(json.dumps(out), flush=True)
    coord.barrier()


def _merge_10k(directory: str, n: int, keys: int = 10_000) -> dict:
    """Merge + commit of ``keys`` keys written as ``max(n, 4)`` parts (what rank 0 does after the
    writes): the engine merge, then the state file. Best of 5."""
    from saverkit import _core, bundle, tempfiles
    from saverkit.train import checkpoint_management

    parts_n = max(n, 4)
    best_merge, best_commit = float("inf"), float("inf")
    for rep in range(5):
        part_dir = os.path.join(directory, f"m{rep}_temp_{'0' * 31}{rep}")
        parts = [os.path.join(part_dir, f"part-{k:05d}-of-{parts_n:05d}") for k in range(parts_n)]
        per = keys // parts_n
        for k, part in enumerate(parts):
            names = [f"layer_{k * per + i:05d}/kernel" for i in range(per)]
            bundle.write_bundle(part, names, [np.full(16, i, np.float32) for i in range(per)])
        dest = os.path.join(directory, f"merged-{rep}")
        t0 = time.perf_counter()
        _core.merge_bundles(parts, dest, True, False, False)
        tempfiles.remove_part_dir(part_dir)
        t1 = time.perf_counter()
        checkpoint_management.update_checkpoint_state_internal(
            save_dir=directory, model_checkpoint_path=dest, all_model_checkpoint_paths=[dest])
        t2 = time.perf_counter()
        best_merge, best_commit = min(best_merge, t1 - t0), min(best_commit, t2 - t0)
    return {"merge_10k_ms": best_merge * 1e3, "merge_commit_10k_ms": best_commit * 1e3}


def driver(args) -> None:
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which("mpiexec") or sys.exit("no mpiexec: pip install mpich mpi4py")
    rows = []
    for n in args.ranks:
        directory = tempfile.mkdtemp(prefix=f"dist-bench-{n}-", dir=args.dir)
        try:
            cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
                   "--mib", str(args.mib), "--repeats", str(args.repeats), "--dir", directory]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
            if proc.returncode != 0 or not line:
                sys.exit(f"N={n} failed:\n{proc.stdout}\n{proc.stderr}")
            rows.append(json.loads(line[-1]))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    print("| N | MiB/rank | pwrite bound GB/s | save GB/s | save / bound | restore GB/s (same world) "
          "| restore GB/s (other world's slices) | other / same | merge 10k keys ms "
          "| merge + state file 10k ms | async blocks ms | memcpy ms | blocks / memcpy "
          "| async total / sync |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ranks']} | {r['mib_per_rank']} | {r['pwrite_gbps']:.2f} | {r['save_gbps']:.2f} | "
              f"{r['save_vs_bound']:.2f} | {r['restore_gbps']:.2f} | {r['restore_other_world_gbps']:.2f} | "
              f"{r['restore_other_world_gbps'] / r['restore_gbps']:.2f} | "
              f"{r['merge_10k_ms']:.1f} | {r['merge_commit_10k_ms']:.1f} | {r['async_blocks_ms']:.1f} | "
              f"{r['memcpy_ms']:.1f} | {r['async_blocks_ms'] / r['memcpy_ms']:.2f} | "
              f"{r['async_total_vs_sync']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None, help="where the checkpoints go (default: the temp directory)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
