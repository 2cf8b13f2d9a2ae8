"""`saverkit.train.CheckpointManager`: keep the last N checkpoints of a `Checkpoint`, like TF's.

The manager's state is the directory's `checkpoint` file, written exactly as `tf.train.CheckpointManager`
writes it (relative paths, one timestamp per checkpoint, `last_preserved_timestamp`), so TF's manager and
this one can take turns on the same directory.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from saverkit import storage
from saverkit.train import async_save, checkpoint_management

if TYPE_CHECKING:
    from saverkit.framework.session import Session
    from saverkit.train.checkpoint import Checkpoint

__all__ = ["CheckpointManager"]

_log = logging.getLogger(__name__)


def _evaluate(value: Any, session: Session | None) -> int:
    """An int from an int, a variable or a tensor (evaluated in `session`)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    from saverkit.train._variable_io import require_session

    session = require_session(session, "CheckpointManager (to read a step counter)")
    fetch = value.value() if hasattr(value, "initializer") and hasattr(value, "value") else value
    return int(session.run(fetch))


class CheckpointManager:
    """Saves checkpoints of `checkpoint` into `directory`, keeping the newest `max_to_keep`.

    Behaves like `tf.train.CheckpointManager`: a new manager recovers the list of checkpoints (and their
    timestamps) from `directory`'s state file, and old checkpoints beyond `max_to_keep` are deleted when
    the next checkpoint is saved (not on construction), unless `keep_checkpoint_every_n_hours` preserves
    them. `max_to_keep=None` keeps everything (0 is an error, as in TF). Graph mode: `save` and
    `restore_or_initialize` run in `session` (their argument, else the one given to the constructor, else
    the default session).

    Resuming after a restart picks up where the previous run stopped, including deleting its old
    checkpoints:

    >>> ckpt = saverkit.train.Checkpoint(model=model, step=step)
    >>> manager = saverkit.train.CheckpointManager(ckpt, "/tmp/run", max_to_keep=3)
    >>> manager.restore_or_initialize(session=sess)  # latest checkpoint of the previous run, if any
    >>> for _ in range(steps):
    ...     sess.run(train_op)
    ...     manager.save(session=sess)  # ckpt-<n>; only the newest 3 stay on disk and in /tmp/run/checkpoint
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        directory: str | os.PathLike,
        max_to_keep: int | None,
        keep_checkpoint_every_n_hours: float | None = None,
        checkpoint_name: str = "ckpt",
        step_counter: Any = None,
        checkpoint_interval: int | None = None,
        init_fn: Callable[[], Any] | None = None,
        session: Session | None = None,
        *,
        storage_options: dict | None = None,
        coordinator: Any = None,
    ):
        self._checkpoint = checkpoint
        self._storage_options = storage_options  # for a URL directory (saverkit.storage)
        # saverkit.distributed.Coordinator: every rank's `checkpoint` goes into ONE checkpoint per save
        # (object graphs merged by path), rank 0 keeps the state file and deletes old checkpoints.
        self._coordinator = coordinator
        if max_to_keep is not None and max_to_keep <= 0:
            raise ValueError(f"Expected a positive integer or `None` for `max_to_keep`, got {max_to_keep}.")
        self._max_to_keep = max_to_keep
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        directory = os.fspath(directory)
        self._directory = directory
        self._checkpoint_prefix = storage.join(directory, checkpoint_name)  # a URL too (saverkit.storage)
        self._init_fn = init_fn
        self._session = session
        if checkpoint_interval is not None and step_counter is None:
            raise ValueError("`step_counter` should be passed if `checkpoint_interval` is not None.")
        self._step_counter = step_counter
        self._last_checkpoint_step: int | None = None
        self._checkpoint_interval = checkpoint_interval

        recovered = checkpoint_management.get_checkpoint_state(directory, storage_options=storage_options)
        current_clock = time.time()
        self._maybe_delete: collections.OrderedDict[str, float] = collections.OrderedDict()
        if recovered is None:
            self._latest_checkpoint = None
            self._last_preserved_timestamp = current_clock - 1.0
        else:
            self._latest_checkpoint = recovered.model_checkpoint_path
            self._last_preserved_timestamp = recovered.last_preserved_timestamp
            if current_clock < self._last_preserved_timestamp:
                _log.warning(
                    "time.time() returned a value %f seconds behind the last preserved checkpoint timestamp.",
                    self._last_preserved_timestamp - current_clock,
                )
                self._last_preserved_timestamp = current_clock
            all_timestamps = list(recovered.all_model_checkpoint_timestamps)
            all_paths = list(recovered.all_model_checkpoint_paths)
            if not all_timestamps:
                all_timestamps = [self._last_preserved_timestamp] * len(all_paths)
            for filename, timestamp in zip(all_paths, all_timestamps, strict=False):
                timestamp = min(timestamp, current_clock)
                if timestamp > self._last_preserved_timestamp:
                    self._maybe_delete[filename] = timestamp

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def checkpoint_interval(self) -> int | None:
        return self._checkpoint_interval

    @property
    def latest_checkpoint(self) -> str | None:
        """Prefix of the newest checkpoint (what `latest_checkpoint(directory)` returns), or None."""
        return self._latest_checkpoint

    @property
    def checkpoints(self) -> list[str]:
        """Managed checkpoints, oldest first (preserved ones by `keep_checkpoint_every_n_hours` excluded)."""
        return list(self._maybe_delete.keys())

    @property
    def checkpoint(self) -> Checkpoint:
        return self._checkpoint

    @property
    def _prefix(self) -> str:
        return self._checkpoint_prefix

    def _sweep(self) -> None:
        """Delete (or preserve) the oldest managed checkpoints beyond `max_to_keep`."""
        if not self._max_to_keep:
            return
        while len(self._maybe_delete) > self._max_to_keep:
            filename, timestamp = self._maybe_delete.popitem(last=False)
            if self._keep_checkpoint_every_n_hours and (
                timestamp - self._keep_checkpoint_every_n_hours * 3600.0 >= self._last_preserved_timestamp
            ):
                self._last_preserved_timestamp = timestamp
                continue
            # TF's manager deletes no `.meta` (a Checkpoint writes none).
            checkpoint_management.delete_managed_checkpoint(filename, self._directory, meta_graph_suffix=None,
                                                            storage_options=self._storage_options)

    def _record_state(self) -> None:
        filenames, timestamps = zip(*self._maybe_delete.items(), strict=True)
        checkpoint_management.update_checkpoint_state_internal(
            self._directory,
            model_checkpoint_path=cast(str, self.latest_checkpoint),  # set: there is a checkpoint to record
            all_model_checkpoint_paths=filenames,
            all_model_checkpoint_timestamps=timestamps,
            last_preserved_timestamp=self._last_preserved_timestamp,
            save_relative_paths=True,
            storage_options=self._storage_options,
        )

    def save(
        self,
        checkpoint_number: Any = None,
        check_interval: bool = True,
        session: Session | None = None,
        options: Any = None,
    ) -> str | None:
        """Write a new checkpoint, record it in the state file, and delete the ones beyond `max_to_keep`.

        Numbered by `checkpoint_number` (an int, or an integer variable/tensor evaluated in the session) or
        else by the checkpoint's `save_counter`, which is incremented either way. With a
        `checkpoint_interval`, returns None (and saves nothing) unless the step counter advanced by at least
        the interval since the last save (`check_interval=False`: unless it did not advance at all).

        `options=CheckpointOptions(enable_async=True)`: return once the values are copied; the write, then
        the state file and the deletion of old checkpoints, complete in the background (as in TF:
        `latest_checkpoint` and `checkpoints` change then). `sync()` waits. With a `coordinator`, every rank
        passes the same options; the ranks' background threads write and commit together
        (`saverkit.train.distributed_save`).
        """
        from saverkit.train._variable_io import require_session

        session = session if session is not None else self._session
        if self._checkpoint_interval is not None:
            current_step = _evaluate(self._step_counter, session)
            if self._last_checkpoint_step is not None:
                if current_step == self._last_checkpoint_step:
                    return None
                if check_interval and current_step < self._last_checkpoint_step + self._checkpoint_interval:
                    return None
            self._last_checkpoint_step = current_step
        session = require_session(session, "CheckpointManager.save()")
        self._checkpoint.sync()  # the previous save completes (or raises) before the counter moves
        counter_value = self._checkpoint.next_checkpoint_number(session)
        number = counter_value if checkpoint_number is None else _evaluate(checkpoint_number, session)
        prefix = f"{self._prefix}-{number}"
        if self._coordinator is not None:
            from saverkit.train import distributed_save

            return distributed_save.write_object_checkpoint(
                self._coordinator, self._checkpoint, prefix, session,
                commit=self._record_new, committed=lambda path: self._record_new(path, delete=False),
                storage_options=self._storage_options, options=options)
        # The state file and retention move once the checkpoint is complete (TF's write_done_callback):
        # after the background write of an asynchronous save.
        return self._checkpoint.write_then(
            prefix, session, options, after=lambda: self._record_new(prefix),
            storage_options=self._storage_options,
        )

    def _record_new(self, save_path: str, delete: bool = True) -> None:
        """A new checkpoint is written: the state file names it, then older ones beyond max_to_keep go.
        (``delete=False``: a distributed job's other ranks, whose rank 0 did both.)"""
        timestamp = time.time()
        self._maybe_delete.pop(save_path, None)  # re-saving a number moves it to the newest position
        self._maybe_delete[save_path] = timestamp
        self._latest_checkpoint = save_path
        if not delete:
            if self._max_to_keep:
                while len(self._maybe_delete) > self._max_to_keep:
                    filename, stamp = self._maybe_delete.popitem(last=False)
                    if self._keep_checkpoint_every_n_hours and (
                        stamp - self._keep_checkpoint_every_n_hours * 3600.0 >= self._last_preserved_timestamp
                    ):
                        self._last_preserved_timestamp = stamp
            return
        self._record_state()
        self._sweep()
        self._record_state()

    def restore_or_initialize(self, session: Session | None = None) -> str | None:
        """Restore the latest checkpoint and return its path; with none, call `init_fn` and return None."""
        session = session if session is not None else self._session
        if self._checkpoint is not None:
            async_save.wait_for(self._checkpoint)  # an asynchronous save in flight is the latest once done
        if self._coordinator is not None:  # each rank restores its own objects; an error raises everywhere
            from saverkit import distributed

            latest = distributed.broadcast_result(
                self._coordinator, lambda: self._latest_checkpoint, "restore_or_initialize (latest)")
            if latest is not None:
                distributed.run_everywhere(
                    self._coordinator,
                    lambda: self._checkpoint.restore(latest, session=session,
                                                     storage_options=self._storage_options) and None,
                    "restore_or_initialize")
                self._latest_checkpoint = latest
                if self._checkpoint_interval is not None:
                    self._last_checkpoint_step = _evaluate(self._step_counter, session)
                return latest
        if self._latest_checkpoint is not None:
            self._checkpoint.restore(self._latest_checkpoint, session=session,
                                     storage_options=self._storage_options)
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = _evaluate(self._step_counter, session)
            return self._latest_checkpoint
        if self._init_fn is not None:
            self._init_fn()
            _log.info("Customized initialization is done through the passed `init_fn`.")
        return None

    def sync(self) -> None:
        """Wait for the asynchronous save in flight; raise its error if it failed."""
        if self._checkpoint is not None:
            self._checkpoint.sync()
