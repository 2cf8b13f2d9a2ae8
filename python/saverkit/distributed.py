"""Many processes, one checkpoint: the coordinator protocol saverkit needs from a job's own runtime.

saverkit never starts a cluster or a server of its own. A job that already runs as several processes
(``mpiexec``, ``torchrun``, ...) hands a :class:`Coordinator` to ``Saver(..., coordinator=coord)``; every
rank then calls ``save``/``restore`` with its own variables and the ranks together write ONE TensorFlow
checkpoint. A coordinator offers four things, each collective bounded by a timeout:

* ``rank`` and ``world_size``;
* ``barrier()``;
* ``all_gather(obj)``: every rank's picklable ``obj``, as a list indexed by rank, on every rank;
* ``broadcast(obj, root=0)``: ``root``'s ``obj`` on every rank;
* ``duplicate()`` (optional): a coordinator over the same ranks on a channel of its own, whose
  collectives may run on another thread while this one's run (an asynchronous save's background
  commit: MPI ``Idup``, a new gloo group, another key namespace).

A collective that does not complete within its timeout raises :class:`CollectiveTimeoutError` (a peer
died or hangs) and the coordinator is then *broken*: every later call raises at once, since messages of
the abandoned collective may still arrive. Errors of one rank reach the others through the payloads:
:func:`run_everywhere` runs a step on every rank and, if any rank failed, raises :class:`RankFailedError`
naming the rank(s) on every rank, so no rank is left waiting for a peer that already gave up.

Adapters: :class:`ThreadCoordinator` (threads of one process: tests), :class:`MPICoordinator` (mpi4py,
nonblocking point-to-point messages polled until the deadline: mpi4py's own collectives block forever)
and :class:`TorchCoordinator` (``torch.distributed``, e.g. gloo on CPU; asynchronous collectives waited
on with the timeout), :class:`JaxCoordinator` (``jax.distributed``'s key-value store, as orbax uses it).
"""

from __future__ import annotations

import pickle
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from saverkit import errors

__all__ = [
    "CollectiveTimeoutError",
    "Coordinator",
    "DistributedError",
    "JaxCoordinator",
    "MPICoordinator",
    "RankFailedError",
    "ThreadCoordinator",
    "ThreadGroup",
    "TorchCoordinator",
    "run_everywhere",
]

DEFAULT_TIMEOUT = 300.0


class DistributedError(errors.OpError):
    """A coordinated step failed. ``rank`` is the rank that failed (or, for a timeout, the rank that
    gave up waiting); ``ranks`` every failed rank when several did."""

    def __init__(self, node_def: Any, op: Any, message: str, error_code: int = errors.ABORTED,
                 rank: int | None = None, ranks: tuple[int, ...] = ()) -> None:
        super().__init__(node_def, op, message, error_code)
        self.rank = rank
        self.ranks = tuple(ranks) or ((rank,) if rank is not None else ())

    def __reduce__(self) -> tuple:
        return (type(self), (None, None, self._message, self._error_code, self.rank, self.ranks))


class RankFailedError(DistributedError, errors.AbortedError):
    """A step failed on some rank; raised on every rank. The message names the rank and its error."""

    def __init__(self, node_def: Any, op: Any, message: str, error_code: int = errors.ABORTED,
                 rank: int | None = None, ranks: tuple[int, ...] = (),
                 error_type: str = "", error_code_of_rank: int | None = None) -> None:
        DistributedError.__init__(self, node_def, op, message, error_code, rank, ranks)
        self.error_type = error_type  # the failed rank's exception class name, e.g. "ResourceExhaustedError"
        self.error_code_of_rank = error_code_of_rank

    def __reduce__(self) -> tuple:
        return (type(self), (None, None, self._message, self._error_code, self.rank, self.ranks,
                             self.error_type, self.error_code_of_rank))


class CollectiveTimeoutError(DistributedError, errors.DeadlineExceededError):
    """A collective did not complete in time on this rank (a peer died, hangs, or called another one)."""

    def __init__(self, node_def: Any, op: Any, message: str, error_code: int = errors.DEADLINE_EXCEEDED,
                 rank: int | None = None, ranks: tuple[int, ...] = ()) -> None:
        DistributedError.__init__(self, node_def, op, message, error_code, rank, ranks)


