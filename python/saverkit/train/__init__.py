"""TF-style ``train`` namespace: checkpoint inspection (more names are added by other modules)."""

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
