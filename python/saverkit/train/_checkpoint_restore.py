"""Restoring object-based checkpoints: matching the checkpoint's object graph to Python objects.

Follows TF's `tensorflow/python/checkpoint/restore.py` and the load statuses of `checkpoint.py`: the
checkpoint's TrackableObjectGraph is walked from the root alongside the Python objects; a node whose object
does not exist yet is queued on its parent under its local name and restored when an object is attached
under that name (deferred restoration). Name-based checkpoints (no object graph) match variables by their
graph names instead.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from saverkit import errors
from saverkit.trackable import (
    VARIABLE_VALUE_KEY,
    Trackable,
    breadth_first_traversal,
    get_update_uid,
    has_slots,
    is_variable,
    new_uid,
    set_update_uid,
    slot_variables,
)
from saverkit.train._variable_io import (
    check_compatible,
    default_session,
    require_session,
    restore_tensors,
    variable_name,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from saverkit.framework.session import Session


def _node_names(object_graph_proto: Any) -> dict[int, str]:
    """Readable paths ("(root).model.layers.0") of every node, for error messages (as TF prints them)."""
    names: dict[int, tuple[str, ...]] = {0: ("(root)",)}
    queue = [0]
    for node_id in queue:
        for child in object_graph_proto.nodes[node_id].children:
            if child.node_id not in names:
                names[child.node_id] = names[node_id] + (child.local_name,)
                queue.append(child.node_id)
    result = {i: ".".join(p) for i, p in names.items()}
    for node_id, node in enumerate(object_graph_proto.nodes):
        for slot in node.slot_variables:
            result[slot.slot_variable_node_id] = (
                f"{result.get(node_id, node_id)}'s state {slot.slot_name!r} for "
                f"{result.get(slot.original_variable_node_id, slot.original_variable_node_id)}"
            )
    return result


class _ValueSource:
    """Where restored values come from: a checkpoint's prefix and its table of contents.

    No file stays open: restores can wait for objects that are never attached (a partial restore), and
    each would otherwise hold the checkpoint's files open for as long as the objects live.
    """

    def __init__(self, save_path: str, storage_options: dict | None = None):
        from saverkit import bundle

        self.storage_options = storage_options  # a URL's store (saverkit.storage)
        with bundle.BundleReader(save_path, storage_options) as reader:
            self.prefix = reader.prefix
            entries = reader.entries()
        self.save_path = self.prefix
        self.dtype_map = {k: dt for k, (dt, _) in entries.items()}
        self.shape_map = {k: shape for k, (_, shape) in entries.items()}

    def has_tensor(self, key: str) -> bool:
        return key in self.dtype_map

    def read(self, keys: list[str], specs: list[str] | None = None) -> list[np.ndarray]:
        from saverkit import bundle

        with bundle.BundleReader(self.prefix, self.storage_options) as reader:
            return reader.read_many(keys, specs)


class _Assigner:
    """Restorations (variable <- checkpoint key) of one restore call: pending until a session runs them."""

    def __init__(self, source: _ValueSource, session: Any, explicit: bool) -> None:
        self.source = source
        self.session = session  # the session restore() ran with (or None): deferred matches assign there
        self.explicit = explicit  # passed by the caller, rather than the default session at restore time
        self.bound: list[tuple[Any, str, str]] = []  # every (variable, key, slice spec) matched, in order
        self.pending: list[tuple[Any, str, str]] = []  # matched but not yet assigned

    def add(self, var: Any, key: str, spec: str = "", slice_shape: Any = None) -> None:
        """Match `var` with tensor `key` (or the slice `spec` of it, whose shape is `slice_shape`)."""
        source = self.source
        if key not in source.dtype_map:
            raise errors.NotFoundError(
                None, None, f"Checkpoint {source.save_path} has no tensor {key!r} (needed for {var.name!r})"
            )
        shape = source.shape_map[key] if slice_shape is None else slice_shape
        check_compatible(var, key, source.dtype_map[key], shape, source.save_path)
        self.bound.append((var, key, spec))
        self.pending.append((var, key, spec))

    def flush(self) -> None:
        """Assign pending values now if restore() had a session that can still run them."""
        if not self.pending or self.session is None or getattr(self.session, "_closed", False):
            return
        pending = self.pending
        if not self.explicit:
            # The default session of another graph is not a session for these variables: wait for
            # run_restore_ops(). A session passed explicitly must fit (run() raises otherwise).
            pending = [t for t in pending if t[0].graph is self.session.graph]
        if pending:
            self.run(self.session, pending)

    def pick_session(self, session: Any, what: str) -> Any:
        """`session`, else the default session, else the one restore() ran with: the first open one on
        the graph of the matched variables."""
        if session is not None:
            return session
        graph = self.bound[0][0].graph if self.bound else None
        for candidate in (default_session(), self.session):
            if candidate is not None and not getattr(candidate, "_closed", False):
                if graph is None or candidate.graph is graph:
                    return candidate
        return require_session(None, what)

    def run(self, session: Any, triples: Any) -> None:
        restore_tensors(session, self.source, triples)
        done = {id(v) for v, _, _ in triples}
        self.pending = [t for t in self.pending if id(t[0]) not in done]


class _CheckpointRestoreCoordinator:
    """State of one object-based restore: which proto node is bound to which Python object, and so on."""

    def __init__(self, object_graph_proto: Any, source: _ValueSource, session: Any, explicit: bool) -> None:
        self.object_graph_proto = object_graph_proto
        self.save_path = source.save_path
        self.restore_uid = new_uid()
        self.object_by_proto_id: dict[int, object] = {}
        self.unused_attributes: dict[int, list[str]] = {}
        self.variables_without_value: dict[int, object] = {}
        self.assigner = _Assigner(source, session, explicit)
        self.expect_partial = False
        # Slot variables by the node of the variable they serve: (optimizer node, slot node, slot name).
        self.slot_restorations: dict[int, list[tuple[int, int, str]]] = {}
        for node_id, node in enumerate(object_graph_proto.nodes):
            for slot in node.slot_variables:
                self.slot_restorations.setdefault(slot.original_variable_node_id, []).append(
                    (node_id, slot.slot_variable_node_id, slot.slot_name)
                )
        # Slots whose variable was matched before their optimizer: optimizer node -> (variable, slot, name).
        self.deferred_slot_restorations: dict[int, list[tuple[object, int, str]]] = {}


class CheckpointPosition:
    """A node of the checkpoint's object graph, and the logic that restores it into a Python object."""

    def __init__(self, checkpoint: _CheckpointRestoreCoordinator, proto_id: int):
        self.checkpoint = checkpoint
        self.proto_id = proto_id

    @property
    def restore_uid(self) -> int:
        return self.checkpoint.restore_uid

    @property
    def object_proto(self) -> Any:
        return self.checkpoint.object_graph_proto.nodes[self.proto_id]

    def restore(self, trackable: Any) -> None:
        """Bind `trackable` to this node, match its descendants (deferring missing ones), assign values."""
        if self.bind_object(trackable):
            self._restore_descendants()
        self.checkpoint.assigner.flush()

    def bind_object(self, trackable: Any) -> bool:
        checkpoint = self.checkpoint
        current = checkpoint.object_by_proto_id.get(self.proto_id)
        if current is None:
            checkpoint.object_by_proto_id[self.proto_id] = trackable
            return True
        if current is not trackable:
            warnings.warn(
                "Inconsistent references when loading the checkpoint into this object graph: one object in "
                "the checkpoint corresponds to two different objects here "
                f"({current!r} and {trackable!r}); only the first is restored.",
                stacklevel=3,
            )
        return False

    def _restore_descendants(self) -> None:
        queue = [(self, self.checkpoint.object_by_proto_id[self.proto_id])]
        for position, obj in queue:
            position.single_restore(obj)
            queue.extend(position.children_to_restore(obj))
            queue.extend(position.slot_variables_to_restore(obj))

    # The steps of _restore_descendants, which runs them on the positions it reaches: single_restore, then
    # children_to_restore and slot_variables_to_restore return the (position, object) pairs to visit next.
    def single_restore(self, obj: Any) -> None:
        """Queue `obj`'s own value (a variable's VARIABLE_VALUE) for assignment, once per restore."""
        checkpoint = self.checkpoint
        if get_update_uid(obj) >= checkpoint.restore_uid:
            return  # already restored by this restore or a newer one
        set_update_uid(obj, checkpoint.restore_uid)
        attributes = self.object_proto.attributes
        if is_variable(obj):
            value = [a for a in attributes if a.name == VARIABLE_VALUE_KEY]
            if value:
                checkpoint.assigner.add(obj, value[0].checkpoint_key)
            else:
                checkpoint.variables_without_value[self.proto_id] = obj
            others = [a.name for a in attributes if a.name != VARIABLE_VALUE_KEY]
        else:
            others = [a.name for a in attributes]
        if others:
            checkpoint.unused_attributes.setdefault(self.proto_id, []).extend(others)

    def slot_variables_to_restore(self, obj: Any) -> Any:
        """Slot variables this node's object unlocks (TF's _queue_slot_variables): as an optimizer, the slots
        of variables matched before it; as a variable, its slots in optimizers matched already."""
        checkpoint = self.checkpoint
        found = []
        for original, slot_id, slot_name in checkpoint.deferred_slot_restorations.pop(self.proto_id, ()):
            found.extend(self._slot_position(obj, original, slot_id, slot_name))
        for optimizer_id, slot_id, slot_name in checkpoint.slot_restorations.pop(self.proto_id, ()):
            optimizer = checkpoint.object_by_proto_id.get(optimizer_id)
            if optimizer is None:  # not matched (yet): wait for it
                checkpoint.deferred_slot_restorations.setdefault(optimizer_id, []).append(
                    (obj, slot_id, slot_name)
                )
            else:
                optimizer_position = CheckpointPosition(checkpoint, optimizer_id)
                found.extend(optimizer_position._slot_position(optimizer, obj, slot_id, slot_name))
        return found

    def _slot_position(self, optimizer: Any, original: Any, slot_id: int, slot_name: str) -> Any:
        if not has_slots(optimizer):
            return []  # e.g. a plain Trackable standing in for the optimizer's other state
        position = CheckpointPosition(self.checkpoint, slot_id)
        slot = optimizer.get_slot(original, slot_name)
        if slot is None:
            defer = getattr(optimizer, "_defer_slot_restoration", None)
            if defer is not None:
                defer(original, slot_name, position)  # restored when the slot is added
            return []
        return [(position, slot)] if position.bind_object(slot) else []

    def children_to_restore(self, obj: Any) -> Any:
        """`obj`'s children that this node's children bind to; missing ones wait on `obj` (deferred)."""
        checkpoint = self.checkpoint
        if not isinstance(obj, Trackable):
            return []
        children = obj._trackable_children()
        found = []
        for child in self.object_proto.children:
            if child.node_id in checkpoint.object_by_proto_id:
                continue
            position = CheckpointPosition(checkpoint, child.node_id)
            local = children.get(child.local_name)
            if local is None:
                proto = position.object_proto
                if proto.HasField("has_checkpoint_values"):
                    has_value = proto.has_checkpoint_values.value
                else:
                    has_value = bool(proto.children or proto.attributes or proto.slot_variables)
                if has_value:  # restore when an object is attached under this name (deferred restoration)
                    obj._deferred_dependencies.setdefault(child.local_name, []).append(position)
            elif position.bind_object(local):
                found.append((position, local))
        return found


