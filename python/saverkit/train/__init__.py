"""TF's ``tf.compat.v1.train`` / ``tf.train`` names: checkpoint bookkeeping, readers, savers."""
# ruff: noqa: F401

from .checkpoint import Checkpoint, CheckpointLoadStatus, InitializationOnlyStatus, NameBasedSaverStatus
from .checkpoint_management import (
    CheckpointState,
    checkpoint_exists,
    find_latest_checkpoint,
    generate_checkpoint_state_proto,
    get_checkpoint_mtimes,
    get_checkpoint_state,
    latest_checkpoint,
    meta_graph_filename,
    remove_checkpoint,
    update_checkpoint_state,
    update_checkpoint_state_internal,
)
from .checkpoint_manager import CheckpointManager
from .init_from_checkpoint import init_from_checkpoint
