"""Asynchronous saves: the caller blocks only while the values are copied to host memory (issue 21).

``CheckpointOptions(enable_async=True)`` (TensorFlow's name; ``experimental_enable_async_checkpoint=True``
too) makes ``Checkpoint.save`` / ``Checkpoint.write`` / ``CheckpointManager.save`` / ``Saver.save`` return as
soon as a **snapshot** of the values is taken; a background thread owned by the Checkpoint (or Saver) then
writes the checkpoint through the ordinary save path (engine writer and commit protocol, ``.meta``, state
file, retention).

How, in order:

1. The save's previous asynchronous save is waited for, and its error raised (at most one in flight).
2. The save's graph runs as usual, with ``RunOptions(snapshot=...)``: each SaveV2 kernel lays its tensors
   out in the owner's **staging memory** and copies them there (``saverkit._core.stage_plan``: one call per
   SaveV2, the GIL released, non-temporal stores so that many tensors of a few KiB or MiB copy at the speed
   of one big memcpy, on up to 4 threads unless a write runs beside it); MergeV2Checkpoints records its
   merge. String tensors are copied as object arrays (their bytes objects are immutable).
   The SaveV2's write (the engine's writer, on the owner's write pool) starts before the copy when the
   tensors are big and the machine has 4 cores or more (``_PIPELINE_MIN_AVERAGE_BYTES``): it reads each
   byte range of the staging memory only once the copy has passed it (``BundleWriterOptions::staged``), so
   the write overlaps the copy. Otherwise it starts once the copy is done (see the constant for why).
   A URL prefix (``s3://``, ``gs://``, ...; saverkit.storage) is always uploaded after the copy, through
   the same commit protocol as a synchronous remote save, with the save's ``storage_options``. A save
   coordinated over ranks (``coordinator=``) snapshots by fetching this rank's values instead, and its
   background thread runs the ranks' collectives on a duplicate of the coordinator (see
   saverkit.train.distributed_save).
3. The call returns once every copy is done. The checkpoint holds the values of this moment: later
   updates of the variables are not in it (the writes read only staging memory).
4. The background thread waits for the writes, runs the merges in order, then finishes the save exactly as
   a synchronous one does: fsync (``durable``), ``.meta``, the ``checkpoint`` state file, retention, cleanup
   of temporaries. The state file and retention move only after the data is complete, so a crash at any
   moment leaves ``latest_checkpoint`` naming a complete checkpoint (the previous one while the new one is
   in flight). If the save fails before it returns, the writes it started end before its error is raised.

Errors of the background write are kept and raised, with a note naming the checkpoint, by the owner's
next save, ``sync()``, or at interpreter exit (printed with their traceback: never lost). A restore by the
same Checkpoint / Saver waits for its save in flight first.

Staging memory: one buffer per Checkpoint / Saver, kept and reused by its next saves (no page faults after
the first). It grows to the size of the last snapshot, up to ``CheckpointOptions.staging_limit_bytes``
(default: half of the machine's physical memory). Tensors that do not fit under the limit are written
synchronously, during the save call (the rest of the save still completes in the background).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, cast  # cast: numpy arrays are buffers, which mypy's Buffer protocol misses

import numpy as np

from saverkit import _core, errors, storage

__all__ = ["CheckpointOptions"]

_ALIGN = 64  # each staged tensor starts on a cache line
_EMPTY = np.empty(0, dtype=np.uint8)


def _usable_cores() -> int:
    """The cores this process may run on: its affinity mask (set by taskset, a cpuset, or an MPI launcher
    binding each rank), else the machine's count. Ranks sharing a machine each see only their own."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


