"""saverkit.config: the two process-wide changes (GC pauses, the arena cache) and their off switches."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest
import saverkit as sk
from saverkit import _gc


@pytest.fixture
def gc_state():
    was = gc.isenabled()
    gc.enable()
    yield
    sk.config.set_gc_pause(True)
    (gc.enable if was else gc.disable)()


def test_overlapping_pauses_keep_gc_off_until_the_last_one_ends(gc_state):
    # Two threads' pauses ending out of order (as a Saver build beside a session run do): the first to
    # end must not switch GC back on under the other.
    first, second = _gc.paused(), _gc.paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pause_leaves_gc_off_when_the_application_had_it_off(gc_state):
    gc.disable()
    with _gc.paused(), _gc.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_pausing_can_be_switched_off(gc_state):
    sk.config.set_gc_pause(False)
    assert not sk.config.gc_pause_enabled()
    with _gc.paused():
        assert gc.isenabled()
    sk.config.set_gc_pause(True)
    with _gc.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def _run(code: str, **env: str) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, **env))
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


_STRING_RESTORES = """
    import sys
    import numpy as np
    import saverkit as sk
    from saverkit import _core, bundle
    prefix = sys.argv[1] if len(sys.argv) > 1 else {prefix!r}
    src = np.array([b"x" * (i % 90) for i in range(20_000)], dtype=object)
    bundle.write_bundle(prefix, ["s"], [src])
    {between}
    for _ in range(2):
        got, = bundle.read_tensors(prefix, ["s"])
        assert got.tolist() == src.tolist()
        del got
    print(_core._arena_cache_stats())
"""


def test_the_arena_cache_is_not_installed_when_switched_off_by_the_environment(tmp_path):
    out = _run(_STRING_RESTORES.format(prefix=str(tmp_path / "m"), between=""), SAVERKIT_ARENA_CACHE="0")
    assert out.startswith("(False, 0, 0)"), out  # never installed, nothing cached or reused


def test_switching_the_arena_cache_off_releases_what_it_holds(tmp_path):
    code = _STRING_RESTORES.format(
        prefix=str(tmp_path / "m"),
        between="bundle.read_tensors(prefix, ['s']); sk.config.set_arena_cache(False); "
        "assert _core._arena_cache_stats()[1] == 0",
    )
    installed, cached, _ = eval(_run(code))  # noqa: S307 - a tuple printed by the child
    assert installed and cached == 0  # off: freed arenas go straight back to the system
