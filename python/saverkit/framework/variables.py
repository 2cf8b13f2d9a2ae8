"""``Variable``: TF1 ref variables (``tf.compat.v1.Variable`` with resource variables disabled).

``Variable(value, name="w")`` adds, like TensorFlow:
``w/initial_value`` (Const), ``w`` (VariableV2, the storage), ``w/Assign`` (the initializer) and
``w/read`` (an Identity snapshot that other ops consume). Its value lives in each Session.
"""

from __future__ import annotations

import operator
from typing import Any, cast

import numpy as np

from saverkit import dtypes
from saverkit.framework import array_ops, control_flow_ops, math_ops, op_registry, ops, state_ops
from saverkit.framework.constant_op import _dtype_of, as_numpy, constant
from saverkit.framework.ops import GraphKeys
from saverkit.framework.tensor_shape import TensorShape, as_shape, shape_of, unknown_shape
from saverkit.protobuf import variable_pb2


class Variable:
    """A mutable tensor whose value persists across ``Session.run`` calls."""

    _initial_value: ops.Tensor | None  # None: imported from a VariableDef without one

    class SaveSliceInfo:
        """Where a variable sits in a larger (partitioned) one, for checkpoint keys and slice specs."""

        full_name: str  # given whenever the info describes a slice (else to_proto fails, as in TF)

        def __init__(
            self,
            full_name: str | None = None,
            full_shape: Any = None,
            var_offset: Any = None,
            var_shape: Any = None,
            save_slice_info_def: Any = None,
            import_scope: str | None = None,
        ):
            if save_slice_info_def is not None:
                self.full_name = ops.prepend_name_scope(save_slice_info_def.full_name, import_scope)
                self.full_shape = list(save_slice_info_def.full_shape)
                self.var_offset = list(save_slice_info_def.var_offset)
                self.var_shape = list(save_slice_info_def.var_shape)
            else:
                self.full_name = cast(str, full_name)
                self.full_shape = list(full_shape)
                self.var_offset = list(var_offset)
                self.var_shape = list(var_shape)

        @property
        def spec(self) -> str:
            """The checkpoint slice spec, e.g. ``"10 4 0,5:0,4"``."""
            full = " ".join(str(d) for d in self.full_shape) + " "
            return full + ":".join(f"{o},{s}" for o, s in zip(self.var_offset, self.var_shape, strict=False))

        def to_proto(self, export_scope: str | None = None) -> variable_pb2.SaveSliceInfoDef | None:
            if export_scope is not None and not self.full_name.startswith(export_scope):
                return None
            return variable_pb2.SaveSliceInfoDef(
                full_name=ops.strip_name_scope(self.full_name, export_scope),
                full_shape=self.full_shape,
                var_offset=self.var_offset,
                var_shape=self.var_shape,
            )

    def __init__(
        self,
        initial_value: Any = None,
        trainable: bool | None = None,
        collections: Any = None,
        validate_shape: bool = True,
        caching_device: Any = None,
        name: str | None = None,
        variable_def: variable_pb2.VariableDef | None = None,
        dtype: Any = None,
        expected_shape: Any = None,
        import_scope: str | None = None,
        constraint: Any = None,
        shape: Any = None,
    ) -> None:
        if variable_def is not None:
            if initial_value is not None:
                raise ValueError("variable_def and initial_value are mutually exclusive.")
            self._init_from_proto(variable_def, import_scope)
        else:
            self._init_from_args(
                initial_value,
                True if trainable is None else trainable,
                collections,
                validate_shape,
                caching_device,
                name,
                dtype,
                constraint,
                shape if shape is not None else expected_shape,
            )

    def _init_from_args(
        self,
        initial_value: Any,
        trainable: bool,
        collections: Any,
        validate_shape: bool,
        caching_device: Any,
        name: str | None,
        dtype: Any,
        constraint: Any,
        shape: Any,
    ) -> None:
        if initial_value is None:
            raise ValueError("initial_value must be specified.")
        init_from_fn = callable(initial_value)
        if collections is None:
            collections = _TRAINABLE_COLLECTIONS if trainable else _GLOBAL_COLLECTIONS
        else:
            if not isinstance(collections, (list, tuple, set)):
                raise ValueError(
                    f"collections argument to Variable constructor must be a list, tuple, or set. "
                    f"Got {collections} of type {type(collections)}"
                )
            if trainable and GraphKeys.TRAINABLE_VARIABLES not in collections:
                collections = list(collections) + [GraphKeys.TRAINABLE_VARIABLES]
        if constraint is not None and not callable(constraint):
            raise ValueError("The `constraint` argument must be a callable.")
        if not name:  # None or "" (as TF's `name or "Variable"`)
            name = "Variable"
        self._init_ops(initial_value, init_from_fn, validate_shape, caching_device, name, dtype, shape)
        g = self._variable._op._graph
        g.add_to_collections(collections, self)
        self._trainable = trainable
        self._caching_device = caching_device
        self._constraint = constraint
        self._save_slice_info: Variable.SaveSliceInfo | None = None

    def _init_ops(
        self,
        initial_value: Any,
        init_from_fn: bool,
        validate_shape: bool,
        caching_device: Any,
        name: str,
        dtype: Any,
        shape: Any,
    ) -> None:
        """TF's four ops: ``<name>/initial_value`` (unless given a Tensor), ``<name>`` (VariableV2),
        ``<name>/Assign`` and ``<name>/read``, the last two colocated with the variable; in the graph of
        a Tensor initial value (made the default graph meanwhile), else the default graph."""
        default = ops.get_default_graph()
        kind = type(initial_value)
        # The usual Variable(array) or Variable(zeros(...)): the graph makes the four ops as one batch.
        # (Initial values needing a conversion, or not in the default graph, go the general way below,
        # which raises its errors after opening the scope, as TF.)
        if caching_device is None and shape is None and dtype is None:
            value_dtype: Any = None  # a DType wherever value is set
            if kind is np.ndarray:  # a numpy type saverkit has (else the general way raises)
                value_dtype = _NUMPY_DTYPES.get(initial_value.dtype)
            if value_dtype is not None:
                arr = initial_value.copy()  # constant(initial_value, name="initial_value"): a read-only copy
                arr.setflags(write=False)  # Const values are shared by every run
                value_shape = shape_of(arr.shape)
                value: Any = ({"value": arr, "dtype": value_dtype}, value_shape)
            elif (
                kind is ops.Tensor
                and initial_value._op._graph is default
                and not initial_value._dtype.is_ref_dtype
                and (not validate_shape or initial_value._shape.is_fully_defined())
            ):
                value = initial_value
                value_dtype = value._dtype
                value_shape = value._shape
            else:
                value = None
            if value is not None:
                var_shape = value_shape if validate_shape else unknown_shape()
                (
                    self._initial_value, self._variable, self._initializer_op, self._snapshot
                ) = default._create_variable_ops(
                    name,
                    value,
                    state_ops._variable_attrs(var_shape, value_dtype),
                    state_ops._assign_attrs(value_dtype, validate_shape),
                    state_ops._read_attrs(value_dtype),
                )
                return
        g = initial_value.graph if kind is ops.Tensor or isinstance(initial_value, ops.Tensor) else default
        with g.name_scope(name) if g is default else ops.name_scope(name, values=[initial_value]) as scope:
            if init_from_fn:
                # Initializer ops built by the function live with the variable ("loc:@<name>").
                with g._attr_scope({"_class": [b"loc:@" + scope[:-1].encode()]}):
                    with g.name_scope("Initializer"), g.device(None):
                        value = initial_value()
                        value = ops.convert_to_tensor(value, name="initial_value", dtype=dtype)
                    var_shape = self._variable_shape(value, validate_shape, shape)
                    self._variable = state_ops.variable_op_v2(var_shape, value.dtype.base_dtype, name=scope)
            else:
                kind = type(initial_value)
                if kind is np.ndarray:  # the common case, straight to a Const
                    value = _array_const(g, initial_value, dtype)
                elif kind is ops.Tensor and dtype is None:  # zeros(...) and the like: what convert_to_tensor
                    value = initial_value  # returns
                elif isinstance(initial_value, np.ndarray):
                    value = constant(initial_value, dtype=dtype, name="initial_value")
                else:
                    value = ops.convert_to_tensor(initial_value, name="initial_value", dtype=dtype)
                var_shape = self._variable_shape(value, validate_shape, shape)
                # variable_op_v2(var_shape, base dtype, name=scope), in g (the default graph in here)
                self._variable = state_ops._variable(g, var_shape, value._dtype.base_dtype, scope)
            self._initial_value = value
            self._initializer_op = state_ops._assign_to_variable(self._variable, value, validate_shape)
            if caching_device is not None:
                with g.device(caching_device):
                    self._snapshot = array_ops.identity(self._variable, name="read")
            else:
                self._snapshot = state_ops._snapshot(self._variable)

    @staticmethod
    def _variable_shape(value: ops.Tensor, validate_shape: bool, shape: Any) -> TensorShape:
        if shape is not None:
            shape = as_shape(shape)
            if not shape.is_compatible_with(value.shape):
                raise ValueError(
                    f"shape {shape} is not compatible with the initial value's shape {value.shape}"
                )
        if not validate_shape:
            return shape if shape is not None else unknown_shape()
        declared = value.shape if shape is None else shape.merge_with(value.shape)
        if not declared.is_fully_defined():
            raise ValueError(f"initial_value must have a shape specified: {value}")
        return declared

    def _init_from_proto(self, variable_def: variable_pb2.VariableDef, import_scope: str | None) -> None:
        g = ops.get_default_graph()

        def lookup(name: str) -> Any:
            return g.as_graph_element(ops.prepend_name_scope(name, import_scope))

        self._variable = lookup(variable_def.variable_name)
        self._initializer_op = lookup(variable_def.initializer_name)
        self._initial_value = (
            lookup(variable_def.initial_value_name) if variable_def.initial_value_name else None
        )
        self._snapshot = lookup(variable_def.snapshot_name)
        self._trainable = variable_def.trainable
        self._save_slice_info = (
            Variable.SaveSliceInfo(
                save_slice_info_def=variable_def.save_slice_info_def, import_scope=import_scope
            )
            if variable_def.HasField("save_slice_info_def")
            else None
        )
        self._caching_device = None
        self._constraint = None

    # --- identity ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._variable.name

    @property
    def op(self) -> ops.Operation:
        return self._variable.op

    @property
    def dtype(self) -> dtypes.DType:
        """The ref dtype (``float32_ref``), as TF1 ref variables report."""
        return self._variable.dtype

    @property
    def shape(self) -> TensorShape:
        return self._variable.shape

    def get_shape(self) -> TensorShape:
        return self._variable.shape

    @property
    def device(self) -> str:
        return self._variable.device

    @property
    def graph(self) -> ops.Graph:
        return self._variable.graph

    @property
    def initializer(self) -> ops.Operation:
        return self._initializer_op

    @property
    def initial_value(self) -> ops.Tensor | None:  # None: imported from a VariableDef without one
        return self._initial_value

    @property
    def trainable(self) -> bool:
        return self._trainable

    @property
    def constraint(self) -> Any:
        return self._constraint

    def _ref(self) -> ops.Tensor:
        return self._variable

    def _as_graph_element(self) -> ops.Tensor:
        return self._variable

    # --- reading and writing ----------------------------------------------------------------------------
    def value(self) -> ops.Tensor:
        """The snapshot tensor ``<name>/read``."""
        return self._snapshot

    def read_value(self) -> ops.Tensor:
        """A new Identity reading the current value."""
        return array_ops.identity(self._variable, name="read")

    def eval(self, session: Any = None) -> Any:
        return self._variable.eval(session=session)

    def assign(
        self, value: Any, use_locking: bool = False, name: str | None = None, read_value: bool = True
    ) -> Any:
        t = state_ops.assign(self._variable, value, use_locking=use_locking, name=name)
        return t if read_value else t.op

    def assign_add(
        self, delta: Any, use_locking: bool = False, name: str | None = None, read_value: bool = True
    ) -> Any:
        t = state_ops.assign_add(self._variable, delta, use_locking=use_locking, name=name)
        return t if read_value else t.op

    def assign_sub(
        self, delta: Any, use_locking: bool = False, name: str | None = None, read_value: bool = True
    ) -> Any:
        t = state_ops.assign_sub(self._variable, delta, use_locking=use_locking, name=name)
        return t if read_value else t.op

    def load(self, value: Any, session: Any = None) -> None:
        """Set the value in ``session`` (default session) by running the initializer with ``value`` fed."""
        from saverkit.framework.session import get_default_session

        session = session or get_default_session()
        if session is None:
            raise ValueError(
                "Either session argument should be provided or default session should be established"
            )
        session.run(self._initializer_op, {self._initializer_op.inputs[1]: value})

    def is_initialized(self, name: str | None = None) -> ops.Tensor:
        return state_ops.is_variable_initialized(self._variable, name=name)

    # --- protos -----------------------------------------------------------------------------------------
    def to_proto(self, export_scope: str | None = None) -> variable_pb2.VariableDef | None:
        """The VariableDef (names of its ops) for meta graphs; None if outside ``export_scope``."""
        if export_scope is not None and not self._variable.name.startswith(export_scope):
            return None

        def strip(name: str) -> str:
            return ops.strip_name_scope(name, export_scope)

        var_def = variable_pb2.VariableDef(
            variable_name=strip(self._variable.name),
            initializer_name=strip(self._initializer_op.name),
            snapshot_name=strip(self._snapshot.name),
            trainable=self._trainable,
        )
        if self._initial_value is not None:
            var_def.initial_value_name = strip(self._initial_value.name)
        if self._save_slice_info is not None:
            var_def.save_slice_info_def.MergeFrom(self._save_slice_info.to_proto(export_scope=export_scope))
        return var_def

    @staticmethod
    def from_proto(variable_def: variable_pb2.VariableDef, import_scope: str | None = None) -> Variable:
        return Variable(variable_def=variable_def, import_scope=import_scope)

    def _set_save_slice_info(self, save_slice_info: Variable.SaveSliceInfo) -> None:
        self._save_slice_info = save_slice_info

    def _get_save_slice_info(self) -> Variable.SaveSliceInfo | None:
        return self._save_slice_info

    def __repr__(self) -> str:
        return f"<saverkit.Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}>"

    __hash__ = object.__hash__


