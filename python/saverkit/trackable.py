"""Object tracking for object-based checkpoints, after TensorFlow's Trackable/AutoTrackable.

An object-based checkpoint stores a graph of Python objects: every tracked object is a node, named edges
("dependencies") lead to its children, and variables hold the values. This module provides:

* `Trackable`: the bookkeeping every node needs (named dependencies in tracking order, restorations
  waiting for a dependency to be attached — "deferred restoration", name-based restores to apply to new
  children);
* `AutoTrackable`: tracks whatever trackable value is assigned to an attribute (what `tf.Module` builds on);
* `ListWrapper`, `_DictWrapper`, `_TupleWrapper`: the containers attribute assignment turns lists, dicts and
  tuples into, so that `self.layers = [Dense(), Dense()]` saves as `layers/0/...`, `layers/1/...`;
* TF's checkpoint-key scheme (`escape_local_name`, `checkpoint_key`) and the breadth-first traversal that
  numbers the nodes exactly like TF does, so TF and saverkit read each other's object graphs.

Variables are the graph layer's `saverkit.Variable` objects: leaves of the object graph (no children) with
one attribute, `VARIABLE_VALUE`. They do not inherit from `Trackable`; `is_variable` recognises them.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, SupportsIndex

if TYPE_CHECKING:
    from typing_extensions import Self

OBJECT_GRAPH_PROTO_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_VALUE_KEY = "VARIABLE_VALUE"
_ESCAPE_CHAR = "."
OBJECT_ATTRIBUTES_NAME = _ESCAPE_CHAR + "ATTRIBUTES"

# Restore operations are ordered by when they started: a later restore wins over an earlier one.
_uid_counter = itertools.count(1)


def new_uid() -> int:
    return next(_uid_counter)


def escape_local_name(name: str) -> str:
    """Escape a dependency name for use inside a checkpoint key ('.' -> '..', '/' -> '.S')."""
    return name.replace(_ESCAPE_CHAR, _ESCAPE_CHAR + _ESCAPE_CHAR).replace("/", _ESCAPE_CHAR + "S")


def object_path_to_string(names: Iterable[str]) -> str:
    """The key prefix of an object reached from the root through dependencies named `names`."""
    return "/".join(escape_local_name(n) for n in names)


def checkpoint_key(object_path: str, local_name: str) -> str:
    """Key of attribute `local_name` of the object at `object_path` (TF: `<path>/.ATTRIBUTES/<name>`)."""
    return f"{object_path}/{OBJECT_ATTRIBUTES_NAME}/{escape_local_name(local_name)}"


_variable_class = None


def is_variable(obj: Any) -> bool:
    global _variable_class
    if _variable_class is None:
        # Imported on first use: saverkit/__init__ imports this module before the graph layer.
        from saverkit.framework.variables import Variable

        _variable_class = Variable
    return isinstance(obj, _variable_class)


def is_trackable(obj: Any) -> bool:
    return isinstance(obj, Trackable) or is_variable(obj)


class TrackableReference(NamedTuple):
    name: str
    ref: Any


class NoDependency:
    """Wrap a value in `NoDependency` before assigning it to an attribute to keep it out of checkpoints."""

    def __init__(self, value: Any) -> None:
        self.value = value


# Per-object restore bookkeeping. Variables cannot carry `Trackable` state, so the uid of the restore that
# last assigned an object lives in an attribute set directly on the object (variables and trackables alike).
_UPDATE_UID_ATTR = "_self_update_uid"


def get_update_uid(obj: Any) -> int:
    return getattr(obj, _UPDATE_UID_ATTR, 0)


def set_update_uid(obj: Any, uid: int) -> None:
    object.__setattr__(obj, _UPDATE_UID_ATTR, uid)


class Trackable:
    """Base class for objects with named dependencies that object-based checkpoints save and restore.

    State lives in `_self_*` attributes set with `object.__setattr__` so that `AutoTrackable` does not try to
    track its own bookkeeping (and `Module._flatten` skips it).
    """

    # Set by _maybe_initialize_trackable (object.__setattr__).
    _self_dependencies: list[TrackableReference]
    _self_deferred_dependencies: dict[str, list[Any]]
    _self_name_based_restores: list[Any]

    def _maybe_initialize_trackable(self) -> None:
        if "_self_dependencies" in self.__dict__:
            return
        object.__setattr__(self, "_self_dependencies", [])  # TrackableReference, in tracking order
        object.__setattr__(self, "_self_deferred_dependencies", {})  # name -> [CheckpointPosition]
        object.__setattr__(self, "_self_name_based_restores", [])  # name-based restore coordinators

    @property
    def _deferred_dependencies(self) -> dict:
        self._maybe_initialize_trackable()
        return self._self_deferred_dependencies

    @property
    def _name_based_restores(self) -> list:
        self._maybe_initialize_trackable()
        return self._self_name_based_restores

    def _trackable_children(self) -> dict:
        """Children by local name, in the order TF lists them (the order they were first tracked)."""
        self._maybe_initialize_trackable()
        return {ref.name: ref.ref for ref in self._self_dependencies}

    def _lookup_dependency(self, name: str, cached_children: dict | None = None) -> Any:
        children = self._trackable_children() if cached_children is None else cached_children
        return children.get(name)

    def _track_trackable(self, trackable: Any, name: str, overwrite: bool = False) -> Any:
        """Declare that checkpoints of `self` include `trackable` under `name`."""
        self._maybe_initialize_trackable()
        if not is_trackable(trackable):
            raise TypeError(
                f"Only trackable objects (variables, Modules, ...) can be tracked; got {type(trackable)}."
            )
        deps = self._self_dependencies
        for index, ref in enumerate(deps):
            if ref.name != name:
                continue
            if ref.ref is trackable:
                return trackable
            if not overwrite:
                raise ValueError(f"A dependency named {name!r} is already tracked by {self!r}.")
            deps[index] = TrackableReference(name, trackable)
            return trackable
        deps.append(TrackableReference(name, trackable))
        self._handle_deferred_dependencies(name, trackable)
        return trackable

    def _delete_tracking(self, name: str) -> None:
        self._maybe_initialize_trackable()
        self._self_dependencies[:] = [ref for ref in self._self_dependencies if ref.name != name]

    def _handle_deferred_dependencies(self, name: str, trackable: Any) -> None:
        """Restore into a newly attached `trackable` any checkpoint values that were waiting for `name`."""
        self._maybe_initialize_trackable()
        if isinstance(trackable, Trackable):
            trackable._maybe_initialize_trackable()
        positions = self._self_deferred_dependencies.pop(name, ())
        # Newest restore first: it marks the object, so older restores then skip it.
        for position in sorted(positions, key=lambda p: p.restore_uid, reverse=True):
            position.restore(trackable)
        for coordinator in sorted(self._self_name_based_restores, key=lambda c: c.restore_uid, reverse=True):
            coordinator.restore_new_object(trackable)


class AutoTrackable(Trackable):
    """Tracks trackable values (and lists/dicts/tuples of them) assigned to attributes, like TF.

    Tracking is sticky, as in TF: assigning a non-trackable value to an attribute that held a trackable
    keeps the old dependency; `del obj.attr` removes it.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            if getattr(self, name) is value:
                return
        except AttributeError:
            pass
        value = sticky_attribute_assignment(self, name, value)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        self._delete_tracking(name)
        super().__delattr__(name)


