"""`saverkit.train.Checkpoint`: object-based checkpoints, byte-compatible with `tf.train.Checkpoint`.

How values move (a design decision; the code is in `saverkit.train._variable_io`). Variables live in a
`Session`, so there are two ways to get their values to and from files:

1. graph I/O ops, as TF does: SaveV2 into `P_temp/part-00000-of-00001` then MergeV2Checkpoints into `P`;
   RestoreV2 then Assign;
2. the engine directly: fetch the values with `session.run`, write them with `saverkit.bundle`; read them
   with `saverkit.bundle` and feed them into the variables' existing initializer assigns.

We use (1) whenever the graph can still take new ops, building the ops once per set of variables and
caching them per graph, with the file paths and the serialized object graph fed through placeholders (so
a training loop that saves every N steps adds nothing after its first save). The kernels call the same
engine, but read the variables' buffers in place and RestoreV2 writes straight into them: no copy on the
way, which measured twice as fast as (2) for restoring 512 MiB. We fall back to (2) only for a finalized
graph (e.g. under a monitored session) where no cached op fits: it adds no op at all, which is where TF's
graph-mode `Checkpoint` gives up. Both paths write byte-identical files (tested).

Object graph, key scheme and node order follow TF (`saverkit.trackable`); the data file holds tensors in
node order with `_CHECKPOINTABLE_OBJECT_GRAPH` last.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from saverkit import errors, storage, tempfiles
from saverkit.protobuf import trackable_object_graph_pb2
from saverkit.trackable import (
    OBJECT_GRAPH_PROTO_KEY,
    VARIABLE_VALUE_KEY,
    AutoTrackable,
    Trackable,
    TrackableReference,
    breadth_first_traversal,
    checkpoint_key,
    is_trackable,
    is_variable,
    new_uid,
    object_path_to_string,
    slot_variable_key,
    slot_variables,
)
from saverkit.train import async_save
from saverkit.train._checkpoint_restore import (
    CheckpointLoadStatus,
    CheckpointPosition,
    InitializationOnlyStatus,
    NameBasedSaverStatus,
    _CheckpointRestoreCoordinator,
    _LoadStatus,
    _NameBasedRestoreCoordinator,
    _ValueSource,
    objects_and_paths,
    open_checkpoint,
    validate_object_graph,
)
from saverkit.train._variable_io import (
    assign_values,
    default_session,
    fetch_values,
    require_session,
    save_tensors,
    variable_name,
)
from saverkit.train.async_save import CheckpointOptions

if TYPE_CHECKING:
    from saverkit.framework.graph import Graph
    from saverkit.framework.session import Session
    from saverkit.framework.variables import Variable

__all__ = ["Checkpoint", "CheckpointLoadStatus", "InitializationOnlyStatus", "NameBasedSaverStatus"]


def serialize_object_graph(
    root: Any, attached_dependencies: Iterable[TrackableReference] = ()
) -> tuple[Any, list[tuple[str, Any]]]:
    """Build TF's TrackableObjectGraph for `root`.

    Returns (proto, [(checkpoint key, variable)] in node order).
    """
    objects, paths, children = breadth_first_traversal(root, attached_dependencies)
    node_ids = {id(o): i for i, o in enumerate(objects)}
    edges = [[node_ids[id(ref.ref)] for ref in refs] for refs in children]
    names = [object_path_to_string(r.name for r in paths[id(o)]) for o in objects]
    # Slot variables (optimizer state) become extra nodes after the others, referenced by their optimizer's
    # node rather than by an edge, and named after the variable they serve (TF's serialize_slot_variables).
    TrackableObject = trackable_object_graph_pb2.TrackableObjectGraph.TrackableObject  # noqa: N806
    slot_refs: dict[int, list] = {}
    for opt_index, var_index, slot_name, slot in slot_variables(objects[:]):
        if not is_variable(slot):
            raise NotImplementedError(f"Only variables can be saved as slot variables; got {slot!r}.")
        if id(slot) in node_ids:
            raise NotImplementedError(
                f"A slot variable was re-used as a dependency of a Trackable object: {slot!r}. This is not "
                "currently allowed."
            )
        node_ids[id(slot)] = len(objects)
        slot_refs.setdefault(opt_index, []).append(
            TrackableObject.SlotVariableReference(
                original_variable_node_id=var_index, slot_name=slot_name, slot_variable_node_id=len(objects)
            )
        )
        objects.append(slot)
        children.append([])
        edges.append([])
        names.append(slot_variable_key(names[var_index], names[opt_index], slot_name))
    has_values = _has_checkpoint_values(
        [is_variable(o) or i in slot_refs for i, o in enumerate(objects)], edges
    )
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    to_save = []
    ObjectReference = TrackableObject.ObjectReference  # noqa: N806
    for index, (obj, refs, ids, flag) in enumerate(zip(objects, children, edges, has_values, strict=True)):
        node = graph.nodes.add()
        node.children.extend(
            ObjectReference(node_id=i, local_name=r.name) for i, r in zip(ids, refs, strict=True)
        )
        node.slot_variables.extend(slot_refs.get(index, ()))
        if is_variable(obj):
            key = checkpoint_key(names[index], VARIABLE_VALUE_KEY)
            node.attributes.add(name=VARIABLE_VALUE_KEY, full_name=variable_name(obj), checkpoint_key=key)
            to_save.append((key, obj))
        node.has_checkpoint_values.value = flag
    return graph, to_save


def _has_checkpoint_values(has_attributes: list[bool], edges: list[list[int]]) -> list[bool]:
    """TF's `has_checkpoint_values`: a node has values if it or any descendant has attributes."""
    parents: list[list[int]] = [[] for _ in edges]
    for node_id, children in enumerate(edges):
        for child in children:
            parents[child].append(node_id)
    marked = list(has_attributes)
    queue = [i for i, m in enumerate(marked) if m]
    while queue:
        for parent in parents[queue.pop()]:
            if not marked[parent]:
                marked[parent] = True
                queue.append(parent)
    return marked


