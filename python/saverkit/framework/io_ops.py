"""Checkpoint I/O ops (TF's ``gen_io_ops``): SaveV2, RestoreV2, MergeV2Checkpoints, ShardedFilename...

The kernels hand their tensors to the compiled engine (:mod:`saverkit.bundle`);
they are registered ``expensive`` so a Session runs them on its thread pool, and
independent SaveV2 nodes (one per shard) write concurrently while the engine
releases the GIL. RestoreV2 reads straight into the buffers of the variables its
outputs are assigned to, when the executor finds such an Assign.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import numpy as np

from saverkit import errors
from saverkit.framework import common_shapes, ops
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.op_registry import register_kernel, register_shape_fn
from saverkit.framework.string_ops import string_join  # noqa: F401  (TF keeps it among the I/O helpers)
from saverkit.framework.tensor_shape import unknown_shape

# --- builders -------------------------------------------------------------------------------------


def save_v2(
    prefix: Any, tensor_names: Any, shape_and_slices: Any, tensors: Any, name: str | None = None
) -> ops.Operation:
    """Write ``tensors`` under ``tensor_names`` to the V2 checkpoint ``prefix`` (``prefix.index`` + data)."""
    return apply_op(
        "SaveV2",
        prefix=prefix,
        tensor_names=tensor_names,
        shape_and_slices=shape_and_slices,
        tensors=list(tensors),
        name=name,
    )


def restore_v2(
    prefix: Any, tensor_names: Any, shape_and_slices: Any, dtypes: Any, name: str | None = None
) -> list[ops.Tensor]:
    """Tensors ``tensor_names`` (slices ``shape_and_slices``; "" = whole tensor) read from ``prefix``."""
    return apply_op(
        "RestoreV2",
        prefix=prefix,
        tensor_names=tensor_names,
        shape_and_slices=shape_and_slices,
        dtypes=list(dtypes),
        name=name,
    ).outputs


def merge_v2_checkpoints(
    checkpoint_prefixes: Any,
    destination_prefix: Any,
    delete_old_dirs: bool = True,
    allow_missing_files: bool = False,
    name: str | None = None,
) -> ops.Operation:
    """Merge the per-shard checkpoints ``checkpoint_prefixes`` into one at ``destination_prefix``."""
    return apply_op(
        "MergeV2Checkpoints",
        checkpoint_prefixes=checkpoint_prefixes,
        destination_prefix=destination_prefix,
        delete_old_dirs=delete_old_dirs,
        allow_missing_files=allow_missing_files,
        name=name,
    )


def sharded_filename(basename: Any, shard: Any, num_shards: Any, name: str | None = None) -> ops.Tensor:
    """``"%s-%05d-of-%05d" % (basename, shard, num_shards)``."""
    return apply_op(
        "ShardedFilename", basename=basename, shard=shard, num_shards=num_shards, name=name
    ).outputs[0]


def sharded_filespec(basename: Any, num_shards: Any, name: str | None = None) -> ops.Tensor:
    """``"%s-?????-of-%05d" % (basename, num_shards)``."""
    return apply_op("ShardedFilespec", basename=basename, num_shards=num_shards, name=name).outputs[0]


# --- kernels --------------------------------------------------------------------------------------


def _scalar(x: Any, what: str) -> Any:
    x = np.asarray(x)
    if x.ndim != 0:
        raise errors.InvalidArgumentError(None, None, f"{what} must be a scalar, got shape {list(x.shape)}")
    return x[()]


def _path(x: Any, what: str = "prefix") -> str:
    return os.fsdecode(_scalar(x, what))


def _strings(x: Any, what: str) -> list[str]:
    x = np.asarray(x, dtype=object)
    if x.ndim != 1:
        raise errors.InvalidArgumentError(None, None, f"{what} must be a vector, got shape {list(x.shape)}")
    items = x.tolist()
    if all(type(s) is bytes for s in items):  # what string tensors hold: one decode each, no type tests
        return [s.decode("utf-8") for s in items]
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in items]


def _keys(x: Any, what: str) -> list[str] | list[bytes]:
    """Tensor names for the engine: the bytes themselves when they are valid UTF-8 (the engine takes
    bytes keys as is; 10,000 decodes and re-encodes cost more than the check), else ``_strings``."""
    x = np.asarray(x, dtype=object)
    if x.ndim == 1:
        items = x.tolist()
        if all(type(s) is bytes for s in items):
            try:  # an ASCII separator ends any multi-byte sequence: valid iff every name is
                b"\0".join(items).decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                return items
    return _strings(x, what)


def _bundle() -> Any:
    from saverkit import bundle  # the compiled engine's Python API

    return bundle


def _save_v2_names(tensor_names: Any, shape_and_slices: Any, n: int) -> tuple[list, list[str]]:
    names = _keys(tensor_names, "tensor_names")
    slices = _strings(shape_and_slices, "shape_and_slices")
    if len(names) != n or len(slices) != n:
        raise errors.InvalidArgumentError(
            None, None, f"Expected {n} tensor_names and shape_and_slices, got {len(names)} and {len(slices)}"
        )
    return names, slices


@register_kernel("SaveV2", expensive=True, reads_buffers=True)
def _save_v2(ctx: Any, prefix: Any, tensor_names: Any, shape_and_slices: Any, *tensors: Any) -> list:
    path = _path(prefix)
    snapshot = ctx.options.snapshot
    if snapshot is not None:
        # An async save: the tensors are copied into its staging memory now; the names (10,000 decodes for a
        # big model) are read by its background thread, which writes the checkpoint.
        names_arr, slices_arr = np.array(tensor_names, dtype=object), np.array(shape_and_slices, dtype=object)
        n = len(tensors)
        if snapshot.add_write(
            path, tensors, list(ctx.attr("dtypes")), ctx.options.durable,
            names=lambda: _save_v2_names(names_arr, slices_arr, n), **_storage(ctx),
        ):
            return []
    names, slices = _save_v2_names(tensor_names, shape_and_slices, len(tensors))
    _bundle().write_bundle(
        path, names, [np.asarray(t) for t in tensors], slices, list(ctx.attr("dtypes")),
        durable=ctx.options.durable,  # Session.run(..., options=RunOptions(durable=True))
        **_storage(ctx),
    )
    return []


# Storage options bound to an op when it was built (init_from_checkpoint's initializers run later, in a
# run that knows nothing of the store). Kept beside the graph, never in it: credentials must not end up in
# a GraphDef or a .meta file.
_op_storage_options: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def bind_storage_options(op: Any, storage_options: dict | None) -> None:
    """The storage options a checkpoint op uses when its run gives none (see :func:`_storage`)."""
    if storage_options is not None:
        _op_storage_options[op] = dict(storage_options)


def _storage(ctx: Any) -> dict:
    """The storage options for a URL prefix (saverkit.storage): the run's, else those bound to the op;
    passed only when given."""
    so = ctx.options.storage_options
    if so is None:
        so = _op_storage_options.get(ctx.op)
    return {} if so is None else {"storage_options": so}


@register_kernel("RestoreV2", expensive=True, output_buffers=True)
def _restore_v2(ctx: Any, prefix: Any, tensor_names: Any, shape_and_slices: Any) -> list:
    names = _keys(tensor_names, "tensor_names")
    slices = _strings(shape_and_slices, "shape_and_slices")
    dts = list(ctx.attr("dtypes"))
    if len(names) != len(dts) or len(slices) != len(dts):
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Expected {len(dts)} tensor_names and shape_and_slices, got {len(names)} and {len(slices)}",
        )
    # Tensors are read straight into the variable they are restored to: numeric ones into its buffer,
    # string ones by replacing the elements of its object array (only once every read has succeeded).
    out = ctx.output_buffers(len(dts))
    path = _path(prefix)
    given = ctx.options.readers.get(path) if ctx.options.readers else None  # see RunOptions.readers
    if given is not None:
        read = given.read_many
    else:
        engine, storage = _bundle(), _storage(ctx)

        def read(names: Any, slices: Any, dts: Any, out: Any = None) -> Any:
            return engine.read_tensors(path, names, slices, dts, out=out, **storage)
    values = None
    if any(o is not None for o in out):
        try:
            values = list(read(names, slices, dts, out=out))
        except errors.InvalidArgumentError:
            # A saved shape differs from the variable's: the engine checks out= before reading anything,
            # so read into new arrays and let the assignment decide (Assign with validate_shape fails as
            # in TF, AssignVariableOp / validate_shape=False replace the variable).
            out = [None] * len(dts)
    if values is None:
        values = list(read(names, slices, dts))
    # Arrays read fresh for an uninitialized variable become its buffer: the Assign then has nothing to
    # copy, so restoring into a new session peaks at 1x the checkpoint, not 2x.
    ctx.adopt_outputs(values, out)
    return values


@register_kernel("MergeV2Checkpoints", expensive=True)
def _merge_v2_checkpoints(ctx: Any, checkpoint_prefixes: Any, destination_prefix: Any) -> list:
    prefixes = [os.fsdecode(p) for p in np.asarray(checkpoint_prefixes, dtype=object).reshape(-1)]
    args = (prefixes, _path(destination_prefix, "destination_prefix"))
    kwargs = {
        "delete_old_dirs": ctx.attr("delete_old_dirs"), "allow_missing_files": ctx.attr("allow_missing_files")
    }
    if ctx.options.snapshot is not None:  # an async save: merged by its background thread, after the writes
        ctx.options.snapshot.add_merge(*args, **kwargs, **_storage(ctx))
        return []
    _bundle().merge_bundles(*args, **kwargs, **_storage(ctx))
    return []


@register_kernel("ShardedFilename")
def _sharded_filename(ctx: Any, basename: Any, shard: Any, num_shards: Any) -> list:
    base = _scalar(basename, "basename")
    name = b"%s-%05d-of-%05d" % (base, int(_scalar(shard, "shard")), int(_scalar(num_shards, "num_shards")))
    return [np.array(name, dtype=object)]


@register_kernel("ShardedFilespec")
def _sharded_filespec(ctx: Any, basename: Any, num_shards: Any) -> list:
    base = _scalar(basename, "basename")
    return [np.array(b"%s-?????-of-%05d" % (base, int(_scalar(num_shards, "num_shards"))), dtype=object)]


register_shape_fn("SaveV2")(common_shapes.no_outputs)
register_shape_fn("MergeV2Checkpoints")(common_shapes.no_outputs)
register_shape_fn("ShardedFilename")(common_shapes.scalar_output)
register_shape_fn("ShardedFilespec")(common_shapes.scalar_output)
register_shape_fn("RestoreV2")(lambda op: [unknown_shape()] * len(op.outputs))
