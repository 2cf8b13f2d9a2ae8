"""Writing SavedModels in TensorFlow 1's layout (``tf.compat.v1.saved_model.Builder``).

::

    export_dir/saved_model.pb                             SavedModel: one MetaGraphDef per tag set
    export_dir/variables/variables.index                  the variables, a V2 checkpoint
    export_dir/variables/variables.data-00000-of-00001
    export_dir/assets/                                    copies of the asset files, if any

TensorFlow Serving, ``tf.compat.v1.saved_model.loader.load`` and TF2's ``tf.saved_model.load`` read it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from saverkit import tempfiles
from saverkit.protobuf import meta_graph_pb2, saved_model_pb2, types_pb2
from saverkit.saved_model import constants, reader

_logger = logging.getLogger(__name__)

# TensorFlow unpacks the AssetFileDefs of the assets collection by this type URL; our protos live in
# package "saverkit", so Any.Pack would write a URL TensorFlow does not accept.
ASSET_FILE_DEF_TYPE_URL = "type.googleapis.com/tensorflow.AssetFileDef"


class SavedModelBuilder:
    """Builds a SavedModel: ``add_meta_graph_and_variables`` once (saves the variables), then
    ``add_meta_graph`` for other tag sets of the same graph, then ``save``.

    As TensorFlow, refuses an ``export_dir`` that exists and is not empty (AssertionError)."""

    def __init__(self, export_dir: str | os.PathLike) -> None:
        self._export_dir = os.fspath(export_dir)
        if os.path.exists(self._export_dir):
            if not os.path.isdir(self._export_dir) or os.listdir(self._export_dir):
                raise AssertionError(
                    f"Export directory {self._export_dir} already exists, and isn't empty. Please choose a "
                    "different export directory, or delete all the contents of the specified directory.")
        else:
            os.makedirs(self._export_dir)
        self._saved_model = saved_model_pb2.SavedModel(
            saved_model_schema_version=constants.SAVED_MODEL_SCHEMA_VERSION)
        self._has_saved_variables = False
        self._asset_file_defs: list[meta_graph_pb2.AssetFileDef] = []  # of every meta graph so far

    # --- validation
    @staticmethod
    def _validate_tensor_info(tensor_info: meta_graph_pb2.TensorInfo | None) -> None:
        if tensor_info is None:
            raise AssertionError("All TensorInfo protos used in the SignatureDefs must have the name and "
                                 "dtype fields set.")
        encoding = tensor_info.WhichOneof("encoding")
        if encoding is None:
            raise AssertionError(f"Invalid `tensor_info`: {tensor_info}. All TensorInfo protos used in the "
                                 "SignatureDefs must have one of the 'encoding' fields (e.g., name) set.")
        if encoding == "composite_tensor":
            for component in tensor_info.composite_tensor.components:
                SavedModelBuilder._validate_tensor_info(component)
        elif tensor_info.dtype == types_pb2.DT_INVALID:
            raise AssertionError(f"Invalid `tensor_info`: {tensor_info}. All TensorInfo protos used in the "
                                 "SignatureDefs must have the dtype field set.")

    def _validate_signature_def_map(self, signature_def_map: Mapping[str, Any]) -> None:
        for key, signature_def in signature_def_map.items():
            if not isinstance(signature_def, meta_graph_pb2.SignatureDef):
                raise TypeError(f"signature_def_map[{key!r}] must be a SignatureDef (see "
                                f"signature_def_utils), got {type(signature_def).__name__}")
            for info in list(signature_def.inputs.values()) + list(signature_def.outputs.values()):
                self._validate_tensor_info(info)
        for reserved, what in ((constants.INIT_OP_SIGNATURE_KEY, "initialization"),
                               (constants.TRAIN_OP_SIGNATURE_KEY, "the train op")):
            if reserved in signature_def_map:
                raise KeyError(f'SignatureDef map key "{reserved}" is reserved for {what}. '
                               "Please use a different key.")

    @staticmethod
    def _check_tags(tags: Iterable[str]) -> list[str]:
        if isinstance(tags, str):
            raise TypeError(f"tags must be a list of strings, e.g. [tag_constants.SERVING], got {tags!r}")
        tags = list(tags)
        for tag in tags:
            if not isinstance(tag, str):
                raise TypeError(f"Each tag must be a string, got {tag!r}")
        return tags

    # --- collections
    def _add_collections(self, assets_collection: Iterable[Any] | None, main_op: Any) -> None:
        self._save_and_write_assets(assets_collection)
        self._maybe_add_main_op(main_op)

    def _save_and_write_assets(self, assets_collection: Iterable[Any] | None) -> None:
        """Records an AssetFileDef per asset tensor and copies the files into ``export_dir/assets``."""
        if assets_collection is None:
            return
        filename_map: dict[str, str] = {}  # name in assets/ -> source path
        for asset_tensor in assets_collection:
            source = _asset_path_from_tensor(asset_tensor)
            name = _unique_asset_filename(source, filename_map)
            self._asset_file_defs.append(meta_graph_pb2.AssetFileDef(
                filename=name, tensor_info=meta_graph_pb2.TensorInfo(name=asset_tensor.name)))
            filename_map[name] = source
        if not filename_map:
            return
        assets_dir = os.path.join(self._export_dir, constants.ASSETS_DIRECTORY)
        os.makedirs(assets_dir, exist_ok=True)
        for name, source in filename_map.items():
            destination = os.path.join(assets_dir, name)
            if not os.path.exists(destination):
                try:
                    shutil.copyfile(source, destination)
                except OSError as e:
                    raise OSError(e.errno, f"Cannot copy asset {source} into {assets_dir}: "
                                           f"{e.strerror or e}") from e

    @staticmethod
    def _maybe_add_main_op(main_op: Any) -> None:
        if main_op is None:
            return
        from saverkit.framework import ops

        if not isinstance(main_op, ops.Operation):
            raise TypeError(f"Expected {main_op} to be an Operation but got type {type(main_op)} instead.")
        # One init op per graph, as TensorFlow: the loader runs whichever it finds.
        for key in (constants.MAIN_OP_KEY, constants.LEGACY_INIT_OP_KEY):
            if ops.get_collection(key):
                raise ValueError(f"Graph already contains one or more main ops under the collection {key}.")
        ops.add_to_collection(constants.MAIN_OP_KEY, main_op)

    # --- meta graphs
    def _tag_and_add_meta_graph(
        self, meta_graph_def: meta_graph_pb2.MetaGraphDef, tags: list[str], signature_def_map: Mapping
    ) -> None:
        meta_graph_def.meta_info_def.tags.extend(tags)
        for key, signature_def in signature_def_map.items():
            meta_graph_def.signature_def[key].CopyFrom(signature_def)
        if self._asset_file_defs:
            assets = meta_graph_def.collection_def[constants.ASSETS_KEY].any_list
            for asset_file_def in self._asset_file_defs:
                assets.value.add(type_url=ASSET_FILE_DEF_TYPE_URL,
                                 value=asset_file_def.SerializeToString(deterministic=True))
        self._saved_model.meta_graphs.add().CopyFrom(meta_graph_def)

    @staticmethod
    def _maybe_create_saver(saver: Any = None) -> Any:
        if saver is not None:
            return saver
        from saverkit.train import saver as saver_mod

        # Every saveable of the graph, sharded (one part per device, merged into one data file) like TF.
        return saver_mod.Saver(sharded=True, allow_empty=True)

    def add_meta_graph_and_variables(
        self,
        sess: Any,
        tags: Iterable[str],
        signature_def_map: Mapping[str, meta_graph_pb2.SignatureDef] | None = None,
        assets_collection: Iterable[Any] | None = None,
        legacy_init_op: Any = None,
        clear_devices: bool = False,
        main_op: Any = None,
        strip_default_attrs: bool = False,
        saver: Any = None,
    ) -> None:
        """Saves ``sess``'s variables to ``export_dir/variables`` and adds the graph's MetaGraphDef with
        ``tags`` and ``signature_def_map``. ``main_op`` (or the older ``legacy_init_op``) is run by the
        loader after the variables are restored, with the asset tensors fed their paths."""
        if self._has_saved_variables:
            raise AssertionError("Graph state including variables and assets has already been saved. "
                                 "Please invoke `add_meta_graph()` instead.")
        tags = self._check_tags(tags)
        signature_def_map = signature_def_map or {}
        self._validate_signature_def_map(signature_def_map)
        self._add_collections(assets_collection, main_op or legacy_init_op)
        os.makedirs(os.path.join(self._export_dir, constants.VARIABLES_DIRECTORY), exist_ok=True)
        saver = self._maybe_create_saver(saver)
        # No state file: a SavedModel is copied and moved as a whole, and the loader does not read one.
        saver.save(sess, reader.variables_prefix(self._export_dir), write_meta_graph=False, write_state=False)
        meta_graph_def = saver.export_meta_graph(clear_devices=clear_devices,
                                                 strip_default_attrs=strip_default_attrs)
        self._tag_and_add_meta_graph(meta_graph_def, tags, signature_def_map)
        self._has_saved_variables = True

    def add_meta_graph(
        self,
        tags: Iterable[str],
        signature_def_map: Mapping[str, meta_graph_pb2.SignatureDef] | None = None,
        assets_collection: Iterable[Any] | None = None,
        legacy_init_op: Any = None,
        clear_devices: bool = False,
        main_op: Any = None,
        strip_default_attrs: bool = False,
        saver: Any = None,
    ) -> None:
        """Adds the graph's MetaGraphDef under another tag set, sharing the variables already saved."""
        if not self._has_saved_variables:
            raise AssertionError("Graph state including variables and assets has not been saved yet. "
                                 "Please invoke `add_meta_graph_and_variables()` first.")
        tags = self._check_tags(tags)
        signature_def_map = signature_def_map or {}
        self._validate_signature_def_map(signature_def_map)
        self._add_collections(assets_collection, main_op or legacy_init_op)
        saver = self._maybe_create_saver(saver)
        meta_graph_def = saver.export_meta_graph(clear_devices=clear_devices,
                                                 strip_default_attrs=strip_default_attrs)
        self._tag_and_add_meta_graph(meta_graph_def, tags, signature_def_map)

    def save(self, as_text: bool = False) -> str:
        """Writes ``saved_model.pb`` (``saved_model.pbtxt`` when ``as_text``) through a temporary file and a
        rename; returns its path."""
        os.makedirs(self._export_dir, exist_ok=True)
        if as_text:
            from google.protobuf import text_format

            path = os.path.join(self._export_dir, constants.SAVED_MODEL_FILENAME_PBTXT)
            data = text_format.MessageToString(self._saved_model).encode()
        else:
            path = os.path.join(self._export_dir, constants.SAVED_MODEL_FILENAME_PB)
            data = self._saved_model.SerializeToString(deterministic=True)
        tmp = tempfiles.temp_path(path)
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _logger.info("SavedModel written to: %s", path)
        return path


