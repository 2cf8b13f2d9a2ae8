"""The op table: op type -> OpDef (what the op is) + kernel (how to run it) + shape function.

OpDefs are data: ``ops.pbtxt`` next to this file holds TensorFlow's own OpDefs
for every op saverkit runs (regenerate with ``tools/gen_ops_pbtxt.py``), so the
graphs we write validate in TensorFlow and meta graphs can carry an exact
``stripped_op_list``. Kernels and shape functions are registered by the op
modules (``array_ops``, ``state_ops``, ``io_ops``...) when they are imported.

A kernel is ``kernel(ctx, *inputs) -> list of outputs``: ``ctx`` is the
:class:`saverkit.framework.executor.OpKernelContext` of the node (``ctx.op``,
``ctx.attr(name)``, ``ctx.variables``...), ``inputs`` are numpy arrays (or, for
``Ref(...)`` inputs, :class:`saverkit.framework.variable_store.Ref` objects) and
it returns one value per output of the op. ``expensive=True`` marks kernels the
session runs on its thread pool (blocking I/O that releases the GIL); cheap
kernels run inline, as TensorFlow's executor does.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import text_format

from saverkit import dtypes
from saverkit.framework import attrs as attrs_lib
from saverkit.protobuf import op_def_pb2
from saverkit.protobuf.op_def_pb2 import OpDef

Kernel = Callable[..., Any]
ShapeFn = Callable[[Any], list]

_OPS_PBTXT = pathlib.Path(__file__).with_name("ops.pbtxt")


class ArgSpec:
    """One input or output argument of an OpDef, in a form cheap to consult."""

    __slots__ = ("name", "dtype", "type_attr", "number_attr", "type_list_attr", "is_ref")
    name: str
    dtype: dtypes.DType | None  # fixed by the OpDef, else named by one of the attrs below
    # Attr names, or None: the OpDef sets type_attr when dtype is None, so the lookups need no check
    # (Any rather than str | None: their users rely on that invariant).
    type_attr: Any
    number_attr: Any
    type_list_attr: Any
    is_ref: bool

    def __init__(self, arg: op_def_pb2.OpDef.ArgDef) -> None:
        self.name = arg.name
        self.dtype = dtypes.as_dtype(arg.type) if arg.type else None
        self.type_attr = arg.type_attr or None
        self.number_attr = arg.number_attr or None
        self.type_list_attr = arg.type_list_attr or None
        self.is_ref = arg.is_ref

    def types(self, attrs: dict[str, Any]) -> list[dtypes.DType]:
        """The flat list of tensor types this argument stands for, given the op's attrs."""
        if not (self.type_list_attr or self.number_attr):
            t = self.dtype if self.dtype is not None else attrs[self.type_attr]
            return [t._as_ref if self.is_ref else t]
        if self.type_list_attr:
            ts = list(attrs[self.type_list_attr])
        else:
            t = self.dtype if self.dtype is not None else attrs[self.type_attr]
            ts = [t] * attrs[self.number_attr] if self.number_attr else [t]
        return [t._as_ref for t in ts] if self.is_ref else ts


