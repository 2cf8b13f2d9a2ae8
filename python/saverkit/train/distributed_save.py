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

A restore reads the index on rank 0 only and broadcasts its entries (key -> dtype, shape); each rank
checks its own variables against them and restores only them (``RestoreV2`` with its keys and slices
reads just those bytes). Slices make the world size free: 4 ranks that each saved one slice of a
partitioned variable can be restored by 2 ranks with 2-slice parts, or by one plain ``Saver``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import numpy as np

from saverkit import bundle, errors, tempfiles
from saverkit import distributed as dist
from saverkit import dtypes as dtypes_lib
from saverkit.train import checkpoint_management

__all__ = ["plan_save", "restore", "save"]


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
    """Keys, tensors, slice specs and dtypes of this rank's saver (cached: resource variables add a read
    op to the graph when turned into saveables)."""
    cached = getattr(saver, "_distributed_specs", None)
    if cached is not None:
        return cached
    from saverkit.train import saver as saver_mod  # noqa: PLC0415 - saver imports this module lazily

    if saver._is_empty:
        specs: tuple[list, list, list, list] = ([], [], [], [])
    else:
        var_list = saver._var_list
        names_to_saveables = var_list if isinstance(var_list, dict) else saver_mod.op_list_to_dict(var_list)
        saveables = saver_mod.validate_and_slice_inputs(names_to_saveables)
        specs = saver_mod._flat_specs(saveables)
    saver._distributed_specs = specs
    return specs


def _entry(name: Any, dtype: Any, value: np.ndarray, spec: str) -> tuple:
    key = name.decode() if isinstance(name, bytes) else str(name)
    shape = _parse_slice(spec)[0] if spec else tuple(np.shape(value))
    return (key, dtypes_lib.as_dtype(dtype).base_dtype.as_datatype_enum, shape, spec)


def _checkpoint_file(saver: Any, sess: Any, save_path: str, global_step: Any, latest_filename: str) -> str:
    from saverkit.train import saver as saver_mod  # noqa: PLC0415

    if global_step is not None:
        step = saver_mod._global_step_value(sess, global_step)
        return f"{save_path}-{step:08d}" if saver._pad_step_number else f"{save_path}-{step}"
    if os.path.basename(save_path) == latest_filename:
        raise ValueError(
            f"'latest_filename' collides with 'save_path': '{latest_filename}' and '{save_path}'")
    return save_path


def _part_prefix(part_dir: str, shard: int, num_shards: int) -> str:
    return os.path.join(part_dir, f"part-{shard:05d}-of-{num_shards:05d}")


# --- save
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
) -> str | None:
    """``Saver.save`` when the Saver has a coordinator (see the module docstring)."""
    coord: dist.Coordinator = saver._coordinator
    rank = coord.rank
    local: dict[str, Any] = {}

    def prepare() -> tuple:
        checkpoint_file = _checkpoint_file(saver, sess, save_path, global_step, latest_filename)
        names, tensors, slices, dts = _local_specs(saver)
        values = sess.run(list(tensors)) if tensors else []
        local["values"] = values
        entries = [_entry(n, d, v, s) for n, d, v, s in zip(names, dts, values, slices, strict=True)]
        part_dir = None
        if rank == 0:
            parent = os.path.dirname(save_path)
            if parent and not os.path.isdir(parent) and not os.path.isdir(os.path.dirname(parent) or "."):
                raise ValueError(f"Parent directory of {save_path} doesn't exist, can't save.")
            part_dir = f"{checkpoint_file}_temp_{uuid.uuid4().hex}"
            tempfiles.make_part_dir(_part_prefix(part_dir, 0, 1))  # with saverkit's marker, owned by rank 0
            local["part_dir"] = part_dir
        return checkpoint_file, entries, part_dir

    try:
        return _save(saver, sess, coord, prepare, local, latest_filename, meta_graph_suffix,
                     write_meta_graph, write_state, strip_default_attrs, durable)
    except BaseException:
        if rank == 0 and local.get("part_dir") and os.path.isdir(local["part_dir"]):
            tempfiles.remove_part_dir(local["part_dir"])
        raise
    finally:
        local.clear()  # the values: never kept past the save


def _save(saver, sess, coord, prepare, local, latest_filename, meta_graph_suffix, write_meta_graph,
          write_state, strip_default_attrs, durable) -> str | None:
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
    writers = [r for r in range(n) if writes[r]]
    if not writers:  # every rank's saver is empty (allow_empty=True)
        if rank == 0:
            tempfiles.remove_part_dir(part_dir)
        return None
    num_shards = len(writers)
    parts = [_part_prefix(part_dir, k, num_shards) for k in range(num_shards)]

    def write() -> None:
        mine = writes[rank]
        if not mine:
            return
        names, _, slices, dts = _local_specs(saver)
        values = local["values"]
        bundle.write_bundle(
            parts[writers.index(rank)],
            [names[i] for i in mine],
            [np.asarray(values[i]) for i in mine],
            [slices[i] for i in mine],
            [dts[i] for i in mine],
            durable=durable,
        )

    dist.run_everywhere(coord, write, "save (write)")
    local.pop("values", None)

    def commit() -> str:
        return _commit(saver, sess, parts, checkpoint_file, latest_filename, meta_graph_suffix,
                       write_meta_graph, write_state, strip_default_attrs, durable)

    path = dist.broadcast_result(coord, commit, "save (commit)")
    if rank != 0 and write_state:  # the same retention bookkeeping as rank 0 (which deleted the files)
        saver._RecordLastCheckpoint(path)
        saver._checkpoints_to_delete()
    return path


