"""saverkit: graph-mode save/restore with compiled kernels, compatible with TensorFlow checkpoints."""

from saverkit import dtypes, errors
from saverkit.dtypes import *  # noqa: F401,F403  (tf-style top-level dtype names)
from saverkit.dtypes import DType, as_dtype
from saverkit.module import Module  # noqa: F401

__version__ = "0.1.0"

__all__ = ["DType", "as_dtype", "dtypes", "errors", "__version__"]
