"""Loading TF1 SavedModels into a Session (``tf.compat.v1.saved_model.loader``).

``load(sess, [tag_constants.SERVING], export_dir)`` imports the MetaGraphDef with those tags into
``sess.graph``, restores ``export_dir/variables/variables`` into ``sess``, runs the init op (``main_op`` /
``legacy_init_op``) with the asset tensors fed their paths, and returns the MetaGraphDef, whose
``signature_def`` names the tensors to feed and fetch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from google.protobuf import message

from saverkit.protobuf import meta_graph_pb2, saved_model_pb2
from saverkit.saved_model import constants, reader, utils

_logger = logging.getLogger(__name__)


def maybe_saved_model_directory(export_dir: str | os.PathLike) -> bool:
    """True if ``export_dir`` holds a SavedModel file (TF's name for ``contains_saved_model``)."""
    return reader.contains_saved_model(export_dir)


class SavedModelLoader:
    """Loads the parts of a SavedModel step by step (TF's ``loader_impl.SavedModelLoader``)."""

    def __init__(self, export_dir: str | os.PathLike) -> None:
        self._export_dir = reader.export_dir_of(export_dir)
        self._saved_model = reader.parse_saved_model(self._export_dir)
        self._variables_path = reader.variables_prefix(self._export_dir)

    @property
    def export_dir(self) -> str:
        return self._export_dir

    @property
    def variables_path(self) -> str:
        return self._variables_path

    @property
    def saved_model(self) -> saved_model_pb2.SavedModel:
        return self._saved_model

    def get_meta_graph_def_from_tags(self, tags: Iterable[str]) -> meta_graph_pb2.MetaGraphDef:
        return reader.meta_graph_for_tags(self._saved_model, tags, where=f"at {self._export_dir}")

    def load_graph(
        self, graph: Any, tags: Iterable[str], import_scope: str | None = None, **saver_kwargs: Any
    ) -> tuple[Any, None]:
        """Imports the MetaGraphDef with ``tags`` into ``graph``; returns ``(saver, None)`` (the saver is None
        when the graph has no variables). UnimplementedError for graphs that run tf.function graphs."""
        from saverkit.train import saver as saver_mod

        meta_graph_def = self.get_meta_graph_def_from_tags(tags)
        reader.check_runnable(meta_graph_def, f"The SavedModel at {self._export_dir}")
        with graph.as_default():
            try:
                saver = saver_mod.import_meta_graph(meta_graph_def, import_scope=import_scope, **saver_kwargs)
            except (ValueError, KeyError, TypeError, message.DecodeError) as e:
                # A damaged file can parse as a SavedModel and still hold a broken graph: name the file.
                where = reader.saved_model_file(self._export_dir)
                tagged = sorted(meta_graph_def.meta_info_def.tags)
                raise ValueError(f"Cannot import the MetaGraphDef tagged {tagged} of the SavedModel {where}: "
                                 f"{e}") from e
        return saver, None

    def restore_variables(self, sess: Any, saver: Any, import_scope: str | None = None) -> None:
        """Restores ``export_dir/variables/variables`` into ``sess`` with ``saver``."""
        if saver is None:
            _logger.info("The specified SavedModel has no variables; no checkpoints were restored.")
            return
        if not os.path.isfile(self._variables_path + ".index"):
            from saverkit import errors

            raise errors.NotFoundError(
                None, None, f"The SavedModel at {self._export_dir} has variables but no checkpoint of them: "
                f"{self._variables_path}.index does not exist")
        saver.restore(sess, self._variables_path)

    def run_init_ops(self, sess: Any, tags: Iterable[str], import_scope: str | None = None) -> None:
        """Runs the init op of the MetaGraphDef with ``tags``, feeding each asset tensor its file's path."""
        meta_graph_def = self.get_meta_graph_def_from_tags(tags)
        with sess.graph.as_default():
            feed = get_asset_tensors(self._export_dir, meta_graph_def, import_scope)
            init_op = get_init_op(meta_graph_def, import_scope)
            if init_op is not None:
                sess.run(fetches=[init_op], feed_dict=feed)

    def load(
        self, sess: Any, tags: Iterable[str], import_scope: str | None = None, **saver_kwargs: Any
    ) -> meta_graph_pb2.MetaGraphDef:
        with sess.graph.as_default():
            saver, _ = self.load_graph(sess.graph, tags, import_scope, **saver_kwargs)
            self.restore_variables(sess, saver, import_scope)
            self.run_init_ops(sess, tags, import_scope)
        return self.get_meta_graph_def_from_tags(tags)


def load(
    sess: Any, tags: Iterable[str], export_dir: str | os.PathLike, import_scope: str | None = None,
    **saver_kwargs: Any,
) -> meta_graph_pb2.MetaGraphDef:
    """Loads the MetaGraphDef tagged ``tags`` of the SavedModel at ``export_dir`` into ``sess`` and returns
    it. OSError when the directory holds no readable SavedModel, RuntimeError when no MetaGraphDef has
    exactly these tags, NotFoundError when the variables are missing."""
    return SavedModelLoader(export_dir).load(sess, tags, import_scope, **saver_kwargs)


def get_asset_tensors(
    export_dir: str, meta_graph_def: meta_graph_pb2.MetaGraphDef, import_scope: str | None = None
) -> dict[str, str]:
    """``{asset tensor name: absolute path in export_dir/assets}``, from the assets collection (TF1 builders)
    and ``asset_file_def`` (TF2)."""
    from saverkit.framework import meta_graph

    assets_dir = os.path.join(export_dir, constants.ASSETS_DIRECTORY)
    asset_file_defs = list(meta_graph_def.asset_file_def)
    if constants.ASSETS_KEY in meta_graph_def.collection_def:
        for any_proto in meta_graph_def.collection_def[constants.ASSETS_KEY].any_list.value:
            if not any_proto.type_url.endswith("AssetFileDef"):  # packed as tensorflow.AssetFileDef
                raise ValueError(f"Collection {constants.ASSETS_KEY} holds a {any_proto.type_url}, expected "
                                 "AssetFileDef")
            asset_file_defs.append(meta_graph_pb2.AssetFileDef.FromString(any_proto.value))
    return {
        meta_graph.prepend_name_scope(d.tensor_info.name, import_scope): os.path.join(assets_dir, d.filename)
        for d in asset_file_defs
    }


def get_init_op(meta_graph_def: meta_graph_pb2.MetaGraphDef, import_scope: str | None = None) -> Any:
    """The op to run after restoring: the ``__saved_model_init_op`` signature's, else the main op collection,
    else the legacy init op collection; None if there is none."""
    from saverkit.framework import meta_graph, ops

    if constants.INIT_OP_SIGNATURE_KEY in meta_graph_def.signature_def:
        outputs = meta_graph_def.signature_def[constants.INIT_OP_SIGNATURE_KEY].outputs
        init = outputs[constants.INIT_OP_SIGNATURE_KEY]
        return utils.get_element_from_tensor_info(init, None, import_scope)
    for key in (constants.MAIN_OP_KEY, constants.LEGACY_INIT_OP_KEY):
        if key in meta_graph_def.collection_def:
            names = meta_graph_def.collection_def[key].node_list.value
            if len(names) != 1:
                raise RuntimeError(f"Expected exactly one SavedModel init op in collection {key}; "
                                   f"found {len(names)}.")
            name = meta_graph.prepend_name_scope(names[0], import_scope)
            return ops.get_default_graph().as_graph_element(name)
    return None


__all__ = ["SavedModelLoader", "get_asset_tensors", "get_init_op", "load",
           "maybe_saved_model_directory"]