# The write of a snapshot starts before its copy (and reads each tensor once copied) when its tensors
# average at least this many bytes, on machines with cores to spare. Smaller tensors cost the write more
# Python work per byte (names, views, the engine's per-tensor arguments, under the GIL) than they cost the
# copy: begun beside the copy, that work holds up the caller, who needs the GIL back when its copy is done
# (10,000 tensors of 26 KiB blocked 20% longer pipelined). On 2 cores the write also takes the copy's
# memory bandwidth and CPU: W1 (64 x 16 MiB) blocked 2.4x a memcpy pipelined against 0.8-1.3x after the
# copy, for no total gain measurable on the loaded benchmark VM, so 2-3 core machines do not pipeline.
_PIPELINE_MIN_AVERAGE_BYTES = 1 << 20 if _usable_cores() >= 4 else 1 << 62
# Threads of a snapshot copy that no write follows while it runs: the caller waits for it, idle, so its
# spare cores copy too. On the 2-core AMD VM of 2026-12-07 one thread was short of memory bandwidth (two
# copies at once: 22.3 GB/s against 18.3) and 2 threads copied W1 in 48.3 ms against 62.6 (10,000
# tensors of 26 KiB: 16.7 against 21.7); on the loaded Intel VM of 2026-12-05 a second thread had
# measured no faster. A pipelined copy stays on the caller's thread, in address order: the write beside
# it follows its progress.
_COPY_THREADS = max(1, min(_usable_cores(), 4))


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class CheckpointOptions:
    """Options for saving checkpoints (TensorFlow's ``tf.train.CheckpointOptions``).

    ``enable_async`` (or its former name ``experimental_enable_async_checkpoint``): the save returns once the
    values are copied into staging memory and writes the checkpoint in the background; see
    ``saverkit.train.async_save``. Wait with ``Checkpoint.sync()`` / ``CheckpointManager.sync()`` /
    ``Saver.sync()``.

    ``staging_limit_bytes`` (saverkit only): the most staging memory an owner keeps for its snapshots
    (default: half of physical memory). Tensors beyond it are written synchronously.

    ``experimental_io_device``, ``experimental_write_callbacks``, ``experimental_sharding_callback`` and
    ``experimental_skip_slot_variables`` are accepted for compatibility; only their defaults are supported.
    """

    __slots__ = (
        "experimental_io_device",
        "experimental_enable_async_checkpoint",
        "experimental_write_callbacks",
        "enable_async",
        "experimental_sharding_callback",
        "experimental_skip_slot_variables",
        "staging_limit_bytes",
    )

    def __init__(
        self,
        experimental_io_device: str | None = None,
        experimental_enable_async_checkpoint: bool = False,
        experimental_write_callbacks: list[Callable[[str], Any]] | None = None,
        enable_async: bool = False,
        experimental_sharding_callback: Any = None,
        experimental_skip_slot_variables: bool = False,
        *,
        staging_limit_bytes: int | None = None,
    ) -> None:
        if experimental_sharding_callback is not None or experimental_skip_slot_variables:
            raise NotImplementedError(
                "saverkit supports neither experimental_sharding_callback nor "
                "experimental_skip_slot_variables"
            )
        if staging_limit_bytes is not None and staging_limit_bytes < 0:
            raise ValueError(f"staging_limit_bytes must be >= 0, got {staging_limit_bytes}")
        self.experimental_io_device = experimental_io_device
        self.experimental_enable_async_checkpoint = experimental_enable_async_checkpoint
        self.experimental_write_callbacks = experimental_write_callbacks
        # Either spelling enables it, as in TF.
        self.enable_async = bool(enable_async or experimental_enable_async_checkpoint)
        self.experimental_sharding_callback = experimental_sharding_callback
        self.experimental_skip_slot_variables = experimental_skip_slot_variables
        self.staging_limit_bytes = staging_limit_bytes

    def __repr__(self) -> str:
        return (
            f"CheckpointOptions(enable_async={self.enable_async}, "
            f"staging_limit_bytes={self.staging_limit_bytes})"
        )


