"""SavedModel export and import (``tf.compat.v1.saved_model``), without TensorFlow.

Export what TensorFlow Serving loads::

    saverkit.saved_model.simple_save(sess, "export/1", inputs={"x": x}, outputs={"y": y})

or, with several tag sets or an init op, ``Builder(export_dir)`` (``SavedModelBuilder``). Load a TF1
SavedModel (saverkit's or TensorFlow's) into a session and run a signature::

    meta_graph_def = saverkit.saved_model.loader.load(sess, [tag_constants.SERVING], "export/1")
    sig = meta_graph_def.signature_def["serving_default"]

TF2 SavedModels (``tf.saved_model.save``) run tf.function graphs, which saverkit cannot; their variables
are a TF2 object checkpoint at ``variables_prefix(export_dir)``, which ``saverkit.train.load_checkpoint``
and ``saverkit.train.Checkpoint.restore`` read (both accept the export directory itself);
``load_module_tree(export_dir)`` rebuilds the saved object tree with those variables.
"""

from __future__ import annotations

from saverkit.saved_model import (
    builder,
    constants,
    loader,
    objects,
    reader,
    signature_constants,
    signature_def_utils,
    tag_constants,
    utils,
)
from saverkit.saved_model.builder import Builder, SavedModelBuilder
from saverkit.saved_model.loader import load, maybe_saved_model_directory
from saverkit.saved_model.objects import UnrunnableFunction, load_module_tree
from saverkit.saved_model.reader import contains_saved_model, parse_saved_model, variables_prefix
from saverkit.saved_model.signature_def_utils import (
    build_signature_def,
    classification_signature_def,
    is_valid_signature,
    predict_signature_def,
    regression_signature_def,
)
from saverkit.saved_model.simple_save import simple_save
from saverkit.saved_model.utils import build_tensor_info, get_tensor_from_tensor_info

__all__ = [
    "Builder", "SavedModelBuilder", "UnrunnableFunction", "build_signature_def", "build_tensor_info",
    "builder", "classification_signature_def", "constants", "contains_saved_model",
    "get_tensor_from_tensor_info", "is_valid_signature", "load", "load_module_tree", "loader",
    "maybe_saved_model_directory", "objects", "parse_saved_model", "predict_signature_def", "reader",
    "regression_signature_def", "signature_constants", "signature_def_utils", "simple_save", "tag_constants",
    "utils", "variables_prefix",
]
