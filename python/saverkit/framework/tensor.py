"""``Tensor``: the ``value_index``-th output of an :class:`Operation`, an edge of the graph."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from saverkit import dtypes
from saverkit.framework.tensor_shape import TensorShape, as_shape

if TYPE_CHECKING:
    from saverkit.framework.graph import Graph
    from saverkit.framework.operation import Operation

_UNKNOWN_SHAPE = TensorShape(None)


class Tensor:
    """The ``value_index``-th output of an Operation: a symbolic value computed when a Session runs it."""

    __slots__ = ("_op", "_value_index", "_dtype", "_shape", "_consumers", "__weakref__")

    def __init__(
        self, op: Operation, value_index: int, dtype: dtypes.DType, shape: TensorShape = _UNKNOWN_SHAPE
    ) -> None:
        self._op = op
        self._value_index = value_index
        self._dtype = dtype
        self._shape = shape  # the static shape, refined by set_shape
        # None, the one consuming Operation, or a list of them: most tensors have one consumer, and a list
        # per tensor was a tenth of a big graph's memory. Op builders add consumers inline.
        self._consumers: Operation | list[Operation] | None = None

    @property
    def op(self) -> Operation:
        return self._op

    @property
    def value_index(self) -> int:
        return self._value_index

    @property
    def dtype(self) -> dtypes.DType:
        return self._dtype

    @property
    def graph(self) -> Graph:
        return self._op._graph

    @property
    def name(self) -> str:
        return f"{self._op._name}:{self._value_index}"

    @property
    def device(self) -> str:
        return self._op._device

    @property
    def shape(self) -> TensorShape:
        return self._shape

    def get_shape(self) -> TensorShape:
        return self._shape

    def set_shape(self, shape: Any) -> None:
        """Refine the static shape; raises ValueError if ``shape`` contradicts what is known."""
        self._shape = self._shape.merge_with(as_shape(shape))

    @property
    def ndim(self) -> int | None:
        return self._shape.rank

    def consumers(self) -> list[Operation]:
        return _consumer_list(self._consumers)

    def eval(self, feed_dict: dict | None = None, session: Any = None) -> Any:
        """The value of this tensor, computed by ``session`` (default: the default session)."""
        return _run_using_default_session(self, feed_dict, self.graph, session)

    def _as_node_def_input(self) -> str:
        return self._op._name if self._value_index == 0 else f"{self._op._name}:{self._value_index}"

    def _as_tf_output(self) -> tuple[Operation, int]:
        return self._op, self._value_index

    def __repr__(self) -> str:
        return f"<saverkit.Tensor '{self.name}' shape={self._shape} dtype={self._dtype.name}>"

    def __str__(self) -> str:
        return f'Tensor("{self.name}", shape={self._shape}, dtype={self._dtype.name})'

    # A symbolic tensor has no value until it runs: refuse the conversions that would silently lie.
    def __bool__(self) -> bool:
        raise TypeError("Using a saverkit Tensor as a Python bool is not allowed; run it in a Session.")

    def __iter__(self) -> NoReturn:
        raise TypeError("A symbolic Tensor is not iterable.")

    def __array__(self, dtype: Any = None, copy: Any = None) -> NoReturn:
        raise TypeError(
            f"Cannot convert a symbolic Tensor ({self.name}) to a numpy array; run it in a Session."
        )

    __hash__ = object.__hash__

    # Operators build ops, TensorFlow style: the right operand takes the left one's dtype.
    def __add__(self, other: Any) -> Tensor:
        return _binary("add", self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _binary("add", other, self, reverse=True)

    def __sub__(self, other: Any) -> Tensor:
        return _binary("subtract", self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _binary("subtract", other, self, reverse=True)

    def __mul__(self, other: Any) -> Tensor:
        return _binary("multiply", self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _binary("multiply", other, self, reverse=True)

    def __matmul__(self, other: Any) -> Tensor:
        return _binary("matmul", self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _binary("matmul", other, self, reverse=True)

    def __neg__(self) -> Tensor:
        from saverkit.framework import math_ops

        return math_ops.negative(self)


_OPERATOR_SCOPES = {"add": "add", "subtract": "sub", "multiply": "mul", "matmul": "matmul"}


def _binary(fn_name: str, x: Any, y: Any, reverse: bool = False) -> Tensor:
    from saverkit.framework import math_ops, ops

    with ops.name_scope(None, _OPERATOR_SCOPES[fn_name], [x, y]) as name:
        if reverse:
            y = ops.convert_to_tensor(y)
            x = ops.convert_to_tensor(x, dtype=y.dtype.base_dtype, name="x")
        else:
            x = ops.convert_to_tensor(x)
            y = ops.convert_to_tensor(y, dtype=x.dtype.base_dtype, name="y")
        return getattr(math_ops, fn_name)(x, y, name=name)


# --- bulk readers, for saverkit's own layers: a Saver reads these once per variable of a model, and a loop
# over the slots costs half of what the public properties do.
def dtypes_of(tensors: Iterable[Tensor]) -> list[dtypes.DType]:
    """``[t.dtype for t in tensors]``."""
    return [t._dtype for t in tensors]


def shapes_of(tensors: Iterable[Tensor]) -> list[TensorShape]:
    """``[t.shape for t in tensors]``."""
    return [t._shape for t in tensors]


def devices_of(tensors: Iterable[Tensor]) -> list[str]:
    """``[t.device for t in tensors]``."""
    return [t._op._device for t in tensors]


def ops_of(tensors: Iterable[Tensor]) -> list[Operation]:
    """``[t.op for t in tensors]``."""
    return [t._op for t in tensors]


def op_types_of(tensors: Iterable[Tensor]) -> set[str]:
    """``{t.op.type for t in tensors}``."""
    return {t._op._type for t in tensors}


def _consumer_list(consumers: Any) -> list[Operation]:
    """``Tensor._consumers`` (None, one Operation or a list) as a new list."""
    if consumers is None:
        return []
    return list(consumers) if type(consumers) is list else [consumers]


def _run_using_default_session(fetch: Any, feed_dict: dict | None, graph: Graph, session: Any) -> Any:
    from saverkit.framework.session import get_default_session

    if session is None:
        session = get_default_session()
        if session is None:
            raise ValueError(
                "Cannot evaluate: no default session is registered. Use `with sess.as_default()` "
                "or pass an explicit session."
            )
    if session.graph is not graph:
        raise ValueError("Cannot use the given session: the fetch and the session are in different graphs.")
    return session.run(fetch, feed_dict)