def is_async(options: Any) -> bool:
    """Whether ``options`` (a CheckpointOptions, TF's, or None) asks for an asynchronous save."""
    if options is None:
        return False
    return bool(
        getattr(options, "enable_async", False)
        or getattr(options, "experimental_enable_async_checkpoint", False)
    )


def _limit(options: Any) -> int:
    limit = getattr(options, "staging_limit_bytes", None)
    return _physical_memory() // 2 if limit is None else int(limit)


# --- staging memory ---------------------------------------------------------------------------------


class _Staging:
    """An owner's staging buffer, reused by its snapshots (only one save is in flight at a time)."""

    def __init__(self) -> None:
        self.arena: np.ndarray | None = None
        self.used = 0  # bytes of the arena taken by the current snapshot
        self.chunks: list[np.ndarray] = []  # this snapshot's overflow buffers (the arena was too small)
        self.staged = 0  # bytes staged by the current snapshot, arena and chunks
        self.lock = threading.Lock()  # the SaveV2 kernels of a sharded save stage concurrently

    def begin(self, limit: int) -> None:
        """Prepare for a new snapshot: no save is in flight, so the arena is free. Grow it to the last
        snapshot's size (within ``limit``) so that this one fits in one buffer."""
        want = min(self.staged, limit)
        self.chunks = []
        if self.arena is None or self.arena.nbytes < want:
            self.arena = None  # free the old one first: never two at once
            self.arena = np.empty(want, dtype=np.uint8) if want else None
        elif self.arena.nbytes > limit:
            self.arena = None
        self.used = 0
        self.staged = 0

    def plan(self, tensors: Any, limit: int) -> tuple[np.ndarray, list[int], Any, int] | None:
        """Reserve staging memory for the numeric arrays of ``tensors``: (buffer, offsets, plan, bytes
        reserved), where ``plan.copy()`` copies them (``_core.stage_plan``) and offsets[i] == -1 marks what
        it does not copy. None (nothing reserved) when they would exceed ``limit``."""
        with self.lock:  # the copies themselves run outside it: a sharded save's kernels copy in parallel
            arena = self.arena if self.arena is not None else _EMPTY
            end, offsets, plan = _core.stage_plan(cast(Any, arena), self.used, tensors, _ALIGN)
            if offsets is not None:
                nbytes = end - self.used
                self.staged += nbytes
                self.used = end
                return arena, offsets, plan, nbytes
            needed = -end
            if self.staged + needed > limit:
                return None
            chunk = np.empty(needed, dtype=np.uint8)
            end, offsets, plan = _core.stage_plan(cast(Any, chunk), 0, tensors, _ALIGN)
            assert offsets is not None  # sized for them
            self.chunks.append(chunk)
            self.staged += needed
            return chunk, offsets, plan, needed