def _should_wrap_tuple(t: tuple) -> bool:
    for element in t:
        if isinstance(element, NoDependency) or is_trackable(element):
            return True
        if type(element) in (dict, collections.OrderedDict, list):
            return True
        if isinstance(element, tuple) and _should_wrap_tuple(element):
            return True
    return False  # immutable and holds nothing trackable: leave it alone, as TF does


def wrap_or_unwrap(value: Any) -> Any:
    """Turn plain lists/dicts/tuples holding trackables into tracking wrappers; unwrap `NoDependency`."""
    if isinstance(value, NoDependency):
        return value.value
    if isinstance(value, Trackable):
        return value
    if type(value) in (dict, collections.OrderedDict):
        return _DictWrapper(value)
    if type(value) is list:
        return ListWrapper(value)
    if isinstance(value, tuple) and _should_wrap_tuple(value):
        return _wrap_tuple(value)
    return value


def sticky_attribute_assignment(trackable: Trackable, name: str, value: Any) -> Any:
    """Wrap `value` if it is a container and track it (if trackable) as `name`; return what to store."""
    add_dependency = not isinstance(value, NoDependency)
    value = wrap_or_unwrap(value)
    if add_dependency and is_trackable(value):
        trackable._track_trackable(value, name=name, overwrite=True)
    return value