class Coordinator:
    """The protocol (and base class) of a coordinator. Subclasses implement ``_all_gather`` and may
    override ``_broadcast`` and ``_barrier``; the public methods add the timeout and the broken state."""

    rank: int = 0
    world_size: int = 1

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.timeout = float(timeout)
        self._broken: str | None = None

    # --- public protocol
    def all_gather(self, obj: Any, *, timeout: float | None = None) -> list:
        """Every rank's ``obj`` (picklable), indexed by rank, on every rank."""
        return self._call("all_gather", self._all_gather, timeout, obj)

    def broadcast(self, obj: Any = None, root: int = 0, *, timeout: float | None = None) -> Any:
        """``root``'s ``obj`` on every rank (the others' ``obj`` is ignored)."""
        if not 0 <= root < self.world_size:
            raise ValueError(f"root {root} is not a rank of a world of {self.world_size}")
        return self._call("broadcast", self._broadcast, timeout, obj, root)

    def barrier(self, *, timeout: float | None = None) -> None:
        """Returns once every rank has called ``barrier``."""
        self._call("barrier", self._barrier, timeout)

    def duplicate(self, *, timeout: float | None = None) -> Coordinator:
        """A coordinator over the same ranks whose collectives never meet this one's, so that one thread
        may run collectives on it while another thread uses this one (an asynchronous save's background
        thread, beside a training loop's own collectives). Collective: every rank calls it, in the same
        order. NotImplementedError for a coordinator that cannot (the base class)."""
        self._check_duplicate()
        return self._call("duplicate", self._duplicate, timeout)

    @property
    def broken(self) -> str | None:
        """Why this coordinator can no longer be used (after a timeout), or None."""
        return self._broken

    def _call(self, what: str, fn: Callable, timeout: float | None, *args: Any) -> Any:
        if self._broken is not None:
            raise DistributedError(
                None, None,
                f"rank {self.rank}: coordinator unusable after an earlier failure: {self._broken}",
                rank=self.rank)
        deadline = time.monotonic() + (self.timeout if timeout is None else float(timeout))
        try:
            return fn(*args, deadline=deadline)
        except CollectiveTimeoutError as e:
            self._broken = e.message
            raise
        except (DistributedError, NotImplementedError):  # NotImplementedError: no message was sent
            raise
        except Exception as e:  # the runtime's own error (a peer's connection closed, ...)
            self._broken = f"{type(e).__name__}: {e}"
            raise DistributedError(
                None, None,
                f"rank {self.rank}: {what} failed in the distributed runtime: {type(e).__name__}: {e}",
                errors.UNAVAILABLE, rank=self.rank) from e

    def _timeout_error(self, what: str, detail: str = "") -> CollectiveTimeoutError:
        return CollectiveTimeoutError(
            None, None,
            f"rank {self.rank} of {self.world_size}: {what} timed out{': ' + detail if detail else ''} "
            "(a peer died, hangs, or is in another collective)", rank=self.rank)

    # --- what adapters implement
    def _all_gather(self, obj: Any, *, deadline: float) -> list:
        raise NotImplementedError

    def _broadcast(self, obj: Any, root: int, *, deadline: float) -> Any:
        return self._all_gather(obj if self.rank == root else None, deadline=deadline)[root]

    def _barrier(self, *, deadline: float) -> None:
        self._all_gather(None, deadline=deadline)

    def _duplicate(self, *, deadline: float) -> Coordinator:
        raise NotImplementedError(
            f"{type(self).__name__} cannot duplicate itself, so it cannot run a save's collectives on a "
            "background thread (an asynchronous save coordinated over ranks): implement _duplicate")

    def _check_duplicate(self) -> None:
        """Raises (an OpError, leaving this coordinator usable) if a duplicate could not be used."""


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


# --- carrying errors between ranks
_OK, _ERR = "ok", "err"


def _error_payload(rank: int, exc: BaseException) -> tuple:
    code = exc.error_code if isinstance(exc, errors.OpError) else None
    message = exc.message if isinstance(exc, errors.OpError) else str(exc)
    if isinstance(exc, RankFailedError):  # already names its rank: pass it on as it is
        return (_ERR, exc.rank, exc.error_type, code, message)
    tb = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return (_ERR, rank, type(exc).__name__, code, message or tb)


def raise_if_failed(payloads: list, what: str) -> None:
    """Raises :class:`RankFailedError` if any payload (of :func:`run_everywhere`) is an error."""
    failed = [p for p in payloads if isinstance(p, tuple) and p and p[0] == _ERR]
    if not failed:
        return
    _, rank, etype, code, message = failed[0]
    ranks = tuple(sorted({p[1] for p in failed}))
    others = f" (ranks {', '.join(map(str, ranks))} failed)" if len(ranks) > 1 else ""
    raise RankFailedError(None, None, f"{what} failed on rank {rank}{others}: {etype}: {message}",
                          errors.ABORTED, rank, ranks, etype, code)


