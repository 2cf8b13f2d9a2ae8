"""Process-wide settings: the two places where saverkit changes the interpreter itself.

Both are on by default (each is worth a measured speedup) and both are safe with threads; turn them
off when an application needs the interpreter left alone:

* ``set_gc_pause(enabled)``: bulk operations (building a Saver or a run plan for thousands of
  variables, importing a GraphDef, big reads and writes) switch the cyclic garbage collector off while
  they run. Pauses are counted process-wide, so concurrent or nested ones never switch it back on
  early, and GC is only switched back on if it was on. Environment: ``SAVERKIT_GC_PAUSE=0``.
* ``set_arena_cache(enabled)``: the first restore of string tensors wraps CPython's object arena
  allocator so that up to 32 MiB of freed arenas stay mapped for the next restore (a page fault per
  4 KiB was half the time of restoring 100,000 strings). Off: the wrapper is not installed, or, once
  installed, releases what it holds and passes every call through. Environment:
  ``SAVERKIT_ARENA_CACHE=0``.
"""

from __future__ import annotations

import os

from saverkit import _gc


def set_gc_pause(enabled: bool) -> None:
    """Whether bulk operations pause Python's cyclic garbage collector (default: True)."""
    _gc.set_enabled(enabled)


def gc_pause_enabled() -> bool:
    return _gc.is_enabled()


_arena_cache = True


def set_arena_cache(enabled: bool) -> None:
    """Whether string restores keep freed object arenas mapped for reuse (default: True)."""
    global _arena_cache
    from saverkit import _core

    _core.set_arena_cache(bool(enabled))
    _arena_cache = bool(enabled)


def arena_cache_enabled() -> bool:
    return _arena_cache


if os.environ.get("SAVERKIT_ARENA_CACHE", "1") == "0":
    set_arena_cache(False)