class _ContainerTrackable(Trackable):
    """Shared logic of the container wrappers: children are derived from the current contents.

    TF's wrappers refuse to save after some in-place mutations (replacing or moving list elements) because
    its restore-on-create could have put values in the wrong place. Here children are simply what the
    container holds at save time, and every mutation runs `_children_changed`, which restores deferred
    values into elements that now sit under the name they wait for. Modifying the original list/dict
    after assigning it (bypassing the wrapper) is detected at save time, as in TF: those changes are not
    visible here.
    """

    _self_original: Any  # set by _init_container
    _self_original_snapshot: Any

    def _init_container(self, original: Any) -> None:
        self._maybe_initialize_trackable()
        object.__setattr__(self, "_self_original", original)
        object.__setattr__(self, "_self_original_snapshot", self._snapshot_of(original))

    @staticmethod
    def _snapshot_of(original: Any) -> Any:
        if isinstance(original, dict):
            return [(k, id(v)) for k, v in original.items()]
        return [id(v) for v in original]

    def _check_external_modification(self) -> None:
        original = self._self_original
        if self._snapshot_of(original) != self._self_original_snapshot:
            raise ValueError(
                f"Unable to save {type(self).__name__} {self!r}: the {type(original).__name__} it was "
                f"created from was modified outside the wrapper (now {original!r}), so those changes are not "
                "tracked. Modify the container through the attribute it was assigned to, or wrap it in "
                "saverkit.trackable.NoDependency to keep it out of checkpoints."
            )

    def _content_children(self) -> dict:
        raise NotImplementedError

    def _trackable_children(self) -> dict:
        self._check_external_modification()
        return self._content_children()

    def _children_changed(self) -> None:
        """Serve restorations waiting for a name the container now holds an object under."""
        deferred, name_based = self._self_deferred_dependencies, self._self_name_based_restores
        if not deferred and not name_based:
            return  # the usual case: O(1), so that building a long list stays linear
        for name, child in self._content_children().items():
            if name in deferred or name_based:
                self._handle_deferred_dependencies(name, child)

    def _track_trackable(self, trackable: Any, name: str, overwrite: bool = False) -> Any:
        raise TypeError(f"{type(self).__name__} tracks its elements; add them to the container instead.")

    def _wrap_element(self, value: Any) -> Any:
        return wrap_or_unwrap(value)


class ListWrapper(_ContainerTrackable, list):
    """A list that tracks its trackable elements as children named "0", "1", ... (TF's ListWrapper)."""

    def __init__(self, wrapped_list: Any = ()) -> None:
        list.__init__(self, (wrap_or_unwrap(v) for v in wrapped_list))
        self._init_container(wrapped_list)

    def _content_children(self) -> dict:
        return {str(i): v for i, v in enumerate(self) if is_trackable(v)}

    def append(self, value: Any) -> None:
        list.append(self, self._wrap_element(value))
        self._children_changed()

    def extend(self, values: Any) -> None:
        list.extend(self, [self._wrap_element(v) for v in values])
        self._children_changed()

    def insert(self, index: SupportsIndex, value: Any) -> None:
        list.insert(self, index, self._wrap_element(value))
        self._children_changed()

    def __iadd__(self, values: Iterable[Any]) -> Self:  # type: ignore[misc]  # any iterable, as list +=
        self.extend(values)
        return self

    def __imul__(self, n: SupportsIndex) -> Self:
        list.__imul__(self, n)
        self._children_changed()
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, slice):
            value = [self._wrap_element(v) for v in value]
        else:
            value = self._wrap_element(value)
        list.__setitem__(self, key, value)
        self._children_changed()

    def __delitem__(self, key: Any) -> None:
        list.__delitem__(self, key)
        self._children_changed()

    def pop(self, index: SupportsIndex = -1) -> Any:
        value = list.pop(self, index)
        self._children_changed()
        return value

    def remove(self, value: Any) -> None:
        list.remove(self, value)
        self._children_changed()

    def clear(self) -> None:
        list.clear(self)
        self._children_changed()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        list.sort(self, *args, **kwargs)
        self._children_changed()

    def reverse(self) -> None:
        list.reverse(self)
        self._children_changed()

    def __copy__(self) -> Any:
        return ListWrapper(list(self))

    def __repr__(self) -> str:
        return f"ListWrapper({list.__repr__(self)})"

    __hash__ = None


