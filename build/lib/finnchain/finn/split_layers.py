"""Split a layer by output channels in a QONNX graph, so that FINN builds what the plan costed.

The planner may place part of a 1x1 or dense layer's weights in block RAM and the rest in LUTs
(``plan.folding``); FINN has one memory style per MVAU, so the layer becomes two layers. The
layer's whole chain up to its activation quantizer (convolution or matrix product, batch-norm
Mul/Add, ReLU, Quant) is duplicated, each copy keeping its share of the output channels (every
per-channel constant is sliced), and a Concat along the channels joins the two quantized
outputs under the original output name. FINN makes that DuplicateStreams -> two MVAUs ->
StreamingConcat. The result computes exactly what the original does (tested).
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import RemoveUnusedTensors, SortGraph
from qonnx.transformation.infer_shapes import InferShapes

ELEMENTWISE = {"Mul", "Add", "Sub", "Div", "Relu", "Quant"}


class SplitLayerError(ValueError):
    """A layer that cannot be split as asked; the message names it."""


def _chain(model: ModelWrapper, node) -> list:
    """The layer node and the elementwise nodes after it, up to and including its quantizer."""
    chain = [node]
    while chain[-1].op_type != "Quant" or chain[-1] is node:
        consumers = model.find_consumers(chain[-1].output[0]) or []
        if len(consumers) != 1 or consumers[0].op_type not in ELEMENTWISE:
            break
        chain.append(consumers[0])
        if consumers[0].op_type == "Quant":
            break
    return chain


def _channel_axis(node, shape: tuple[int, ...]) -> int:
    if node.op_type == "Conv":
        return 1
    return len(shape) - 1


def _slice_const(model: ModelWrapper, name: str, channels: int, axis: int, lo: int, hi: int,
                 suffix: str) -> str:
    """A per-channel constant's slice as a new initializer (shared if not per-channel)."""
    value = model.get_initializer(name)
    if value is None:
        return name
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1:
        return name
    # a per-channel constant has the channel count on one axis: the output axis of the layer
    ax = axis if value.ndim > axis and value.shape[axis] == channels else None
    if ax is None:
        ax = next((i for i, d in enumerate(value.shape) if d == channels), None)
    if ax is None:
        return name
    new = f"{name}{suffix}"
    model.set_initializer(new, np.take(value, range(lo, hi), axis=ax).astype(value.dtype))
    dt = model.get_tensor_datatype(name)
    if dt is not None:
        model.set_tensor_datatype(new, dt)
    return new


def _weight_axis(node, model: ModelWrapper) -> int:
    """Axis of the output channels in the layer's weight tensor."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return 0 if attrs.get("transB", 0) else 1
    return 1  # MatMul: [MW, MH]


def _slice_tensor(model: ModelWrapper, name: str, channels: int, axis: int, lo: int, hi: int,
                  suffix: str, new_nodes: list) -> str:
    """A constant input sliced to channels [lo, hi): an initializer, or a quantizer of
    constants (weights, biases) copied with sliced inputs. Anything else is shared."""
    if model.get_initializer(name) is not None:
        return _slice_const(model, name, channels, axis, lo, hi, suffix)
    producer = model.find_producer(name)
    if producer is None or producer.op_type != "Quant" or model.get_initializer(
            producer.input[0]) is None:
        return name
    ins = [_slice_const(model, t, channels, axis, lo, hi, suffix) for t in producer.input]
    copy = helper.make_node("Quant", ins, [f"{name}{suffix}"], name=f"{producer.name}{suffix}",
                            domain=producer.domain)
    copy.attribute.extend(producer.attribute)
    new_nodes.append(copy)
    return copy.output[0]


def split_layer(model: ModelWrapper, node_name: str, first: int) -> ModelWrapper:
    """``node_name``'s chain split into output channels [0, first) and [first, C)."""
    node = model.get_node_from_name(node_name)
    if node is None or node.op_type not in ("Conv", "Gemm", "MatMul"):
        raise SplitLayerError(f"no convolution or dense layer named {node_name!r} to split")
    out_shape = model.get_tensor_shape(node.output[0])
    axis = _channel_axis(node, tuple(out_shape))
    channels = int(out_shape[axis])
    if not 0 < first < channels:
        raise SplitLayerError(f"{node_name}: cannot split {channels} channels at {first}")
    chain = _chain(model, node)
    final = chain[-1].output[0]
    # constant producers only the chain uses are replaced by their sliced copies
    old_consts = [p for t in node.input[1:] if (p := model.find_producer(t)) is not None]
    outs, new_nodes = [], []
    for part, (lo, hi) in enumerate(((0, first), (first, channels))):
        sfx = f"_part{part}"
        renamed: dict[str, str] = {}
        for k, n in enumerate(chain):
            ins = []
            for j, t in enumerate(n.input):
                if t in renamed:
                    ins.append(renamed[t])
                elif k == 0 and j == 0:
                    ins.append(t)  # the layer's input is shared by both parts
                elif k == 0 and j == 1:
                    ins.append(_slice_tensor(model, t, channels, _weight_axis(node, model), lo,
                                             hi, sfx, new_nodes))
                elif k == 0:
                    ins.append(_slice_tensor(model, t, channels, 0, lo, hi, sfx, new_nodes))
                else:
                    ins.append(_slice_tensor(model, t, channels, axis, lo, hi, sfx, new_nodes))
            out = f"{n.output[0]}{sfx}"
            copy = helper.make_node(n.op_type, ins, [out], name=f"{n.name}{sfx}", domain=n.domain)
            copy.attribute.extend(n.attribute)
            new_nodes.append(copy)
            renamed[n.output[0]] = out
            dt = model.get_tensor_datatype(n.output[0])
            if dt is not None and n.op_type == "Quant":
                model.set_tensor_datatype(out, dt)
        outs.append(renamed[final])
    new_nodes.append(helper.make_node("Concat", outs, [final], name=f"Concat_{node_name}",
                                      axis=axis))
    for n in [*chain, *(p for p in old_consts if p.op_type == "Quant")]:
        model.graph.node.remove(n)
    model.graph.node.extend(new_nodes)
    return model.transform(SortGraph()).transform(RemoveUnusedTensors()).transform(InferShapes())
