"""`saverkit.train.init_from_checkpoint`: make variables initialize from a checkpoint, like TF1's.

Nothing is read when it is called: each mapped variable's initializer becomes `Assign(var, RestoreV2(...))`
(TF does exactly this), so running `global_variables_initializer()` (or the variable's initializer) loads the
checkpoint value. Errors are raised at call time instead, naming the assignment-map entry: a tensor the
checkpoint lacks (with the closest names it has), a variable the graph lacks (with the closest variable
names), or a shape/dtype that does not fit.

Variables are looked up by graph name among the default graph's global and local variables (TF looks in
its `get_variable` store, which only knows variables made with `tf.compat.v1.get_variable`). A partitioned
variable is a list of variables named `<name>/part_0`, `<name>/part_1`, ...: each part loads its slice of the
checkpoint tensor. Parts without slice information (`_save_slice_info`, as TF's partitioner sets) are taken
to split one axis in list order, which is what TF's partitioners produce.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["init_from_checkpoint"]


def _is_variable(x: Any) -> bool:
    from saverkit.trackable import is_variable

    return is_variable(x)


def _var_name(var: Any) -> str:
    return var.op.name


def _checkpoint_prefix(ckpt_dir_or_file: Any, storage_options: dict | None = None) -> str:
    from saverkit import bundle, checkpoint_paths, storage

    if storage.is_url(ckpt_dir_or_file):  # a store (saverkit.storage): resolved by the reader
        return bundle.BundleReader(ckpt_dir_or_file, storage_options).prefix
    return checkpoint_paths.resolve_prefix(storage.local_path(ckpt_dir_or_file))


def _close(name: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.5)
    return f" Closest names there: {matches}." if matches else ""


def _entry(key: Any, value: Any) -> str:
    shown = (
        f"<variable {_var_name(value)!r}>"
        if _is_variable(value)
        else (
            f"[{', '.join(repr(_var_name(v)) for v in value)}]"
            if isinstance(value, (list, tuple))
            else repr(value)
        )
    )
    return f"assignment map entry {key!r}: {shown}"


def _collect_partitioned_variable(name: str, store: dict) -> list[Any] | None:
    if name + "/part_0" not in store:
        return None
    parts: list[Any] = []
    while f"{name}/part_{len(parts)}" in store:
        parts.append(store[f"{name}/part_{len(parts)}"])
    return parts


def _slice_specs(parts: Sequence[Any], full_shape: Any, entry: str) -> list[str]:
    """TF shape_and_slice strings ("10 6 0,4:0,6") for the parts of a partitioned variable."""
    infos = [getattr(p, "_save_slice_info", None) for p in parts]
    if all(info is not None for info in infos):
        return [info.spec for info in infos if info is not None]  # (all are)
    full = list(full_shape)
    shapes = [p.shape.as_list() for p in parts]
    if any(len(s) != len(full) or any(d is None for d in s) for s in shapes):
        raise ValueError(
            f"Partitioned parts in {entry} must have fully defined shapes of rank {len(full)} "
            f"to load checkpoint tensor of shape {full}; got {shapes}."
        )
    axes = {i for s in shapes for i, (a, b) in enumerate(zip(s, full, strict=True)) if a != b}
    if len(axes) > 1 or (not axes and len(parts) > 1):
        raise ValueError(
            f"Cannot tell how the parts in {entry} (shapes {shapes}) split the checkpoint tensor of "
            f"shape {full}: parts must split exactly one axis."
        )
    axis = axes.pop() if axes else 0
    if sum(s[axis] for s in shapes) != full[axis]:
        raise ValueError(
            f"Shapes of the parts in {entry} ({shapes}) do not add up to the checkpoint tensor's "
            f"shape {full} along axis {axis}."
        )
    specs, offset = [], 0
    for s in shapes:
        extents = [f"{offset},{d}" if i == axis else f"0,{d}" for i, d in enumerate(s)]
        specs.append(" ".join(str(d) for d in full) + " " + ":".join(extents))
        offset += s[axis]
    return specs


def _set_checkpoint_initializer(variable: Any, prefix: str, tensor_name: str, slice_spec: str,
                                storage_options: dict | None = None) -> None:
    """Replace the variable's initializer with `Assign(variable, RestoreV2(prefix, tensor_name))`
    (a URL prefix's `storage_options` bound to the RestoreV2 op, outside the graph: see io_ops)."""
    from saverkit.framework import io_ops, variables
    from saverkit.train._variable_io import assign_op

    with variable.graph.as_default():
        restored = io_ops.restore_v2(
            prefix, [tensor_name], [slice_spec], [variable.dtype.base_dtype], name="checkpoint_initializer"
        )[0]
        restored.set_shape(variable.shape)
        io_ops.bind_storage_options(restored.op, storage_options)
        init = assign_op(variable, restored)
    # What TF's init_from_checkpoint does to a variable: initializer and initial value now read the file.
    variables.set_initializer(variable, init, restored)


def _check_tensor(var_or_parts: Any, tensor_name: str, prefix: str, entries: dict, entry: str) -> None:
    if tensor_name not in entries:
        raise ValueError(
            f"init_from_checkpoint ({entry}): tensor {tensor_name!r} is not in checkpoint {prefix} "
            f"({len(entries)} tensors).{_close(tensor_name, entries)}"
        )
    dtype, shape = entries[tensor_name]
    parts = var_or_parts if isinstance(var_or_parts, (list, tuple)) else [var_or_parts]
    for var in parts:
        if var.dtype.base_dtype != dtype:
            raise ValueError(
                f"init_from_checkpoint ({entry}): variable {_var_name(var)!r} is "
                f"{var.dtype.base_dtype.name} but "
                f"tensor {tensor_name!r} in checkpoint {prefix} is {dtype.name}."
            )
    if not isinstance(var_or_parts, (list, tuple)) and not var_or_parts.shape.is_compatible_with(shape):
        raise ValueError(
            f"init_from_checkpoint ({entry}): shape of variable {_var_name(var_or_parts)!r} "
            f"({var_or_parts.shape.as_list()}) doesn't match the shape of tensor {tensor_name!r} "
            f"({list(shape)}) in checkpoint {prefix}."
        )


def _initialize(var_or_parts: Any, prefix: str, tensor_name: str, entries: dict, entry: str,
                storage_options: dict | None = None) -> None:
    _check_tensor(var_or_parts, tensor_name, prefix, entries, entry)
    if isinstance(var_or_parts, (list, tuple)):
        specs = _slice_specs(var_or_parts, entries[tensor_name][1], entry)
        for var, spec in zip(var_or_parts, specs, strict=True):
            _set_checkpoint_initializer(var, prefix, tensor_name, spec, storage_options)
    else:
        _set_checkpoint_initializer(var_or_parts, prefix, tensor_name, "", storage_options)


def init_from_checkpoint(
    ckpt_dir_or_file: str | os.PathLike, assignment_map: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *, storage_options: dict | None = None,
) -> None:
    """Make the mapped variables' initializers load values from a checkpoint (TF1's init_from_checkpoint).

    `ckpt_dir_or_file` is a checkpoint prefix (or one of its files, or a directory with a `checkpoint`
    state file: its latest checkpoint is used). `assignment_map` is a dict, or a list of pairs when one
    checkpoint tensor initializes several variables. Keys name checkpoint tensors, values name variables:

    * `'ckpt_scope/': 'scope/'`: every variable under `scope/` loads the tensor with the same name under
      `ckpt_scope/` (`scope/dense/w` <- `ckpt_scope/dense/w`);
    * `'/': 'scope/'`: variables under `scope/` load from the checkpoint's root (`scope/w` <- `w`);
    * `'ckpt_scope/': '/'`: every variable loads from `ckpt_scope/` (`w` <- `ckpt_scope/w`);
    * `'old/name': 'new/name'`: variable `new/name` loads tensor `old/name`;
    * `'old/name': variable`: that variable object loads `old/name`;
    * `'old/name': [part_0, part_1, ...]` or a `PartitionedVariable` (from `saverkit.get_variable` with a
      partitioner): the parts of a partitioned variable load their slices.

    Values are loaded when the initializers run, e.g. by `session.run(global_variables_initializer())`.
    Raises ValueError (naming the entry) for a missing tensor or variable and for a shape or dtype mismatch.

    A URL `ckpt_dir_or_file` (`s3://...`, see saverkit.storage) is read with `storage_options` (credentials,
    endpoint), now and when the initializers run; they are kept beside the graph, never written into it.
    """
    from saverkit import bundle, global_variables, local_variables
    from saverkit.framework.partitioned_variables import PartitionedVariable

    prefix = _checkpoint_prefix(ckpt_dir_or_file, storage_options)
    entries = bundle.BundleReader(prefix, storage_options).entries()
    pairs = list(assignment_map.items()) if isinstance(assignment_map, Mapping) else list(assignment_map)
    # A PartitionedVariable stands for its parts (TF takes only the list; the object is the same thing).
    pairs = [(k, v.get_variable_list() if isinstance(v, PartitionedVariable) else v) for k, v in pairs]
    store = {_var_name(v): v for v in global_variables() + local_variables()}
    for tensor_name, current in sorted(pairs, key=lambda pair: pair[0]):
        entry = _entry(tensor_name, current)
        if _is_variable(current) or (
            isinstance(current, (list, tuple)) and current and all(_is_variable(v) for v in current)
        ):
            _initialize(
                list(current) if isinstance(current, tuple) else current, prefix, tensor_name, entries, entry,
                storage_options,
            )
            continue
        if not isinstance(current, str):
            raise TypeError(
                f"init_from_checkpoint ({entry}): values must be variables, lists of variables "
                f"(partitioned parts) or variable/scope names, got {type(current).__name__}."
            )
        var = store.get(current) or _collect_partitioned_variable(current, store)
        if var is not None:
            _initialize(var, prefix, tensor_name, entries, entry, storage_options)
            continue
        if not tensor_name.endswith("/") or not current.endswith("/"):
            if current.endswith("/") or tensor_name.endswith("/"):
                raise ValueError(
                    f"init_from_checkpoint ({entry}): a scope maps only to a scope; both names must end with "
                    "'/' (e.g. 'ckpt_scope/': 'scope/')."
                )
            raise ValueError(
                f"init_from_checkpoint ({entry}): there is no variable named {current!r} in the default "
                "graph."
                f"{_close(current, store)} To map a whole scope, end both names with '/' "
                "('ckpt_scope/': 'scope/')."
            )
        _initialize_scope(tensor_name, current, store, prefix, entries, entry, storage_options)


def _initialize_scope(
    tensor_scope: str, var_scope: str, store: dict, prefix: str, entries: dict, entry: str,
    storage_options: dict | None = None,
) -> None:
    scope = var_scope[: var_scope.rindex("/")]
    names = set()
    for name in store:
        if not scope or name.startswith(scope + "/"):
            if "/part_" in name:
                name = name[: name.index("/part_")]
            names.add(name)
    if not names:
        warnings.warn(
            f"init_from_checkpoint ({entry}): no variables under {var_scope!r}; nothing to initialize.",
            stacklevel=3,
        )
    for name in sorted(names):
        tensor_name = name[len(scope) :]
        if var_scope != "/":
            tensor_name = tensor_name[1:]
        if tensor_scope != "/":
            tensor_name = tensor_scope + tensor_name
        if tensor_name.endswith("/"):
            tensor_name = tensor_name[:-1]
        var = store.get(name) or _collect_partitioned_variable(name, store)
        _initialize(var, prefix, tensor_name, entries, f"{entry}, variable {name!r}", storage_options)
