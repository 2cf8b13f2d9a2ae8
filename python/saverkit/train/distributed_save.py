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

A restore lists the index on rank 0 and broadcasts its entries (key -> dtype, shape), so that a missing
checkpoint or key is one error raised on every rank; each rank checks its own variables against them and
restores only them (its ``RestoreV2``, with its keys and slices, opens the index again and reads just
those tensors' bytes). Slices make the world size free: 4 ranks that each saved one slice of a
partitioned variable can be restored by 2 ranks with 2-slice parts, or by one plain ``Saver``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
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

    def checkpoint_file(self) -> str:
        raise NotImplementedError

    def entries(self) -> list[tuple]:
        """This rank's plan entries: (key, dtype enum, full shape, slice spec) per tensor."""
        raise NotImplementedError

    def write(self, part: str, mine: list[int], extra: tuple, durable: bool) -> None:
        """Writes entries ``mine`` (indices into entries()) and the ``extra`` columns into ``part``."""
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


# --- save: Saver
class _SaverJob(_Job):
    def __init__(self, saver: Any, sess: Any, save_path: str, global_step: Any, latest_filename: str,
                 meta_graph_suffix: str, write_meta_graph: bool, write_state: bool, strip_default_attrs: bool,
                 durable: bool) -> None:
        self.saver, self.sess, self.save_path, self.global_step = saver, sess, save_path, global_step
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
            self.values = dict(zip(unknown, self.sess.run([tensors[i] for i in unknown]), strict=True))
            for i in unknown:
                shapes[i] = tuple(np.shape(self.values[i]))
        return [(_key(n), dtypes_lib.as_dtype(d).base_dtype.as_datatype_enum, tuple(shape or ()), s)
                for n, d, shape, s in zip(names, dts, shapes, slices, strict=True)]

    def write(self, part: str, mine: list[int], extra: tuple, durable: bool) -> None:
        names, tensors, slices, dts = _local_specs(self.saver)
        saver_def = self.saver.saver_def
        if len(mine) == len(names) and not self.saver.sharded and saver_def is not None:
            # This rank writes all its variables: the Saver's own SaveV2, which reads them in place.
            from saverkit.framework.run_options import RunOptions  # noqa: PLC0415

            self.sess.run(saver_def.save_tensor_name, {saver_def.filename_tensor_name: part},
                          options=RunOptions(durable=True) if durable else None)
            return
        have = getattr(self, "values", {})
        missing = [i for i in mine if i not in have]
        fetched = dict(zip(missing, self.sess.run([tensors[i] for i in missing]), strict=True)) \
            if missing else {}
        bundle.write_bundle(part, [names[i] for i in mine],
                            [np.asarray(have[i] if i in have else fetched[i]) for i in mine],
                            [slices[i] for i in mine], [dts[i] for i in mine], durable=durable)

    def release(self) -> None:
        self.values = {}

    def check_parent(self, checkpoint_file: str) -> None:
        parent = os.path.dirname(self.save_path)
        if parent and not os.path.isdir(parent) and not os.path.isdir(os.path.dirname(parent) or "."):
            raise ValueError(f"Parent directory of {self.save_path} doesn't exist, can't save.")

    def commit(self, checkpoint_file: str) -> None:
        self.saver.commit_merged(self.sess, checkpoint_file, self.latest_filename, self.meta_graph_suffix,
                                 self.write_meta_graph, self.write_state, self.strip_default_attrs,
                                 self.durable)

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
) -> str | None:
    """``Saver.save`` when the Saver has a coordinator (see the module docstring)."""
    job = _SaverJob(saver, sess, save_path, global_step, latest_filename, meta_graph_suffix,
                    write_meta_graph, write_state, strip_default_attrs, durable)
    return run_save(saver.coordinator, job, durable)


# --- save: object-based (Checkpoint / CheckpointManager)
class _ObjectJob(_Job):
    rank0_extra = True

    def __init__(self, checkpoint: Any, prefix: str, session: Any, commit: Callable[[str], Any] | None,
                 committed: Callable[[str], Any] | None) -> None:
        self.checkpoint, self.prefix, self.session = checkpoint, prefix, session
        self._commit, self._committed = commit, committed
        self.graph: Any = None

    def checkpoint_file(self) -> str:
        return self.prefix

    def entries(self) -> list[tuple]:
        from saverkit.train import _variable_io  # noqa: PLC0415

        self.graph, to_save = self.checkpoint.object_graph_to_save()
        variables = [v for _, v in to_save]
        self.names = [k for k, _ in to_save]
        self.values = _variable_io.fetch_values(self.session, variables)
        self.dtypes = [v.dtype.base_dtype for v in variables]
        return [_entry(n, d, v, "") for n, d, v in zip(self.names, self.dtypes, self.values, strict=True)]

    def write(self, part: str, mine: list[int], extra: tuple, durable: bool) -> None:
        names, values, slices, dts = extra
        bundle.write_bundle(part, [self.names[i] for i in mine] + list(names),
                            [np.asarray(self.values[i]) for i in mine] + list(values),
                            [""] * len(mine) + list(slices), [self.dtypes[i] for i in mine] + list(dts),
                            durable=durable)

    def release(self) -> None:
        self.values = []

    def extra(self) -> bytes:
        return self.graph.SerializeToString()

    def rank0_tensors(self, extras: list) -> tuple[list, list, list, list]:
        from saverkit.trackable import OBJECT_GRAPH_PROTO_KEY  # noqa: PLC0415

        merged = merge_object_graphs(extras)
        return [OBJECT_GRAPH_PROTO_KEY], [np.array(merged, dtype=object)], [""], [dtypes_lib.string]

    def check_parent(self, checkpoint_file: str) -> None:
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
                            committed: Callable[[str], Any] | None = None) -> str | None:
    """``Checkpoint.write`` of every rank's objects into ONE object-based checkpoint at ``prefix``.

    The ranks' object graphs are merged by object path (a node is the same object on every rank that
    reaches it by the same path; variables with the same key are replicas, written once); ``commit``
    runs on rank 0 after the merge (the state file), ``committed`` on the others afterwards."""
    return run_save(coord, _ObjectJob(checkpoint, prefix, session, commit, committed), durable=False)


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
def restore(saver: Any, sess: Any, prefix: str) -> None:
    """``Saver.restore`` when the Saver has a coordinator: rank 0 reads the index and broadcasts its
    entries; each rank checks and restores its own variables; a failure anywhere raises everywhere."""
    from saverkit.train import saver as saver_mod  # noqa: PLC0415

    coord: dist.Coordinator = saver.coordinator

    def read_index() -> dict:
        if not checkpoint_management.checkpoint_exists(prefix):
            raise saver_mod.missing_checkpoint_error(prefix)
        with bundle.BundleReader(prefix) as reader:
            return {k: (dt.as_datatype_enum, tuple(shape)) for k, (dt, shape) in reader.entries().items()}

    entries = dist.broadcast_result(coord, read_index, "restore (index)")

    def restore_here() -> None:
        specs = saver.save_specs()
        if specs is None:  # a Saver without variables (allow_empty=True)
            return
        names, tensors, slices, dts = specs
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
        saver.run_restore_op(sess, prefix)

    dist.run_everywhere(coord, restore_here, "restore")


def _static_shape(tensor: Any) -> tuple | None:
    shape: Any = getattr(tensor, "shape", None)
    with contextlib.suppress(Exception):
        dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
        if all(d is not None for d in dims):
            return tuple(int(d) for d in dims)
    return None

