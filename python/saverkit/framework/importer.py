"""``import_graph_def``: add the nodes of a GraphDef (ours or TensorFlow's) to the default graph.

Known op types are checked against their OpDef (inputs, attrs, defaults filled
in) and become runnable operations. Unknown op types are kept as opaque nodes:
they export unchanged and only fail if a Session tries to run them. Const values
stay encoded until they run (``tensor_util.SerializedTensor``): a GraphDef may
declare constants far bigger than the bytes it holds.
"""

from __future__ import annotations

import heapq
from typing import Any

from saverkit import dtypes
from saverkit.framework import attrs as attrs_lib
from saverkit.framework import op_registry, ops, tensor_util
from saverkit.framework.tensor_shape import TensorShape
from saverkit.protobuf import graph_pb2


def _parse_input(s: str) -> tuple[str, int, bool]:
    """NodeDef input string -> (node name, output index, is_control)."""
    if ":" not in s and s[:1] != "^":
        return s, 0, False
    if s.startswith("^"):
        return s[1:], -1, True
    name, sep, idx = s.rpartition(":")
    if sep and idx.isdigit():
        return name, int(idx), False
    return s, 0, False


def import_graph_def(
    graph_def: Any,
    input_map: dict | None = None,
    return_elements: list | None = None,
    name: str | None = "import",
    op_dict: Any = None,
    producer_op_list: Any = None,
) -> list | None:
    """Import ``graph_def`` into the default graph, under the name scope ``name`` (None: "import";
    "": no prefix). ``input_map`` maps tensor names of the GraphDef ("x:0", "x", or "^x" for control
    inputs) to tensors/ops of this graph; ``return_elements`` names tensors/ops to return."""
    return _import(graph_def, input_map, return_elements, name, None)


def _import(
    graph_def: Any, input_map: dict | None, return_elements: list | None, name: str | None, source: str | None
) -> list | None:
    """``import_graph_def``; ``source``: the file the GraphDef was read from, named in Const errors."""
    with ops._gc_paused():  # a bulk operation: tens of thousands of nodes, each a few objects
        return _import_graph_def(graph_def, input_map, return_elements, name, source)


def _import_graph_def(
    graph_def: Any, input_map: dict | None, return_elements: list | None, name: str | None, source: str | None
) -> list | None:
    if isinstance(graph_def, bytes):
        graph_def = graph_pb2.GraphDef.FromString(graph_def)
    elif not isinstance(graph_def, graph_pb2.GraphDef):
        try:  # e.g. TensorFlow's own GraphDef message: same wire format
            graph_def = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())
        except AttributeError:
            raise TypeError(f"graph_def must be a GraphDef proto, got {type(graph_def).__name__}") from None
    g = ops.get_default_graph()
    input_map = _normalize_input_map(input_map or {}, g)
    if return_elements is not None and not all(isinstance(x, str) for x in return_elements):
        raise TypeError("return_elements must be a list of strings.")
    nodes = {}
    # Each node's (name, op, [(input string, source, index, is_control)]), read from the proto once:
    # every access to a proto field builds a new Python object.
    parsed = []
    in_order = True
    for node in graph_def.node:
        node_name = node.name
        if node_name in nodes:
            raise ValueError(f"Duplicate node name in graph_def: '{node_name}'")
        node_inputs = [
            (s, s, 0, False) if ":" not in s and s[:1] != "^" else (s, *_parse_input(s))  # common case inline
            for s in node.input
        ]
        if in_order:  # still only reading earlier nodes (checked before adding this one: a self-loop is not)
            for _, src, _, _ in node_inputs:
                if src not in nodes:
                    in_order = False
                    break
        nodes[node_name] = node
        parsed.append((node, node_name, node.op, node_inputs))
    if not in_order or input_map:  # the validating, reordering path (also for inputs mapped away)
        by_name = {entry[1]: entry for entry in parsed}
        order = [by_name[node.name] for node in _toposort(graph_def, nodes, input_map)]
    else:
        order = parsed
    n_outputs: dict[str, int] = {}
    consumers: dict = {}
    infos = {op_type: op_registry.get(op_type) for op_type in {op_type for _, _, op_type, _ in parsed}}
    if any(info is None for info in infos.values()):  # opaque nodes need these
        n_outputs = _output_counts(graph_def)
        consumers = _consumer_index(graph_def)
    used_keys: set[str] = set()
    created: dict[str, ops.Operation] = {}
    with g.as_default(), g.name_scope("import" if name is None else name) as prefix:
        for node, node_name, op_type, node_inputs in order:
            inputs: list[ops.Tensor] = []
            controls: list[ops.Operation] = []
            for s, src, idx, is_control in node_inputs:
                if input_map:
                    key = "^" + src if is_control else f"{src}:{idx}"
                    if key in input_map:
                        used_keys.add(key)
                        mapped = input_map[key]
                        (controls if is_control else inputs).append(mapped)
                        continue
                op = created[src]
                if is_control:
                    controls.append(op)
                elif idx >= len(op._outputs):
                    raise ValueError(
                        f"Node '{node_name}': input '{s}' names output {idx} of '{src}', which has "
                        f"{len(op._outputs)} outputs."
                    )
                else:
                    inputs.append(op._outputs[idx])
            created[node_name] = _create(
                g, node, node_name, op_type, infos[op_type], inputs, controls, prefix, n_outputs, consumers,
                source,
            )
    unused = sorted(set(input_map) - used_keys)
    if unused:
        raise ValueError(f"Attempted to map inputs that were not found in graph_def: [{', '.join(unused)}]")
    if return_elements is None:
        return None
    out = []
    for el in return_elements:
        src, idx, _ = _parse_input(el)
        if src not in created:
            raise ValueError(f"Requested return_element '{el}' not found in graph_def.")
        op = created[src]
        out.append(op._outputs[idx] if ":" in el else op)
    return out


