"""`saverkit.train.Checkpoint`: object-based checkpoints, byte-compatible with `tf.train.Checkpoint`.

How values move (a design decision, see also `_fetch_values` / `_assign_values`): variables live in a
`Session`, so saving fetches their current values with one `session.run` of the variables' existing read
tensors and hands the numpy arrays to the compiled engine (`saverkit.bundle.write_bundle` into
`P_temp/part-00000-of-00001`, then `merge_bundles` into `P`, exactly the files TF2 writes); restoring reads
all matched keys with one batched `saverkit.bundle.read_tensors` call and assigns them with one
`session.run` that feeds the values into the variables' existing initializer assigns. Compared with
building SaveV2/RestoreV2/Assign nodes into the user's graph:

* no op is ever added to the graph by save/restore, so checkpoints work after `Graph.finalize()` (TF's
  graph-mode `Checkpoint` breaks there) and objects attached later need no new restore ops;
* the object graph changes whenever a module gains a variable; graph ops would have to be rebuilt (TF
  re-creates its save op whenever the serialized object graph differs), here nothing needs caching;
* restore needs the dtype/shape check before assigning anyway, which we do in Python with the key named
  in the error, and batching all reads into one engine call keeps the parallel reader busy.

The cost is one host copy of each value between the session and the engine, the same copy a SaveV2
kernel of this library makes when it calls the engine.

Object graph, key scheme and node order follow TF (`saverkit.trackable`); the data file holds tensors in
node order with `_CHECKPOINTABLE_OBJECT_GRAPH` last.
"""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np

from saverkit import errors
from saverkit.protobuf import trackable_object_graph_pb2
from saverkit.trackable import (
    OBJECT_GRAPH_PROTO_KEY,
    VARIABLE_VALUE_KEY,
    AutoTrackable,
    Trackable,
    TrackableReference,
    breadth_first_traversal,
    checkpoint_key,
    get_update_uid,
    is_trackable,
    is_variable,
    new_uid,
    object_path_to_string,
    set_update_uid,
)

__all__ = ["Checkpoint", "CheckpointLoadStatus", "InitializationOnlyStatus", "NameBasedSaverStatus"]


# ----------------------------------------------------------------------------------------------------
# Sessions and variable values
# ----------------------------------------------------------------------------------------------------


def _default_session():
    from saverkit import get_default_session

    return get_default_session()


def _require_session(session, what: str):
    session = session if session is not None else _default_session()
    if session is None:
        raise RuntimeError(
            f"{what} needs a Session: pass session=... or call it inside `with saverkit.Session() as sess:` "
            "(or `with sess.as_default():`)."
        )
    return session


def _variable_name(var) -> str:
    """The variable's graph name without the output index ("dense/kernel", not "dense/kernel:0")."""
    return var.op.name


def _fetch_values(session, variables) -> list[np.ndarray]:
    """Current values of `variables` in `session`, fetched together through their existing read tensors."""
    _check_same_graph(session, variables)
    if not variables:
        return []
    return list(session.run([v.value() for v in variables]))


def _assign_values(session, pairs) -> None:
    """Assign numpy values to variables in `session`, feeding each variable's initializer input.

    A variable's initializer is `Assign(variable, initial_value)`; feeding `initial_value` turns it into
    "assign this value" (what TF's `Variable.load` does) without adding ops to a possibly finalized graph.
    Variables sharing one initial-value tensor cannot be fed in the same run, so they go in later runs.
    """
    if not pairs:
        return
    _check_same_graph(session, [v for v, _ in pairs])
    batches: list[tuple[list, dict]] = []
    for var, value in pairs:
        target, feed_tensor = _assign_target(var)
        batch = next((b for b in batches if feed_tensor not in b[1]), None)
        if batch is None:
            batch = ([], {})
            batches.append(batch)
        batch[0].append(target)
        batch[1][feed_tensor] = value
    for fetches, feed in batches:
        session.run(fetches, feed_dict=feed)


