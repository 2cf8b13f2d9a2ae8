"""Variable state of a Session: one numpy buffer per variable, reached through ``Ref`` handles.

A ``VariableV2`` op outputs a :class:`Ref` (TF's "ref tensor"). Ops taking
``Ref(T)`` inputs (``Assign``, ``AssignAdd``...) write through it; every other
consumer gets the value, as a read-only view of the buffer, so no kernel can
modify a variable behind the store's back and fetches know they must copy.

Assigning a value of the buffer's dtype and shape copies into the existing
buffer (``np.copyto``), so a variable keeps one allocation for its lifetime and
kernels like RestoreV2 can fill it in place (see ``OpKernelContext.output_buffer``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from saverkit import dtypes, errors
from saverkit.framework.tensor_shape import TensorShape

_NP_DTYPES: dict[dtypes.DType, np.dtype] = {}


class Ref:
    """Handle on one variable of a session's store."""

    __slots__ = ("_values", "key", "name", "dtype", "shape", "_np_dtype")

    def __init__(self, values: dict, key: Any, name: str, dtype: dtypes.DType, shape: TensorShape) -> None:
        self._values = values
        self.key = key
        self.name = name
        self.dtype = dtype.base_dtype
        self.shape = shape
        self._np_dtype = numpy_dtype(dtype)

    @property
    def buffer(self) -> np.ndarray | None:
        """The variable's own (writable) buffer, or None while uninitialized."""
        return self._values.get(self.key)

    def is_initialized(self) -> bool:
        return self.key in self._values

    def value(self) -> np.ndarray:
        """A read-only view of the current value; FailedPreconditionError if uninitialized."""
        buf = self._values.get(self.key)
        if buf is None:  # buffer_value's lookup, inline: fetches of 10,000 variables go through here
            raise self._uninitialized()
        view = buf.view()
        view.setflags(write=False)  # a quarter of the cost of .flags.writeable (a fetch of 10,000 variables)
        return view

    def buffer_value(self) -> np.ndarray:
        """The variable's own buffer, for kernels registered with ``reads_buffers`` (they never write it);
        FailedPreconditionError if uninitialized."""
        buf = self._values.get(self.key)
        if buf is None:
            raise self._uninitialized()
        return buf

    def _uninitialized(self) -> errors.FailedPreconditionError:
        return errors.FailedPreconditionError(
            None, None, f"Attempting to use uninitialized value {self.name}"
        )

    def assign(self, value: Any, validate_shape: bool = True, copy_on_write: bool = False) -> None:
        """Store ``value``: copied into the existing buffer when dtype and shape match (no allocation).

        ``copy_on_write`` (resource variables, whose reads are snapshots): if a value read earlier in
        this run still shares the buffer, give the variable a new buffer instead of overwriting it.
        """
        buf = self._values.get(self.key)
        if value is buf and buf is not None:
            return  # a kernel (RestoreV2) already wrote the value straight into the buffer
        value = np.asarray(value)
        if value.dtype != self._np_dtype:
            raise errors.InvalidArgumentError(
                None,
                None,
                f"Cannot assign a value of dtype {value.dtype} to variable {self.name} of dtype "
                f"{self.dtype.name}",
            )
        if buf is not None and buf.shape == value.shape and not (copy_on_write and is_shared(buf)):
            np.copyto(buf, value)
            return
        if validate_shape:
            expected = TensorShape(buf.shape) if buf is not None else self.shape
            if not expected.is_compatible_with(value.shape):
                raise errors.InvalidArgumentError(
                    None,
                    None,
                    f"Assign requires shapes of both tensors to match. lhs shape= {_dims(expected)} "
                    f"rhs shape= {list(value.shape)}",
                )
        self._values[self.key] = np.array(value, copy=True, order="C")

    def adopt(self, value: np.ndarray) -> bool:
        """Make ``value`` the buffer of this uninitialized variable without copying it; False (nothing
        done) if the variable is initialized or ``value`` does not fit it. The caller gives ``value`` up:
        nothing else may hold or write it."""
        return adopt(self._values, self.key, self._np_dtype, self.shape, value)

    def update(self, value: Any, ufunc: Any, copy_on_write: bool = False) -> None:
        """In-place ``buffer = ufunc(buffer, value)`` (AssignAdd / AssignSub)."""
        buf = self.buffer_value()
        value = np.asarray(value)
        if value.shape != buf.shape:
            raise errors.InvalidArgumentError(
                None,
                None,
                f"Cannot update variable with shape {list(buf.shape)} using a Tensor with shape "
                f"{list(value.shape)}, shapes must be equal.",
            )
        if copy_on_write and is_shared(buf):
            self._values[self.key] = ufunc(buf, value)
        else:
            ufunc(buf, value, out=buf)

    def __repr__(self) -> str:
        return f"<Ref {self.name} {self.dtype.name}{_dims(self.shape)}>"


