"""The emulated accelerator: a stage run bit-exactly on the CPU by onnxruntime.

``Executor(model)`` compiles the QONNX model once (see :mod:`finnchain.emu.compile`) and then
runs batches of integer codes, as they arrive from the wire or as uint8 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from finnchain.emu.compile import compile_model
from finnchain.graph.model import load, output_name


def numpy_dtype(dt: DataType) -> np.dtype:
    """The smallest numpy integer dtype that holds every value of a FINN integer datatype."""
    for cand in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64):
        info = np.iinfo(cand)
        if info.min <= dt.min() and dt.max() <= info.max:
            return np.dtype(cand)
    return np.dtype(np.int64)


# onnxruntime fusions that fold a float constant into integer weights (so the weights stop being
# integers and the sums stop being exact). The others (the blocked NCHWc layout, activation
# fusion) keep each element's arithmetic as written, which the bit-exactness tests check.
UNSAFE_FUSIONS = ["ConvMulFusion", "ConvAddFusion", "ConvBNFusion", "MatMulScaleFusion"]


class InputError(ValueError):
    """A batch that does not match what the stage takes; the message says what is wrong."""


class Executor:
    """A compiled, bit-exact CPU executor for one QONNX model (a whole network or a stage)."""

    def __init__(self, model: str | Path | ModelWrapper, threads: int = 0) -> None:
        self.model = load(model)
        self.program = compile_model(self.model)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            self.program.model.SerializeToString(),
            opts,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=UNSAFE_FUSIONS,
        )
        out = output_name(self.model)
        self.output_datatype = self.model.get_tensor_datatype(out)
        self.output_shape = tuple(self.model.get_tensor_shape(out))[1:]
        self.input_shape = self.program.input_shape
        self.input_range = self.program.input_range
        elem = self.program.model.graph.output[0].type.tensor_type.elem_type
        self._raw_output = elem != 1  # int64 (TopK indices) rather than float codes
        self.output_dtype = (
            np.dtype(np.int64) if self._raw_output else numpy_dtype(self.output_datatype)
        )

    def check(self, x: np.ndarray) -> np.ndarray:
        """Validate a batch and return it as float32 codes."""
        x = np.asarray(x)
        if x.dtype.kind not in "iuf":
            raise InputError(f"input dtype {x.dtype} is not numeric")
        if x.ndim == len(self.input_shape):
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputError(
                f"input shape {tuple(x.shape)} does not match (N, {', '.join(map(str, self.input_shape))})"
            )
        lo, hi = self.input_range
        if x.size and (x.min() < lo or x.max() > hi):
            raise InputError(f"input values outside [{lo}, {hi}] (got {x.min()}..{x.max()})")
        xf = x.astype(np.float32, copy=False)
        if x.dtype.kind == "f" and not np.array_equal(xf, np.round(xf)):
            raise InputError("input values are not integers")
        return xf

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch (N, *input_shape) of integer codes; returns the output codes."""
        xf = self.check(x)
        (y,) = self.session.run(None, {"x": xf})
        return y if self._raw_output else y.astype(self.output_dtype)
