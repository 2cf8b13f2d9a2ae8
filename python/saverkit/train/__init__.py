"""TF-style ``train`` namespace: checkpoint inspection (more names are added by other modules)."""

from saverkit.train.checkpoint_utils import CheckpointReader as CheckpointReader
from saverkit.train.checkpoint_utils import NewCheckpointReader as NewCheckpointReader
from saverkit.train.checkpoint_utils import list_variables as list_variables
from saverkit.train.checkpoint_utils import load_checkpoint as load_checkpoint
from saverkit.train.checkpoint_utils import load_variable as load_variable
from saverkit.train.saver import Saver as Saver
from saverkit.train.saver import export_meta_graph as export_meta_graph
from saverkit.train.saver import import_meta_graph as import_meta_graph
from saverkit.train.training_util import assert_global_step as assert_global_step
from saverkit.train.training_util import create_global_step as create_global_step
from saverkit.train.training_util import get_global_step as get_global_step
from saverkit.train.training_util import get_or_create_global_step as get_or_create_global_step
from saverkit.train.training_util import global_step as global_step

from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointLoadStatus as CheckpointLoadStatus
from .checkpoint import InitializationOnlyStatus as InitializationOnlyStatus
from .checkpoint import NameBasedSaverStatus as NameBasedSaverStatus
from .checkpoint_management import CheckpointState as CheckpointState
from .checkpoint_management import checkpoint_exists as checkpoint_exists
from .checkpoint_management import find_latest_checkpoint as find_latest_checkpoint
from .checkpoint_management import generate_checkpoint_state_proto as generate_checkpoint_state_proto
from .checkpoint_management import get_checkpoint_mtimes as get_checkpoint_mtimes
from .checkpoint_management import get_checkpoint_state as get_checkpoint_state
from .checkpoint_management import latest_checkpoint as latest_checkpoint
from .checkpoint_management import meta_graph_filename as meta_graph_filename
from .checkpoint_management import remove_checkpoint as remove_checkpoint
from .checkpoint_management import update_checkpoint_state as update_checkpoint_state
from .checkpoint_management import update_checkpoint_state_internal as update_checkpoint_state_internal
from .checkpoint_manager import CheckpointManager as CheckpointManager
from .init_from_checkpoint import init_from_checkpoint as init_from_checkpoint
