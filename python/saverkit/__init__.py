"""saverkit: graph-mode save/restore with compiled kernels, compatible with TensorFlow checkpoints.

``import saverkit`` loads only the dtypes and errors (and numpy): every other name below is imported on
first use (PEP 562 module ``__getattr__``), so a script that only reads a checkpoint, and the command-line
tool, do not pay for the graph layer, the Saver or ml_dtypes. ``from saverkit import *`` and
``dir(saverkit)`` see all of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from saverkit import dtypes, errors
from saverkit.dtypes import *  # noqa: F401,F403  (tf-style top-level dtype names)
from saverkit.dtypes import DType, as_dtype

__version__ = "0.1.0"

# name -> (module, attribute in it; None for the module itself). TensorFlow 1.x (tf.compat.v1) names.
_LAZY: dict[str, tuple[str, str | None]] = {
    **{
        m: (f"saverkit.{m}", None)
        for m in ("bundle", "cli", "config", "framework", "module", "saved_model", "trackable", "train")
    },
    "Module": ("saverkit.module", "Module"),
    **{
        name: ("saverkit.framework.array_ops", name)
        for name in (
            "boolean_mask", "fill", "gather", "identity", "ones", "placeholder", "placeholder_with_default",
            "reshape", "shape", "squeeze", "stack", "where", "zeros",
        )
    },
    "constant": ("saverkit.framework.constant_op", "constant"),
    **{
        name: ("saverkit.framework.control_flow_ops", name)
        for name in ("group", "no_op", "with_dependencies", "tuple")
    },
    "import_graph_def": ("saverkit.framework.importer", "import_graph_def"),
    "RunOptions": ("saverkit.framework.run_options", "RunOptions"),
    **{
        name: ("saverkit.framework.math_ops", name)
        for name in (
            "add", "cast", "logical_not", "matmul", "multiply", "negative", "reduce_mean", "reduce_sum",
            "square", "subtract",
        )
    },
    **{
        name: ("saverkit.framework.ops", name)
        for name in (
            "Graph", "GraphKeys", "Operation", "Tensor", "add_to_collection", "add_to_collections",
            "colocate_with", "control_dependencies", "convert_to_tensor", "device", "get_all_collection_keys",
            "get_collection", "get_collection_ref", "get_default_graph", "name_scope",
            "register_tensor_conversion_function", "reset_default_graph",
        )
    },
    **{
        name: ("saverkit.framework.session", name)
        for name in ("InteractiveSession", "Session", "get_default_session")
    },
    **{name: ("saverkit.framework.state_ops", name) for name in ("assign", "assign_add", "assign_sub")},
    "string_join": ("saverkit.framework.string_ops", "string_join"),
    "TensorShape": ("saverkit.framework.tensor_shape", "TensorShape"),
    **{
        name: ("saverkit.framework.variables", name)
        for name in (
            "Variable", "global_variables", "global_variables_initializer", "is_variable_initialized",
            "local_variables", "local_variables_initializer", "model_variables",
            "report_uninitialized_variables", "trainable_variables", "variables_initializer",
        )
    },
    **{
        name: ("saverkit.framework.partitioned_variables", name)
        for name in (
            "AUTO_REUSE", "PartitionedVariable", "constant_initializer", "fixed_size_partitioner",
            "get_variable", "get_variable_scope", "glorot_uniform_initializer",
            "min_max_variable_partitioner", "ones_initializer", "variable_axis_size_partitioner",
            "variable_scope", "zeros_initializer",
        )
    },
}

__all__ = ["DType", "as_dtype", "dtypes", "errors", "__version__"]
# Not "tuple" (a star import would shadow the builtin), nor the submodules and Module (as before).
__all__ += sorted(
    n for n in _LAZY if n not in ("Module", "bundle", "cli", "framework", "module", "trackable", "tuple")
)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'saverkit' has no attribute {name!r}")
    module_name, attr = target
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
