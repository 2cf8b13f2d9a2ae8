"""``get_variable``, ``variable_scope``, partitioners and ``PartitionedVariable``, after ``tf.compat.v1``.

``saverkit.get_variable("emb", [10, 6], partitioner=saverkit.fixed_size_partitioner(3))`` makes what
TensorFlow makes: variables ``emb/part_0`` (4 rows), ``emb/part_1`` and ``emb/part_2`` (3 rows each), each
carrying a ``SaveSliceInfo`` (full name ``emb``, full shape, offset), wrapped in a ``PartitionedVariable``.
A ``Saver`` writes them as one checkpoint key ``emb`` with a slice per part, exactly as TF's does, so TF
restores them into its own partitioned variable (of any partitioning) and the reverse.

Names and semantics follow TF 2.21's ``variable_scope.py`` and ``partitioned_variables.py``: the three
partitioners compute the same partitions, parts split the axis as TF does (the first ``dim % n`` parts
one longer), reuse rules and their errors are TF's. What differs: variables are TF1 ref variables
(``use_resource=True`` is refused), and the default initializer (``glorot_uniform_initializer``) draws
its values with numpy at graph-build time into a ``Const`` instead of adding a ``RandomUniform`` op.
The variable store and the scope stack belong to the graph (one store per ``Graph``), as in TF.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np

from saverkit import dtypes
from saverkit.framework import array_ops, ops
from saverkit.framework.constant_op import _dtype_of, as_numpy, constant
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_op_def, register_shape_fn
from saverkit.framework.tensor_shape import TensorShape, as_shape, unknown_shape
from saverkit.framework.variables import Variable

__all__ = [
    "AUTO_REUSE",
    "PartitionedVariable",
    "VariableScope",
    "constant_initializer",
    "fixed_size_partitioner",
    "get_variable",
    "get_variable_scope",
    "glorot_uniform_initializer",
    "min_max_variable_partitioner",
    "ones_initializer",
    "variable_axis_size_partitioner",
    "variable_scope",
    "zeros_initializer",
]


# --- partitioners (tf.compat.v1.*_partitioner) --------------------------------------------------------


def variable_axis_size_partitioner(
    max_shard_bytes: int, axis: int = 0, bytes_per_string_element: int = 16, max_shards: int | None = None
) -> Callable[..., list[int]]:
    """A partitioner that shards one axis so that each shard holds at most ``max_shard_bytes`` (when one
    slice along the axis fits; at most ``max_shards`` shards), as TF's."""
    if max_shard_bytes < 1 or bytes_per_string_element < 1:
        raise ValueError(
            "Both max_shard_bytes and bytes_per_string_element must be positive. "
            f"Currently, max_shard_bytes is {max_shard_bytes} and"
            f"bytes_per_string_element is {bytes_per_string_element}"
        )
    if max_shards and max_shards < 1:
        raise ValueError("max_shards must be positive.")

    def _partitioner(shape: TensorShape, dtype: Any) -> list[int]:
        if not isinstance(shape, TensorShape):
            raise ValueError(f"shape is not a TensorShape: {shape}")
        if not shape.is_fully_defined():
            raise ValueError(f"shape is not fully defined: {shape}")
        dtype = dtypes.as_dtype(dtype)
        element_size = bytes_per_string_element if dtype.base_dtype == dtypes.string else dtype.size
        partitions = [1] * cast(int, shape.rank)  # fully defined
        bytes_per_slice = 1.0 * (shape.num_elements() / shape[axis]) * element_size
        # How many slices fit in one shard (at least one), and so how many shards the axis needs.
        slices_per_shard = max(1, math.floor(max_shard_bytes / bytes_per_slice))
        axis_shards = int(math.ceil(1.0 * shape[axis] / slices_per_shard))
        if max_shards:
            axis_shards = min(max_shards, axis_shards)
        partitions[axis] = axis_shards
        return partitions

    return _partitioner


def min_max_variable_partitioner(
    max_partitions: int = 1,
    axis: int = 0,
    min_slice_size: int = 256 << 10,
    bytes_per_string_element: int = 16,
) -> Callable[..., list[int]]:
    """A partitioner giving each part at least ``min_slice_size`` bytes, in at most ``max_partitions``
    parts along ``axis``, as TF's."""

    def _partitioner(shape: TensorShape, dtype: Any) -> list[int]:
        if axis >= len(shape):
            raise ValueError(f"Cannot partition variable along axis {axis} when shape is only {shape}")
        dtype = dtypes.as_dtype(dtype)
        bytes_per_element = bytes_per_string_element if dtype.base_dtype == dtypes.string else dtype.size
        partitions = cast(int, shape.num_elements()) * bytes_per_element / min_slice_size
        partitions_list = [1] * len(shape)
        # No more parts than the axis has rows, nor than max_partitions allows.
        partitions_list[axis] = max(1, min(shape[axis], max_partitions, int(math.ceil(partitions))))
        return partitions_list

    return _partitioner