class OpInfo:
    """Everything saverkit knows about one op type."""

    __slots__ = (
        "name",
        "op_def",
        "inputs",
        "outputs",
        "attr_types",
        "defaults",
        "allowed",
        "minimums",
        "kernel",
        "expensive",
        "output_buffers",
        "hoist",
        "reads_buffers",
        "shape_fn",
        "has_ref_inputs",
        "is_stateful",
        "simple_inputs",
        "constrained",
        "_type_attrs",
        "_types_cache",
    )

    def __init__(self, op_def: OpDef) -> None:
        self.name = op_def.name
        self.op_def = op_def
        self.inputs = [ArgSpec(a) for a in op_def.input_arg]
        self.outputs = [ArgSpec(a) for a in op_def.output_arg]
        self.attr_types = {a.name: a.type for a in op_def.attr}
        self.defaults = {
            a.name: attrs_lib.to_python(a.default_value, a.type)
            for a in op_def.attr
            if a.HasField("default_value")
        }
        self.allowed = {
            a.name: attrs_lib.to_python(a.allowed_values, a.type)
            for a in op_def.attr
            if a.HasField("allowed_values")
        }
        self.minimums = {a.name: a.minimum for a in op_def.attr if a.has_minimum}
        self.has_ref_inputs = any(a.is_ref for a in self.inputs)
        self.is_stateful = op_def.is_stateful
        # Precomputed for op creation: most ops have one tensor per argument.
        self.simple_inputs = not any(a.number_attr or a.type_list_attr for a in self.inputs)
        self.constrained = [k for k in self.attr_types if k in self.allowed or k in self.minimums]
        # The attrs that decide the op's input/output types: their values key a small cache, since a big
        # graph asks the same question (e.g. "Identity with T=float32") thousands of times.
        self._type_attrs = tuple(
            dict.fromkeys(
                k
                for a in (*self.inputs, *self.outputs)
                for k in (a.type_attr, a.number_attr, a.type_list_attr)
                if k
            )
        )
        self._types_cache: dict[tuple, tuple[list, list]] = {}
        self.kernel: Kernel | None = None
        self.expensive = False
        self.output_buffers = False
        self.hoist = False
        self.reads_buffers = False
        self.shape_fn: ShapeFn | None = None

    def input_types(self, attrs: dict[str, Any]) -> list[dtypes.DType]:
        return list(self._types(attrs)[0])

    def output_types(self, attrs: dict[str, Any]) -> list[dtypes.DType]:
        return list(self._types(attrs)[1])

    def _types(self, attrs: dict[str, Any]) -> tuple[list, list]:
        names = self._type_attrs
        try:
            if len(names) == 1:  # the common case (T or dtype): that value is the key
                key = attrs[names[0]]
                if type(key) is list:
                    # A long list (a Saver's SaveV2: one dtype per variable) costs more to hash than to
                    # expand, and is unlikely to come again: not cached.
                    key = tuple(key) if len(key) <= _MAX_CACHED_LIST else None
            else:
                values = [attrs[k] for k in names]
                if any(type(v) is list and len(v) > _MAX_CACHED_LIST for v in values):
                    raise TypeError  # not cached (see above)
                key = tuple([tuple(v) if type(v) is list else v for v in values])
            cached = None if key is None else self._types_cache.get(key)
        except (KeyError, TypeError):  # a missing attr raises below; an unhashable one skips the cache
            key, cached = None, None
        if cached is None:
            inputs: list = []
            outputs: list = []
            for a in self.inputs:  # extend, not a nested comprehension: a list arg may be 10,000 long
                inputs.extend(a.types(attrs))
            for a in self.outputs:
                outputs.extend(a.types(attrs))
            cached = (inputs, outputs)
            if key is not None and len(self._types_cache) < 1000:
                self._types_cache[key] = cached
        return cached

    def input_is_ref(self, attrs: dict[str, Any]) -> list[bool]:
        if self.simple_inputs:  # one tensor per argument: no need to expand the attrs
            return [a.is_ref for a in self.inputs]
        return [a.is_ref for a in self.inputs for _ in a.types(attrs)]

    def check_attr(self, name: str, value: Any) -> None:
        """Raise ValueError if ``value`` breaks the OpDef's allowed values or minimum for ``name``."""
        allowed = self.allowed.get(name)
        if allowed is not None:
            for v in value if isinstance(value, list) else [value]:
                if v not in allowed:
                    shown = ", ".join(getattr(a, "name", repr(a)) for a in allowed)
                    raise TypeError(
                        f"Value passed to parameter '{name}' has {getattr(v, 'name', repr(v))} "
                        f"not in the list of allowed values for {self.name}: {shown}"
                    )
        minimum = self.minimums.get(name)
        if minimum is not None:
            n = len(value) if isinstance(value, list) else value
            if n < minimum:
                raise ValueError(f"Attr '{name}' of '{self.name}' Op must be at least {minimum}, got {n}")


_lock = threading.Lock()
_OPS: dict[str, OpInfo] = {}
_KERNELS: dict[str, tuple[Kernel, bool, bool, bool, bool]] = {}
_SHAPE_FNS: dict[str, ShapeFn] = {}
_loaded = False


def _load() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        op_list = text_format.Parse(_OPS_PBTXT.read_text(), op_def_pb2.OpList())
        for op_def in op_list.op:
            _add(op_def)
        _loaded = True


def _add(op_def: OpDef) -> OpInfo:
    info = OpInfo(op_def)
    if info.name in _KERNELS:
        _bind(info, _KERNELS[info.name])
    info.shape_fn = _SHAPE_FNS.get(info.name)
    _OPS[info.name] = info
    return info


def get(op_type: str) -> OpInfo | None:
    """The OpInfo of ``op_type``, or None if saverkit does not know that op."""
    info = _OPS.get(op_type)
    if info is None and not _loaded:
        _load()
        info = _OPS.get(op_type)
    return info


def get_op_def(op_type: str) -> OpDef | None:
    info = get(op_type)
    return None if info is None else info.op_def


def registered_ops() -> list[str]:
    _load()
    return sorted(_OPS)


def op_list(op_types: Iterable[str]) -> op_def_pb2.OpList:
    """An OpList of the known OpDefs among ``op_types``, sorted by name (a meta graph's stripped_op_list)."""
    out = op_def_pb2.OpList()
    for name in sorted(set(op_types)):
        info = get(name)
        if info is not None:
            out.op.add().CopyFrom(info.op_def)
    return out


