"""A model spread over ranks, for the distributed save tests (threads, MPI and torch processes alike).

Rank r of a world of n holds:
* ``rank{r}/w``: its own variable;
* ``shared``: one variable replicated on every rank (written once);
* ``emb``: rows [r*ROWS, (r+1)*ROWS) of a partitioned variable of EMB_ROWS(n) x DIM, as ``emb/part_{r}``.
Values are a pure function of (name, step), so any rank (or TensorFlow) can check any of them.
"""

from __future__ import annotations

import numpy as np
import saverkit as sk

ROWS, DIM = 6, 5


def emb_full(world: int, step: int) -> np.ndarray:
    """The whole partitioned variable a world of ``world`` ranks saves at ``step``."""
    return (np.arange(world * ROWS * DIM, dtype=np.float32).reshape(world * ROWS, DIM) + step) / 8


def own(rank: int, step: int) -> np.ndarray:
    return np.full((3, rank + 2), rank * 100 + step, dtype=np.float64)


def shared(step: int) -> np.ndarray:
    return np.arange(4, dtype=np.int64) * 10 + step


def slice_variable(name: str, full_name: str, value: np.ndarray, offset: list[int], full_shape: list[int]):
    v = sk.Variable(value, name=name)
    info = sk.Variable.SaveSliceInfo(full_name, list(full_shape), list(offset), list(value.shape))
    v._set_save_slice_info(info)
    return v


def build_rank_model(rank: int, world: int, step: int, emb_world: int | None = None,
                     with_own: bool = True) -> dict:
    """Variables of ``rank`` (call inside the rank's graph). ``emb_world``: split ``emb`` (of a world of
    ``emb_world`` ranks' rows) into ``world`` parts instead: restoring with another world size."""
    emb_world = world if emb_world is None else emb_world
    full = emb_full(emb_world, step)
    bounds = np.linspace(0, full.shape[0], world + 1).astype(int)
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    out = {
        "shared": sk.Variable(shared(step), name="shared"),
        "emb": slice_variable(f"emb/part_{rank}", "emb", full[lo:hi], [lo, 0], list(full.shape)),
    }
    if with_own:
        out["own"] = sk.Variable(own(rank, step), name=f"rank{rank}/w")
    return out


def expected_values(world: int, step: int) -> dict[str, np.ndarray]:
    """The full tensors of the checkpoint a world of ``world`` ranks saves at ``step``."""
    out = {"shared": shared(step), "emb": emb_full(world, step)}
    out.update({f"rank{r}/w": own(r, step) for r in range(world)})
    return out
