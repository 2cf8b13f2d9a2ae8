"""Exception classes mirroring TensorFlow's ``tf.errors``.

Every error raised while running ops or reading/writing checkpoints is an
:class:`OpError` subclass carrying one of TensorFlow's canonical error codes, so
code written against ``tf.errors`` can catch the same names here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
ABORTED = 10
OUT_OF_RANGE = 11
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
DATA_LOSS = 15
UNAUTHENTICATED = 16


class OpError(Exception):
    """A failure while running an op or touching a checkpoint.

    Same constructor as TensorFlow's: ``OpError(node_def, op, message, error_code)``.
    """

    def __init__(self, node_def: Any, op: Any, message: str, error_code: int = UNKNOWN) -> None:
        super().__init__(message)
        self._node_def = node_def
        self._op = op
        self._message = message
        self._error_code = error_code

    @property
    def message(self) -> str:
        return self._message

    @property
    def op(self) -> Any:
        return self._op

    @property
    def node_def(self) -> Any:
        return self._node_def

    @property
    def error_code(self) -> int:
        return self._error_code

    def __str__(self) -> str:
        if self._op is not None and getattr(self._op, "name", None):
            return f"{self._message}\n\t [[node {self._op.name}]]"
        return self._message

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (None, None, self._message))


def _make(name: str, code: int, doc: str) -> type[OpError]:
    def __init__(self: OpError, node_def: Any, op: Any, message: str, *args: Any) -> None:
        OpError.__init__(self, node_def, op, message, code)

    return type(name, (OpError,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


if TYPE_CHECKING:  # the classes _make builds below, as a type checker must see them
    class CancelledError(OpError): ...
    class UnknownError(OpError): ...
    class InvalidArgumentError(OpError): ...
    class DeadlineExceededError(OpError): ...
    class NotFoundError(OpError): ...
    class AlreadyExistsError(OpError): ...
    class PermissionDeniedError(OpError): ...
    class ResourceExhaustedError(OpError): ...
    class FailedPreconditionError(OpError): ...
    class AbortedError(OpError): ...
    class OutOfRangeError(OpError): ...
    class UnimplementedError(OpError): ...
    class InternalError(OpError): ...
    class UnavailableError(OpError): ...
    class DataLossError(OpError): ...
    class UnauthenticatedError(OpError): ...
else:
    CancelledError = _make("CancelledError", CANCELLED, "An operation was cancelled.")
    UnknownError = _make("UnknownError", UNKNOWN, "An unknown error.")
    InvalidArgumentError = _make("InvalidArgumentError", INVALID_ARGUMENT, "An argument (dtype, shape, value) is invalid.")
    DeadlineExceededError = _make("DeadlineExceededError", DEADLINE_EXCEEDED, "A deadline expired.")
    NotFoundError = _make("NotFoundError", NOT_FOUND, "A file, tensor or key was not found.")
    AlreadyExistsError = _make("AlreadyExistsError", ALREADY_EXISTS, "An entity already exists.")
    PermissionDeniedError = _make("PermissionDeniedError", PERMISSION_DENIED, "Permission denied.")
    ResourceExhaustedError = _make("ResourceExhaustedError", RESOURCE_EXHAUSTED, "Out of space or memory.")
    FailedPreconditionError = _make("FailedPreconditionError", FAILED_PRECONDITION, "State is not ready (e.g. uninitialized variable).")
    AbortedError = _make("AbortedError", ABORTED, "An operation was aborted.")
    OutOfRangeError = _make("OutOfRangeError", OUT_OF_RANGE, "A value is out of range.")
    UnimplementedError = _make("UnimplementedError", UNIMPLEMENTED, "Not implemented or not supported.")
    InternalError = _make("InternalError", INTERNAL, "An internal invariant was broken.")
    UnavailableError = _make("UnavailableError", UNAVAILABLE, "A resource is unavailable.")
    DataLossError = _make("DataLossError", DATA_LOSS, "Unrecoverable data loss or corruption (bad checksum, truncated file).")
    UnauthenticatedError = _make("UnauthenticatedError", UNAUTHENTICATED, "Not authenticated.")

_CODE_TO_CLASS: dict[int, type[OpError]] = {
    CANCELLED: CancelledError,
    UNKNOWN: UnknownError,
    INVALID_ARGUMENT: InvalidArgumentError,
    DEADLINE_EXCEEDED: DeadlineExceededError,
    NOT_FOUND: NotFoundError,
    ALREADY_EXISTS: AlreadyExistsError,
    PERMISSION_DENIED: PermissionDeniedError,
    RESOURCE_EXHAUSTED: ResourceExhaustedError,
    FAILED_PRECONDITION: FailedPreconditionError,
    ABORTED: AbortedError,
    OUT_OF_RANGE: OutOfRangeError,
    UNIMPLEMENTED: UnimplementedError,
    INTERNAL: InternalError,
    UNAVAILABLE: UnavailableError,
    DATA_LOSS: DataLossError,
    UNAUTHENTICATED: UnauthenticatedError,
}


def exception_type_from_error_code(error_code: int) -> type[OpError]:
    return _CODE_TO_CLASS.get(error_code, UnknownError)


def _raise_from_core(error_code: int, message: str) -> None:
    """Called by the C++ extension to turn a non-OK Status into an exception."""
    raise exception_type_from_error_code(error_code)(None, None, message)