class Snapshot:
    """What one asynchronous save's kernels recorded: its writes, started as soon as their tensors are
    laid out in staging memory (each byte written once the copy has passed it: the write overlaps the
    copy), and its merges, which the background thread runs in order once the writes are complete
    (``RunOptions.snapshot``)."""

    def __init__(self, staging: _Staging, limit: int, pool: Callable[[], ThreadPoolExecutor]) -> None:
        self._staging = staging
        self._limit = limit
        self._pool = pool
        self._ops: list[tuple] = []
        self._lock = threading.Lock()
        self.fetches_over_limit = False  # stage_fetches left some values as copies: over the limit

    def add_write(
        self, prefix: str, tensors: Any, dtypes: list, durable: bool, names: Callable[[], tuple[list, list]],
        storage_options: dict | None = None,
    ) -> bool:
        """Snapshot a SaveV2's tensors and start writing them; returns once they are copied. ``names()``
        gives (tensor names, shape_and_slices) when they are written (may raise: the error is the
        write's). False when they exceed the staging limit: nothing was staged, and the caller writes
        now. A URL ``prefix`` (``storage_options`` for its store) is uploaded once the copy is complete:
        the upload reads whole buffers, not the engine's byte ranges that follow the copy."""
        staged = self._staging.plan(tensors, self._limit)
        if staged is None:
            return False
        buffer, offsets, plan, nbytes = staged
        future: Future | None = None
        try:
            # What is not staged (strings, non-contiguous arrays, other objects) is copied here.
            unstaged = offsets.count(-1)
            copies = {}
            if unstaged:
                copies = {i: np.array(tensors[i], copy=True) for i, off in enumerate(offsets) if off < 0}
            args = (prefix, names, tuple(tensors), dtypes, durable, buffer, offsets, copies, plan,
                    storage_options)
            remote = storage.is_url(prefix)
            if not remote and nbytes >= _PIPELINE_MIN_AVERAGE_BYTES * (len(offsets) - unstaged):
                future = self._pool().submit(_write_staged, *args)
            if future is None:
                plan.copy(threads=_COPY_THREADS)
                future = self._pool().submit(_write_staged, *args)
            else:
                plan.copy()  # in order: the write reads each tensor once this has copied it
        except BaseException:
            plan.abort()  # a write waiting for the copy fails now
            if future is not None:
                wait([future])
            raise
        with self._lock:
            self._ops.append(("write", future, prefix))
        return True

    def stage_fetches(self, values: list) -> list:
        """``values`` fetched by a run with this snapshot, the views of session-owned arrays (variables)
        copied into staging memory instead of fresh arrays (``stage_plan``: the GIL released, memory reused
        by the next save, no page faults after the first). What does not fit under the limit, or is not
        a plain numeric array, is left for Session.run to copy as usual."""
        picked = [i for i, v in enumerate(values)
                  if isinstance(v, np.ndarray) and v.ndim and not v.flags.writeable and v.dtype.kind != "O"]
        if not picked:
            return values
        tensors = [values[i] for i in picked]
        staged = self._staging.plan(tensors, self._limit)
        if staged is None:
            self.fetches_over_limit = True
            return values
        buffer, offsets, plan, _ = staged
        try:
            plan.copy(threads=_COPY_THREADS)
        except BaseException:
            plan.abort()
            raise
        out = list(values)
        for i, t, off in zip(picked, tensors, offsets, strict=True):
            if off >= 0:
                out[i] = np.ndarray(t.shape, t.dtype, buffer=buffer, offset=off)
        return out

    def add_fetched_write(
        self, prefix: str, tensors: list, dtypes: list, names: Callable[[], tuple[list, list]],
        storage_options: dict | None = None,
    ) -> None:
        """Record and start the write of ``tensors`` that a run with this snapshot fetched (already in
        staging memory: see stage_fetches; or arrays of their own), without copying them again."""
        n = len(tensors)
        future = self._pool().submit(_write_staged, prefix, names, tuple(tensors), dtypes, False, _EMPTY,
                                     [-1] * n, dict(enumerate(tensors)), None, storage_options)
        with self._lock:
            self._ops.append(("write", future, prefix))

    def add_merge(self, prefixes: list[str], destination: str, **kwargs: Any) -> None:
        with self._lock:
            self._ops.append(("merge", prefixes, destination, kwargs))

    def abandon(self) -> None:
        """The save failed before its background part started: wait for the writes it started (their
        errors do not matter: the save's own error is raised), and forget the parts of a sharded save to
        a URL they staged in memory (no merge will publish them)."""
        ops, self._ops = self._ops, []
        wait([op[1] for op in ops if op[0] == "write"])
        parts = [op[2] for op in ops if op[0] == "write" and storage.is_url(op[2])]
        if parts:
            from saverkit import remote_bundle

            remote_bundle.take_parts(parts)

    def replay(self) -> None:
        """Complete what was recorded: wait for the writes (the first error once every write has ended),
        then run each merge in order. Errors are OpErrors, as from the synchronous kernels."""
        ops, self._ops = self._ops, []
        i = 0
        while i < len(ops):
            j = i
            while j < len(ops) and ops[j][0] == "write":
                j += 1
            if j > i:
                futures = [op[1] for op in ops[i:j]]
                wait(futures)
                for f in futures:
                    f.result()
                i = j
                continue
            _, prefixes, destination, kwargs = ops[i]
            _as_op_errors(lambda: _bundle().merge_bundles(prefixes, destination, **kwargs))  # noqa: B023
            i += 1


