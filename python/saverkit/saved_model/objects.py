"""TF2 SavedModels (``tf.saved_model.save``) as a saverkit object tree: their variables, not their functions.

A TF2 SavedModel's ``MetaGraphDef.object_graph_def`` describes the saved Python objects (modules, variables,
lists, dicts, tf.functions); its ``variables/variables`` checkpoint has an object graph with the same node
ids, which gives each variable's checkpoint key. :func:`load_module_tree` rebuilds the objects as
``saverkit.Module`` / list / dict / ``saverkit.Variable`` (initialized from the checkpoint's values) so that
``sk.train.Checkpoint(...)`` over the tree saves what TF's ``tf.train.Checkpoint`` would read back. The
tf.functions become :class:`UnrunnableFunction`: calling one raises UnimplementedError naming it.
"""

from __future__ import annotations

import os
import re
from typing import Any, cast

from saverkit import errors
from saverkit.protobuf import meta_graph_pb2, saved_object_graph_pb2
from saverkit.saved_model import reader

_VARIABLE_VALUE = "VARIABLE_VALUE"


class UnrunnableFunction:
    """Stands in for a tf.function of a TF2 SavedModel: saverkit cannot run TensorFlow function graphs."""

    def __init__(self, path: str, export_dir: str, concrete_functions: list[str]) -> None:
        self.path = path
        self.export_dir = export_dir
        self.concrete_functions = concrete_functions

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        names = ", ".join(self.concrete_functions) or "none"
        raise errors.UnimplementedError(
            None, None,
            f"{self.path} is a TensorFlow function of the TF2 SavedModel {self.export_dir} (concrete "
            f"functions: {names}); saverkit cannot run TensorFlow function graphs (their graphs are called "
            "through StatefulPartitionedCall). Only the SavedModel's variables are loaded.")

    def __repr__(self) -> str:
        return f"<UnrunnableFunction {self.path}>"


def _tf2_meta_graph(saved_model: Any, export_dir: str) -> meta_graph_pb2.MetaGraphDef:
    for meta_graph_def in saved_model.meta_graphs:
        if reader.is_tf2(meta_graph_def):
            return meta_graph_def
    raise ValueError(f"The SavedModel at {export_dir} has no TF2 object graph (it was not written by "
                     "tf.saved_model.save); load it with saverkit.saved_model.loader.load(sess, tags, "
                     "export_dir)")


def _module_name(local_name: str) -> str:
    name = re.sub(r"\W", "_", local_name)
    return name if name and not name[0].isdigit() else f"m_{name}"


def load_module_tree(export_dir: str | os.PathLike) -> Any:
    """The objects of the TF2 SavedModel at ``export_dir`` rebuilt in the default graph: user objects as
    ``saverkit.Module`` (attributes named as in TF), TF's list/dict wrappers as lists/dicts, variables as
    ``saverkit.Variable`` whose initial value is the saved value (run ``global_variables_initializer()``),
    tf.functions as :class:`UnrunnableFunction`. Returns the root."""
    import numpy as np

    from saverkit.framework import variables
    from saverkit.module import Module
    from saverkit.protobuf import trackable_object_graph_pb2
    from saverkit.train import checkpoint_utils

    export_dir = reader.export_dir_of(export_dir)
    nodes = _tf2_meta_graph(reader.parse_saved_model(export_dir), export_dir).object_graph_def.nodes
    ckpt = checkpoint_utils.load_checkpoint(reader.variables_prefix(export_dir))
    ckpt_graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        bytes(cast(bytes, ckpt.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))))  # a scalar string: bytes
    built: dict[int, Any] = {}

    def variable_key(node_id: int) -> str:
        if node_id < len(ckpt_graph.nodes):
            for attribute in ckpt_graph.nodes[node_id].attributes:
                if attribute.name == _VARIABLE_VALUE:
                    return attribute.checkpoint_key
        raise errors.NotFoundError(None, None, f"Variable node {node_id} of the SavedModel at {export_dir} "
                                   f"has no value in {reader.variables_prefix(export_dir)}")

    def build(node_id: int, path: str, local_name: str) -> Any:
        if node_id in built:  # shared objects stay shared
            return built[node_id]
        node: saved_object_graph_pb2.SavedObject = nodes[node_id]
        kind = node.WhichOneof("kind")
        obj: Any
        if kind == "variable":
            value = np.asarray(ckpt.get_array(variable_key(node_id)))
            name = node.variable.name or _module_name(local_name)
            obj = variables.Variable(value, name=name.split(":")[0], trainable=node.variable.trainable)
        elif kind in ("function", "bare_concrete_function"):
            concrete = (list(node.function.concrete_functions) if kind == "function"
                        else [node.bare_concrete_function.concrete_function_name])
            obj = UnrunnableFunction(path, export_dir, concrete)
        elif kind == "user_object" and node.user_object.identifier == "trackable_list_wrapper":
            obj = [None] * len(node.children)
        elif kind == "user_object" and node.user_object.identifier in ("trackable_dict_wrapper",
                                                                        "signature_map"):
            obj = {}
        else:  # modules, Keras layers, and objects saverkit has no better type for (assets, resources)
            obj = Module(name=_module_name(local_name) if node_id else None)
        built[node_id] = obj
        for child in node.children:
            value = build(child.node_id, f"{path}.{child.local_name}", child.local_name)
            if isinstance(obj, list):
                obj[int(child.local_name)] = value
            elif isinstance(obj, dict):
                obj[child.local_name] = value
            elif isinstance(obj, Module):
                setattr(obj, child.local_name, value)
        return obj

    return build(0, "(root)", "root")