class _DictWrapper(_ContainerTrackable, dict):
    """A dict that tracks trackable values under their (string) keys (TF's _DictWrapper).

    Values under non-string keys are allowed while they are not trackable; a trackable value under a
    non-string key cannot be named in a checkpoint, so saving then raises, as in TF.
    """

    def __init__(self, wrapped_dict: Any = None) -> None:
        wrapped_dict = {} if wrapped_dict is None else wrapped_dict
        dict.__init__(self, ((k, wrap_or_unwrap(v)) for k, v in wrapped_dict.items()))
        self._init_container(wrapped_dict)

    def _content_children(self) -> dict:
        return {k: v for k, v in self.items() if isinstance(k, str) and is_trackable(v)}

    def _trackable_children(self) -> dict:
        bad = [k for k, v in self.items() if not isinstance(k, str) and is_trackable(v)]
        if bad:
            raise ValueError(
                f"Unable to save the dictionary {self!r}: the trackable value under the non-string key "
                f"{bad[0]!r} cannot be named in a checkpoint. Use string keys, or wrap the dict in "
                "saverkit.trackable.NoDependency to keep it out of checkpoints."
            )
        return super()._trackable_children()

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, self._wrap_element(value))
        self._children_changed()

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self._children_changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            dict.__setitem__(self, key, self._wrap_element(value))
        self._children_changed()

    def __ior__(self, other: Any) -> Self:  # type: ignore[misc]  # any mapping or pairs, as dict |=
        self.update(other)
        return self

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, *args: Any) -> Any:
        value = dict.pop(self, *args)
        self._children_changed()
        return value

    def popitem(self) -> Any:
        item = dict.popitem(self)
        self._children_changed()
        return item

    def clear(self) -> None:
        dict.clear(self)
        self._children_changed()

    def __copy__(self) -> Any:
        return _DictWrapper(dict(self))

    def __repr__(self) -> str:
        return f"DictWrapper({dict.__repr__(self)})"

    __hash__ = None


class _TupleWrapper(_ContainerTrackable, tuple):
    """An immutable tuple tracking its trackable elements by index (namedtuples also by field name)."""

    def __new__(cls, values: Any = ()) -> Any:
        return tuple.__new__(cls, values)

    def __init__(self, values: Any = ()) -> None:
        self._maybe_initialize_trackable()

    def _content_children(self) -> dict:
        return _tuple_children(self)

    def _trackable_children(self) -> dict:
        return self._content_children()

    def __repr__(self) -> str:
        return f"_TupleWrapper({tuple.__repr__(self)})"


def _tuple_children(values: tuple) -> dict:
    """The children of a wrapped tuple: trackable elements by index (namedtuples' by field name too)."""
    children = {}
    fields = getattr(values, "_fields", None)
    if fields is not None:  # TF names namedtuple elements by field first, then by index
        children.update({f: v for f, v in zip(fields, values, strict=True) if is_trackable(v)})
    children.update({str(i): v for i, v in enumerate(values) if is_trackable(v)})
    return children


_namedtuple_wrappers: dict[type, type] = {}


