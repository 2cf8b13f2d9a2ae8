"""``RunOptions``: what one ``Session.run`` call asks of the kernels it runs (TensorFlow's name).

Options travel with the run, never through process-wide state: two threads running the same graph with
different options (a durable save of ``model-1`` beside a plain save of ``model-10``) each get their own.
Kernels read them from their context (``ctx.options``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Options for one ``Session.run(..., options=RunOptions(...))``.

    ``durable``: checkpoint writers (SaveV2) fdatasync their files and directory, and start the disk
    writing while they copy (what ``Saver.save(durable=True)`` asks for). A hint for speed and order:
    the Saver still fsyncs what must survive a power loss.

    ``snapshot``: the snapshot of an asynchronous save (``saverkit.train.async_save``). Set, the
    checkpoint writers write nothing: SaveV2 copies its tensors into the snapshot's staging memory and
    MergeV2Checkpoints records its merge; the save's background thread writes them later, in the same
    order. The run's fetched values are copied into the same staging memory (a save coordinated over
    ranks fetches its snapshot). None (the default): kernels write as usual.

    ``storage_options``: for checkpoint paths that are URLs (``s3://...``), the keyword arguments of the
    fsspec file system (credentials, endpoint; see :mod:`saverkit.storage`). None: the backend's own
    environment (``AWS_ENDPOINT_URL``, ...).

    ``readers``: checkpoint prefix -> an open reader (``read_many(names, shape_and_slices, dtypes, out)``,
    as :class:`saverkit.bundle.BundleReader`) that RestoreV2 reads that prefix through instead of opening
    it: a coordinated restore (``saverkit.train.distributed_save``) hands each rank a reader made from
    the index rank 0 read once.
    """

    durable: bool = False
    storage_options: dict | None = dataclasses.field(default=None, hash=False, compare=False)
    snapshot: Any = None
    readers: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False, compare=False)


DEFAULT_RUN_OPTIONS = RunOptions()


def as_run_options(options: object) -> RunOptions:
    """``options`` as a RunOptions: None and objects of other kinds (e.g. TensorFlow's ``RunOptions``
    proto, whose tracing and timeout fields have no meaning here) give the defaults."""
    return options if isinstance(options, RunOptions) else DEFAULT_RUN_OPTIONS
