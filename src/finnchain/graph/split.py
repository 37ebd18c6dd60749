"""Split a QONNX model at cut points into one QONNX model per stage.

Each stage is a valid FINN input on its own: its input (but the first stage's image) and its
output (but the last stage's) are integer tensors with a FINN datatype. The scale leaves the
upstream stage as its last operation (``codes = value / scale + zero_point``) and enters the
downstream stage as its first (``value = (codes - zero_point) * scale``), a per-channel scale
as a [1, C, 1, 1] constant. With power-of-two
scales both are exact, so the chain of stages computes exactly what the whole model computes;
with a learned scale the emulated fabric (and FINN) take the codes as they are, and only qonnx's
float reference of a stage may see ``value / scale`` an ulp off an integer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from finnchain.graph.cuts import CutPoint, cut_points
from finnchain.graph.model import input_name, output_name


class SplitError(ValueError):
    """Cut points that do not describe a valid split; the message names them."""


def resolve_cuts(model: ModelWrapper, cuts: list[int | str | CutPoint]) -> list[CutPoint]:
    """Cut points from indices into :func:`cut_points`, tensor names, or CutPoints."""
    legal = cut_points(model)
    by_name = {c.tensor: c for c in legal}
    out: list[CutPoint] = []
    for c in cuts:
        if isinstance(c, CutPoint):
            c = c.tensor
        if isinstance(c, (int, np.integer)):
            if not 0 <= int(c) < len(legal):
                raise SplitError(f"cut index {c} out of range: the model has {len(legal)} legal cuts")
            out.append(legal[int(c)])
        elif c in by_name:
            out.append(by_name[c])
        else:
            raise SplitError(f"{c!r} is not a legal cut point of this model")
    idx = [c.index for c in out]
    if idx != sorted(set(idx)):
        raise SplitError(f"cut points must be distinct and in graph order, got {idx}")
    return out


def _ancestors(model: ModelWrapper, tensor: str, stop: str) -> list[onnx.NodeProto]:
    """Nodes needed to compute ``tensor`` from ``stop`` (and constants), in graph order."""
    nodes = model.graph.node
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}  # ONNX lets nodes go unnamed
    needed: set[int] = set()
    todo = [tensor]
    seen: set[str] = set()
    while todo:
        t = todo.pop()
        if t in seen or t == stop:
            continue
        seen.add(t)
        k = producer.get(t)
        if k is None:
            if model.get_initializer(t) is None:
                raise SplitError(f"tensor {t} reaches the model input without passing the cut {stop}")
            continue
        needed.add(k)
        todo.extend(i for i in nodes[k].input if i)
    return [n for k, n in enumerate(nodes) if k in needed]


def _stage(
    model: ModelWrapper, first: CutPoint | None, last: CutPoint | None, name: str
) -> ModelWrapper:
    src_in = first.tensor if first else input_name(model)
    src_out = last.tensor if last else output_name(model)
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in _ancestors(model, src_out, src_in)]
    used = {i for n in nodes for i in n.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    if first:
        codes_in = f"{first.tensor}_codes"
        prefix: list[onnx.NodeProto] = []
        x = codes_in
        if first.zero_point:
            x = _emit(prefix, inits, "Sub", x, first.zero_point, f"{first.tensor}_unzp")
        _emit(prefix, inits, "Mul", x, first.scale_array(), first.tensor)
        nodes = prefix + nodes
        in_vi = helper.make_tensor_value_info(codes_in, TensorProto.FLOAT, list(first.shape))
    else:
        in_vi = onnx.ValueInfoProto.FromString(model.graph.input[0].SerializeToString())
    if last:
        codes_out = f"{last.tensor}_codes"
        if last.zero_point:
            x = _emit(nodes, inits, "Div", last.tensor, last.scale_array(), f"{last.tensor}_div")
            _emit(nodes, inits, "Add", x, last.zero_point, codes_out)
        else:
            _emit(nodes, inits, "Div", last.tensor, last.scale_array(), codes_out)
        out_vi = helper.make_tensor_value_info(codes_out, TensorProto.FLOAT, list(last.shape))
    else:
        out_vi = onnx.ValueInfoProto.FromString(model.graph.output[0].SerializeToString())
    graph = helper.make_graph(nodes, name, [in_vi], [out_vi], inits)
    stage = ModelWrapper(qonnx_make_model(graph, opset_imports=list(model.model.opset_import)))
    for t in stage.get_all_tensor_names():
        if t in (in_vi.name, out_vi.name):
            continue
        dt = model.get_tensor_datatype(t) if t in _names(model) else None
        if dt is not None and dt != DataType["FLOAT32"]:
            stage.set_tensor_datatype(t, dt)
    stage = stage.transform(InferShapes()).transform(InferDataTypes())
    if first:
        stage.set_tensor_datatype(in_vi.name, DataType[first.datatype])
    else:
        stage.set_tensor_datatype(in_vi.name, model.get_tensor_datatype(src_in))
    if last:
        stage.set_tensor_datatype(out_vi.name, DataType[last.datatype])
    return stage


def _names(model: ModelWrapper) -> set[str]:
    return set(model.get_all_tensor_names())


def _emit(nodes, inits, op: str, x: str, value: float | np.ndarray, out: str) -> str:
    const = f"{out}_param"
    inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), const))
    nodes.append(helper.make_node(op, [x, const], [out], name=f"{out}_{op}"))
    return out


def split(model: ModelWrapper, cuts: list[int | str | CutPoint]) -> list[ModelWrapper]:
    """One QONNX model per stage for the cut points ``cuts`` (len(cuts) + 1 stages)."""
    points = resolve_cuts(model, cuts)
    bounds: list[CutPoint | None] = [None, *points, None]
    return [
        _stage(model, bounds[k], bounds[k + 1], f"stage{k}") for k in range(len(bounds) - 1)
    ]