def _wrap_tuple(value: tuple) -> Any:
    elements = [wrap_or_unwrap(v) for v in value]
    if type(value) is tuple:
        return _TupleWrapper(elements)
    fields = getattr(value, "_fields", None)
    if fields is None:
        # A tuple subclass that is not a namedtuple: keep the plain-tuple behaviour rather than guessing
        # how to construct the subclass.
        return _TupleWrapper(elements)
    original = type(value)
    wrapper_type = _namedtuple_wrappers.get(original)
    if wrapper_type is None:
        # A subclass of both the namedtuple and Trackable keeps field access and isinstance checks working.
        wrapper_type = type(original.__name__, (_NamedTupleTrackable, original), {"__slots__": ()})
        _namedtuple_wrappers[original] = wrapper_type
    wrapped: _NamedTupleTrackable = tuple.__new__(wrapper_type, elements)
    wrapped._maybe_initialize_trackable()
    return wrapped


class _NamedTupleTrackable(_ContainerTrackable):
    """Mixin for namedtuple wrappers; see `_wrap_tuple`."""

    def _content_children(self) -> dict:
        return _tuple_children(self)  # type: ignore[arg-type]  # a namedtuple too (see _wrap_tuple)

    def _trackable_children(self) -> dict:
        return self._content_children()


def list_children(obj: Any) -> list[TrackableReference]:
    if isinstance(obj, Trackable):
        return [TrackableReference(n, c) for n, c in obj._trackable_children().items()]
    return []


def breadth_first_traversal(
    root: Any, attached_dependencies: Iterable[TrackableReference] = ()
) -> tuple[list[Any], dict[int, tuple[TrackableReference, ...]], list[list[TrackableReference]]]:
    """All objects reachable from `root`, in TF's node order, with the first (shortest) path to each.

    Returns (objects, paths, children): `paths[id(obj)]` is a tuple of TrackableReference from the root;
    `children[i]` lists the references of objects[i] (repeated edges to already-seen objects included).
    `attached_dependencies` are extra children of the root (a `Checkpoint(root=...)`'s kwargs and
    save_counter), listed after the root's own.
    """
    objects = []
    paths: dict[int, tuple[TrackableReference, ...]] = {id(root): ()}
    children = []
    queue = collections.deque([root])
    while queue:
        obj = queue.popleft()
        objects.append(obj)
        refs = list_children(obj)
        if obj is root:
            refs.extend(attached_dependencies)
        children.append(refs)
        for ref in refs:
            if id(ref.ref) not in paths:
                paths[id(ref.ref)] = paths[id(obj)] + (ref,)
                queue.append(ref.ref)
    return objects, paths, children


# --- slot variables: an optimizer's per-variable state ("m" and "v" of Adam for each trained variable) ---

OPTIMIZER_SLOTS_NAME = _ESCAPE_CHAR + "OPTIMIZER_SLOT"


def slot_variable_key(variable_path: str, optimizer_path: str, slot_name: str) -> str:
    """Key prefix of a slot variable (TF): `<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot name>`."""
    return f"{variable_path}/{OPTIMIZER_SLOTS_NAME}/{optimizer_path}/{escape_local_name(slot_name)}"


def has_slots(obj: Any) -> bool:
    """Does `obj` hold slot variables? TF's protocol: `get_slot_names()` and `get_slot(variable, name)`."""
    return (
        isinstance(obj, Trackable)
        and callable(getattr(obj, "get_slot_names", None))
        and callable(getattr(obj, "get_slot", None))
    )


def slot_variables(objects: list) -> list[tuple[int, int, str, Any]]:
    """(optimizer index, original variable index, slot name, slot variable) of every slot that the objects
    hold for one another, in the order TF numbers their nodes: optimizers in node order, each one's slot
    names in `get_slot_names()` order, original objects in node order."""
    found = []
    for opt_index, optimizer in enumerate(objects):
        if not has_slots(optimizer):
            continue
        for slot_name in optimizer.get_slot_names():
            for var_index, original in enumerate(objects):
                try:
                    slot = optimizer.get_slot(original, slot_name)
                except (AttributeError, KeyError):
                    slot = None
                if slot is not None:
                    found.append((opt_index, var_index, slot_name, slot))
    return found


