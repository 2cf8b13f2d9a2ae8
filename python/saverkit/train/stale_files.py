"""Removing what an interrupted save left behind.

Every save writes under temporary names and renames into place, so a save killed half-way leaves
the previous checkpoint intact but may leave temporary files: ``<prefix>.index.tempstate<n>`` and
``<prefix>.data-*.tempstate<n>`` (bundle files), ``<prefix>_temp/`` or ``<prefix>_temp_<hex>/`` (a
sharded save's per-shard parts), ``<prefix>.meta.tmp<random>`` and ``checkpoint.tmp<hex>`` (the
meta graph and the state file). TensorFlow never removes them; saverkit's Saver calls
:func:`remove_stale_temp_files` after each successful save, so temporaries of interrupted saves
never accumulate.

Only names derived from the saver's own base name (``model`` for ``model-1234``) are touched, so
other models saved into the same directory are left alone. Two processes saving the *same* model
into the same directory at once are not supported (as in TensorFlow: they also race on the state
file).
"""

from __future__ import annotations

import os
import re
import shutil

_HEX32 = "[0-9a-f]{32}"


def _patterns(base: str, latest_filename: str) -> tuple[re.Pattern, re.Pattern]:
    b = re.escape(base)
    files = re.compile(
        rf"^{b}(-\d+)?\.(index|data-\d{{5}}-of-\d{{5}})\.tempstate\d+$"
        rf"|^{b}(-\d+)?\.meta\.tmp[A-Za-z0-9_]+$"  # tempfile.mkstemp's suffix
        rf"|^{re.escape(latest_filename)}\.tmp{_HEX32}$"
    )
    dirs = re.compile(rf"^{b}(-\d+)?_temp(_{_HEX32})?$")
    return files, dirs


def stale_temp_files(save_path: str, latest_filename: str | None = None) -> list[str]:
    """Paths of temporaries that saves of `save_path` (a prefix, with or without a ``-<step>``
    suffix) may have left in its directory."""
    directory, base = os.path.split(os.fspath(save_path))
    base = re.sub(r"-\d+$", "", base)
    files, dirs = _patterns(base, latest_filename or "checkpoint")
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    out = []
    for name in sorted(names):
        path = os.path.join(directory, name)
        if files.match(name) and not os.path.isdir(path) or dirs.match(name) and os.path.isdir(path):
            out.append(path)
    return out


def remove_stale_temp_files(save_path: str, latest_filename: str | None = None) -> list[str]:
    """Removes :func:`stale_temp_files`; returns what was removed. Never raises: a temporary that
    cannot be removed now will be tried again after the next save."""
    removed = []
    for path in stale_temp_files(save_path, latest_filename):
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