def fixed_size_partitioner(num_shards: int, axis: int = 0) -> Callable[..., list[int]]:
    """A partitioner making ``num_shards`` parts along ``axis`` (fewer if the axis is shorter), as TF's."""

    def _partitioner(shape: TensorShape, **unused_args: Any) -> list[int]:
        partitions_list = [1] * len(shape)
        partitions_list[axis] = min(num_shards, shape[axis])
        return partitions_list

    return _partitioner


# --- initializers (the tf.compat.v1 classes get_variable's callers use most) ------------------------


class _PartitionInfo:
    """What an initializer learns about the part it initializes (TF's ``_PartitionInfo``)."""

    def __init__(self, full_shape: Sequence[int], var_offset: Sequence[int]) -> None:
        self.full_shape = list(full_shape)
        self.var_offset = list(var_offset)


class zeros_initializer:  # noqa: N801 - TF's name
    def __init__(self, dtype: Any = dtypes.float32) -> None:
        self.dtype = dtypes.as_dtype(dtype)

    def __call__(self, shape: Any, dtype: Any = None, partition_info: Any = None) -> ops.Tensor:
        return array_ops.zeros(shape, dtypes.as_dtype(dtype or self.dtype))


class ones_initializer:  # noqa: N801 - TF's name
    def __init__(self, dtype: Any = dtypes.float32) -> None:
        self.dtype = dtypes.as_dtype(dtype)

    def __call__(self, shape: Any, dtype: Any = None, partition_info: Any = None) -> ops.Tensor:
        return array_ops.ones(shape, dtypes.as_dtype(dtype or self.dtype))


class constant_initializer:  # noqa: N801 - TF's name
    """A scalar fills the shape; an array of as many elements is reshaped to it."""

    def __init__(self, value: Any = 0, dtype: Any = dtypes.float32) -> None:
        self.value = value
        self.dtype = dtypes.as_dtype(dtype)

    def __call__(self, shape: Any, dtype: Any = None, partition_info: Any = None) -> ops.Tensor:
        dtype = dtypes.as_dtype(dtype or self.dtype)
        shape = [int(d) for d in cast("list[int]", as_shape(shape).as_list())]  # None: TypeError, as TF
        value = np.asarray(self.value)
        if value.size == 1:
            value = np.full(shape, value.reshape(()), dtype=dtype.as_numpy_dtype)
        elif value.size == math.prod(shape):
            value = value.reshape(shape)
        else:
            raise ValueError(
                f"constant_initializer: {value.size} values cannot fill a variable (part) of shape {shape}"
            )
        return constant(value, dtype=dtype)


class glorot_uniform_initializer:  # noqa: N801 - TF's name
    """Uniform in [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)); a part of a partitioned variable
    uses the fans of the full shape, as TF does. Drawn with numpy when the variable is built."""

    def __init__(self, seed: int | None = None, dtype: Any = dtypes.float32) -> None:
        self.seed = seed
        self.dtype = dtypes.as_dtype(dtype)
        self._rng = np.random.default_rng(seed)

    def __call__(self, shape: Any, dtype: Any = None, partition_info: Any = None) -> ops.Tensor:
        dtype = dtypes.as_dtype(dtype or self.dtype)
        if not dtype.is_floating:
            raise ValueError(f"glorot_uniform_initializer needs a floating type, got {dtype.name}")
        shape = [int(d) for d in cast("list[int]", as_shape(shape).as_list())]
        fan_in, fan_out = _compute_fans(partition_info.full_shape if partition_info is not None else shape)
        limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
        value = self._rng.uniform(-limit, limit, size=shape).astype(dtype.as_numpy_dtype)
        return constant(value, dtype=dtype)


def _compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


# --- PartitionedVariable ----------------------------------------------------------------------------