def _array_const(g: ops.Graph, array: np.ndarray, dtype: Any) -> ops.Tensor:
    """``constant(array, dtype, name="initial_value")``: a read-only copy in a Const, its shape known."""
    if dtype is None and array.dtype.kind not in "USO":
        arr = array.copy()
        value_dtype = _dtype_of(arr)
    else:
        arr = as_numpy(array, dtype)
        value_dtype = _dtype_of(arr) if dtype is None else dtypes.as_dtype(dtype)
    arr.setflags(write=False)  # Const values are shared by every run
    attrs = {"value": arr, "dtype": value_dtype}
    op = g._create_op(
        "Const", ops.NO_INPUTS, attrs, [value_dtype], "initial_value", _CONST,
        output_shapes=[shape_of(arr.shape)],
    )
    return op._outputs[0]


_CONST = op_registry.get("Const")
# The DTypes of numpy dtypes holding numbers (what _dtype_of gives them; not strings or objects).
_NUMPY_DTYPES = {k: v for k, v in dtypes._BY_NUMPY.items() if k.kind not in "USO"}
_GLOBAL_COLLECTIONS = (GraphKeys.GLOBAL_VARIABLES,)
_TRAINABLE_COLLECTIONS = (GraphKeys.GLOBAL_VARIABLES, GraphKeys.TRAINABLE_VARIABLES)