class _LoadStatus:
    """Common interface of the objects `Checkpoint.restore` returns."""

    def assert_consumed(self) -> Self:
        raise NotImplementedError

    def assert_existing_objects_matched(self) -> Self:
        raise NotImplementedError

    def assert_nontrivial_match(self) -> Self:
        raise NotImplementedError

    def run_restore_ops(self, session: Session | None = None) -> Any:
        raise NotImplementedError

    def initialize_or_restore(self, session: Session | None = None) -> Self:
        raise NotImplementedError

    def expect_partial(self) -> Self:
        return self


def objects_and_paths(graph_view: Any) -> Any:
    """Every object a save would write, slot variables included (TF's list_objects), with readable paths."""
    objects, paths, _ = breadth_first_traversal(graph_view.root, graph_view.attached_dependencies())
    names = {
        id(o): "(root)." + ".".join(r.name for r in paths[id(o)]) if paths[id(o)] else "(root)"
        for o in objects
    }
    for opt_index, var_index, slot_name, slot in slot_variables(objects[:]):
        if id(slot) not in names:
            objects.append(slot)
            names[id(slot)] = (
                f"{names[id(objects[opt_index])]}'s state {slot_name!r} for {names[id(objects[var_index])]}"
            )
    return objects, names


class CheckpointLoadStatus(_LoadStatus):
    """Result of restoring an object-based checkpoint; see `Checkpoint.restore`.

    Values of objects that exist when `restore` runs are assigned right away when a session is available
    (the `session` argument or the default session); otherwise, and for objects attached later while no
    session is around, `run_restore_ops(session)` / `initialize_or_restore(session)` assign them.
    """

    def __init__(self, checkpoint: _CheckpointRestoreCoordinator, graph_view: Any) -> None:
        self._checkpoint = checkpoint
        self._graph_view = graph_view

    def assert_consumed(self) -> CheckpointLoadStatus:
        """Every value in the checkpoint has a Python object, and every Python variable got a value."""
        self.assert_existing_objects_matched()
        checkpoint = self._checkpoint
        names = _node_names(checkpoint.object_graph_proto)
        unresolved = [
            f"{names.get(node_id, node_id)} ({', '.join(a.checkpoint_key for a in node.attributes)})"
            for node_id, node in enumerate(checkpoint.object_graph_proto.nodes)
            if node.attributes and node_id not in checkpoint.object_by_proto_id
        ]
        if unresolved:
            raise AssertionError(
                f"Unresolved objects in checkpoint {checkpoint.save_path} (values with no matching Python "
                "object):\n  " + "\n  ".join(unresolved)
            )
        if checkpoint.unused_attributes:
            lines = [
                f"{names.get(node_id, node_id)} ({checkpoint.object_by_proto_id[node_id]!r}): {attrs}"
                for node_id, attrs in checkpoint.unused_attributes.items()
            ]
            raise AssertionError(
                "Unused attributes in these objects (the attributes exist in the checkpoint but were not "
                "restored):\n  " + "\n  ".join(lines)
            )
        return self

    def assert_existing_objects_matched(self) -> CheckpointLoadStatus:
        """Every variable currently reachable from the root was matched to a value in the checkpoint."""
        checkpoint = self._checkpoint
        names = _node_names(checkpoint.object_graph_proto)
        for node_id, obj in checkpoint.object_by_proto_id.items():
            if get_update_uid(obj) < checkpoint.restore_uid:
                raise AssertionError(
                    f"Object {names.get(node_id, node_id)} not assigned a value from checkpoint."
                )
        if checkpoint.variables_without_value:
            raise AssertionError(
                "These variables correspond to checkpoint objects that hold no VARIABLE_VALUE: "
                + ", ".join(names.get(i, str(i)) for i in checkpoint.variables_without_value)
            )
        objects, paths = objects_and_paths(self._graph_view)
        bound = {id(o) for o in checkpoint.object_by_proto_id.values()}
        unmatched = [o for o in objects if is_variable(o) and id(o) not in bound]
        if unmatched:
            shown = unmatched[:10]
            raise AssertionError(
                f"Found {len(unmatched)} Python objects that were not bound to checkpointed values in "
                f"{checkpoint.save_path}, likely due to changes in the Python program. Showing "
                f"{len(shown)} of {len(unmatched)} unmatched objects: "
                + ", ".join(f"{paths[id(o)]} (variable {o.name!r})" for o in shown)
            )
        return self

    def assert_nontrivial_match(self) -> CheckpointLoadStatus:
        """Something besides the root object was matched."""
        checkpoint = self._checkpoint
        if len(checkpoint.object_by_proto_id) <= 1:
            objects, paths = objects_and_paths(self._graph_view)
            unmatched = [paths[id(o)] for o in objects if is_variable(o)]
            if unmatched:
                raise AssertionError(
                    "Nothing except the root object matched a checkpointed value. Typically this means that "
                    "the checkpoint does not match the Python program. The following objects have no "
                    f"matching checkpointed value: {unmatched}"
                )
            raise AssertionError(
                f"Nothing to load. No dependencies have been added to {self._graph_view.root!r} yet."
            )
        return self

    def run_restore_ops(self, session: Session | None = None) -> CheckpointLoadStatus:
        """Assign every value matched so far (again) in `session` (default: the default session)."""
        session = self._checkpoint.assigner.pick_session(session, "run_restore_ops()")
        assigner = self._checkpoint.assigner
        assigner.run(session, list(assigner.bound))
        return self

    def initialize_or_restore(self, session: Session | None = None) -> CheckpointLoadStatus:
        """Restore matched variables; run the initializers of reachable variables with no checkpoint value."""
        session = self._checkpoint.assigner.pick_session(session, "initialize_or_restore()")
        objects, _ = objects_and_paths(self._graph_view)
        bound = {id(o) for o in self._checkpoint.object_by_proto_id.values()}
        initializers = [
            o.initializer
            for o in objects
            if is_variable(o) and id(o) not in bound and get_update_uid(o) < self._checkpoint.restore_uid
        ]
        self.run_restore_ops(session)
        if initializers:
            session.run(initializers)
        return self

    def expect_partial(self) -> CheckpointLoadStatus:
        """Declare that a partial restore is intended (kept for TF compatibility; saverkit never logs)."""
        self._checkpoint.expect_partial = True
        return self