def run_everywhere(coord: Coordinator, fn: Callable[[], Any], what: str, *,
                   timeout: float | None = None) -> list:
    """Runs ``fn()`` on this rank and gathers the results of every rank. If ``fn`` raised on any rank,
    every rank raises :class:`RankFailedError` naming it (the local exception is chained on its rank)."""
    local_exc: BaseException | None = None
    try:
        payload = (_OK, fn())
        pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)  # a result that cannot travel fails here
    except Exception as e:  # carried to every rank
        local_exc = e
        payload = _error_payload(coord.rank, e)
    gathered = coord.all_gather(payload, timeout=timeout)
    try:
        raise_if_failed(gathered, what)
    except RankFailedError as err:
        if local_exc is not None:
            raise err from local_exc
        raise
    return [p[1] for p in gathered]


def broadcast_result(coord: Coordinator, fn: Callable[[], Any], what: str, root: int = 0, *,
                     timeout: float | None = None) -> Any:
    """Runs ``fn()`` on ``root`` only; its result (or its error, as RankFailedError) reaches every rank."""
    local_exc: BaseException | None = None
    payload = None
    if coord.rank == root:
        try:
            payload = (_OK, fn())
        except Exception as e:  # carried to every rank
            local_exc = e
            payload = _error_payload(coord.rank, e)
    got = coord.broadcast(payload, root, timeout=timeout)
    try:
        raise_if_failed([got], what)
    except RankFailedError as err:
        if local_exc is not None:
            raise err from local_exc
        raise
    return got[1]


# --- threads of one process (tests)
class ThreadGroup:
    """``world_size`` ranks played by threads of one process: ``group.coordinator(rank)`` per thread.

    Each collective checks that every rank called the same one (a mismatch raises on every rank).
    ``abandon(rank)`` makes the ranks that wait for ``rank`` time out at once, as if it had died."""

    def __init__(self, world_size: int, timeout: float = 30.0) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        self.world_size = world_size
        self.timeout = timeout
        self._cond = threading.Condition()
        self._slots: dict[int, dict] = {}
        self._dead: set[int] = set()
        self._children: dict[int, ThreadGroup] = {}  # the channels of duplicated coordinators

    def coordinator(self, rank: int, timeout: float | None = None) -> ThreadCoordinator:
        return ThreadCoordinator(self, rank, self.timeout if timeout is None else timeout)

    def abandon(self, rank: int) -> None:
        with self._cond:
            self._dead.add(rank)
            children = list(self._children.values())
            self._cond.notify_all()
        for child in children:  # a dead rank is dead on every channel
            child.abandon(rank)

    def child(self, index: int) -> ThreadGroup:
        """The channel of every rank's ``index``-th duplicated coordinator (made by the first rank)."""
        with self._cond:
            group = self._children.get(index)
            if group is None:
                group = ThreadGroup(self.world_size, self.timeout)
                group._dead = set(self._dead)
                self._children[index] = group
            return group

    def exchange(self, rank: int, seq: int, what: str, obj: Any, deadline: float) -> list:
        with self._cond:
            slot = self._slots.setdefault(seq, {"values": {}, "what": {}, "read": 0})
            slot["values"][rank] = obj
            slot["what"][rank] = what
            self._cond.notify_all()
            n = self.world_size
            while len(slot["values"]) < n:
                remaining = deadline - time.monotonic()
                missing = sorted(set(range(n)) - set(slot["values"]))
                if remaining <= 0 or any(r in self._dead for r in missing):
                    raise CollectiveTimeoutError(
                        None, None,
                        f"rank {rank} of {n}: {what} #{seq} timed out waiting for rank(s) "
                        f"{', '.join(map(str, missing))}", rank=rank)
                self._cond.wait(remaining)
            values = [slot["values"][r] for r in range(n)]
            kinds = set(slot["what"].values())
            slot["read"] += 1
            if slot["read"] == n:
                del self._slots[seq]
        if len(kinds) > 1:
            raise DistributedError(
                None, None, f"rank {rank}: ranks called different collectives at step {seq}: {sorted(kinds)}",
                rank=rank)
        return values