ops._binary_overloads(Variable)
RefVariable = Variable  # TF's name for the class


# --- what saverkit's own layers (the Saver, checkpoints) read of a Variable -----------------------------
REF_VARIABLE_OP_TYPES = frozenset({"Variable", "VariableV2", "AutoReloadVariable"})


def ref_tensor(var: Variable) -> ops.Tensor:
    """The tensor ``var`` is saved from and restored into: a ref variable's ref output (``w:0``), a
    resource variable's handle (TF's ``var._ref()``)."""
    return var._ref()


def save_slice_info(var: Variable) -> Variable.SaveSliceInfo | None:
    """Where ``var`` sits in a partitioned variable (TF's ``var._save_slice_info``), or None."""
    return var._save_slice_info


def set_initializer(var: Variable, initializer: ops.Operation, initial_value: ops.Tensor) -> None:
    """Make ``initializer`` (which assigns ``initial_value``) ``var``'s initializer: what
    ``init_from_checkpoint`` does to a variable, as TF's does (``var._initializer_op``/``_initial_value``)."""
    var._initializer_op = initializer
    var._initial_value = initial_value


def plain_ref_variables_by_name(var_list: Any) -> dict[str, ops.Tensor] | None:
    """``{op name: ref tensor}`` of ``var_list`` (a list, tuple or set) when it holds only Variables of
    this very class that are no slices of a partitioned variable, each of its own name; else None.

    The Saver's common case (its ``op_list_to_dict``), read in C: it runs once per variable of a model."""
    if set(map(type, var_list)) != {Variable} or any(map(_SAVE_SLICE_INFO, var_list)):
        return None
    refs = list(map(_REF, var_list))
    var_ops = list(map(_OP, refs))
    if not set(map(_OP_TYPE, var_ops)) <= REF_VARIABLE_OP_TYPES:
        return None
    out = dict(zip(map(_OP_NAME, var_ops), refs, strict=True))
    return out if len(out) == len(refs) else None