def numpy_dtype(dtype: dtypes.DType) -> np.dtype:
    """The numpy dtype of ``dtype``'s base type (memoized: a fresh session asks once per variable)."""
    np_dtype = _NP_DTYPES.get(dtype)
    if np_dtype is None:
        np_dtype = _NP_DTYPES[dtype] = np.dtype(dtype.base_dtype.as_numpy_dtype)
    return np_dtype


def adopt(values: dict, key: Any, np_dtype: np.dtype, shape: TensorShape, value: Any) -> bool:
    """``Ref.adopt`` on a store's value dict by key, without a Ref (see ``OpKernelContext.adopt_outputs``)."""
    if (key in values or type(value) is not np.ndarray or value.dtype != np_dtype
            or not value.flags.c_contiguous or not value.flags.writeable or value.base is not None):
        return False
    # The static shape of a restored variable is almost always the array's: a tuple compare settles it.
    if shape._dims != value.shape and not shape.is_compatible_with(value.shape):
        return False
    values[key] = value
    return True


def is_shared(buf: np.ndarray) -> bool:
    """Does anything besides the store hold this buffer (a view handed out by a read, or one derived
    from it: every numpy view keeps its owner alive)?"""
    return sys.getrefcount(buf) > _UNSHARED


def _calibrate() -> int:
    # The count for a buffer held only by a store dict, seen through the same call chain as Ref.assign
    # -> _is_shared; measured rather than assumed so it holds across Python versions.
    store = {0: np.empty(1)}
    buf = store[0]
    return _refcount_via_call(buf)


def _refcount_via_call(buf: np.ndarray) -> int:
    return sys.getrefcount(buf)


_UNSHARED = _calibrate()


def _dims(shape: TensorShape) -> str:
    return "<unknown>" if shape.rank is None else str(["?" if d is None else d for d in shape.as_list()])


class VariableStore:
    """All variables of one session, keyed like TF's resource manager: (container, shared_name)."""

    def __init__(self) -> None:
        self._values: dict[Any, np.ndarray] = {}
        self._refs: dict[Any, Ref] = {}

    def ref(self, key: Any, name: str, dtype: dtypes.DType, shape: TensorShape) -> Ref:
        r = self._refs.get(key)
        if r is None:
            r = self._refs[key] = Ref(self._values, key, name, dtype, shape)
        elif r.dtype != dtype.base_dtype:
            raise errors.InvalidArgumentError(
                None,
                None,
                f"Trying to share variable {name}, but specified dtype {dtype.base_dtype.name} and "
                f"found dtype {r.dtype.name}.",
            )
        return r

    def refs(self, specs: list[tuple]) -> list[Ref]:
        """``[self.ref(key, name, dtype, shape) for _, key, name, dtype, shape, np_dtype in specs]`` with
        ``dtype`` already a base dtype and ``np_dtype`` its numpy dtype: new Refs are filled in directly
        (a third of the cost of 10,000 ``ref`` calls when a session binds a 10,000-variable plan)."""
        refs = self._refs
        values = self._values
        new = Ref.__new__
        out = []
        for _, key, name, dtype, shape, np_dtype in specs:
            r = refs.get(key)
            if r is None:
                r = refs[key] = new(Ref)
                r._values = values
                r.key = key
                r.name = name
                r.dtype = dtype
                r.shape = shape
                r._np_dtype = np_dtype
            elif r.dtype != dtype:
                r = self.ref(key, name, dtype, shape)  # raises the dtype clash
            out.append(r)
        return out

    def get(self, key: Any) -> np.ndarray | None:
        return self._values.get(key)

    def keys(self) -> list:
        return list(self._values)

    def clear(self) -> None:
        self._values.clear()
        self._refs.clear()


def resource_key(op: Any) -> tuple[str, bytes, str]:
    """The store key of a VarHandleOp (kept apart from ref variables of the same name, as in TF)."""
    return ("resource", op._attrs["container"], op._attrs["shared_name"].decode() or op._name)


def variable_key(op: Any) -> tuple[bytes, str]:
    """The store key of a VariableV2 op: (container, shared_name or the op's name), as TF."""
    shared = op._attrs.get("shared_name", b"")
    return (op._attrs.get("container", b""), shared.decode() if shared else op._name)
