"""``Graph``: owns its ``Operation`` nodes and creates them; names, scopes, devices, dependencies and
collections behave as in TensorFlow 1.x (``tf.compat.v1``): ``w``, ``w_1``..., ``scope/op``, ``GraphKeys``
with TF's string values.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from saverkit import dtypes as dtypes_lib
from saverkit.framework import attrs as attrs_lib
from saverkit.framework import device_spec, op_registry
from saverkit.framework.operation import _NO_OPS, Operation, _varint
from saverkit.framework.tensor import _UNKNOWN_SHAPE, Tensor
from saverkit.framework.tensor_shape import TensorShape
from saverkit.protobuf import graph_pb2, versions_pb2

GRAPH_DEF_VERSION = 2474
GRAPH_DEF_VERSION_MIN_CONSUMER = 0
GRAPH_DEF_VERSION_MIN_PRODUCER = 0

_VALID_OP_NAME_REGEX = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_VALID_SCOPE_NAME_REGEX = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")
# Names (as passed to _create_op, before scoping and uniquifying) that fully match the op-name regex, so
# that "<known-valid scope>/<name>[_<n>]" needs no regex run: library ops use a few such names ten thousand
# times over. Bounded: user code may pass a new name per op.
_VALID_BASE_NAMES: set[str] = set()
_MAX_VALID_BASE_NAMES = 4096


class GraphKeys:
    """Standard collection names, with TensorFlow's values."""

    GLOBAL_VARIABLES = "variables"
    LOCAL_VARIABLES = "local_variables"
    METRIC_VARIABLES = "metric_variables"
    MODEL_VARIABLES = "model_variables"
    TRAINABLE_VARIABLES = "trainable_variables"
    SUMMARIES = "summaries"
    QUEUE_RUNNERS = "queue_runners"
    TABLE_INITIALIZERS = "table_initializer"
    ASSET_FILEPATHS = "asset_filepaths"
    MOVING_AVERAGE_VARIABLES = "moving_average_variables"
    REGULARIZATION_LOSSES = "regularization_losses"
    CONCATENATED_VARIABLES = "concatenated_variables"
    SAVERS = "savers"
    WEIGHTS = "weights"
    BIASES = "biases"
    ACTIVATIONS = "activations"
    UPDATE_OPS = "update_ops"
    LOSSES = "losses"
    SAVEABLE_OBJECTS = "saveable_objects"
    RESOURCES = "resources"
    LOCAL_RESOURCES = "local_resources"
    TRAINABLE_RESOURCE_VARIABLES = "trainable_resource_variables"
    INIT_OP = "init_op"
    LOCAL_INIT_OP = "local_init_op"
    READY_OP = "ready_op"
    READY_FOR_LOCAL_INIT_OP = "ready_for_local_init_op"
    SUMMARY_OP = "summary_op"
    GLOBAL_STEP = "global_step"
    EVAL_STEP = "eval_step"
    TRAIN_OP = "train_op"
    COND_CONTEXT = "cond_context"
    WHILE_CONTEXT = "while_context"
    _SUMMARY_COLLECTION = "_SUMMARY_V2"
    _VARIABLE_COLLECTIONS = [
        GLOBAL_VARIABLES,
        LOCAL_VARIABLES,
        METRIC_VARIABLES,
        MODEL_VARIABLES,
        TRAINABLE_VARIABLES,
        MOVING_AVERAGE_VARIABLES,
        CONCATENATED_VARIABLES,
        TRAINABLE_RESOURCE_VARIABLES,
    ]
    _STREAMING_MODEL_PORTS = "streaming_model_ports"
    VARIABLES = GLOBAL_VARIABLES  # deprecated alias kept by TF


@contextlib.contextmanager
def pushed_default(stack: list, item: Any) -> Iterator[Any]:
    """``item`` is on top of a thread-local default stack (graphs, sessions) inside the block.

    Blocks may close out of order across generators, so removal tolerates a non-top item.
    """
    stack.append(item)
    try:
        yield item
    finally:
        if stack and stack[-1] is item:
            stack.pop()
        else:
            stack.remove(item)


class _ControlDependencies:
    """One ``with graph.control_dependencies(...)`` level: its ops and the ops created inside it."""

    __slots__ = ("control_inputs", "seen", "clears")

    def __init__(self, control_inputs: list[Operation] | None) -> None:
        self.clears = control_inputs is None
        self.control_inputs = control_inputs or []
        self.seen: set[Operation] = set()


class _NameScope:
    """``with graph.name_scope(name) as scope:`` (a class, not a generator: variables enter one each)."""

    __slots__ = ("_graph", "_name", "_old", "_old_valid", "_default", "_exact")

    def __init__(
        self, graph: Graph, name: str | None, make_default: bool = False, exact: bool = False
    ) -> None:
        self._graph = graph
        self._name = name
        self._default = graph.as_default() if make_default else None
        self._exact = exact  # name is a full op name to scope under (Graph.op_inputs_scope)

    def __enter__(self) -> str:
        g, name = self._graph, self._name
        old = g._name_stack
        if self._exact:
            assert name is not None  # an exact scope is a full op name
            self._old, self._old_valid = old, g._valid_stack
            g._name_stack = name
            return name + "/"
        if name:
            regex = _VALID_SCOPE_NAME_REGEX if old else _VALID_OP_NAME_REGEX
            if not regex.match(name):
                raise ValueError(f"'{name}' is not a valid scope name")
        if self._default is not None:
            self._default.__enter__()
        self._old = old
        self._old_valid = g._valid_stack  # restored on exit: most likely the stack we return to
        if not name:
            new_stack, scope = "", ""
        elif name[-1] == "/":
            new_stack, scope = name[:-1], name
            if not old and new_stack:  # matched the op-name regex up to its end (a "/", not a "\n")
                g._valid_stack = new_stack
        else:
            new_stack = g.unique_name(name)
            scope = new_stack + "/"
            # A valid op name: "$" also matches before a final newline, so that one case is left out.
            if name[-1] != "\n" and (not old or old == g._valid_stack):
                g._valid_stack = new_stack
        g._name_stack = new_stack
        return scope

    def __exit__(self, *exc: Any) -> None:
        self._graph._name_stack = self._old
        self._graph._valid_stack = self._old_valid
        if self._default is not None:
            self._default.__exit__(*exc)


