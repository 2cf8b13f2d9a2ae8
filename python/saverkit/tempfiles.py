"""saverkit's temporaries: how they are named, and removing those whose writer is gone.

Every save writes under temporary names and renames into place, so a killed save leaves the previous
checkpoint intact but may leave temporaries behind. Removing them must never touch what saverkit did
not write, nor what a live writer (another thread, process or Saver) is still writing. So each
temporary carries its owner, ``<host8>-<pid>-<inc8>`` (a hash of the host name, the process id, and a
random per-process "incarnation" that tells a restarted process from a dead one with the same pid):

* in-progress files: ``<final>.sktmp-<owner>-<rand8>`` (bundle data and index, merged index, ``.meta``,
  the ``checkpoint`` state file, the CLI's outputs): the engine names them (``_core.temp_filename``);
* the previous files of a checkpoint being re-saved under the same prefix: ``<final>.skprev-<owner>``
  (the engine's commit protocol, csrc/commit.cc), put back by ``_core.recover_bundle`` if the writer died;
* a sharded save's part directory ``<prefix>_temp_<hex32>/``: created with a marker file
  ``.saverkit-temp`` holding its creator's owner token. Inside, only part files are saverkit's.

A temporary is removed only when its name (or its directory's marker) proves it saverkit's and
``_core.owner_is_stale`` proves its owner gone: a dead process on this host, an earlier incarnation of
this pid, or (another host, whose processes we cannot see) untouched for an hour. Names TensorFlow uses
(``.tempstate<n>``, ``checkpoint.tmp<hex>``, ``<prefix>_temp/``) are never removed: nothing proves who
wrote them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time

from saverkit import _core

__all__ = ["MARKER", "make_part_dir", "remove_part_dir", "remove_stale", "temp_path"]

_OWNER = r"[0-9a-f]{8}-\d+-[0-9a-f]{8}"
_TEMP_RE = re.compile(rf"^(?P<final>.+)\.sktmp-(?P<owner>{_OWNER})-[0-9a-f]{{8}}\Z")
_BACKUP_RE = re.compile(rf"^(?P<final>.+)\.skprev-(?P<owner>{_OWNER})\Z")
_BACKUP_FINAL_RE = re.compile(r"^(?P<base>.+)\.(index|data-\d{5,}-of-\d{5,})\Z")
_PART_DIR_RE = re.compile(r"_temp_[0-9a-f]{32}\Z")
_PART_FILE_RE = re.compile(r"^part-\d{5,}-of-\d{5,}\.(index|data-\d{5,}-of-\d{5,})\Z")
_PART_PREFIX_RE = re.compile(r"^part-\d{5,}-of-\d{5,}\Z")
MARKER = ".saverkit-temp"

_logger = logging.getLogger(__name__)


def temp_path(final: str) -> str:
    """A fresh temporary name beside ``final``, stamped with this process as its owner."""
    return _core.temp_filename(os.fspath(final))


def _age(path: str) -> float:
    return max(0.0, time.time() - os.lstat(path).st_mtime)


def _is_stale(owner: str, path: str) -> bool:
    try:
        return _core.owner_is_stale(owner, _age(path))
    except OSError:  # gone meanwhile
        return False


def make_part_dir(prefix: str) -> None:
    """Before a part ``<dir>/part-K-of-N`` of a sharded save is written: when ``<dir>`` (named
    ``*_temp_<hex32>``) does not exist yet, create it with the marker that makes it removable by
    :func:`remove_stale` should this process die before the merge."""
    directory, base = os.path.split(os.fspath(prefix))
    if not _PART_PREFIX_RE.match(base) or not _PART_DIR_RE.search(directory):
        return
    if os.path.lexists(directory):
        return  # another shard of this save made it (or it is not ours: then it has no marker)
    parent = os.path.dirname(directory)
    if parent:
        os.makedirs(parent, exist_ok=True)
    # Built under a temporary name and renamed: a process killed half-way leaves a stamped temporary
    # (removable once its owner is gone), never a part directory without its marker.
    building = temp_path(directory)
    os.mkdir(building)
    with open(os.path.join(building, MARKER), "x") as f:
        f.write(_core.temp_owner())
    try:
        os.rename(building, directory)
    except OSError:  # another shard won the race (a non-empty target): use theirs
        _remove_building(building)
        if not os.path.isdir(directory):
            raise


def _remove_building(path: str) -> None:
    """A part directory that never got its final name: only our marker is in it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(path, MARKER))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _marker_owner(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, MARKER), "rb") as f:
            text = f.read(64).decode("ascii", "replace")
    except OSError:
        return None
    return text if re.fullmatch(_OWNER, text) else None


