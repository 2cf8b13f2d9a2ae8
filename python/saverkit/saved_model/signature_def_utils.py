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


def is_valid_signature(signature_def: meta_graph_pb2.SignatureDef) -> bool:
    """True if every TensorInfo names a tensor and has a dtype and the method name is set (a looser
    check than TF's, which also checks the Classify/Regress contracts)."""
    if not signature_def.method_name:
        return False
    infos = list(signature_def.inputs.values()) + list(signature_def.outputs.values())
    return all(i.WhichOneof("encoding") is not None and i.dtype != 0 for i in infos)