_SAVE_SLICE_INFO = operator.attrgetter("_save_slice_info")
_REF = operator.attrgetter("_variable")  # Variable._ref(), for this class
_OP = operator.attrgetter("_op")
_OP_TYPE = operator.attrgetter("_type")
_OP_NAME = operator.attrgetter("_name")


def _variable_to_tensor(
    v: Variable, dtype: Any = None, name: str | None = None, as_ref: bool = False
) -> ops.Tensor:
    if dtype is not None and not dtypes.as_dtype(dtype).is_compatible_with(v.dtype):
        raise ValueError(
            f"Incompatible type conversion requested to type '{dtypes.as_dtype(dtype).name}' for "
            f"variable of type '{v.dtype.name}'"
        )
    return v._ref() if as_ref else v.value()


ops.register_tensor_conversion_function(Variable, _variable_to_tensor)


def _to_proto_fn(v: Variable, export_scope: str | None = None) -> Any:
    return v.to_proto(export_scope=export_scope)


def _from_proto_fn(v: Any, import_scope: str | None = None) -> Variable:
    return Variable.from_proto(v, import_scope=import_scope)


for _key in (
    GraphKeys.GLOBAL_VARIABLES,
    GraphKeys.TRAINABLE_VARIABLES,
    GraphKeys.MOVING_AVERAGE_VARIABLES,
    GraphKeys.LOCAL_VARIABLES,
    GraphKeys.MODEL_VARIABLES,
    GraphKeys.GLOBAL_STEP,
    GraphKeys.METRIC_VARIABLES,
):
    ops.register_proto_function(
        _key, proto_type=variable_pb2.VariableDef, to_proto=_to_proto_fn, from_proto=_from_proto_fn
    )


