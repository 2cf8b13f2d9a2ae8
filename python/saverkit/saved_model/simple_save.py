"""``simple_save``: the one-call export for serving (``tf.compat.v1.saved_model.simple_save``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from saverkit.saved_model import builder, signature_constants, signature_def_utils, tag_constants


def simple_save(
    session: Any, export_dir: str | os.PathLike, inputs: Mapping[str, Any], outputs: Mapping[str, Any],
    legacy_init_op: Any = None,
) -> str:
    """Exports ``session``'s graph and variables as a SavedModel tagged ``serve`` with one Predict signature,
    ``serving_default``, from ``{name: Tensor}`` maps. Devices are cleared, and the graph's
    ``asset_filepaths`` collection becomes the assets, as in TensorFlow. Returns the ``saved_model.pb``
    path."""
    from saverkit.framework import ops

    signature_def_map = {
        signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
            signature_def_utils.predict_signature_def(inputs, outputs)
    }
    b = builder.SavedModelBuilder(export_dir)
    b.add_meta_graph_and_variables(
        session,
        tags=[tag_constants.SERVING],
        signature_def_map=signature_def_map,
        assets_collection=ops.get_collection(ops.GraphKeys.ASSET_FILEPATHS),
        main_op=legacy_init_op,
        clear_devices=True,
    )
    return b.save()