def _bundle() -> Any:
    from saverkit import bundle

    return bundle


def _as_op_errors(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except errors.OpError:
        raise
    except Exception as e:
        from saverkit.framework.executor import as_op_error

        raise as_op_error(e, None) from e


def _write_staged(
    prefix: str, names: Callable[[], tuple[list, list]], tensors: tuple, dtypes: list, durable: bool,
    buffer: np.ndarray, offsets: list[int], copies: dict[int, np.ndarray], plan: Any,
    storage_options: dict | None = None,
) -> None:
    """Write a snapshot's tensors from staging memory, while ``plan`` may still be copying them (the engine
    waits for each byte range; a URL is written only after the copy). Runs on the writer's pool."""
    ndarray = np.ndarray
    arrays = [
        ndarray(t.shape, t.dtype, buffer=buffer, offset=off) if off >= 0 else copies[i]
        for i, (t, off) in enumerate(zip(tensors, offsets, strict=True))
    ]
    del tensors

    def write() -> None:
        keys, slices = names()
        if storage.is_url(prefix):
            _bundle().write_bundle(prefix, keys, arrays, slices, dtypes, storage_options=storage_options)
        else:
            _bundle().write_bundle(prefix, keys, arrays, slices, dtypes, durable=durable, staged=plan)

    _as_op_errors(write)


# --- the background writer of one owner (a Checkpoint or a Saver) -------------------------------------

_writers: weakref.WeakSet[AsyncWriter] = weakref.WeakSet()
_failed: set[AsyncWriter] = set()  # writers holding an error not yet raised: kept alive until reported
_registry_lock = threading.Lock()
_ATTR = "_saverkit_async_writer"


class AsyncWriter:
    """Runs one owner's background saves, one at a time, on a thread of its own, and keeps the error of a
    failed one. The thread stays for the next save (handing it a job costs no thread start while the
    caller blocks) and ends after ``_IDLE_SECONDS`` without one."""

    _IDLE_SECONDS = 30.0

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._job: tuple[Callable[[], Any], str] | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()  # no save in flight
        self._done.set()
        self._error: BaseException | None = None
        self.staging = _Staging()
        self._pool: ThreadPoolExecutor | None = None  # the snapshot's writes (see Snapshot.add_write)
        with _registry_lock:
            _writers.add(self)

    @property
    def in_flight(self) -> bool:
        return not self._done.is_set()

    @property
    def pending_error(self) -> BaseException | None:
        return self._error

    def on_own_thread(self) -> bool:
        """Whether the caller is this writer's background thread (a save's completion)."""
        return self._thread is threading.current_thread()

    def wait(self) -> None:
        """Wait for the save in flight, if any (a no-op on the writer's own thread)."""
        if not self.on_own_thread():
            self._done.wait()

    def sync(self) -> None:
        """Wait for the save in flight, then raise the error of a failed background save (once)."""
        self.wait()
        error = self._error
        if error is not None:
            self._error = None
            with _registry_lock:
                _failed.discard(self)
            raise error

    def snapshot(self, options: Any) -> Snapshot:
        """A new snapshot; call with no save in flight (after ``sync``)."""
        limit = _limit(options)
        self.staging.begin(limit)
        return Snapshot(self.staging, limit, self._writes)

    def _writes(self) -> ThreadPoolExecutor:
        """The pool that writes snapshots while they are taken (made on first use, kept: no thread start
        while the caller blocks). Four threads: the shards of a sharded save write in parallel."""
        with self._cv:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="saverkit-async-write")
            return self._pool

    def start(self, job: Callable[[], Any], what: str) -> None:
        """Run ``job`` on the background thread; its error is kept for ``sync``. No save may be in flight."""
        with self._cv:
            self._done.clear()
            self._job = (job, what)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="saverkit-async-save", daemon=True)
                self._thread.start()
            else:
                self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                if self._job is None:
                    self._cv.wait(timeout=self._IDLE_SECONDS)
                if self._job is None:
                    self._thread = None
                    return
                (job, what), self._job = self._job, None
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - kept, raised by the next save / sync / at exit
                if hasattr(e, "add_note"):
                    e.add_note(f"(raised by the background write of the asynchronous save of {what})")
                self._error = e
                with _registry_lock:
                    _failed.add(self)
            finally:
                del job
                self._done.set()


