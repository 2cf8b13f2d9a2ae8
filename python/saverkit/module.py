"""`saverkit.Module`: a named container of variables and other modules, like `tf.Module`.

Assigning a variable, a Module, or a list/dict/tuple of them to an attribute tracks it, so that
`saverkit.train.Checkpoint` saves the tree under TF's object-based keys
(`model/layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE`) and TF restores it into the same `tf.Module` tree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from saverkit.trackable import AutoTrackable, is_variable

_F = TypeVar("_F", bound=Callable[..., Any])

_CAMEL_TO_SNAKE_R = re.compile(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))")
_VALID_IDENTIFIER = re.compile(r"^[a-zA-Z_]([a-zA-Z0-9_])*$")


def valid_identifier(name: str) -> bool:
    return bool(_VALID_IDENTIFIER.match(name))


def camel_to_snake(value: str) -> str:
    return _CAMEL_TO_SNAKE_R.sub(r"_\1", value).lower()


class Module(AutoTrackable):
    """Base class for a model component owning variables and submodules (see `tf.Module`).

    >>> class Dense(saverkit.Module):
    ...     def __init__(self, n_in, n_out, name=None):
    ...         super().__init__(name=name)
    ...         with self.name_scope:
    ...             self.w = saverkit.Variable(saverkit.zeros([n_in, n_out]), name="w")
    ...             self.b = saverkit.Variable(saverkit.zeros([n_out]), name="b")

    `variables`, `trainable_variables`, `non_trainable_variables` and `submodules` find what the module
    holds by reflection over its attributes, in TF's order: the module's own attributes sorted by name
    (containers flattened, dicts by sorted key), then each submodule's in the order they were found.
    This is graph mode: the module's name scope is made unique in the default graph when it is created
    (`dense`, `dense_1`, ...), as TF1's `tf.Module` does.
    """

    # Tracking bookkeeping (see saverkit.trackable) that reflection must not mistake for user state.
    _TF_MODULE_IGNORED_PROPERTIES = frozenset(
        (
            "_self_dependencies",
            "_self_deferred_dependencies",
            "_self_name_based_restores",
            "_self_update_uid",
        )
    )

    def __init__(self, name: str | None = None):
        if name is None:
            name = camel_to_snake(type(self).__name__)
        elif not valid_identifier(name):
            raise ValueError(
                f"{name!r} is not a valid module name. Module names must be valid Python identifiers "
                "(e.g. a valid class name)."
            )
        from saverkit import name_scope

        self._name = name
        with name_scope(name) as scope_name:
            self._scope_name = scope_name

    @property
    def name(self) -> str:
        """The name passed to (or derived by) the constructor; not the full `name_scope`."""
        return self._name

    @property
    def name_scope(self) -> Any:
        """A context manager re-entering this module's (unique, absolute) name scope."""
        from saverkit import name_scope

        return name_scope(self._scope_name)

    @property
    def variables(self) -> tuple:
        """Variables owned by this module and its submodules (own attributes by name, then submodules)."""
        return tuple(self._flatten(predicate=is_variable))

    @property
    def trainable_variables(self) -> tuple:
        return tuple(self._flatten(predicate=_is_trainable_variable))

    @property
    def non_trainable_variables(self) -> tuple:
        return tuple(self._flatten(predicate=_is_non_trainable_variable))

    @property
    def submodules(self) -> tuple:
        """All modules reachable through attributes (and their attributes, recursively)."""
        return tuple(self._flatten(predicate=_is_module))

    def _flatten(
        self,
        recursive: bool = True,
        predicate: Callable[[Any], bool] | None = None,
        attribute_traversal_key: Callable[[str], Any] | None = None,
        with_path: bool = False,
    ) -> Iterator[Any]:
        """Leaves of this module's attributes (and, if `recursive`, of submodules) matching `predicate`.

        Attributes are visited in sorted name order (or by `attribute_traversal_key`); each value is
        flattened (lists/tuples in order, dicts by sorted key). Without `with_path` a leaf reachable twice is
        yielded once; with it, every path is yielded as (path tuple, leaf).
        """
        if predicate is None:
            predicate = lambda _: True  # noqa: E731
        return _flatten_module(
            self,
            recursive=recursive,
            predicate=predicate,
            attributes_to_ignore=self._TF_MODULE_IGNORED_PROPERTIES,
            attribute_traversal_key=attribute_traversal_key,
            with_path=with_path,
        )

    @classmethod
    def with_name_scope(cls, method: _F) -> _F:
        """Decorator: run `method` inside the module's name scope."""

        @functools.wraps(method)
        def method_with_name_scope(self: Module, *args: Any, **kwargs: Any) -> Any:
            with self.name_scope:
                return method(self, *args, **kwargs)

        return method_with_name_scope  # type: ignore[return-value]  # functools.wraps keeps the signature

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} name={self._name!r}>"


def _is_trainable_variable(obj: Any) -> bool:
    return is_variable(obj) and getattr(obj, "trainable", False)


def _is_non_trainable_variable(obj: Any) -> bool:
    return is_variable(obj) and not getattr(obj, "trainable", False)


def _is_module(obj: Any) -> bool:
    return isinstance(obj, Module)


def _flatten_with_paths(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, leaf) pairs of a nested structure, with TF `nest` ordering (dicts by sorted key)."""
    if isinstance(value, dict):
        try:
            keys = sorted(value)
        except TypeError as e:
            raise TypeError("nest only supports dicts with sortable keys.") from e
        for k in keys:
            yield from _flatten_with_paths(value[k], path + (k,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _flatten_with_paths(v, path + (i,))
    else:
        yield path, value


def _flatten_module(
    module: Module,
    recursive: bool,
    predicate: Callable[[Any], bool],
    attribute_traversal_key: Callable[[str], Any] | None,
    attributes_to_ignore: Any,
    with_path: bool,
    module_path: tuple = (),
    seen: set[int] | None = None,
    recursion_stack: list[int] | None = None,
) -> Iterator[Any]:
    # Mirrors tf.Module's traversal exactly (including its order), so `variables` lists match TF's.
    module_id = id(module)
    if seen is None:
        seen = {module_id}
    if recursion_stack is None:
        recursion_stack = []
    if module_id in recursion_stack:
        recursive = False
    module_dict = vars(module)
    submodules = []
    for key in sorted(module_dict, key=attribute_traversal_key):
        if key in attributes_to_ignore:
            continue
        prop = module_dict[key]
        try:
            leaves = list(_flatten_with_paths(prop))
        except Exception as cause:
            raise ValueError(f"Error processing property {key!r} of {prop!r}") from cause
        for leaf_path, leaf in leaves:
            leaf_path = (key,) + leaf_path
            if not with_path:
                if id(leaf) in seen:
                    continue
                seen.add(id(leaf))
            if predicate(leaf):
                yield (module_path + leaf_path, leaf) if with_path else leaf
            if recursive and _is_module(leaf):
                submodules.append((module_path + leaf_path, leaf))
    recursion_stack.append(module_id)
    for submodule_path, submodule in submodules:
        yield from _flatten_module(
            submodule,
            recursive=recursive,
            predicate=predicate,
            attribute_traversal_key=attribute_traversal_key,
            attributes_to_ignore=submodule._TF_MODULE_IGNORED_PROPERTIES,
            with_path=with_path,
            module_path=submodule_path,
            seen=seen,
            recursion_stack=recursion_stack,
        )
    recursion_stack.pop()
