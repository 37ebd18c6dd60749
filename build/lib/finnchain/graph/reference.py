"""The reference: qonnx's node-by-node ``execute_onnx``, slow and trusted."""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from finnchain.graph.model import input_name, output_name, with_batch


def run_reference(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Run ``model`` on the batch ``x`` (any integer or float dtype, values as the model takes)."""
    batched = with_batch(model, int(x.shape[0]))
    out = execute_onnx(batched, {input_name(batched): np.asarray(x, dtype=np.float32)})
    return out[output_name(batched)]
