"""The graph layer's TensorFlow-style module: ``Graph``, ``Operation``, ``Tensor`` (defined in
:mod:`~saverkit.framework.graph`, :mod:`~saverkit.framework.operation` and
:mod:`~saverkit.framework.tensor`) and the ``tf.*`` functions that act on the default graph: name scopes,
devices, control dependencies, collections, tensor conversion.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from saverkit import _gc, dtypes
from saverkit.framework.graph import (  # noqa: F401  (re-exported: saverkit.framework.ops is TF's module)
    _MAX_VALID_BASE_NAMES,
    _VALID_BASE_NAMES,
    _VALID_OP_NAME_REGEX,
    _VALID_SCOPE_NAME_REGEX,
    GRAPH_DEF_VERSION,
    GRAPH_DEF_VERSION_MIN_CONSUMER,
    GRAPH_DEF_VERSION_MIN_PRODUCER,
    Graph,
    GraphKeys,
    _ControlDependencies,
    _get_graph_from_inputs,
    _NameScope,
    get_default_graph,
    pushed_default,
    reset_default_graph,
)
from saverkit.framework.meta_graph import prepend_name_scope, strip_name_scope  # noqa: F401 (TF names)
from saverkit.framework.operation import NO_INPUTS, Operation  # noqa: F401
from saverkit.framework.tensor import _UNKNOWN_SHAPE, Tensor, _consumer_list  # noqa: F401

_gc_paused = _gc.paused  # kept for importer.py

# --- module-level context managers and collection helpers (tf.* names) ----------------------------


def name_scope(name: str | None, default_name: str | None = None, values: Any = None) -> _NameScope:
    """``with name_scope("layer") as scope:`` -- TF1 signature (``default_name`` used when name is None);
    the scope opens in the graph of ``values`` (made the default graph inside) or the default graph."""
    n = default_name if name is None else name
    default = get_default_graph()
    g = _get_graph_from_inputs(values) if values else default
    return _NameScope(g, n, make_default=g is not default)


def device(device_name_or_function: Any) -> contextlib.AbstractContextManager:
    return get_default_graph().device(device_name_or_function)


def control_dependencies(control_inputs: Any) -> contextlib.AbstractContextManager:
    return get_default_graph().control_dependencies(control_inputs)


def colocate_with(op: Any, ignore_existing: bool = False) -> contextlib.AbstractContextManager:
    return get_default_graph().colocate_with(op, ignore_existing)


def get_name_scope() -> str:
    return get_default_graph().get_name_scope()


def add_to_collection(name: Any, value: Any) -> None:
    get_default_graph().add_to_collection(name, value)


def add_to_collections(names: Any, value: Any) -> None:
    get_default_graph().add_to_collections(names, value)


def get_collection(key: Any, scope: str | None = None) -> list:
    return get_default_graph().get_collection(key, scope)


def get_collection_ref(key: Any) -> list:
    return get_default_graph().get_collection_ref(key)


def get_all_collection_keys() -> list[str]:
    return get_default_graph().get_all_collection_keys()


def clear_collection(key: Any) -> None:
    get_default_graph().clear_collection(key)


def name_from_scope_name(name: str) -> str:
    return name[:-1] if name and name[-1] == "/" else name


def _binary_overloads(cls: type) -> None:
    """Give ``cls`` (anything convertible to a Tensor, e.g. Variable) the Tensor operators."""
    for name in (
        "__add__",
        "__radd__",
        "__sub__",
        "__rsub__",
        "__mul__",
        "__rmul__",
        "__matmul__",
        "__rmatmul__",
        "__neg__",
    ):
        setattr(cls, name, lambda self, *a, _n=name: getattr(Tensor, _n)(convert_to_tensor(self), *a))


# --- tensor conversion ----------------------------------------------------------------------------

_conversion_functions: list[tuple[int, int, type, Callable]] = []


def register_tensor_conversion_function(
    base_type: Any, conversion_func: Callable, priority: int = 100
) -> None:
    """Register ``conversion_func(value, dtype=None, name=None, as_ref=False) -> Tensor`` for base_type."""
    _conversion_functions.append((priority, len(_conversion_functions), base_type, conversion_func))
    _conversion_functions.sort(key=lambda e: (e[0], e[1]))


def convert_to_tensor(
    value: Any,
    dtype: Any = None,
    name: str | None = None,
    as_ref: bool = False,
    preferred_dtype: Any = None,
    dtype_hint: Any = None,
) -> Tensor:
    """A Tensor for ``value``: tensors pass through, Variables give their value, Python/numpy values
    become ``Const`` ops."""
    if isinstance(value, Tensor):
        if dtype is not None and not dtypes.as_dtype(dtype).is_compatible_with(value.dtype):
            raise ValueError(
                f"Tensor conversion requested dtype {dtypes.as_dtype(dtype).name} for Tensor "
                f"with dtype {value.dtype.name}: {value!r}"
            )
        return value
    dtype = dtypes.as_dtype(dtype) if dtype is not None else None
    preferred = preferred_dtype if preferred_dtype is not None else dtype_hint
    for _, _, base_type, fn in _conversion_functions:
        if not isinstance(value, base_type):
            continue
        if dtype is None and preferred is not None:
            try:
                ret = fn(value, dtype=dtypes.as_dtype(preferred), name=name, as_ref=as_ref)
            except (TypeError, ValueError):
                ret = NotImplemented
            if ret is not NotImplemented:
                return ret
        ret = fn(value, dtype=dtype, name=name, as_ref=as_ref)
        if ret is NotImplemented:
            continue
        if not isinstance(ret, Tensor):
            raise RuntimeError(f"Conversion function {fn!r} for {type(value)} returned non-Tensor: {ret!r}")
        if dtype is not None and not dtype.is_compatible_with(ret.dtype):
            raise ValueError(
                f"Tensor conversion requested dtype {dtype.name} for {value!r}, which converted "
                f"to {ret.dtype.name}"
            )
        return ret
    raise TypeError(f"Cannot convert {value!r} of type {type(value).__name__} to a Tensor.")


def convert_n_to_tensor(
    values: Any, dtype: Any = None, name: str | None = None, preferred_dtype: Any = None
) -> list[Tensor]:
    return [
        convert_to_tensor(
            v, dtype, name=None if name is None else f"{name}_{i}", preferred_dtype=preferred_dtype
        )
        for i, v in enumerate(values)
    ]


# --- collection protos (used by meta graph export/import) -----------------------------------------

_proto_functions: dict[str, tuple[Any, Callable | None, Callable | None]] = {}


def register_proto_function(
    collection_name: str,
    proto_type: Any = None,
    to_proto: Callable | None = None,
    from_proto: Callable | None = None,
) -> None:
    """How items of a collection are written to / read from a MetaGraphDef's CollectionDef."""
    if to_proto and not callable(to_proto):
        raise TypeError("to_proto must be callable.")
    if from_proto and not callable(from_proto):
        raise TypeError("from_proto must be callable.")
    _proto_functions[collection_name] = (proto_type, to_proto, from_proto)


def get_collection_proto_type(collection_name: str) -> Any:
    return _proto_functions.get(collection_name, (None, None, None))[0]


def get_to_proto_function(collection_name: str) -> Callable | None:
    return _proto_functions.get(collection_name, (None, None, None))[1]


def get_from_proto_function(collection_name: str) -> Callable | None:
    return _proto_functions.get(collection_name, (None, None, None))[2]
