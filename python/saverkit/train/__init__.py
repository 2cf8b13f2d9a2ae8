"""TF-style ``train`` namespace: Saver, Checkpoint, CheckpointManager, checkpoint inspection.

Names are imported on first use (PEP 562), like the top-level package: ``saverkit.train.load_checkpoint``
loads the reader alone, not the graph layer that ``Saver`` and ``Checkpoint`` need.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    **{
        name: "saverkit.train.checkpoint_utils"
        for name in ("CheckpointReader", "NewCheckpointReader", "list_variables", "load_checkpoint",
                     "load_variable")
    },
    **{name: "saverkit.train.saver" for name in ("Saver", "export_meta_graph", "import_meta_graph")},
    **{
        name: "saverkit.train.training_util"
        for name in ("assert_global_step", "create_global_step", "get_global_step",
                     "get_or_create_global_step", "global_step")
    },
    **{
        name: "saverkit.train.checkpoint"
        for name in ("Checkpoint", "CheckpointLoadStatus", "InitializationOnlyStatus", "NameBasedSaverStatus")
    },
    **{
        name: "saverkit.train.checkpoint_management"
        for name in (
            "CheckpointState", "checkpoint_exists", "find_latest_checkpoint",
            "generate_checkpoint_state_proto", "get_checkpoint_mtimes", "get_checkpoint_state",
            "latest_checkpoint", "meta_graph_filename", "remove_checkpoint", "update_checkpoint_state",
            "update_checkpoint_state_internal",
        )
    },
    "CheckpointManager": "saverkit.train.checkpoint_manager",
    "CheckpointOptions": "saverkit.train.async_save",
    "init_from_checkpoint": "saverkit.train.init_from_checkpoint",
    "SlotVariables": "saverkit.trackable",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'saverkit.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