def _assign_target(var):
    """(op to run, tensor to feed) that assigns a fed value to `var`."""
    init = var.initializer
    if init is not None and init.type == "Assign" and len(init.inputs) == 2:
        return init, init.inputs[1]
    # An initializer of another shape (e.g. from a hand-written meta graph): build a placeholder-fed
    # Assign once, next to the variable.
    cached = getattr(var, "_saverkit_assign", None)
    if cached is None:
        from saverkit import assign, placeholder

        with var.graph.as_default(), var.graph.name_scope(var.op.name + "/"):
            value = placeholder(var.dtype.base_dtype, shape=var.shape, name="restore_value")
            cached = (assign(var, value, validate_shape=False).op, value)
        var._saverkit_assign = cached
    return cached


def _check_same_graph(session, variables) -> None:
    for v in variables:
        if v.graph is not session.graph:
            raise ValueError(
                f"Variable {v.name!r} belongs to a different graph than the session's; create the session "
                "on the graph that holds the checkpointed variables."
            )


def _check_compatible(var, key: str, dtype, shape, save_path: str) -> None:
    if var.dtype.base_dtype != dtype:
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Cannot restore {key!r} from {save_path} into variable {var.name!r}: the checkpoint holds "
            f"{dtype.name}, the variable is {var.dtype.base_dtype.name}.",
        )
    var_shape = var.shape
    if var_shape.rank is not None and not var_shape.is_compatible_with(shape):
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Cannot restore {key!r} from {save_path} into variable {var.name!r}: the checkpoint holds "
            f"shape {list(shape)}, the variable has shape {var_shape.as_list()}.",
        )


# ----------------------------------------------------------------------------------------------------
# Object-based restore
# ----------------------------------------------------------------------------------------------------


def _node_names(object_graph_proto) -> dict[int, str]:
    """Readable paths ("(root).model.layers.0") of every node, for error messages (as TF prints them)."""
    names = {0: ("(root)",)}
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
    """Where restored values come from: one open checkpoint, read in batches through the engine."""

    def __init__(self, reader):
        self.reader = reader
        self.save_path = reader.prefix
        entries = reader.entries()
        self.dtype_map = {k: dt for k, (dt, _) in entries.items()}
        self.shape_map = {k: shape for k, (_, shape) in entries.items()}

    def has_tensor(self, key: str) -> bool:
        return key in self.dtype_map

    def read(self, keys: list[str], specs: list[str] | None = None) -> list[np.ndarray]:
        return self.reader.read_many(keys, specs)


class _Assigner:
    """Restorations (variable <- checkpoint key) of one restore call: pending until a session runs them."""

    def __init__(self, source: _ValueSource, session, explicit: bool):
        self.source = source
        self.session = session  # the session restore() ran with (or None): deferred matches assign there
        self.explicit = explicit  # passed by the caller, rather than the default session at restore time
        self.bound: list[tuple[object, str, str]] = []  # every (variable, key, slice spec) matched, in order
        self.pending: list[tuple[object, str, str]] = []  # matched but not yet assigned

    def add(self, var, key: str, spec: str = "", slice_shape=None) -> None:
        """Match `var` with tensor `key` (or the slice `spec` of it, whose shape is `slice_shape`)."""
        source = self.source
        if key not in source.dtype_map:
            raise errors.NotFoundError(
                None, None, f"Checkpoint {source.save_path} has no tensor {key!r} (needed for {var.name!r})"
            )
        shape = source.shape_map[key] if slice_shape is None else slice_shape
        _check_compatible(var, key, source.dtype_map[key], shape, source.save_path)
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

    def run(self, session, triples) -> None:
        values = self.source.read([key for _, key, _ in triples], [spec for _, _, spec in triples])
        _assign_values(session, list(zip([v for v, _, _ in triples], values, strict=True)))
        done = {id(v) for v, _, _ in triples}
        self.pending = [t for t in self.pending if id(t[0]) not in done]


