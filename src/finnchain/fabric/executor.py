"""The emulated accelerator: a stage run bit-exactly on the CPU by onnxruntime.

``Executor(model)`` compiles the QONNX model once (see :mod:`finnchain.fabric.compile`) and then
runs batches of integer codes, as they arrive from the wire or as uint8 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from finnchain.fabric.compile import compile_model
from finnchain.fabric.program import UNSAFE_FUSIONS, InputError, Runner  # noqa: F401 (re-exported)
from finnchain.graph.model import load, output_name


def numpy_dtype(dt: DataType) -> np.dtype:
    """The smallest numpy integer dtype that holds every value of a FINN integer datatype."""
    for cand in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64):
        info = np.iinfo(cand)
        if info.min <= dt.min() and dt.max() <= info.max:
            return np.dtype(cand)
    return np.dtype(np.int64)


class Executor(Runner):
    """A compiled, bit-exact CPU executor for one QONNX model (a whole network or a stage)."""

    def __init__(self, model: str | Path | ModelWrapper, threads: int = 0) -> None:
        self.model = load(model)
        self.program = compile_model(self.model)
        out = output_name(self.model)
        self.output_datatype = self.model.get_tensor_datatype(out)
        self.output_shape = tuple(self.model.get_tensor_shape(out))[1:]
        elem = self.program.model.graph.output[0].type.tensor_type.elem_type
        raw = elem != 1  # int64 (TopK indices) rather than float codes
        dtype = np.dtype(np.int64) if raw else numpy_dtype(self.output_datatype)
        super().__init__(self.program.model.SerializeToString(), self.program.input_shape,
                         self.program.input_range, raw, dtype.str, threads,
                         self.program.weights)