def _normalize_input_map(input_map: dict, g: ops.Graph) -> dict[str, Any]:
    out = {}
    for key, value in input_map.items():
        if not isinstance(key, str):
            raise TypeError(f"input_map keys must be strings, got {key!r}")
        if key.startswith("^"):
            el = g.as_graph_element(value)
            out[key] = el.op if isinstance(el, ops.Tensor) else el
        else:
            src, idx, _ = _parse_input(key)
            out[f"{src}:{idx}"] = ops.convert_to_tensor(value)
    return out


def _toposort(graph_def: graph_pb2.GraphDef, nodes: dict, input_map: dict) -> list:
    """Nodes in an order where every node comes after the nodes it reads (GraphDefs may be unordered)."""
    seen: set[str] = set()
    for node in graph_def.node:  # the common case: already in order (as TF and saverkit write them)
        for s in node.input:
            src = _parse_input(s)[0]
            if src not in seen and src in nodes:
                break
        else:
            seen.add(node.name)
            continue
        break
    else:
        for node in graph_def.node:
            for s in node.input:
                src, idx, is_control = _parse_input(s)
                if src not in nodes and ("^" + src if is_control else f"{src}:{idx}") not in input_map:
                    raise ValueError(f"Node '{node.name}': input '{s}' is not in the graph_def.")
        return list(graph_def.node)
    pending: dict[str, int] = {}
    users: dict[str, list[str]] = {}
    for node in graph_def.node:
        deps = set()
        for s in node.input:
            src, idx, is_control = _parse_input(s)
            key = "^" + src if is_control else f"{src}:{idx}"
            if key in input_map:
                continue
            if src not in nodes:
                raise ValueError(f"Node '{node.name}': input '{s}' is not in the graph_def.")
            deps.add(src)
        pending[node.name] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(node.name)
    # Kahn's algorithm, always taking the earliest ready node: a sorted GraphDef keeps its order.
    position = {node.name: i for i, node in enumerate(graph_def.node)}
    ready = [position[n] for n, k in pending.items() if k == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = graph_def.node[heapq.heappop(ready)]
        order.append(node)
        for u in users.get(node.name, ()):
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, position[u])
    if len(order) != len(nodes):
        cyclic = sorted(n for n, k in pending.items() if k)[:5]
        raise ValueError(f"graph_def has a cycle (control flow loops are not supported): {cyclic}")
    return order


def _output_counts(graph_def: graph_pb2.GraphDef) -> dict[str, int]:
    """For nodes of unknown op type: how many outputs they must have (from consumers / _output_shapes)."""
    counts: dict[str, int] = {}
    for node in graph_def.node:
        if "_output_shapes" in node.attr:
            counts[node.name] = max(counts.get(node.name, 0), len(node.attr["_output_shapes"].list.shape))
        for s in node.input:
            src, idx, is_control = _parse_input(s)
            if not is_control:
                counts[src] = max(counts.get(src, 0), idx + 1)
    return counts