class _CheckpointRestoreCoordinator:
    """State of one object-based restore: which proto node is bound to which Python object, and so on."""

    def __init__(self, object_graph_proto, source: _ValueSource, session, explicit: bool):
        self.object_graph_proto = object_graph_proto
        self.save_path = source.save_path
        self.restore_uid = new_uid()
        self.object_by_proto_id: dict[int, object] = {}
        self.matched_proto_ids: set[int] = set()
        self.unused_attributes: dict[int, list[str]] = {}
        self.variables_without_value: dict[int, object] = {}
        self.assigner = _Assigner(source, session, explicit)
        self.expect_partial = False

    @property
    def dtype_map(self):
        return self.assigner.source.dtype_map


class CheckpointPosition:
    """A node of the checkpoint's object graph, and the logic that restores it into a Python object."""

    def __init__(self, checkpoint: _CheckpointRestoreCoordinator, proto_id: int):
        self.checkpoint = checkpoint
        self.proto_id = proto_id

    @property
    def restore_uid(self) -> int:
        return self.checkpoint.restore_uid

    @property
    def object_proto(self):
        return self.checkpoint.object_graph_proto.nodes[self.proto_id]

    def restore(self, trackable) -> None:
        """Bind `trackable` to this node, match its descendants (deferring missing ones), assign values."""
        if self.bind_object(trackable):
            self._restore_descendants()
        self.checkpoint.assigner.flush()

    def bind_object(self, trackable) -> bool:
        checkpoint = self.checkpoint
        current = checkpoint.object_by_proto_id.get(self.proto_id)
        checkpoint.matched_proto_ids.add(self.proto_id)
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
            position._single_restore(obj)
            queue.extend(position._children_to_restore(obj))

    def _single_restore(self, obj) -> None:
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

    def _children_to_restore(self, obj):
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

    def assert_consumed(self):
        raise NotImplementedError

    def assert_existing_objects_matched(self):
        raise NotImplementedError

    def assert_nontrivial_match(self):
        raise NotImplementedError

    def run_restore_ops(self, session=None):
        raise NotImplementedError

    def initialize_or_restore(self, session=None):
        raise NotImplementedError

    def expect_partial(self):
        return self


def _objects_and_paths(graph_view):
    objects, paths, _ = breadth_first_traversal(graph_view.root, graph_view.attached_dependencies())
    names = {
        id(o): "(root)." + ".".join(r.name for r in paths[id(o)]) if paths[id(o)] else "(root)"
        for o in objects
    }
    return objects, names


class CheckpointLoadStatus(_LoadStatus):
    """Result of restoring an object-based checkpoint; see `Checkpoint.restore`.

    Values of objects that exist when `restore` runs are assigned right away when a session is available
    (the `session` argument or the default session); otherwise, and for objects attached later while no
    session is around, `run_restore_ops(session)` / `initialize_or_restore(session)` assign them.
    """

    def __init__(self, checkpoint: _CheckpointRestoreCoordinator, graph_view):
        self._checkpoint = checkpoint
        self._graph_view = graph_view

    def assert_consumed(self):
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

    def assert_existing_objects_matched(self):
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
        objects, paths = _objects_and_paths(self._graph_view)
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

    def assert_nontrivial_match(self):
        """Something besides the root object was matched."""
        checkpoint = self._checkpoint
        if len(checkpoint.object_by_proto_id) <= 1:
            objects, paths = _objects_and_paths(self._graph_view)
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

    def run_restore_ops(self, session=None):
        """Assign every value matched so far (again) in `session` (default: the default session)."""
        session = (
            session if session is not None else (_default_session() or self._checkpoint.assigner.session)
        )
        session = _require_session(session, "run_restore_ops()")
        assigner = self._checkpoint.assigner
        assigner.run(session, list(assigner.bound))
        return self

    def initialize_or_restore(self, session=None):
        """Restore matched variables; run the initializers of reachable variables with no checkpoint value."""
        session = (
            session if session is not None else (_default_session() or self._checkpoint.assigner.session)
        )
        session = _require_session(session, "initialize_or_restore()")
        objects, _ = _objects_and_paths(self._graph_view)
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

    def expect_partial(self):
        """Declare that a partial restore is intended (kept for TF compatibility; saverkit never logs)."""
        self._checkpoint.expect_partial = True
        return self


