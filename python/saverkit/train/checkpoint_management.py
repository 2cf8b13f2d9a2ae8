"""Checkpoint bookkeeping: the ``checkpoint`` state file and the files that make up a checkpoint.

Same names, arguments and semantics as ``tf.compat.v1.train``'s functions, with three additions users
asked for (see docs/users.md):

* the state file is always written atomically (temp file + rename), optionally durably (``durable=True``
  fsyncs the file and its directory);
* :func:`get_checkpoint_state` resolves an absolute entry that no longer exists (the directory was moved)
  by its basename next to the state file, and says so in a ``UserWarning``;
* :func:`find_latest_checkpoint` finds the newest complete checkpoint from the files alone, for when the
  state file is missing.

Deliberate differences from TF, all on inputs where TF misbehaves: the caller's path list is never
modified; a directory is never taken for a V1 checkpoint file; a non-UTF-8 state file is treated like an
unparsable one (TF raises ``UnicodeDecodeError``); ``save_relative_paths=True`` accepts
``all_model_checkpoint_paths=None`` (TF raises ``TypeError``); the check that the state file does not
overwrite the checkpoint itself also catches relative spellings of the same path.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence

from saverkit import checkpoint_paths, errors, storage, tempfiles
from saverkit.protobuf.checkpoint_state_pb2 import CheckpointState
from saverkit.protobuf.saver_pb2 import SaverDef

__all__ = [
    "CheckpointState",
    "checkpoint_exists",
    "delete_managed_checkpoint",
    "find_latest_checkpoint",
    "generate_checkpoint_state_proto",
    "get_checkpoint_mtimes",
    "get_checkpoint_state",
    "latest_checkpoint",
    "meta_graph_filename",
    "remove_checkpoint",
    "update_checkpoint_state",
    "update_checkpoint_state_internal",
]

PathLike = str | bytes | os.PathLike

_logger = logging.getLogger(__name__)

# Last 8 bytes of every complete .index file (the SSTable magic, spec §3.7).
_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
_STEP_RE = re.compile(r"-(\d+)\Z")
_GLOB_MAGIC_RE = re.compile(r"[*?[]")


def _path(p: PathLike) -> str:
    return os.fsdecode(os.fspath(p))


def _state_filename(save_dir: str, latest_filename: PathLike | None) -> str:
    return os.path.join(save_dir, "checkpoint" if latest_filename is None else _path(latest_filename))


# --- the text format -----------------------------------------------------------------------------------
# Written by hand rather than with text_format.MessageToString so the bytes do not depend on the protobuf
# runtime's defaults (its as_utf8 default has changed before, spec §13.13). Tests check both agree.

_ESCAPES = {i: f"\\{i:03o}" for i in [*range(32), 127]}
_ESCAPES.update({ord("\t"): r"\t", ord("\n"): r"\n", ord("\r"): r"\r"})
_ESCAPES.update({ord('"'): r"\"", ord("'"): r"\'", ord("\\"): r"\\"})


def _quote(s: str) -> str:
    return '"' + s.translate(_ESCAPES) + '"'


def _is_set(x: float) -> bool:
    # proto3 omits a double only when all its bits are zero: -0.0 is printed.
    return x != 0.0 or math.copysign(1.0, x) < 0


def _format_checkpoint_state(state: CheckpointState) -> str:
    """The exact text TF writes for ``state`` (spec §9): Python's shortest repr for doubles."""
    lines = []
    if state.model_checkpoint_path:
        lines.append(f"model_checkpoint_path: {_quote(state.model_checkpoint_path)}")
    lines += [f"all_model_checkpoint_paths: {_quote(p)}" for p in state.all_model_checkpoint_paths]
    lines += [f"all_model_checkpoint_timestamps: {float(t)!r}" for t in state.all_model_checkpoint_timestamps]
    if _is_set(state.last_preserved_timestamp):
        lines.append(f"last_preserved_timestamp: {state.last_preserved_timestamp!r}")
    return "".join(line + "\n" for line in lines)


