"""Loading QONNX models and small facts about their graphs used across finnchain."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes


def load(model: str | Path | ModelWrapper | onnx.ModelProto) -> ModelWrapper:
    """A ModelWrapper from a path, a ModelProto or a ModelWrapper (returned as is)."""
    if isinstance(model, ModelWrapper):
        return model
    if isinstance(model, onnx.ModelProto):
        return ModelWrapper(model)
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        return ModelWrapper(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ValueError(f"{path} is not an ONNX model: {exc}") from exc


def save(wrapped: ModelWrapper, path: Path) -> Path:
    """Write the model; the bytes depend only on the graph (no timestamps, fixed producer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    onnx.save(wrapped.model, buf)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def with_batch(model: ModelWrapper, batch: int) -> ModelWrapper:
    """The same model for another batch size (shapes re-inferred)."""
    if model.get_tensor_shape(model.graph.input[0].name)[0] == batch:
        return model
    return model.transform(ChangeBatchSize(batch)).transform(InferShapes())


def input_name(model: ModelWrapper) -> str:
    return model.graph.input[0].name


def output_name(model: ModelWrapper) -> str:
    return model.graph.output[0].name


def constant_tensors(model: ModelWrapper) -> set[str]:
    """Initializers and every tensor computed only from them (one pass over the sorted graph)."""
    const = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if all(t in const for t in node.input if t):
            const.update(node.output)
    return const


def is_pow2(values: np.ndarray) -> bool:
    """Every entry a positive power of two (so that scaling by it is exact in float)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or np.any(v <= 0) or not np.all(np.isfinite(v)):
        return False
    m, _ = np.frexp(v)
    return bool(np.all(m == 0.5))