def _create(
    g: ops.Graph,
    node: Any,
    node_name: str,
    op_type: str,
    info: op_registry.OpInfo | None,
    inputs: list[ops.Tensor],
    controls: list[ops.Operation],
    prefix: str,
    n_outputs: dict[str, int],
    consumers: dict,
    source: str | None,
) -> ops.Operation:
    # Under a prefix names cannot clash; without one, clashing names get "_1"... as TF does.
    name = prefix + node_name + "/" if prefix else g.unique_name(node_name) + "/"
    attrs: dict[str, Any] = {}
    output_shapes = None
    node_attrs = node.attr
    if info is None:
        for key, value in node_attrs.items():
            attrs[key] = _prefixed_class(value, prefix) if key == "_class" else _copy(value)
        types = [_guess_output_type(node, i, consumers) for i in range(n_outputs.get(node_name, 0))]
        op = g._create_op(
            op_type, inputs, attrs, types, name, None, control_inputs=controls, compute_shapes=False
        )
        output_shapes = attrs.get("_output_shapes")
    else:
        attr_types = info.attr_types
        for key in node_attrs:  # not .items(): the Mapping mixin's items() is slow on a proto map
            value = node_attrs[key]
            t = attr_types.get(key)
            if t is not None:
                if t == "tensor":
                    v = _const_value(value, node_name, source) if op_type == "Const" else _tensor(value)
                else:
                    # A set (non-zero) "type" is the oneof's field: its DType, without serializing.
                    v = _BY_ENUM.get(value.type) if t == "type" else None
                    if v is None:
                        v = _DECODED.get((t, value.SerializeToString()))  # see _decoded
                        if v is None or type(v) is list:
                            v = _decoded(value, t)
                attrs[key] = v
            elif key == "_class":
                attrs[key] = _prefixed_groups(value, prefix)
            elif key[:1] == "_":
                attrs[key] = _copy(value)
                if key == "_output_shapes":
                    output_shapes = attrs[key]
            else:
                raise ValueError(
                    f"NodeDef '{node_name}' mentions attr '{key}' not in Op<name={op_type}>; "
                    "the GraphDef was produced by a newer TensorFlow?"
                )
        if attr_types.keys() - attrs.keys():  # GraphDefs usually spell out every attr
            for key, default in info.defaults.items():
                if key not in attrs:
                    attrs[key] = list(default) if isinstance(default, list) else default
            if attr_types.keys() - attrs.keys():
                missing = [k for k in attr_types if k not in attrs]
                raise ValueError(f"NodeDef '{node_name}' ({op_type}) is missing attrs {missing}")
        for key in info.constrained:
            info.check_attr(key, attrs[key])
        expected, output_types = info._types(attrs)
        if len(expected) != len(inputs):
            raise ValueError(
                f"NodeDef '{node_name}' ({op_type}) has {len(inputs)} inputs, its OpDef takes "
                f"{len(expected)}."
            )
        for i, (t, want) in enumerate(zip(inputs, expected, strict=True)):
            # DTypes are singletons: identity is equality.
            have = t._dtype
            if have is not want and (
                have.base_dtype is not want.base_dtype or (want.is_ref_dtype and not have.is_ref_dtype)
            ):
                raise ValueError(
                    f"Input {i} of node '{node_name}' ({op_type}) was passed {t.dtype.name} from "
                    f"{t.name}, incompatible with expected {want.name}."
                )
        op = g._create_op(op_type, inputs, attrs, output_types, name, info, control_inputs=controls)
    device = node.device
    if device:
        op._device = device  # kept as written; ops without one took the importing graph's device scope
    if output_shapes is not None:
        for t, proto in zip(op._outputs, output_shapes.list.shape, strict=False):
            s = TensorShape(proto)
            if t._shape.is_compatible_with(s):
                t._shape = t._shape.merge_with(s)
    return op


def _const_value(value: attrs_lib.AttrValue, node_name: str, source: str | None
                 ) -> tensor_util.SerializedTensor:
    """A Const's ``value``, kept encoded: only its shape is read now (shape inference needs it), checked
    as TensorFlow checks it on import. Dtype and size are checked when it is decoded."""
    kind = value.WhichOneof("value")
    where = f"NodeDef '{node_name}' (Const)" + (f" in {source}" if source else "")
    if kind != "tensor":
        raise ValueError(f"{where}: attr 'value' holds {kind or 'nothing'}, not a tensor")
    tensor = value.tensor
    shape_bytes = tensor.tensor_shape.SerializeToString()
    shape = _SHAPES.get(shape_bytes)
    if shape is None:
        shape = tuple([d.size for d in tensor.tensor_shape.dim])
        problem = tensor_util.check_const_shape(shape)
        if problem is not None:
            raise ValueError(f"{where}: the shape of its value {problem}")
        if len(_SHAPES) < 10_000:
            _SHAPES[shape_bytes] = shape
    return tensor_util.SerializedTensor(value.SerializeToString(), tensor.dtype, shape, source)


