"""From what a user passes to the checkpoint prefix it means: the one resolver of saverkit.

Every entry point that takes a checkpoint path (``BundleReader``/``read_tensors`` and so RestoreV2,
``load_checkpoint``, ``Saver.restore``, ``Checkpoint.restore``, ``init_from_checkpoint``, the CLI) and
every reader of the ``checkpoint`` state file goes through this module, so they agree on:

* what a path means: a prefix ``P`` (``P.index`` exists), one of its files (``P.index``, ``P.meta``,
  ``P.data-K-of-N``), or a directory whose state file names the checkpoint. A prefix that is also a
  directory (``save(sess, "out/model")`` while ``out/model/`` exists) is the prefix, as TF's RestoreV2
  takes it;
* the state file: read as TensorFlow reads it (unreadable or unparsable: logged and ignored; parsed but
  naming no checkpoint: ``ValueError``), except that it must be a regular file of at most
  ``STATE_FILE_LIMIT`` bytes (TF reads a state file linked to ``/dev/zero`` until memory runs out), and an
  absolute entry that no longer exists is looked up beside the state file (the directory was moved);
* settling an interrupted re-save: a save that replaced an existing checkpoint and was killed mid-way
  leaves the previous checkpoint under backup names; :func:`settle` puts it back before anyone looks.

Imports nothing from the graph or train layers: the bundle layer uses it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
import warnings
from typing import TYPE_CHECKING

from saverkit import errors

if TYPE_CHECKING:
    from saverkit import storage
    from saverkit.protobuf.checkpoint_state_pb2 import CheckpointState

__all__ = [
    "STATE_FILE_LIMIT", "checkpoint_in_directory", "prefix_exists", "read_state_file", "resolve_prefix",
    "settle",
]

# A state file lists checkpoint paths: 16 MiB holds ~200,000 of them.
STATE_FILE_LIMIT = 16 << 20

# TF formats shard numbers with %05d: five digits, more beyond 99,999 shards.
DATA_FILE_RE = re.compile(r"\.data-(\d{5,})-of-(\d{5,})\Z")
_BACKUP_INDEX = ".index.skprev-"

_logger = logging.getLogger("saverkit.train.checkpoint_management")


def settle(prefix: str) -> bool:
    """Restores the checkpoint ``prefix`` if a re-save of it was killed between moving the old index
    aside and moving the new one in (the engine's commit protocol, csrc/commit.cc). Returns whether
    ``prefix`` names a checkpoint now or one that a live re-save is committing (the engine's readers wait
    for that one). Costs one stat when ``prefix.index`` exists; a live writer's backup is left alone."""
    if os.path.exists(prefix + ".index"):
        return True
    directory, base = os.path.split(prefix)
    moved = base + _BACKUP_INDEX
    for attempt in range(4):
        # A save that committed during the listing may have deleted its backup before the listing got
        # there, and the next save moved the index aside again: look again before believing neither.
        if attempt:
            time.sleep(0.001 * 2 ** (attempt - 1))
        try:
            names = os.listdir(directory or ".")
        except OSError:
            return False
        if any(n.startswith(moved) for n in names):
            from saverkit import _core  # the compiled engine: only when there is something to recover

            _core.recover_bundle(prefix)
            return True
        if os.path.exists(prefix + ".index"):
            return True
    return False


def prefix_exists(prefix: str) -> bool:
    """A V2 checkpoint (``prefix.index``, or one a live re-save is committing) or a V1 checkpoint file."""
    return (settle(prefix) and not os.path.isdir(prefix + ".index")) or os.path.isfile(prefix)


def _read_bounded(filename: str) -> str:
    """The state file's text; OSError/UnicodeDecodeError/ValueError say why it cannot be used."""
    fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block us
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{filename} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(STATE_FILE_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > STATE_FILE_LIMIT:
        raise ValueError(f"{filename} is larger than {STATE_FILE_LIMIT} bytes: not a checkpoint state file")
    return data.decode("utf-8")


def read_state_file(checkpoint_dir: str, latest_filename: str | None = None) -> CheckpointState | None:
    """``get_checkpoint_state``: the parsed ``CheckpointState`` with entries joined onto the directory,
    or None (no file, or a file that cannot be used: logged, like TF)."""
    from google.protobuf import text_format  # after the cheap checks: most callers never get here

    from saverkit.protobuf.checkpoint_state_pb2 import CheckpointState

    filename = os.path.join(checkpoint_dir, "checkpoint" if latest_filename is None else latest_filename)
    if not os.path.lexists(filename):
        return None
    try:
        content = _read_bounded(filename)
        ckpt = CheckpointState()
        text_format.Merge(content, ckpt)
    except (OSError, UnicodeDecodeError, ValueError, text_format.ParseError) as e:
        _logger.warning("%s: %s", type(e).__name__, e)
        _logger.warning("%s: Checkpoint ignored", filename)
        return None
    if not ckpt.model_checkpoint_path:
        raise ValueError("Invalid checkpoint state loaded from " + checkpoint_dir)

    moved = []

    def resolve(p: str) -> str:
        if not os.path.isabs(p):
            return os.path.join(checkpoint_dir, p)
        if prefix_exists(p) or not os.path.basename(p):
            return p
        candidate = os.path.join(checkpoint_dir, os.path.basename(p))
        if not prefix_exists(candidate):
            return p
        moved.append(f"{p} -> {candidate}")
        return candidate

    ckpt.model_checkpoint_path = resolve(ckpt.model_checkpoint_path)
    ckpt.all_model_checkpoint_paths[:] = [resolve(p) for p in ckpt.all_model_checkpoint_paths]
    if moved:
        warnings.warn(
            f"{filename}: checkpoint path(s) recorded there no longer exist; using the checkpoint(s) with "
            "the same name next to the state file (was the directory moved?): "
            + "; ".join(dict.fromkeys(moved)), UserWarning, stacklevel=3)
    return ckpt


def describe_neighbours(path: str) -> str:
    directory = os.path.dirname(path) or "."
    try:
        found = sorted(f for f in os.listdir(directory) if f.endswith(".index"))
    except OSError:
        return f"directory {directory} does not exist"
    if not found:
        return f"no checkpoint (.index file) in {directory}"
    shown = ", ".join(f[: -len(".index")] for f in found[:8])
    return f"checkpoints found in {directory}: {shown}{', ...' if len(found) > 8 else ''}"


def checkpoint_in_directory(directory: str) -> tuple[str | None, str]:
    """(the prefix the directory's state file names, "") when that checkpoint exists, else (None, why)."""
    try:
        state = read_state_file(directory)
    except ValueError:  # parses, but names no checkpoint
        state = None
    if state is not None and prefix_exists(state.model_checkpoint_path):
        return state.model_checkpoint_path, ""
    if state is not None:
        return None, f"its 'checkpoint' state file names {state.model_checkpoint_path}, which does not exist"
    if os.path.lexists(os.path.join(directory, "checkpoint")):
        return None, "its 'checkpoint' state file is unusable"
    return None, "no 'checkpoint' state file"


def _saved_model_variables(path: str) -> str | None:
    """``variables/variables`` of a SavedModel directory (or of its ``saved_model.pb(txt)``) if that is
    where ``path`` points; None otherwise. A SavedModel's variables are a plain V2 checkpoint (TF2 exports:
    an object checkpoint), so every reader of checkpoints can take the export directory."""
    if os.path.basename(path) in ("saved_model.pb", "saved_model.pbtxt") and os.path.isfile(path):
        directory = os.path.dirname(path) or "."
    elif os.path.isdir(path) and any(
            os.path.isfile(os.path.join(path, n)) for n in ("saved_model.pb", "saved_model.pbtxt")):
        directory = path
    else:
        return None
    prefix = os.path.join(directory, "variables", "variables")
    if not os.path.isfile(prefix + ".index"):
        raise errors.NotFoundError(
            None, None, f"{path} is a SavedModel without variables: {prefix}.index does not exist")
    return prefix


def resolve_prefix(path: str | os.PathLike) -> str:
    """The checkpoint prefix meant by ``path``: a prefix, one of the checkpoint's own files, a directory
    whose ``checkpoint`` state file names one, or a SavedModel directory (its ``variables/variables``).
    Raises NotFoundError saying what was looked for and found."""
    path = os.fsdecode(os.fspath(path))
    for suffix in (".index", ".meta"):
        if path.endswith(suffix) and os.path.isfile(path):
            return path[: -len(suffix)]
    m = DATA_FILE_RE.search(path)
    if m and os.path.isfile(path):
        return path[: m.start()]
    if settle(path) and not os.path.isdir(path + ".index"):
        return path
    saved_model = _saved_model_variables(path)
    if saved_model is not None:
        return saved_model
    if os.path.isdir(path):
        prefix, why = checkpoint_in_directory(path)
        if prefix is not None:
            return prefix
        raise errors.NotFoundError(
            None, None,
            f"Couldn't find a checkpoint in directory {path}: {why}; pass a checkpoint prefix instead "
            f"({describe_neighbours(os.path.join(path, 'x'))})")
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            raise errors.NotFoundError(None, None, f"Failed to find a checkpoint at {path}: no such file; "
                                       f"{describe_neighbours(path)}")
    what = "a file that is not part of a checkpoint" if os.path.isfile(path) else "nothing"
    raise errors.NotFoundError(
        None, None, f"Failed to find a checkpoint at {path}: looked for {path}.index and found {what}; "
        f"{describe_neighbours(path)}")


def data_files(prefix: str) -> list[tuple[str, int, int]]:
    """(path, shard, num_shards) of every ``prefix.data-SSSSS-of-NNNNN`` file (prefix taken literally)."""
    dirname, base = os.path.split(prefix)
    try:
        names = os.listdir(dirname or ".")
    except OSError:
        return []
    out = []
    for name in sorted(names):
        if name.startswith(base):
            m = DATA_FILE_RE.fullmatch(name, len(base))
            if m:
                out.append((os.path.join(dirname, name), int(m.group(1)), int(m.group(2))))
    return out


# --- remote checkpoints (URLs: saverkit.storage) ---------------------------------------------------------
# The same meanings over an object store: no renames happen there (a checkpoint is visible once its index
# exists, uploaded last), so there is nothing to settle.

def _remote_state_entry(directory: str, p: str) -> str:
    from saverkit import storage

    if storage.is_url(p):
        return p
    if p.startswith("/"):  # an absolute local path in a remote state file: TF's; look beside it
        return storage.join(directory, os.path.basename(p))
    return storage.join(directory, p)


def read_remote_state_file(loc: storage.Location, directory: str, latest_filename: str | None = None
                           ) -> CheckpointState | None:
    """``read_state_file`` for a directory URL on the store ``loc`` (a ``storage.Location``)."""
    from google.protobuf import text_format

    from saverkit import storage
    from saverkit.protobuf.checkpoint_state_pb2 import CheckpointState

    filename = storage.join(directory, "checkpoint" if latest_filename is None else latest_filename)
    try:
        content = loc.read_bytes(filename, limit=STATE_FILE_LIMIT).decode("utf-8")
        ckpt = CheckpointState()
        text_format.Merge(content, ckpt)
    except errors.NotFoundError:
        return None
    except (errors.FailedPreconditionError, UnicodeDecodeError, text_format.ParseError) as e:
        _logger.warning("%s: %s", type(e).__name__, e)
        _logger.warning("%s: Checkpoint ignored", filename)
        return None
    if not ckpt.model_checkpoint_path:
        raise ValueError("Invalid checkpoint state loaded from " + directory)
    ckpt.model_checkpoint_path = _remote_state_entry(directory, ckpt.model_checkpoint_path)
    ckpt.all_model_checkpoint_paths[:] = [_remote_state_entry(directory, p)
                                          for p in ckpt.all_model_checkpoint_paths]
    return ckpt


def remote_prefix_exists(loc: storage.Location, prefix: str) -> bool:
    return loc.isfile(prefix + ".index")


def read_remote_index(loc: storage.Location, url: str) -> tuple[str, bytes]:
    """(prefix, its index bytes) of the checkpoint ``url`` names, as ``resolve_remote_prefix`` resolves it.
    A plain prefix, the common case, costs one GET (each round trip to a store is ~10-50 ms); a URL ending
    like one of a checkpoint's objects, or a directory with a state file, is resolved first (or after
    that GET finds nothing)."""
    if not (url.endswith((".index", ".meta")) or DATA_FILE_RE.search(url)):
        try:
            return url, loc.read_bytes(url + ".index")
        except errors.NotFoundError:
            pass
    prefix = resolve_remote_prefix(loc, url)
    return prefix, loc.read_bytes(prefix + ".index")


def resolve_remote_prefix(loc: storage.Location, url: str) -> str:
    """``resolve_prefix`` for a URL: a prefix, one of its objects, or a directory whose state file names
    a checkpoint. Raises NotFoundError saying what was looked for."""
    for suffix in (".index", ".meta"):
        if url.endswith(suffix) and loc.isfile(url):
            return url[: -len(suffix)]
    m = DATA_FILE_RE.search(url)
    if m and loc.isfile(url):
        return url[: m.start()]
    if remote_prefix_exists(loc, url):
        return url
    try:
        state = read_remote_state_file(loc, url.rstrip("/"))
    except ValueError:
        state = None
    if state is not None and remote_prefix_exists(loc, state.model_checkpoint_path):
        return state.model_checkpoint_path
    if state is not None:
        raise errors.NotFoundError(
            None, None, f"Couldn't find a checkpoint in directory {url}: its 'checkpoint' state file names "
            f"{state.model_checkpoint_path}, which does not exist")
    raise errors.NotFoundError(
        None, None, f"Failed to find a checkpoint at {url}: looked for {url}.index (and a 'checkpoint' state "
        "file under it) and found nothing")