def _ours_in_part_dir(name: str) -> bool:
    """A name saverkit writes inside a part directory: the marker, a part file or a part's temporary."""
    if name == MARKER or _PART_FILE_RE.match(name):
        return True
    temp = _TEMP_RE.match(name)
    return bool(temp and _PART_FILE_RE.match(temp["final"]))


def _empty_part_dir(path: str) -> None:
    """Deletes a part directory holding only saverkit's names: the files, the marker last, the folder."""
    for name in _listdir(path):
        if name != MARKER and _ours_in_part_dir(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
    _remove_building(path)


def remove_part_dir(directory: str) -> None:
    """Removes a marked part directory: its part files (and their temporaries), then the marker, then the
    directory. If it holds anything else, only the part files go; the marker and the rest stay."""
    if _marker_owner(directory) is None:
        return
    names = _listdir(directory)
    if not all(_ours_in_part_dir(n) for n in names):
        for name in names:
            if name != MARKER and _ours_in_part_dir(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
        return
    # Renamed to a stamped temporary first: a process killed while emptying it leaves a name that
    # remove_stale recognises, never a folder without its marker (found by the kill campaign).
    doomed = temp_path(directory)
    try:
        os.rename(directory, doomed)
    except OSError:
        return
    _empty_part_dir(doomed)


def is_part_prefix(prefix: str) -> bool:
    """Whether ``prefix`` is one part ``<dir>_temp_<hex32>/part-K-of-N`` of a sharded save."""
    directory, base = os.path.split(os.fspath(prefix))
    return bool(_PART_PREFIX_RE.match(base) and _PART_DIR_RE.search(directory))


def remove_own_part_dirs(prefix: str) -> None:
    """After a failed sharded save of ``prefix`` in this process: its marked part directories."""
    directory, base = os.path.split(os.fspath(prefix))
    owner = _core.temp_owner()
    for name in _listdir(directory):
        path = os.path.join(directory, name)
        if name.startswith(base + "_temp_") and _PART_DIR_RE.search(name) and _marker_owner(path) == owner:
            remove_part_dir(path)


def _listdir(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory or "."))
    except OSError:
        return []


def remove_stale(directory: str, base: str | None = None) -> list[str]:
    """Removes, in ``directory``, the temporaries of saverkit writers that are gone, and puts back a
    checkpoint whose re-save was interrupted; with ``base``, only those of the checkpoint ``base``.
    Returns what was removed or recovered. Never raises: what cannot be removed now is tried again."""
    done = []
    for name in _listdir(directory):
        if base is not None and not (name.startswith(base + ".") or name.startswith(base + "_temp_")):
            continue
        path = os.path.join(directory, name)
        try:
            temp, backup = _TEMP_RE.match(name), _BACKUP_RE.match(name)
            if temp:
                if _is_stale(temp["owner"], path):
                    if os.path.isdir(path) and not os.path.islink(path):
                        # Killed while building or emptying a part directory: only saverkit's names.
                        if _PART_DIR_RE.search(temp["final"]) and all(map(_ours_in_part_dir, _listdir(path))):
                            _empty_part_dir(path)
                            done.append(path)
                    else:
                        os.unlink(path)
                        done.append(path)
            elif backup:
                final = _BACKUP_FINAL_RE.match(backup["final"])
                if final and _is_stale(backup["owner"], path):
                    _core.recover_bundle(os.path.join(directory, final["base"]))
                    done.append(path)
            elif _PART_DIR_RE.search(name) and os.path.isdir(path) and not os.path.islink(path):
                owner = _marker_owner(path)
                if owner is not None and _is_stale(owner, _newest(path)):
                    remove_part_dir(path)
                    done.append(path)
        except Exception as e:  # noqa: BLE001 - cleanup is best effort; the save itself succeeded
            _logger.warning("Could not remove the stale temporary %s: %s", path, e)
    return done


def _newest(directory: str) -> str:
    """The most recently modified entry of a part directory: a writer on another host is judged by the
    last sign of life in it, not by when it made the directory."""
    paths = [os.path.join(directory, n) for n in _listdir(directory)] or [directory]
    try:
        return max(paths, key=lambda p: os.lstat(p).st_mtime)
    except OSError:
        return directory
