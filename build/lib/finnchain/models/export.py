"""Export a Brevitas model to a clean, annotated QONNX file.

Brevitas' ``export_qonnx`` writes Quant/Trunc nodes; qonnx then tidies the graph (shapes, unique
and readable names, batch-norm as Mul/Add, datatypes) and the uint8 image input is annotated as
UINT8. Batch-norm becomes an explicit per-channel Mul and Add so that every float operation of the
reference is a correctly rounded IEEE operation, one per node.
"""

from __future__ import annotations

import os
import tempfile

import torch
from brevitas.export import export_qonnx
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
from qonnx.transformation.general import (
    GiveReadableTensorNames,
    GiveUniqueNodeNames,
    RemoveStaticGraphInputs,
    RemoveUnusedTensors,
)
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.insert_topk import InsertTopK
from qonnx.util.cleanup import cleanup_model


def to_qonnx(model: torch.nn.Module, input_shape: tuple[int, ...], topk: int | None) -> ModelWrapper:
    """Export ``model`` (eval mode) for a uint8 input of ``input_shape`` and tidy the graph."""
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        with torch.no_grad():
            export_qonnx(model, torch.zeros(input_shape), export_path=raw, dynamo=False)
        wrapped = cleanup_model(ModelWrapper(raw))
    wrapped = wrapped.transform(BatchNormToAffine())
    wrapped = wrapped.transform(InferShapes())
    wrapped.set_tensor_datatype(wrapped.graph.input[0].name, DataType["UINT8"])
    if topk:
        wrapped = wrapped.transform(InsertTopK(k=topk))
    for t in (
        InferShapes(),
        GiveUniqueNodeNames(),
        GiveReadableTensorNames(),
        RemoveStaticGraphInputs(),
        RemoveUnusedTensors(),
        InferDataTypes(),
    ):
        wrapped = wrapped.transform(t)
    wrapped.model.producer_name = "finnchain"
    wrapped.model.producer_version = ""
    return wrapped
