"""One rank of a distributed save/restore, under ``mpiexec`` (``--via mpi``) or as one of N processes
joined by torch.distributed gloo on 127.0.0.1 (``--via torch``, rank/world/port from the arguments).

    mpiexec -n 4 python dist_worker.py --via mpi save DIR STEP
    python dist_worker.py --via torch --rank R --world 4 --port P save DIR STEP

Commands (each rank prints one JSON line ``{"rank": r, ...}`` on stdout):
    save DIR STEP                 the dist_helpers model of this rank, saved at STEP
    restore PREFIX SAVED_WORLD    restore the model split over this world; checks the values
    die DIR STEP VICTIM PHASE SIG save; rank VICTIM sends itself SIG (KILL or STOP: a hung rank) at
                                  PHASE (after-write: its part is written; in-commit: rank 0 merged,
                                  the state file not yet written); the others report their error
                                  (--async: an asynchronous save, killed in its background write)
    async-save DIR STEP           an asynchronous save at STEP: rank 0's write is held while every rank
                                  changes its variables and runs collectives of its own on the job's
                                  coordinator (the save's are on a duplicate); then sync (--no-sync:
                                  exit with the save in flight)
    dup-timeout                   rank 0 duplicates the coordinator with a 2 s timeout, which the others
                                  never join; it reports its error and seconds
    bench DIR MIB                 each rank saves MIB MiB of its own variables; prints seconds
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import saverkit as sk  # noqa: E402
from dist_helpers import build_rank_model, emb_full, shared  # noqa: E402
from saverkit import distributed as dist  # noqa: E402

# Imported before the runtime starts, as a user's script may: its exit hook then runs after the
# runtime's own (see async_save.background_coordinator).
from saverkit.train import async_save  # noqa: E402, F401


def coordinator(args) -> dist.Coordinator:
    if args.via == "mpi":
        if args.thread_level:
            import mpi4py

            mpi4py.rc.thread_level = args.thread_level
        return dist.MPICoordinator(timeout=args.timeout)
    if args.via == "jax":
        import jax

        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.world,
                                   process_id=args.rank, initialization_timeout=60)
        return dist.JaxCoordinator(timeout=args.timeout)
    import datetime

    import torch.distributed as tdist

    tdist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank, world_size=args.world,
        timeout=datetime.timedelta(seconds=max(args.timeout, 30)))
    return dist.TorchCoordinator(timeout=args.timeout)


def report(coord, **kw) -> None:
    sys.stdout.write(json.dumps({"rank": coord.rank, **kw}) + "\n")  # one write: lines of ranks interleave
    sys.stdout.flush()


def do_save(coord, directory, step, asynchronous=False):
    g = sk.Graph()
    with g.as_default():
        build_rank_model(coord.rank, coord.world_size, step)
        saver = sk.train.Saver(coordinator=coord)
        with sk.Session(graph=g) as sess:
            sess.run(sk.global_variables_initializer())
            options = sk.train.CheckpointOptions(enable_async=asynchronous)
            path = saver.save(sess, os.path.join(directory, "model"), global_step=step, options=options)
            saver.sync()
            return path


def do_restore(coord, prefix, saved_world):
    g = sk.Graph()
    with g.as_default():
        model = build_rank_model(coord.rank, coord.world_size, -1, emb_world=saved_world, with_own=False)
        saver = sk.train.Saver(coordinator=coord)
        with sk.Session(graph=g) as sess:
            saver.restore(sess, prefix)
            step = int(sess.run(model["shared"])[0])
            full = emb_full(saved_world, step)
            bounds = np.linspace(0, full.shape[0], coord.world_size + 1).astype(int)
            lo, hi = bounds[coord.rank], bounds[coord.rank + 1]
            np.testing.assert_array_equal(sess.run(model["emb"]), full[lo:hi])
            np.testing.assert_array_equal(sess.run(model["shared"]), shared(step))
            return step


def do_async_save(coord, directory, step, wait=True):
    import threading

    from saverkit import bundle

    release = threading.Event()
    if coord.rank == 0:  # the other ranks' background threads wait in the save's write collective
        real = bundle.write_bundle

        def held(*a, **k):
            release.wait(60)
            return real(*a, **k)

        bundle.write_bundle = held
    g = sk.Graph()
    with g.as_default():
        model = build_rank_model(coord.rank, coord.world_size, step)
        saver = sk.train.Saver(coordinator=coord)
        with sk.Session(graph=g) as sess:
            sess.run(sk.global_variables_initializer())
            path = saver.save(sess, os.path.join(directory, "model"), global_step=step,
                              options=sk.train.CheckpointOptions(enable_async=True))
            latest_then = sk.train.latest_checkpoint(directory)
            for v in model.values():  # later training: not in the checkpoint
                sess.run(v.assign(np.zeros(v.shape, v.dtype.as_numpy_dtype)))
            seen = [coord.all_gather(coord.rank * 10 + i) for i in range(5)]
            coord.barrier()
            release.set()
            if wait:
                saver.sync()
            # else the interpreter's exit completes the save, before the runtime shuts down
            return {"path": path, "latest_then": latest_then, "seen": seen}


def arm_death(coord, victim, phase, sig="KILL"):
    if coord.rank != victim:
        return
    from saverkit import bundle

    def die():
        report(coord, dying=phase, pid=os.getpid())
        os.kill(os.getpid(), getattr(signal, "SIG" + sig))

    if phase == "after-write":
        real = bundle.write_bundle

        def write_then_die(*a, **k):
            real(*a, **k)
            die()

        bundle.write_bundle = write_then_die
    elif phase == "in-commit":
        from saverkit import _core

        real_merge = _core.merge_bundles

        def merge_then_die(*a, **k):
            real_merge(*a, **k)
            die()

        _core.merge_bundles = merge_then_die
    else:
        raise ValueError(phase)


def do_bench(coord, directory, mib, repeats=3):
    n_vars = 16
    per = mib * (1 << 20) // 4 // n_vars
    g = sk.Graph()
    with g.as_default():
        for i in range(n_vars):
            sk.Variable(np.full(per, coord.rank + i, np.float32), name=f"rank{coord.rank}/v{i}")
        saver = sk.train.Saver(coordinator=coord, max_to_keep=1)
        with sk.Session(graph=g) as sess:
            sess.run(sk.global_variables_initializer())
            times = []
            for r in range(repeats):
                coord.barrier()
                t0 = time.perf_counter()
                saver.save(sess, os.path.join(directory, "bench"), global_step=r, write_meta_graph=False)
                times.append(time.perf_counter() - t0)
            return times


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--via", choices=["mpi", "torch", "jax"], required=True)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--thread-level", default="")  # mpi4py.rc.thread_level
    p.add_argument("--async", dest="asynchronous", action="store_true")  # die: an asynchronous save
    p.add_argument("--no-sync", action="store_true")  # async-save: exit with the save in flight
    p.add_argument("cmd")
    p.add_argument("args", nargs="*")
    args = p.parse_args()
    coord = coordinator(args)
    try:
        if args.cmd == "save":
            report(coord, path=do_save(coord, args.args[0], int(args.args[1])))
        elif args.cmd == "restore":
            report(coord, step=do_restore(coord, args.args[0], int(args.args[1])))
        elif args.cmd == "die":
            directory, step, victim, phase, sig = args.args
            from saverkit import bundle

            written = {}
            real_write = bundle.write_bundle

            def timed_write(*a, **k):
                real_write(*a, **k)
                written["at"] = time.monotonic()

            bundle.write_bundle = timed_write
            arm_death(coord, int(victim), phase, sig)
            t0 = time.monotonic()
            try:
                do_save(coord, directory, int(step), asynchronous=args.asynchronous)
            except sk.errors.OpError as e:
                # seconds: since this rank's part was written (about when the victim died), else since start
                waited = time.monotonic() - written.get("at", t0)
                report(coord, error=type(e).__name__, message=str(e)[:300], seconds=waited)
                os._exit(0)  # a peer is dead: skip the runtime's shutdown, which may wait for it
            report(coord, error=None)
        elif args.cmd == "async-save":
            report(coord, **do_async_save(coord, args.args[0], int(args.args[1]), wait=not args.no_sync))
        elif args.cmd == "dup-timeout":
            if coord.rank != 0:
                time.sleep(30)  # ended by the job's end once rank 0 exits
                os._exit(0)
            t0 = time.monotonic()
            try:
                coord.duplicate(timeout=2)
            except sk.errors.OpError as e:
                report(coord, error=type(e).__name__, message=str(e)[:300], seconds=time.monotonic() - t0,
                       broken=coord.broken is not None)
            else:
                report(coord, error=None, seconds=time.monotonic() - t0)
            os._exit(0)  # a duplicate is half made: skip the runtime's shutdown, which would wait for it
        elif args.cmd == "bench":
            report(coord, times=do_bench(coord, args.args[0], int(args.args[1])))
        else:
            raise SystemExit(f"unknown command {args.cmd}")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        report(coord, error=type(e).__name__, message=str(e)[:500])
        return finish(args, coord, 1)
    return finish(args, coord, 0)


def finish(args, coord, rc: int) -> int:
    """gloo may abort a process whose peers close their connections during interpreter shutdown
    (exit status -6 after a successful save): leave together, tear the group down, skip the rest."""
    if args.via != "torch":
        return rc
    import torch.distributed as tdist

    try:
        coord.barrier(timeout=30)
        tdist.destroy_process_group()
    except Exception:  # noqa: BLE001 - a peer already gone: nothing left to agree on
        pass
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
