"""TF-style ``train`` namespace: checkpoint inspection (more names are added by other modules)."""

from saverkit.train.checkpoint_utils import CheckpointReader as CheckpointReader
from saverkit.train.checkpoint_utils import NewCheckpointReader as NewCheckpointReader
from saverkit.train.checkpoint_utils import list_variables as list_variables
from saverkit.train.checkpoint_utils import load_checkpoint as load_checkpoint
from saverkit.train.checkpoint_utils import load_variable as load_variable
