"""A stage's QONNX rewritten, exactly, into forms FINN v0.10.1's front-end accepts.

Each rewrite computes the same function (tested against qonnx's reference on every stage):

- **Unsigned identity quantizer** (a ``Quant`` with ``signed=0`` whose input does not come from
  a ``Relu``: finnchain's image input quantizer, MobileNetV1's quantizer after the average
  pool). FINN's ``step_qonnx_to_finn`` refuses it ("FINN only supports signed Quant nodes for
  identity activations"). An unsigned quantizer with zero point 0 maps every negative input to
  code 0, which is what a ``Relu`` in front of it does as well, so a ``Relu`` is inserted and
  FINN's Relu handler turns the pair into thresholds.
- **Average pool over the whole map** (``AveragePool`` whose kernel is the input's height and
  width, no padding): ``GlobalAveragePool``, which FINN maps to a GlobalAccPool HW layer and a
  scale it absorbs into the next thresholds. The two compute the same mean.
"""

from __future__ import annotations

from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import SortGraph
from qonnx.transformation.infer_shapes import InferShapes

from finnchain.graph.model import attributes, constant_tensors, quantizer_codes


def _copy(model: ModelWrapper) -> ModelWrapper:
    return ModelWrapper(model.model.__class__.FromString(model.model.SerializeToString()))


def prepare_for_finn(model: ModelWrapper) -> ModelWrapper:
    """A copy of ``model`` with the rewrites above applied (the original is not changed)."""
    m = _copy(model)
    const = constant_tensors(m)
    changed = False
    for node in list(m.graph.node):
        if node.op_type == "Quant" and node.input[0] not in const:
            try:
                codes = quantizer_codes(m, node)
            except ValueError:  # a computed bit width: the planner has named it already
                continue
            producer = m.find_producer(node.input[0])
            zp = m.get_initializer(node.input[2])
            if codes.signed or (producer is not None and producer.op_type == "Relu"):
                continue
            if zp is None or zp.size != 1 or float(zp.flatten()[0]) != 0 or codes.narrow:
                continue
            relu_out = node.input[0] + "_nonneg"
            relu = helper.make_node("Relu", [node.input[0]], [relu_out],
                                    name=f"{node.name}_Relu")
            node.input[0] = relu_out
            m.graph.node.insert(list(m.graph.node).index(node), relu)
            changed = True
        elif node.op_type == "AveragePool":
            a = attributes(node)
            shape = m.get_tensor_shape(node.input[0])
            if (len(shape) == 4 and tuple(a.get("kernel_shape", ())) == tuple(shape[2:])
                    and not any(a.get("pads", (0,))) and not a.get("ceil_mode", 0)):
                node.op_type = "GlobalAveragePool"
                del node.attribute[:]
                changed = True
    if changed:
        m = m.transform(SortGraph()).transform(InferShapes())
    return m
