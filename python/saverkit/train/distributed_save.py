"""``Saver(..., coordinator=coord)``: every rank saves its own variables, together ONE checkpoint.

A save is three steps, each ending in one collective of the job's coordinator (saverkit.distributed):

1. **prepare** (all_gather): each rank evaluates its variables and sends its plan entries (key, dtype,
   full shape, slice) — never the values; rank 0 also creates the part directory
   ``<prefix>_temp_<hex32>/`` (with saverkit's marker) and sends its name. Every rank then computes the
   same plan from the gathered entries: conflicting duplicates (a key with two dtypes or shapes,
   overlapping but unequal slices, a whole tensor on one rank and slices on another) raise on every
   rank; a variable (or slice) held by several ranks is written once, by the lowest rank holding it.
2. **write** (all_gather of the outcome): each rank with something to write writes its part
   ``part-0000k-of-0000n`` (a single-shard bundle), in parallel.
3. **commit** (broadcast from rank 0): rank 0 merges the parts (the engine's MergeV2Checkpoints and
   commit protocol: data files renamed next to the prefix, index last), then writes the ``.meta``, then
   the ``checkpoint`` state file, then applies retention — exactly what a one-process ``Saver.save``
   does after its bundle is written.

An error on any rank is carried in the gathered payloads and raised on every rank as
``saverkit.distributed.RankFailedError`` naming that rank; a rank that dies or hangs makes the others'
collective time out (``CollectiveTimeoutError``). Until step 3 commits, nothing the state file names
changes, and the part directory of a failed save is removed (by rank 0, or later by any saverkit save
in that directory once its creator is gone).

A URL prefix (``s3://``, ``memory://``...: saverkit.storage) has no part directory and no rename: each
writing rank writes its data object ``<prefix>.data-0000k-of-0000n`` in place, rank 0 merges the ranks'
indexes in memory and writes the index last, then the ``.meta`` and the state file (run_save_remote).

An asynchronous save (``options=CheckpointOptions(enable_async=True)``) takes each rank's values in the
call: its variables are fetched into the owner's staging memory (saverkit.train.async_save: reused by
its next saves; past ``staging_limit_bytes`` they are fetched as ordinary copies, held until the write
is done), and the checkpoint name and plan entries are fixed (a ``global_step`` is evaluated then). It
returns without a collective (but for the first, which makes the duplicate below). The owner's
background thread then runs the three steps above on a **duplicate** of the coordinator
(``Coordinator.duplicate()``, made once per Saver or Checkpoint on its first asynchronous save): a
channel of its own, so they never meet collectives that the training loop runs on the coordinator
meanwhile. An error of any rank, or a dead peer, is raised on every rank by its next save or ``sync()``.
Every rank must save asynchronously, or none: a rank saving synchronously meanwhile meets nobody in its
collectives and times out, as do the others.

A restore reads the index once: rank 0 reads its bytes and broadcasts them, and every rank opens the
checkpoint from them (no other rank opens the index), checks its own variables' keys, dtypes and shapes
(a missing checkpoint or key is one error raised on every rank) and restores only them, its RestoreV2
reading through that reader (``RunOptions.readers``). Slices make the world size free: 4 ranks that each
saved one slice of a partitioned variable can be restored by 3 ranks whose slices straddle the saved
ones, by 2, or by one plain ``Saver``. A stored slice that several ranks need parts of is not read whole
by each of them (its CRC covers all of it): each reads only its part, and the ranks split its checksum
(see _VerificationPlan). An object-based checkpoint restored by a name-based Saver maps each variable to
the key its name had when saved, as TensorFlow falls back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from saverkit import bundle, errors, storage, tempfiles
from saverkit import distributed as dist
from saverkit import dtypes as dtypes_lib
from saverkit.train import checkpoint_management

__all__ = ["plan_save", "restore", "save"]

_logger = logging.getLogger(__name__)


# --- plan
def _parse_slice(spec: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """``"10 4 0,5:-"`` -> ((10, 4), ((0, 5), (0, 4))): the full shape and each dimension's extent."""
    parts = spec.split()
    try:
        full = tuple(int(x) for x in parts[:-1])
        dims = parts[-1].split(":")
        if len(dims) != len(full):
            raise ValueError
        extents = []
        for size, d in zip(full, dims, strict=True):
            if d == "-":
                extents.append((0, size))
            else:
                start, length = (int(x) for x in d.split(","))
                extents.append((start, length))
    except ValueError:
        raise errors.InvalidArgumentError(None, None, f"Malformed shape_and_slice {spec!r}") from None
    return full, tuple(extents)


def _overlap(a: tuple, b: tuple) -> bool:
    return all(s1 < s2 + l2 and s2 < s1 + l1 for (s1, l1), (s2, l2) in zip(a, b, strict=True))


def _describe(enum: int, shape: tuple) -> str:
    try:
        name = dtypes_lib.as_dtype(enum).name
    except Exception:  # noqa: BLE001 - only for a message
        name = str(enum)
    return f"{name}{list(shape)}"


def plan_save(entries_per_rank: list[list[tuple]]) -> list[list[int]]:
    """Which of its entries each rank writes. ``entries_per_rank[r]`` lists rank r's
    ``(key, dtype_enum, full_shape, slice_spec)``. A key (or an equal slice of it) held by several ranks
    is written by the lowest; conflicting duplicates raise InvalidArgumentError naming both ranks."""
    by_key: dict[str, list[tuple]] = {}
    for rank, entries in enumerate(entries_per_rank):
        for i, (key, enum, shape, spec) in enumerate(entries):
            holders = by_key.get(key)
            if holders is None:
                by_key[key] = [(rank, i, enum, tuple(shape), spec)]
            else:
                holders.append((rank, i, enum, tuple(shape), spec))
    writes: list[list[int]] = [[] for _ in entries_per_rank]
    for key, holders in by_key.items():
        rank0, i0, enum0, shape0, spec0 = holders[0]
        if len(holders) == 1:
            writes[rank0].append(i0)
            continue
        for rank, _, enum, shape, spec in holders[1:]:
            if enum != enum0 or shape != shape0:
                raise errors.InvalidArgumentError(
                    None, None,
                    f"Conflicting duplicates of {key!r}: rank {rank0} saves {_describe(enum0, shape0)}, "
                    f"rank {rank} saves {_describe(enum, shape)}")
            if bool(spec) != bool(spec0):
                raise errors.InvalidArgumentError(
                    None, None,
                    f"Conflicting duplicates of {key!r}: rank {rank0} saves "
                    f"{'the slice ' + repr(spec0) if spec0 else 'the whole tensor'}, rank {rank} "
                    f"{'the slice ' + repr(spec) if spec else 'the whole tensor'}")
        if not spec0:  # replicated whole tensor: written once
            writes[rank0].append(i0)
            continue
        first_of: dict[str, tuple[int, int, tuple]] = {}
        for rank, i, _, _, spec in holders:
            if spec not in first_of:
                first_of[spec] = (rank, i, _parse_slice(spec)[1])
        distinct = list(first_of.items())
        if len(distinct) <= 64:
            for a in range(len(distinct)):
                for b in range(a + 1, len(distinct)):
                    (sa, (ra, _, ea)), (sb, (rb, _, eb)) = distinct[a], distinct[b]
                    if _overlap(ea, eb):
                        raise errors.InvalidArgumentError(
                            None, None,
                            f"Conflicting slices of {key!r}: rank {ra} saves {sa!r} and rank {rb} saves "
                            f"{sb!r}, which overlap but differ")
        else:  # many slices: sort by the first dimension and compare neighbours that may overlap
            ordered = sorted(distinct, key=lambda d: d[1][2][0] if d[1][2] else (0, 0))
            for a in range(len(ordered)):
                sa, (ra, _, ea) = ordered[a]
                for b in range(a + 1, len(ordered)):
                    sb, (rb, _, eb) = ordered[b]
                    if ea and eb[0][0] >= ea[0][0] + ea[0][1]:
                        break
                    if _overlap(ea, eb):
                        raise errors.InvalidArgumentError(
                            None, None,
                            f"Conflicting slices of {key!r}: rank {ra} saves {sa!r} and rank {rb} saves "
                            f"{sb!r}, which overlap but differ")
        for _spec, (rank, i, _) in distinct:
            writes[rank].append(i)
    return writes