_COORD_ATTR = "_saverkit_async_coordinator"
_exit_hook_again = False


def background_coordinator(owner: Any, coord: Any) -> Any:
    """``owner``'s duplicate of ``coord`` (made on its first asynchronous save: a collective), on which its
    background thread runs a coordinated save's collectives."""
    global _exit_hook_again
    made = owner.__dict__.get(_COORD_ATTR)
    if made is None or made[0] is not coord:
        made = (coord, coord.duplicate())
        object.__setattr__(owner, _COORD_ATTR, made)
        if not _exit_hook_again:
            # Exit hooks run last-registered first, and the runtime's own (JAX's shutdown) may have been
            # registered after this module's. A save in flight at exit needs the runtime: wait for it
            # before that hook runs.
            atexit.register(_at_exit)
            _exit_hook_again = True
    return made[1]


def writer_for(owner: Any) -> AsyncWriter:
    """``owner``'s writer (made on first use), kept in its ``__dict__``."""
    writer: AsyncWriter | None = owner.__dict__.get(_ATTR)
    if writer is None:
        writer = AsyncWriter()
        object.__setattr__(owner, _ATTR, writer)
    return writer


def wait_for(owner: Any) -> None:
    """Wait for ``owner``'s asynchronous save in flight (restores call this; errors stay pending)."""
    writer = owner.__dict__.get(_ATTR)
    if writer is not None:
        writer.wait()


def sync(owner: Any) -> None:
    """Wait for ``owner``'s asynchronous save in flight and raise its error, if it failed."""
    writer = owner.__dict__.get(_ATTR)
    if writer is not None:
        writer.sync()


def before_sync_save(owner: Any) -> None:
    """A synchronous save waits for the asynchronous one in flight (and raises its error) — unless it is
    that save's own completion, running on the writer's thread."""
    writer = owner.__dict__.get(_ATTR)
    if writer is not None and not writer.on_own_thread():
        writer.sync()


def _at_exit() -> None:
    """Finish every save in flight; print the errors nobody collected."""
    with _registry_lock:
        writers = list(_writers)
    for w in writers:
        w.wait()
    with _registry_lock:
        failed = list(_failed)
        _failed.clear()
    for w in failed:
        error = w.pending_error
        if error is None:
            continue
        sys.stderr.write(
            "saverkit: an asynchronous checkpoint save failed and no later save or sync() reported it:\n"
        )
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        sys.stderr.flush()


atexit.register(_at_exit)


# --- Saver ---------------------------------------------------------------------------------------------


