"""saverkit: graph-mode save/restore with compiled kernels, compatible with TensorFlow checkpoints."""

from saverkit import config, dtypes, errors
from saverkit.dtypes import *  # noqa: F401,F403  (tf-style top-level dtype names)
from saverkit.dtypes import DType, as_dtype
from saverkit.module import Module  # noqa: F401

__version__ = "0.1.0"

__all__ = ["DType", "as_dtype", "config", "dtypes", "errors", "__version__"]

# --- graph mode (saverkit.framework), TensorFlow 1.x names ---
from saverkit import train  # noqa: E402
from saverkit.framework.array_ops import (  # noqa: E402
    boolean_mask,
    fill,
    gather,
    identity,
    ones,
    placeholder,
    placeholder_with_default,
    reshape,
    shape,
    squeeze,
    stack,
    where,
    zeros,
)
from saverkit.framework.constant_op import constant  # noqa: E402
from saverkit.framework.control_flow_ops import group, no_op, with_dependencies  # noqa: E402
from saverkit.framework.control_flow_ops import tuple as tuple  # noqa: E402  (not in __all__: keeps the builtin)
from saverkit.framework.importer import import_graph_def  # noqa: E402
from saverkit.framework.math_ops import (  # noqa: E402
    add,
    cast,
    logical_not,
    matmul,
    multiply,
    negative,
    reduce_mean,
    reduce_sum,
    square,
    subtract,
)
from saverkit.framework.ops import (  # noqa: E402
    Graph,
    GraphKeys,
    Operation,
    Tensor,
    add_to_collection,
    add_to_collections,
    colocate_with,
    control_dependencies,
    convert_to_tensor,
    device,
    get_all_collection_keys,
    get_collection,
    get_collection_ref,
    get_default_graph,
    name_scope,
    register_tensor_conversion_function,
    reset_default_graph,
)
from saverkit.framework.run_options import RunOptions  # noqa: E402
from saverkit.framework.session import InteractiveSession, Session, get_default_session  # noqa: E402
from saverkit.framework.state_ops import assign, assign_add, assign_sub  # noqa: E402
from saverkit.framework.string_ops import string_join  # noqa: E402
from saverkit.framework.tensor_shape import TensorShape  # noqa: E402
from saverkit.framework.variables import (  # noqa: E402
    Variable,
    global_variables,
    global_variables_initializer,
    is_variable_initialized,
    local_variables,
    local_variables_initializer,
    model_variables,
    report_uninitialized_variables,
    trainable_variables,
    variables_initializer,
)

__all__ += [  # noqa: PLE0605
    "Graph", "GraphKeys", "Operation", "Tensor", "TensorShape", "RunOptions", "Session", "InteractiveSession",
    "Variable",
    "add", "add_to_collection", "add_to_collections", "assign", "assign_add", "assign_sub", "boolean_mask",
    "cast", "colocate_with", "constant", "control_dependencies", "convert_to_tensor", "device", "fill",
    "gather", "get_all_collection_keys", "get_collection", "get_collection_ref", "get_default_graph",
    "get_default_session", "global_variables", "global_variables_initializer", "group", "identity",
    "import_graph_def", "is_variable_initialized", "local_variables", "local_variables_initializer",
    "logical_not", "matmul", "model_variables", "multiply", "name_scope", "negative", "no_op", "ones",
    "placeholder", "placeholder_with_default", "reduce_mean", "reduce_sum",
    "register_tensor_conversion_function",
    "report_uninitialized_variables", "reset_default_graph", "reshape", "shape", "square", "squeeze", "stack",
    "string_join", "subtract", "trainable_variables", "train", "variables_initializer", "where",
    "with_dependencies", "zeros",
]
