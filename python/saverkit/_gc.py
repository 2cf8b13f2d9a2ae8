"""Pausing Python's cyclic garbage collector around the library's bulk operations."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """For a bulk operation (building or binding a plan for 10,000 variables, importing a GraphDef,
    reading or writing 10,000 tensors) that allocates tens of thousands of objects at once: every
    generational pass it triggers walks the long-lived graph (hundreds of thousands of objects), which
    can cost more than the work itself. Nothing cyclic is freed meanwhile. The previous state is restored
    (if another thread paused too, whichever found GC enabled turns it back on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