class ThreadCoordinator(Coordinator):
    """One rank of a :class:`ThreadGroup`."""

    def __init__(self, group: ThreadGroup, rank: int, timeout: float) -> None:
        super().__init__(timeout)
        if not 0 <= rank < group.world_size:
            raise ValueError(f"rank {rank} is not in a world of {group.world_size}")
        self.group = group
        self.rank = rank
        self.world_size = group.world_size
        self._seq = 0
        self._duplicates = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _all_gather(self, obj: Any, *, deadline: float) -> list:
        # Pickled, as a real runtime would: no rank shares mutable objects with another.
        got = self.group.exchange(self.rank, self._next(), "all_gather", pickle.dumps(obj), deadline)
        return [pickle.loads(b) for b in got]

    def _broadcast(self, obj: Any, root: int, *, deadline: float) -> Any:
        got = self.group.exchange(self.rank, self._next(), f"broadcast(root={root})",
                                   pickle.dumps(obj) if self.rank == root else None, deadline)
        return pickle.loads(got[root])

    def _barrier(self, *, deadline: float) -> None:
        self.group.exchange(self.rank, self._next(), "barrier", None, deadline)

    def _duplicate(self, *, deadline: float) -> ThreadCoordinator:
        self._duplicates += 1
        return ThreadCoordinator(self.group.child(self._duplicates), self.rank, self.timeout)


# --- MPI (mpi4py)
class _Poller:
    """Sleeps between polls: short at first (collectives of a few ms stay fast), then up to 1 ms (ranks
    waiting for a peer's long write leave the cores to the writers). Each collective of a save waits up
    to one sleep past its peers: at 5 ms, three of them cost 4 ranks saving 256 MiB each ~15% of their
    aggregate throughput (benchmarks/distributed_save.py: 0.63-0.96x the pwrite bound, at 1 ms 0.92-1.09x);
    at 1 ms a waiting rank wakes 1,000 times a second, a few microseconds each."""

    def __init__(self) -> None:
        self.delay = 20e-6

    def wait(self) -> None:
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 1e-3)


class MPICoordinator(Coordinator):
    """Coordinator over an mpi4py communicator (default ``MPI.COMM_WORLD``, duplicated so saverkit's
    messages never meet the application's).

    mpi4py's collectives (``allgather``, ``bcast``, ``barrier``) block forever when a peer dies, so each
    collective here is made of nonblocking sends (``isend``) and probed receives (``iprobe`` then
    ``recv``), polled until the deadline. Gather goes through rank 0 (N-1 messages in, N-1 out)."""

    def __init__(self, comm: Any = None, timeout: float = DEFAULT_TIMEOUT, *,
                 duplicate_comm: bool = True) -> None:
        super().__init__(timeout)
        from mpi4py import MPI  # noqa: PLC0415 - optional dependency (saverkit[mpi])

        self._MPI = MPI
        base = MPI.COMM_WORLD if comm is None else comm
        # duplicate_comm=False: ``comm`` is saverkit's alone already (a duplicate's Idup)
        comm = base.Dup() if duplicate_comm else base
        self.comm = comm
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        self._seq = 0
        ub = comm.Get_attr(self._MPI.TAG_UB) or 32767
        self._tag_span = max(1, min(int(ub), 1 << 20) - 1)

    def _check_duplicate(self) -> None:
        MPI = self._MPI  # noqa: N806 - mpi4py's name
        level = MPI.Query_thread()
        if level != MPI.THREAD_MULTIPLE:
            names = {MPI.THREAD_SINGLE: "MPI_THREAD_SINGLE", MPI.THREAD_FUNNELED: "MPI_THREAD_FUNNELED",
                     MPI.THREAD_SERIALIZED: "MPI_THREAD_SERIALIZED"}
            raise errors.FailedPreconditionError(
                None, None,
                f"rank {self.rank}: MPI runs at thread level {names.get(level, level)}; collectives on a "
                "background thread (an asynchronous save) need MPI_THREAD_MULTIPLE, which mpi4py requests "
                "unless mpi4py.rc.thread_level says otherwise")

    def _duplicate(self, *, deadline: float) -> MPICoordinator:
        # Idup, polled: a blocking Dup would wait forever for a dead peer.
        comm, request = self.comm.Idup()
        poll = _Poller()
        while not request.Test():
            if _remaining(deadline) <= 0:
                raise self._timeout_error("duplicate")
            poll.wait()
        return MPICoordinator(comm, self.timeout, duplicate_comm=False)

    def _tag(self) -> int:
        self._seq += 1
        return 1 + self._seq % self._tag_span

    def _send_all(self, requests: list, what: str, deadline: float) -> None:
        poll = _Poller()
        pending = list(requests)
        while pending:
            pending = [r for r in pending if not r.Test()]
            if not pending:
                return
            if _remaining(deadline) <= 0:
                for r in pending:
                    try:
                        r.Cancel()
                    except Exception:  # noqa: BLE001, S110 - best effort; the coordinator is broken anyway
                        pass
                raise self._timeout_error(what, "a peer did not receive")
            poll.wait()

    def _recv(self, source: int, tag: int, what: str, deadline: float) -> Any:
        poll = _Poller()
        while not self.comm.iprobe(source=source, tag=tag):
            if _remaining(deadline) <= 0:
                raise self._timeout_error(what, f"nothing from rank {source}")
            poll.wait()
        return self.comm.recv(source=source, tag=tag)

    def _all_gather(self, obj: Any, *, deadline: float) -> list:
        tag, n = self._tag(), self.world_size
        if n == 1:
            return [obj]
        if self.rank == 0:
            values = [obj] + [None] * (n - 1)
            for src in range(1, n):
                values[src] = self._recv(src, tag, "all_gather", deadline)
            data = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
            reqs = [self.comm.isend(data, dest=d, tag=tag) for d in range(1, n)]
            self._send_all(reqs, "all_gather", deadline)
            return values
        req = self.comm.isend(obj, dest=0, tag=tag)
        data = self._recv(0, tag, "all_gather", deadline)
        self._send_all([req], "all_gather", deadline)
        return pickle.loads(data)

    def _broadcast(self, obj: Any, root: int, *, deadline: float) -> Any:
        tag, n = self._tag(), self.world_size
        if n == 1:
            return obj
        if self.rank == root:
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
            reqs = [self.comm.isend(data, dest=d, tag=tag) for d in range(n) if d != root]
            self._send_all(reqs, "broadcast", deadline)
            return obj
        return pickle.loads(self._recv(root, tag, "broadcast", deadline))

    def _barrier(self, *, deadline: float) -> None:
        self._all_gather(None, deadline=deadline)


