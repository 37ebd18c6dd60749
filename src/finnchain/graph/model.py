"""Loading QONNX models and small facts about their graphs used across finnchain."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes

from finnchain.finn.finnside import finnchain_rules as rules
from finnchain.finn.finnside.finnchain_rules import Codes


def load(model: str | Path | ModelWrapper | onnx.ModelProto) -> ModelWrapper:
    """A ModelWrapper from a path, a ModelProto or a ModelWrapper (returned itself). Windowed
    nodes get their attributes written out (``explicit_windows``; a ModelWrapper's in place,
    so that one handed straight to the planner is read as a file would be)."""
    if isinstance(model, ModelWrapper):
        return explicit_windows(model)
    if isinstance(model, onnx.ModelProto):
        return explicit_windows(ModelWrapper(model))
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        wrapped = ModelWrapper(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ValueError(f"{path} is not an ONNX model: {exc}") from exc
    if not wrapped.graph.node or not wrapped.graph.input or not wrapped.graph.output:
        # an empty file parses as an empty ModelProto
        raise ValueError(f"{path} is not an ONNX model: it has no graph (no nodes, inputs or "
                         f"outputs; {path.stat().st_size} bytes)")
    dangling = dangling_tensors(wrapped.model)
    if dangling:
        raise ValueError(f"{path} is not a whole ONNX graph: {dangling[0]}"
                         + (f" (and {len(dangling) - 1} more)" if len(dangling) > 1 else "")
                         + "; a damaged or hand-edited file? Export the model again")
    return explicit_windows(wrapped)


def dangling_tensors(model: onnx.ModelProto) -> list[str]:
    """Where a tensor is read that nothing defines (no graph input, initializer or node output)
    or a graph output that no node writes: what a damaged file or a renamed tensor leaves. A
    few overwritten bytes in a tensor name still parse, and the cut finder then reads the
    graph as two branches; this names the first such place instead."""
    graph = model.graph
    defined = {t.name for t in graph.input} | {t.name for t in graph.initializer}
    defined |= {o for n in graph.node for o in n.output if o}
    found = [f"node {n.name or n.op_type} ({n.op_type}) reads {t!r}, which no node, input or "
             f"initializer defines" for n in graph.node for t in n.input if t and t not in defined]
    found += [f"the graph output {o.name!r} is written by no node" for o in graph.output
              if o.name not in defined]
    return found


WINDOWED = ("Conv", "MaxPool", "AveragePool")


def explicit_windows(model: ModelWrapper) -> ModelWrapper:
    """Write out the attributes ONNX lets a Conv or pool leave to defaults (kernel_shape from
    the weights, strides, dilations and pads, group) and turn ``auto_pad`` into the pads it
    means, in place: FINN's lowering reads them from the node (a Conv without ``pads`` fails
    in its LowerConvsToMatMul) and so does every step here. A node whose input shape is not
    known keeps its ``auto_pad`` (the planner then names it)."""
    for node in model.graph.node:
        if node.op_type not in WINDOWED:
            continue
        attrs = attributes(node)
        kernel = list(attrs.get("kernel_shape", ()))
        if not kernel and node.op_type == "Conv":
            w = model.get_initializer(node.input[1])
            wshape = w.shape if w is not None else model.get_tensor_shape(node.input[1])
            kernel = [int(k) for k in wshape[2:]] if wshape else []
        if not kernel:
            continue
        rank = len(kernel)
        new: dict = {"kernel_shape": kernel, "strides": attrs.get("strides", [1] * rank)}
        if node.op_type != "AveragePool":
            new["dilations"] = attrs.get("dilations", [1] * rank)
        if node.op_type == "Conv":
            new["group"] = attrs.get("group", 1)
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("NOTSET", "VALID"):
            new["pads"] = attrs.get("pads", [0] * 2 * rank) if auto == "NOTSET" else [0] * 2 * rank
        else:
            shape = model.get_tensor_shape(node.input[0])
            if not shape or len(shape) != rank + 2 or not all(isinstance(d, int) for d in shape):
                continue
            new["pads"] = _same_pads(auto, shape[2:], kernel, new["strides"],
                                     new.get("dilations", [1] * rank))
        for name, value in new.items():
            if attrs.get(name) != value:
                _set_attr(node, name, value)
        if "auto_pad" in attrs:
            node.attribute.remove(next(a for a in node.attribute if a.name == "auto_pad"))
    return model


def _same_pads(auto: str, dims: list[int], kernel: list[int], strides: list[int],
               dilations: list[int]) -> list[int]:
    """ONNX's SAME_UPPER/SAME_LOWER as explicit pads (begins, then ends): the output is
    ceil(input / stride), the odd pixel at the end (UPPER) or the beginning (LOWER)."""
    begins, ends = [], []
    for d, k, s, dil in zip(dims, kernel, strides, dilations):
        total = max((-(-d // s) - 1) * s + (k - 1) * dil + 1 - d, 0)
        small = total // 2
        begins.append(small if auto == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


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


def attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes, decoded (ints, floats, bytes, lists)."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def quantizer_codes(model: ModelWrapper, node: onnx.NodeProto) -> Codes:
    """The integer codes of a quantizer node (Quant, BipolarQuant, Trunc), read as every part
    of finnchain reads them, FINN's side included: ``finnchain_rules.quantizer_codes`` on its
    decoded attributes and its bit-width initializer. ValueError when that width is computed
    rather than a constant."""
    i = rules.bits_input(node.op_type, len(node.input))
    bits = None if i is None else model.get_initializer(node.input[i])
    if i is not None and bits is None:
        raise ValueError(f"quantizer {node.name} has a computed bit width")
    return rules.quantizer_codes(node.op_type, attributes(node), bits)
