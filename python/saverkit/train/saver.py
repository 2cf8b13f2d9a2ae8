"""``saverkit.train.Saver``: TensorFlow's ``tf.compat.v1.train.Saver`` on saverkit's graph and Session.

The Saver adds save/restore nodes to the graph with TensorFlow's names and op types, so the graph, the
``SaverDef`` and the ``.meta`` file mean the same thing to TensorFlow::

    save/filename/input  Const                   the default checkpoint prefix ("model")
    save/filename        PlaceholderWithDefault
    save/Const           PlaceholderWithDefault  <- SaverDef.filename_tensor_name "save/Const:0"
    save/SaveV2/tensor_names, save/SaveV2/shape_and_slices   Const (shared with RestoreV2: no duplicates)
    save/SaveV2          SaveV2 (one node for all variables)
    save/control_dependency  Identity(save/Const) after SaveV2  <- save_tensor_name
    save/RestoreV2       RestoreV2 (one node, one output per variable)
    save/Assign, save/Assign_1, ...  Assign per variable
    save/restore_all     NoOp                    <- restore_op_name

Sharded savers (``sharded=True``) group variables by device (groups sorted by device string) and give each
group its own ``ShardedFilename``/``SaveV2`` writing ``<prefix>_temp_<hex32>/part-0000k-of-0000n``;
``MergeV2Checkpoints`` then merges the parts into ``<prefix>.index`` + ``<prefix>.data-0000k-of-0000n`` and
``save/Identity`` returns the prefix. The kernels of SaveV2/RestoreV2/MergeV2Checkpoints call
``saverkit.bundle`` (compiled C++), so the files are TensorFlow's V2 checkpoint format.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import operator
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from saverkit import _gc, errors, storage, tempfiles, trackable
from saverkit import dtypes as dtypes_lib
from saverkit.framework import (
    array_ops,
    constant_op,
    control_flow_ops,
    device_spec,
    io_ops,
    meta_graph,
    ops,
    resource_variable_ops,
    resource_variables,
    state_ops,
    string_ops,
    variables,
)
from saverkit.framework import operation as operation_lib
from saverkit.framework import tensor as tensor_lib
from saverkit.framework.partitioned_variables import PartitionedVariable as _PartitionedVariable
from saverkit.framework.run_options import RunOptions
from saverkit.protobuf import meta_graph_pb2, saver_pb2
from saverkit.train import async_save, checkpoint_management

if TYPE_CHECKING:
    from saverkit.framework.session import Session

_logger = logging.getLogger(__name__)
SaverDef = saver_pb2.SaverDef

_REF_VARIABLE_OPS = variables.REF_VARIABLE_OP_TYPES


def _all_saveable_objects(scope: str | None = None) -> list:
    """What a Saver with ``var_list=None`` saves: global variables plus the SAVEABLE_OBJECTS collection."""
    return ops.get_collection(ops.GraphKeys.GLOBAL_VARIABLES, scope) + ops.get_collection(
        ops.GraphKeys.SAVEABLE_OBJECTS, scope
    )


# --- saveable objects
class SaveSpec:
    """One tensor to save: the value to write, its slice spec, and its checkpoint key."""

    __slots__ = ("tensor", "slice_spec", "name", "dtype", "device")

    def __init__(self, tensor: Any, slice_spec: str, name: str, dtype: Any = None, device: str | None = None):
        self.tensor = tensor
        self.slice_spec = slice_spec
        self.name = name
        self.dtype = dtype if dtype is not None else tensor.dtype
        self.device = device if device is not None else tensor.device


class SaveableObject:
    """Something the Saver saves as one or more tensors (``specs``) and restores with ``restore``."""

    def __init__(self, op: Any, specs: list[SaveSpec], name: str):
        self.op = op
        self.specs = specs
        self.name = name

    @property
    def device(self) -> str:
        return self.specs[0].device

    def restore(self, restored_tensors: list, restored_shapes: list | None):
        raise NotImplementedError


class ReferenceVariableSaveable(SaveableObject):
    """A TF1 ref variable (``VariableV2``): saved from its ref tensor, restored with ``Assign``.

    ``op`` is the variable's ref tensor (TF's naming). The SaveSpec is made on demand: the builder reads
    ``op``/``name``/``slice_spec`` directly, which keeps a Saver over 10,000 variables cheap to build.
    """

    __slots__ = ("op", "name", "slice_spec")

    def __init__(self, var: Any, slice_spec: str, name: str):
        self.op = var
        self.slice_spec = slice_spec
        self.name = name

    # TF's SaveableObject.specs is an attribute; here it is built on demand.
    @property
    def specs(self) -> list[SaveSpec]:  # type: ignore[override]
        var = self.op
        return [SaveSpec(var, self.slice_spec, self.name, var.dtype.base_dtype, var.device)]

    @property
    def device(self) -> str:
        return self.op.device

    def restore(self, restored_tensors, restored_shapes):
        restored = restored_tensors[0]
        if restored_shapes is not None:
            restored = array_ops.reshape(restored, restored_shapes[0])
            return state_ops.assign(self.op, restored, validate_shape=False)
        return _assign(self.op, restored)


class ResourceVariableSaveable(SaveableObject):
    """A resource variable (from an imported TF graph): saved from its read value, restored with
    ``Identity`` + ``AssignVariableOp`` (TF's nodes for it)."""

    def __init__(self, var: Any, slice_spec: str, name: str):
        self._var = var
        spec = SaveSpec(var.value(), slice_spec, name, var.dtype.base_dtype, var.device)
        super().__init__(var, [spec], name)

    def restore(self, restored_tensors, restored_shapes):
        restored = restored_tensors[0]
        if restored_shapes is not None:
            restored = array_ops.reshape(restored, restored_shapes[0])
        with ops.device(self._var.device or None):
            restored = array_ops.identity(restored)
            return resource_variable_ops.assign_variable_op(
                self._var.handle, restored, validate_shape=restored_shapes is None
            )


# --- graph construction
# A Saver over N variables adds N Assign nodes (TF's structure). The Saver knows every input type and output
# shape already, so it asks the graph for them in one batch (Graph.create_ops), which skips what op builders
# infer (input conversion, type inference, shape functions).


def _assign_attrs(dtype) -> dict:
    return {"T": _base_dtype(dtype), "validate_shape": True, "use_locking": True}


def _assign(ref, value, name: str = "Assign"):
    """``Assign(ref, value)`` with validate_shape and use_locking (as TF's saver), on the variable's
    device (TF colocates ops that write a ref with the variable)."""
    return _bulk_assigns(ref.graph, [ref], [value], name)[0]


_BASE_DTYPES: dict[int, Any] = {}


def _base_dtype(dtype):
    """``dtype.base_dtype``, memoized by identity (DTypes are singletons; this runs once per variable)."""
    base = _BASE_DTYPES.get(id(dtype))
    if base is None:
        base = _BASE_DTYPES[id(dtype)] = dtype.base_dtype
    return base


def _per_dtype(dtypes: list, fn: Callable) -> list:
    """``[fn(d) for d in dtypes]`` with ``fn`` called once per distinct dtype, and one result object each
    (variables mostly share a dtype, and so one attrs dict). DTypes are singletons: told apart by id, in C."""
    if not dtypes:
        return []
    keys = list(map(id, dtypes))
    if keys.count(keys[0]) == len(keys):  # one dtype
        return [fn(dtypes[0])] * len(dtypes)
    distinct = dict(zip(keys, dtypes, strict=True))
    results = {k: fn(d) for k, d in distinct.items()}
    return list(map(results.__getitem__, keys))


def _bulk_assigns(g, refs: list, values: list, name: str = "Assign", inputs_checked: bool = False) -> list:
    """``Assign(ref_i, value_i)`` for all i, named like consecutive ``Assign`` ops in the current scope;
    each has its variable's shape (the value has it, or the Assign fails at run time) and device.
    ``inputs_checked``: all are tensors of ``g`` (see Graph.create_ops)."""
    dtypes = tensor_lib.dtypes_of(refs)
    return g.create_ops(
        "Assign",
        list(zip(refs, values, strict=True)),
        _per_dtype(dtypes, _assign_attrs),
        dtypes,
        name,
        shapes=tensor_lib.shapes_of(refs),
        devices=tensor_lib.devices_of(refs),
        inputs_checked=inputs_checked,
    )


def _string_constant(g, values: list[str], name: str):
    """A 1-D string ``Const`` (what ``constant(values)`` makes), without per-element type checks: the
    values are our own checkpoint keys and slice specs."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = [v.encode() for v in values] if any(values) else [b""] * len(values)
    arr.flags.writeable = False  # Const values are shared by every run
    return g.create_op("Const", [], name=name, attrs={"value": arr, "dtype": _STRING}).outputs[0]


_STRING = dtypes_lib.string


def _group(g, deps: list, name: str):
    """``group(*deps, name=name)``; one NoOp with control inputs when all deps share a device."""
    try:
        devices = operation_lib.distinct_devices(deps)
    except AttributeError:  # not all Operations (a custom SaveableObject's restore)
        devices = {op.device for op in deps}
    if len(devices) != 1:
        return control_flow_ops.group(*deps, name=name)
    with g.device(devices.pop() or None):
        return g.create_op("NoOp", [], name=g.unique_name(name) + "/", control_inputs=deps)


def _base_dtypes(tensors: list) -> list:
    """The base dtypes of ``tensors`` (variables mostly share one: looked up once per distinct dtype)."""
    return _per_dtype(tensor_lib.dtypes_of(tensors), _base_dtype)


def _all_ref_saveables(saveables) -> bool:
    """Whether all ``saveables`` are plain ReferenceVariableSaveables (tested in C: one per variable)."""
    return set(map(type, saveables)) <= {ReferenceVariableSaveable}


def _spec_dtypes(saveables) -> list:
    """``_flat_specs(saveables)[3]``, without the other three lists."""
    if _all_ref_saveables(saveables):
        return _base_dtypes([s.op for s in saveables])
    return [spec.dtype.base_dtype for saveable in saveables for spec in saveable.specs]


def _flat_specs(saveables) -> tuple[list, list, list, list]:
    """Checkpoint keys, tensors, slice specs and dtypes of all specs of ``saveables``, in order."""
    if _all_ref_saveables(saveables):  # the common case, column by column
        tensors = [s.op for s in saveables]
        return [s.name for s in saveables], tensors, [s.slice_spec for s in saveables], _base_dtypes(tensors)
    names, tensors, slices, dtypes = [], [], [], []
    for saveable in saveables:
        for spec in saveable.specs:
            names.append(spec.name)
            tensors.append(spec.tensor)
            slices.append(spec.slice_spec)
            dtypes.append(spec.dtype.base_dtype)
    return names, tensors, slices, dtypes


# --- turning var_list into saveables
def _as_ref_tensor(var: Any) -> Any:
    """The ref tensor (output 0 of the variable op) of a Variable, or the tensor itself."""
    if isinstance(var, variables.Variable):
        return variables.ref_tensor(var)
    if isinstance(var, ops.Tensor):
        return var
    raise TypeError(f"Variable to save is not a Variable: {var}")


def op_list_to_dict(op_list: Iterable, convert_variable_to_tensor: bool = True) -> dict[str, Any]:
    """``{checkpoint key: variable}`` for a list of variables, keyed by their op names (as TF).

    Partitioned variables (variables with ``_save_slice_info``) are grouped under their full name.
    """
    if not isinstance(op_list, (list, tuple, set)):
        raise TypeError(f"Variables to save should be passed in a dict or a list. Got {op_list}")
    if convert_variable_to_tensor:
        # The common case (ordinary ref variables, each once) in one pass; anything else goes the general
        # way below, which also raises the errors.
        plain = variables.plain_ref_variables_by_name(op_list)
        if plain is not None:
            return plain
    flat = _flatten(op_list)
    names_to_saveables: dict[str, Any] = {}
    Variable, Tensor = variables.Variable, ops.Tensor  # noqa: N806 - local aliases in the loop
    for var in flat:
        if isinstance(var, Variable):
            info = variables.save_slice_info(var)
            if info:
                name = info.full_name
                existing = names_to_saveables.get(name)
                if existing is None:
                    names_to_saveables[name] = [var]
                elif not isinstance(existing, list):
                    raise ValueError(f"Mixing slices and non-slices with the same name: {name}")
                else:
                    existing.append(var)
                continue
            if not convert_variable_to_tensor or isinstance(var, resource_variables.ResourceVariable):
                name = var.op.name
                if name in names_to_saveables:
                    raise ValueError(f"At least two variables have the same name: {name}")
                names_to_saveables[name] = var
                continue
            var = variables.ref_tensor(var)
        elif isinstance(var, SaveableObject):
            names_to_saveables[var.name] = var
            continue
        elif isinstance(var, _PartitionedVariable):
            if var.name in names_to_saveables:
                raise ValueError(f"At least two variables have the same name: {var.name}")
            names_to_saveables[var.name] = var
            continue
        elif not isinstance(var, Tensor):
            raise TypeError(f"Variable to save is not a Variable: {var}")
        op = var.op
        if op.type not in _REF_VARIABLE_OPS:
            raise TypeError(f"Variable to save is not a Variable: {var}")
        name = op.name
        if name in names_to_saveables:
            raise ValueError(f"At least two variables have the same name: {name}")
        names_to_saveables[name] = var
    return names_to_saveables


def _flatten(items: Iterable) -> list:
    items = list(items)
    if not any(isinstance(x, (list, tuple)) for x in items):
        return items
    out = []
    for x in items:
        if isinstance(x, (list, tuple)):
            out.extend(_flatten(x))
        else:
            out.append(x)
    return out


def saveable_objects_for_op(op: Any, name: str) -> list[SaveableObject]:
    """The SaveableObjects that save ``op`` (a variable, its ref tensor, or a list of slices) as ``name``."""
    if not isinstance(name, str):
        raise TypeError(
            "names_to_saveables must be a dict mapping string names to trackable operations. "
            f"Name is not a string: {name}"
        )
    if isinstance(op, ops.Tensor):
        if op.op.type not in _REF_VARIABLE_OPS:
            raise TypeError(
                "names_to_saveables must be a dict mapping string names to Tensors/Variables. "
                f"Not a variable: {op}"
            )
        return [ReferenceVariableSaveable(op, "", name)]
    if isinstance(op, SaveableObject):
        return [op]
    if isinstance(op, resource_variables.ResourceVariable):
        return [ResourceVariableSaveable(op, "", name)]
    if isinstance(op, (list, tuple, _PartitionedVariable)):
        out = []
        slice_name = None
        for variable in list(op):
            if isinstance(variable, SaveableObject):
                out.append(variable)
                continue
            if not isinstance(variable, variables.Variable):
                raise ValueError(f"Slices must all be Variables: {variable}")
            info = variables.save_slice_info(variable)
            if not info:
                raise ValueError(f"Slices must all be slices: {variable}")
            if slice_name is None:
                slice_name = info.full_name
            elif slice_name != info.full_name:
                raise ValueError(f"Slices must all be from the same tensor: {slice_name} != {info.full_name}")
            if isinstance(variable, resource_variables.ResourceVariable):
                out.append(ResourceVariableSaveable(variable, info.spec, name))
            else:
                out.append(ReferenceVariableSaveable(variables.ref_tensor(variable), info.spec, name))
        return out
    return saveable_objects_for_op(_as_ref_tensor(op), name)


def _ref_saveables(names: list[str], refs: list) -> list[SaveableObject]:
    """``[ReferenceVariableSaveable(ref, "", name)]`` for these (sorted, checked) names and ref tensors,
    without an __init__ call per variable."""
    out: list[SaveableObject] = []
    new, RVS = object.__new__, ReferenceVariableSaveable  # noqa: N806
    for name, t in zip(names, refs, strict=True):
        s = new(RVS)
        s.op = t
        s.slice_spec = ""
        s.name = name
        out.append(s)
    return out


def validate_and_slice_inputs(names_to_saveables: dict[str, Any]) -> list[SaveableObject]:
    """SaveableObjects sorted by checkpoint key; each variable may appear under one key only."""
    Tensor, RVS, ref_ops = ops.Tensor, ReferenceVariableSaveable, _REF_VARIABLE_OPS  # noqa: N806
    try:
        names = sorted(names_to_saveables)
    except TypeError:  # keys of several types: the general way below says which
        names = None
    if names and set(map(type, names)) == {str}:
        # The common case first (plain ref variables under string keys, each once), checked in C; anything
        # else goes the general way below, which also raises the errors.
        values = list(map(names_to_saveables.__getitem__, names))
        if set(map(type, values)) == {Tensor} and tensor_lib.op_types_of(values) <= ref_ops:
            # A ref variable op has one output: distinct tensors are distinct variables.
            if len(set(values)) == len(values):
                return _ref_saveables(names, values)
    items = sorted(names_to_saveables.items(), key=operator.itemgetter(0))
    saveables: list[SaveableObject] = []
    seen_ops: set = set()
    append, seen = saveables.append, seen_ops.add
    for name, op in items:
        if type(op) is Tensor and type(name) is str and op.op.type in ref_ops:
            # The common case (a plain ref variable), without the generic checks below.
            if op.op in seen_ops:
                raise ValueError(f"The same saveable will be restored with two names: {name}")
            seen(op.op)
            append(RVS(op, "", name))
            continue
        for saveable in saveable_objects_for_op(op, name):
            key = saveable.op
            if isinstance(key, variables.Variable):
                key = key.op
            key = key.op if isinstance(key, Tensor) else key  # a variable is its op, whatever the handle
            if key is not None and key in seen_ops:
                raise ValueError(f"The same saveable will be restored with two names: {saveable.name}")
            append(saveable)
            seen(key)
    return saveables


# --- devices
def _canonical_device(device: str | None) -> str:
    """``/cpu:1`` -> ``/device:CPU:1``; job/replica/task kept; ``""`` stays ``""`` (TF's canonical_name)."""
    return device_spec.canonical_name(device) if device else ""


def _set_cpu0(device: str) -> str:
    """The CPU:0 of the task that holds ``device`` (TF's saveable_object_util.set_cpu0)."""
    canonical = _canonical_device(device)
    head = canonical.split("/device:", 1)[0]
    return head + "/device:CPU:0"


# --- the builder
class BaseSaverBuilder:
    """Adds the save/restore subgraph for a list of SaveableObjects (TF's BaseSaverBuilder)."""

    SaveSpec: TypeAlias = SaveSpec
    SaveableObject: TypeAlias = SaveableObject
    VariableSaveable: TypeAlias = ReferenceVariableSaveable

    def __init__(self, write_version: int = SaverDef.V2):
        self._write_version = write_version

    def save_op(self, filename_tensor, saveables: list[SaveableObject]):
        """One SaveV2 for all ``saveables``; its tensor_names/shape_and_slices constants are named as TF's."""
        if self._write_version != SaverDef.V2:
            raise ValueError(
                f"saverkit writes only V2 checkpoints; write_version={self._write_version} "
                "(the V1 format is deprecated in TensorFlow too)"
            )
        names, tensors, slices, dtypes = _flat_specs(saveables)
        g = filename_tensor.graph
        name = g.unique_name("SaveV2")
        with g.name_scope(name + "/"):
            names_t = _string_constant(g, names, "tensor_names")
            slices_t = _string_constant(g, slices, "shape_and_slices")
        return g.create_op(
            "SaveV2",
            [filename_tensor, names_t, slices_t, *tensors],
            name=name + "/",
            attrs={"dtypes": dtypes},
            compute_shapes=False,
        )

    def bulk_restore(self, filename_tensor, saveables, preferred_shard, restore_sequentially, save_op=None):
        """One RestoreV2 for all specs. With ``save_op`` its name/slice constants are reused."""
        del preferred_shard, restore_sequentially
        g = filename_tensor.graph
        name = g.unique_name("RestoreV2")
        if save_op is not None:
            # The SaveV2 node already holds the same two string constants; a second copy would only make
            # the .meta bigger.
            names_t, slices_t = save_op.inputs[1:3]
            dtypes = _spec_dtypes(saveables)  # what the SaveV2 was built with
        else:
            names, _, slices, dtypes = _flat_specs(saveables)
            with g.name_scope(name + "/"):
                names_t = _string_constant(g, names, "tensor_names")
                slices_t = _string_constant(g, slices, "shape_and_slices")
        with g.device("/device:CPU:0"):
            op = g.create_op(
                "RestoreV2",
                [filename_tensor, names_t, slices_t],
                name=name + "/",
                attrs={"dtypes": dtypes},
                compute_shapes=False,
            )
        return op.outputs  # a list, as TF's (SaveableObject.restore gets slices of it)

    def sharded_filename(self, filename_tensor, shard: int, num_shards):
        return io_ops.sharded_filename(filename_tensor, shard, num_shards)

    def _AddSaveOps(self, filename_tensor, saveables):  # noqa: N802 - TF's name
        save = self.save_op(filename_tensor, saveables)
        return control_flow_ops.with_dependencies([save], filename_tensor), save

    def _AddShardedSaveOpsForV2(self, checkpoint_prefix, per_device):  # noqa: N802
        # Parts go to "<prefix>_temp_<hex32>/part-0000k-of-0000n" (TF 1's unique name: a user's own
        # "<prefix>_temp" folder is never written into); MergeV2Checkpoints moves them next to <prefix> and
        # removes the directory, so a crash mid-save never leaves a half-written <prefix>.index.
        with ops.device("CPU"):
            suffix = constant_op.constant(os.path.normpath(f"_temp_{uuid.uuid4().hex}/part"))
            tmp_prefix = string_ops.string_join([checkpoint_prefix, suffix])
        num_shards = len(per_device)
        num_shards_tensor = constant_op.constant(num_shards, name="num_shards")
        sharded_saves, sharded_prefixes, save_ops = [], [], []
        last_device = ""  # per_device is never empty: an empty Saver builds no save ops
        for shard, (device, saveables) in enumerate(per_device):
            last_device = device
            with ops.device(_set_cpu0(device)):
                prefix = self.sharded_filename(tmp_prefix, shard, num_shards_tensor)
                sharded_prefixes.append(prefix)
                saved, save_op = self._AddSaveOps(prefix, saveables)
                sharded_saves.append(saved)
                save_ops.append(save_op)
        with ops.control_dependencies([x.op for x in sharded_saves]):
            with ops.device(_set_cpu0(last_device)):
                merge = io_ops.merge_v2_checkpoints(sharded_prefixes, checkpoint_prefix, delete_old_dirs=True)
                with ops.control_dependencies([merge]):
                    return array_ops.identity(checkpoint_prefix), save_ops

    def _AddRestoreOps(
        self,
        filename_tensor,
        saveables,
        restore_sequentially,
        reshape,  # noqa: N802
        preferred_shard=-1,
        name="restore_all",
        save_op=None,
    ):
        all_tensors = self.bulk_restore(
            filename_tensor, saveables, preferred_shard, restore_sequentially, save_op=save_op
        )
        g = filename_tensor.graph
        assign_ops = []
        if not reshape and _all_ref_saveables(saveables):
            # The common case, in bulk: one Assign per variable, named save/Assign, save/Assign_1, ...
            # With save_op, the refs were the SaveV2's inputs (checked to be of g there); the values are
            # the outputs of a RestoreV2 just made in g.
            assign_ops = _bulk_assigns(
                g, [s.op for s in saveables], all_tensors, inputs_checked=save_op is not None
            )
        else:
            idx = 0
            for saveable in saveables:
                shapes = [spec.tensor.get_shape() for spec in saveable.specs] if reshape else None
                n = len(saveable.specs)
                restored = saveable.restore(all_tensors[idx : idx + n], shapes)
                assign_ops.append(restored.op if isinstance(restored, ops.Tensor) else restored)
                idx += n
        return _group(g, assign_ops, name)

    def _AddShardedRestoreOps(
        self,
        filename_tensor,
        per_device,
        restore_sequentially,
        reshape,  # noqa: N802
        save_ops=None,
    ):
        sharded_restores = []
        for shard, (device, saveables) in enumerate(per_device):
            with ops.device(device):
                sharded_restores.append(
                    self._AddRestoreOps(
                        filename_tensor,
                        saveables,
                        restore_sequentially,
                        reshape,
                        preferred_shard=shard,
                        name="restore_shard",
                        save_op=save_ops[shard] if save_ops else None,
                    )
                )
        return control_flow_ops.group(*sharded_restores, name="restore_all")

    def _GroupByDevices(self, saveables):  # noqa: N802
        per_device = collections.defaultdict(list)
        canonical = functools.lru_cache(maxsize=None)(_canonical_device)
        for saveable in saveables:
            if type(saveable) is ReferenceVariableSaveable:
                per_device[canonical(saveable.device)].append(saveable)
                continue
            devices = {canonical(spec.device) for spec in saveable.specs}
            if len(devices) != 1:
                raise ValueError(
                    f"All tensors of a saveable object must be on the same device: {saveable.name}"
                )
            per_device[devices.pop()].append(saveable)
        return sorted(per_device.items(), key=lambda t: t[0])

    def build(
        self,
        names_to_saveables,
        reshape=False,
        sharded=False,
        max_to_keep=5,
        keep_checkpoint_every_n_hours=10000.0,
        name=None,
        restore_sequentially=False,
        filename="model",
    ):
        return self._build_internal(
            names_to_saveables,
            reshape=reshape,
            sharded=sharded,
            max_to_keep=max_to_keep,
            keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
            name=name,
            restore_sequentially=restore_sequentially,
            filename=filename,
        )

    def _build_internal(
        self,
        names_to_saveables,
        reshape=False,
        sharded=False,
        max_to_keep=5,
        keep_checkpoint_every_n_hours=10000.0,
        name=None,
        restore_sequentially=False,
        filename="model",
        build_save=True,
        build_restore=True,
    ) -> saver_pb2.SaverDef:
        if not build_save or not build_restore:
            raise ValueError(
                "save and restore operations need to be built together  when eager execution is not enabled."
            )
        plain = None
        if isinstance(names_to_saveables, (list, tuple, set)):
            # Ordinary ref variables, each once (the common case): validate_and_slice_inputs(op_list_to_dict(
            # var_list)) without checking again what plain_ref_variables_by_name checked.
            plain = variables.plain_ref_variables_by_name(names_to_saveables)
        if plain is not None:
            names = sorted(plain)
            saveables = _ref_saveables(names, list(map(plain.__getitem__, names)))
        else:
            if not isinstance(names_to_saveables, dict):
                names_to_saveables = op_list_to_dict(names_to_saveables)
            saveables = validate_and_slice_inputs(names_to_saveables)
        if max_to_keep is None:
            max_to_keep = 0

        with ops.name_scope(name, "save", [s.specs[0].tensor for s in saveables[:1]]):
            filename_tensor = array_ops.placeholder_with_default(
                filename or "model", shape=(), name="filename"
            )
            # "Const" is the name every TF SaverDef has used for the filename tensor.
            filename_tensor = array_ops.placeholder_with_default(filename_tensor, shape=(), name="Const")
            if sharded:
                per_device = self._GroupByDevices(saveables)
                save_tensor, save_ops = self._AddShardedSaveOpsForV2(filename_tensor, per_device)
                restore_op = self._AddShardedRestoreOps(
                    filename_tensor, per_device, restore_sequentially, reshape, save_ops=save_ops
                )
            else:
                save_tensor, save_op = self._AddSaveOps(filename_tensor, saveables)
                restore_op = self._AddRestoreOps(
                    filename_tensor, saveables, restore_sequentially, reshape, save_op=save_op
                )
        return saver_pb2.SaverDef(
            filename_tensor_name=filename_tensor.name,
            save_tensor_name=save_tensor.name,
            restore_op_name=restore_op.name,
            max_to_keep=max_to_keep,
            sharded=sharded,
            keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
            version=self._write_version,
        )


class BulkSaverBuilder(BaseSaverBuilder):
    """TF's default builder: one RestoreV2 for all variables of a device (as the base class here)."""


# --- the Saver
class Saver:
    """Saves and restores variables (TensorFlow's ``tf.compat.v1.train.Saver``).

    ``var_list`` is a list of variables (keyed in the checkpoint by their op names) or a dict
    ``{checkpoint key: variable}``; ``None`` means every global variable and saveable object of the graph.

    ``save(sess, "dir/model", global_step=1000)`` writes ``dir/model-1000.index``,
    ``dir/model-1000.data-00000-of-00001``, ``dir/model-1000.meta`` and then updates ``dir/checkpoint``.

    Retention follows TensorFlow's documentation:

    * ``max_to_keep``: keep the N most recent checkpoints; older ones are deleted as new ones are
      written. ``None`` or ``0``: nothing is ever deleted and the ``checkpoint`` file lists only the latest.
    * ``keep_checkpoint_every_n_hours``: in addition, keep one checkpoint per N hours of training (a
      checkpoint that falls out of the ``max_to_keep`` window is kept if it is more than N hours newer
      than the last one kept this way). The default, 10,000 hours, disables it.

    A new Saver knows nothing about the checkpoints an earlier process wrote, so it will not delete them.
    To continue managing them after a restart::

        saver = saverkit.train.Saver(max_to_keep=3)
        with saverkit.Session() as sess:
            state = saverkit.train.get_checkpoint_state(ckpt_dir)
            if state is not None:
                saver.recover_last_checkpoints(state.all_model_checkpoint_paths)
                saver.restore(sess, state.model_checkpoint_path)
            ...
            # deletes the oldest as needed, including those of the earlier run:
            saver.save(sess, os.path.join(ckpt_dir, "model"), global_step=step)

    (``saver.recover_last_checkpoints(ckpt_dir)`` does the same lookup in one call and also keeps the
    ``keep_checkpoint_every_n_hours`` schedule stored in the state file.)

    Beyond TensorFlow: ``durable=True`` fsyncs the data and index files and the directory before the
    state file is replaced, so after a power loss ``latest_checkpoint`` never names a checkpoint that is not
    on disk;
    ``clock`` replaces ``time.time`` for the retention timestamps (tests, simulations);
    ``coordinator`` (a ``saverkit.distributed.Coordinator``): every rank of a job saves its own variables
    and together they write ONE checkpoint (``saverkit.train.distributed_save``).
    """

    def __init__(
        self,
        var_list: Any = None,
        reshape: bool = False,
        sharded: bool = False,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        name: str | None = None,
        restore_sequentially: bool = False,
        saver_def: saver_pb2.SaverDef | None = None,
        builder: BaseSaverBuilder | None = None,
        defer_build: bool = False,
        allow_empty: bool = False,
        write_version: int = SaverDef.V2,
        pad_step_number: bool = False,
        save_relative_paths: bool = False,
        filename: str | None = None,
        *,
        durable: bool = False,
        clock: Callable[[], float] | None = None,
        coordinator: Any = None,
    ) -> None:
        if defer_build and var_list:
            raise ValueError(
                "If `var_list` is provided then build cannot be deferred. "
                "Either set defer_build=False or var_list=None."
            )
        self._var_list = var_list
        self._reshape = reshape
        self._sharded = sharded
        self._max_to_keep = max_to_keep
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._name = name
        self._restore_sequentially = restore_sequentially
        if saver_def is not None:
            if not isinstance(saver_def, saver_pb2.SaverDef):
                raise ValueError(f"saver_def must be a saver_pb2.SaverDef: {saver_def}")
            saver_def = _copy_saver_def(saver_def)  # scoping below edits it; never edit the caller's proto
        # Any: None until build() (defer_build=True), a SaverDef after; protobuf messages are Any to mypy.
        self.saver_def: Any = saver_def
        self._builder = builder
        self._is_built = False
        self._allow_empty = allow_empty
        self._is_empty: bool | None = None
        self._write_version = write_version
        self._pad_step_number = pad_step_number
        self._filename = filename
        self._durable = durable
        self._clock = clock or time.time
        self._last_checkpoints: list[tuple[str, float]] = []
        self._checkpoints_to_be_deleted: list[tuple[str, float]] = []
        self._next_checkpoint_time = 0.0
        self._object_restore_saver: Saver | None = None  # built on demand for object-based checkpoints
        self._save_specs: tuple[list, list, list, list] | None = None  # save_specs(), computed once
        if not defer_build:
            self.build()
        if self.saver_def:
            self._check_saver_def()
            self._write_version = self.saver_def.version
        self._save_relative_paths = save_relative_paths
        # saverkit.distributed.Coordinator: every rank saves its own variables into ONE checkpoint
        # (train/distributed_save.py); None: this process alone.
        self._coordinator = coordinator

    # --- building
    def build(self) -> None:
        """Adds the save/restore nodes (once). Needed before ``save`` when built with ``defer_build=True``."""
        if self._is_built:
            return
        self._is_built = True
        if not self.saver_def:
            if self._builder is None:
                self._builder = BulkSaverBuilder(self._write_version)
            if self._var_list is None:
                self._var_list = _all_saveable_objects()
            if not self._var_list:
                if self._allow_empty:
                    self._is_empty = True
                    return
                raise ValueError("No variables to save")
            self._is_empty = False
            with _gc.paused():
                # TF's Saver calls its builder's _build_internal (a method of this module's BaseSaverBuilder,
                # which custom builders may override), not build().
                self.saver_def = self._builder._build_internal(  # noqa: SLF001
                    self._var_list,
                    reshape=self._reshape,
                    sharded=self._sharded,
                    max_to_keep=self._max_to_keep,
                    keep_checkpoint_every_n_hours=self._keep_checkpoint_every_n_hours,
                    name=self._name,
                    restore_sequentially=self._restore_sequentially,
                    filename=self._filename,
                )
        elif self._name:
            # A SaverDef imported into a name scope: its names move into that scope (TF overloads `name` so).
            self.saver_def.filename_tensor_name = meta_graph.prepend_name_scope(
                self.saver_def.filename_tensor_name, self._name
            )
            self.saver_def.save_tensor_name = meta_graph.prepend_name_scope(
                self.saver_def.save_tensor_name, self._name
            )
            self.saver_def.restore_op_name = meta_graph.prepend_name_scope(
                self.saver_def.restore_op_name, self._name
            )
        self._check_saver_def()
        self._next_checkpoint_time = self._clock() + self.saver_def.keep_checkpoint_every_n_hours * 3600

    def _check_saver_def(self) -> None:
        if not isinstance(self.saver_def, saver_pb2.SaverDef):
            raise ValueError(f"saver_def must be a saver_pb2.SaverDef: {self.saver_def}")
        if not self.saver_def.save_tensor_name:
            raise ValueError(f"saver_def must specify the save_tensor_name: {self.saver_def}")
        if not self.saver_def.restore_op_name:
            raise ValueError(f"saver_def must specify the restore_op_name: {self.saver_def}")

    def as_saver_def(self) -> saver_pb2.SaverDef:
        """The ``SaverDef`` naming this saver's filename tensor, save tensor and restore op."""
        return self.saver_def

    def to_proto(self, export_scope: str | None = None) -> saver_pb2.SaverDef | None:
        """The ``SaverDef``, with ``export_scope`` removed from its names (None if they are outside it)."""
        if export_scope is None:
            return self.saver_def
        d = self.saver_def
        if not (
            d.filename_tensor_name.startswith(export_scope)
            and d.save_tensor_name.startswith(export_scope)
            and d.restore_op_name.startswith(export_scope)
        ):
            return None
        out = _copy_saver_def(d)
        out.filename_tensor_name = meta_graph.strip_name_scope(out.filename_tensor_name, export_scope)
        out.save_tensor_name = meta_graph.strip_name_scope(out.save_tensor_name, export_scope)
        out.restore_op_name = meta_graph.strip_name_scope(out.restore_op_name, export_scope)
        return out

    @staticmethod
    def from_proto(saver_def: saver_pb2.SaverDef, import_scope: str | None = None) -> Saver:
        """A Saver for the nodes a ``SaverDef`` names (in ``import_scope`` if given)."""
        return Saver(saver_def=saver_def, name=import_scope)

    # --- retention
    @property
    def last_checkpoints(self) -> list[str]:
        """Checkpoint prefixes not yet deleted, oldest first; any of them can be passed to ``restore``."""
        return [p for p, _ in self._last_checkpoints]

    def set_last_checkpoints(self, last_checkpoints: list[str]) -> None:
        """DEPRECATED (use ``set_last_checkpoints_with_time``). Timestamps become +inf: never kept by age."""
        assert isinstance(last_checkpoints, list)
        self._last_checkpoints = [(s, math.inf) for s in last_checkpoints]

    def set_last_checkpoints_with_time(self, last_checkpoints_with_time: list[tuple[str, float]]) -> None:
        """Sets the managed checkpoints as ``[(prefix, timestamp), ...]``, oldest first."""
        assert isinstance(last_checkpoints_with_time, list)
        self._last_checkpoints = [(p, float(t)) for p, t in last_checkpoints_with_time]

    def recover_last_checkpoints(self, checkpoint_paths: Sequence[str] | str | os.PathLike) -> None:
        """Takes over the checkpoints of an earlier run so that ``max_to_keep`` deletes them in turn.

        ``checkpoint_paths`` is a list of checkpoint prefixes (typically
        ``get_checkpoint_state(dir).all_model_checkpoint_paths``); those that still exist are kept with
        their file modification time as timestamp, in the given order. It may also be the checkpoint
        directory itself: then the paths, their timestamps and ``last_preserved_timestamp`` come from the
        directory's ``checkpoint`` file (an absent state file recovers nothing).

        Example (restart of a training job)::

            saver = saverkit.train.Saver(max_to_keep=3)
            saver.recover_last_checkpoints(ckpt_dir)   # or the list of paths, as in TensorFlow
            saver.restore(sess, saverkit.train.latest_checkpoint(ckpt_dir))
        """
        if isinstance(checkpoint_paths, (str, os.PathLike)):
            self._recover_from_directory(os.fspath(checkpoint_paths))
            return
        recovered = []
        for path in checkpoint_paths:
            try:
                mtime = checkpoint_management.get_checkpoint_mtimes([path])
            except errors.NotFoundError:
                continue  # deleted meanwhile by another process: nothing to manage
            if mtime:
                recovered.append((path, mtime[0]))
        self.set_last_checkpoints_with_time(recovered)

    def _recover_from_directory(self, checkpoint_dir: str) -> None:
        state = checkpoint_management.get_checkpoint_state(checkpoint_dir)
        if state is None:
            self.set_last_checkpoints_with_time([])
            return
        paths = list(state.all_model_checkpoint_paths)
        stamps = list(state.all_model_checkpoint_timestamps)
        if len(stamps) != len(paths):
            self.recover_last_checkpoints(paths)
        else:
            exists = checkpoint_management.checkpoint_exists
            self.set_last_checkpoints_with_time(
                [(p, t) for p, t in zip(paths, stamps, strict=True) if exists(p)]
            )
        if state.last_preserved_timestamp and self.saver_def is not None:
            self._next_checkpoint_time = (
                state.last_preserved_timestamp + self.saver_def.keep_checkpoint_every_n_hours * 3600
            )

    def _RecordLastCheckpoint(self, latest_save_path: str) -> None:  # noqa: N802 - TF's name
        if not self.saver_def.max_to_keep:
            return
        self._last_checkpoints = [p for p in self._last_checkpoints if p[0] != latest_save_path]
        self._last_checkpoints.append((latest_save_path, self._clock()))
        # TF pops one per save, so a list recovered from a longer run never shrinks back to max_to_keep;
        # the documented behaviour is "keep the max_to_keep most recent", so drop every excess entry.
        while len(self._last_checkpoints) > self.saver_def.max_to_keep:
            self._checkpoints_to_be_deleted.append(self._last_checkpoints.pop(0))

    def _MaybeDeleteOldCheckpoints(self, meta_graph_suffix: str = "meta") -> None:  # noqa: N802
        # TF's hook has no directory argument: the newest checkpoint's directory is the one we manage.
        directory = os.path.dirname(self._last_checkpoints[-1][0]) if self._last_checkpoints else "."
        self._delete_checkpoints(self._checkpoints_to_delete(), meta_graph_suffix, directory)

    def _checkpoints_to_delete(self) -> list[str]:
        """Takes the checkpoints that left the max_to_keep window; returns those not kept by age."""
        doomed = []
        while self._checkpoints_to_be_deleted:
            path, stamp = self._checkpoints_to_be_deleted.pop(0)
            if stamp > self._next_checkpoint_time:
                # One kept per keep_checkpoint_every_n_hours of training.
                self._next_checkpoint_time += self.saver_def.keep_checkpoint_every_n_hours * 3600
                continue
            doomed.append(path)
        return doomed

    def _delete_checkpoints(self, paths: list[str], meta_graph_suffix: str, directory: str,
                            storage_options: dict | None = None) -> None:
        for path in paths:
            try:
                checkpoint_management.delete_managed_checkpoint(path, directory, meta_graph_suffix,
                                                                storage_options=storage_options)
            except Exception as e:  # noqa: BLE001 - TF ignores failed deletions (logged) and carries on
                _logger.warning(f"Ignoring: {e}")

    def _last_preserved_timestamp(self) -> float:
        return self._next_checkpoint_time - self.saver_def.keep_checkpoint_every_n_hours * 3600

    # --- save
    def save(
        self,
        sess: Session,
        save_path: str | os.PathLike,
        global_step: Any = None,
        latest_filename: str | None = None,
        meta_graph_suffix: str = "meta",
        write_meta_graph: bool = True,
        write_state: bool = True,
        strip_default_attrs: bool = False,
        *,
        durable: bool | None = None,
        options: Any = None,
        storage_options: dict | None = None,
    ) -> str | None:
        """Saves the variables; returns the checkpoint prefix (``save_path`` or ``save_path-<step>``).

        ``global_step`` (an int, a variable/tensor or a tensor name, evaluated in ``sess``) is appended to
        ``save_path`` (zero-padded to 8 digits with ``pad_step_number``). The data and index files are written
        first, then the ``.meta`` (unless ``write_meta_graph=False``), then the ``checkpoint`` state file
        (unless ``write_state=False``), and finally checkpoints beyond ``max_to_keep`` are deleted.
        Returns None for an empty saver (``allow_empty=True`` and no variables).

        ``options=saverkit.train.CheckpointOptions(enable_async=True)``: returns once the values are copied
        (the checkpoint holds them as they were then) and writes in the background; ``sync()`` waits and
        raises a background error, as does the next save. See ``saverkit.train.async_save``. A URL
        ``save_path`` (``s3://``...) is uploaded in the background too. A save coordinated over ranks
        (``coordinator=``) returns once this rank's values are fetched (copied), and every rank's background
        thread writes and commits the checkpoint together (``saverkit.train.distributed_save``); every
        rank must pass the same options.
        """
        if async_save.is_async(options) and self._coordinator is None:
            return async_save.saver_save(
                self, sess, save_path, global_step, options, latest_filename=latest_filename,
                meta_graph_suffix=meta_graph_suffix, write_meta_graph=write_meta_graph,
                write_state=write_state, strip_default_attrs=strip_default_attrs, durable=durable,
                storage_options=storage_options)
        async_save.before_sync_save(self)  # at most one save in flight: wait for it, raise its error
        if not self._is_built:
            raise RuntimeError("`build()` should be called before save if defer_build==True")
        durable = self._durable if durable is None else durable
        if latest_filename is None:
            latest_filename = "checkpoint"
        if self._write_version != SaverDef.V2:
            raise ValueError("saverkit writes only V2 checkpoints (SaverDef.V2)")
        if os.path.split(latest_filename)[0]:
            raise ValueError("'latest_filename' must not contain path components")

        if self._coordinator is not None:  # one checkpoint from every rank's variables
            from saverkit.train import distributed_save  # noqa: PLC0415 - only for distributed jobs

            return distributed_save.save(
                self, sess, os.fsdecode(os.fspath(save_path)), global_step, latest_filename,
                meta_graph_suffix, write_meta_graph, write_state, strip_default_attrs, durable,
                storage_options, options=options)
        if storage.is_url(save_path):  # s3://, gs://, memory://, ...: see saverkit.storage
            return self._save_remote(sess, os.fsdecode(os.fspath(save_path)), global_step, latest_filename,
                                     meta_graph_suffix, write_meta_graph, write_state, strip_default_attrs,
                                     storage_options)
        save_path = storage.local_path(save_path)
        if global_step is not None:
            step = _global_step_value(sess, global_step)
            checkpoint_file = f"{save_path}-{step:08d}" if self._pad_step_number else f"{save_path}-{step}"
        else:
            checkpoint_file = save_path
            if os.path.basename(save_path) == latest_filename and not self._sharded:
                raise ValueError(
                    f"'latest_filename' collides with 'save_path': '{latest_filename}' and '{save_path}'"
                )
        if not hasattr(sess, "run"):
            raise TypeError(f"'sess' must be a Session; {sess}")

        save_path_parent = os.path.dirname(save_path)
        model_checkpoint_path = None
        if not self._is_empty:
            # Like TF's bundle writer, a save creates the checkpoint's directory, but only one level.
            grandparent = os.path.dirname(save_path_parent)
            if (
                save_path_parent
                and not os.path.isdir(save_path_parent)
                and not os.path.isdir(grandparent or ".")
            ):
                raise ValueError(f"Parent directory of {save_path} doesn't exist, can't save.")
            try:
                feed = {self.saver_def.filename_tensor_name: checkpoint_file}
                options = RunOptions(durable=True) if durable else None
                result = sess.run(self.saver_def.save_tensor_name, feed, options=options)
            except errors.OpError as exc:
                if self._sharded:  # the parts of a failed sharded save (the bundle writer removed its temps)
                    tempfiles.remove_own_part_dirs(checkpoint_file)
                if isinstance(exc, (errors.FailedPreconditionError, errors.NotFoundError)) and (
                        save_path_parent and not os.path.isdir(save_path_parent)):
                    raise ValueError(f"Parent directory of {save_path} doesn't exist, can't save.") from exc
                raise
            model_checkpoint_path = _as_str(result)
            if durable:
                _fsync_checkpoint(model_checkpoint_path)

        self._commit(sess, checkpoint_file, model_checkpoint_path, save_path_parent, latest_filename,
                     meta_graph_suffix, write_meta_graph, write_state, strip_default_attrs, durable)
        if model_checkpoint_path is not None:  # what killed earlier saves left behind
            tempfiles.remove_stale(save_path_parent or ".")
        return model_checkpoint_path

    def _commit(self, sess: Session, checkpoint_file: str, model_checkpoint_path: str | None, save_dir: str,
                latest_filename: str, meta_graph_suffix: str, write_meta_graph: bool, write_state: bool,
                strip_default_attrs: bool, durable: bool, storage_options: dict | None = None) -> None:
        """What a local save does once its bundle is written (``model_checkpoint_path``; None for a Saver
        without variables): the ``.meta``, then the state file, then retention. Also the commit of a save
        coordinated over ranks (rank 0, after the merge: see distributed_save), whose prefix may be a URL
        (``storage_options`` for its store)."""
        recorded = (list(self._last_checkpoints), list(self._checkpoints_to_be_deleted),
                    self._next_checkpoint_time)
        doomed: list[str] = []
        try:
            if write_meta_graph:
                # Before the state file: who finds the checkpoint through `checkpoint` also finds its .meta.
                meta_file = checkpoint_management.meta_graph_filename(checkpoint_file, meta_graph_suffix)
                graph = getattr(sess, "graph", None) or ops.get_default_graph()
                with graph.as_default():
                    self._export_meta_graph_file(
                        meta_file, strip_default_attrs=strip_default_attrs, durable=durable,
                        storage_options=storage_options,
                    )

            if model_checkpoint_path is not None and write_state:
                self._RecordLastCheckpoint(model_checkpoint_path)
                doomed = self._checkpoints_to_delete()  # decided first: last_preserved_timestamp is current
                self._update_state(save_dir, model_checkpoint_path, latest_filename, durable, storage_options)
        except (errors.OpError, OSError):
            # Out of space/I/O error after the bundle was written: the save failed, so leave the directory
            # as it was (unless that prefix is a checkpoint the state already names: never delete those).
            self._last_checkpoints, self._checkpoints_to_be_deleted, self._next_checkpoint_time = recorded
            _remove_unrecorded(checkpoint_file, meta_graph_suffix, save_dir, latest_filename,
                               [p for p, _ in recorded[0]], storage_options)
            raise
        if model_checkpoint_path is not None and write_state:
            # after the state file stops naming them
            self._delete_checkpoints(doomed, meta_graph_suffix, save_dir or ".", storage_options)

    def _update_state(
        self, save_dir: str, model_checkpoint_path: str, latest_filename: str, durable: bool,
        storage_options: dict | None = None,
    ) -> None:
        paths = self.last_checkpoints
        times = [t for _, t in self._last_checkpoints]
        if not paths or paths[-1] != model_checkpoint_path:  # max_to_keep=0: the state lists only the latest
            paths.append(model_checkpoint_path)
            times.append(self._clock())
        # set_last_checkpoints() entries have no real time: write none rather than "inf"
        stamps = times if all(math.isfinite(t) for t in times) else None
        checkpoint_management.update_checkpoint_state_internal(
            save_dir=save_dir,
            model_checkpoint_path=model_checkpoint_path,
            all_model_checkpoint_paths=paths,
            latest_filename=latest_filename,
            save_relative_paths=self._save_relative_paths,
            all_model_checkpoint_timestamps=stamps,
            last_preserved_timestamp=self._last_preserved_timestamp(),
            durable=durable,
            storage_options=storage_options,
        )

    # --- the steps of a save or restore coordinated over ranks (train/distributed_save.py); not TF's API
    @property
    def coordinator(self) -> Any:
        """The ``coordinator`` this Saver was made with (a ``saverkit.distributed.Coordinator``), or None."""
        return self._coordinator

    @property
    def sharded(self) -> bool:
        """Whether this Saver writes one bundle per device and merges them (``sharded=True``)."""
        return self._sharded

    def save_specs(self) -> tuple[list, list, list, list] | None:
        """Checkpoint keys, tensors, slice specs and dtypes of this Saver's variables, in the order its
        SaveV2 writes them; None for a Saver without variables (``allow_empty=True``). Computed once:
        turning resource variables into saveables adds read ops to the graph."""
        if self._is_empty:
            return None
        if self._save_specs is None:
            var_list = self._var_list
            if var_list is None:
                # Saver(saver_def=...): op names only. TF has no coordinated saves at all; a rank's share
                # of the checkpoint is its variables, which such a Saver does not know.
                raise errors.UnimplementedError(
                    None, None, "A Saver built from a saver_def cannot save or restore with a coordinator: "
                    "it does not know its variables. Build each rank's Saver from its variables (var_list).")
            names_to_saveables = var_list if isinstance(var_list, dict) else op_list_to_dict(var_list)
            self._save_specs = _flat_specs(validate_and_slice_inputs(names_to_saveables))
        return self._save_specs

    def checkpoint_prefix(self, sess: Session, save_path: str, global_step: Any) -> str:
        """The prefix ``save`` writes for ``save_path`` and ``global_step`` (evaluated in ``sess``):
        ``save_path-<step>`` (8 digits with ``pad_step_number``), or ``save_path`` without a step."""
        if global_step is None:
            return save_path
        step = _global_step_value(sess, global_step)
        return f"{save_path}-{step:08d}" if self._pad_step_number else f"{save_path}-{step}"

    def commit_merged(self, sess: Session, checkpoint_file: str, latest_filename: str, meta_graph_suffix: str,
                      write_meta_graph: bool, write_state: bool, strip_default_attrs: bool,
                      durable: bool, storage_options: dict | None = None) -> None:
        """Rank 0, once every rank's part is merged into ``checkpoint_file``: the rest of a ``save`` (with
        ``durable``, fsync a local checkpoint; then the ``.meta``, the state file and retention; a URL's
        with ``storage_options``)."""
        remote = storage.is_url(checkpoint_file)
        if durable and not remote:
            _fsync_checkpoint(checkpoint_file)
        self._commit(sess, checkpoint_file, checkpoint_file,
                     storage.dirname(checkpoint_file) if remote else os.path.dirname(checkpoint_file),
                     latest_filename, meta_graph_suffix, write_meta_graph, write_state, strip_default_attrs,
                     durable and not remote, storage_options)

    def record_committed(self, checkpoint_file: str) -> None:
        """The other ranks, once rank 0 committed ``checkpoint_file`` (and deleted the checkpoints beyond
        ``max_to_keep``): the same retention bookkeeping, so that every rank's ``last_checkpoints`` agree."""
        self._RecordLastCheckpoint(checkpoint_file)
        self._checkpoints_to_delete()

    def run_restore_op(self, sess: Session, prefix: str, options: Any = None) -> None:
        """Each rank, once its variables are checked against the checkpoint's index: run this Saver's
        restore op on ``prefix`` (with the run's ``options``, e.g. the readers of a coordinated restore);
        a mismatch is an InvalidArgumentError worded as ``restore`` words it."""
        try:
            sess.run(self.saver_def.restore_op_name, {self.saver_def.filename_tensor_name: prefix},
                     options=options)
        except errors.InvalidArgumentError as err:
            raise _wrap_restore_error_with_msg(
                err, "a mismatch between the current graph and the graph", "") from err

    # --- meta graph
    def export_meta_graph(
        self,
        filename: str | os.PathLike | None = None,
        collection_list: Iterable[str] | None = None,
        as_text: bool = False,
        export_scope: str | None = None,
        clear_devices: bool = False,
        clear_extraneous_savers: bool = False,
        strip_default_attrs: bool = False,
        *,
        storage_options: dict | None = None,
    ) -> meta_graph_pb2.MetaGraphDef:
        """Returns (and writes to ``filename`` if given) the ``MetaGraphDef`` of the default graph with this
        saver's ``SaverDef``. A URL ``filename`` is written with ``storage_options`` (saverkit.storage)."""
        return export_meta_graph(
            filename=filename,
            saver_def=self.saver_def,
            collection_list=collection_list,
            as_text=as_text,
            export_scope=export_scope,
            clear_devices=clear_devices,
            clear_extraneous_savers=clear_extraneous_savers,
            strip_default_attrs=strip_default_attrs,
            storage_options=storage_options,
        )

    def _export_meta_graph_file(self, filename: str, strip_default_attrs: bool, durable: bool,
                                storage_options: dict | None = None) -> None:
        meta_graph_def, _ = meta_graph.export_scoped_meta_graph(
            saver_def=self.saver_def, strip_default_attrs=strip_default_attrs
        )
        meta_graph.write_meta_graph_file(meta_graph_def, filename, durable=durable,
                                         storage_options=storage_options)

    # --- restore
    def _save_remote(self, sess: Session, save_path: str, global_step: Any, latest_filename: str,
                     meta_graph_suffix: str, write_meta_graph: bool, write_state: bool,
                     strip_default_attrs: bool, storage_options: dict | None) -> str | None:
        """``save`` to a URL. The same order as a local save, which on a store is the commit: the data
        object, then the index (the SaveV2 kernel: the checkpoint is visible from then on), then the
        ``.meta``, then the state file; then retention. A failure before the state file names the new
        checkpoint deletes what it had written (never objects it did not write)."""
        if global_step is not None:
            step = _global_step_value(sess, global_step)
            checkpoint_file = f"{save_path}-{step:08d}" if self._pad_step_number else f"{save_path}-{step}"
        else:
            checkpoint_file = save_path
            if storage.basename(save_path) == latest_filename:
                raise ValueError(
                    f"'latest_filename' collides with 'save_path': '{latest_filename}' and '{save_path}'")
        from saverkit import remote_bundle  # noqa: PLC0415 - the engine: only when saving

        save_dir = storage.dirname(save_path)
        loc = storage.Location(save_path, storage_options)
        started = time.time()
        if loc.read_only:
            raise errors.PermissionDeniedError(None, None, f"Cannot save to {save_path}: read-only store")
        model_checkpoint_path = None
        created = False  # a checkpoint under a new prefix: removed whole if a later step fails
        written: list[str] = []
        recorded = (list(self._last_checkpoints), list(self._checkpoints_to_be_deleted),
                    self._next_checkpoint_time)
        doomed: list[str] = []
        # The foreground of an asynchronous save (saverkit.train.async_save) only copies the values: what
        # the store holds is looked up, and staged parts dropped, by its background pass.
        snapshot_pass = getattr(sess, "takes_snapshot", False)
        try:
            if not self._is_empty:
                existed = snapshot_pass or loc.isfile(checkpoint_file + ".index")
                feed = {self.saver_def.filename_tensor_name: checkpoint_file}
                try:
                    result = sess.run(self.saver_def.save_tensor_name, feed,
                                      options=RunOptions(storage_options=storage_options))
                finally:  # parts of a sharded save that failed before its merge
                    if not snapshot_pass:
                        remote_bundle.drop_parts(checkpoint_file)
                model_checkpoint_path = _as_str(result)
                created = not existed
            if write_meta_graph:
                meta_file = checkpoint_management.meta_graph_filename(checkpoint_file, meta_graph_suffix)
                if not loc.isfile(meta_file):
                    written.append(meta_file)
                graph = getattr(sess, "graph", None) or ops.get_default_graph()
                with graph.as_default():
                    meta_graph_def, _ = meta_graph.export_scoped_meta_graph(
                        saver_def=self.saver_def, strip_default_attrs=strip_default_attrs)
                meta_graph.write_meta_graph_file(meta_graph_def, meta_file, storage_options=storage_options)
            if model_checkpoint_path is not None and write_state:
                self._RecordLastCheckpoint(model_checkpoint_path)
                doomed = self._checkpoints_to_delete()
                self._update_state(save_dir, model_checkpoint_path, latest_filename, durable=False,
                                   storage_options=storage_options)
        except BaseException:
            self._last_checkpoints, self._checkpoints_to_be_deleted, self._next_checkpoint_time = recorded
            try:  # the index first: the checkpoint stops being visible before its data goes
                if created and model_checkpoint_path is not None:
                    remote_bundle.remove_checkpoint(loc, model_checkpoint_path)
                loc.remove(written)
            except errors.OpError as e:
                _logger.warning("Could not remove the objects of the failed save %s: %s", checkpoint_file, e)
            raise
        for path in doomed:  # after the state file stops naming them
            try:
                checkpoint_management.delete_managed_checkpoint(path, save_dir, meta_graph_suffix,
                                                                storage_options=storage_options)
            except Exception as e:  # noqa: BLE001 - TF ignores failed deletions (logged) and carries on
                _logger.warning(f"Ignoring: {e}")
        if model_checkpoint_path is not None:  # what killed earlier saves of this model left
            try:
                loc.clean_interrupted(save_dir, storage.basename(save_path), started)
            except Exception as e:  # noqa: BLE001 - cleanup is best effort; the save succeeded
                _logger.warning("Could not clean up after interrupted saves in %s: %s", save_dir, e)
        return model_checkpoint_path

    def restore(self, sess: Session, save_path: str | os.PathLike | None, *,
                storage_options: dict | None = None) -> None:
        """Restores the variables from the checkpoint ``save_path`` (a prefix, as ``save`` returns).

        Raises ValueError for ``None``; NotFoundError when no checkpoint is there ("Failed to find any
        matching files for ...") or a variable's key is missing; InvalidArgumentError when a shape or dtype
        differs. Errors name the variable, the key and the checkpoint.
        """
        async_save.wait_for(self)  # an asynchronous save in flight completes first
        if self._is_empty and self._coordinator is None:
            return
        if save_path is None:
            raise ValueError("Can't load save_path when it is None.")
        prefix = os.fsdecode(os.fspath(save_path))
        if self._coordinator is not None:  # each rank restores its own variables
            from saverkit.train import distributed_save  # noqa: PLC0415 - only for distributed jobs

            return distributed_save.restore(self, sess, prefix, storage_options)
        remote = storage.is_url(prefix)  # s3://, gs://, ...: see saverkit.storage
        prefix = prefix if remote else storage.local_path(prefix)
        if not checkpoint_management.checkpoint_exists(prefix, storage_options):
            raise missing_checkpoint_error(prefix)
        try:
            sess.run(self.saver_def.restore_op_name, {self.saver_def.filename_tensor_name: prefix},
                     options=RunOptions(storage_options=storage_options) if remote else None)
        except errors.NotFoundError as err:
            # Missing keys: either the graph changed, or this is an object-based (tf.train.Checkpoint)
            # checkpoint, whose keys are object paths; TF then restores through the object graph's names.
            try:
                names_to_keys = object_graph_key_mapping(prefix)
            except errors.NotFoundError:
                raise _wrap_restore_error_with_msg(
                    err, "a Variable name or other graph key that is missing", self._diagnose(prefix)
                ) from err
            _logger.warning(
                "Restoring an object-based checkpoint using a name-based saver. This may be somewhat "
                "fragile, and will re-build the Saver. Instead, consider loading object-based checkpoints "
                "using saverkit.train.Checkpoint()."
            )
            self._object_restore_saver = saver_from_object_based_checkpoint(
                checkpoint_path=prefix,
                var_list=self._var_list,
                builder=self._builder,
                names_to_keys=names_to_keys,
                cached_saver=self._object_restore_saver,
            )
            self._object_restore_saver.restore(sess=sess, save_path=prefix)
        except errors.InvalidArgumentError as err:
            raise _wrap_restore_error_with_msg(
                err, "a mismatch between the current graph and the graph", self._diagnose(prefix)
            ) from err

    def sync(self) -> None:
        """Wait for this Saver's asynchronous save in flight (``save(..., options=CheckpointOptions(
        enable_async=True))``) and raise its error if it failed."""
        async_save.sync(self)

    def _diagnose(self, prefix: str) -> str:
        """On a failed restore: which of our variables' keys are missing or differ in the checkpoint."""
        if self._var_list is None or isinstance(self._var_list, str):
            return ""
        try:
            from saverkit.train import checkpoint_utils

            reader = checkpoint_utils.load_checkpoint(prefix)
            shapes = reader.get_variable_to_shape_map()
            dtypes = reader.get_variable_to_dtype_map()
            var_list = self._var_list if isinstance(self._var_list, dict) else op_list_to_dict(self._var_list)
            saveables = validate_and_slice_inputs(var_list)
        except Exception:  # noqa: BLE001 - only an aid for the message; the original error stands
            return ""
        lines = []
        for saveable in saveables:
            var_name = _variable_name(saveable)
            for spec in saveable.specs:
                if spec.name not in shapes:
                    lines.append(f"Key {spec.name} not found in checkpoint {prefix} (variable {var_name})")
                    continue
                want = spec.tensor.get_shape()
                have = list(shapes[spec.name])
                if spec.slice_spec:
                    continue
                if not self._reshape and want.is_fully_defined() and list(want.as_list()) != have:
                    lines.append(
                        f"Variable {var_name} has shape {want.as_list()} but checkpoint {prefix} "
                        f"has shape {have} for key {spec.name}"
                    )
                if dtypes[spec.name] != spec.dtype.base_dtype:
                    lines.append(
                        f"Variable {var_name} has dtype {spec.dtype.base_dtype.name} but checkpoint "
                        f"{prefix} has {dtypes[spec.name].name} for key {spec.name}"
                    )
        return "\n".join(lines)


def _variable_name(saveable: SaveableObject) -> str:
    op = saveable.op
    if isinstance(op, (variables.Variable, ops.Tensor)):
        return op.op.name
    return saveable.name


def _copy_saver_def(saver_def: saver_pb2.SaverDef) -> saver_pb2.SaverDef:
    out = saver_pb2.SaverDef()
    out.CopyFrom(saver_def)
    return out


def _as_str(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode()
    if hasattr(x, "item"):  # numpy scalar / 0-d object array
        return _as_str(x.item())
    return str(x)


def _global_step_value(sess, global_step: Any) -> int:
    if isinstance(global_step, bool):
        raise TypeError(f"global_step must be an int, a tensor or a variable, not {global_step!r}")
    if isinstance(global_step, int):
        return global_step
    if hasattr(global_step, "__index__") and not hasattr(global_step, "op"):
        return int(global_step)
    return int(sess.run(global_step))


def _remove_unrecorded(checkpoint_file: str, meta_graph_suffix: str, save_dir: str, latest_filename: str,
                      recorded: list[str], storage_options: dict | None = None) -> None:
    """Removes the files of a failed save, unless the state file or this saver names that prefix."""
    named = set(recorded)
    with contextlib.suppress(Exception):  # an unreadable state file names nothing we can trust
        state = checkpoint_management.get_checkpoint_state(save_dir or ".", latest_filename, storage_options)
        if state is not None:
            named |= {state.model_checkpoint_path, *state.all_model_checkpoint_paths}
    remote = storage.is_url(checkpoint_file)
    same = (lambda p: p) if remote else os.path.abspath
    if same(checkpoint_file) in {same(p) for p in named}:
        return
    directory = storage.dirname(checkpoint_file) if remote else (os.path.dirname(checkpoint_file) or ".")
    with contextlib.suppress(errors.OpError, UserWarning):  # the caller re-raises the error that matters
        checkpoint_management.delete_managed_checkpoint(checkpoint_file, directory, meta_graph_suffix,
                                                        storage_options=storage_options)


def _fsync_checkpoint(prefix: str) -> None:
    """fsync every file of the checkpoint, its directory and the directory's parent (the save may have
    created the directory), so that a rename after this is durable."""
    dirname = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    paths = [
        os.path.join(dirname, name)
        for name in os.listdir(dirname)
        if name == base + ".index" or name.startswith(base + ".data-")
    ]
    for path in [*paths, dirname, os.path.dirname(os.path.abspath(dirname))]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class CheckpointNotFoundError(errors.NotFoundError, ValueError):
    """No checkpoint at the given prefix. Also a ValueError: TensorFlow's Saver raises ValueError here."""


def missing_checkpoint_error(prefix: str) -> errors.NotFoundError:
    """The error of a restore from ``prefix`` where there is no checkpoint: what was looked for, and what
    the directory holds instead (also raised by restores coordinated over ranks)."""
    dirname = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    looked = f"{prefix}.index and {prefix}.data-?????-of-?????"
    if not os.path.isdir(dirname):
        found = f"directory {dirname} does not exist"
    else:
        names = sorted(n for n in os.listdir(dirname) if n.endswith(".index"))
        found = (
            (
                f"{dirname} holds the checkpoints {', '.join(n[: -len('.index')] for n in names[:10])}"
                + (" ..." if len(names) > 10 else "")
            )
            if names
            else f"{dirname} holds no checkpoint"
        )
        if os.path.isdir(prefix):
            found += f"; {prefix} is a directory (pass saverkit.train.latest_checkpoint({prefix!r}))"
        elif base.endswith(".index") or ".data-" in base:
            found += "; pass the checkpoint prefix, without .index/.data-... suffix"
    msg = (
        f"Failed to find any matching files for {prefix}: looked for {looked}; {found}. "
        "The passed save_path is not a valid checkpoint."
    )
    return CheckpointNotFoundError(None, None, msg)


def _wrap_restore_error_with_msg(
    err: errors.OpError, extra_verbiage: str, details: str = ""
) -> errors.OpError:
    msg = (
        f"Restoring from checkpoint failed. This is most likely due to {extra_verbiage} from the checkpoint. "
        "Please ensure that you have not altered the graph expected based on the checkpoint. "
        f"Original error:\n\n{err.message}"
    )
    if details:
        msg += "\n\n" + details
    return type(err)(err.node_def, err.op, msg)


# --- meta graph functions
def export_meta_graph(
    filename: str | os.PathLike | None = None,
    meta_info_def: meta_graph_pb2.MetaGraphDef.MetaInfoDef | None = None,
    graph_def: Any = None,
    saver_def: saver_pb2.SaverDef | None = None,
    collection_list: Iterable[str] | None = None,
    as_text: bool = False,
    graph: ops.Graph | None = None,
    export_scope: str | None = None,
    clear_devices: bool = False,
    clear_extraneous_savers: bool = False,
    strip_default_attrs: bool = False,
    *,
    storage_options: dict | None = None,
) -> meta_graph_pb2.MetaGraphDef:
    """Returns the ``MetaGraphDef`` of ``graph`` (default graph); writes it to ``filename`` if given (a URL
    with ``storage_options``: see saverkit.storage)."""
    meta_graph_def, _ = meta_graph.export_scoped_meta_graph(
        filename=filename,
        meta_info_def=meta_info_def,
        graph_def=graph_def,
        saver_def=saver_def,
        collection_list=collection_list,
        as_text=as_text,
        graph=graph,
        export_scope=export_scope,
        clear_devices=clear_devices,
        clear_extraneous_savers=clear_extraneous_savers,
        strip_default_attrs=strip_default_attrs,
        storage_options=storage_options,
    )
    return meta_graph_def


def import_meta_graph(
    meta_graph_or_file: meta_graph_pb2.MetaGraphDef | str | os.PathLike,
    clear_devices: bool = False,
    import_scope: str | None = None,
    *,
    storage_options: dict | None = None,
    **kwargs: Any,
) -> Saver | None:
    """Imports a ``MetaGraphDef`` (or a binary/text ``.meta`` file) into the default graph.

    Returns a Saver built from its ``saver_def``; without one, a default Saver over the imported variables;
    None when there are no variables to restore. A URL file (``s3://...``) is read with ``storage_options``
    (saverkit.storage).
    """
    if isinstance(meta_graph_or_file, meta_graph_pb2.MetaGraphDef):
        meta_graph_def = meta_graph_or_file
    else:
        meta_graph_def = meta_graph.read_meta_graph_file(meta_graph_or_file, storage_options)
        kwargs.setdefault("source_file", os.fspath(meta_graph_or_file))  # named in errors of its Consts
    imported_vars = meta_graph.import_scoped_meta_graph(
        meta_graph_def, clear_devices=clear_devices, import_scope=import_scope, **kwargs
    )
    if meta_graph_def.HasField("saver_def"):
        scope = import_scope
        if imported_vars:
            sample_key, sample_var = next(iter(imported_vars.items()))
            scope = sample_var.name[: -len(sample_key)]
        return Saver(saver_def=meta_graph_def.saver_def, name=scope)
    if _all_saveable_objects(scope=import_scope):
        return Saver()
    return None


OBJECT_GRAPH_PROTO_KEY = trackable.OBJECT_GRAPH_PROTO_KEY  # re-exported: TF has it in saver.py too


def object_graph_key_mapping(checkpoint_path: str) -> dict[str, str]:
    """``{variable name when saved: checkpoint key}`` of an object-based checkpoint (NotFoundError if the
    checkpoint has no object graph)."""
    from saverkit.protobuf import trackable_object_graph_pb2
    from saverkit.train import checkpoint_utils

    reader = checkpoint_utils.load_checkpoint(checkpoint_path)
    if not reader.has_tensor(OBJECT_GRAPH_PROTO_KEY):
        raise errors.NotFoundError(None, None, f"Key {OBJECT_GRAPH_PROTO_KEY} not found in checkpoint")
    raw = reader.get_tensor(OBJECT_GRAPH_PROTO_KEY)  # bytes (a 0-d string tensor, as from TF's reader)
    if not isinstance(raw, bytes):
        raise errors.DataLossError(
            None, None, f"{OBJECT_GRAPH_PROTO_KEY} of checkpoint {checkpoint_path} is not a string scalar")
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw)
    return {a.full_name: a.checkpoint_key for node in graph.nodes for a in node.attributes}


def saver_from_object_based_checkpoint(
    checkpoint_path: str,
    var_list: Any = None,
    builder: BaseSaverBuilder | None = None,
    names_to_keys: dict[str, str] | None = None,
    cached_saver: Saver | None = None,
) -> Saver:
    """A Saver that restores ``var_list`` (default: all saveables) from an object-based checkpoint, each
    variable from the key its name had when the checkpoint was written (TF's fallback for name-based
    restores). NotFoundError lists the variables the checkpoint does not know."""
    if names_to_keys is None:
        try:
            names_to_keys = object_graph_key_mapping(checkpoint_path)
        except errors.NotFoundError as e:
            raise ValueError(f"Checkpoint in {checkpoint_path} not an object-based checkpoint.") from e
    if var_list is None:
        var_list = _all_saveable_objects()
    if builder is None:
        builder = BulkSaverBuilder()
    if not isinstance(var_list, dict):
        var_list = op_list_to_dict(var_list)
    saveables = validate_and_slice_inputs(var_list)
    current = {s.name for s in saveables}
    previous = set(names_to_keys)
    missing = current - previous
    if missing:
        extra = previous - current
        raise errors.NotFoundError(
            None,
            None,
            f"\n\nExisting variables not in the checkpoint: {', '.join(sorted(missing))}\n\n"
            f"Variables names when this checkpoint was written which don't exist now: "
            f"{', '.join(sorted(extra))}\n\n({len(current & previous)} variable name(s) did match)\n\n"
            "Could not find some variables in the checkpoint (see names above). Saver was attempting to "
            "load an object-based checkpoint (saved using tf.train.Checkpoint) using variable names. You "
            "can construct a Saver(var_list=...) with only the variables which previously existed, and if "
            "variable names have changed you may need to make this a dictionary with the old names as keys.",
        )
    if cached_saver is not None:
        return cached_saver
    renamed: dict[str, SaveableObject] = {}
    for s in saveables:
        if type(s) is ReferenceVariableSaveable:
            renamed[s.name] = ReferenceVariableSaveable(s.op, s.slice_spec, names_to_keys[s.name])
        elif isinstance(s, ResourceVariableSaveable):
            renamed[s.name] = ResourceVariableSaveable(s.op, s.specs[0].slice_spec, names_to_keys[s.name])
        else:
            for spec in s.specs:
                spec.name = names_to_keys[spec.name]
            renamed[s.name] = s
    return Saver(list(renamed.values()), builder=builder)


def _get_saver_or_default() -> Saver:
    """The single Saver of the SAVERS collection, or a new sharded one added to it (TF's default saver)."""
    key = ops.GraphKeys.SAVERS
    savers = ops.get_collection(key)
    if savers:
        if len(savers) > 1:
            raise RuntimeError(
                f"More than one item in collection {key}. "
                "Please indicate which one to use by passing it to the constructor."
            )
        return savers[0]
    saver = Saver(sharded=True, allow_empty=True)
    ops.add_to_collection(key, saver)
    return saver


ops.register_proto_function(
    ops.GraphKeys.SAVERS, proto_type=saver_pb2.SaverDef, to_proto=Saver.to_proto, from_proto=Saver.from_proto
)
