"""TF's ``tf.compat.v1.train`` / ``tf.train`` names: checkpoint bookkeeping, readers, savers."""
# ruff: noqa: F401

from saverkit.train.checkpoint_utils import CheckpointReader as CheckpointReader
from saverkit.train.checkpoint_utils import NewCheckpointReader as NewCheckpointReader
from saverkit.train.checkpoint_utils import list_variables as list_variables
from saverkit.train.checkpoint_utils import load_checkpoint as load_checkpoint
from saverkit.train.checkpoint_utils import load_variable as load_variable
from saverkit.train.training_util import assert_global_step as assert_global_step
from saverkit.train.training_util import create_global_step as create_global_step
from saverkit.train.training_util import get_global_step as get_global_step
from saverkit.train.training_util import get_or_create_global_step as get_or_create_global_step
from saverkit.train.training_util import global_step as global_step

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