class InitializationOnlyStatus(_LoadStatus):
    """Returned by `restore(None)` (no checkpoint yet): assertions fail, `initialize_or_restore` initializes
    the variables."""

    def __init__(self, graph_view: Any, restore_uid: int) -> None:
        self._graph_view = graph_view
        self._restore_uid = restore_uid

    def _fail(self) -> NoReturn:
        raise AssertionError("No checkpoint specified (save_path=None); nothing is being restored.")

    def assert_consumed(self) -> Self:
        self._fail()

    def assert_existing_objects_matched(self) -> Self:
        self._fail()

    def assert_nontrivial_match(self) -> Self:
        self._fail()

    def run_restore_ops(self, session: Session | None = None) -> Any:
        raise AssertionError(
            "No checkpoint specified, so no restore ops are available (save_path=None to Checkpoint.restore)."
        )

    def initialize_or_restore(self, session: Session | None = None) -> Self:
        session = require_session(session, "initialize_or_restore()")
        objects, _ = objects_and_paths(self._graph_view)
        initializers = [
            o.initializer for o in objects if is_variable(o) and get_update_uid(o) < self._restore_uid
        ]
        if initializers:
            session.run(initializers)
        return self


# ----------------------------------------------------------------------------------------------------
# Name-based (TF1 Saver) checkpoints restored through the object API
# ----------------------------------------------------------------------------------------------------


