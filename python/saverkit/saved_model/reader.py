"""Finding and parsing ``saved_model.pb`` / ``saved_model.pbtxt``, with protobuf only.

Everything here names the file it read in its errors; nothing imports the graph layer, so the command-line
tool can list a SavedModel as cheaply as a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from google.protobuf import message, text_format

from saverkit import errors
from saverkit.protobuf import meta_graph_pb2, saved_model_pb2
from saverkit.saved_model import constants

# Ops through which a TF2 SavedModel's signatures call their tf.function graphs.
FUNCTION_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")


def saved_model_file(export_dir: str | os.PathLike) -> str | None:
    """The path of ``export_dir``'s ``saved_model.pbtxt`` or ``saved_model.pb`` (text first, as TF), or
    None."""
    export_dir = os.fspath(export_dir)
    for name in (constants.SAVED_MODEL_FILENAME_PBTXT, constants.SAVED_MODEL_FILENAME_PB):
        path = os.path.join(export_dir, name)
        if os.path.isfile(path):
            return path
    return None


def contains_saved_model(export_dir: str | os.PathLike) -> bool:
    """True if ``export_dir`` holds a ``saved_model.pb`` or ``saved_model.pbtxt``
    (``tf.saved_model.contains_saved_model``)."""
    return os.path.isdir(export_dir) and saved_model_file(export_dir) is not None


def is_saved_model_filename(path: str | os.PathLike) -> bool:
    """True if ``path`` is named like a SavedModel file (``saved_model.pb`` / ``saved_model.pbtxt``)."""
    return os.path.basename(os.fspath(path)) in (
        constants.SAVED_MODEL_FILENAME_PB, constants.SAVED_MODEL_FILENAME_PBTXT)


def variables_prefix(export_dir: str | os.PathLike) -> str:
    """The checkpoint prefix of a SavedModel's variables: ``export_dir/variables/variables``."""
    return os.path.join(os.fspath(export_dir), constants.VARIABLES_DIRECTORY, constants.VARIABLES_FILENAME)


def export_dir_of(path: str | os.PathLike) -> str:
    """``path`` itself if it is a directory, else the directory of a ``saved_model.pb(txt)`` file."""
    path = os.fspath(path)
    if is_saved_model_filename(path) and os.path.isfile(path):
        return os.path.dirname(path) or "."
    return path


def parse_file(path: str | os.PathLike) -> saved_model_pb2.SavedModel:
    """Parses one SavedModel file: binary, or text format when named ``.pbtxt`` (or when binary fails).

    OSError naming the file when it cannot be read, cannot be parsed, or holds no MetaGraphDef."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OSError(e.errno, f"Cannot read SavedModel file {path}: {e.strerror or e}") from e
    saved_model = saved_model_pb2.SavedModel()
    binary_error: Exception | None = None
    if not path.endswith(".pbtxt"):
        try:
            saved_model.ParseFromString(data)
        except message.DecodeError as e:
            binary_error = e
            saved_model.Clear()
    if path.endswith(".pbtxt") or binary_error is not None:
        try:
            text_format.Merge(data.decode("utf-8"), saved_model, allow_unknown_extension=True)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            why = binary_error if binary_error is not None else e
            raise OSError(f"Cannot parse file {path}: not a SavedModel ({why}).") from None
    if not saved_model.meta_graphs:
        raise OSError(f"Cannot parse file {path}: not a SavedModel (it holds no MetaGraphDef).")
    return saved_model


def parse_saved_model(export_dir: str | os.PathLike) -> saved_model_pb2.SavedModel:
    """The ``SavedModel`` proto of ``export_dir`` (TF's ``loader_impl.parse_saved_model``); the
    directory's ``saved_model.pb(txt)`` may be passed too. OSError naming what is missing or unreadable."""
    export_dir = export_dir_of(export_dir)
    path = saved_model_file(export_dir)
    if path is None:
        raise OSError(
            f"SavedModel file does not exist at: {export_dir}{os.sep}"
            f"{{{constants.SAVED_MODEL_FILENAME_PBTXT}|{constants.SAVED_MODEL_FILENAME_PB}}}")
    return parse_file(path)


def tag_sets(saved_model: saved_model_pb2.SavedModel) -> list[list[str]]:
    """The tags of each MetaGraphDef, in file order."""
    return [list(m.meta_info_def.tags) for m in saved_model.meta_graphs]


def meta_graph_for_tags(
    saved_model: saved_model_pb2.SavedModel, tags: Iterable[str] | str, where: str = ""
) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef whose tag set equals ``tags`` (order and repeats ignored, as TF). RuntimeError
    listing the available tag sets otherwise."""
    wanted = {tags} if isinstance(tags, str) else set(tags)
    for meta_graph_def in saved_model.meta_graphs:
        if set(meta_graph_def.meta_info_def.tags) == wanted:
            return meta_graph_def
    available = "; ".join(str(sorted(t)) for t in tag_sets(saved_model)) or "none"
    raise RuntimeError(
        f"MetaGraphDef associated with tags {sorted(wanted)} could not be found in SavedModel"
        f"{' ' + where if where else ''}; available tag sets: {available}. To list them: saverkit inspect "
        "EXPORT_DIR.")


def describe(saved_model: saved_model_pb2.SavedModel) -> str:
    """One line: each MetaGraphDef's tags and signature keys (and TF2 when it has an object graph)."""
    parts = []
    for m in saved_model.meta_graphs:
        sigs = ", ".join(sorted(m.signature_def)) or "none"
        tf2 = ", TF2 object graph" if is_tf2(m) else ""
        parts.append(f"tags {sorted(m.meta_info_def.tags)} (signatures: {sigs}{tf2})")
    return f"{len(parts)} MetaGraphDef(s): " + "; ".join(parts)


def is_tf2(meta_graph_def: meta_graph_pb2.MetaGraphDef) -> bool:
    """True for a MetaGraphDef written by TF2's ``tf.saved_model.save``: it carries an object graph."""
    return len(meta_graph_def.object_graph_def.nodes) > 0


def function_call_ops(meta_graph_def: meta_graph_pb2.MetaGraphDef) -> list[tuple[str, str]]:
    """(node name, op type) of the graph's nodes that call tf.function graphs (function-call ops and calls
    of library functions by name), which saverkit cannot run."""
    library = {f.signature.name for f in meta_graph_def.graph_def.library.function}
    return [(n.name, n.op) for n in meta_graph_def.graph_def.node
            if n.op in FUNCTION_CALL_OPS or n.op in library]


def check_runnable(meta_graph_def: meta_graph_pb2.MetaGraphDef, where: str) -> None:
    """Raises UnimplementedError naming the first function-call op when the graph runs tf.function graphs
    (a TF2 SavedModel): saverkit runs TF1 graphs only, and would otherwise fail later on an unknown op."""
    calls = function_call_ops(meta_graph_def)
    if not calls:
        return
    name, op = calls[0]
    kind = "a TF2 SavedModel (tf.saved_model.save)" if is_tf2(meta_graph_def) else "a graph with functions"
    raise errors.UnimplementedError(
        None, None,
        f"{where} is {kind}: its signatures run TensorFlow function graphs through op {op} (node {name!r}, "
        f"{len(calls)} such node(s)), which saverkit cannot run. Its variables can be read: "
        "saverkit.train.load_checkpoint(export_dir), or saverkit.train.Checkpoint(...).restore("
        "saverkit.saved_model.variables_prefix(export_dir)).")