class InitializationOnlyStatus(_LoadStatus):
    """Returned by `restore(None)` (no checkpoint yet): assertions fail, `initialize_or_restore` initializes
    the variables."""

    def __init__(self, graph_view, restore_uid: int):
        self._graph_view = graph_view
        self._restore_uid = restore_uid

    def _fail(self):
        raise AssertionError("No checkpoint specified (save_path=None); nothing is being restored.")

    def assert_consumed(self):
        self._fail()

    def assert_existing_objects_matched(self):
        self._fail()

    def assert_nontrivial_match(self):
        self._fail()

    def run_restore_ops(self, session=None):
        raise AssertionError(
            "No checkpoint specified, so no restore ops are available (save_path=None to Checkpoint.restore)."
        )

    def initialize_or_restore(self, session=None):
        session = _require_session(session, "initialize_or_restore()")
        objects, _ = _objects_and_paths(self._graph_view)
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

    def __init__(self, source: _ValueSource, session, explicit: bool):
        self.save_path = source.save_path
        self.restore_uid = new_uid()
        self.assigner = _Assigner(source, session, explicit)
        self.matched: dict[str, str] = {}  # variable name -> checkpoint key
        self.unmatched: dict[str, object] = {}  # variable name -> variable without a key of that name

    def restore_objects(self, objects) -> None:
        keys = self.assigner.source.dtype_map
        for obj in objects:
            if isinstance(obj, Trackable) and self not in obj._name_based_restores:
                obj._name_based_restores.append(self)  # objects attached to it later get restored too
            if not is_variable(obj) or get_update_uid(obj) >= self.restore_uid:
                continue
            set_update_uid(obj, self.restore_uid)
            name = _variable_name(obj)
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

    def restore_new_object(self, obj) -> None:
        objects, _, _ = breadth_first_traversal(obj)
        self.restore_objects(objects)


class NameBasedSaverStatus(_LoadStatus):
    """Result of `Checkpoint.restore` on a name-based checkpoint (written by a TF1-style `Saver`).

    `matched` maps each restored variable's graph name to its checkpoint key; `unmatched` lists graph names
    of reachable variables the checkpoint has no key for; `unused_keys` lists checkpoint keys nothing
    restored.
    """

    def __init__(self, checkpoint: _NameBasedRestoreCoordinator, graph_view):
        self._checkpoint = checkpoint
        self._graph_view = graph_view
        self._optionally_restored: list = []

    def add_to_optionally_restored(self, var) -> None:
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

    def assert_consumed(self):
        """Every reachable variable found a value of the same name in the checkpoint."""
        objects, _ = _objects_and_paths(self._graph_view)
        self._checkpoint.restore_objects(objects)  # pick up variables attached since restore()
        if self.unmatched:
            raise AssertionError(
                f"Some variables were not found by name in the name-based checkpoint "
                f"{self._checkpoint.save_path}:"
                f" {self.unmatched}. Checkpoint keys not restored: {self.unused_keys}"
            )
        return self

    def assert_existing_objects_matched(self):
        # A name-based checkpoint has no object information, so this is the same check (as in TF).
        return self.assert_consumed()

    def assert_nontrivial_match(self):
        return self.assert_consumed()

    def run_restore_ops(self, session=None):
        session = (
            session if session is not None else (_default_session() or self._checkpoint.assigner.session)
        )
        session = _require_session(session, "run_restore_ops()")
        objects, _ = _objects_and_paths(self._graph_view)
        self._checkpoint.restore_objects(objects)
        assigner = self._checkpoint.assigner
        assigner.run(session, list(assigner.bound))
        return self

    def initialize_or_restore(self, session=None):
        return self.run_restore_ops(session)