class _NameBasedRestoreCoordinator:
    """Restores variables from a name-keyed checkpoint by their graph names (`dense/kernel`)."""

    def __init__(self, source: _ValueSource, session: Any, explicit: bool) -> None:
        self.save_path = source.save_path
        self.restore_uid = new_uid()
        self.assigner = _Assigner(source, session, explicit)
        self.matched: dict[str, str] = {}  # variable name -> checkpoint key
        self.unmatched: dict[str, object] = {}  # variable name -> variable without a key of that name

    def restore_objects(self, objects: Any) -> None:
        keys = self.assigner.source.dtype_map
        for obj in objects:
            if isinstance(obj, Trackable) and self not in obj._name_based_restores:
                obj._name_based_restores.append(self)  # objects attached to it later get restored too
            if not is_variable(obj) or get_update_uid(obj) >= self.restore_uid:
                continue
            set_update_uid(obj, self.restore_uid)
            name = variable_name(obj)
            # A part of a partitioned variable is saved (by TF1 Savers) as a slice of its full variable.
            info = getattr(obj, "_save_slice_info", None)
            key = name if info is None else info.full_name
            if key in keys:
                if info is None:
                    self.assigner.add(obj, key)
                else:
                    self.assigner.add(obj, key, info.spec, tuple(info.var_shape))
                self.matched[name] = key
                self.unmatched.pop(name, None)
            else:
                self.unmatched[name] = obj
        self.assigner.flush()

    def restore_new_object(self, obj: Any) -> None:
        objects, _, _ = breadth_first_traversal(obj)
        self.restore_objects(objects)


