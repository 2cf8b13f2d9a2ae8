"""Pausing Python's cyclic garbage collector around the library's bulk operations.

A bulk operation (building or binding a plan for 10,000 variables, importing a GraphDef, building a
Saver, reading or writing 10,000 tensors) allocates tens of thousands of objects at once: every
generational pass that triggers walks the long-lived graph (hundreds of thousands of objects), which
can cost more than the work itself. Nothing cyclic is freed meanwhile.

The pause is process-wide (``gc.disable``), so pauses are counted under a lock: GC is switched off by
the first pause to start and switched back on by the last one to end, whichever threads they run in,
and only if it was on when the first began. ``saverkit.config.set_gc_pause(False)`` (or the environment
variable ``SAVERKIT_GC_PAUSE=0``) turns pausing off.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0  # pauses in progress, in all threads
_reenable = False  # whether GC was on when the outermost pause began
_enabled = os.environ.get("SAVERKIT_GC_PAUSE", "1") != "0"


def set_enabled(enabled: bool) -> None:
    """Whether bulk operations pause the cyclic GC (pauses already in progress end as they began)."""
    global _enabled
    _enabled = bool(enabled)


def is_enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The cyclic GC is off inside the block (see the module docstring)."""
    global _depth, _reenable
    if not _enabled:
        yield
        return
    with _lock:
        if _depth == 0:
            _reenable = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _reenable:
                gc.enable()