class SlotVariables(AutoTrackable):
    """Slot variables for object-based checkpoints: the part of an optimizer that a checkpoint holds.

    TF's optimizers (`tf.compat.v1.train.AdamOptimizer`, `tf.keras.optimizers.legacy.*`) save, for each
    variable they train, state variables called slots ("m" and "v" for Adam) as `slot_variables` of the
    optimizer's node, under keys such as `model/w/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE`.
    Declare them here and put this object where the optimizer sits in the checkpoint's tree:

    >>> opt = saverkit.train.SlotVariables()
    >>> opt.beta1_power = saverkit.Variable(0.9, name="beta1_power")     # non-slot state: plain attributes
    >>> opt.add_slot(model.w, "m", saverkit.Variable(np.zeros(3, np.float32), name="w/Adam"))
    >>> saverkit.train.Checkpoint(model=model, optimizer=opt).restore(path, session=sess).assert_consumed()

    `Checkpoint` then saves and restores the slots as TF does (TF restores them into its optimizer, and
    the reverse). A slot added after `restore` gets its value when added. `saverkit inspect --object-graph
    CKPT` shows a checkpoint's optimizer nodes, their attributes and slots, to mirror them. Any trackable
    with TF's `get_slot_names()`/`get_slot(var, name)` methods works the same way.
    """

    _self_slots: dict[str, dict[int, tuple[Any, Any]]]  # set by __init__ (object.__setattr__)
    _self_pending_slots: dict[tuple[int, str], tuple[Any, list[Any]]]

    def __init__(self, **dependencies: Any) -> None:
        object.__setattr__(self, "_self_slots", {})  # slot name -> {id(variable): (variable, slot)}
        object.__setattr__(self, "_self_pending_slots", {})  # (id(var), name) -> (var, [CheckpointPosition])
        for name, value in dependencies.items():
            setattr(self, name, value)

    def add_slot(self, var: Any, slot_name: str, slot_variable: Any = None) -> Any:
        """Declare `slot_variable` as the `slot_name` slot of `var` and return it. Without one, a variable of
        zeros shaped like `var` named `<var's name>/<slot_name>` (not trainable) is made."""
        if not is_variable(var):
            raise TypeError(f"add_slot: {var!r} is not a variable")
        if slot_variable is None:
            slot_variable = _zeros_like_variable(var, slot_name)
        elif not is_variable(slot_variable):
            raise TypeError(
                f"add_slot: the slot {slot_name!r} of {var.name!r} must be a variable, got {slot_variable!r}"
            )
        slots = self._self_slots.setdefault(slot_name, {})
        existing = slots.get(id(var))
        if existing is not None and existing[1] is not slot_variable:
            raise ValueError(f"{var.name!r} already has a slot {slot_name!r}: {existing[1]!r}")
        slots[id(var)] = (var, slot_variable)
        _, positions = self._self_pending_slots.pop((id(var), slot_name), (None, ()))
        for position in sorted(positions, key=lambda p: p.restore_uid, reverse=True):  # newest restore wins
            position.restore(slot_variable)
        return slot_variable

    def get_slot(self, var: Any, name: str) -> Any:
        """The `name` slot of `var`, or None."""
        entry = self._self_slots.get(name, {}).get(id(var))
        return None if entry is None else entry[1]

    def get_slot_names(self) -> list[str]:
        return sorted(self._self_slots)

    def _defer_slot_restoration(self, var: Any, slot_name: str, position: Any) -> None:
        """A checkpoint has a value for a slot not declared yet: restore it when `add_slot` declares it."""
        self._self_pending_slots.setdefault((id(var), slot_name), (var, []))[1].append(position)


def _zeros_like_variable(var: Any, slot_name: str) -> Any:
    import numpy as np

    from saverkit import Variable

    if not var.shape.is_fully_defined():
        raise ValueError(f"add_slot: {var.name!r} has no fully defined shape; pass the slot variable")
    g = var.graph
    with g.as_default(), g.name_scope(None), g.control_dependencies(None):
        value = np.zeros(var.shape.as_list(), dtype=var.dtype.base_dtype.as_numpy_dtype)
        return Variable(value, name=f"{var.op.name}/{slot_name}", trainable=False)