# --- this rank's tensors
def _local_specs(saver: Any) -> tuple[list, list, list, list]:
    """Keys, tensors, slice specs and dtypes of this rank's saver (none for an empty one)."""
    return saver.save_specs() or ([], [], [], [])


def _key(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _entry(name: Any, dtype: Any, value: np.ndarray, spec: str) -> tuple:
    key = _key(name)
    shape = _parse_slice(spec)[0] if spec else tuple(np.shape(value))
    return (key, dtypes_lib.as_dtype(dtype).base_dtype.as_datatype_enum, shape, spec)


def _checkpoint_file(saver: Any, sess: Any, save_path: str, global_step: Any, latest_filename: str) -> str:
    if global_step is not None:
        return saver.checkpoint_prefix(sess, save_path, global_step)
    if os.path.basename(save_path) == latest_filename:
        raise ValueError(
            f"'latest_filename' collides with 'save_path': '{latest_filename}' and '{save_path}'")
    return save_path


def _part_prefix(part_dir: str, shard: int, num_shards: int) -> str:
    return os.path.join(part_dir, f"part-{shard:05d}-of-{num_shards:05d}")


# --- save: the engine
class _Job:
    """What one kind of save (a Saver, a Checkpoint) tells the engine; run on every rank."""

    rank0_extra = False  # rank 0 writes extra tensors made from every rank's extra() (an object graph)
    storage_options: dict | None = None  # a URL prefix's store (saverkit.storage)
    fetch_options: Any = None  # the RunOptions of the runs that fetch values (an async save's snapshot)

    def checkpoint_file(self) -> str:
        raise NotImplementedError

    def entries(self) -> list[tuple]:
        """This rank's plan entries: (key, dtype enum, full shape, slice spec) per tensor."""
        raise NotImplementedError

    def write(self, part: str, mine: list[int], extra: tuple, durable: bool) -> None:
        """Writes entries ``mine`` (indices into entries()) and the ``extra`` columns into ``part``."""
        bundle.write_bundle(part, *self.tensors(mine, extra), durable=durable)

    def tensors(self, mine: list[int], extra: tuple) -> tuple[list, list, list, list]:
        """Names, values, slice specs and dtypes of entries ``mine`` and the ``extra`` columns."""
        raise NotImplementedError

    def extra(self) -> Any:
        return None

    def rank0_tensors(self, extras: list) -> tuple[list, list, list, list]:
        return [], [], [], []

    def check_parent(self, checkpoint_file: str) -> None:
        pass

    def commit(self, checkpoint_file: str) -> None:
        """Rank 0, after the merge: what makes the checkpoint the latest (a durable save's fsync first,
        the state file last)."""

    def release(self) -> None:
        """Drops what the save fetched."""

    def committed(self, checkpoint_file: str) -> None:
        """The other ranks, after rank 0 committed: their own bookkeeping."""


def run_save(coord: dist.Coordinator, job: _Job, durable: bool) -> str | None:
    """Every rank writes its tensors into a part; rank 0 merges and commits. See the module docstring."""
    if storage.is_url(job.checkpoint_file()):
        return run_save_remote(coord, job)
    local: dict[str, Any] = {}

    def prepare() -> tuple:
        checkpoint_file = job.checkpoint_file()
        entries = job.entries()
        part_dir = None
        if coord.rank == 0:
            job.check_parent(checkpoint_file)
            part_dir = f"{checkpoint_file}_temp_{uuid.uuid4().hex}"
            tempfiles.make_part_dir(_part_prefix(part_dir, 0, 1))  # with saverkit's marker, owned by rank 0
            local["part_dir"] = part_dir
        return checkpoint_file, entries, part_dir, job.extra()

    try:
        return _run_save(coord, job, prepare, local, durable)
    except BaseException:
        if coord.rank == 0 and local.get("part_dir") and os.path.isdir(local["part_dir"]):
            tempfiles.remove_part_dir(local["part_dir"])
        raise
    finally:
        job.release()  # values fetched for the save: never kept past it


def _run_save(coord: dist.Coordinator, job: _Job, prepare: Callable[[], tuple], local: dict,
              durable: bool) -> str | None:
    rank, n = coord.rank, coord.world_size
    gathered = dist.run_everywhere(coord, prepare, "save (prepare)")
    files = {g[0] for g in gathered}
    if len(files) != 1:
        raise errors.InvalidArgumentError(
            None, None, "Ranks save to different checkpoints: "
            + ", ".join(f"rank {r}: {g[0]!r}" for r, g in enumerate(gathered)))
    checkpoint_file = gathered[0][0]
    part_dir = gathered[0][2]
    writes = plan_save([g[1] for g in gathered])  # the same on every rank: raises on every rank alike
    writers = [r for r in range(n) if writes[r] or (r == 0 and job.rank0_extra)]
    if not writers:  # every rank's saver is empty (allow_empty=True)
        if rank == 0:
            tempfiles.remove_part_dir(part_dir)
        return None
    num_shards = len(writers)
    parts = [_part_prefix(part_dir, k, num_shards) for k in range(num_shards)]

    def write() -> None:
        extra = job.rank0_tensors([g[3] for g in gathered]) if rank == 0 and job.rank0_extra else ([],) * 4
        if writes[rank] or extra[0]:
            job.write(parts[writers.index(rank)], writes[rank], extra, durable)

    dist.run_everywhere(coord, write, "save (write)")
    job.release()

    def commit() -> str:
        from saverkit import _core  # noqa: PLC0415

        _core.merge_bundles(parts, checkpoint_file, True, False, durable)
        tempfiles.remove_part_dir(part_dir)
        job.commit(checkpoint_file)
        tempfiles.remove_stale(os.path.dirname(checkpoint_file) or ".")
        return checkpoint_file

    path = dist.broadcast_result(coord, commit, "save (commit)")
    if rank != 0:
        job.committed(path)
    return path


class _Frozen(_Job):
    """An asynchronous save's job: ``job``'s checkpoint name, entries and values, all taken when it is
    made (the values are fetched copies); the background steps read only these."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self.rank0_extra = job.rank0_extra
        self.storage_options = job.storage_options
        try:
            self._file = job.checkpoint_file()
            self._entries = job.entries()
            self._extra = job.extra()
            self._columns: tuple | None = job.tensors(list(range(len(self._entries))), ([],) * 4)
        finally:
            job.release()

    def checkpoint_file(self) -> str:
        return self._file

    def entries(self) -> list[tuple]:
        return self._entries

    def extra(self) -> Any:
        return self._extra

    def tensors(self, mine: list[int], extra: tuple) -> tuple[list, list, list, list]:
        assert self._columns is not None, "read after release()"  # run_save releases only at its end
        return tuple([column[i] for i in mine] + list(more)  # type: ignore[return-value]
                     for column, more in zip(self._columns, extra, strict=True))

    def rank0_tensors(self, extras: list) -> tuple[list, list, list, list]:
        return self._job.rank0_tensors(extras)

    def check_parent(self, checkpoint_file: str) -> None:
        self._job.check_parent(checkpoint_file)

    def commit(self, checkpoint_file: str) -> None:
        self._job.commit(checkpoint_file)

    def committed(self, checkpoint_file: str) -> None:
        self._job.committed(checkpoint_file)

    def release(self) -> None:
        self._columns = None


def run_save_async(coord: dist.Coordinator, job: _Job, durable: bool, owner: Any, options: Any) -> str:
    """Takes this rank's snapshot of ``job`` (its values fetched into ``owner``'s staging memory, within
    ``options.staging_limit_bytes``) and hands the coordinated save to ``owner``'s background thread, on
    ``owner``'s duplicate of ``coord``; returns the checkpoint's prefix."""
    from saverkit.framework.run_options import RunOptions  # noqa: PLC0415
    from saverkit.train import async_save  # noqa: PLC0415

    writer = async_save.writer_for(owner)
    writer.sync()  # at most one save in flight; its staging memory is free once it is done
    background = async_save.background_coordinator(owner, coord)
    job.fetch_options = RunOptions(snapshot=writer.snapshot(options))
    frozen = _Frozen(job)
    path = frozen.checkpoint_file()
    writer.start(lambda: run_save(background, frozen, durable), path)
    return path


# --- save: to a URL
_DATA_RE = re.compile(r"^(?P<base>.+)\.data-(?P<shard>\d{5,})-of-(?P<num>\d{5,})\Z")


def _shard_counts(loc: storage.Location, checkpoint_file: str) -> tuple[set[int], int | None]:
    """The shard counts of the data objects of ``checkpoint_file`` on the store, and the count its
    current index names (None: no index)."""
    base = storage.basename(checkpoint_file)
    taken = set()
    for name in loc.listdir(storage.dirname(checkpoint_file)):
        m = _DATA_RE.match(name)
        if m and m.group("base") == base:
            taken.add(int(m.group("num")))
    try:
        index = loc.read_bytes(checkpoint_file + ".index")
    except errors.NotFoundError:
        return taken, None
    return taken, _index_reader(checkpoint_file, index).num_shards


def run_save_remote(coord: dist.Coordinator, job: _Job) -> str | None:
    """A coordinated save to a URL (``s3://``, ``memory://``...; see saverkit.storage). A store has no
    rename, so nothing is written under a temporary name: each writing rank encodes its tensors and
    writes its data object ``<prefix>.data-0000k-of-0000n`` in place; rank 0 merges the ranks' indexes
    in memory (``_core.merge_indexes``) and writes the index last (the commit: before it the prefix is
    the previous checkpoint or none), then the ``.meta``, then the state file. ``n`` is a shard count
    that no data object of the prefix has, so a re-save never overwrites the data of the checkpoint it
    replaces (whose data objects rank 0 deletes after the commit). A failure before the commit removes
    what every rank wrote, and so does a failure of the ``.meta`` or state file after the index of a new
    prefix (a re-saved prefix's index already names the new data: that checkpoint stands)."""
    from saverkit import _core  # noqa: PLC0415

    rank = coord.rank
    local: dict[str, Any] = {}

    def prepare() -> tuple:
        checkpoint_file = job.checkpoint_file()
        entries = job.entries()
        counts = None
        if rank == 0:
            loc = storage.Location(checkpoint_file, job.storage_options)
            if loc.read_only:
                raise errors.PermissionDeniedError(
                    None, None, f"Cannot save to {checkpoint_file}: read-only store")
            counts = _shard_counts(loc, checkpoint_file)
        return checkpoint_file, entries, counts, job.extra()

    try:
        gathered = dist.run_everywhere(coord, prepare, "save (prepare)")
        files = {g[0] for g in gathered}
        if len(files) != 1:
            raise errors.InvalidArgumentError(
                None, None, "Ranks save to different checkpoints: "
                + ", ".join(f"rank {r}: {g[0]!r}" for r, g in enumerate(gathered)))
        checkpoint_file = gathered[0][0]
        taken, current = gathered[0][2]
        writes = plan_save([g[1] for g in gathered])
        writers = [r for r in range(coord.world_size) if writes[r] or (r == 0 and job.rank0_extra)]
        if not writers:
            return None
        num_shards = len(writers)
        while num_shards in taken:  # never a data object an index may name
            num_shards += 1
        loc = storage.Location(checkpoint_file, job.storage_options)
        urls = [f"{checkpoint_file}.data-{s:05d}-of-{num_shards:05d}" for s in range(num_shards)]

        def write() -> bytes | None:
            extra = job.rank0_tensors([g[3] for g in gathered]) if rank == 0 and job.rank0_extra \
                else ([],) * 4
            if not (writes[rank] or extra[0]):
                return None
            segments, size, index, held = bundle.encode_bundle(
                checkpoint_file, *job.tensors(writes[rank], extra))
            local["written"] = [urls[writers.index(rank)]]
            loc.write_segments(urls[writers.index(rank)], segments, size)
            del segments, held
            return index

        indexes = dist.run_everywhere(coord, write, "save (write)")
        job.release()

        def commit() -> str:
            local["written"] = local.get("written", []) + urls[len(writers):]
            for url in urls[len(writers):]:  # shards past the writers' (a taken count skipped): empty
                loc.write_segments(url, [], 0)
            merged, shard_of = _core.merge_indexes([indexes[r] for r in writers], checkpoint_file, num_shards)
            if list(shard_of) != list(range(len(writers))):
                raise errors.InternalError(
                    None, None, f"Merged index of {checkpoint_file} numbers the ranks' data objects "
                    f"{list(shard_of)}, not in rank order")
            loc.write_bytes(checkpoint_file + ".index", merged)
            if current is None:  # a new prefix: until the state file names it, a failure removes it
                # the index first: the checkpoint is invisible before its data goes
                local["written"].insert(0, checkpoint_file + ".index")
            else:
                local["committed"] = True
                if current != num_shards:  # the replaced checkpoint's data objects
                    with contextlib.suppress(errors.OpError):
                        loc.remove([f"{checkpoint_file}.data-{s:05d}-of-{current:05d}"
                                    for s in range(current)])
            job.commit(checkpoint_file)
            local["committed"] = True
            return checkpoint_file

        path = dist.broadcast_result(coord, commit, "save (commit)")
    except BaseException:
        if local.get("written") and not local.get("committed"):
            with contextlib.suppress(Exception):  # the first error is the one to report
                storage.Location(local["written"][0], job.storage_options).remove(local["written"])
        raise
    finally:
        job.release()
    if rank != 0:
        job.committed(path)
    return path


# --- save: Saver
class _SaverJob(_Job):
    def __init__(self, saver: Any, sess: Any, save_path: str, global_step: Any, latest_filename: str,
                 meta_graph_suffix: str, write_meta_graph: bool, write_state: bool, strip_default_attrs: bool,
                 durable: bool, storage_options: dict | None) -> None:
        self.saver, self.sess, self.save_path, self.global_step = saver, sess, save_path, global_step
        self.storage_options = storage_options
        self.latest_filename, self.meta_graph_suffix = latest_filename, meta_graph_suffix
        self.write_meta_graph, self.write_state = write_meta_graph, write_state
        self.strip_default_attrs, self.durable = strip_default_attrs, durable

    def checkpoint_file(self) -> str:
        return _checkpoint_file(self.saver, self.sess, self.save_path, self.global_step, self.latest_filename)

    def entries(self) -> list[tuple]:
        names, tensors, slices, dts = _local_specs(self.saver)
        shapes: list[tuple | None] = [
            _parse_slice(s)[0] if s else _static_shape(t) for t, s in zip(tensors, slices, strict=True)]
        unknown = [i for i, shape in enumerate(shapes) if shape is None]
        if unknown:  # shapes only known at run time: fetch those values (kept for the write)
            self.values = dict(zip(unknown, self.sess.run([tensors[i] for i in unknown],
                                                          options=self.fetch_options), strict=True))
            for i in unknown:
                shapes[i] = tuple(np.shape(self.values[i]))
        return [(_key(n), dtypes_lib.as_dtype(d).base_dtype.as_datatype_enum, tuple(shape or ()), s)
                for n, d, shape, s in zip(names, dts, shapes, slices, strict=True)]

    def write(self, part: str, mine: list[int], extra: tuple, durable: bool) -> None:
        names, tensors, slices, dts = _local_specs(self.saver)
        saver_def = self.saver.saver_def
        if len(mine) == len(names) and not self.saver.sharded and saver_def is not None and not extra[0]:
            # This rank writes all its variables: the Saver's own SaveV2, which reads them in place.
            from saverkit.framework.run_options import RunOptions  # noqa: PLC0415

            self.sess.run(saver_def.save_tensor_name, {saver_def.filename_tensor_name: part},
                          options=RunOptions(durable=True) if durable else None)
            return
        super().write(part, mine, extra, durable)

    def tensors(self, mine: list[int], extra: tuple) -> tuple[list, list, list, list]:
        names, tensors, slices, dts = _local_specs(self.saver)
        have = getattr(self, "values", {})
        missing = [i for i in mine if i not in have]
        fetched = dict(zip(missing, self.sess.run([tensors[i] for i in missing], options=self.fetch_options),
                           strict=True)) if missing else {}
        return ([names[i] for i in mine], [np.asarray(have[i] if i in have else fetched[i]) for i in mine],
                [slices[i] for i in mine], [dts[i] for i in mine])

    def release(self) -> None:
        self.values = {}

    def check_parent(self, checkpoint_file: str) -> None:
        if storage.is_url(checkpoint_file):
            return  # a store has no directories to create
        parent = os.path.dirname(self.save_path)
        if parent and not os.path.isdir(parent) and not os.path.isdir(os.path.dirname(parent) or "."):
            raise ValueError(f"Parent directory of {self.save_path} doesn't exist, can't save.")

    def commit(self, checkpoint_file: str) -> None:
        self.saver.commit_merged(self.sess, checkpoint_file, self.latest_filename, self.meta_graph_suffix,
                                 self.write_meta_graph, self.write_state, self.strip_default_attrs,
                                 self.durable, self.storage_options)

    def committed(self, checkpoint_file: str) -> None:
        if self.write_state:  # the same retention bookkeeping as rank 0 (which deleted the files)
            self.saver.record_committed(checkpoint_file)


def save(
    saver: Any,
    sess: Any,
    save_path: str,
    global_step: Any,
    latest_filename: str,
    meta_graph_suffix: str,
    write_meta_graph: bool,
    write_state: bool,
    strip_default_attrs: bool,
    durable: bool,
    storage_options: dict | None = None,
    options: Any = None,
) -> str | None:
    """``Saver.save`` when the Saver has a coordinator (see the module docstring); ``options``: its
    CheckpointOptions (asynchronous or not)."""
    from saverkit.train import async_save  # noqa: PLC0415

    job = _SaverJob(saver, sess, save_path, global_step, latest_filename, meta_graph_suffix,
                    write_meta_graph, write_state, strip_default_attrs, durable, storage_options)
    if async_save.is_async(options):
        return run_save_async(saver.coordinator, job, durable, saver, options)
    return run_save(saver.coordinator, job, durable)


# --- save: object-based (Checkpoint / CheckpointManager)
class _ObjectJob(_Job):
    rank0_extra = True

    def __init__(self, checkpoint: Any, prefix: str, session: Any, commit: Callable[[str], Any] | None,
                 committed: Callable[[str], Any] | None, storage_options: dict | None = None) -> None:
        self.checkpoint, self.prefix, self.session = checkpoint, prefix, session
        self.storage_options = storage_options
        self._commit, self._committed = commit, committed
        self.graph: Any = None

    def checkpoint_file(self) -> str:
        return self.prefix

    def entries(self) -> list[tuple]:
        from saverkit.train import _variable_io  # noqa: PLC0415

        self.graph, to_save = self.checkpoint.object_graph_to_save()
        variables = [v for _, v in to_save]
        self.names = [k for k, _ in to_save]
        self.values = _variable_io.fetch_values(self.session, variables, self.fetch_options)
        self.dtypes = [v.dtype.base_dtype for v in variables]
        return [_entry(n, d, v, "") for n, d, v in zip(self.names, self.dtypes, self.values, strict=True)]

    def tensors(self, mine: list[int], extra: tuple) -> tuple[list, list, list, list]:
        names, values, slices, dts = extra
        return ([self.names[i] for i in mine] + list(names),
                [np.asarray(self.values[i]) for i in mine] + list(values),
                [""] * len(mine) + list(slices), [self.dtypes[i] for i in mine] + list(dts))

    def release(self) -> None:
        self.values = []

    def extra(self) -> bytes:
        return self.graph.SerializeToString()

    def rank0_tensors(self, extras: list) -> tuple[list, list, list, list]:
        from saverkit.trackable import OBJECT_GRAPH_PROTO_KEY  # noqa: PLC0415

        merged = merge_object_graphs(extras)
        return [OBJECT_GRAPH_PROTO_KEY], [np.array(merged, dtype=object)], [""], [dtypes_lib.string]

    def check_parent(self, checkpoint_file: str) -> None:
        if storage.is_url(checkpoint_file):
            return
        directory = os.path.dirname(checkpoint_file)
        if directory:
            os.makedirs(directory, exist_ok=True)

    def commit(self, checkpoint_file: str) -> None:
        if self._commit is not None:
            self._commit(checkpoint_file)

    def committed(self, checkpoint_file: str) -> None:
        if self._committed is not None:
            self._committed(checkpoint_file)


def write_object_checkpoint(coord: dist.Coordinator, checkpoint: Any, prefix: str, session: Any,
                            commit: Callable[[str], Any] | None = None,
                            committed: Callable[[str], Any] | None = None,
                            storage_options: dict | None = None, options: Any = None) -> str | None:
    """``Checkpoint.write`` of every rank's objects into ONE object-based checkpoint at ``prefix``.

    The ranks' object graphs are merged by object path (a node is the same object on every rank that
    reaches it by the same path; variables with the same key are replicas, written once); ``commit``
    runs on rank 0 after the merge (the state file), ``committed`` on the others afterwards."""
    from saverkit.train import async_save  # noqa: PLC0415

    job = _ObjectJob(checkpoint, prefix, session, commit, committed, storage_options)
    if async_save.is_async(options):  # the Checkpoint's background thread, as for its own async saves
        return run_save_async(coord, job, False, checkpoint, options)
    return run_save(coord, job, durable=False)


def _node_paths(graph: Any) -> list:
    """Each node's identity across ranks: its path of child names from the root (breadth first, as TF
    names objects); a slot variable node: ("slot", variable path, optimizer path, slot name)."""
    paths: list = [None] * len(graph.nodes)
    paths[0] = ()
    queue = [0]
    while queue:
        nxt = []
        for i in queue:
            for ref in graph.nodes[i].children:
                if paths[ref.node_id] is None:
                    paths[ref.node_id] = (*paths[i], ref.local_name)
                    nxt.append(ref.node_id)
        queue = nxt
    for i, node in enumerate(graph.nodes):
        for slot in node.slot_variables:
            if paths[slot.slot_variable_node_id] is None:
                paths[slot.slot_variable_node_id] = (
                    "slot", paths[slot.original_variable_node_id], paths[i], slot.slot_name)
    return paths


def merge_object_graphs(serialized: list[bytes]) -> bytes:
    """One TrackableObjectGraph holding every rank's objects (see write_object_checkpoint)."""
    from saverkit.protobuf import trackable_object_graph_pb2  # noqa: PLC0415

    if all(b == serialized[0] for b in serialized[1:]):
        return serialized[0]
    graphs = [trackable_object_graph_pb2.TrackableObjectGraph.FromString(b) for b in serialized]
    merged = trackable_object_graph_pb2.TrackableObjectGraph()
    ids: dict = {}
    maps = []
    for g in graphs:
        local = {}
        for i, path in enumerate(_node_paths(g)):
            if path is None:
                continue
            if path not in ids:
                ids[path] = len(merged.nodes)
                merged.nodes.add()
            local[i] = ids[path]
        maps.append(local)
    children: list[dict] = [{} for _ in merged.nodes]
    attributes: list[dict] = [{} for _ in merged.nodes]
    slots: list[dict] = [{} for _ in merged.nodes]
    for rank, (g, local) in enumerate(zip(graphs, maps, strict=True)):
        for i, node in enumerate(g.nodes):
            if i not in local:
                continue
            m = local[i]
            for ref in node.children:
                children[m].setdefault(ref.local_name, local[ref.node_id])
            for attr in node.attributes:
                seen = attributes[m].setdefault(attr.name, (rank, attr))
                if seen[1].checkpoint_key != attr.checkpoint_key:
                    raise errors.InvalidArgumentError(
                        None, None, f"Conflicting object graphs: attribute {attr.name} is "
                        f"{seen[1].checkpoint_key!r} on rank {seen[0]} and {attr.checkpoint_key!r} "
                        f"on rank {rank}")
            for slot in node.slot_variables:
                key = (local[slot.original_variable_node_id], slot.slot_name)
                slots[m].setdefault(key, local[slot.slot_variable_node_id])
            if node.HasField("has_checkpoint_values") and node.has_checkpoint_values.value:
                merged.nodes[m].has_checkpoint_values.value = True
    ref_t = trackable_object_graph_pb2.TrackableObjectGraph.TrackableObject
    for m, node in enumerate(merged.nodes):
        node.children.extend(
            ref_t.ObjectReference(node_id=c, local_name=name) for name, c in children[m].items())
        for _, attr in attributes[m].values():
            node.attributes.add().CopyFrom(attr)
        node.slot_variables.extend(
            ref_t.SlotVariableReference(original_variable_node_id=v, slot_name=name, slot_variable_node_id=s)
            for (v, name), s in slots[m].items())
        if not node.HasField("has_checkpoint_values"):
            node.has_checkpoint_values.value = False
    return merged.SerializeToString()


# --- restore
def _read_index(prefix: str, storage_options: dict | None = None) -> tuple[str, bytes]:
    """Rank 0: the checkpoint's prefix (resolved as a reader resolves it) and its index's bytes."""
    from saverkit.train import saver as saver_mod  # noqa: PLC0415

    if not checkpoint_management.checkpoint_exists(prefix, storage_options):
        raise saver_mod.missing_checkpoint_error(prefix)
    if storage.is_url(prefix):
        return prefix, storage.Location(prefix, storage_options).read_bytes(prefix + ".index")
    resolved = bundle.resolve_prefix(storage.local_path(prefix))
    try:
        with open(resolved + ".index", "rb") as f:
            return resolved, f.read()
    except FileNotFoundError:  # deleted (or being re-saved) since it was found
        raise saver_mod.missing_checkpoint_error(prefix) from None


def restore(saver: Any, sess: Any, prefix: str, storage_options: dict | None = None) -> None:
    """``Saver.restore`` when the Saver has a coordinator.

    Rank 0 reads the index once and broadcasts its bytes; every rank opens the checkpoint from them
    (``BundleReader(prefix, index=...)``: no rank but 0 opens the index), checks its own variables'
    keys, dtypes and shapes, and restores them through its ``RestoreV2`` reading from that reader
    (``RunOptions.readers``), so each rank reads only its own variables' bytes. Stored slices that
    several ranks read parts of are verified together (see :class:`_RankReader`). A failure anywhere
    raises everywhere."""
    coord: dist.Coordinator = saver.coordinator
    resolved, index = dist.broadcast_result(coord, lambda: _read_index(prefix, storage_options),
                                            "restore (index)")
    local: dict[str, Any] = {}

    def plan_here() -> list:
        local["reader"] = reader = bundle.BundleReader(resolved, storage_options, index=index)
        if saver.save_specs() is None:
            return []
        requests, renamed = _check_variables(saver, reader, index, resolved)
        local["geometry"] = geometry = _Geometry(reader, index, renamed)
        return geometry.touches(requests)

    touches = dist.run_everywhere(coord, plan_here, "restore")
    plan = _VerificationPlan(touches)

    def restore_here() -> list:
        if saver.save_specs() is None:
            return []
        from saverkit.framework.run_options import RunOptions  # noqa: PLC0415

        ranked = _RankReader(local["reader"], local["geometry"], plan, coord.rank)
        try:
            saver.run_restore_op(sess, prefix, options=RunOptions(readers={prefix: ranked}))
        finally:
            ranked.close()
        return ranked.crcs

    try:
        crcs = dist.run_everywhere(coord, restore_here, "restore")
    finally:
        local.clear()
    plan.verify(crcs, resolved, _index_reader(resolved, index).num_shards)  # the same verdict everywhere


def _index_reader(prefix: str, index: bytes) -> Any:
    """The engine's reader of ``index`` (for lookups of entries: no data file is opened)."""
    from saverkit import _core  # noqa: PLC0415

    return _core.Reader(prefix, index, not storage.is_url(prefix))


def _object_keys(reader: bundle.BundleReader, core: Any, prefix: str) -> dict[str, str] | None:
    """``{variable name: checkpoint key}`` of an object-based checkpoint (read from this rank's reader,
    not by opening the index again); None for a name-based one."""
    from saverkit.protobuf import trackable_object_graph_pb2  # noqa: PLC0415
    from saverkit.trackable import OBJECT_GRAPH_PROTO_KEY  # noqa: PLC0415

    if not core.has_tensor(OBJECT_GRAPH_PROTO_KEY.encode()):
        return None
    raw = reader.read(OBJECT_GRAPH_PROTO_KEY)
    raw = raw.item() if isinstance(raw, np.ndarray) and raw.shape == () else raw
    if not isinstance(raw, bytes):
        raise errors.DataLossError(
            None, None, f"{OBJECT_GRAPH_PROTO_KEY} of checkpoint {prefix} is not a string scalar")
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw)
    return {a.full_name: a.checkpoint_key for node in graph.nodes for a in node.attributes}


def _check_variables(saver: Any, reader: bundle.BundleReader, index: bytes,
                     prefix: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """This rank's (checkpoint key, slice spec) requests, each checked against the index (key, dtype,
    shape), and the variables' names read under another key: an object-based checkpoint restored by a
    name-based Saver reads each variable from the key its name had when saved (TF's fallback)."""
    names, tensors, slices, dts = _local_specs(saver)
    core = _index_reader(reader.prefix, index)
    requests = []
    renamed: dict[str, str] = {}
    object_keys: dict[str, str] | None = None
    for name, tensor, spec, dt in zip(names, tensors, slices, dts, strict=True):
        key = _key(name)
        if not core.has_tensor(key.encode()):
            if object_keys is None:
                object_keys = _object_keys(reader, core, prefix) or {}
                if object_keys:
                    _logger.warning(
                        "Restoring an object-based checkpoint using a name-based saver: each variable is "
                        "read from the key its name had when the checkpoint was written.")
            mapped = object_keys.get(key)
            if mapped is None or not core.has_tensor(mapped.encode()):
                raise errors.NotFoundError(None, None, f"Key {key} not found in checkpoint {prefix}")
            renamed[key] = key = mapped
        found = core.entry(key.encode())
        stored_shape = tuple(found["shape"])
        want = dtypes_lib.as_dtype(dt).base_dtype.as_datatype_enum
        if found["dtype"] != want:
            raise errors.InvalidArgumentError(
                None, None, f"Checkpoint {prefix} has {key} as {_describe(found['dtype'], stored_shape)}, "
                f"the variable is {dtypes_lib.as_dtype(dt).base_dtype.name}")
        full = _parse_slice(spec)[0] if spec else _static_shape(tensor)
        if full is not None and tuple(full) != stored_shape:
            raise errors.InvalidArgumentError(
                None, None, f"Checkpoint {prefix} has {key} with shape {list(stored_shape)}, the variable "
                f"{'is a slice of' if spec else 'has'} {list(full)}")
        requests.append((key, spec))
    return requests, renamed


# --- restore: stored slices shared between ranks
# A stored tensor (or stored slice) carries ONE checksum over all its bytes. A rank that needs only part
# of it (another world size's slice straddling two saved slices, or a slice of a tensor saved whole)
# would have to read all of it to check it: with N ranks each straddling two stored slices, twice the
# bytes of a same-world restore. Instead the ranks split the check: every rank reads just the byte run it
# needs, straight into its variable, and checksums the segments of it that the plan gives it; bytes no
# rank needs are checksummed by one of the ranks that touch that stored slice; the segment checksums
# are gathered with the restore's outcome and combined (crc32c_combine), and every rank compares them
# with the index's. Each stored byte is read about once in all, and checked exactly once.

class _Piece:
    """A stored payload overlapped by a request: where it is, its checksum, and what of it is needed."""

    __slots__ = ("crc", "dst_offset", "ident", "key", "nbytes", "run", "shard")

    def __init__(self, key: bytes, entry: dict, run: tuple[int, int], dst_offset: int) -> None:
        self.key, self.shard, self.crc = key, entry["shard_id"], entry["crc32c"]
        self.ident = (entry["shard_id"], entry["offset"], entry["size"])
        self.nbytes = entry["size"]
        self.run = run  # bytes [start, end) of the payload that the request needs
        self.dst_offset = dst_offset  # where they go in the request's buffer (bytes)


def _run_of(box: list[tuple[int, int]], within: list[tuple[int, int]]) -> tuple[int, int] | None:
    """(first element, count) of ``box`` inside the row-major array ``within``, when it is one run."""
    shape = [length for _, length in within]
    k = 0  # dims from k on must be whole, dim k-1 may be partial, earlier ones of length 1
    for d in range(len(box) - 1, -1, -1):
        if box[d] != within[d]:
            k = d
            break
    else:
        return 0, int(np.prod(shape, dtype=np.int64)) if shape else 1
    if any(box[d][1] != 1 for d in range(k)):
        return None
    first, stride = 0, 1
    for d in range(len(box) - 1, -1, -1):
        first += (box[d][0] - within[d][0]) * stride
        stride *= shape[d]
    inner = int(np.prod(shape[k + 1:], dtype=np.int64)) if k + 1 < len(shape) else 1
    return first, box[k][1] * inner


class _Geometry:
    """Which stored payloads each (key, spec) request overlaps, and whether it can be read by runs."""

    def __init__(self, reader: bundle.BundleReader, index: bytes, renamed: dict[str, str]) -> None:
        self.reader = reader
        self.renamed = renamed  # variable name -> its key in an object-based checkpoint
        self.core = _index_reader(reader.prefix, index)
        self.local = not storage.is_url(reader.prefix)
        self.split: dict[tuple[str, str], list[_Piece]] = {}  # requests read by runs

    def _box(self, shape: tuple, extents: list) -> list[tuple[int, int]]:
        if not extents:
            return [(0, n) for n in shape]
        return [(0, n) if e is None else (int(e[0]), int(e[1])) for n, e in zip(shape, extents, strict=True)]

    def _pieces(self, key: str, spec: str) -> tuple[list[_Piece], list[tuple], bool] | None:
        """The payloads request (key, spec) overlaps (as _Piece) and whether it can be read by runs;
        None for a request the reader reads itself as it always does (a whole unpartitioned tensor)."""
        entry = self.core.entry(key.encode())
        shape = tuple(entry["shape"])
        want = self._box(shape, _core_slice(spec)[1]) if spec else [(0, n) for n in shape]
        stored = [(self._box(shape, ext), _core_slice_key(key, shape, ext))
                  for ext in entry["slices"]] or [([(0, n) for n in shape], key.encode())]
        if len(stored) == 1 and stored[0][0] == want:
            return None  # the stored payload is the request: read directly, checked by the reader
        elem = _elem_size(entry["dtype"])
        runnable = self.local and elem is not None and (elem == 1 or self.core.endianness == 0) \
            and _little_endian_host()
        pieces: list[_Piece] = []
        ids: list[tuple[tuple, tuple[int, int] | None]] = []
        for box, pkey in stored:
            region = [(max(s, w), min(s + n, w + m) - max(s, w))
                      for (s, n), (w, m) in zip(box, want, strict=True)]
            if any(n <= 0 for _, n in region) and shape:
                continue
            pentry = self.core.entry(pkey)
            src, dst = _run_of(region, box), _run_of(region, want)
            nelem = int(np.prod([n for _, n in box], dtype=np.int64)) if box else 1
            if src is None or dst is None or elem is None or pentry["size"] != nelem * elem:
                runnable = False
                ids.append(((pentry["shard_id"], pentry["offset"], pentry["size"]), None))
                continue
            piece = _Piece(pkey, pentry, (src[0] * elem, (src[0] + src[1]) * elem), dst[0] * elem)
            pieces.append(piece)
            ids.append((piece.ident, piece.run))
        return pieces, ids, runnable

    def touches(self, requests: list[tuple[str, str]]) -> list[tuple]:
        """This rank's touches of stored payloads: (payload, (start, end)) for a run it reads itself,
        (payload, None) for a payload the reader reads (and checks) whole."""
        out: list[tuple] = []
        for key, spec in requests:
            found = self._pieces(key, spec)
            if found is None:
                continue
            pieces, ids, runnable = found
            if runnable and any(p.run != (0, p.nbytes) for p in pieces):
                self.split[(key, spec)] = pieces
                out += [(p.ident, p.run, p.crc, p.key) for p in pieces]
            else:
                out += [(ident, None, None, None) for ident, _ in ids]
        return out


def _core_slice(spec: str) -> tuple:
    from saverkit import _core  # noqa: PLC0415

    return _core.parse_shape_and_slice(spec)


def _core_slice_key(key: str, shape: tuple, extents: list) -> bytes:
    """The index key of the stored slice with these extents (None: a whole dimension, written "-" as in
    the stored slice: the key encodes the two differently)."""
    from saverkit import _core  # noqa: PLC0415

    if not extents:
        extents = [None] * len(shape)
    dims = ":".join("-" if e is None else f"{e[0]},{e[1]}" for e in extents)
    return _core.slice_key(key, " ".join(str(n) for n in shape) + " " + dims)


def _elem_size(enum: int) -> int | None:
    try:
        d = dtypes_lib.as_dtype(enum)
    except TypeError:
        return None
    if d == dtypes_lib.string or d.np_dtype is None or d.np_dtype.hasobject:
        return None
    return int(d.np_dtype.itemsize)


def _little_endian_host() -> bool:
    import sys  # noqa: PLC0415

    return sys.byteorder == "little"


class _VerificationPlan:
    """Who checksums which bytes of the stored payloads read by runs (the same on every rank).

    Each such payload is cut at every run's ends into segments; a segment inside some rank's run goes
    to the lowest such rank, one inside no run (bytes nobody needs) to the touching rank with the least
    bytes so far. A payload some rank reads whole through its reader is checked there: no segments."""

    def __init__(self, touches: list[list[tuple]]) -> None:
        runs: dict[tuple, list[tuple[int, int, int]]] = {}
        self.meta: dict[tuple, tuple[int, bytes]] = {}
        whole: set[tuple] = set()
        for rank, mine in enumerate(touches):
            for ident, run, crc, key in mine:
                if run is None:
                    whole.add(ident)
                else:
                    runs.setdefault(ident, []).append((rank, run[0], run[1]))
                    self.meta[ident] = (crc, key)
        load = [0] * len(touches)
        # per payload: [(start, end, rank)] covering [0, size)
        self.segments: dict[tuple, list[tuple[int, int, int]]] = {}
        for ident in sorted(runs):
            if ident in whole:
                continue
            size = ident[2]
            cuts = sorted({0, size, *(a for _, a, _ in runs[ident]), *(b for _, _, b in runs[ident])})
            segs = []
            for a, b in zip(cuts, cuts[1:], strict=False):
                covering = [r for r, s, e in runs[ident] if s <= a and b <= e]
                if covering:
                    owner = min(covering)
                else:
                    toucher = sorted({r for r, _, _ in runs[ident]})
                    owner = min(toucher, key=lambda r: (load[r], r))
                load[owner] += b - a
                segs.append((a, b, owner))
            self.segments[ident] = segs

    def mine(self, ident: tuple, rank: int) -> list[tuple[int, int]]:
        return [(a, b) for a, b, r in self.segments.get(ident, ()) if r == rank]

    def verify(self, crcs_per_rank: list[list[tuple]], prefix: str, num_shards: int) -> None:
        """Combines every rank's segment checksums; DataLossError (on every rank) naming a bad payload."""
        from saverkit import _core  # noqa: PLC0415

        got: dict[tuple, dict[int, int]] = {}
        for crcs in crcs_per_rank:
            for ident, a, crc in crcs:
                got.setdefault(ident, {})[a] = crc
        for ident, segs in self.segments.items():
            crc, key = self.meta[ident]
            have = got.get(ident, {})
            combined = 0
            for a, b, _ in segs:
                if a not in have:  # a rank did not report: its restore failed, and said so already
                    raise errors.DataLossError(
                        None, None, f"Checksum of a slice of {_display(key)} in {prefix} was not computed")
                combined = _core.crc32c_combine(combined, have[a], b - a) if a else have[a]
            if combined != _core.crc32c_unmask(crc):
                raise errors.DataLossError(
                    None, None, f"Checksum does not match for {_display(key)} in "
                    f"{prefix}.data-{ident[0]:05d}-of-{num_shards:05d}: stored "
                    f"{_core.crc32c_unmask(crc):#010x}, "
                    f"calculated {combined:#010x} (the bytes read may be wrong)")



def _display(key: bytes) -> str:
    if key.startswith(b"\x00"):  # a slice key: name it by its tensor
        name = key[1:].split(b"\x00", 1)[0]
        return f"a stored slice of {name.decode(errors='replace')!r}"
    return repr(key.decode(errors="replace"))


class _RankReader:
    """What this rank's RestoreV2 reads through (``RunOptions.readers``): the BundleReader opened from
    the broadcast index, except for the requests read by runs (see _VerificationPlan), which are read
    here straight into their buffers, checksummed by segment; ``crcs`` lists those checksums."""

    def __init__(self, reader: bundle.BundleReader, geometry: _Geometry, plan: _VerificationPlan,
                 rank: int) -> None:
        self.reader, self.geometry, self.plan, self.rank = reader, geometry, plan, rank
        self.crcs: list[tuple] = []
        self._done: set[tuple] = set()  # payload segments already checksummed (a payload read twice)

    def close(self) -> None:
        """Nothing held: the engine's reader owns the data files."""

    def read_many(self, names: list, specs: list | None = None, dtypes: list | None = None,
                  out: list | None = None) -> list:
        n = len(names)
        specs = list(specs) if specs is not None else [""] * n
        keys = [_key(x) for x in names]
        if self.geometry.renamed:
            keys = [self.geometry.renamed.get(k, k) for k in keys]
            names = keys
        split = [i for i in range(n) if (keys[i], specs[i]) in self.geometry.split]
        if not split:
            return self.reader.read_many(names, specs, dtypes, out)
        core = self.geometry.core
        plans = core.prepare([keys[i].encode() for i in split], [specs[i] for i in split])
        targets = {}
        for i, (enum, shape) in zip(split, plans, strict=True):  # every check before any read
            dt = dtypes_lib.as_dtype(enum)
            if dtypes is not None and dtypes[i] is not None and dtypes_lib.as_dtype(dtypes[i]) != dt:
                raise errors.InvalidArgumentError(
                    None, None, f"Tensor {keys[i]!r} in checkpoint {self.reader.prefix} has dtype "
                    f"{dt.name}, but {dtypes_lib.as_dtype(dtypes[i]).name} was requested")
            target = out[i] if out is not None else None
            if target is None:
                target = np.empty(shape, dtype=dt.np_dtype)
            elif not (isinstance(target, np.ndarray) and target.dtype == dt.np_dtype
                      and target.shape == tuple(shape) and target.flags.c_contiguous
                      and target.flags.writeable):
                raise errors.InvalidArgumentError(
                    None, None, f"Output array for tensor {keys[i]!r} does not fit {dt.name}{list(shape)}")
            targets[i] = target
        rest = [i for i in range(n) if i not in targets]
        results: list = [None] * n
        if rest:
            got = self.reader.read_many(
                [names[i] for i in rest], [specs[i] for i in rest],
                [dtypes[i] for i in rest] if dtypes is not None else None,
                [out[i] for i in rest] if out is not None else None)
            for i, value in zip(rest, got, strict=True):
                results[i] = value
        for i in split:
            self._read_runs(self.geometry.split[(keys[i], specs[i])], targets[i])
            results[i] = targets[i]
        return results

    def _read_runs(self, pieces: list[_Piece], target: np.ndarray) -> None:
        """Each piece's run straight into ``target``, and the segments the plan gives this rank
        checksummed (those outside the run read for that alone), by the engine on its I/O threads; a
        segment's checksum is its ranges' checksums combined in order."""
        from saverkit import _core  # noqa: PLC0415

        dst = memoryview(target.reshape(-1).view(np.uint8).data)
        shards: list[int] = []
        offsets: list[int] = []
        sizes: list[int] = []
        outs: list[Any] = []
        segs: list[tuple | None] = []
        for p in pieces:
            base = p.ident[1]
            mine = [(a, b) for a, b in self.plan.mine(p.ident, self.rank) if (p.ident, a) not in self._done]
            start, end = p.run
            # the run, cut where segments start or end, read in place
            cuts = sorted({start, end, *(x for a, b in mine for x in (a, b) if start < x < end)})
            for lo, hi in zip(cuts, cuts[1:], strict=False):
                seg = next((a for a, b in mine if a <= lo and hi <= b), None)
                at = p.dst_offset + lo - start
                shards.append(p.shard)
                offsets.append(base + lo)
                sizes.append(hi - lo)
                outs.append(dst[at:at + hi - lo])
                segs.append(None if seg is None else (p.ident, seg))
            for a, b in mine:  # segments outside the run: bytes nobody needs, read only to checksum
                if not (a >= start and b <= end):
                    shards.append(p.shard)
                    offsets.append(base + a)
                    sizes.append(b - a)
                    outs.append(None)
                    segs.append((p.ident, a))
            for a, _ in mine:
                self._done.add((p.ident, a))
        crcs = _read_ranges(self.geometry.core, shards, offsets, sizes, outs)
        combined: dict[tuple, int] = {}
        order: list[tuple] = []
        for which, m, crc in zip(segs, sizes, crcs, strict=True):  # a segment's ranges are in file order
            if which is None:
                continue
            if which in combined:
                combined[which] = _core.crc32c_combine(combined[which], crc, m)
            else:
                combined[which] = crc
                order.append(which)
        for ident, a in order:
            self.crcs.append((ident, a, combined[(ident, a)]))


def _read_ranges(core: Any, shards: list[int], offsets: list[int], sizes: list[int], outs: list) -> list[int]:
    """The engine reads the ranges (see _core.Reader.read_ranges); one place for tests to watch."""
    return core.read_ranges(shards, offsets, sizes, outs)


def _static_shape(tensor: Any) -> tuple | None:
    shape: Any = getattr(tensor, "shape", None)
    with contextlib.suppress(Exception):
        dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
        if all(d is not None for d in dims):
            return tuple(int(d) for d in dims)
    return None