Builder = SavedModelBuilder


def _asset_path_from_tensor(asset_tensor: Any) -> str:
    """The file an asset tensor names: it must be a scalar string Const (TF's rule)."""
    from saverkit.framework import tensor as tensor_mod

    if not isinstance(asset_tensor, tensor_mod.Tensor):
        raise TypeError(f"Asset path tensor {asset_tensor} must be a Tensor.")
    if asset_tensor.op.type != "Const":
        raise TypeError(f"Asset path tensor {asset_tensor} must be of type constant.")
    from saverkit import dtypes

    if asset_tensor.dtype != dtypes.string:
        raise TypeError(f"Asset path tensor {asset_tensor} must be of dtype string.")
    value = asset_tensor.op.get_attr("value")
    if len(value.string_val) != 1 or value.tensor_shape.dim:
        raise TypeError(f"Asset path tensor {asset_tensor} must be a scalar.")
    path = value.string_val[0].decode("utf-8", "surrogateescape")
    if not path:
        raise ValueError(f"Asset filepath tensor {asset_tensor} in is invalid.")
    return path


def _unique_asset_filename(source: str, filename_map: Mapping[str, str]) -> str:
    """The asset's base name; a different file of the same name gets ``name_1``, ``name_2``... (TF's
    rule), while the same file listed twice keeps one copy."""
    name = os.path.basename(source)
    if name not in filename_map or filename_map[name] == source:
        return name
    stem, ext = os.path.splitext(name)
    i = 1
    while f"{stem}_{i}{ext}" in filename_map and filename_map[f"{stem}_{i}{ext}"] != source:
        i += 1
    return f"{stem}_{i}{ext}"
