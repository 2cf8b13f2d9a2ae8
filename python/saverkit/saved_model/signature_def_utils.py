"""Building SignatureDefs (TensorFlow's ``saved_model.signature_def_utils``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saverkit.protobuf import meta_graph_pb2
from saverkit.saved_model import signature_constants
from saverkit.saved_model.utils import build_tensor_info


def build_signature_def(
    inputs: Mapping[str, meta_graph_pb2.TensorInfo] | None = None,
    outputs: Mapping[str, meta_graph_pb2.TensorInfo] | None = None,
    method_name: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> meta_graph_pb2.SignatureDef:
    """A ``SignatureDef`` from ``{key: TensorInfo}`` maps and a method name."""
    signature_def = meta_graph_pb2.SignatureDef()
    for key, info in (inputs or {}).items():
        signature_def.inputs[key].CopyFrom(info)
    for key, info in (outputs or {}).items():
        signature_def.outputs[key].CopyFrom(info)
    if method_name is not None:
        signature_def.method_name = method_name
    if defaults:
        from saverkit.framework import tensor_util

        for key, value in defaults.items():
            signature_def.defaults[key].CopyFrom(tensor_util.make_tensor_proto(value))
    return signature_def


def predict_signature_def(
    inputs: Mapping[str, Any], outputs: Mapping[str, Any]
) -> meta_graph_pb2.SignatureDef:
    """The Predict API's ``SignatureDef`` (``tensorflow/serving/predict``) for ``{key: Tensor}`` maps."""
    if not inputs:
        raise ValueError("Prediction inputs cannot be None or empty.")
    if not outputs:
        raise ValueError("Prediction outputs cannot be None or empty.")
    return build_signature_def(
        {k: build_tensor_info(t) for k, t in inputs.items()},
        {k: build_tensor_info(t) for k, t in outputs.items()},
        signature_constants.PREDICT_METHOD_NAME,
    )


def regression_signature_def(examples: Any, predictions: Any) -> meta_graph_pb2.SignatureDef:
    """The Regress API's ``SignatureDef``: serialized ``tf.Example`` strings in, float predictions out."""
    from saverkit import dtypes

    if examples is None:
        raise ValueError("Regression `examples` cannot be None.")
    if predictions is None:
        raise ValueError("Regression `predictions` cannot be None.")
    if examples.dtype != dtypes.string:
        raise ValueError(
            f"Regression input tensors must be of type string. Found tensors of type {examples.dtype}")
    if not predictions.dtype.is_floating:
        raise ValueError(
            f"Regression output tensors must be of type float. Found tensors of type {predictions.dtype}")
    return build_signature_def(
        {signature_constants.REGRESS_INPUTS: build_tensor_info(examples)},
        {signature_constants.REGRESS_OUTPUTS: build_tensor_info(predictions)},
        signature_constants.REGRESS_METHOD_NAME,
    )


def classification_signature_def(examples: Any, classes: Any, scores: Any) -> meta_graph_pb2.SignatureDef:
    """The Classify API's ``SignatureDef``: serialized ``tf.Example`` strings in; string ``classes`` and/or
    float ``scores`` out."""
    from saverkit import dtypes

    if examples is None:
        raise ValueError("Classification `examples` cannot be None.")
    if examples.dtype != dtypes.string:
        raise ValueError("Classification input tensors must be of type string. Found tensors of type "
                         f"{examples.dtype}")
    if classes is None and scores is None:
        raise ValueError("Classification `classes` and `scores` cannot both be None.")
    outputs = {}
    if classes is not None:
        if classes.dtype != dtypes.string:
            raise ValueError("Classification classes must be of type string Tensor. Found tensors of type "
                             f"{classes.dtype}")
        outputs[signature_constants.CLASSIFY_OUTPUT_CLASSES] = build_tensor_info(classes)
    if scores is not None:
        if not scores.dtype.is_floating:
            raise ValueError(
                f"Classification scores must be a float Tensor. Found tensors of type {scores.dtype}")
        outputs[signature_constants.CLASSIFY_OUTPUT_SCORES] = build_tensor_info(scores)
    return build_signature_def(
        {signature_constants.CLASSIFY_INPUTS: build_tensor_info(examples)}, outputs,
        signature_constants.CLASSIFY_METHOD_NAME,
    )


def is_valid_signature(signature_def: meta_graph_pb2.SignatureDef) -> bool:
    """True if every TensorInfo names a tensor and has a dtype and the method name is set (a looser
    check than TF's, which also checks the Classify/Regress contracts)."""
    if not signature_def.method_name:
        return False
    infos = list(signature_def.inputs.values()) + list(signature_def.outputs.values())
    return all(i.WhichOneof("encoding") is not None and i.dtype != 0 for i in infos)
