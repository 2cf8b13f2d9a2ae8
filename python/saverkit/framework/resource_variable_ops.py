"""Resource variables (TF2's ``VarHandleOp``/``ReadVariableOp``/``AssignVariableOp``) in saverkit graphs.

saverkit builds TF1 ref variables (``VariableV2``), but the graphs TensorFlow 2.x writes with
``tf.compat.v1`` use resource variables. This module lets such graphs run: it registers TensorFlow's OpDefs
for the resource-variable ops with kernels on the Session's variable store (a handle is the store's
:class:`~saverkit.framework.variable_store.Ref`), and :class:`ResourceVariable` is what a ``VariableDef``
with ``is_resource`` becomes when a TF meta graph is imported. Variables created by saverkit itself stay
ref variables.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from saverkit import dtypes, errors
from saverkit.framework import common_shapes, op_registry, ops, variables
from saverkit.framework.op_def_library import apply_op
from saverkit.framework.tensor_shape import TensorShape, scalar, unknown_shape
from saverkit.framework.variable_store import Ref, variable_key
from saverkit.protobuf import variable_pb2

# TensorFlow 2.21's OpDefs, copied from its registry (tests/test_saver_tf_interop.py checks they still match).
_OP_DEFS = """
op {
  name: "AssignAddVariableOp"
  input_arg {
    name: "resource"
    type: DT_RESOURCE
  }
  input_arg {
    name: "value"
    type_attr: "dtype"
  }
  attr {
    name: "dtype"
    type: "type"
  }
  is_stateful: true
}
op {
  name: "AssignSubVariableOp"
  input_arg {
    name: "resource"
    type: DT_RESOURCE
  }
  input_arg {
    name: "value"
    type_attr: "dtype"
  }
  attr {
    name: "dtype"
    type: "type"
  }
  is_stateful: true
}
op {
  name: "AssignVariableOp"
  input_arg {
    name: "resource"
    type: DT_RESOURCE
  }
  input_arg {
    name: "value"
    type_attr: "dtype"
  }
  attr {
    name: "dtype"
    type: "type"
  }
  attr {
    name: "validate_shape"
    type: "bool"
    default_value {
      b: false
    }
  }
  is_stateful: true
}
op {
  name: "ReadVariableOp"
  input_arg {
    name: "resource"
    type: DT_RESOURCE
  }
  output_arg {
    name: "value"
    type_attr: "dtype"
  }
  attr {
    name: "dtype"
    type: "type"
  }
  is_stateful: true
}
op {
  name: "VarHandleOp"
  output_arg {
    name: "resource"
    type: DT_RESOURCE
  }
  attr {
    name: "container"
    type: "string"
    default_value {
      s: ""
    }
  }
  attr {
    name: "shared_name"
    type: "string"
    default_value {
      s: ""
    }
  }
  attr {
    name: "debug_name"
    type: "string"
    default_value {
      s: ""
    }
  }
  attr {
    name: "dtype"
    type: "type"
  }
  attr {
    name: "shape"
    type: "shape"
  }
  attr {
    name: "allowed_devices"
    type: "list(string)"
    default_value {
      list {
      }
    }
  }
  is_stateful: true
}
op {
  name: "VarIsInitializedOp"
  input_arg {
    name: "resource"
    type: DT_RESOURCE
  }
  output_arg {
    name: "is_initialized"
    type: DT_BOOL
  }
  is_stateful: true
}
"""


def _register_op_defs() -> None:
    from google.protobuf import text_format

    from saverkit.protobuf import op_def_pb2

    for op_def in text_format.Parse(_OP_DEFS, op_def_pb2.OpList()).op:
        op_registry.register_op_def(op_def)


_register_op_defs()


# --- builders
def read_variable_op(resource: Any, dtype: Any, name: str | None = None) -> ops.Tensor:
    return apply_op("ReadVariableOp", resource=resource, dtype=dtype, name=name)._outputs[0]


def assign_variable_op(
    resource: Any, value: Any, validate_shape: bool = False, name: str | None = None
) -> ops.Operation:
    return apply_op(
        "AssignVariableOp",
        resource=resource,
        value=value,
        dtype=value.dtype.base_dtype,
        validate_shape=validate_shape,
        name=name,
    )


# --- kernels
def _handle(ctx: Any, resource: Any) -> Ref:
    if type(resource) is not Ref:
        raise errors.InvalidArgumentError(
            None,
            None,
            f"{ctx.op.type} {ctx.op.name}: input 'resource' is not a variable handle (was it fed?)",
        )
    return resource


@op_registry.register_kernel("VarHandleOp")
def _var_handle_op(ctx: Any) -> list:
    op = ctx.op
    return [
        ctx.variables.ref(
            variable_key(op),
            op._attrs.get("shared_name", b"").decode() or op._name,
            op._attrs["dtype"],
            op._attrs["shape"],
        )
    ]


@op_registry.register_kernel("ReadVariableOp")
def _read_variable_op(ctx: Any, resource: Any) -> list:
    ref = _handle(ctx, resource)
    if ref.dtype != ctx.attr("dtype"):
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Trying to read variable {ref.name} with wrong dtype. "
            f"Expected {ref.dtype.name} got {ctx.attr('dtype').name}",
        )
    if not ref.is_initialized():
        raise errors.FailedPreconditionError(
            None,
            None,
            f"Could not find variable {ref.name}. This could mean that the variable has been "
            "deleted. In TF1, it can also mean the variable is uninitialized.",
        )
    return [ref.value()]


@op_registry.register_kernel("AssignVariableOp")
def _assign_variable_op(ctx: Any, resource: Any, value: Any) -> list:
    ref = _handle(ctx, resource)
    validate = bool(ctx.attr("validate_shape")) and ref.is_initialized()
    ref.assign(np.asarray(value), validate_shape=validate)
    return []


def _update(ctx: Any, resource: Any, value: Any, ufunc: Any) -> list:
    _handle(ctx, resource).update(value, ufunc)
    return []


op_registry.register_kernel("AssignAddVariableOp")(lambda ctx, r, v: _update(ctx, r, v, np.add))
op_registry.register_kernel("AssignSubVariableOp")(lambda ctx, r, v: _update(ctx, r, v, np.subtract))


@op_registry.register_kernel("VarIsInitializedOp")
def _var_is_initialized_op(ctx: Any, resource: Any) -> list:
    return [np.array(_handle(ctx, resource).is_initialized())]


def _read_shape(op: Any) -> list:
    handle_op = op._inputs[0]._op
    if handle_op._type == "VarHandleOp":
        return [handle_op._attrs["shape"]]
    return [unknown_shape()]


op_registry.register_shape_fn("VarHandleOp")(lambda op: [scalar()])
op_registry.register_shape_fn("ReadVariableOp")(_read_shape)
op_registry.register_shape_fn("VarIsInitializedOp")(lambda op: [scalar()])
for _t in ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"):
    op_registry.register_shape_fn(_t)(common_shapes.no_outputs)


# --- variables
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