class Graph:
    """A dataflow graph: operations, their names and scopes, devices, dependencies and collections."""

    def __init__(self) -> None:
        self._nodes_by_name: dict[str, Operation] = {}  # creation order
        self._last_id = 0
        self._names_in_use: dict[str, int] = {}
        self._name_stack = ""
        self._valid_stack = ""  # a name stack known to match the op-name regex in full (see _create_op)
        self._device_stack: list[Any] = []
        self._device_now: str | None = ""  # merged device of the stack; None when it holds a function
        self._control_stack: list[_ControlDependencies] = []
        self._colocation_stack: list[Operation] = []
        self._attr_scope_map: dict[str, Any] = {}
        self._collections: dict[Any, list] = {}
        self._finalized = False
        self._edges_version = 0  # bumped when an existing op's edges change (invalidates cached run plans)
        self._last_colocation: tuple | None = None  # (op, its _class, groups): see _colocation_groups
        self._plan_templates: Any = None  # the executor's cache of run plan templates (executor.template_for)
        self._layer_caches: dict[str, dict] = {}  # see layer_cache
        self._graph_def_versions = versions_pb2.VersionDef(
            producer=GRAPH_DEF_VERSION, min_consumer=GRAPH_DEF_VERSION_MIN_CONSUMER
        )
        self.seed: int | None = None

    # --- default graph ----------------------------------------------------------------
    def as_default(self) -> contextlib.AbstractContextManager[Graph]:
        """Make this the default graph (the one op functions add to) inside the ``with`` block."""
        return pushed_default(_default_graph_stack.stack, self)

    # --- finalization -------------------------------------------------------------------
    @property
    def finalized(self) -> bool:
        return self._finalized

    def finalize(self) -> None:
        """Make the graph read-only: adding ops or collection items afterwards raises RuntimeError."""
        self._finalized = True

    def _unsafe_unfinalize(self) -> None:
        self._finalized = False

    def _check_not_finalized(self) -> None:
        if self._finalized:
            raise RuntimeError("Graph is finalized and cannot be modified.")

    # --- names ----------------------------------------------------------------------------
    def unique_name(self, name: str, mark_as_used: bool = True) -> str:
        """``name`` inside the current scope, suffixed ``_1``, ``_2``... if taken (case-insensitively)."""
        if self._name_stack:
            name = self._name_stack + "/" + name
        name_key = name.lower()
        if name_key == name:
            name_key = name  # the name itself: one string held, not an equal copy (most names are lower case)
        i = self._names_in_use.get(name_key, 0)
        if mark_as_used:
            self._names_in_use[name_key] = i + 1
        if i > 0:
            base_name_key = name_key
            while name_key in self._names_in_use:
                name_key = f"{base_name_key}_{i}"
                i += 1
            if mark_as_used:
                self._names_in_use[name_key] = 1
            # name_key is base_name_key + "_<i - 1>": the name itself when that was (see above).
            name = name_key if base_name_key is name else f"{name}_{i - 1}"
        return name

    def unique_names(self, name: str, n: int) -> list[str]:
        """The names ``n`` calls of ``unique_name(name)`` give, all marked as used."""
        if n < 8:
            return [self.unique_name(name) for _ in range(n)]
        base = f"{self._name_stack}/{name}" if self._name_stack else name
        in_use = self._names_in_use
        key = base.lower()
        start = in_use.get(key, 0)
        # "_<i>" has no letters, so the lower-cased candidates are key + "_<i>": one set test for all of
        # them. (Formatted per call rather than from a cache of suffixes: a first Saver paid more to fill
        # the cache, and the cache held a string per variable for the life of the process.)
        first = 1 if start == 0 else start
        stop = first + n - (start == 0)
        keys = [f"{key}_{i}" for i in range(first, stop)]
        if not in_use.keys().isdisjoint(keys):
            return [self.unique_name(name) for _ in range(n)]  # some taken: let unique_name skip them
        in_use[key] = stop
        in_use.update(dict.fromkeys(keys, 1))  # in C: a Saver reserves one name per variable
        same = key == base  # a lower-case scope and name: the keys are the names
        names = keys if same else [f"{base}_{i}" for i in range(first, stop)]
        if start == 0:
            names = [key if same else base, *names]
        return names

    def get_name_scope(self) -> str:
        return self._name_stack

    def name_scope(self, name: str | None) -> _NameScope:
        """Prefix the names of ops created inside with ``name/`` (made unique); ``as`` gives the scope string.

        ``name`` ending in ``/`` re-enters that exact scope; None or ``""`` resets to the root scope.
        """
        return _NameScope(self, name)

    def op_inputs_scope(self, op_name: str) -> _NameScope:
        """Inside, ops are named under ``op_name/`` (a full name ``unique_name`` gave, used as it is, not
        checked again): the ops made for an op's inputs are named ``<op>/<input>``, as in TensorFlow."""
        return _NameScope(self, op_name, exact=True)

    # --- devices ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def device(self, device_name_or_function: Any) -> Iterator[None]:
        """Place ops created inside on a device: a string (merged with outer ones), a function of the op,
        or None to clear outer placements."""
        spec = device_name_or_function
        if spec is not None and not isinstance(spec, str) and not callable(spec):
            spec = spec.to_string()  # a DeviceSpec-like object
        if isinstance(spec, str):
            device_spec.parse(spec)  # validate now, not when the first op is created
        old_now = self._device_now
        self._device_stack.append(spec)
        if spec is None:
            self._device_now = ""
        elif isinstance(spec, str):
            self._device_now = None if old_now is None else device_spec.merge(spec, old_now)
        else:
            self._device_now = None
        try:
            yield
        finally:
            self._device_stack.pop()
            self._device_now = old_now

    def _apply_device_functions(self, op: Operation) -> str:
        # Innermost first, as TF: each level fills in what inner levels left unspecified.
        device = ""
        for spec in reversed(self._device_stack):
            if spec is None:
                break
            if isinstance(spec, str):
                device = device_spec.merge(device, spec) if device else device_spec.canonical_name(spec)
            else:
                op._device = device
                result = spec(op)
                device = device_spec.canonical_name(
                    result if isinstance(result, str) or result is None else result.to_string()
                )
        return device

    @contextlib.contextmanager
    def colocate_with(self, op: Any, ignore_existing: bool = False) -> Iterator[None]:
        """Ops created inside share ``op``'s device and get its ``_class: loc:@...`` colocation attr."""
        if op is None:
            if not ignore_existing:
                raise ValueError("Trying to reset colocation (op is None) but ignore_existing is not True")
            old, self._colocation_stack = self._colocation_stack, []
        else:
            el = self.as_graph_element(op)
            op = el.op if isinstance(el, Tensor) else el
            old = self._colocation_stack
            self._colocation_stack = ([] if ignore_existing else old) + [op]
        try:
            yield
        finally:
            self._colocation_stack = old

    @contextlib.contextmanager
    def _attr_scope(self, attr_map: dict[str, Any]) -> Iterator[None]:
        """Ops created inside get these extra attrs (e.g. ``_class`` for a variable's initializer)."""
        old = self._attr_scope_map
        self._attr_scope_map = {**old, **attr_map}
        try:
            yield
        finally:
            self._attr_scope_map = old

    # --- control dependencies ---------------------------------------------------------------
    @contextlib.contextmanager
    def control_dependencies(self, control_inputs: Any) -> Iterator[None]:
        """Ops created inside run only after ``control_inputs`` (ops, tensors or variables); None clears."""
        if control_inputs is None:
            level = _ControlDependencies(None)
        else:
            current = {op for lvl in self._control_stack for op in lvl.control_inputs}
            ops = []
            for c in control_inputs:
                if type(c) is not Operation or c._graph is not self:  # else as_graph_element(c) is c
                    c = self.as_graph_element(c)
                    if isinstance(c, Tensor):
                        c = c.op
                if c not in current:
                    ops.append(c)
                    current.add(c)
            level = _ControlDependencies(ops)
        old = self._control_stack
        self._control_stack = [level] if level.clears else old + [level]
        try:
            yield
        finally:
            self._control_stack = old

    def _control_dependencies_for_inputs(self, input_ops: list[Operation]) -> list[Operation]:
        ret: list[Operation] = []
        skip = set(input_ops)  # a data input already orders the op after it
        for level in self._control_stack:
            # An input created inside this level already waits for its control inputs.
            if level.seen and any(op in level.seen for op in input_ops):
                continue
            for c in level.control_inputs:
                if c not in skip:
                    skip.add(c)
                    ret.append(c)
        return ret

    # --- op creation -----------------------------------------------------------------------------
    # Every op of the graph is made here: create_op (one op, TF's signature: attrs as users give them),
    # create_ops (many single-output ops of one type, attrs complete) and _create_op (one op, attrs
    # complete: what op builders and the importer call). Each does what the graph's context asks (control
    # dependencies, colocation, attr scope, device functions) only when some is in effect: a graph of
    # 10,000 variables is built without any, and the per-op cost is what decides its build time.
    def create_op(
        self,
        op_type: str,
        inputs: list[Any],
        dtypes: list[Any] | None = None,
        input_types: list[Any] | None = None,
        name: str | None = None,
        attrs: dict[str, Any] | None = None,
        op_def: Any = None,
        compute_shapes: bool = True,
        compute_device: bool = True,
        *,
        control_inputs: Sequence[Operation] | None = None,
    ) -> Operation:
        """TF1's op constructor: ``inputs`` are Tensors in flat order, ``attrs`` AttrValue protos or Python
        values; type attrs left out are inferred from the inputs, defaults filled in. ``name`` is made
        unique in the current scope (one ending in "/" is used as is). Unknown op types are allowed when
        ``dtypes`` (the output types) is given: the op can be exported, not run.

        Beyond TF's signature: ``control_inputs``, ops this one runs after (besides those of the
        ``control_dependencies`` blocks it is made in)."""
        del input_types, op_def, compute_device  # TF's arguments, derived from the registered OpDef here
        # Tensors of this graph are used as they are (checked once here, not again by _create_op: a SaveV2
        # has one input per variable); anything else is converted, which checks the graph.
        for t in inputs:
            if type(t) is not Tensor or t._op._graph is not self:
                inputs = [self.as_graph_element(t, allow_tensor=True, allow_operation=False) for t in inputs]
                break
        else:
            inputs = list(inputs)
        info = op_registry.get(op_type)
        stored, output_types = op_registry.complete_attrs(op_type, info, inputs, attrs or {}, dtypes)
        return self._create_op(
            op_type,
            inputs,
            stored,
            output_types,
            name or op_type,
            info,
            control_inputs=control_inputs,
            compute_shapes=compute_shapes and info is not None,
            inputs_checked=True,
        )

    def create_ops(
        self,
        op_type: str,
        inputs: Sequence[Sequence[Tensor]],
        attrs: Sequence[dict[str, Any]],
        dtypes: Sequence[dtypes_lib.DType],
        name: str | None = None,
        *,
        shapes: Sequence[TensorShape] | None = None,
        devices: Sequence[str] | None = None,
        inputs_checked: bool = False,
    ) -> list[Operation]:
        """Many single-output ops of the registered type ``op_type``, as ``len(inputs)`` calls of
        ``create_op(op_type, inputs[i], [dtypes[i]], name=name, attrs=attrs[i])`` would make them (named
        ``name``, ``name_1``... in the current scope), at a fraction of the cost (a Saver makes one Assign
        per variable).

        ``attrs[i]`` are complete Python values, as an Operation stores them (see attrs.canonicalize); ops
        may share one dict, which is never mutated. ``shapes``: the outputs' static shapes when the caller
        knows them (the shape function is not run). ``devices``: each op's exact device, overriding device
        scopes and functions (an op writing a variable is placed with it). ``inputs_checked``: the caller
        vouches that every input is a Tensor of this graph, so they are not checked again (a Saver's Assigns
        take the variables its SaveV2 just took: checking 20,000 inputs twice is ~10% of a Saver's build).
        What was made stays made if one op fails."""
        n = len(inputs)
        if not (len(attrs) == len(dtypes) == n and (shapes is None or len(shapes) == n)) or (
            devices is not None and len(devices) != n
        ):
            raise ValueError(f"create_ops of {n} {op_type} ops needs as many attrs, dtypes, shapes, devices")
        info = op_registry.get(op_type)
        if info is None:
            raise ValueError(f"Unknown op type {op_type!r}: saverkit has no OpDef for it.")
        if self._finalized:
            raise RuntimeError("Graph is finalized and cannot be modified.")
        names = self.unique_names(name or op_type, n)
        out: list[Operation] = []
        if not n:
            return out
        # The plain case: no context to apply, names valid and free (one check each for the whole batch),
        # shapes given. Else op by op, through _create_op.
        if (
            shapes is None
            or not self._plain()
            or not _VALID_OP_NAME_REGEX.fullmatch(names[0])
            or not self._nodes_by_name.keys().isdisjoint(names)
        ):
            for i, op_name in enumerate(names):
                out.append(
                    self._create_op(
                        op_type,
                        list(inputs[i]),
                        dict(attrs[i]),  # the context may add attrs (colocation, attr scope)
                        [dtypes[i]],
                        op_name + "/",
                        info,
                        output_shapes=None if shapes is None else [shapes[i]],
                        device=None if devices is None else devices[i],
                    )
                )
            return out
        # No context is in effect (see _plain): no control inputs, nothing seen by control levels.
        new, register, append = self._new_op, self._register, out.append
        if devices is None:
            now = self._device_now
            assert now is not None  # _plain(): no device function in effect
            devices = [now] * n
        for op_name, ins, attr, dtype, shape, device in zip(
            names, inputs, attrs, dtypes, shapes, devices, strict=True
        ):
            if not inputs_checked:
                for t in ins:
                    if t._op._graph is not self:
                        raise ValueError(f"Tensor {t.name} must be from the same graph as the {op_type} ops.")
            op = new(op_name, op_type, tuple(ins), attr, info, _NO_OPS, device, dtype, shape)
            register(op)
            append(op)
        return out

    def _create_op(
        self,
        op_type: str,
        inputs: Sequence[Tensor],
        attrs: dict[str, Any],
        output_types: Sequence[dtypes_lib.DType],
        name: str,
        info: Any = None,
        *,
        control_inputs: Sequence[Operation] | None = None,
        compute_shapes: bool = True,
        output_shapes: Sequence[TensorShape] | None = None,
        colocate_with: Sequence[Operation] | None = None,
        device: str | None = None,
        inputs_checked: bool = False,
    ) -> Operation:
        """Add one op whose ``attrs`` are complete Python values (the dict becomes the op's unless the
        context adds attrs to it: it is then copied). ``name`` ending in "/" is used as is, else made unique
        in the current scope. ``info``: the op type's registry entry (None: an opaque op, never run).

        ``output_shapes``: the outputs' static shapes when the caller knows them (else the shape function
        decides, unless ``compute_shapes`` is False). ``colocate_with``: ops this one lives with, as if
        inside ``colocate_with`` blocks for them (TF colocates ops writing a variable with it): the
        ``_class`` attr and their device. ``device``: the exact device, overriding every scope.
        ``inputs_checked``: the caller (create_op) made sure every input is a Tensor of this graph."""
        if self._finalized:
            raise RuntimeError("Graph is finalized and cannot be modified.")
        stack = self._name_stack
        if name in _VALID_BASE_NAMES and (not stack or stack == self._valid_stack):
            # Valid in full (see _op_name), which the regex need not check. unique_name(name), inline for
            # the usual case of a name still free in its scope (a variable's "Assign" and "read").
            full = stack + "/" + name if stack else name
            key = full.lower()
            in_use = self._names_in_use
            if key in in_use:
                full = self.unique_name(name)
            else:
                in_use[full if key == full else key] = 1  # one string for name and key (see unique_name)
            name = full
            if name in self._nodes_by_name:
                raise ValueError(f"Duplicate node name in graph: '{name}'")
        else:
            name = self._op_name(name)
        if not inputs_checked:
            for t in inputs:
                if t._op._graph is not self:
                    raise ValueError(
                        f"Tensor {t.name} must be from the same graph as the op {name!r} being created."
                    )
        if len(output_types) == 1:
            dtype, shape = output_types[0], _UNKNOWN_SHAPE if output_shapes is None else output_shapes[0]
        else:
            dtype, shape = _outputs(output_types, output_shapes)
        if (
            control_inputs
            or self._control_stack
            or self._colocation_stack
            or self._attr_scope_map
            or self._device_now is None
            or colocate_with and len(colocate_with) > 1
        ):
            op = self._new_op(name, op_type, inputs, attrs, info, _NO_OPS, "", dtype, shape)
            self._apply_context(op, inputs, control_inputs, colocate_with)
            if device is not None:
                op._device = device
        else:  # no context blocks in effect (the usual case): what _apply_context does then
            if colocate_with:  # a variable's Assign or read: its colocation group and device
                target = colocate_with[0]
                cls = target._attrs.get("_class")
                last = self._last_colocation  # see _colocation_groups (its check, inline)
                if last is not None and last[0] is target and last[1] is cls:
                    groups = last[2]
                elif cls is None:  # a variable, colocated with nothing: its own group (colocation_groups)
                    groups = (b"loc:@" + target._name.encode(),)
                    self._last_colocation = (target, None, groups)
                else:
                    groups = self._colocation_groups(colocate_with)
                attrs = {**attrs, "_class": groups}  # a new dict: never mutate the caller's
                if device is None:
                    device = target._device or self._device_now
            elif device is None:
                device = self._device_now
            op = self._new_op(name, op_type, inputs, attrs, info, _NO_OPS, device, dtype, shape)
        if output_shapes is None and compute_shapes and info is not None and info.shape_fn is not None:
            shapes = info.shape_fn(op)
            outputs = op._outputs
            if len(outputs) == 1 and type(shapes) is list and shapes:
                if shapes[0] is not None:
                    outputs[0]._shape = shapes[0]
            else:
                for t, s in zip(outputs, shapes, strict=False):
                    if s is not None:
                        t._shape = s
        # Only now is the op part of the graph: a failing shape function leaves no trace.
        self._register(op)
        return op

    def _create_variable_ops(
        self,
        name: str,
        value: Tensor | tuple[dict[str, Any], TensorShape],
        var_attrs: dict[str, Any],
        assign_attrs: dict[str, Any],
        read_attrs: dict[str, Any],
    ) -> tuple[Tensor, Tensor, Operation, Tensor]:
        """A ref variable's ops, named as in TensorFlow inside the new scope ``name`` (see name_scope):
        ``<name>/initial_value`` (a Const of these attrs and shape, unless ``value`` is a Tensor already),
        ``<name>`` (VariableV2), ``<name>/Assign`` and ``<name>/read`` (an Identity), the last two colocated
        with the variable. Returns (initial value, variable ref, initializer, snapshot).

        The same ops, names, attrs, shapes and devices as four _create_op calls in that scope (what this
        does while any context block is in effect), made as one batch otherwise: a graph holds variables by
        the ten thousand, and per-op scope, name and context work cost more than the ops themselves.
        ``var_attrs["shape"]`` is the variable's shape; the Assign's shape is the value's, as its shape
        function gives when ``assign_attrs["validate_shape"]`` is false or the two shapes are equal."""
        infos = _VARIABLE_OP_INFOS or _variable_op_infos()
        dtype = var_attrs["dtype"]
        var_shape = var_attrs["shape"]
        value_shape = value._shape if isinstance(value, Tensor) else value[1]
        plain_shapes = not assign_attrs["validate_shape"] or var_shape._dims == value_shape._dims
        stack = self._name_stack
        if not (
            plain_shapes
            and (type(value) is not Tensor or value._op._graph is self)
            and self._plain()
            and type(name) is str
            and name
            and name[-1] not in "/\n"
            and (not stack or stack == self._valid_stack)  # then "<scope>/<op>[_<n>]" is valid if name is
            and (_VALID_SCOPE_NAME_REGEX if stack else _VALID_OP_NAME_REGEX).match(name)
        ):
            with self.name_scope(name) as scope:
                if type(value) is not Tensor:
                    attrs, shape = value
                    value = self._create_op(
                        "Const", (), attrs, [attrs["dtype"]], "initial_value", infos[0], output_shapes=[shape]
                    )._outputs[0]
                ref = self._create_op(
                    "VariableV2", (), var_attrs, [dtype._as_ref], scope, infos[1], output_shapes=[var_shape]
                )._outputs[0]
                assign = self._create_op(
                    "Assign", (ref, value), assign_attrs, [ref._dtype], "Assign", infos[2],
                    colocate_with=(ref._op,), output_shapes=[value_shape] if plain_shapes else None,
                )
                read = self._create_op(
                    "Identity", (ref,), read_attrs, [dtype], "read", infos[3], colocate_with=(ref._op,),
                    output_shapes=[var_shape],
                )._outputs[0]
            return value, ref, assign, read
        # No context in effect: each op is what _create_op makes then. The scope is entered only for
        # unique_name (sub-op names taken already, which a fresh scope rarely has).
        scope = self.unique_name(name)
        device = self._device_now
        assert device is not None  # _plain(): no device function in effect
        nodes = self._nodes_by_name
        in_use = self._names_in_use
        prefix = scope + "/"
        # The sub-op names' keys (unique_name's lower-cased names): the scope's key and a lower-case base.
        # A lower-case scope (the usual case) makes each name its own key: one string held for both.
        key_prefix = prefix.lower()
        lower = key_prefix == prefix
        new, register = self._new_op, self._register
        if type(value) is not Tensor:
            attrs, shape = value
            const_name = key_prefix + "initial_value"
            if const_name in in_use:
                const_name = self._sub_op_name(scope, "initial_value")
            else:
                in_use[const_name] = 1
                if not lower:
                    const_name = prefix + "initial_value"
            if const_name in nodes:
                raise ValueError(f"Duplicate node name in graph: '{const_name}'")
            op = new(const_name, "Const", (), attrs, infos[0], _NO_OPS, device, attrs["dtype"], shape)
            register(op)
            value = op._outputs[0]
        if scope in nodes:
            raise ValueError(f"Duplicate node name in graph: '{scope}'")
        var_op = new(scope, "VariableV2", (), var_attrs, infos[1], _NO_OPS, device, dtype._as_ref, var_shape)
        register(var_op)
        ref = var_op._outputs[0]
        groups = (b"loc:@" + scope.encode(),)  # var_op.colocation_groups(): it is colocated with nothing
        assign_name = key_prefix + "assign"
        if assign_name in in_use:
            assign_name = self._sub_op_name(scope, "Assign")
        else:
            in_use[assign_name] = 1
            assign_name = prefix + "Assign"
        if assign_name in nodes:
            raise ValueError(f"Duplicate node name in graph: '{assign_name}'")
        assign = new(
            assign_name, "Assign", (ref, value), {**assign_attrs, "_class": groups}, infos[2], _NO_OPS,
            device, ref._dtype, value_shape,
        )
        register(assign)
        read_name = key_prefix + "read"
        if read_name in in_use:
            read_name = self._sub_op_name(scope, "read")
        else:
            in_use[read_name] = 1
            if not lower:
                read_name = prefix + "read"
        if read_name in nodes:
            raise ValueError(f"Duplicate node name in graph: '{read_name}'")
        read_op = new(
            read_name, "Identity", (ref,), {**read_attrs, "_class": groups}, infos[3], _NO_OPS, device,
            dtype, var_shape,
        )
        register(read_op)
        return value, ref, assign, read_op._outputs[0]

    def _sub_op_name(self, scope: str, base: str) -> str:
        """``unique_name(base)`` inside the name scope ``scope`` (for _create_variable_ops, when the plain
        ``<scope>/<base>`` is taken already)."""
        stack, self._name_stack = self._name_stack, scope
        try:
            return self.unique_name(base)
        finally:
            self._name_stack = stack

    def _op_name(self, name: str) -> str:
        """The full name of a new op (see _create_op), checked free and valid, and marked in use."""
        if name[-1:] == "/":
            name = name[:-1]
            self._names_in_use.setdefault(name.lower(), 1)
            # The current scope itself (a Variable's VariableV2), when known valid: no regex run.
            checked = bool(name) and name == self._name_stack and name == self._valid_stack
        else:
            # "<valid scope>/<valid base>[_<n>]" is a valid name: skip the regex (see _VALID_BASE_NAMES).
            stack = self._name_stack
            checked = name in _VALID_BASE_NAMES and (not stack or stack == self._valid_stack)
            if not checked and len(_VALID_BASE_NAMES) < _MAX_VALID_BASE_NAMES:
                if _VALID_OP_NAME_REGEX.fullmatch(name):
                    _VALID_BASE_NAMES.add(name)
            name = self.unique_name(name)
        if name in self._nodes_by_name:
            raise ValueError(f"Duplicate node name in graph: '{name}'")
        if not checked and not _VALID_OP_NAME_REGEX.match(name):
            raise ValueError(f"'{name}' is not a valid node name")
        return name

    def _new_op(
        self,
        name: str,
        op_type: str,
        inputs: Sequence[Tensor],
        attrs: dict[str, Any],
        info: Any,
        control_inputs: list[Operation],
        device: str,
        dtype: Any,
        shape: Any,
    ) -> Operation:
        """The one place an Operation and its output Tensors are constructed (with the next id), not yet
        registered by name (see _register). ``dtype``/``shape``: of the one output, or (for other output
        counts) a tuple of dtypes and a tuple of shapes (see _outputs)."""
        op = object.__new__(Operation)  # Operation() refuses: ops are made by their graph
        op._graph = self
        op._name = name
        op._type = op_type
        op._inputs = inputs
        op._attrs = attrs
        op._info = info
        op._serialized = None
        op._control_inputs = control_inputs
        op._device = device
        op._id = self._last_id = self._last_id + 1
        if type(dtype) is tuple:
            outputs = []
            new = object.__new__
            for i, (d, s) in enumerate(zip(dtype, shape, strict=True)):
                t = new(Tensor)  # Tensor(op, i, d, s), inline: a RestoreV2 has one per variable
                t._op = op
                t._value_index = i
                t._dtype = d
                t._shape = s
                t._consumers = None
                outputs.append(t)
            op._outputs = tuple(outputs)
        else:
            # Tensor(op, 0, dtype, shape), its __init__ inline: most ops have this one output.
            t = object.__new__(Tensor)
            t._op = op
            t._value_index = 0
            t._dtype = dtype
            t._shape = shape
            t._consumers = None
            op._outputs = (t,)  # a tuple: one allocation (outputs never change)
        return op

    def _register(self, op: Operation) -> None:
        """Make ``op`` part of the graph: findable by name, a consumer of its inputs, seen by the control
        dependency levels it was made in. The one place an op joins the graph."""
        self._nodes_by_name[op._name] = op
        for t in op._inputs:  # see Tensor._consumers (a SaveV2 has one input per variable)
            c = t._consumers
            if c is None:
                t._consumers = op
            elif isinstance(c, list):
                c.append(op)
            else:
                t._consumers = [c, op]
        if self._control_stack:
            for level in self._control_stack:
                level.seen.add(op)

    def _apply_context(
        self,
        op: Operation,
        inputs: Sequence[Tensor],
        control_inputs: Sequence[Operation] | None,
        colocate_with: Sequence[Operation] | None,
    ) -> None:
        """Control dependencies, attr scope, device and colocation of the blocks ``op`` is made in."""
        if control_inputs or self._control_stack:
            controls = list(dict.fromkeys(control_inputs)) if control_inputs else []
            if self._control_stack:
                known = set(controls)
                implied = self._control_dependencies_for_inputs([t._op for t in inputs])
                controls.extend(c for c in implied if c not in known)
            op._control_inputs = controls
        # Attrs are added to a copy: the caller's dict may be shared by other ops.
        copied = False
        if self._attr_scope_map:
            attrs = op._attrs
            missing = {k: v for k, v in self._attr_scope_map.items() if k not in attrs}
            if missing:
                op._attrs = {**attrs, **missing}
                copied = True
        device = self._device_now
        if device is None:
            device = self._apply_device_functions(op)  # a device function sees the attrs so far
        op._device = device
        stack = self._colocation_stack
        if colocate_with:
            stack = [*stack, *colocate_with] if stack else list(colocate_with)
        if stack:
            groups = self._colocation_groups(stack)
            if copied:
                op._attrs["_class"] = groups
            else:
                op._attrs = {**op._attrs, "_class": groups}
            if stack[-1]._device:
                op._device = stack[-1]._device

    def _colocation_groups(self, stack: Sequence[Operation]) -> tuple[bytes, ...]:
        """The ``_class`` attr of an op colocated with ``stack``: a tuple (immutable, so shareable, and
        untracked by the cyclic GC once it has seen it), the same one for consecutive ops colocated with
        the same single op (a variable's Assign and read)."""
        if len(stack) != 1:
            return tuple(sorted({g for c in stack for g in c.colocation_groups()}))
        last = self._last_colocation
        if last is not None and last[0] is stack[0] and last[1] == stack[0]._attrs.get("_class"):
            return last[2]
        groups = tuple(stack[0].colocation_groups())
        self._last_colocation = (stack[0], stack[0]._attrs.get("_class"), groups)
        return groups

    def _plain(self) -> bool:
        """No finalization, control dependencies, colocation, attr scope or device function in effect."""
        return not (
            self._finalized
            or self._control_stack
            or self._colocation_stack
            or self._attr_scope_map
            or self._device_now is None
        )

    # --- lookup ---------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._last_id

    @property
    def graph_def_versions(self) -> versions_pb2.VersionDef:
        return self._graph_def_versions

    def get_operations(self) -> list[Operation]:
        return list(self._nodes_by_name.values())

    def get_operation_by_name(self, name: str) -> Operation:
        if not isinstance(name, str):
            raise TypeError(f"Operation names are strings (or similar), not {type(name).__name__}.")
        return self.as_graph_element(name, allow_tensor=False, allow_operation=True)

    def _get_operation_by_name(self, name: str) -> Operation:
        return self._nodes_by_name[name]

    _get_operation_by_name_unsafe = _get_operation_by_name

    def get_tensor_by_name(self, name: str) -> Tensor:
        if not isinstance(name, str):
            raise TypeError(f"Tensor names are strings (or similar), not {type(name).__name__}.")
        return self.as_graph_element(name, allow_tensor=True, allow_operation=False)

    def as_graph_element(self, obj: Any, allow_tensor: bool = True, allow_operation: bool = True) -> Any:
        """The Tensor or Operation ``obj`` names or is (also accepts objects with ``_as_graph_element``)."""
        kind = type(obj)
        if kind is Tensor and allow_tensor or kind is Operation and allow_operation:
            if (obj._graph if kind is Operation else obj._op._graph) is not self:
                raise ValueError(f"{kind.__name__} {obj} is not an element of this graph.")
            return obj
        if allow_tensor and allow_operation:
            kinds = "Tensor or Operation"
        elif allow_tensor:
            kinds = "Tensor"
        elif allow_operation:
            kinds = "Operation"
        else:
            raise ValueError("allow_tensor and allow_operation can't both be False.")
        conv = getattr(obj, "_as_graph_element", None)
        if conv is not None and not isinstance(obj, (Tensor, Operation)):
            obj = conv()
        if isinstance(obj, bytes):
            obj = obj.decode("utf-8")
        if isinstance(obj, str):
            return self._element_by_name(obj, allow_tensor, allow_operation, kinds)
        if isinstance(obj, Tensor) and allow_tensor:
            if obj.graph is not self:
                raise ValueError(f"Tensor {obj} is not an element of this graph.")
            return obj
        if isinstance(obj, Operation) and allow_operation:
            if obj._graph is not self:
                raise ValueError(f"Operation {obj} is not an element of this graph.")
            return obj
        raise TypeError(f"Can not convert a {type(obj).__name__} into a {kinds}.")

    def _element_by_name(self, name: str, allow_tensor: bool, allow_operation: bool, kinds: str) -> Any:
        if ":" in name:
            if not allow_tensor:
                raise ValueError(f"Name '{name}' appears to refer to a Tensor, not a {kinds}.")
            op_name, _, index = name.rpartition(":")
            try:
                out_n = int(index)
                if out_n < 0 or not op_name:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"The name '{name}' looks a like a Tensor name, but is not a valid one. "
                    'Tensor names must be of the form "<op_name>:<output_index>".'
                ) from None
            op = self._nodes_by_name.get(op_name)
            if op is None:
                raise KeyError(
                    f"The name '{name}' refers to a Tensor which does not exist. "
                    f"The operation, '{op_name}', does not exist in the graph."
                )
            if out_n >= len(op._outputs):
                raise KeyError(
                    f"The name '{name}' refers to a Tensor which does not exist. The operation, "
                    f"'{op_name}', exists but only has {len(op._outputs)} outputs."
                )
            return op._outputs[out_n]
        if allow_operation:
            op = self._nodes_by_name.get(name)
            if op is None:
                raise KeyError(f"The name '{name}' refers to an Operation not in the graph.")
            return op
        if name in self._nodes_by_name:
            raise ValueError(
                f"The name '{name}' refers to an Operation, not a {kinds}. "
                'Tensor names must be of the form "<op_name>:<output_index>".'
            )
        raise ValueError(
            f"The name '{name}' looks like an (invalid) Operation name, not a {kinds}. "
            'Tensor names must be of the form "<op_name>:<output_index>".'
        )

    # --- serialization -----------------------------------------------------------------------
    def as_graph_def(self, from_version: int | None = None, add_shapes: bool = False) -> graph_pb2.GraphDef:
        """A GraphDef of this graph (ops in creation order), importable by TensorFlow."""
        ops = [op for op in self._nodes_by_name.values() if from_version is None or op._id > from_version]
        # Assembled from each op's cached NodeDef bytes (field 1 of GraphDef), parsed once in C.
        parts = []
        for op in ops:
            nd = op._node_def_bytes()
            parts.append(b"\n" + _varint(len(nd)) + nd)
        graph_def = graph_pb2.GraphDef.FromString(b"".join(parts))
        graph_def.versions.CopyFrom(self._graph_def_versions)
        if add_shapes:
            for op, nd in zip(ops, graph_def.node, strict=True):
                attrs_lib.fill(nd.attr["_output_shapes"], [t._shape for t in op._outputs], "list(shape)")
        return graph_def

    # --- collections ----------------------------------------------------------------------------
    def add_to_collection(self, name: Any, value: Any) -> None:
        self._check_not_finalized()
        self._collections.setdefault(name, []).append(value)

    def add_to_collections(self, names: Any, value: Any) -> None:
        names = (names,) if isinstance(names, str) else set(names)
        if names:
            self._check_not_finalized()
        collections = self._collections
        for name in names:  # add_to_collection, inline: every Variable is added to one or two
            coll = collections.get(name)
            if coll is None:
                collections[name] = [value]
            else:
                coll.append(value)

    def get_collection_ref(self, name: Any) -> list:
        """The collection's own list (mutations change the collection)."""
        coll = self._collections.get(name)
        if coll is None:
            coll = self._collections[name] = []
        return coll

    def get_collection(self, name: Any, scope: str | None = None) -> list:
        """A copy of the collection; with ``scope``, only items whose ``name`` matches it (re.match)."""
        coll = self._collections.get(name)
        if coll is None:
            return []
        if scope is None:
            return list(coll)
        regex = re.compile(scope)
        out = []
        for item in coll:
            item_name = getattr(item, "name", None)
            if isinstance(item_name, str) and regex.match(item_name):
                out.append(item)
        return out

    def get_all_collection_keys(self) -> list[str]:
        return [k for k in self._collections if isinstance(k, str)]

    @property
    def collections(self) -> list[str]:
        return list(self._collections)

    def clear_collection(self, name: Any) -> None:
        self._check_not_finalized()
        self._collections.pop(name, None)

    # --- for saverkit's own layers ------------------------------------------------------------------
    def layer_cache(self, owner: str) -> dict:
        """The dict this graph keeps for ``owner``, one of saverkit's own layers (e.g. ``"checkpoint"``), to
        hold what that layer builds once per graph and reuses (a checkpoint's save and restore ops): it
        lives and dies with the graph, and holds nothing else. Not meant for user code."""
        cache = self._layer_caches.get(owner)
        if cache is None:
            cache = self._layer_caches[owner] = {}
        return cache

    # --- misc -------------------------------------------------------------------------------------
    @property
    def building_function(self) -> bool:
        return False

    def is_feedable(self, tensor: Tensor) -> bool:
        return True

    def is_fetchable(self, tensor_or_op: Any) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<saverkit.Graph with {len(self._nodes_by_name)} ops at {id(self):#x}>"


class _DefaultGraphStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[Graph] = []


_default_graph_stack = _DefaultGraphStack()
_global_default_graph: Graph | None = None
_global_lock = threading.Lock()


def get_default_graph() -> Graph:
    """The innermost ``Graph.as_default()`` graph of this thread, else the global default graph."""
    stack = _default_graph_stack.stack
    if stack:
        return stack[-1]
    global _global_default_graph
    if _global_default_graph is None:
        with _global_lock:
            if _global_default_graph is None:
                _global_default_graph = Graph()
    return _global_default_graph


def reset_default_graph() -> None:
    """Replace the global default graph by a new, empty one."""
    if _default_graph_stack.stack:
        raise AssertionError(
            "Do not use reset_default_graph() to clear nested graphs. If you need a "
            "cleared graph, exit the nesting and create a new graph."
        )
    global _global_default_graph
    _global_default_graph = None


def _get_graph_from_inputs(values: Any) -> Graph:
    """The graph the given tensors/ops/variables live in (they must agree), else the default graph."""
    graph = None
    for v in values or ():
        kind = type(v)
        if kind is Operation:  # the common cases first: group() passes thousands of ops
            g = v._graph
        elif kind is Tensor:
            g = v._op._graph
        else:
            g = None
        if g is not None:
            if graph is None:
                graph = g
            elif g is not graph:
                raise ValueError(f"{v!r} must be from the same graph as {values[0]!r}.")
            continue
        el = v if isinstance(v, (Tensor, Operation)) else getattr(v, "_as_graph_element", lambda: None)()
        if isinstance(el, (Tensor, Operation)):
            g = el.graph
            if graph is None:
                graph = g
            elif g is not graph:
                raise ValueError(f"{v!r} must be from the same graph as {values[0]!r}.")
    return graph or get_default_graph()


_VARIABLE_OP_INFOS: list[Any] = []


def _variable_op_infos() -> list[Any]:
    """The registry entries of a variable's op types (see Graph._create_variable_ops), looked up once."""
    _VARIABLE_OP_INFOS.extend(op_registry.get(t) for t in ("Const", "VariableV2", "Assign", "Identity"))
    return _VARIABLE_OP_INFOS


def _outputs(types: Sequence[Any], shapes: Sequence[TensorShape] | None) -> tuple[Any, Any]:
    """The (dtype, shape) arguments of Graph._new_op for outputs of ``types`` with ``shapes`` (None:
    unknown): the one output's, or tuples for any other count."""
    if len(types) == 1:
        return types[0], _UNKNOWN_SHAPE if shapes is None else shapes[0]
    return tuple(types), (_UNKNOWN_SHAPE,) * len(types) if shapes is None else tuple(shapes)