class _Snapshotted(Exception):  # noqa: N818 - control flow, never escapes this module
    """Raised by _SnapshotSession after the save op ran: ends the foreground part of Saver.save."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class _SessionProxy:
    def __init__(self, sess: Any, save_tensor_name: str, snapshot: Snapshot) -> None:
        self._sess = sess
        self._save_tensor_name = save_tensor_name
        self._snapshot = snapshot

    @property
    def graph(self) -> Any:
        return self._sess.graph

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sess, name)


class _SnapshotSession(_SessionProxy):
    """The session as Saver.save sees it in the foreground: its save op runs with the snapshot and then
    the save stops (raising _Snapshotted)."""

    # Read by Saver.save: this run only copies; the writes (and the parts of a sharded save to a URL,
    # which its MergeV2Checkpoints publishes) belong to the background pass.
    takes_snapshot = True

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        if not (isinstance(fetches, str) and fetches == self._save_tensor_name):
            return self._sess.run(fetches, feed_dict, options=options, run_metadata=run_metadata)
        from saverkit.framework.run_options import RunOptions, as_run_options

        given = as_run_options(options)
        run_options = RunOptions(
            durable=given.durable, storage_options=given.storage_options, snapshot=self._snapshot
        )
        raise _Snapshotted(self._sess.run(fetches, feed_dict, options=run_options))


class _ReplaySession(_SessionProxy):
    """The session as Saver.save sees it in the background: its save op writes what the snapshot holds."""

    def __init__(self, sess: Any, save_tensor_name: str, snapshot: Snapshot, result: Any) -> None:
        super().__init__(sess, save_tensor_name, snapshot)
        self._result = result

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any:
        if not (isinstance(fetches, str) and fetches == self._save_tensor_name):
            return self._sess.run(fetches, feed_dict, options=options, run_metadata=run_metadata)
        self._snapshot.replay()
        return self._result


def _step(sess: Any, global_step: Any) -> Any:
    """``global_step`` as an int, evaluated now (the background save must not read a moving variable)."""
    if global_step is None or isinstance(global_step, bool):
        return global_step  # Saver.save judges it
    if isinstance(global_step, int):
        return global_step
    if hasattr(global_step, "__index__") and not hasattr(global_step, "op"):
        return int(global_step)
    return int(sess.run(global_step))


def saver_save(saver: Any, sess: Any, save_path: Any, global_step: Any, options: Any, **kwargs: Any) -> Any:
    """``Saver.save(..., options=CheckpointOptions(enable_async=True))``: Saver.save runs twice, on two
    session proxies — in the foreground until its save op has run (taking the snapshot), in the background
    from the start with the save op replaying the snapshot. Everything else is Saver.save's own code."""
    writer = writer_for(saver)
    writer.sync()
    step = _step(sess, global_step)
    if saver.saver_def is None or not hasattr(sess, "run"):
        return saver.save(sess, save_path, step, **kwargs)  # let Saver.save raise its error
    name = saver.saver_def.save_tensor_name
    snapshot = writer.snapshot(options)
    try:
        result = saver.save(_SnapshotSession(sess, name, snapshot), save_path, step, **kwargs)
    except _Snapshotted as done:
        result = done.result
    except BaseException:
        snapshot.abandon()  # the writes it started end before the error is raised
        raise
    else:
        return result  # an empty Saver (allow_empty): nothing to snapshot, saved synchronously
    replay = _ReplaySession(sess, name, snapshot, result)
    path = os.fsdecode(os.fspath(save_path))
    writer.start(lambda: saver.save(replay, path, step, **kwargs), path if step is None else f"{path}-{step}")
    from saverkit.train.saver import _as_str

    return _as_str(result)


# --- Checkpoint / CheckpointManager -----------------------------------------------------------------------


def checkpoint_write(
    owner: Any,
    stage: Callable[[Snapshot], Callable[[], Any]],
    options: Any,
    what: str,
    after: Callable[[], Any] | None = None,
) -> None:
    """An asynchronous Checkpoint.write / save / CheckpointManager.save: ``stage(snapshot)`` runs the save's
    graph with the snapshot and returns what completes the write; the background thread calls it, then
    ``after`` (the state file, retention)."""
    writer = writer_for(owner)
    writer.sync()
    snapshot = writer.snapshot(options)
    try:
        complete = stage(snapshot)
    except BaseException:
        snapshot.abandon()  # the writes it started end before the error is raised
        raise

    def job() -> None:
        complete()
        if after is not None:
            after()

    writer.start(job, what)