# ----------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------


def serialize_object_graph(root, attached_dependencies=()):
    """Build TF's TrackableObjectGraph for `root`.

    Returns (proto, [(checkpoint key, variable)] in node order).
    """
    objects, paths, children = breadth_first_traversal(root, attached_dependencies)
    node_ids = {id(o): i for i, o in enumerate(objects)}
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    to_save = []
    for obj, refs in zip(objects, children, strict=True):
        node = graph.nodes.add()
        for ref in refs:
            node.children.add(node_id=node_ids[id(ref.ref)], local_name=ref.name)
        if is_variable(obj):
            key = checkpoint_key(object_path_to_string(r.name for r in paths[id(obj)]), VARIABLE_VALUE_KEY)
            node.attributes.add(name=VARIABLE_VALUE_KEY, full_name=_variable_name(obj), checkpoint_key=key)
            to_save.append((key, obj))
    _set_has_checkpoint_values(graph)
    return graph, to_save


def _set_has_checkpoint_values(graph) -> None:
    """A node has checkpoint values if it or any descendant has attributes (TF's rule, same flags)."""
    parents: dict[int, set[int]] = {}
    marked = set()
    for node_id, node in enumerate(graph.nodes):
        if node.attributes or node.slot_variables or node.HasField("registered_saver"):
            marked.add(node_id)
        for child in node.children:
            parents.setdefault(child.node_id, set()).add(node_id)
    queue = list(marked)
    while queue:
        node_id = queue.pop()
        for parent in parents.pop(node_id, ()):
            if parent not in marked:
                marked.add(parent)
            queue.append(parent)
    for node_id, node in enumerate(graph.nodes):
        node.has_checkpoint_values.value = node_id in marked


def write_object_checkpoint(file_prefix: str, session, root, attached_dependencies=()) -> str:
    """Write `root`'s object graph and variable values to `file_prefix` the way TF2 does."""
    from saverkit import bundle, dtypes

    graph, to_save = serialize_object_graph(root, attached_dependencies)
    variables = [v for _, v in to_save]
    values = _fetch_values(session, variables)
    names = [k for k, _ in to_save] + [OBJECT_GRAPH_PROTO_KEY]
    tensors = values + [np.array(graph.SerializeToString(), dtype=object)]
    tensor_dtypes = [v.dtype.base_dtype for v in variables] + [dtypes.string]
    directory = os.path.dirname(file_prefix)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # TF2 always saves through a temporary single-shard part and merges it into place.
    temp_dir = file_prefix + "_temp"
    part = os.path.join(temp_dir, "part-00000-of-00001")
    try:
        bundle.write_bundle(part, names, tensors, dtypes=tensor_dtypes)
        bundle.merge_bundles([part], file_prefix, delete_old_dirs=True)
    finally:
        if os.path.isdir(temp_dir):
            shutil.rmtree(temp_dir, ignore_errors=True)
    return file_prefix


class _GraphView:
    """What a Checkpoint saves: a root plus extra root children (TF's ObjectGraphView)."""

    def __init__(self, root, attached: list | None):
        self.root = root
        self._attached = attached

    def attached_dependencies(self):
        return list(self._attached or ())


