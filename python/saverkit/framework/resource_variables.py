"""``ResourceVariable``: the variables of TensorFlow-written meta graphs (``VariableDef.is_resource``).

saverkit builds TF1 ref variables (``VariableV2``), but the graphs TensorFlow 2.x writes with
``tf.compat.v1`` use resource variables (``VarHandleOp`` + ``ReadVariableOp``/``AssignVariableOp``, whose
kernels live in :mod:`saverkit.framework.resource_variable_ops`). When such a meta graph is imported, each
``VariableDef`` with ``is_resource`` becomes a :class:`ResourceVariable`, so ``sess.run(v)`` reads it, a
``Saver`` saves and restores it, and exporting the graph again keeps ``is_resource``.
"""

from __future__ import annotations

from typing import Any

from saverkit import dtypes
from saverkit.framework import ops, resource_variable_ops, variables
from saverkit.framework.tensor_shape import TensorShape
from saverkit.protobuf import variable_pb2

read_variable_op = resource_variable_ops.read_variable_op
assign_variable_op = resource_variable_ops.assign_variable_op


class ResourceVariable(variables.Variable):
    """A resource variable of an imported TensorFlow graph (``VariableDef.is_resource``).

    Reading it (``sess.run(v)``, ``v.value()``) reads its snapshot ``<name>/Read/ReadVariableOp:0``;
    ``v.handle`` is the ``VarHandleOp`` tensor.
    """

    @property
    def handle(self) -> ops.Tensor:
        return self._variable

    @property
    def dtype(self) -> dtypes.DType:
        return self._variable._op._attrs["dtype"]

    @property
    def shape(self) -> TensorShape:
        return self._variable._op._attrs["shape"]

    def get_shape(self) -> TensorShape:
        return self.shape

    def _ref(self) -> ops.Tensor:
        return self._variable

    def _as_graph_element(self) -> ops.Tensor:
        return self._snapshot

    def value(self) -> ops.Tensor:
        return self._snapshot

    def read_value(self) -> ops.Tensor:
        return read_variable_op(self._variable, self.dtype)

    def assign(
        self, value: Any, use_locking: bool = False, name: str | None = None, read_value: bool = True
    ) -> Any:
        op = assign_variable_op(self._variable, ops.convert_to_tensor(value, dtype=self.dtype), name=name)
        if not read_value:
            return op
        with ops.control_dependencies([op]):
            return read_variable_op(self._variable, self.dtype)

    def to_proto(self, export_scope: str | None = None) -> variable_pb2.VariableDef | None:
        var_def = super().to_proto(export_scope=export_scope)
        if var_def is not None:
            var_def.is_resource = True
        return var_def

    @staticmethod
    def from_proto(
        variable_def: variable_pb2.VariableDef, import_scope: str | None = None
    ) -> ResourceVariable:
        return ResourceVariable(variable_def=variable_def, import_scope=import_scope)

    def __repr__(self) -> str:
        return f"<saverkit.ResourceVariable '{self.name}' shape={self.shape} dtype={self.dtype.name}>"


def _variable_to_tensor(
    v: ResourceVariable, dtype: Any = None, name: str | None = None, as_ref: bool = False
) -> ops.Tensor:
    return v._variable if as_ref else v._snapshot


ops.register_tensor_conversion_function(ResourceVariable, _variable_to_tensor, priority=50)


def _from_proto_fn(variable_def: Any, import_scope: str | None = None) -> variables.Variable:
    """A VariableDef from a meta graph: ResourceVariable if ``is_resource``, else the graph's Variable."""
    if variable_def.is_resource:
        return ResourceVariable.from_proto(variable_def, import_scope=import_scope)
    return variables.Variable.from_proto(variable_def, import_scope=import_scope)


def _register_variable_proto_functions() -> None:
    for key in ops.GraphKeys._VARIABLE_COLLECTIONS + [
        ops.GraphKeys.GLOBAL_STEP,
        ops.GraphKeys.METRIC_VARIABLES,
    ]:
        proto_type = ops.get_collection_proto_type(key) or variable_pb2.VariableDef
        to_proto = ops.get_to_proto_function(key) or (lambda v, export_scope=None: v.to_proto(export_scope))
        ops.register_proto_function(key, proto_type=proto_type, to_proto=to_proto, from_proto=_from_proto_fn)


_register_variable_proto_functions()