def _commit(saver, sess, parts, checkpoint_file, latest_filename, meta_graph_suffix, write_meta_graph,
            write_state, strip_default_attrs, durable) -> str:
    """Rank 0: merge the parts into the checkpoint, then .meta, state file and retention (Saver.save's
    order)."""
    from saverkit import _core  # noqa: PLC0415
    from saverkit.framework import ops  # noqa: PLC0415
    from saverkit.train import saver as saver_mod  # noqa: PLC0415

    _core.merge_bundles(parts, checkpoint_file, True, False, durable)
    tempfiles.remove_part_dir(os.path.dirname(parts[0]))
    if durable:
        saver_mod._fsync_checkpoint(checkpoint_file)
    save_dir = os.path.dirname(checkpoint_file)
    recorded = (list(saver._last_checkpoints), list(saver._checkpoints_to_be_deleted),
                saver._next_checkpoint_time)
    doomed: list[str] = []
    try:
        if write_meta_graph:
            meta_file = checkpoint_management.meta_graph_filename(checkpoint_file, meta_graph_suffix)
            graph = getattr(sess, "graph", None) or ops.get_default_graph()
            with graph.as_default():
                saver._export_meta_graph_file(meta_file, strip_default_attrs=strip_default_attrs,
                                              durable=durable)
        if write_state:
            saver._RecordLastCheckpoint(checkpoint_file)
            doomed = saver._checkpoints_to_delete()
            saver._update_state(save_dir, checkpoint_file, latest_filename, durable)
    except (errors.OpError, OSError):
        saver._last_checkpoints, saver._checkpoints_to_be_deleted, saver._next_checkpoint_time = recorded
        saver_mod._remove_unrecorded(checkpoint_file, meta_graph_suffix, save_dir, latest_filename,
                                     [p for p, _ in recorded[0]])
        raise
    if write_state:
        saver._delete_checkpoints(doomed, meta_graph_suffix, save_dir or ".")
    tempfiles.remove_stale(save_dir or ".")
    return checkpoint_file


# --- restore
def restore(saver: Any, sess: Any, prefix: str) -> None:
    """``Saver.restore`` when the Saver has a coordinator: rank 0 reads the index and broadcasts its
    entries; each rank checks and restores its own variables; a failure anywhere raises everywhere."""
    from saverkit.train import saver as saver_mod  # noqa: PLC0415

    coord: dist.Coordinator = saver._coordinator

    def read_index() -> dict:
        if not checkpoint_management.checkpoint_exists(prefix):
            raise saver_mod._missing_checkpoint_error(prefix)
        with bundle.BundleReader(prefix) as reader:
            return {k: (dt.as_datatype_enum, tuple(shape)) for k, (dt, shape) in reader.entries().items()}

    entries = dist.broadcast_result(coord, read_index, "restore (index)")

    def restore_here() -> None:
        if saver._is_empty:
            return
        names, tensors, slices, dts = _local_specs(saver)
        for name, tensor, spec, dt in zip(names, tensors, slices, dts, strict=True):
            key = name.decode() if isinstance(name, bytes) else str(name)
            found = entries.get(key)
            if found is None:
                raise errors.NotFoundError(None, None, f"Key {key} not found in checkpoint {prefix}")
            want = dtypes_lib.as_dtype(dt).base_dtype.as_datatype_enum
            if found[0] != want:
                raise errors.InvalidArgumentError(
                    None, None, f"Checkpoint {prefix} has {key} as {_describe(*found)}, the variable is "
                    f"{dtypes_lib.as_dtype(dt).base_dtype.name}")
            full = _parse_slice(spec)[0] if spec else _static_shape(tensor)
            if full is not None and tuple(full) != tuple(found[1]):
                raise errors.InvalidArgumentError(
                    None, None, f"Checkpoint {prefix} has {key} with shape {list(found[1])}, the variable "
                    f"{'is a slice of' if spec else 'has'} {list(full)}")
        try:
            sess.run(saver.saver_def.restore_op_name, {saver.saver_def.filename_tensor_name: prefix})
        except errors.InvalidArgumentError as err:
            raise saver_mod._wrap_restore_error_with_msg(
                err, "a mismatch between the current graph and the graph", "") from err

    dist.run_everywhere(coord, restore_here, "restore")


def _static_shape(tensor: Any) -> tuple | None:
    shape = getattr(tensor, "shape", None)
    with contextlib.suppress(Exception):
        dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
        if all(d is not None for d in dims):
            return tuple(int(d) for d in dims)
    return None