# --- collections and initializers -----------------------------------------------------------------


def global_variables(scope: str | None = None) -> list[Variable]:
    return ops.get_collection(GraphKeys.GLOBAL_VARIABLES, scope)


all_variables = global_variables


def trainable_variables(scope: str | None = None) -> list[Variable]:
    return ops.get_collection(GraphKeys.TRAINABLE_VARIABLES, scope)


def local_variables(scope: str | None = None) -> list[Variable]:
    return ops.get_collection(GraphKeys.LOCAL_VARIABLES, scope)


def model_variables(scope: str | None = None) -> list[Variable]:
    return ops.get_collection(GraphKeys.MODEL_VARIABLES, scope)


def moving_average_variables(scope: str | None = None) -> list[Variable]:
    return ops.get_collection(GraphKeys.MOVING_AVERAGE_VARIABLES, scope)


def variables_initializer(var_list: Any, name: str = "init") -> ops.Operation:
    """One op running the initializers of ``var_list``."""
    var_list = list(var_list)
    if var_list:
        return control_flow_ops.group(*[v.initializer for v in var_list], name=name)
    return control_flow_ops.no_op(name=name)


def global_variables_initializer() -> ops.Operation:
    return variables_initializer(global_variables())


def local_variables_initializer() -> ops.Operation:
    return variables_initializer(local_variables())


def is_variable_initialized(variable: Any) -> ops.Tensor:
    return state_ops.is_variable_initialized(variable)


def report_uninitialized_variables(
    var_list: Any = None, name: str = "report_uninitialized_variables"
) -> ops.Tensor:
    """A 1-D string tensor: the names of the variables in ``var_list`` (default: all global and local
    variables) not yet initialized in the session that runs it."""
    if var_list is None:
        var_list = global_variables() + local_variables()
    var_list = list(var_list)
    with ops.name_scope(name):
        init_vars = [state_ops.is_variable_initialized(v) for v in var_list]
        with ops.device("/cpu:0"):
            if not var_list:
                return constant([], dtype=dtypes.string)
            mask = math_ops.logical_not(array_ops.stack(init_vars))
            names = constant([v.op.name for v in var_list])
            return array_ops.boolean_mask(names, mask)