def _isabs(p: str) -> bool:
    return storage.is_url(p) or os.path.isabs(p)


def _atomic_write(filename: str, data: bytes, durable: bool, storage_options: dict | None = None) -> None:
    """Readers see the old file or the new one, never a partial one (a URL: one object, one PUT)."""
    if storage.is_url(filename):
        storage.Location(filename, storage_options).write_bytes(filename, data)
        return
    tmp = tempfiles.temp_path(filename)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _op_error(e, f"Failed to write checkpoint state file {filename}") from e
        raise
    if durable:
        _fsync_dir(os.path.dirname(filename) or ".")


def _fsync_dir(dirname: str) -> None:
    fd = os.open(dirname, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _op_error(e: OSError, what: str) -> errors.OpError:
    cls = {FileNotFoundError: errors.NotFoundError, NotADirectoryError: errors.NotFoundError,
           PermissionError: errors.PermissionDeniedError}.get(type(e), errors.UnknownError)
    # out of space / quota / file size limit: the same class the engine raises for them
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        cls = errors.ResourceExhaustedError
    elif e.errno == errno.EROFS:
        cls = errors.PermissionDeniedError
    return cls(None, None, f"{what}: {e.strerror or e}")


# --- writing the state ---------------------------------------------------------------------------------

def generate_checkpoint_state_proto(
    save_dir: PathLike,
    model_checkpoint_path: PathLike,
    all_model_checkpoint_paths: Sequence[PathLike] | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
) -> CheckpointState:
    """Builds a ``CheckpointState``; ``model_checkpoint_path`` is appended to the list unless already last.

    When ``save_dir`` is relative, relative paths are rewritten relative to it (TF's rule: they were
    given relative to the working directory). Raises ``ValueError`` when timestamps are given and their
    count differs from the number of paths.
    """
    save_dir = _path(save_dir)
    model_checkpoint_path = _path(model_checkpoint_path)
    paths = [_path(p) for p in (all_model_checkpoint_paths or [])]
    if not paths or paths[-1] != model_checkpoint_path:
        _logger.info("%s is not in all_model_checkpoint_paths. Manually adding it.", model_checkpoint_path)
        paths.append(model_checkpoint_path)
    if all_model_checkpoint_timestamps and len(all_model_checkpoint_timestamps) != len(paths):
        raise ValueError(
            "Checkpoint timestamps, if provided, must match checkpoint paths (got paths "
            f"{paths} and timestamps {list(all_model_checkpoint_timestamps)})")
    if not _isabs(save_dir):
        if not _isabs(model_checkpoint_path):
            model_checkpoint_path = os.path.relpath(model_checkpoint_path, save_dir)
        paths = [p if _isabs(p) else os.path.relpath(p, save_dir) for p in paths]
    for p in [model_checkpoint_path, *paths]:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            raise errors.InvalidArgumentError(
                None, None, f"Checkpoint path {p!r} is not valid UTF-8 and cannot be stored in a "
                "CheckpointState") from None
    return CheckpointState(
        model_checkpoint_path=model_checkpoint_path,
        all_model_checkpoint_paths=paths,
        all_model_checkpoint_timestamps=all_model_checkpoint_timestamps,
        last_preserved_timestamp=last_preserved_timestamp,
    )


def update_checkpoint_state(
    save_dir: PathLike,
    model_checkpoint_path: PathLike,
    all_model_checkpoint_paths: Sequence[PathLike] | None = None,
    latest_filename: PathLike | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
    *,
    durable: bool = False,
) -> None:
    """Writes ``save_dir/checkpoint`` (or ``latest_filename``) with paths stored as given."""
    update_checkpoint_state_internal(
        save_dir, model_checkpoint_path, all_model_checkpoint_paths, latest_filename,
        save_relative_paths=False, all_model_checkpoint_timestamps=all_model_checkpoint_timestamps,
        last_preserved_timestamp=last_preserved_timestamp, durable=durable)


def update_checkpoint_state_internal(
    save_dir: PathLike,
    model_checkpoint_path: PathLike,
    all_model_checkpoint_paths: Sequence[PathLike] | None = None,
    latest_filename: PathLike | None = None,
    save_relative_paths: bool = False,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
    *,
    durable: bool = False,
    storage_options: dict | None = None,
) -> None:
    """Writes the state file atomically; ``save_relative_paths`` stores absolute paths relative to save_dir.

    Raises ``RuntimeError`` when the state file would overwrite the checkpoint itself.
    """
    save_dir = _path(save_dir)
    filename = _state_filename(save_dir, latest_filename)
    if storage.is_url(save_dir):
        filename = storage.join(save_dir, "checkpoint" if latest_filename is None else _path(latest_filename))
    model_checkpoint_path = _path(model_checkpoint_path)
    paths = [_path(p) for p in (all_model_checkpoint_paths or [])]
    if save_relative_paths:
        def rel(p: str) -> str:
            if storage.is_url(p):
                inside = save_dir.rstrip("/") + "/"
                return p[len(inside):] if p.startswith(inside) else p
            return os.path.relpath(p, save_dir) if os.path.isabs(p) else p

        model_checkpoint_path = rel(model_checkpoint_path)
        paths = [rel(p) for p in paths]
    ckpt = generate_checkpoint_state_proto(
        save_dir, model_checkpoint_path, paths,
        all_model_checkpoint_timestamps=all_model_checkpoint_timestamps,
        last_preserved_timestamp=last_preserved_timestamp)

    stored = ckpt.model_checkpoint_path
    if os.path.normpath(os.path.join(save_dir, stored)) == os.path.normpath(filename) or stored == filename:
        raise RuntimeError(
            f"Save path '{model_checkpoint_path}' conflicts with path used for checkpoint state.  "
            "Please use a different save path.")
    _atomic_write(filename, _format_checkpoint_state(ckpt).encode("utf-8"), durable, storage_options)


# --- reading the state ---------------------------------------------------------------------------------

def get_checkpoint_state(checkpoint_dir: PathLike, latest_filename: PathLike | None = None,
                         storage_options: dict | None = None) -> CheckpointState | None:
    """Reads the state file; relative paths come back joined onto ``checkpoint_dir``.

    Returns None when the file does not exist, cannot be read or does not parse (logged, like TF), or
    is not a regular file of at most ``checkpoint_paths.STATE_FILE_LIMIT`` bytes. Raises
    ``ValueError`` when it parses but names no ``model_checkpoint_path``. An absolute entry whose
    checkpoint no longer exists, while one with the same basename exists in ``checkpoint_dir``, is
    replaced by that one with a ``UserWarning`` (the directory was moved after saving).
    ``checkpoint_dir`` may be a URL (:mod:`saverkit.storage`; ``storage_options`` for its store).
    """
    if storage.is_url(checkpoint_dir):
        d = _path(checkpoint_dir).rstrip("/")
        return checkpoint_paths.read_remote_state_file(
            storage.Location(d, storage_options), d,
            None if latest_filename is None else _path(latest_filename))
    checkpoint_dir = storage.local_path(checkpoint_dir)
    return checkpoint_paths.read_state_file(
        _path(checkpoint_dir), None if latest_filename is None else _path(latest_filename))


def latest_checkpoint(checkpoint_dir: PathLike, latest_filename: PathLike | None = None,
                      storage_options: dict | None = None) -> str | None:
    """The prefix named by the state file, if that checkpoint's files exist (V2 ``.index`` or V1 file)."""
    ckpt = get_checkpoint_state(checkpoint_dir, latest_filename, storage_options)
    if ckpt is None or not ckpt.model_checkpoint_path:
        return None
    if checkpoint_exists(ckpt.model_checkpoint_path, storage_options):
        return ckpt.model_checkpoint_path
    _logger.error("Couldn't match files for checkpoint %s", ckpt.model_checkpoint_path)
    return None


def find_latest_checkpoint(checkpoint_dir: PathLike, storage_options: dict | None = None) -> str | None:
    """The newest complete V2 checkpoint in ``checkpoint_dir``, found from its files alone.

    Fallback for a missing or stale state file. A prefix is complete when its ``.index`` ends with the
    table magic and ``.data-00000-of-N`` ... ``.data-(N-1)-of-N`` all exist. The newest is the one with
    the highest trailing ``-<step>`` number (prefixes without one count as step -1); ties are broken by
    the ``.index`` modification time, then by name. Returns None if there is none (or no directory).
    A URL directory (saverkit.storage) is listed on its store, where an index object exists only whole.
    """
    checkpoint_dir = _path(checkpoint_dir)
    if storage.is_url(checkpoint_dir):
        return _find_latest_remote(checkpoint_dir, storage_options)
    try:
        names = os.listdir(checkpoint_dir)
    except OSError:
        return None
    best_key, best = None, None
    for name in names:
        if not name.endswith(".index"):
            continue
        prefix = os.path.join(checkpoint_dir, name[: -len(".index")])
        index = prefix + ".index"
        try:
            st = os.stat(index)
        except OSError:
            continue
        if not _index_looks_complete(index, st.st_size) or not _has_all_data_files(prefix):
            continue
        step = _STEP_RE.search(os.path.basename(prefix))
        key = (int(step.group(1)) if step else -1, st.st_mtime_ns, prefix)
        if best_key is None or key > best_key:
            best_key, best = key, prefix
    return best


def _find_latest_remote(directory: str, storage_options: dict | None) -> str | None:
    loc = storage.Location(directory, storage_options)
    names = loc.listdir(directory)
    shards: dict[str, dict[int, set[int]]] = {}
    for name in names:
        m = checkpoint_paths.DATA_FILE_RE.search(name)
        if m:
            shards.setdefault(name[: m.start()], {}).setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    complete = []  # (step, prefix)
    for name in names:
        base = name[: -len(".index")]
        if name.endswith(".index") and any(n > 0 and have >= set(range(n))
                                           for n, have in shards.get(base, {}).items()):
            step = _STEP_RE.search(base)
            complete.append((int(step.group(1)) if step else -1, storage.join(directory, base)))
    if not complete:
        return None
    top = max(step for step, _ in complete)
    tied = [prefix for step, prefix in complete if step == top]
    if len(tied) == 1:
        return tied[0]
    # the index's time breaks a tie (one request per tied prefix, not per checkpoint), then the name
    return max(tied, key=lambda prefix: (loc.mtime(prefix + ".index") or 0.0, prefix))


def _remote_data_objects(loc: storage.Location, prefix: str) -> list[str]:
    """The data objects of ``prefix`` (any shard count) listed in its directory, taken literally."""
    directory, base = storage.dirname(prefix), storage.basename(prefix)
    return [storage.join(directory, n) for n in loc.listdir(directory)
            if n.startswith(base) and checkpoint_paths.DATA_FILE_RE.fullmatch(n, len(base))]


def _index_looks_complete(index: str, size: int) -> bool:
    if size < 48:
        return False
    try:
        with open(index, "rb") as f:
            f.seek(size - len(_TABLE_MAGIC))
            return f.read(len(_TABLE_MAGIC)) == _TABLE_MAGIC
    except OSError:
        return False


def _has_all_data_files(prefix: str) -> bool:
    by_count: dict[int, set[int]] = {}
    for _, shard, n in checkpoint_paths.data_files(prefix):
        by_count.setdefault(n, set()).add(shard)
    return any(n > 0 and shards >= set(range(n)) for n, shards in by_count.items())


# --- files of a checkpoint -----------------------------------------------------------------------------

def _glob(pattern: str) -> list[str]:
    """Paths matching ``pattern``: ``*``, ``?``, ``[...]`` within one path component, like TF's glob."""
    if not _GLOB_MAGIC_RE.search(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    head, tail = os.path.split(pattern)
    out = []
    for d in _glob(head) if _GLOB_MAGIC_RE.search(head) else [head]:
        if not _GLOB_MAGIC_RE.search(tail):  # a literal component, maybe ".." (which listdir never shows)
            if os.path.lexists(os.path.join(d, tail)):
                out.append(os.path.join(d, tail))
            continue
        try:
            names = sorted(os.listdir(d or "."))
        except OSError:  # not a directory, or unreadable: matches nothing, as in TF
            continue
        out += [os.path.join(d, n) for n in names if fnmatch.fnmatchcase(n, tail)]
    return out


def _matching_files(pattern: str) -> list[str]:
    """Regular files named ``pattern``: taken literally first, then as a glob pattern (as TF does)."""
    if os.path.isfile(pattern):
        return [pattern]
    return [p for p in _glob(pattern) if os.path.isfile(p)] if _GLOB_MAGIC_RE.search(pattern) else []


def checkpoint_exists(checkpoint_prefix: PathLike, storage_options: dict | None = None) -> bool:
    """True if a V2 (``prefix.index``) or V1 (the prefix itself) checkpoint exists; globs allowed."""
    if storage.is_url(checkpoint_prefix):
        url = _path(checkpoint_prefix)
        return checkpoint_paths.remote_prefix_exists(storage.Location(url, storage_options), url)
    prefix = storage.local_path(checkpoint_prefix)
    checkpoint_paths.settle(prefix)
    return bool(_matching_files(prefix + ".index") or _matching_files(prefix))


def get_checkpoint_mtimes(checkpoint_prefixes: Sequence[PathLike],
                          storage_options: dict | None = None) -> list[float]:
    """Modification times (seconds) of the checkpoints that exist; missing ones are skipped, like TF.
    A URL prefix's time is its index object's, as its store reports it."""
    mtimes = []
    for p in checkpoint_prefixes:
        prefix = _path(p)
        if storage.is_url(prefix):
            stamp = storage.Location(prefix, storage_options).mtime(prefix + ".index")
            if stamp is not None:
                mtimes.append(stamp)
            continue
        files = _matching_files(prefix + ".index") or _matching_files(prefix)
        if files:
            mtimes.append(os.stat(files[0]).st_mtime_ns / 1e9)
    return mtimes


def remove_checkpoint(checkpoint_prefix: PathLike, checkpoint_format_version: int = SaverDef.V2,
                      meta_graph_suffix: str = "meta", storage_options: dict | None = None) -> None:
    """Deletes a checkpoint's files: ``.meta``, then ``.index`` and every ``.data-*`` (V2) or the V1 file.

    Files that do not exist (or vanish meanwhile, another process deleting them) are ignored. A URL
    prefix (V2 only, taken literally): its ``.meta``, then its index (the checkpoint stops being visible),
    then the data objects of its shard count(s).
    """
    prefix = _path(checkpoint_prefix)
    if storage.is_url(prefix):
        if checkpoint_format_version != SaverDef.V2:
            raise errors.InvalidArgumentError(
                None, None, f"Cannot remove {prefix}: only V2 checkpoints on a store")
        loc = storage.Location(prefix, storage_options)
        data = _remote_data_objects(loc, prefix)
        loc.remove([meta_graph_filename(prefix, meta_graph_suffix)])
        loc.remove([prefix + ".index"])
        loc.remove(data)
        return
    doomed = _matching_files(meta_graph_filename(prefix, meta_graph_suffix))
    if checkpoint_format_version == SaverDef.V2:
        doomed += _matching_files(prefix + ".index")
        if _GLOB_MAGIC_RE.search(prefix):
            doomed += _matching_files(prefix + ".data-?????-of-?????")
        else:
            doomed += [path for path, _, _ in checkpoint_paths.data_files(prefix)]
    else:
        doomed += _matching_files(prefix)
    _remove_files(dict.fromkeys(doomed))


def _remove_files(paths: Iterable[str]) -> None:
    """Removes each file; one already gone is logged (as TF does), any other failure raises."""
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            _logger.warning("Hit NotFoundError when deleting '%s', possibly because another "
                            "process/thread is also deleting/moving the same file", path)
        except OSError as e:
            raise _op_error(e, f"Failed to delete {path}") from e


def delete_managed_checkpoint(checkpoint_prefix: PathLike, directory: PathLike,
                              meta_graph_suffix: str | None = "meta",
                              storage_options: dict | None = None) -> bool:
    """Retention's one deletion routine (``Saver`` and ``CheckpointManager``): deletes the ``.index``,
    ``.data-NNNNN-of-NNNNN`` and ``.meta`` (unless ``meta_graph_suffix`` is None) files of
    ``checkpoint_prefix``, taken literally (never as a glob),
    and only when it is a checkpoint inside ``directory``: its index a regular file there.

    TF's retention deletes whatever a state-file entry names, globs and paths outside the directory
    included; a state file edited by hand, or copied from another run, then deletes other people's data.
    Anything else is left alone with a ``UserWarning`` naming the entry and why. Returns whether it deleted.
    """
    if storage.is_url(checkpoint_prefix):
        return _delete_remote_checkpoint(_path(checkpoint_prefix), _path(directory), meta_graph_suffix,
                                         storage_options)
    prefix = _path(checkpoint_prefix)
    reason = _why_not_managed(prefix, _path(directory))
    if reason:
        warnings.warn(f"Not deleting {prefix!r} beyond max_to_keep: {reason}", UserWarning, stacklevel=3)
        return False
    doomed = [prefix + ".index", *(path for path, _, _ in checkpoint_paths.data_files(prefix))]
    meta = meta_graph_filename(prefix, meta_graph_suffix) if meta_graph_suffix is not None else None
    if meta and os.path.isfile(meta) and not os.path.islink(meta):
        doomed.append(meta)
    _remove_files(doomed)
    return True


def _delete_remote_checkpoint(prefix: str, directory: str, meta_graph_suffix: str | None,
                              storage_options: dict | None) -> bool:
    """Retention on a store: the same rules (only a checkpoint of ``directory``, taken literally); the
    index goes first, so the checkpoint stops being visible before its data objects go."""
    if storage.dirname(prefix).rstrip("/") != directory.rstrip("/"):
        warnings.warn(f"Not deleting {prefix!r} beyond max_to_keep: it is not in the checkpoint directory "
                      f"{directory!r}", UserWarning, stacklevel=3)
        return False
    loc = storage.Location(prefix, storage_options)
    if not loc.isfile(prefix + ".index"):
        warnings.warn(f"Not deleting {prefix!r} beyond max_to_keep: it is not a checkpoint (no index file)",
                      UserWarning, stacklevel=3)
        return False
    doomed = [prefix + ".index", *_remote_data_objects(loc, prefix)]
    if meta_graph_suffix is not None:
        meta = meta_graph_filename(prefix, meta_graph_suffix)
        if loc.isfile(meta):
            doomed.append(meta)
    loc.remove(doomed)
    return True


def _why_not_managed(prefix: str, directory: str) -> str | None:
    """Why ``prefix`` is not a checkpoint that retention in ``directory`` may delete (None: it is)."""
    parent = os.path.dirname(os.path.abspath(prefix))
    if os.path.realpath(parent) != os.path.realpath(directory or "."):
        return f"it is not in the checkpoint directory {directory!r}"
    index = prefix + ".index"
    data = [path for path, _, _ in checkpoint_paths.data_files(prefix)]
    if os.path.islink(index) or any(os.path.islink(path) for path in data):
        return "its files are symbolic links"
    if not os.path.isfile(index):
        return "it is not a checkpoint (no index file)"
    return None


def meta_graph_filename(checkpoint_filename: PathLike, meta_graph_suffix: str = "meta") -> str:
    """``prefix.meta``; a sharded name's ``-?????-of-NNNNN`` (or ``-00001-of-00002``) tail is dropped."""
    basename = re.sub(r"-[\d\?]+-of-\d+$", "", _path(checkpoint_filename))
    return f"{basename}.{meta_graph_suffix}"
