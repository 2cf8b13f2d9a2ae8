"""Inspect checkpoints without TensorFlow: ``tf.train.load_checkpoint`` and friends."""

from __future__ import annotations

import os

import numpy as np

from saverkit.bundle import BundleReader
from saverkit.dtypes import DType

__all__ = ["CheckpointReader", "NewCheckpointReader", "list_variables", "load_checkpoint", "load_variable"]

# TF's DataType enum names differ from the dtype names for three types.
_ENUM_NAMES = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF"}


class CheckpointReader:
    """Reads tensors from a checkpoint, like TF's ``py_checkpoint_reader.CheckpointReader``."""

    def __init__(self, filepattern: str | os.PathLike, storage_options: dict | None = None) -> None:
        # Opening reads the index's header only; the variable maps list the whole index when first asked.
        # A URL (saverkit.storage) fetches the index once, then each tensor's bytes when it is read.
        self._reader = BundleReader(filepattern, storage_options)
        self._entries_cache: dict[str, tuple[DType, tuple[int, ...]]] | None = None

    @property
    def _entries(self) -> dict[str, tuple[DType, tuple[int, ...]]]:
        if self._entries_cache is None:
            self._entries_cache = self._reader.entries()
        return self._entries_cache

    @property
    def prefix(self) -> str:
        return self._reader.prefix

    def get_tensor(self, tensor_str: str) -> np.ndarray | np.generic | bytes:
        """The tensor's value, typed as TensorFlow's reader returns it: an ndarray, except that a 0-d
        tensor comes back as a scalar (``bytes`` for a string, a numpy scalar such as ``np.float32`` or
        ``np.int64`` otherwise), so ``ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))``
        works as with TF."""
        value = self._reader.read(tensor_str)
        return value[()] if value.ndim == 0 else value

    def get_array(self, tensor_str: str) -> np.ndarray:
        """The tensor's value as an ndarray whatever its rank (saverkit's; TF's reader lacks it)."""
        return self._reader.read(tensor_str)

    def has_tensor(self, tensor_str: str) -> bool:
        return self._reader.has_tensor(tensor_str)

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        return {name: list(shape) for name, (_, shape) in self._entries.items()}

    def get_variable_to_dtype_map(self) -> dict[str, DType]:
        return {name: dtype for name, (dtype, _) in self._entries.items()}

    def debug_string(self) -> bytes:
        lines = []
        for name, (dtype, shape) in sorted(self._entries.items()):
            enum = _ENUM_NAMES.get(dtype.name, "DT_" + dtype.name.upper())
            lines.append(f"{name} ({enum}) [{','.join(str(d) for d in shape)}]\n")
        return "".join(lines).encode("utf-8", "surrogateescape")


NewCheckpointReader = CheckpointReader


def load_checkpoint(ckpt_dir_or_file: str | os.PathLike, storage_options: dict | None = None
                    ) -> CheckpointReader:
    """A reader for a checkpoint prefix, one of its files, or a directory with a ``checkpoint`` state file
    (local, or a URL: ``s3://...``, see :mod:`saverkit.storage`)."""
    return CheckpointReader(ckpt_dir_or_file, storage_options)


def list_variables(ckpt_dir_or_file: str | os.PathLike, storage_options: dict | None = None
                   ) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor in the checkpoint, sorted by name."""
    return sorted(load_checkpoint(ckpt_dir_or_file, storage_options).get_variable_to_shape_map().items())


def load_variable(ckpt_dir_or_file: str | os.PathLike, name: str, storage_options: dict | None = None
                  ) -> np.ndarray | np.generic | bytes:
    """One tensor's value, typed as ``CheckpointReader.get_tensor`` returns it (0-d tensors as scalars).
    A trailing ``:0`` (a tensor, not a variable, name) is ignored, as in TF."""
    if name.endswith(":0"):
        name = name[:-2]
    return load_checkpoint(ckpt_dir_or_file, storage_options).get_tensor(name)