# ----------------------------------------------------------------------------------------------------
# Checkpoint
# ----------------------------------------------------------------------------------------------------


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

    def __init__(self, root=None, **kwargs):
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

    def _maybe_create_save_counter(self, graph=None) -> bool:
        """Create the int64 `save_counter` variable if needed; return True if it was just created."""
        if self._save_counter is not None:
            return False
        from saverkit import Variable, dtypes, get_default_graph

        if graph is None:  # next to the checkpointed variables, else in the default graph
            graph = self._objects_graph() or get_default_graph()
        with graph.as_default():
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

    def _objects_graph(self):
        """The graph of the first checkpointed variable (where a new save_counter belongs), if any."""
        view = self._graph_view
        objects, _, _ = breadth_first_traversal(view.root, view.attached_dependencies())
        return next((o.graph for o in objects if is_variable(o)), None)

    @property
    def save_counter(self):
        """An int64 variable counting `save()` calls, used to number checkpoints (created on first use)."""
        self._maybe_create_save_counter()
        return self._save_counter

    def _next_checkpoint_number(self, session) -> int:
        if self._maybe_create_save_counter(session.graph):
            session.run(self._save_counter.initializer)
        counter = self._save_counter
        try:
            (value,) = _fetch_values(session, [counter])
        except errors.FailedPreconditionError:
            # Created by restore() but neither restored nor initialized: start counting from zero.
            session.run(counter.initializer)
            (value,) = _fetch_values(session, [counter])
        number = int(value) + 1
        _assign_values(session, [(counter, np.asarray(number, dtype=np.int64))])
        return number

    # -- writing --------------------------------------------------------------------------------------

    def write(self, file_prefix, session=None) -> str:
        """Write a checkpoint to exactly `file_prefix`: no numbering, no state file (read it with `read`)."""
        file_prefix = os.fspath(file_prefix)
        session = _require_session(session, "Checkpoint.write()")
        return write_object_checkpoint(
            file_prefix, session, self._graph_view.root, self._graph_view.attached_dependencies()
        )

    def save(self, file_prefix, session=None) -> str:
        """Increment `save_counter`, write `file_prefix-<counter>`, record it in the directory state file."""
        from saverkit.train import checkpoint_management

        file_prefix = os.fspath(file_prefix)
        session = _require_session(session, "Checkpoint.save()")
        number = self._next_checkpoint_number(session)
        path = self.write(f"{file_prefix}-{number}", session=session)
        checkpoint_management.update_checkpoint_state_internal(
            save_dir=os.path.dirname(path),
            model_checkpoint_path=path,
            all_model_checkpoint_paths=[path],
            save_relative_paths=True,
        )
        return path

    # -- reading --------------------------------------------------------------------------------------

    def read(self, save_path, session=None):
        """Restore a checkpoint written by `write` (does not expect a `save_counter`); see `restore`."""
        view = self._graph_view
        if save_path is None:
            return InitializationOnlyStatus(view, new_uid())
        save_path = os.fspath(save_path)
        explicit = session is not None
        if session is None:
            session = _default_session()
        try:
            source = _open_checkpoint(save_path)
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
        _validate_object_graph(proto, save_path)
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

    def restore(self, save_path, session=None):
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
        status = self.read(save_path, session=session)
        try:
            self._maybe_create_save_counter(session.graph if session is not None else None)
        except RuntimeError:
            pass  # finalized graph: created (and filled from the deferred restore) on first save
        if isinstance(status, NameBasedSaverStatus) and self._save_counter is not None:
            status.add_to_optionally_restored(self._save_counter)
        return status

    def _restore_name_based(self, source: _ValueSource, session, explicit: bool):
        coordinator = _NameBasedRestoreCoordinator(source, session, explicit)
        objects, _ = _objects_and_paths(self._graph_view)
        coordinator.restore_objects(objects)
        status = NameBasedSaverStatus(coordinator, self._graph_view)
        warnings.warn(
            f"Restoring the name-based checkpoint {source.save_path} (written by a TF1-style Saver, it "
            f"has no object graph) by matching variable names: {len(coordinator.matched)} variables matched, "
            f"{len(coordinator.unmatched)} not found ({sorted(coordinator.unmatched)[:10]}). Re-save it "
            "with Checkpoint.save to get an object-based checkpoint.",
            stacklevel=3,
        )
        return status

    def sync(self) -> None:
        """Saves are synchronous; present for TF API compatibility."""


def _validate_object_graph(proto, save_path: str) -> None:
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


def _open_checkpoint(save_path: str) -> _ValueSource:
    from saverkit import bundle

    return _ValueSource(bundle.BundleReader(save_path))