def register_op_def(op_def: OpDef | str) -> OpInfo:
    """Add an op type (an OpDef proto or its text form). Re-registering an identical OpDef is a no-op."""
    if isinstance(op_def, str):
        op_def = text_format.Parse(op_def, OpDef())
    _load()
    with _lock:
        existing = _OPS.get(op_def.name)
        if existing is not None:
            if existing.op_def != op_def:
                raise ValueError(f"Op type {op_def.name!r} is already registered with a different OpDef")
            return existing
        return _add(op_def)


def _bind(info: OpInfo, entry: tuple) -> None:
    """Give ``info`` its kernel and the kernel's flags (an entry of ``_KERNELS``)."""
    info.kernel, info.expensive, info.output_buffers, info.hoist, info.reads_buffers = entry


def register_kernel(
    op_type: str,
    *,
    expensive: bool = False,
    output_buffers: bool = False,
    hoist: bool = False,
    reads_buffers: bool = False,
) -> Callable[[Kernel], Kernel]:
    """Decorator: ``@register_kernel("Add")`` on ``def add(ctx, x, y): return [x + y]``.

    ``expensive``: run on the session's thread pool (blocking I/O). ``output_buffers``: the kernel asks
    ``ctx.output_buffer(i)`` for arrays to write output ``i`` into (the executor works out which).
    ``hoist``: for input-less ops whose outputs are the same on every run of a session (a Const's value,
    a variable's handle): the executor computes them once per session and plan, not once per run, so a
    graph of 10,000 variables does not pay 10,000 kernel calls per step.
    ``reads_buffers``: the kernel only reads its inputs, and holds none past its call but to copy it
    (SaveV2): variables reach it as their own buffers, not as read-only views (views of 10,000 variables
    cost 5.1 ms against 0.8 ms for their buffers, paid by every save and by an async one's caller).
    """

    def decorate(fn: Kernel) -> Kernel:
        _KERNELS[op_type] = (fn, expensive, output_buffers, hoist, reads_buffers)
        info = _OPS.get(op_type)
        if info is not None:
            _bind(info, _KERNELS[op_type])
        return fn

    return decorate


def register_shape_fn(op_type: str) -> Callable[[ShapeFn], ShapeFn]:
    """Decorator for ``fn(op) -> [TensorShape per output]``, run when an op of this type is created."""

    def decorate(fn: ShapeFn) -> ShapeFn:
        _SHAPE_FNS[op_type] = fn
        info = _OPS.get(op_type)
        if info is not None:
            info.shape_fn = fn
        return fn

    return decorate


_MAX_CACHED_LIST = 16  # list attrs longer than this do not key OpInfo's types cache


def complete_attrs(
    op_type: str,
    info: OpInfo | None,
    inputs: list[Any],
    attrs: dict[str, Any],
    output_types: list[Any] | None,
) -> tuple[dict[str, Any], list[dtypes.DType]]:
    """What ``Graph.create_op`` makes of its arguments: the op's attrs as Python values (AttrValue protos
    decoded, type attrs left out inferred from ``inputs`` as TF's C API does, defaults filled in, checked
    complete) and its output types (``output_types`` if given). ``info`` None: an op type without an
    OpDef, whose attrs are kept as given and whose ``output_types`` must be given."""
    stored: dict[str, Any] = {}
    for key, value in attrs.items():
        t = info.attr_types.get(key) if info is not None else None
        stored[key] = attrs_lib.canonicalize(value, t) if t is not None else value
    if info is None:
        if output_types is None:
            raise ValueError(f"Unknown op type {op_type!r}: pass its output dtypes.")
        return stored, [dtypes.as_dtype(t) for t in output_types]
    pos = 0
    for arg in info.inputs:
        for count_attr in (arg.type_list_attr, arg.number_attr):
            if count_attr and count_attr not in stored and count_attr not in info.defaults:
                raise ValueError(f"create_op of {op_type} needs attr {count_attr!r}")
        if arg.type_attr and arg.type_attr not in stored and pos < len(inputs):
            stored[arg.type_attr] = inputs[pos].dtype.base_dtype
        pos += len(arg.types({**info.defaults, **stored}))
    for key, default in info.defaults.items():
        stored.setdefault(key, default)
    missing = [k for k in info.attr_types if k not in stored]
    if missing:
        raise ValueError(f"create_op of {op_type} is missing attrs {missing}")
    input_types, inferred_output_types = info._types(stored)
    if len(inputs) != len(input_types):
        raise ValueError(f"{op_type} takes {len(input_types)} inputs, got {len(inputs)}")
    if output_types is None:
        return stored, list(inferred_output_types)
    return stored, [dtypes.as_dtype(t) for t in output_types]
