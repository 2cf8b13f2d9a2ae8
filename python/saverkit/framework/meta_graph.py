"""MetaGraphDef export and import, as TensorFlow's ``tensorflow/python/framework/meta_graph.py``.

A ``.meta`` file is a serialized ``MetaGraphDef``: the graph (``GraphDef``), the ``SaverDef`` naming
the save and restore nodes, the graph's collections (``CollectionDef``) and a ``MetaInfoDef`` whose
``stripped_op_list`` holds the ``OpDef`` of every op type the graph uses. TensorFlow's
``tf.compat.v1.train.import_meta_graph`` reads the files written here, and
:func:`import_scoped_meta_graph` reads TensorFlow's.

Collections are encoded as TensorFlow encodes them: a collection with registered proto functions
(variables, savers) as ``bytes_list`` of serialized protos; graph elements (ops, tensors, variables
without proto functions) as ``node_list`` of names; Python ``str``/``bytes`` as ``bytes_list``, ``int``
as ``int64_list`` and ``float`` as ``float_list``. Items that cannot be encoded are skipped with a
warning, like TensorFlow.

Unlike ``as_graph_def(add_shapes=True)`` in TensorFlow's Saver, no ``_output_shapes`` attributes are
written: TensorFlow recomputes them on import, and they would only make the file bigger.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from google.protobuf import text_format

from saverkit import errors, tempfiles
from saverkit.protobuf import graph_pb2, meta_graph_pb2, op_def_pb2, saver_pb2

if TYPE_CHECKING:
    from saverkit.framework.graph import Graph

_logger = logging.getLogger(__name__)

# Prefix given to the names of inputs that lie outside ``export_scope``.
_UNBOUND_INPUT_PREFIX = "$unbound_inputs_"

SAVE_AND_RESTORE_OPS = [
    "SaveV2",
    "Save",
    "SaveSlice",
    "LegacySave",
    "LegacySaveSlice",
    "RestoreV2",
    "Restore",
    "RestoreSlice",
    "LegacyRestore",
    "LegacyRestoreSlice",
]


def _producer_version() -> str:
    """Stored in MetaInfoDef.tensorflow_git_version so a reader can tell who wrote the file."""
    import saverkit

    return f"saverkit-{saverkit.__version__}"


# --- names
def strip_name_scope(name: str, export_scope: str | None) -> str:
    """``name`` without a leading ``export_scope/`` (also in ``^name`` and ``loc:@name`` forms), as
    TensorFlow's ``ops.strip_name_scope``: ``export_scope///w`` gives ``w`` too. The one copy of this rule;
    ``framework.ops`` re-exports it."""
    if not export_scope:
        return name
    export_scope = export_scope[:-1] if export_scope.endswith("/") else export_scope
    return re.sub(r"([\^]|loc:@|^)" + re.escape(export_scope) + r"[\/]+(.*)", r"\1\2", name, count=1)


def prepend_name_scope(name: str, import_scope: str | None) -> str:
    """``import_scope/name`` (also in ``^name`` and ``loc:@name`` forms), as TensorFlow's
    ``ops.prepend_name_scope``."""
    if not import_scope:
        return name
    import_scope = import_scope[:-1] if import_scope.endswith("/") else import_scope
    m = cast("re.Match[str]", re.match(r"([\^]|loc:@|)(.*)", name, re.S))  # always matches
    return f"{m.group(1)}{import_scope}/{m.group(2)}"


def _op_name(tensor_name: str) -> str:
    if not tensor_name:
        raise ValueError("Tensor name cannot be empty or None.")
    tensor_name = tensor_name.lstrip("^")
    return tensor_name.split(":", 1)[0]


def _get_scope(node_name: str) -> str:
    if not node_name:
        raise ValueError("Node name cannot be empty or None.")
    node_name = node_name.lstrip("^")
    return node_name.rsplit("/", 1)[0] if "/" in node_name else ""


# --- op lists
def ops_used_by_graph_def(graph_def: graph_pb2.GraphDef) -> list[str]:
    """The op types a graph uses (functions in the library are followed, not listed)."""
    functions = {f.signature.name: f for f in graph_def.library.function}
    used: set[str] = set()
    pending = []

    def mark(op: str) -> None:
        if op not in used and op in functions:
            pending.append(functions[op])
        used.add(op)

    for node in graph_def.node:
        mark(node.op)
    while pending:
        for node in pending.pop().node_def:
            mark(node.op)
    return [op for op in used if op not in functions]


def stripped_op_list_for_graph(
    graph_def: graph_pb2.GraphDef, used_ops: Iterable[str] | None = None
) -> op_def_pb2.OpList:
    """``OpList`` of exactly the op types ``graph_def`` uses (``used_ops`` if the caller knows them),
    sorted by name, from the op registry."""
    from saverkit.framework import op_registry

    used = list(used_ops) if used_ops is not None else ops_used_by_graph_def(graph_def)
    internal = ("_Arg", "_Retval", "_ListToArray", "_ArrayToList")
    for op in used:
        if op_registry.get(op) is None and op not in internal:
            raise ValueError(f"Op {op} is used by the graph, but is not registered")
    return op_registry.op_list(used)


# --- collections
def _get_kind_name(item: Any) -> str:
    if isinstance(item, (str, bytes)):
        return "bytes_list"
    if isinstance(item, bool):  # bool is an int subclass; TF stores it as int64 too
        return "int64_list"
    if isinstance(item, int):
        return "int64_list"
    if isinstance(item, float):
        return "float_list"
    return "node_list"


def _should_include_node(node_or_name: Any, export_scope: str | None, exclude_nodes: Iterable | None) -> bool:
    if isinstance(node_or_name, str):
        name = node_or_name
    else:
        try:
            name = node_or_name.name
        except AttributeError:
            return True  # not a graph element: keep it, the encoder decides
        if not isinstance(name, str):
            return True
    if exclude_nodes and name in exclude_nodes:
        return False
    return name.startswith(_UNBOUND_INPUT_PREFIX) or not export_scope or name.startswith(export_scope)


def add_collection_def(
    meta_graph_def: meta_graph_pb2.MetaGraphDef,
    key: str,
    graph: Any = None,
    export_scope: str | None = None,
    exclude_nodes: Iterable | None = None,
    override_contents: list | None = None,
    _proto_cache: dict | None = None,
) -> None:
    """Adds collection ``key`` of ``graph`` to ``meta_graph_def.collection_def`` (TF's encoding).

    ``_proto_cache`` ({(id(item), export_scope): serialized proto}) lets one export serialize an item
    once, although every variable sits in two collections (variables, trainable_variables)."""
    from saverkit.framework import ops

    if not isinstance(key, (str, bytes)):
        _logger.warning(
            f"Only collections with string type keys will be serialized. This key has {type(key)}"
        )
        return
    graph = graph or ops.get_default_graph()
    items = override_contents if override_contents else graph.get_collection(key)
    if export_scope or exclude_nodes:
        items = [x for x in items if _should_include_node(x, export_scope, exclude_nodes)]
    if not items:
        return
    col_def = meta_graph_def.collection_def[key]
    try:
        to_proto = ops.get_to_proto_function(key)
        if to_proto:
            proto_type = ops.get_collection_proto_type(key)
            cache = {} if _proto_cache is None else _proto_cache
            out = []
            for x in items:
                ck = (id(x), to_proto, export_scope)
                data = cache.get(ck)
                if data is None:
                    proto = to_proto(x, export_scope=export_scope)
                    if not proto:
                        continue
                    if not isinstance(proto, proto_type):
                        raise TypeError(f"to_proto for {key!r} returned {type(proto).__name__}")
                    data = cache[ck] = proto.SerializeToString(deterministic=True)
                out.append(data)
            col_def.bytes_list.value.extend(out)
            return
        kind = _get_kind_name(items[0])
        if kind == "node_list":
            for x in items:
                if not export_scope or x.name.startswith(export_scope):
                    col_def.node_list.value.append(strip_name_scope(x.name, export_scope))
        elif kind == "bytes_list":
            col_def.bytes_list.value.extend([x.encode() if isinstance(x, str) else x for x in items])
        elif kind == "int64_list":
            col_def.int64_list.value.extend([int(x) for x in items])
        else:
            col_def.float_list.value.extend(items)
    except Exception as e:  # noqa: BLE001 - TF skips collections it cannot encode, with a warning
        _logger.warning(
            f"Error encountered when serializing {key}.\nType is unsupported, or the types of the "
            f"items don't match field type in CollectionDef.\n{e}"
        )
        del meta_graph_def.collection_def[key]


# --- graph_def rewriting
def _find_extraneous_saver_nodes(
    graph_def: graph_pb2.GraphDef, saver_def: saver_pb2.SaverDef | None
) -> set[str]:
    """Names of the nodes in the name scopes of savers other than ``saver_def``'s (a saver owns its
    scope)."""
    names = {n.name: n.op for n in graph_def.node}
    keep = set()
    if saver_def is not None:
        keep = {
            _get_scope(_op_name(saver_def.restore_op_name)) + "/",
            _get_scope(_op_name(saver_def.save_tensor_name)) + "/",
        }
    saver_nodes = {name for name, op in names.items() if op in SAVE_AND_RESTORE_OPS}
    scopes = {_get_scope(x) for x in saver_nodes} - saver_nodes
    extraneous = {s + "/" for s in scopes} - keep
    return {name for name in names if any(name.startswith(s) for s in extraneous)}


def _node_def(
    from_node_def: Any, export_scope: str | None, unbound_inputs: list, clear_devices: bool = False
) -> Any:
    node_def = type(from_node_def)()
    node_def.CopyFrom(from_node_def)
    if export_scope:
        for i, v in enumerate(node_def.input):
            if not v.lstrip("^").startswith(export_scope):
                node_def.input[i] = ("^" if v.startswith("^") else "") + _UNBOUND_INPUT_PREFIX + v.lstrip("^")
                unbound_inputs.append(node_def.input[i])
            else:
                node_def.input[i] = strip_name_scope(v, export_scope)
        node_def.name = strip_name_scope(from_node_def.name, export_scope)
        if "_class" in node_def.attr:
            kept = [
                strip_name_scope(s.decode(), export_scope).encode()
                for s in node_def.attr["_class"].list.s
                if s.decode().split("@", 1)[-1].startswith(export_scope)
            ]
            del node_def.attr["_class"].list.s[:]
            node_def.attr["_class"].list.s.extend(kept)
    if clear_devices:
        node_def.device = ""
    return node_def


def _is_default_attr_value(op_def: Any, attr_name: str, attr_value: Any) -> bool:
    for attr_def in op_def.attr:
        if attr_def.name == attr_name:
            return attr_def.HasField("default_value") and _attr_equal(attr_value, attr_def.default_value)
    return False


def _attr_equal(a: Any, b: Any) -> bool:
    if a.WhichOneof("value") != b.WhichOneof("value"):
        # An empty list default ("list: {}") equals a list attr with no values.
        return (
            a.WhichOneof("value") in (None, "list")
            and b.WhichOneof("value") in (None, "list")
            and a.list.SerializeToString(deterministic=True) == b.list.SerializeToString(deterministic=True)
        )
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def _strip_graph_default_valued_attrs(meta_graph_def: meta_graph_pb2.MetaGraphDef) -> None:
    from saverkit.framework import op_registry

    functions = {f.signature.name for f in meta_graph_def.graph_def.library.function}

    def strip(node_def: Any) -> None:
        op_def = None if node_def.op in functions else op_registry.get_op_def(node_def.op)
        if op_def is None:
            return
        for name in [k for k, v in node_def.attr.items() if _is_default_attr_value(op_def, k, v)]:
            del node_def.attr[name]

    for node_def in meta_graph_def.graph_def.node:
        strip(node_def)
    for function_def in meta_graph_def.graph_def.library.function:
        for node_def in function_def.node_def:
            strip(node_def)
    meta_graph_def.meta_info_def.stripped_default_attrs = True


# --- building
def create_meta_graph_def(
    meta_info_def: meta_graph_pb2.MetaGraphDef.MetaInfoDef | None = None,
    graph_def: graph_pb2.GraphDef | None = None,
    saver_def: saver_pb2.SaverDef | None = None,
    collection_list: Iterable[str] | None = None,
    graph: Graph | None = None,
    export_scope: str | None = None,
    exclude_nodes: Any = None,
    clear_extraneous_savers: bool = False,
    strip_default_attrs: bool = False,
) -> meta_graph_pb2.MetaGraphDef:
    """Assembles a ``MetaGraphDef`` from a graph (default graph), a ``SaverDef`` and the graph's
    collections."""
    from saverkit.framework import ops

    if graph is not None and not isinstance(graph, ops.Graph):
        raise TypeError(f"graph must be of type Graph, not {type(graph)}")
    if meta_info_def is not None and not isinstance(meta_info_def, meta_graph_pb2.MetaGraphDef.MetaInfoDef):
        raise TypeError(f"meta_info_def must be of type MetaInfoDef, not {type(meta_info_def)}")
    if graph_def is not None and not isinstance(graph_def, graph_pb2.GraphDef):
        raise TypeError(f"graph_def must be of type GraphDef, not {type(graph_def)}")
    if saver_def is not None and not isinstance(saver_def, saver_pb2.SaverDef):
        raise TypeError(f"saver_def must be of type SaverDef, not {type(saver_def)}")
    graph = graph or ops.get_default_graph()

    meta_graph_def = meta_graph_pb2.MetaGraphDef()
    if meta_info_def is not None:
        meta_graph_def.meta_info_def.MergeFrom(meta_info_def)
    # TensorFlow parses tensorflow_version as a PEP 440 version (>= 1.9 means VariableDef.trainable is set);
    # empty means the same to it. The writer is named in the git version field.
    meta_graph_def.meta_info_def.tensorflow_version = ""
    meta_graph_def.meta_info_def.tensorflow_git_version = _producer_version()
    # Plain assignment instead of MergeFrom: the graph's constants are large, and a copy would double them
    # in memory while we build the file.
    used_ops = None
    if graph_def is None:
        graph_def = graph.as_graph_def()
        used_ops = {op.type for op in graph.get_operations()}  # cheaper than walking the proto
    meta_graph_def.graph_def.CopyFrom(graph_def)
    if not meta_graph_def.meta_info_def.stripped_op_list.op:
        meta_graph_def.meta_info_def.stripped_op_list.CopyFrom(
            stripped_op_list_for_graph(meta_graph_def.graph_def, used_ops)
        )
    if strip_default_attrs:
        _strip_graph_default_valued_attrs(meta_graph_def)
    if saver_def:
        meta_graph_def.saver_def.CopyFrom(saver_def)

    keys = collection_list if collection_list is not None else graph.get_all_collection_keys()
    proto_cache: dict = {}  # items are alive for the whole export, so their ids are stable keys
    for key in keys:
        override = None
        if clear_extraneous_savers and key == ops.GraphKeys.SAVERS:
            from_proto = cast(Callable, ops.get_from_proto_function(key))  # registered by saverkit.train
            override = [from_proto(saver_def)] if saver_def else None
            if override is None:
                continue
        add_collection_def(
            meta_graph_def,
            key,
            graph=graph,
            export_scope=export_scope,
            exclude_nodes=exclude_nodes,
            override_contents=override,
            _proto_cache=proto_cache,
        )
    return meta_graph_def


def export_scoped_meta_graph(
    filename: str | os.PathLike | None = None,
    graph_def: graph_pb2.GraphDef | None = None,
    graph: Graph | None = None,
    export_scope: str | None = None,
    as_text: bool = False,
    unbound_inputs_col_name: str | None = "unbound_inputs",
    clear_devices: bool = False,
    saver_def: saver_pb2.SaverDef | None = None,
    clear_extraneous_savers: bool = False,
    strip_default_attrs: bool = False,
    meta_info_def: meta_graph_pb2.MetaGraphDef.MetaInfoDef | None = None,
    collection_list: Iterable[str] | None = None,
    storage_options: dict | None = None,
) -> tuple[meta_graph_pb2.MetaGraphDef, dict[str, Any]]:
    """Returns ``(MetaGraphDef, {name: variable})`` for the graph (or the part under ``export_scope``);
    writes the proto to ``filename`` (atomically; text when ``as_text``; a URL with ``storage_options``,
    see :mod:`saverkit.storage`) if given."""
    from saverkit.framework import ops

    graph = graph or ops.get_default_graph()
    exclude_nodes = None
    unbound_inputs: list[str] = []
    if export_scope or clear_extraneous_savers or clear_devices:
        source = graph_def if graph_def is not None else graph.as_graph_def()
        new_graph_def = graph_pb2.GraphDef()
        new_graph_def.versions.CopyFrom(source.versions)
        new_graph_def.library.CopyFrom(source.library)
        if clear_extraneous_savers:
            exclude_nodes = _find_extraneous_saver_nodes(source, saver_def)
        for node_def in source.node:
            if _should_include_node(node_def.name, export_scope, exclude_nodes):
                new_graph_def.node.append(_node_def(node_def, export_scope, unbound_inputs, clear_devices))
        graph_def = new_graph_def
        if unbound_inputs_col_name:
            graph.clear_collection(unbound_inputs_col_name)
            for k in unbound_inputs:
                graph.add_to_collection(unbound_inputs_col_name, k)

    var_list = {}
    for v in graph.get_collection(ops.GraphKeys.GLOBAL_VARIABLES, scope=export_scope):
        if not (export_scope or exclude_nodes) or _should_include_node(v, export_scope, exclude_nodes):
            var_list[strip_name_scope(v.name, export_scope)] = v

    meta_graph_def = create_meta_graph_def(
        meta_info_def=meta_info_def,
        graph_def=graph_def,
        saver_def=saver_def,
        collection_list=collection_list,
        graph=graph,
        export_scope=export_scope,
        exclude_nodes=exclude_nodes,
        clear_extraneous_savers=clear_extraneous_savers,
        strip_default_attrs=strip_default_attrs,
    )
    if filename:
        write_meta_graph_file(meta_graph_def, filename, as_text=as_text, storage_options=storage_options)
    return meta_graph_def, var_list


def write_meta_graph_file(
    meta_graph_def: meta_graph_pb2.MetaGraphDef,
    filename: str | os.PathLike,
    as_text: bool = False,
    durable: bool = False,
    storage_options: dict | None = None,
) -> str:
    """Writes ``meta_graph_def`` to ``filename`` through a temporary file and a rename, so a reader never sees
    a half-written file. Creates the parent directory like TF's ``write_graph``. A URL ``filename``
    (:mod:`saverkit.storage`) is written as one object (``storage_options``: the store's options)."""
    from saverkit import storage

    if as_text:
        data = text_format.MessageToString(meta_graph_def).encode()
    else:
        data = meta_graph_def.SerializeToString(deterministic=True)
    if storage.is_url(filename):
        storage.Location(os.fsdecode(os.fspath(filename)), storage_options).write_bytes(
            os.fsdecode(os.fspath(filename)), data)
        return os.fsdecode(os.fspath(filename))
    filename = storage.local_path(filename)
    dirname = os.path.dirname(filename) or "."
    os.makedirs(dirname, exist_ok=True)
    tmp = tempfiles.temp_path(filename)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, filename)
        if durable:  # the rename itself must survive a power loss before the state file names it
            dir_fd = os.open(dirname, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # out of space etc.: the OpError class TF's file_io would raise
            raise _os_error(e, f"Failed to write meta graph {filename}") from e
        raise
    return filename


def _os_error(e: OSError, what: str) -> errors.OpError:
    codes: dict[int | None, int] = {
            errno.ENOSPC: errors.RESOURCE_EXHAUSTED, errno.EDQUOT: errors.RESOURCE_EXHAUSTED,
            errno.EFBIG: errors.RESOURCE_EXHAUSTED, errno.EACCES: errors.PERMISSION_DENIED,
            errno.EPERM: errors.PERMISSION_DENIED, errno.EROFS: errors.PERMISSION_DENIED,
            errno.ENOENT: errors.NOT_FOUND}
    code = codes.get(e.errno, errors.UNKNOWN)
    return errors.exception_type_from_error_code(code)(None, None, f"{what}: {e.strerror or e}")


# --- reading and importing
def read_meta_graph_file(filename: str | os.PathLike, storage_options: dict | None = None
                         ) -> meta_graph_pb2.MetaGraphDef:
    """Parses a ``.meta`` file: binary first, then text format (``.pbtxt``). IOError if neither works.
    ``filename`` may be a URL (:mod:`saverkit.storage`)."""
    from saverkit import errors, storage

    if storage.is_url(filename):
        filename = os.fsdecode(os.fspath(filename))
        try:
            content = storage.Location(filename, storage_options).read_bytes(filename)
        except errors.NotFoundError:
            raise OSError(f"File {filename} does not exist.") from None
    else:
        filename = storage.local_path(filename)
        if not os.path.isfile(filename):
            raise OSError(f"File {filename} does not exist.")
        with open(filename, "rb") as f:
            content = f.read()
    _refuse_saved_model(filename, content)
    meta_graph_def = meta_graph_pb2.MetaGraphDef()
    try:
        meta_graph_def.ParseFromString(content)
        return meta_graph_def
    except Exception:  # noqa: BLE001 - not binary; try text below
        meta_graph_def.Clear()
    try:
        text_format.Merge(content.decode("utf-8"), meta_graph_def, allow_unknown_extension=True)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise OSError(f"Cannot parse file {filename}: {e}.") from e
    return meta_graph_def


def _refuse_saved_model(filename: str, content: bytes) -> None:
    """A SavedModel file is not a MetaGraphDef (it holds several, one per tag set): say what the file is and
    how to load it, instead of failing to parse it as one. Recognised by name, or by its first byte: a
    SavedModel starts with field 1 as a varint (0x08), a MetaGraphDef with field 1 as a message (0x0a)."""
    from saverkit.saved_model import reader

    if not (reader.is_saved_model_filename(filename) or content[:1] == b"\x08"):
        return
    try:
        saved_model = reader.parse_file(filename)
    except OSError:
        if reader.is_saved_model_filename(filename):
            raise
        return  # not a SavedModel after all: parse it as a MetaGraphDef below
    if any(reader.is_tf2(m) for m in saved_model.meta_graphs):
        how = ("It was written by TF2's tf.saved_model.save: its signatures run tf.function graphs, which "
               "saverkit cannot run; read its variables with saverkit.train.load_checkpoint(export_dir).")
    else:
        how = ("Load it into a session with saverkit.saved_model.loader.load(sess, tags, export_dir), or "
               "pass import_meta_graph one of its MetaGraphDefs: "
               "saverkit.saved_model.reader.meta_graph_for_tags("
               "saverkit.saved_model.parse_saved_model(export_dir), tags).")
    raise OSError(f"{filename} is a SavedModel, not a MetaGraphDef: {reader.describe(saved_model)}. {how}")


def import_scoped_meta_graph(
    meta_graph_or_file: meta_graph_pb2.MetaGraphDef | str | os.PathLike,
    clear_devices: bool = False,
    graph: Graph | None = None,
    import_scope: str | None = None,
    input_map: dict[str, Any] | None = None,
    unbound_inputs_col_name: str | None = "unbound_inputs",
    restore_collections_predicate: Callable[[str], bool] = lambda key: True,
    *,
    source_file: str | None = None,
) -> dict:
    """Imports the graph and collections of a ``MetaGraphDef`` (or a file) into ``graph`` (default graph).

    Returns ``{name without import scope: variable}`` for the imported global variables. Const values stay
    encoded until they run, so a file declaring absurd constants imports and only their Consts fail, naming
    the node and ``source_file`` (the file the MetaGraphDef was read from; set here when given a path).
    """
    from saverkit.framework import importer, ops

    if isinstance(meta_graph_or_file, meta_graph_pb2.MetaGraphDef):
        meta_graph_def = meta_graph_or_file
    else:
        meta_graph_def = read_meta_graph_file(meta_graph_or_file)
        source_file = os.fspath(meta_graph_or_file)

    if unbound_inputs_col_name and unbound_inputs_col_name in meta_graph_def.collection_def:
        col_def = meta_graph_def.collection_def[unbound_inputs_col_name]
        kind = col_def.WhichOneof("kind")
        values = (
            [v.decode() if isinstance(v, bytes) else v for v in getattr(col_def, kind).value] if kind else []
        )
        if values and (not input_map or sorted(values) != sorted(input_map)):
            missing = [v for v in values if not input_map or v not in input_map]
            raise ValueError(
                f"Graph contains unbound inputs: {','.join(missing)}. "
                "Must provide these inputs through input_map."
            )

    graph = graph or ops.get_default_graph()
    with graph.as_default():
        input_graph_def = meta_graph_def.graph_def
        if clear_devices:
            input_graph_def = graph_pb2.GraphDef()
            input_graph_def.CopyFrom(meta_graph_def.graph_def)
            for node in input_graph_def.node:
                node.device = ""
        scope = graph.unique_name(import_scope or "", mark_as_used=False)
        importer._import(input_graph_def, input_map, None, import_scope or scope, source_file)

        variable_objects: dict[bytes, Any] = {}
        for key, col_def in sorted(meta_graph_def.collection_def.items()):
            if key == unbound_inputs_col_name or not restore_collections_predicate(key):
                continue
            kind = col_def.WhichOneof("kind")
            if kind is None:
                _logger.warning(f"Cannot identify data type for collection {key}. Skipping.")
                continue
            from_proto = ops.get_from_proto_function(key)
            if from_proto and kind == "bytes_list":
                proto_type = ops.get_collection_proto_type(key)
                for value in col_def.bytes_list.value:
                    if (
                        key in ops.GraphKeys._VARIABLE_COLLECTIONS
                    ):  # one object per variable, shared across keys
                        obj = variable_objects.get(value)
                        if obj is None:
                            obj = variable_objects[value] = from_proto(
                                proto_type.FromString(value), import_scope=scope
                            )
                    else:
                        obj = from_proto(proto_type.FromString(value), import_scope=scope)
                    graph.add_to_collection(key, obj)
            elif kind == "node_list":
                for value in col_def.node_list.value:
                    graph.add_to_collection(key, graph.as_graph_element(prepend_name_scope(value, scope)))
            elif kind == "int64_list":
                for value in col_def.int64_list.value:
                    graph.add_to_collection(key, int(value))
            elif kind == "float_list":
                for value in col_def.float_list.value:
                    graph.add_to_collection(key, float(value))
            elif kind == "bytes_list":
                for value in col_def.bytes_list.value:
                    graph.add_to_collection(key, value)
            else:
                _logger.warning(f"Collection {key} of kind {kind} is not supported. Skipping.")

        var_list = {}
        for v in graph.get_collection(ops.GraphKeys.GLOBAL_VARIABLES, scope=scope):
            var_list[strip_name_scope(v.name, scope)] = v
    return var_list
