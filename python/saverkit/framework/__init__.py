"""The graph layer: Graph/Operation/Tensor, the op table and its kernels, Session, Variable.

Importing this package registers every op module's kernels and shape functions.
"""

from saverkit.framework import (  # noqa: F401  (imported for their kernel registrations)
    array_ops,
    constant_op,
    control_flow_ops,
    importer,
    io_ops,
    math_ops,
    ops,
    partitioned_variables,
    resource_variable_ops,
    session,
    state_ops,
    string_ops,
    variables,
)