# --- torch.distributed (gloo on CPU)
class TorchCoordinator(Coordinator):
    """Coordinator over ``torch.distributed`` (an initialized default process group, or ``group``).

    Objects travel as pickled uint8 tensors through asynchronous collectives (sizes first, then the
    padded bytes), each waited on with the remaining time: ``work.wait(timeout)``. A peer that died
    makes gloo raise at once (connection closed), which becomes a DistributedError here."""

    def __init__(self, group: Any = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(timeout)
        import torch  # noqa: PLC0415 - optional dependency (saverkit[torch])
        import torch.distributed as dist  # noqa: PLC0415

        if not dist.is_initialized():
            raise ValueError("torch.distributed is not initialized: call init_process_group first")
        self._torch, self._dist, self.group = torch, dist, group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)

    def _wait(self, work: Any, what: str, deadline: float) -> None:
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise self._timeout_error(what)
        try:
            ok = work.wait(timeout=timedelta(seconds=remaining))
        except RuntimeError as e:
            if "timed out" in str(e).lower() or "timeout" in str(e).lower():
                raise self._timeout_error(what, str(e).splitlines()[0]) from e
            raise
        if ok is False:
            raise self._timeout_error(what)

    def _duplicate(self, *, deadline: float) -> TorchCoordinator:
        dist = self._dist
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise self._timeout_error("duplicate")
        # gloo: the objects travel as CPU tensors. Only the group's members take part in making it.
        ranks = None if self.group is None else dist.get_process_group_ranks(self.group)
        group = dist.new_group(ranks=ranks, backend="gloo", timeout=timedelta(seconds=remaining),
                               use_local_synchronization=ranks is not None)
        return TorchCoordinator(group, self.timeout)

    def _bytes_tensor(self, obj: Any) -> Any:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        return self._torch.frombuffer(bytearray(data), dtype=self._torch.uint8) if data else \
            self._torch.empty(0, dtype=self._torch.uint8)

    def _all_gather(self, obj: Any, *, deadline: float) -> list:
        torch, dist = self._torch, self._dist
        t = self._bytes_tensor(obj)
        size = torch.tensor([t.numel()], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        self._wait(dist.all_gather(sizes, size, group=self.group, async_op=True), "all_gather", deadline)
        lengths = [int(s.item()) for s in sizes]
        width = max(lengths)
        padded = torch.zeros(width, dtype=torch.uint8)
        padded[: t.numel()] = t
        outs = [torch.empty(width, dtype=torch.uint8) for _ in range(self.world_size)]
        self._wait(dist.all_gather(outs, padded, group=self.group, async_op=True), "all_gather", deadline)
        return [pickle.loads(o[:n].numpy().tobytes()) for o, n in zip(outs, lengths, strict=True)]

    def _broadcast(self, obj: Any, root: int, *, deadline: float) -> Any:
        torch, dist = self._torch, self._dist
        src = root if self.group is None else dist.get_global_rank(self.group, root)
        t = self._bytes_tensor(obj) if self.rank == root else None
        size = torch.tensor([t.numel() if t is not None else 0], dtype=torch.int64)
        self._wait(dist.broadcast(size, src, group=self.group, async_op=True), "broadcast", deadline)
        buf = t if t is not None else torch.empty(int(size.item()), dtype=torch.uint8)
        self._wait(dist.broadcast(buf, src, group=self.group, async_op=True), "broadcast", deadline)
        return obj if self.rank == root else pickle.loads(buf.numpy().tobytes())


# --- JAX (jax.distributed)
class JaxCoordinator(Coordinator):
    """Coordinator over ``jax.distributed`` (call ``jax.distributed.initialize(...)`` first): the
    distributed runtime client's key-value store, which is what orbax coordinates checkpoints with.

    A collective is keys under ``<namespace>/<step>/``: each rank sets its own (``key_value_set_bytes``)
    and reads the others' with ``blocking_key_value_get_bytes`` bounded by the remaining time. A rank
    deletes its keys of earlier steps once an all_gather (which every rank reached) completes."""

    def __init__(self, client: Any = None, timeout: float = DEFAULT_TIMEOUT,
                 namespace: str = "saverkit") -> None:
        super().__init__(timeout)
        import jax  # noqa: PLC0415 - optional dependency (saverkit[jax])
        from jax._src import distributed as jax_distributed  # noqa: PLC0415 - the client orbax uses too

        client = jax_distributed.global_state.client if client is None else client
        if client is None:
            raise ValueError("jax.distributed is not initialized: call jax.distributed.initialize first")
        self.client = client
        self.rank = jax.process_index()
        self.world_size = jax.process_count()
        self.namespace = namespace
        self._seq = 0
        self._mine: list[str] = []  # keys this rank set and has not deleted
        self._duplicates = 0

    def _duplicate(self, *, deadline: float) -> JaxCoordinator:
        # Every rank numbers its duplicates alike, so a namespace of its own needs no message.
        self._duplicates += 1
        return JaxCoordinator(self.client, self.timeout, namespace=f"{self.namespace}/dup{self._duplicates}")

    def _key(self, seq: int, rank: int) -> str:
        return f"{self.namespace}/{seq}/{rank}"

    def _set(self, seq: int, obj: Any) -> None:
        key = self._key(seq, self.rank)
        self.client.key_value_set_bytes(key, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        self._mine.append(key)

    def _get(self, seq: int, rank: int, what: str, deadline: float) -> Any:
        ms = int(_remaining(deadline) * 1000)
        if ms <= 0:
            raise self._timeout_error(what, f"nothing from rank {rank}")
        try:
            data = self.client.blocking_key_value_get_bytes(self._key(seq, rank), ms)
        except Exception as e:
            if "DEADLINE_EXCEEDED" in str(e) or "timed out" in str(e).lower():
                raise self._timeout_error(what, f"nothing from rank {rank}") from e
            raise
        return pickle.loads(data)

    def _all_gather(self, obj: Any, *, deadline: float) -> list:
        self._seq += 1
        seq = self._seq
        self._set(seq, obj)
        values = [obj if r == self.rank else self._get(seq, r, "all_gather", deadline)
                  for r in range(self.world_size)]
        # Every rank has set its key of this step, so each finished every earlier step: ours can go.
        done, self._mine = self._mine[:-1], self._mine[-1:]
        for key in done:
            try:
                self.client.key_value_delete(key)
            except Exception:  # noqa: BLE001, S110 - a leftover key costs memory only
                pass
        return values

    def _broadcast(self, obj: Any, root: int, *, deadline: float) -> Any:
        self._seq += 1
        if self.rank == root:
            self._set(self._seq, obj)
            return obj
        return self._get(self._seq, root, "broadcast", deadline)
