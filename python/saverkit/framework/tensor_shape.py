"""Partially known shapes, as TensorFlow's ``tf.TensorShape``.

A shape is either of unknown rank (``dims is None``) or a tuple of dimensions,
each an ``int`` or ``None`` for "unknown". Shapes are immutable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from saverkit.protobuf import tensor_shape_pb2


class TensorShape:
    __slots__ = ("_dims",)

    def __init__(self, dims: Any = None) -> None:
        if dims is None:
            self._dims = None
        elif type(dims) is tuple and all(type(d) is int and d >= 0 for d in dims):
            self._dims = dims  # the common case (numpy shapes), kept cheap
        elif isinstance(dims, TensorShape):
            self._dims = dims._dims
        elif isinstance(dims, tensor_shape_pb2.TensorShapeProto):
            self._dims = (
                None if dims.unknown_rank else tuple(None if d.size < 0 else d.size for d in dims.dim)
            )
        elif isinstance(dims, (str, bytes)):
            raise TypeError(f"A TensorShape cannot be built from {dims!r}")
        elif isinstance(dims, Iterable):
            self._dims = tuple(_as_dim(d) for d in dims)
        else:
            self._dims = (_as_dim(dims),)

    # --- inspection ---------------------------------------------------------------
    @property
    def dims(self) -> list[int | None] | None:
        return None if self._dims is None else list(self._dims)

    @property
    def rank(self) -> int | None:
        return None if self._dims is None else len(self._dims)

    ndims = rank

    def as_list(self) -> list[int | None]:
        if self._dims is None:
            raise ValueError("as_list() is not defined on an unknown TensorShape.")
        return list(self._dims)

    def is_fully_defined(self) -> bool:
        return self._dims is not None and None not in self._dims

    def num_elements(self) -> int | None:
        dims = self._dims
        if dims is None or None in dims:  # not fully defined
            return None
        n = 1
        for d in dims:
            n *= d
        return n

    def assert_is_fully_defined(self) -> None:
        if not self.is_fully_defined():
            raise ValueError(f"Shape {self} is not fully defined")

    # --- combination -------------------------------------------------------------
    def is_compatible_with(self, other: Any) -> bool:
        other = as_shape(other)
        if self._dims == other._dims or self._dims is None or other._dims is None:
            return True
        if len(self._dims) != len(other._dims):
            return False
        return all(a is None or b is None or a == b for a, b in zip(self._dims, other._dims, strict=False))

    def merge_with(self, other: Any) -> TensorShape:
        other = as_shape(other)
        if self._dims == other._dims or self._dims is None:
            return other
        if other._dims is None:
            return self
        if not self.is_compatible_with(other):
            raise ValueError(f"Shapes {self} and {other} are not compatible")
        return TensorShape([a if a is not None else b for a, b in zip(self._dims, other._dims, strict=False)])

    def concatenate(self, other: Any) -> TensorShape:
        other = as_shape(other)
        if self._dims is None or other._dims is None:
            return TensorShape(None)
        return TensorShape(self._dims + other._dims)

    def with_rank(self, rank: int) -> TensorShape:
        try:
            return self.merge_with(unknown_shape(rank))
        except ValueError:
            raise ValueError(f"Shape {self} must have rank {rank}") from None

    def as_proto(self) -> tensor_shape_pb2.TensorShapeProto:
        if self._dims is None:
            return tensor_shape_pb2.TensorShapeProto(unknown_rank=True)
        return tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d is None else d) for d in self._dims]
        )

    # --- python protocol -----------------------------------------------------------
    def __len__(self) -> int:
        if self._dims is None:
            raise ValueError("Cannot take the length of a shape with unknown rank.")
        return len(self._dims)

    def __iter__(self) -> Iterator[int | None]:
        if self._dims is None:
            raise ValueError("Cannot iterate over a shape with unknown rank.")
        return iter(self._dims)

    def __getitem__(self, key: Any) -> Any:
        if self._dims is None:
            return TensorShape(None) if isinstance(key, slice) else None
        return TensorShape(self._dims[key]) if isinstance(key, slice) else self._dims[key]

    def __bool__(self) -> bool:
        return self._dims is not None

    def __eq__(self, other: object) -> bool:
        try:
            other = as_shape(other)
        except (TypeError, ValueError):
            return NotImplemented
        return self._dims == other._dims

    def __hash__(self) -> int:
        return hash(self._dims)

    def __repr__(self) -> str:
        return f"TensorShape({self.dims})"

    def __str__(self) -> str:
        if self._dims is None:
            return "<unknown>"
        if len(self._dims) == 1:
            return f"({self._dims[0]},)"
        return "(" + ", ".join(str(d) for d in self._dims) + ")"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (TensorShape, (self.dims,))


def _as_dim(d: Any) -> int | None:
    if d is None:
        return None
    if hasattr(d, "value") and not isinstance(d, int):  # a TF Dimension
        d = d.value
        if d is None:
            return None
    try:
        d = int(d.__index__())
    except AttributeError:
        raise TypeError(f"Dimension value must be an integer or None, got {d!r}") from None
    if d < 0:
        if d == -1:
            return None
        raise ValueError(f"Dimension {d} must be >= 0")
    return d


def as_shape(shape: Any) -> TensorShape:
    return shape if isinstance(shape, TensorShape) else TensorShape(shape)


_INTERNED: dict[tuple, TensorShape] = {}


def shape_of(dims: tuple[int, ...]) -> TensorShape:
    """The TensorShape of a numpy shape, shared between equal shapes (they are immutable): a big graph
    holds a shape per tensor, and most of them repeat."""
    shape = _INTERNED.get(dims)
    if shape is None:
        shape = TensorShape(dims)
        if len(_INTERNED) < 10_000:
            _INTERNED[dims] = shape
    return shape


def unknown_shape(rank: int | None = None) -> TensorShape:
    return TensorShape(None if rank is None else [None] * rank)


def scalar() -> TensorShape:
    return _SCALAR


_SCALAR = TensorShape(())
