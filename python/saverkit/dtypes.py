"""Element types, numbered and named as TensorFlow's ``tf.dtypes``.

A :class:`DType` knows its DataType enum number (the number stored in
checkpoints and graphs), its TF name (``"float32"``, ``"bfloat16"``,
``"string"``...) and its numpy equivalent (``ml_dtypes`` for the ML formats;
``object`` arrays of ``bytes`` for strings).

``ml_dtypes`` is imported on first need, not with this module: importing it costs several times what
numpy does (over a second for ml_dtypes 0.7), and most checkpoints hold none of its types. The bfloat16,
float8, int4... DTypes exist from the start; asking one for its numpy type (``as_numpy_dtype``,
``np_dtype``, ``size``, ``min``/``max``), or converting an ml_dtypes numpy type, imports ml_dtypes then.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

import numpy as np

_REF_OFFSET = 100


class DType:
    """An element type. Compare with ``==`` against DTypes, names, enums or numpy dtypes."""

    __slots__ = ("_enum", "_name", "_np")

    def __init__(self, enum: int, name: str, np_type: Any) -> None:
        self._enum = enum
        self._name = name
        self._np = np_type

    # --- identity -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def as_datatype_enum(self) -> int:
        return self._enum

    @property
    def is_ref_dtype(self) -> builtins.bool:
        return self._enum > _REF_OFFSET

    @property
    def base_dtype(self) -> DType:
        return _BY_ENUM[self._enum - _REF_OFFSET] if self.is_ref_dtype else self

    @property
    def _as_ref(self) -> DType:
        return self if self.is_ref_dtype else _BY_ENUM[self._enum + _REF_OFFSET]

    @property
    def as_numpy_dtype(self) -> Any:
        np_type = self._np  # a _ref type has its base type's numpy type
        if np_type is None:  # an ml_dtypes type not resolved yet
            np_type = self._np = _ml_dtypes_type(self._name)
        return np_type

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.as_numpy_dtype)

    # --- classification ---------------------------------------------------------
    @property
    def is_floating(self) -> builtins.bool:
        b = self.base_dtype
        return b in (float16, float32, float64, bfloat16) or b.name.startswith(("float8", "float4"))

    @property
    def is_complex(self) -> builtins.bool:
        return self.base_dtype in (complex64, complex128)

    @property
    def is_integer(self) -> builtins.bool:
        b = self.base_dtype
        return b.name.startswith(("int", "uint")) and not b.is_quantized

    @property
    def is_unsigned(self) -> builtins.bool:
        return self.base_dtype.name.startswith(("uint", "quint")) or self.base_dtype == bool_

    @property
    def is_bool(self) -> builtins.bool:
        return self.base_dtype == bool_

    @property
    def is_quantized(self) -> builtins.bool:
        return self.base_dtype.name.startswith(("qint", "quint"))

    @property
    def is_numeric(self) -> builtins.bool:
        return self.base_dtype not in (string, resource, variant)

    @property
    def size(self) -> int:
        """Bytes per element on disk; 0 for variable-length types."""
        if not self.is_numeric:
            return 0
        if self._np is None:  # known without importing ml_dtypes: bfloat16 is 2, the rest 1
            return 2 if self.base_dtype is bfloat16 else 1
        return np.dtype(self.as_numpy_dtype).itemsize

    def _info(self) -> Any:
        t = np.dtype(self.as_numpy_dtype)
        if t.kind == "V":  # ml_dtypes' own types: only its finfo/iinfo know them (and it is loaded by now)
            import ml_dtypes

            return ml_dtypes.finfo(t) if self.is_floating else ml_dtypes.iinfo(t)
        return np.finfo(t) if self.is_floating else np.iinfo(t)

    @property
    def min(self) -> Any:
        return self._info().min

    @property
    def max(self) -> Any:
        return self._info().max

    def is_compatible_with(self, other: Any) -> builtins.bool:
        return self.base_dtype == as_dtype(other).base_dtype

    # --- python protocol --------------------------------------------------------
    def __eq__(self, other: object) -> builtins.bool:
        if isinstance(other, DType):
            return self._enum == other._enum
        if other is None:
            return False
        try:
            return self._enum == as_dtype(other)._enum
        except (TypeError, ValueError):
            return False

    def __ne__(self, other: object) -> builtins.bool:
        return not self == other

    def __hash__(self) -> int:
        return self._enum

    def __repr__(self) -> str:
        return f"saverkit.{self._name}"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (as_dtype, (self._enum,))


_BY_ENUM: dict[int, DType] = {}
_BY_NAME: dict[str, DType] = {}
# numpy dtype -> DType. Quantized types share numpy layouts with plain ints, so
# only the plain types are reachable from numpy. ml_dtypes' types join on first need.
_BY_NUMPY: dict[np.dtype, DType] = {}
_ML_DTYPES: list[DType] = []  # their numpy types are in ml_dtypes, imported on first need


def _register(enum: int, name: str, np_type: Any) -> DType:
    d = DType(enum, name, np_type)
    _BY_ENUM[enum] = d
    _BY_NAME[name] = d
    ref = DType(enum + _REF_OFFSET, name + "_ref", np_type)
    _BY_ENUM[enum + _REF_OFFSET] = ref
    _BY_NAME[name + "_ref"] = ref
    if np_type is None:
        _ML_DTYPES.append(d)
    elif np_type is not object and not d.is_quantized:
        _BY_NUMPY[np.dtype(np_type)] = d
    return d


float32 = _register(1, "float32", np.float32)
float64 = _register(2, "float64", np.float64)
int32 = _register(3, "int32", np.int32)
uint8 = _register(4, "uint8", np.uint8)
int16 = _register(5, "int16", np.int16)
int8 = _register(6, "int8", np.int8)
string = _register(7, "string", object)
complex64 = _register(8, "complex64", np.complex64)
int64 = _register(9, "int64", np.int64)
bool_ = _register(10, "bool", np.bool_)
qint8 = _register(11, "qint8", np.dtype([("qint8", np.int8)]))
quint8 = _register(12, "quint8", np.dtype([("quint8", np.uint8)]))
qint32 = _register(13, "qint32", np.dtype([("qint32", np.int32)]))
bfloat16 = _register(14, "bfloat16", None)
qint16 = _register(15, "qint16", np.dtype([("qint16", np.int16)]))
quint16 = _register(16, "quint16", np.dtype([("quint16", np.uint16)]))
uint16 = _register(17, "uint16", np.uint16)
complex128 = _register(18, "complex128", np.complex128)
float16 = _register(19, "float16", np.float16)
resource = _register(20, "resource", object)
variant = _register(21, "variant", object)
uint32 = _register(22, "uint32", np.uint32)
uint64 = _register(23, "uint64", np.uint64)
float8_e5m2 = _register(24, "float8_e5m2", None)
float8_e4m3fn = _register(25, "float8_e4m3fn", None)
float8_e4m3fnuz = _register(26, "float8_e4m3fnuz", None)
float8_e4m3b11fnuz = _register(27, "float8_e4m3b11fnuz", None)
float8_e5m2fnuz = _register(28, "float8_e5m2fnuz", None)
int4 = _register(29, "int4", None)
uint4 = _register(30, "uint4", None)
int2 = _register(31, "int2", None)
uint2 = _register(32, "uint2", None)
float4_e2m1fn = _register(33, "float4_e2m1fn", None)

half = float16
float = float32  # noqa: A001 - TensorFlow exports these aliases too
double = float64
bool = bool_  # noqa: A001

_ml_dtypes_loaded = False


def _load_ml_dtypes() -> None:
    """Import ml_dtypes and make its types convertible to DTypes (once; idempotent if two threads race).
    Each of its DTypes then takes its numpy type from ml_dtypes when first asked (`as_numpy_dtype`)."""
    global _ml_dtypes_loaded
    if _ml_dtypes_loaded:
        return
    import ml_dtypes

    for d in _ML_DTYPES:
        _BY_NUMPY[np.dtype(getattr(ml_dtypes, d.name))] = d
    _ml_dtypes_loaded = True


def _ml_dtypes_type(name: str) -> Any:
    """The numpy type of the ml_dtypes DType ``name`` (``"bfloat16"``, ``"int4_ref"``...)."""
    _load_ml_dtypes()
    import ml_dtypes

    return getattr(ml_dtypes, name.removesuffix("_ref"))


def as_dtype(type_value: Any) -> DType:
    """Convert a DType, TF enum number, name, numpy dtype or Python type to a DType."""
    if isinstance(type_value, DType):
        return type_value
    if hasattr(type_value, "as_datatype_enum") and not isinstance(type_value, type):
        # A TensorFlow DType (duck-typed; TensorFlow is never imported here).
        return _BY_ENUM[int(type_value.as_datatype_enum)]
    if isinstance(type_value, (int, np.integer)) and not isinstance(type_value, (np.bool_,)) \
            and type_value is not True and type_value is not False:
        try:
            return _BY_ENUM[int(type_value)]
        except KeyError:
            raise TypeError(f"Cannot convert {type_value!r} to a DType: unknown DataType number") from None
    if isinstance(type_value, str):
        if type_value in _BY_NAME:
            return _BY_NAME[type_value]
        aliases = {"half": float16, "float": float32, "double": float64}
        if type_value in aliases:
            return aliases[type_value]
    if type_value is bytes or type_value is str:
        return string
    if type_value is builtins.float:
        return float32
    if type_value is builtins.int:
        return int32
    if type_value is builtins.bool:
        return bool_
    if type_value is builtins.complex:
        return complex128
    try:
        npd = np.dtype(type_value)
    except TypeError:
        raise TypeError(f"Cannot convert {type_value!r} to a DType") from None
    if npd.kind in ("O", "S", "U"):
        return string
    found = _BY_NUMPY.get(npd)
    if found is None and npd.kind == "V" and not _ml_dtypes_loaded and "ml_dtypes" in sys.modules:
        # The caller has an ml_dtypes array (so ml_dtypes is imported already): resolve its types.
        _load_ml_dtypes()
        found = _BY_NUMPY.get(npd)
    if found is None:
        raise TypeError(f"Cannot convert {type_value!r} to a DType: no matching numpy type")
    return found


def from_numpy(array: np.ndarray) -> DType:
    return as_dtype(np.asarray(array).dtype)


QUANTIZED_DTYPES = frozenset({qint8, quint8, qint16, quint16, qint32})

__all__ = [
    "DType", "as_dtype", "from_numpy",
    "float16", "half", "float32", "float64", "double", "bfloat16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128", "string", "qint8", "quint8",
    "qint16", "quint16", "qint32", "resource", "variant", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz",
    "float8_e4m3b11fnuz", "float8_e5m2fnuz", "int4", "uint4", "int2", "uint2", "float4_e2m1fn",
]