def write_object_checkpoint(
    file_prefix: str, session: Session, root: Any, attached_dependencies: Iterable[TrackableReference] = (),
    storage_options: dict | None = None,
) -> str:
    """Write `root`'s object graph and variable values to `file_prefix` the way TF2 does."""
    return stage_object_checkpoint(file_prefix, session, root, attached_dependencies, storage_options)()


def stage_object_checkpoint(
    file_prefix: str,
    session: Session,
    root: Any,
    attached_dependencies: Iterable[TrackableReference] = (),
    storage_options: dict | None = None,
    snapshot: async_save.Snapshot | None = None,
) -> Callable[[], str]:
    """Run the save of `root` (see `write_object_checkpoint`); return what completes it.

    Without `snapshot` the files are written here and the returned function only cleans up. With one (an
    asynchronous save, `saverkit.train.async_save`), the values are only copied into the snapshot: the
    returned function (called by the background thread) writes them.
    """
    graph, to_save = serialize_object_graph(root, attached_dependencies)
    if storage.is_url(file_prefix):  # a store: no part to merge, nothing to rename (saverkit.storage)
        save_tensors(session, file_prefix, None, [v for _, v in to_save], [k for k, _ in to_save],
                     {OBJECT_GRAPH_PROTO_KEY: graph.SerializeToString()}, storage_options=storage_options,
                     snapshot=snapshot)

        def uploaded() -> str:
            if snapshot is not None:
                snapshot.replay()
            return file_prefix

        return uploaded
    file_prefix = storage.local_path(file_prefix)
    directory = os.path.dirname(file_prefix)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # TF2 always saves through a temporary single-shard part and merges it into place. A unique, marked
    # part directory (saverkit.tempfiles): never a user's own "<prefix>_temp" folder.
    temp_dir = f"{file_prefix}_temp_{uuid.uuid4().hex}"
    part = os.path.join(temp_dir, "part-00000-of-00001")

    def attempt(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException:
            tempfiles.remove_part_dir(temp_dir)  # only this save's files, and the directory if then empty
            raise

    attempt(
        lambda: save_tensors(
            session,
            file_prefix,
            part,
            [v for _, v in to_save],
            [k for k, _ in to_save],
            {OBJECT_GRAPH_PROTO_KEY: graph.SerializeToString()},
            snapshot=snapshot,
        )
    )

    def complete() -> str:
        if snapshot is not None:
            attempt(snapshot.replay)
        tempfiles.remove_stale(directory or ".")  # what killed earlier saves left behind
        return file_prefix

    return complete


def _session_and_options(session: Any, options: Any) -> tuple[Any, Any]:
    """TF's signatures take `options` second (`ckpt.save(prefix, options)`); ours take the session there."""
    if options is None and isinstance(session, CheckpointOptions):
        return None, session
    return session, options


class _GraphView:
    """What a Checkpoint saves: a root plus extra root children (TF's ObjectGraphView)."""

    def __init__(self, root: Any, attached: list | None) -> None:
        self.root = root
        self._attached = attached

    def attached_dependencies(self) -> list[TrackableReference]:
        return list(self._attached or ())


class Checkpoint(AutoTrackable):
    """Groups trackable objects (variables, Modules, containers of them) to save and restore together.

    >>> ckpt = saverkit.train.Checkpoint(model=model, step=step)
    >>> path = ckpt.save("/tmp/train/ckpt", session=sess)     # /tmp/train/ckpt-1, updates the state file
    >>> ckpt.restore(path, session=sess).assert_consumed()

    Checkpoints use TF's object-based format: `tf.train.Checkpoint(model=..., step=...)` over an equivalent
    `tf.Module` tree reads them, and this class reads TF's. Restoring a name-based checkpoint (TF1 `Saver`)
    matches variables by graph name instead, with a warning; see `NameBasedSaverStatus`.

    Every `session` argument defaults to the default session (`saverkit.get_default_session()`).
    """

    # Set in __init__ with object.__setattr__ (not tracked as dependencies).
    _root: Any
    _save_counter: Any  # a Variable; None until created (_maybe_create_save_counter)
    _attached: list[TrackableReference] | None
    _graph_view: _GraphView

    def __init__(self, root: Any = None, **kwargs: Any) -> None:
        super().__init__()
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_save_counter", None)  # created lazily, so that restore can fill it in
        attached = None
        if root is not None:
            if not is_trackable(root):
                raise ValueError(f"`Checkpoint` was expecting root to be a trackable object; got {root!r}.")
            attached = []
            kwargs["root"] = root
            if isinstance(root, Trackable):
                object.__setattr__(self, "_save_counter", root._lookup_dependency("save_counter"))
        for name, value in sorted(kwargs.items(), key=lambda item: item[0]):
            setattr(self, name, value)
            converted = getattr(self, name)
            if not is_trackable(converted):
                raise ValueError(
                    f"`Checkpoint` was expecting {name} to be a trackable object (an object derived from "
                    f"Trackable, a variable, or a list/dict/tuple of them); got {value!r}."
                )
            if root is not None:
                child = root._lookup_dependency(name) if isinstance(root, Trackable) else None
                if child is None:
                    attached.append(TrackableReference(name, converted))
                elif child is not converted:
                    raise ValueError(
                        f"Cannot create a Checkpoint with keyword argument {name} if root.{name} "
                        "already exists."
                    )
        object.__setattr__(self, "_attached", attached)
        object.__setattr__(self, "_graph_view", _GraphView(root if root is not None else self, attached))

    # -- save counter ---------------------------------------------------------------------------------

    def _maybe_create_save_counter(self, graph: Graph | None = None) -> bool:
        """Create the int64 `save_counter` variable if needed; return True if it was just created."""
        if self._save_counter is not None:
            return False
        from saverkit import Variable, dtypes, get_default_graph

        if graph is None:  # next to the checkpointed variables, else in the default graph
            graph = self._objects_graph() or get_default_graph()
        # Outside the caller's name scope and control dependencies (TF: init_scope), like TF's counter.
        with graph.as_default(), graph.name_scope(None), graph.control_dependencies(None):
            counter = Variable(0, name="save_counter", dtype=dtypes.int64, trainable=False)
        object.__setattr__(self, "_save_counter", counter)
        if self._attached is None:
            # Tracked as a child of the checkpoint; a pending restore of "save_counter" fills it in.
            self._track_trackable(counter, "save_counter")
        else:
            self._attached.append(TrackableReference("save_counter", counter))
            root = self._root
            if isinstance(root, Trackable):
                for position in root._deferred_dependencies.pop("save_counter", ())[:1]:
                    position.restore(counter)
        return True

    def _objects_graph(self) -> Graph | None:
        """The graph of the first checkpointed variable (where a new save_counter belongs), if any."""
        view = self._graph_view
        objects, _, _ = breadth_first_traversal(view.root, view.attached_dependencies())
        return next((o.graph for o in objects if is_variable(o)), None)

    @property
    def save_counter(self) -> Variable:
        """An int64 variable counting `save()` calls, used to number checkpoints (created on first use)."""
        self._maybe_create_save_counter()
        return self._save_counter

    # -- for CheckpointManager and saves coordinated over ranks (train/distributed_save.py); not TF's API

    def next_checkpoint_number(self, session: Session) -> int:
        """Increment `save_counter` in `session` (creating and initializing it if needed) and return its new
        value: the number `save()` gives the checkpoint it writes, and CheckpointManager's by default."""
        if self._maybe_create_save_counter(session.graph):
            session.run(self._save_counter.initializer)
        counter = self._save_counter
        try:
            (value,) = fetch_values(session, [counter])
        except errors.FailedPreconditionError:
            # Created by restore() but neither restored nor initialized: start counting from zero.
            session.run(counter.initializer)
            (value,) = fetch_values(session, [counter])
        number = int(value) + 1
        assign_values(session, [(counter, np.asarray(number, dtype=np.int64))])
        return number

    def object_graph_to_save(self) -> tuple[Any, list[tuple[str, Any]]]:
        """What a save writes now: TF's TrackableObjectGraph of the checkpointed objects and their
        (checkpoint key, variable) pairs in node order (see `serialize_object_graph`)."""
        view = self._graph_view
        return serialize_object_graph(view.root, view.attached_dependencies())

    # -- writing --------------------------------------------------------------------------------------

    def write(
        self,
        file_prefix: str | os.PathLike,
        session: Session | None = None,
        options: CheckpointOptions | None = None,
        *,
        storage_options: dict | None = None,
    ) -> str:
        """Write a checkpoint to exactly `file_prefix`: no numbering, no state file (read it with `read`).
        `file_prefix` may be a URL (saverkit.storage; `storage_options` for its store).

        `options=CheckpointOptions(enable_async=True)`: return once the values are copied and write in the
        background (`sync()` waits; see `saverkit.train.async_save`), to a URL too."""
        session, options = _session_and_options(session, options)
        return self.write_then(
            os.fspath(file_prefix), require_session(session, "Checkpoint.write()"), options,
            storage_options=storage_options,
        )

    def write_then(
        self,
        file_prefix: str,
        session: Session,
        options: Any,
        after: Callable[[], Any] | None = None,
        storage_options: dict | None = None,
    ) -> str:
        """`write()`, then call `after()` once the files are complete (in the background for an asynchronous
        save): how `save()` and CheckpointManager record a new checkpoint in the state file."""
        view = self._graph_view
        if not async_save.is_async(options):
            async_save.before_sync_save(self)
            write_object_checkpoint(
                file_prefix, session, view.root, view.attached_dependencies(), storage_options=storage_options
            )
            if after is not None:
                after()
            return file_prefix

        def stage(snapshot: async_save.Snapshot) -> Callable[[], str]:
            return stage_object_checkpoint(
                file_prefix, session, view.root, view.attached_dependencies(),
                storage_options=storage_options, snapshot=snapshot,
            )

        async_save.checkpoint_write(self, stage, options, file_prefix, after)
        return file_prefix

    def save(
        self,
        file_prefix: str | os.PathLike,
        session: Session | None = None,
        options: CheckpointOptions | None = None,
        *,
        storage_options: dict | None = None,
    ) -> str:
        """Increment `save_counter`, write `file_prefix-<counter>`, record it in the directory state file.

        `options=CheckpointOptions(enable_async=True)`: return once the values are copied; the write and
        then the state file complete in the background (`sync()` waits)."""
        from saverkit.train import checkpoint_management

        file_prefix = os.fspath(file_prefix)
        session, options = _session_and_options(session, options)
        session = require_session(session, "Checkpoint.save()")
        async_save.sync(self)  # the previous save completes (or raises) before the counter moves
        number = self.next_checkpoint_number(session)
        path = f"{file_prefix}-{number}"

        def record_state() -> None:
            checkpoint_management.update_checkpoint_state_internal(
                save_dir=storage.dirname(path),
                model_checkpoint_path=path,
                all_model_checkpoint_paths=[path],
                save_relative_paths=True,
                storage_options=storage_options,
            )

        return self.write_then(path, session, options, after=record_state, storage_options=storage_options)

    def sync(self) -> None:
        """Wait for this Checkpoint's asynchronous save in flight; raise its error if it failed."""
        async_save.sync(self)

    # -- reading --------------------------------------------------------------------------------------

    def read(
        self,
        save_path: str | os.PathLike | None,
        session: Session | None = None,
        options: CheckpointOptions | None = None,
        *,
        storage_options: dict | None = None,
    ) -> _LoadStatus:
        """Restore a checkpoint written by `write` (does not expect a `save_counter`); see `restore`."""
        session, _ = _session_and_options(session, options)
        async_save.wait_for(self)  # an asynchronous save in flight completes first
        view = self._graph_view
        if save_path is None:
            return InitializationOnlyStatus(view, new_uid())
        save_path = os.fspath(save_path)
        explicit = session is not None
        if session is None:
            session = default_session()
        try:
            source = open_checkpoint(save_path, storage_options)
        except errors.NotFoundError as e:
            raise errors.NotFoundError(
                None,
                None,
                f"Error when restoring from checkpoint {save_path}: {e.message}\nPlease double-check that "
                "the path is correct. You may be missing the checkpoint suffix (e.g. the '-1' in "
                "'path/to/ckpt-1').",
            ) from e
        if not source.has_tensor(OBJECT_GRAPH_PROTO_KEY):
            return self._restore_name_based(source, session, explicit)
        (graph_bytes,) = source.read([OBJECT_GRAPH_PROTO_KEY])
        proto = trackable_object_graph_pb2.TrackableObjectGraph()
        try:
            proto.ParseFromString(bytes(np.asarray(graph_bytes, dtype=object).reshape(()).item()))
        except Exception as e:
            raise errors.DataLossError(
                None,
                None,
                f"{save_path}: the {OBJECT_GRAPH_PROTO_KEY} entry is not a TrackableObjectGraph ({e})",
            ) from e
        validate_object_graph(proto, save_path)
        coordinator = _CheckpointRestoreCoordinator(proto, source, session, explicit)
        CheckpointPosition(coordinator, 0).restore(view.root)
        # Attached dependencies (Checkpoint(root=..., **kwargs)) are not children of root: restore them here.
        for ref in view.attached_dependencies():
            if ref.name == "root":
                continue
            proto_id = next((c.node_id for c in proto.nodes[0].children if c.local_name == ref.name), None)
            if proto_id is None or proto_id in coordinator.object_by_proto_id:
                continue
            CheckpointPosition(coordinator, proto_id).restore(ref.ref)
        return CheckpointLoadStatus(coordinator, view)

    def restore(
        self,
        save_path: str | os.PathLike | None,
        session: Session | None = None,
        options: CheckpointOptions | None = None,
        *,
        storage_options: dict | None = None,
    ) -> _LoadStatus:
        """Restore a checkpoint written by `save` (or by TF), matching objects by their dependency names.

        Existing objects get their values now if a session is available (`session` or the default one);
        objects attached later under a name the checkpoint knows get theirs when they are attached
        (deferred restoration). Without a session, values are assigned by `status.run_restore_ops(sess)`
        or `status.initialize_or_restore(sess)`.

        Returns a `CheckpointLoadStatus` (`assert_consumed()`, `assert_existing_objects_matched()`,
        `assert_nontrivial_match()`, `expect_partial()`, `run_restore_ops()`, `initialize_or_restore()`),
        an `InitializationOnlyStatus` if `save_path` is None, or a `NameBasedSaverStatus` for a
        checkpoint written by a name-based `Saver`.
        """
        session, _ = _session_and_options(session, options)
        status = self.read(save_path, session=session, storage_options=storage_options)
        try:
            self._maybe_create_save_counter(session.graph if session is not None else None)
        except RuntimeError:
            pass  # finalized graph: created (and filled from the deferred restore) on first save
        if isinstance(status, NameBasedSaverStatus) and self._save_counter is not None:
            status.add_to_optionally_restored(self._save_counter)
        return status

    def _restore_name_based(
        self, source: _ValueSource, session: Session | None, explicit: bool
    ) -> NameBasedSaverStatus:
        coordinator = _NameBasedRestoreCoordinator(source, session, explicit)
        objects, _ = objects_and_paths(self._graph_view)
        coordinator.restore_objects(objects)
        status = NameBasedSaverStatus(coordinator, self._graph_view)
        if self._save_counter is not None:
            # Checkpoint bookkeeping that a name-based Saver never writes: not a mismatch.
            status.add_to_optionally_restored(self._save_counter)
        unmatched = status.unmatched
        warnings.warn(
            f"Restoring the name-based checkpoint {source.save_path} (written by a TF1-style Saver, it "
            f"has no object graph) by matching variable names: {len(coordinator.matched)} variables matched, "
            f"{len(unmatched)} not found ({unmatched[:10]}). Re-save it with Checkpoint.save to get an "
            "object-based checkpoint.",
            stacklevel=3,
        )
        return status