class NameBasedSaverStatus(_LoadStatus):
    """Result of `Checkpoint.restore` on a name-based checkpoint (written by a TF1-style `Saver`).

    `matched` maps each restored variable's graph name to its checkpoint key; `unmatched` lists graph names
    of reachable variables the checkpoint has no key for; `unused_keys` lists checkpoint keys nothing
    restored.
    """

    def __init__(self, checkpoint: _NameBasedRestoreCoordinator, graph_view: Any) -> None:
        self._checkpoint = checkpoint
        self._graph_view = graph_view
        self._optionally_restored: list = []

    def add_to_optionally_restored(self, var: Any) -> None:
        """Do not fail assertions because of `var` (e.g. a `save_counter` a TF1 Saver never wrote)."""
        self._optionally_restored.append(var)

    @property
    def matched(self) -> dict[str, str]:
        return dict(self._checkpoint.matched)

    @property
    def unmatched(self) -> list[str]:
        optional = {id(v) for v in self._optionally_restored}
        return sorted(n for n, v in self._checkpoint.unmatched.items() if id(v) not in optional)

    @property
    def unused_keys(self) -> list[str]:
        used = set(self._checkpoint.matched.values())
        return sorted(k for k in self._checkpoint.assigner.source.dtype_map if k not in used)

    def assert_consumed(self) -> NameBasedSaverStatus:
        """Every reachable variable found a value of the same name in the checkpoint."""
        objects, _ = objects_and_paths(self._graph_view)
        self._checkpoint.restore_objects(objects)  # pick up variables attached since restore()
        if self.unmatched:
            raise AssertionError(
                f"Some variables were not found by name in the name-based checkpoint "
                f"{self._checkpoint.save_path}:"
                f" {self.unmatched}. Checkpoint keys not restored: {self.unused_keys}"
            )
        return self

    def assert_existing_objects_matched(self) -> NameBasedSaverStatus:
        # A name-based checkpoint has no object information, so this is the same check (as in TF).
        return self.assert_consumed()

    def assert_nontrivial_match(self) -> NameBasedSaverStatus:
        return self.assert_consumed()

    def run_restore_ops(self, session: Session | None = None) -> NameBasedSaverStatus:
        session = self._checkpoint.assigner.pick_session(session, "run_restore_ops()")
        objects, _ = objects_and_paths(self._graph_view)
        self._checkpoint.restore_objects(objects)
        assigner = self._checkpoint.assigner
        assigner.run(session, list(assigner.bound))
        return self

    def initialize_or_restore(self, session: Session | None = None) -> NameBasedSaverStatus:
        return self.run_restore_ops(session)


def validate_object_graph(proto: Any, save_path: str) -> None:
    """Reject object graphs whose node references point nowhere (a corrupt or foreign checkpoint)."""
    n = len(proto.nodes)
    if n == 0:
        raise errors.DataLossError(None, None, f"{save_path}: the checkpoint's object graph has no nodes")
    for node_id, node in enumerate(proto.nodes):
        refs = [c.node_id for c in node.children]
        for slot in node.slot_variables:
            refs += [slot.original_variable_node_id, slot.slot_variable_node_id]
        bad = [r for r in refs if not 0 <= r < n]
        if bad:
            raise errors.DataLossError(
                None,
                None,
                f"{save_path}: object graph node {node_id} refers to node {bad[0]}, but there are {n} nodes",
            )


def open_checkpoint(save_path: str, storage_options: dict | None = None) -> _ValueSource:
    return _ValueSource(save_path, storage_options)