class PartitionedVariable:
    """The parts of one variable split along an axis (TF's ``PartitionedVariable``).

    Iterating gives the part ``Variable``s in offset order; ``get_variable_list()`` lists them. As a tensor
    (``as_tensor()``, or passed to an op) it is the parts concatenated. ``Saver`` saves it under its
    ``name`` as one checkpoint tensor with a slice per part; ``init_from_checkpoint`` loads each part's
    slice. It is not itself trackable (as in TF): give ``Checkpoint`` its parts.
    """

    def __init__(
        self, name: str, shape: Any, dtype: Any, variable_list: Sequence[Variable], partitions: Sequence[int]
    ) -> None:
        if not isinstance(variable_list, (list, tuple)):
            raise TypeError(f"variable_list is not a list or tuple: {variable_list}")
        if not isinstance(partitions, (list, tuple)):
            raise TypeError(f"partitions is not a list or tuple: {partitions}")
        if not all(p >= 1 for p in partitions):
            raise ValueError(f"partition values must be positive: {partitions}")
        if not variable_list:
            raise ValueError("variable_list may not be empty")
        full_shape = list(as_shape(shape).as_list())
        if len(full_shape) != len(partitions):
            raise ValueError(f"len(shape) != len(partitions): {full_shape} vs. {list(partitions)}")
        for v in variable_list:
            info = v._get_save_slice_info()
            if info is None:
                raise ValueError(
                    f"All variables must have a save_slice_info available: {[x.name for x in variable_list]}"
                )
            if list(info.full_shape) != full_shape:
                raise ValueError(
                    f"All variables' full shapes must match shape: {full_shape}; but full shapes were: "
                    f"{[list(info.full_shape)]}"
                )
        self._variable_list = sorted(variable_list, key=lambda v: v._get_save_slice_info().var_offset)
        self._name = name
        self._shape = as_shape(shape)
        self._dtype = dtypes.as_dtype(dtype).base_dtype
        self._partitions = list(partitions)

    def __iter__(self) -> Iterator[Variable]:
        return iter(self._variable_list)

    def __len__(self) -> int:
        axes = self._partition_axes()
        if len(axes) > 1:
            raise ValueError(f"Cannot get a length for {len(axes)} > 1 partition axes")
        return len(self._variable_list)

    def __repr__(self) -> str:
        return (
            f"<saverkit.PartitionedVariable '{self._name}' shape={self._shape} dtype={self._dtype.name} "
            f"parts={len(self._variable_list)}>"
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def dtype(self) -> dtypes.DType:
        return self._dtype

    @property
    def shape(self) -> TensorShape:
        return self._shape

    def get_shape(self) -> TensorShape:
        return self._shape

    @property
    def graph(self) -> ops.Graph:
        return self._variable_list[0].graph

    def get_variable_list(self) -> list[Variable]:
        return list(self._variable_list)

    _get_variable_list = get_variable_list  # TF's (private) name, which user code calls

    def _get_partitions(self) -> list[int]:
        return list(self._partitions)

    def _partition_axes(self) -> list[int]:
        if all(p == 1 for p in self._partitions):
            return [0]
        return [i for i, p in enumerate(self._partitions) if p > 1]

    def _concat(self) -> ops.Tensor:
        g = self.graph
        if len(self._variable_list) == 1:
            with g.as_default(), g.name_scope(None):
                return array_ops.identity(self._variable_list[0], name=self._name)
        axes = self._partition_axes()
        if len(axes) > 1:
            raise NotImplementedError(
                f"Cannot concatenate along more than one dimension: {axes}.  Multi-axis partition concat "
                "is not supported"
            )
        with g.as_default():
            with g.name_scope(self._name + "/ConcatPartitions/"):
                concatenated = concat([v.value() for v in self._variable_list], axes[0])
            with g.name_scope(None):
                return array_ops.identity(concatenated, name=self._name)

    def as_tensor(self) -> ops.Tensor:
        """The parts concatenated (new ops, outside the current control dependencies, as TF)."""
        with self.graph.control_dependencies(None):
            return self._concat()

    def _apply_assign_fn(self, assign_fn: Callable, value: Any) -> list:
        axes = self._partition_axes()
        if len(axes) > 1:
            raise NotImplementedError(f"Cannot do assign action along more than one dimension: {axes}.")
        values: list[Any]
        if isinstance(value, PartitionedVariable):
            values = list(value)
        elif isinstance(value, list):
            if len(value) != len(self._variable_list):
                raise ValueError(
                    f"Expected {len(self._variable_list)} values, one per part, got {len(value)}"
                )
            values = value
        else:
            # A whole value (numpy or anything np.asarray takes): split it along the partition axis.
            arr = np.asarray(value)
            bounds = np.cumsum([v.shape[axes[0]] for v in self._variable_list])[:-1]
            values = np.split(arr, bounds, axis=axes[0])
        return [assign_fn(var, values[i]) for i, var in enumerate(self._variable_list)]

    def assign(
        self, value: Any, use_locking: bool = False, name: str | None = None, read_value: bool = True
    ) -> list:
        return self._apply_assign_fn(
            lambda var, v: var.assign(v, use_locking=use_locking, name=name, read_value=read_value), value
        )

    def assign_add(
        self, value: Any, use_locking: bool = False, name: str | None = None, read_value: bool = True
    ) -> list:
        return self._apply_assign_fn(
            lambda var, v: var.assign_add(v, use_locking=use_locking, name=name, read_value=read_value), value
        )

    def assign_sub(
        self, value: Any, use_locking: bool = False, name: str | None = None, read_value: bool = True
    ) -> list:
        return self._apply_assign_fn(
            lambda var, v: var.assign_sub(v, use_locking=use_locking, name=name, read_value=read_value), value
        )


def _partitioned_to_tensor(
    v: PartitionedVariable, dtype: Any = None, name: str | None = None, as_ref: bool = False
) -> ops.Tensor:
    if dtype is not None and not dtypes.as_dtype(dtype).is_compatible_with(v.dtype):
        raise ValueError(
            f"Incompatible type conversion requested to type '{dtypes.as_dtype(dtype).name}' for variable "
            f"of type '{v.dtype.name}'"
        )
    if as_ref:
        raise NotImplementedError("PartitionedVariable doesn't support being used as a reference.")
    return v.as_tensor()


ops.register_tensor_conversion_function(PartitionedVariable, _partitioned_to_tensor)


# --- ConcatV2 (what as_tensor() builds; TF's OpDef, so TF runs the graphs we write) -------------------

register_op_def(
    """
    name: "ConcatV2"
    input_arg { name: "values" type_attr: "T" number_attr: "N" }
    input_arg { name: "axis" type_attr: "Tidx" }
    output_arg { name: "output" type_attr: "T" }
    attr { name: "N" type: "int" has_minimum: true minimum: 2 }
    attr { name: "T" type: "type" }
    attr {
      name: "Tidx" type: "type" default_value { type: DT_INT32 }
      allowed_values { list { type: DT_INT32 type: DT_INT64 } }
    }
    """
)


def concat(values: Sequence[Any], axis: int, name: str = "concat") -> ops.Tensor:
    """``tf.concat``: one tensor from ``values`` joined along ``axis``."""
    values = list(values)
    if len(values) == 1:
        return array_ops.identity(values[0], name=name)
    return apply_op("ConcatV2", values=values, axis=axis, name=name)._outputs[0]


@register_kernel("ConcatV2")
def _concat_v2(ctx: Any, *inputs: Any) -> list:
    *values, axis = inputs
    return [np.concatenate([np.asarray(v) for v in values], axis=int(axis))]


@register_shape_fn("ConcatV2")
def _concat_v2_shape(op: ops.Operation) -> list:
    from saverkit.framework import tensor_util

    *values, axis_t = op._inputs
    axis: Any = tensor_util.constant_value(axis_t)
    shapes = [t._shape for t in values]
    if axis is None or any(s.rank is None for s in shapes):
        rank = next((s.rank for s in shapes if s.rank is not None), None)
        return [unknown_shape(rank)]
    rank = shapes[0].rank
    axis = int(axis)
    if axis < 0:
        axis += rank
    if not 0 <= axis < rank:
        raise ValueError(f"ConcatV2 axis {int(axis)} is out of range for tensors of rank {rank}")
    dims = shapes[0].as_list()
    dims[axis] = 0
    for s in shapes:
        if s.rank != rank:
            raise ValueError(f"ConcatV2 inputs must all have rank {rank}; got shapes {shapes}")
        for i, d in enumerate(s.as_list()):
            if i == axis:
                total = dims[axis]
                dims[axis] = None if total is None or d is None else total + d
            elif dims[i] is None:
                dims[i] = d
    return [TensorShape(dims)]


# --- variable scopes and the variable store ---------------------------------------------------------


class _ReuseMode(enum.Enum):
    AUTO_REUSE = 1


AUTO_REUSE = _ReuseMode.AUTO_REUSE  # create variables that do not exist, reuse those that do


class VariableScope:
    """The defaults ``get_variable`` applies under a ``variable_scope`` (TF's ``VariableScope``)."""

    def __init__(
        self,
        reuse: Any,
        name: str = "",
        initializer: Any = None,
        regularizer: Any = None,
        caching_device: Any = None,
        partitioner: Any = None,
        dtype: Any = dtypes.float32,
        name_scope: str = "",
    ) -> None:
        self._name = name
        self._reuse = reuse
        self._initializer = initializer
        self._regularizer = regularizer
        self._caching_device = caching_device
        self._partitioner = partitioner
        self._dtype = dtypes.as_dtype(dtype)
        self._name_scope = name_scope

    @property
    def name(self) -> str:
        return self._name

    @property
    def original_name_scope(self) -> str:
        return self._name_scope

    @property
    def reuse(self) -> Any:
        return self._reuse

    @property
    def initializer(self) -> Any:
        return self._initializer

    @property
    def partitioner(self) -> Any:
        return self._partitioner

    @property
    def dtype(self) -> dtypes.DType:
        return self._dtype

    def reuse_variables(self) -> None:
        self._reuse = True

    def set_initializer(self, initializer: Any) -> None:
        self._initializer = initializer

    def set_partitioner(self, partitioner: Any) -> None:
        self._partitioner = partitioner

    def set_dtype(self, dtype: Any) -> None:
        self._dtype = dtypes.as_dtype(dtype)

    def get_variable(
        self,
        name: str,
        shape: Any = None,
        dtype: Any = None,
        initializer: Any = None,
        regularizer: Any = None,
        reuse: Any = None,
        trainable: bool | None = None,
        collections: Any = None,
        caching_device: Any = None,
        partitioner: Any = None,
        validate_shape: bool = True,
        use_resource: bool | None = None,
        constraint: Any = None,
    ) -> Any:
        full_name = f"{self._name}/{name}" if self._name else name
        if reuse is None:
            reuse = self._reuse
        if dtype is not None and initializer is not None and not callable(initializer):
            # An explicit dtype must be the value's own (checked before the scope's defaults apply, as TF).
            init_dtype, want = _value_dtype(initializer), dtypes.as_dtype(dtype).base_dtype
            if init_dtype != want:
                raise ValueError(
                    f"Initializer type '{init_dtype.name}' and explicit dtype '{want.name}' don't match."
                )
        if initializer is None:
            initializer = self._initializer
        if regularizer is None:
            regularizer = self._regularizer
        if caching_device is None:
            caching_device = self._caching_device
        if partitioner is None:
            partitioner = self._partitioner
        if dtype is None:
            dtype = self._dtype
        if use_resource:
            raise ValueError(
                "saverkit.get_variable makes TF1 ref variables only (use_resource=True is not supported)"
            )
        g = ops.get_default_graph()
        store = _state(g).store
        # Outside the caller's name scope and control dependencies, as TF's (init_scope) does.
        with g.name_scope(None), g.control_dependencies(None):
            if partitioner is not None:
                return store.get_partitioned_variable(
                    full_name,
                    partitioner,
                    shape,
                    dtypes.as_dtype(dtype),
                    initializer,
                    regularizer,
                    reuse,
                    trainable,
                    collections,
                    caching_device,
                    validate_shape,
                    constraint,
                )
            return store.get_single_variable(
                full_name,
                shape,
                dtypes.as_dtype(dtype),
                initializer,
                regularizer,
                None,
                reuse,
                trainable,
                collections,
                caching_device,
                validate_shape,
                constraint,
            )


class _VariableStore:
    """Variables made by ``get_variable`` in one graph, by full name (TF's ``_VariableStore``)."""

    def __init__(self) -> None:
        self.vars: dict[str, Variable] = {}
        self.partitioned_vars: dict[str, PartitionedVariable] = {}

    def get_partitioned_variable(
        self,
        name: str,
        partitioner: Any,
        shape: Any,
        dtype: Any,
        initializer: Any,
        regularizer: Any,
        reuse: Any,
        trainable: Any,
        collections: Any,
        caching_device: Any,
        validate_shape: Any,
        constraint: Any,
    ) -> PartitionedVariable:
        from_tensor = isinstance(initializer, ops.Tensor)
        if name in self.vars:
            raise ValueError(
                "A partitioner was provided, but an unpartitioned version of the variable was found: "
                f"{name}.  Perhaps a variable of the same name was already created without partitioning?"
            )
        shape = as_shape(shape)
        if from_tensor:
            shape = shape.merge_with(initializer.shape)
            dtype = initializer.dtype.base_dtype  # the parts take the tensor's type, as in TF
        full_value: Any = None  # an array when the initializer is a value
        if initializer is not None and not callable(initializer) and not from_tensor:
            # TF converts the value to the variable's dtype, then slices it.
            full_value = as_numpy(initializer, dtype)
            shape = shape.merge_with(full_value.shape)
        partitions = None
        if not reuse or partitioner:
            partitions = _call_partitioner(partitioner, shape, dtype)
        existing = self.partitioned_vars.get(name)
        if existing is not None:
            if reuse is False:
                raise ValueError(
                    f"Partitioned variable with name {name} already exists. Did you mean to set reuse=True "
                    "or reuse=tf.AUTO_REUSE in VarScope?"
                )
            if not shape.is_compatible_with(existing.get_shape()):
                raise ValueError(
                    f"Trying to reuse partitioned variable {name}, but specified shape {shape} and found "
                    f"shape {existing.get_shape()}."
                )
            if not dtype.is_compatible_with(existing.dtype):
                raise ValueError(
                    f"Trying to reuse partitioned variable {name}, but specified dtype {dtype.name} and "
                    f"found dtype {existing.dtype.name}."
                )
            if partitions is not None and existing._get_partitions() != partitions:
                raise ValueError(
                    f"Trying to reuse partitioned variable {name}, but specified partitions {partitions} "
                    f"and found partitions {existing._get_partitions()}."
                )
            return existing
        if reuse is True:
            raise ValueError(
                f"PartitionedVariable {name} does not exist, or was not created with tf.get_variable(). "
                "Did you mean to set reuse=False or reuse=tf.AUTO_REUSE in VarScope?"
            )
        partitions = cast("list[int]", partitions)  # as TF: set unless reusing an existing variable
        slice_dim, num_slices = _get_slice_dim_and_num_slices(partitions)
        if f"{name}/part_0" in self.vars:
            if f"{name}/part_{num_slices - 1}" not in self.vars:
                raise ValueError(
                    "Partitioner returned a different partitioning than what was already found.  Partitioner "
                    f"returned {num_slices} shards, and shard {name}/part_0 was found, but "
                    f"{name}/part_{num_slices - 1} was not."
                )
            if f"{name}/part_{num_slices}" in self.vars:
                raise ValueError(
                    "Partitioner returned a different partitioning than what was already found.  Partitioner "
                    f"returned {num_slices} shards, and shard {name}/part_0 was found, but so was the extra "
                    f"shard {name}/part_{num_slices}."
                )
        parts = []
        g = ops.get_default_graph()
        for i, (var_offset, var_shape) in enumerate(_iter_slices(shape.as_list(), num_slices, slice_dim)):
            partition_info = _PartitionInfo(shape.as_list(), var_offset)
            var_full_name = f"{name}/part_{i}"
            init_shape: Any = var_shape
            with g.name_scope(var_full_name + "/PartitionedInitializer"):
                if initializer is None or callable(initializer):
                    init = initializer
                elif from_tensor:
                    # The part's slice of the given tensor (TF: array_ops.slice), in the tensor's dtype.
                    init = apply_op(
                        "Slice",
                        input=initializer,
                        begin=np.asarray(var_offset, np.int32),
                        size=np.asarray(var_shape, np.int32),
                        name="Slice",
                    )._outputs[0]
                    init_shape = None
                else:
                    index = tuple(slice(o, o + n) for o, n in zip(var_offset, var_shape, strict=True))
                    init = np.ascontiguousarray(full_value[index])
                    init_shape = None
            with g.name_scope(None):
                var = self.get_single_variable(
                    var_full_name,
                    init_shape,
                    dtype,
                    init,
                    regularizer,
                    partition_info,
                    reuse,
                    trainable,
                    collections,
                    caching_device,
                    validate_shape,
                    constraint,
                )
            var._set_save_slice_info(Variable.SaveSliceInfo(name, shape.as_list(), var_offset, var_shape))
            parts.append(var)
        pv = PartitionedVariable(
            name=name, shape=shape, dtype=dtype, variable_list=parts, partitions=partitions
        )
        self.partitioned_vars[name] = pv
        return pv

    def get_single_variable(
        self,
        name: str,
        shape: Any,
        dtype: Any,
        initializer: Any,
        regularizer: Any,
        partition_info: Any,
        reuse: Any,
        trainable: Any,
        collections: Any,
        caching_device: Any,
        validate_shape: Any,
        constraint: Any,
    ) -> Variable:
        from_value = initializer is not None and not callable(initializer)
        if shape is not None and from_value:
            raise ValueError("If initializer is a constant, do not specify shape.")
        if shape is not None:
            shape = as_shape(shape)
        found = self.vars.get(name)
        if found is not None:
            if reuse is False:
                raise ValueError(
                    f"Variable {name} already exists, disallowed. Did you mean to set reuse=True or "
                    "reuse=tf.AUTO_REUSE in VarScope?"
                )
            if shape is not None and not shape.is_compatible_with(found.get_shape()):
                raise ValueError(
                    f"Trying to share variable {name}, but specified shape {shape} and found shape "
                    f"{found.get_shape()}."
                )
            if not dtype.is_compatible_with(found.dtype):
                raise ValueError(
                    f"Trying to share variable {name}, but specified dtype {dtype.name} and found dtype "
                    f"{found.dtype.base_dtype.name}."
                )
            return found
        if reuse is True:
            raise ValueError(
                f"Variable {name} does not exist, or was not created with tf.get_variable(). Did you mean to "
                "set reuse=tf.AUTO_REUSE in VarScope?"
            )
        if initializer is None:
            if shape is None:
                raise ValueError(
                    f"Variable {name} did not get an initializer, so its `shape` argument must be specified."
                )
            initializer = _default_initializer(name, dtype)
        if from_value:
            # The variable takes the value's own type (TF: convert_to_tensor's inference).
            init_val: Any = initializer if isinstance(initializer, ops.Tensor) else as_numpy(initializer)
            variable_dtype = None
        else:
            if inspect.isclass(initializer):
                initializer = initializer()
            if shape is None or not shape.is_fully_defined():
                raise ValueError(
                    f"Variable {name}: the shape must be fully defined to call the initializer; got {shape}."
                )
            kwargs: dict[str, Any] = {"dtype": dtype}
            if _accepts(initializer, "partition_info"):
                kwargs["partition_info"] = partition_info
            init_val = functools.partial(initializer, shape.as_list(), **kwargs)
            variable_dtype = dtype.base_dtype
        var = Variable(
            initial_value=init_val,
            name=name,
            trainable=True if trainable is None else trainable,
            collections=collections,
            caching_device=caching_device,
            dtype=variable_dtype,
            validate_shape=validate_shape,
            constraint=constraint,
        )
        self.vars[name] = var
        if regularizer:
            g = var.graph
            with g.colocate_with(var.op), g.name_scope(name + "/Regularizer/"):
                loss = regularizer(var)
            if loss is not None:
                g.add_to_collection(ops.GraphKeys.REGULARIZATION_LOSSES, loss)
        return var


def _value_dtype(value: Any) -> dtypes.DType:
    if isinstance(value, ops.Tensor):
        return value.dtype.base_dtype
    return _dtype_of(as_numpy(value))


def _accepts(fn: Any, arg: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _default_initializer(name: str, dtype: dtypes.DType) -> Any:
    if dtype.is_floating:
        return glorot_uniform_initializer()
    if dtype.is_integer or dtype.is_unsigned or dtype.is_bool or dtype == dtypes.string:
        return zeros_initializer()
    raise ValueError(f"An initializer for variable {name} of {dtype.base_dtype} is required")


def _call_partitioner(partitioner: Callable, shape: TensorShape, dtype: dtypes.DType) -> list[int]:
    if not shape.is_fully_defined():
        raise ValueError(
            f"Shape of a new partitioned variable must be fully defined, but instead was {shape}."
        )
    if cast(int, shape.rank) < 1:
        raise ValueError(f"A partitioned Variable must have rank at least 1, shape: {shape}")
    slicing = partitioner(shape=shape, dtype=dtype)
    if not isinstance(slicing, Sequence):
        raise ValueError(f"Partitioner must return a sequence, but saw: {slicing}")
    if len(slicing) != shape.rank:
        raise ValueError(
            f"Partitioner returned a partition list that does not match the Variable's rank: {slicing} vs. "
            f"{shape}"
        )
    if any(p < 1 for p in slicing):
        raise ValueError(f"Partitioner returned zero partitions for some axes: {slicing}")
    if sum(p > 1 for p in slicing) > 1:
        raise ValueError(
            f"Can only slice a variable along one dimension: shape: {shape}, partitioning: {slicing}"
        )
    return list(slicing)


def _get_slice_dim_and_num_slices(slicing: Sequence[int]) -> tuple[int, int]:
    for slice_dim, num_slices in enumerate(slicing):
        if num_slices > 1:
            return slice_dim, num_slices
    return 0, 1  # no partitioning: one part


def _iter_slices(
    full_shape: list[int], num_slices: int, slice_dim: int
) -> Iterator[tuple[list[int], list[int]]]:
    """(offset, shape) of each part: the first ``dim % num_slices`` parts are one longer, as in TF."""
    with_excess = full_shape[slice_dim] % num_slices
    offset = [0] * len(full_shape)
    min_len = full_shape[slice_dim] // num_slices
    for i in range(num_slices):
        shape = full_shape[:]
        shape[slice_dim] = min_len + bool(i < with_excess)
        yield offset[:], shape
        offset[slice_dim] += shape[slice_dim]


class _GraphState:
    def __init__(self) -> None:
        self.store = _VariableStore()
        self.scope = VariableScope(False)
        self.scope_counts: dict[str, int] = {}


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state(g: ops.Graph) -> _GraphState:
    state = _STATES.get(g)
    if state is None:
        state = _STATES[g] = _GraphState()
    return state


def get_variable_scope() -> VariableScope:
    """The current variable scope of the default graph."""
    return _state(ops.get_default_graph()).scope


def get_variable(
    name: str,
    shape: Any = None,
    dtype: Any = None,
    initializer: Any = None,
    regularizer: Any = None,
    trainable: bool | None = None,
    collections: Any = None,
    caching_device: Any = None,
    partitioner: Any = None,
    validate_shape: bool = True,
    use_resource: bool | None = None,
    custom_getter: Any = None,
    constraint: Any = None,
) -> Variable | PartitionedVariable:
    """Get an existing variable of the current variable scope, or create one (``tf.compat.v1.get_variable``).

    ``initializer`` is a callable ``init(shape, dtype=..., partition_info=...)`` (an initializer object such
    as ``saverkit.zeros_initializer()``), or a value (numpy array, list, scalar or Tensor; then ``shape``
    must not be given). Without one, floating variables get ``glorot_uniform_initializer()`` and others
    zeros. With a ``partitioner`` (or one set on the scope) the result is a ``PartitionedVariable`` whose
    parts ``<name>/part_<i>`` are sliced like TF's; a value initializer is sliced for each part.
    """
    if custom_getter is not None:
        raise ValueError("saverkit.get_variable does not support custom_getter")
    return get_variable_scope().get_variable(
        name,
        shape=shape,
        dtype=dtype,
        initializer=initializer,
        regularizer=regularizer,
        trainable=trainable,
        collections=collections,
        caching_device=caching_device,
        partitioner=partitioner,
        validate_shape=validate_shape,
        use_resource=use_resource,
        constraint=constraint,
    )


@contextlib.contextmanager
def variable_scope(
    name_or_scope: str | VariableScope | None,
    default_name: str | None = None,
    values: Any = None,
    initializer: Any = None,
    regularizer: Any = None,
    caching_device: Any = None,
    partitioner: Any = None,
    custom_getter: Any = None,
    reuse: Any = None,
    dtype: Any = None,
    use_resource: bool | None = None,
    constraint: Any = None,
    auxiliary_name_scope: bool = True,
) -> Iterator[VariableScope]:
    """``with saverkit.variable_scope("layer", partitioner=...):`` (``tf.compat.v1.variable_scope``).

    Prefixes names of variables made by ``get_variable`` with the scope's name, sets defaults
    (initializer, partitioner, dtype...) and reuse (``True``, ``AUTO_REUSE``; inherited by inner scopes),
    and opens a name scope of the same name for other ops.
    """
    if custom_getter is not None:
        raise ValueError("saverkit.variable_scope does not support custom_getter")
    if use_resource:
        raise ValueError("saverkit.variable_scope makes TF1 ref variables only (use_resource=True)")
    if name_or_scope is None and default_name is None:
        raise TypeError("If default_name is None then name_or_scope is required")
    if reuse is False:
        reuse = None  # TF: False does not turn off an outer scope's reuse
    g = ops._get_graph_from_inputs(values) if values else ops.get_default_graph()
    with g.as_default():
        state = _state(g)
        parent = state.scope
        if isinstance(name_or_scope, VariableScope):
            full_name = name_or_scope.name
            base = name_or_scope
            name_scope_name = name_or_scope.original_name_scope
        else:
            base = parent
            if name_or_scope is not None:
                if not isinstance(name_or_scope, str):
                    raise TypeError("VariableScope: name_or_scope must be a string or VariableScope.")
                local = name_or_scope
            else:
                # default_name is made unique among the scopes of the parent, as in TF
                default_name = cast(str, default_name)  # set: checked on entry
                prefix = f"{parent.name}/{default_name}" if parent.name else default_name
                count = state.scope_counts.get(prefix, 0)
                local = default_name if count == 0 else f"{default_name}_{count}"
            full_name = f"{parent.name}/{local}" if parent.name else local
            name_scope_name = local
        state.scope_counts[full_name] = state.scope_counts.get(full_name, 0) + 1
        if reuse is None:
            reuse = (
                parent.reuse
                if not isinstance(name_or_scope, VariableScope)
                else (parent.reuse or name_or_scope.reuse)
            )
        scope = VariableScope(
            reuse,
            name=full_name,
            initializer=initializer if initializer is not None else base.initializer,
            regularizer=regularizer if regularizer is not None else base._regularizer,
            caching_device=caching_device if caching_device is not None else base._caching_device,
            partitioner=partitioner if partitioner is not None else base.partitioner,
            dtype=dtype if dtype is not None else base.dtype,
        )
        names = contextlib.ExitStack()
        with names:
            if auxiliary_name_scope:
                if isinstance(name_or_scope, VariableScope):
                    opened = names.enter_context(g.name_scope(name_scope_name or None))
                else:
                    opened = names.enter_context(g.name_scope(name_scope_name))
                scope._name_scope = opened
            state.scope = scope
            try:
                yield scope
            finally:
                state.scope = parent
