"""saverkit.train: checkpoint-related training utilities (TF's tf.compat.v1.train names)."""

from saverkit.train.training_util import (  # noqa: F401
    assert_global_step,
    create_global_step,
    get_global_step,
    get_or_create_global_step,
    global_step,
)