def _tensor(value: attrs_lib.AttrValue) -> Any:
    """A tensor attr of an op other than Const (none is registered today), decoded now."""
    v = attrs_lib.to_python(value, "tensor")
    if v is None or type(v) is list:
        raise ValueError(f"Expected a tensor attr, got {value}")
    return v


_SHAPES: dict[bytes, tuple[int, ...]] = {}  # serialized TensorShapeProto -> dims (Consts repeat shapes)
_DECODED: dict[tuple[str, bytes], Any] = {}
_BY_ENUM = {e: dt for e, dt in dtypes._BY_ENUM.items() if e}  # DataType number -> DType (0 is unset)
_IMMUTABLE_ATTR_TYPES = frozenset(
    t for inner in ("type", "shape", "int", "float", "bool", "string") for t in (inner, f"list({inner})")
)


def _decoded(value: attrs_lib.AttrValue, attr_type: str) -> Any:
    """``attrs_lib.to_python(value, attr_type)``, remembered by the AttrValue's bytes: an imported graph
    holds the same few dtypes, shapes and flags thousands of times."""
    if attr_type not in _IMMUTABLE_ATTR_TYPES:
        return attrs_lib.to_python(value, attr_type)
    key = (attr_type, value.SerializeToString())
    v = _DECODED.get(key)
    if v is None:
        v = attrs_lib.to_python(value, attr_type)
        if len(_DECODED) < 10_000:
            _DECODED[key] = v
    return list(v) if type(v) is list else v  # lists are the op's own, the rest immutable


def _copy(value: attrs_lib.AttrValue) -> attrs_lib.AttrValue:
    out = attrs_lib.AttrValue()
    out.CopyFrom(value)
    return out


def _prefixed_groups(value: attrs_lib.AttrValue, prefix: str) -> tuple[bytes, ...]:
    """The colocation groups (a tuple, as ops keep them), under the import prefix."""
    items = value.list.s
    if not prefix:
        return tuple(items)
    p = _LOC_PREFIXES.get(prefix)
    if p is None:
        p = b"loc:@" + prefix.encode()
        if len(_LOC_PREFIXES) < 100:
            _LOC_PREFIXES[prefix] = p
    return tuple([p + s[5:] if s[:5] == b"loc:@" else s for s in items])


_LOC_PREFIXES: dict[str, bytes] = {}


def _prefixed_class(value: attrs_lib.AttrValue, prefix: str) -> attrs_lib.AttrValue:
    """``_class: loc:@x`` names a node of the imported graph: it moves under the import scope too."""
    out = _copy(value)
    if prefix:
        out.list.s[:] = [
            b"loc:@" + prefix.encode() + s[5:] if s.startswith(b"loc:@") else s for s in out.list.s
        ]
    return out


def _consumer_index(graph_def: graph_pb2.GraphDef) -> dict[str, list[tuple[Any, int, int]]]:
    """node name -> [(consumer NodeDef, input position, output index read)]."""
    index: dict[str, list[tuple[Any, int, int]]] = {}
    for node in graph_def.node:
        for pos, s in enumerate(node.input):
            src, idx, is_control = _parse_input(s)
            if not is_control:
                index.setdefault(src, []).append((node, pos, idx))
    return index


def _guess_output_type(node: Any, index: int, consumers: dict) -> dtypes.DType:
    """The dtype of output ``index`` of an opaque node: from a known consumer's OpDef, else its own attrs."""
    for other, pos, idx in consumers.get(node.name, ()):
        info = op_registry.get(other.op)
        if info is None or idx != index:
            continue
        try:
            attrs = {
                k: attrs_lib.to_python(v, info.attr_types[k])
                for k, v in other.attr.items()
                if k in info.attr_types
            }
            return info.input_types({**info.defaults, **attrs})[pos].base_dtype
        except (KeyError, IndexError, TypeError):
            continue
    for key in ("dtype", "T", "out_type", "Tout"):
        if key in node.attr and node.attr[key].WhichOneof("value") == "type":
            return dtypes.as_dtype(node.attr[key].type)
    return dtypes.variant  # nothing says: an opaque value
