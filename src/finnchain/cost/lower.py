"""Which FINN hardware layers a QONNX model becomes, segment by segment.

A segment is what lies between two consecutive legal cut points (see ``graph.cuts``): the unit
the planner moves between boards. Each QONNX layer maps to FINN HW ops as FINN's conversion
passes do:

- convolution: FMPadding (when padded) + ConvolutionInputGenerator + MVAU, except a 1x1
  convolution, which is an MVAU alone with stride 1 and no padding, and a DownSampler + MVAU
  with a stride (a residual network's downsampling skip);
- depthwise convolution: FMPadding + ConvolutionInputGenerator (depthwise) + VVAU;
- dense layer (Gemm / MatMul): MVAU;
- the activation quantizer after a convolution or dense layer: thresholds inside its MVAU/VVAU
  (batch norm, bias and ReLU before it are absorbed into those thresholds by streamlining);
  any other activation quantizer: a Thresholding layer;
- average pooling over the whole map: GlobalAccPool (its scale goes into the next thresholds);
  a truncating one (Brevitas' TruncAvgPool2d): GlobalAccPool and a Thresholding layer on the
  sum (see ``finnside/finnchain_steps.py``);
- max pooling: StreamingMaxPool; TopK: LabelSelect;
- a classifier's per-class bias (a dense layer without activation, with a bias, before the
  TopK): a ChannelwiseOp adding the bias in accumulator units (FINN's steps move the scale
  behind it and absorb it into the TopK; see ``finnside/finnchain_steps.py``).
FIFOs and data-width converters between layers depend on the folding: the planner adds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from finnchain.cost.ops import (
    MVAU,
    SWG,
    VVAU,
    AddStreams,
    ChannelwiseOp,
    DownSampler,
    FMPadding,
    Fork,
    GlobalAccPool,
    LabelSelect,
    Op,
    StreamingMaxPool,
    Thresholding,
)
from finnchain.graph.cuts import CutPoint, codes_datatype, compute_nodes, cut_points
from finnchain.graph.model import (
    Codes,
    attributes,
    constant_tensors,
    input_name,
    quantizer_codes,
)

# absorbed into thresholds or pure reshapes: no hardware of their own
ABSORBED = {"Mul", "Add", "Sub", "Div", "Relu", "Flatten", "Reshape", "Identity",
            "BatchNormalization", "Squeeze", "Unsqueeze"}


class LoweringError(ValueError):
    """A node FINN has no hardware for (or that finnchain cannot map)."""


@dataclass(frozen=True)
class Layer:
    """One QONNX layer as FINN HW ops; ``ops[-1]`` is the op that sets the folding."""

    node: str
    ops: tuple[Op, ...]

    @property
    def main(self) -> Op:
        return self.ops[-1]


@dataclass(frozen=True)
class Segment:
    """The layers between two legal cuts; ``cut`` is the cut at its end (None for the last)."""

    index: int
    nodes: tuple[str, ...]
    layers: tuple[Layer, ...]
    cut: CutPoint | None
    in_bytes: int  # bytes per frame entering the segment (the previous cut, or the input)
    in_shape: tuple[int, ...]  # NCHW (or NC) shape entering the segment, batch 1
    in_bits: int  # bits per value entering the segment


def _attrs(node) -> dict:
    a = attributes(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):  # left by explicit_windows
        raise LoweringError(
            f"{node.name} ({node.op_type}): auto_pad={a['auto_pad'].decode()} with an input "
            f"shape that is not known; run qonnx's InferShapes on the model or give explicit "
            f"pads")
    return a


def _codes_of(model: ModelWrapper, node) -> Codes:
    """A quantizer's codes (BipolarQuant: FINN's BIPOLAR, 1 bit, signed)."""
    try:
        return quantizer_codes(model, node)
    except ValueError as exc:
        raise LoweringError(str(exc)) from exc


def _weight_bits(model: ModelWrapper, node, tensor: str) -> int:
    producer = model.find_producer(tensor)
    if producer is None or producer.op_type not in ("Quant", "BipolarQuant"):
        raise LoweringError(f"the weights of {node.name} ({node.op_type}) are not quantized")
    return _codes_of(model, producer).bits


def _hw(shape: list[int]) -> tuple[int, int]:
    return (int(shape[2]), int(shape[3]))


class _Lowering:
    def __init__(self, model: ModelWrapper) -> None:
        self.model = model
        self.const = constant_tensors(model)
        dt = model.get_tensor_datatype(input_name(model))
        self.bits, self.signed = dt.bitwidth(), dt.signed()
        # each computed tensor's bits and sign: a layer reads its own input's, not those of
        # the layer lowered before it (in a residual block, the other branch's accumulator)
        self.types: dict[str, tuple[int, bool]] = {input_name(model): (self.bits, self.signed)}
        self.bias: str | None = None  # a dense layer's bias not yet absorbed into thresholds

    def node(self, node, layers: list[Layer]) -> None:
        known = [self.types[t] for t in node.input if t in self.types]
        if known:  # a residual join takes the wider of its two inputs
            self.bits, self.signed = max(b for b, _ in known), any(s for _, s in known)
        self._lower(node, layers)
        self.types[node.output[0]] = (self.bits, self.signed)

    def crossed(self, tensor: str, bits: int, signed: bool) -> None:
        """The tensor a cut carries, as the next segment receives it (the quantizer's codes)."""
        self.bits, self.signed = bits, signed
        self.types[tensor] = (bits, signed)

    def _lower(self, node, layers: list[Layer]) -> None:
        m, op = self.model, node.op_type
        if op in ("Quant", "BipolarQuant"):
            self.bias = None  # absorbed into the thresholds
            codes = _codes_of(m, node)
            bits, signed = codes.bits, codes.signed
            linear = self._linear_before(node)
            at = next((i for i in range(len(layers) - 1, -1, -1)
                       if linear is not None and layers[i].node == linear.name), None)
            main = layers[at].main if at is not None else None
            if isinstance(main, (MVAU, VVAU)) and not main.obits:
                layers[at] = Layer(layers[at].node, (*layers[at].ops[:-1], replace(main, obits=bits)))
            else:
                shape = m.get_tensor_shape(node.output[0])
                dims = _hw(shape) if len(shape) == 4 else (1, 1)
                layers.append(Layer(node.name, (Thresholding(
                    name=f"Thresholding_{node.name}", node=node.name, channels=int(shape[1]),
                    dims=dims, abits=self.bits, obits=bits),)))
            self.bits, self.signed = bits, signed
        elif op == "Conv":
            layers.append(self.conv(node))
        elif op in ("Gemm", "MatMul"):
            layers.append(self.dense(node))
        elif op == "Add" and not any(t in self.const for t in node.input):  # residual join
            shape = m.get_tensor_shape(node.output[0])
            dims = _hw(shape) if len(shape) == 4 else (1, 1)
            layers.append(Layer(node.name, (AddStreams(
                name=f"AddStreams_{node.name}", node=node.name, channels=int(shape[1]),
                dims=dims, abits=self.bits, obits=self.bits + 1,
                skip_pixels=_skip_pixels(layers, dims)),)))
            self.bits += 1
        elif op == "Trunc":  # Brevitas' TruncAvgPool: thresholds on the pool's sum
            last = layers[-1].main if layers else None
            try:
                codes = quantizer_codes(m, node)
            except ValueError:
                codes = None
            if not isinstance(last, GlobalAccPool) or codes is None:
                raise LoweringError(f"node {node.name} (Trunc): only after an average pool "
                                    "(Brevitas' TruncAvgPool2d) with a constant bit width")
            bits = codes.bits
            layers.append(Layer(node.name, (Thresholding(
                name=f"Thresholding_{node.name}", node=node.name, channels=last.channels,
                dims=(1, 1), abits=self.bits, obits=bits),)))
            self.bits, self.signed = bits, codes.signed
        elif op in ("AveragePool", "GlobalAveragePool"):
            layers.append(self.avgpool(node))
        elif op == "MaxPool":
            layers.append(self.maxpool(node))
        elif op == "TopK":
            shape = m.get_tensor_shape(node.input[0])
            k = int(np.asarray(m.get_initializer(node.input[1])).flatten()[0])
            last = layers[-1].main if layers else None
            if self.bias is not None and isinstance(last, MVAU) and not last.obits:
                layers.append(Layer(self.bias, (ChannelwiseOp(
                    name=f"ChannelwiseOp_{self.bias}", node=self.bias, channels=int(shape[-1]),
                    abits=32, obits=self.bits + 1),)))
                self.bits += 1
            label = LabelSelect(name=f"LabelSelect_{node.name}", node=node.name,
                                labels=int(shape[-1]), k=k, abits=self.bits)
            layers.append(Layer(node.name, (label,)))
            self.bits, self.signed = label.obits, False
        elif op not in ABSORBED:
            raise LoweringError(f"node {node.name} ({op}) has no FINN hardware mapping")

    def _linear_before(self, node):
        """The convolution or dense layer whose accumulator ``node`` (a quantizer) reads,
        through the operations streamlining absorbs into its thresholds; None if another layer
        (a pool, a residual join) is in between. Found by tensor, not by order: in a residual
        block the skip branch's layer can come between a layer and its quantizer."""
        producer = self.model.find_producer(node.input[0])
        while producer is not None and producer.op_type in ABSORBED:
            if producer.op_type == "Add" and not any(t in self.const for t in producer.input):
                return None  # a residual join
            data = next((t for t in producer.input if t and t not in self.const), None)
            producer = self.model.find_producer(data) if data else None
        if producer is not None and producer.op_type in ("Conv", "Gemm", "MatMul"):
            return producer
        return None

    def fork(self, node, layers: list[Layer]) -> None:
        """A computed tensor read by two layers (a residual branch and its skip) leaves through
        FINN's DuplicateStreams."""
        if len(self.model.find_consumers(node.output[0])) < 2:
            return
        shape = self.model.get_tensor_shape(node.output[0])
        layers.append(Layer(node.name, (Fork(
            name=f"DuplicateStreams_{node.name}", node=node.name, channels=int(shape[1]),
            dims=_hw(shape) if len(shape) == 4 else (1, 1), abits=self.bits),)))

    def conv(self, node) -> Layer:
        m, a = self.model, _attrs(node)
        ishape, oshape = m.get_tensor_shape(node.input[0]), m.get_tensor_shape(node.output[0])
        wshape = m.get_tensor_shape(node.input[1])
        cin, cout = int(ishape[1]), int(oshape[1])
        kernel = tuple(int(k) for k in a.get("kernel_shape", wshape[2:]))
        stride = tuple(int(s) for s in a.get("strides", (1, 1)))
        pads = [int(p) for p in a.get("pads", (0, 0, 0, 0))]
        if any(d != 1 for d in a.get("dilations", (1, 1))):
            raise LoweringError(f"{node.name}: dilated convolutions are not supported")
        group = int(a.get("group", 1))
        wbits = _weight_bits(m, node, node.input[1])
        (ih, iw), out_dims = _hw(ishape), _hw(oshape)
        padded = (ih + pads[0] + pads[2], iw + pads[1] + pads[3])
        ops: list[Op] = []
        if any(pads):
            ops.append(FMPadding(name=f"FMPadding_{node.name}", node=node.name, channels=cin,
                                 out_dims=padded, abits=self.bits))
        common = {"wbits": wbits, "abits": self.bits, "asigned": self.signed}
        if group == cin == cout and group > 1:
            ops.append(SWG(name=f"ConvolutionInputGenerator_{node.name}", node=node.name,
                           channels=cin, in_dims=padded, out_dims=out_dims, kernel=kernel,
                           stride=stride, abits=self.bits, depthwise=True))
            ops.append(VVAU(name=f"VVAU_{node.name}", node=node.name, channels=cin,
                            kernel=kernel, out_dims=out_dims, obits=0, **common))
        elif group == 1:
            if kernel == (1, 1) and stride != (1, 1):
                if 1 not in padded and (stride[0] != stride[1] or padded[0] != padded[1]):
                    raise LoweringError(
                        f"{node.name}: a 1x1 convolution with stride {stride} on a "
                        f"{padded[0]}x{padded[1]} map: FINN's DownSampler takes a square map "
                        "with equal strides, or a one-dimensional one")
                ops.append(DownSampler(name=f"DownSampler_{node.name}", node=node.name,
                                       channels=cin, in_dims=padded, stride=max(stride),
                                       abits=self.bits))
            elif kernel != (1, 1) or any(pads):
                ops.append(SWG(name=f"ConvolutionInputGenerator_{node.name}", node=node.name,
                               channels=cin, in_dims=padded, out_dims=out_dims, kernel=kernel,
                               stride=stride, abits=self.bits))
            ops.append(MVAU(name=f"MVAU_{node.name}", node=node.name,
                            mw=cin * kernel[0] * kernel[1], mh=cout,
                            vectors=out_dims[0] * out_dims[1], **common))
        else:
            raise LoweringError(f"{node.name}: grouped convolution (group={group}) is not supported")
        self._after_accumulate(ops[-1])
        return Layer(node.name, tuple(ops))

    def dense(self, node) -> Layer:
        m, a = self.model, _attrs(node)
        wshape = m.get_tensor_shape(node.input[1])
        trans = node.op_type == "Gemm" and a.get("transB", 0)
        mh, mw = (wshape[0], wshape[1]) if trans else (wshape[1], wshape[0])
        op = MVAU(name=f"MVAU_{node.name}", node=node.name, mw=int(mw), mh=int(mh), vectors=1,
                  wbits=_weight_bits(m, node, node.input[1]), abits=self.bits,
                  asigned=self.signed, obits=0)
        self._after_accumulate(op)
        bias = m.get_initializer(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is None and len(node.input) > 2 and node.input[2]:
            producer = m.find_producer(node.input[2])  # a quantized bias: Quant of constants
            if producer is not None and producer.input[0] in self.const:
                bias = m.get_initializer(producer.input[0])
        if bias is not None and np.size(bias) > 1 and np.any(np.asarray(bias) != 0):
            self.bias = node.name
        return Layer(node.name, (op,))

    def _after_accumulate(self, op: MVAU | VVAU) -> None:
        self.bits, self.signed = op.acc(), True

    def avgpool(self, node) -> Layer:
        m, a = self.model, _attrs(node)
        ishape = m.get_tensor_shape(node.input[0])
        dims = _hw(ishape)
        if node.op_type == "AveragePool" and (
            tuple(a.get("kernel_shape", ())) != dims or any(a.get("pads", (0,)))
        ):
            raise LoweringError(f"{node.name}: only average pooling over the whole map is supported")
        obits = self.bits + math.ceil(math.log2(dims[0] * dims[1]))
        op = GlobalAccPool(name=f"GlobalAccPool_{node.name}", node=node.name,
                           channels=int(ishape[1]), dims=dims, abits=self.bits, obits=obits)
        self.bits = obits
        return Layer(node.name, (op,))

    def maxpool(self, node) -> Layer:
        m, a = self.model, _attrs(node)
        ishape = m.get_tensor_shape(node.input[0])
        k = tuple(a.get("kernel_shape", (2, 2)))
        if k[0] != k[1] or tuple(a.get("strides", (1, 1))) != k or any(a.get("pads", (0,))):
            raise LoweringError(f"{node.name}: only square non-overlapping max pooling is supported")
        return Layer(node.name, (StreamingMaxPool(
            name=f"StreamingMaxPool_{node.name}", node=node.name, channels=int(ishape[1]),
            in_dims=_hw(ishape), kernel=int(k[0]), abits=self.bits),))


def input_bytes(model: ModelWrapper) -> int:
    """Bytes per frame of the model input (packed, as the client sends it)."""
    from finnchain.graph.cuts import nhwc
    from finnchain.graph.pack import packed_bytes

    name = input_name(model)
    shape = tuple(model.get_tensor_shape(name))
    dt = model.get_tensor_datatype(name)
    if not dt.is_integer():
        raise LoweringError(
            f"the model's input {name!r} is {dt.name}: the first board takes integer images "
            f"from the client, as FINN's input DMA does. Make the model take UINT8 images with the "
            f"/255 and normalisation inside it, as finn-examples does, then mark its input "
            f"(qonnx: model.set_tensor_datatype({name!r}, DataType['UINT8']))")
    return packed_bytes(nhwc((1, *shape[1:])), dt)


def _skip_pixels(layers: list[Layer], join: tuple[int, int]) -> int:
    """Pixels of the join's ``join`` map that the skip side brings while the main branch (the
    layers since the last fork) fills: each window generator takes in the rows and pixels its
    first window needs past the padding before it gives anything out ((Kh-1-top) rows and
    Kw-top pixels of its input, padding taken as even: (K-1)/2 on top and left), scaled to the
    join's map by the ratio of the pixel counts."""
    start = max((i for i, layer in enumerate(layers) if isinstance(layer.main, Fork)), default=-1)
    total = 0.0
    for layer in layers[start + 1:]:
        padded = any(isinstance(op, FMPadding) for op in layer.ops)
        for op in layer.ops:
            if isinstance(op, SWG):
                (kh, kw), (ih, iw) = op.kernel, op.in_dims
                top, left = ((kh - 1) // 2, (kw - 1) // 2) if padded else (0, 0)
                rows, width = kh - 1 - top, iw - 2 * left
                pixels = rows * width + (kw - left)
                total += pixels * join[0] * join[1] / ((ih - 2 * top) * width)
    return math.ceil(total)


def _labels_from_a_vector(model: ModelWrapper, top_k) -> None:
    """Refuse a map flattened straight into the top-k: FINN's streamlining leaves the layout
    change and the Flatten in front of LabelSelect outside the hardware (a map larger than
    1x1: "partition depends on itself"; 1x1: LabelSelect gets a 4-D input). Its flows put a
    fully connected layer between them, as Brevitas' examples do."""
    node = model.find_producer(top_k.input[0])
    while node is not None and node.op_type in ABSORBED | {"Quant", "BipolarQuant", "Trunc"}:
        shape = model.get_tensor_shape(node.input[0])
        if node.op_type in ("Flatten", "Reshape") and shape and len(shape) == 4:
            raise LoweringError(
                f"{node.name} ({node.op_type}) flattens a {'x'.join(map(str, shape[1:]))} map "
                f"straight into the top-k {top_k.name}: FINN's LabelSelect takes the vector "
                f"of a fully connected layer, and its streamlining leaves this {node.op_type} "
                f"outside the hardware. Put a MatMul or Gemm layer between them, as Brevitas' "
                f"examples do")
        node = model.find_producer(node.input[0])


def segments(model: ModelWrapper) -> list[Segment]:
    """The model as a list of segments between consecutive legal cuts, lowered to FINN ops."""
    in_bytes = input_bytes(model)  # an integer input first: the first thing a user must fix
    cuts = cut_points(model)
    compute = compute_nodes(model)
    if not compute or compute[-1].op_type != "TopK":
        last = compute[-1] if compute else None
        raise LoweringError(
            f"the model ends in {last.op_type + ' ' + repr(last.name) if last else 'nothing'}, "
            f"not a TopK: the last board returns class labels, as FINN's LabelSelect does. Add "
            f"the top-k as FINN's flows do (qonnx: model.transform(InsertTopK(k=1))"
            f".transform(InferShapes())) and plan that model")
    _labels_from_a_vector(model, compute[-1])
    low = _Lowering(model)
    out: list[Segment] = []
    start = 0
    in_shape = (1, *model.get_tensor_shape(input_name(model))[1:])
    for k, cut in enumerate([*cuts, None]):
        end = cut.nodes_before if cut else len(compute)
        in_bits = low.bits
        layers: list[Layer] = []
        if start:  # the tensor that crossed the cut before is forked on this side
            low.fork(compute[start - 1], layers)
        for node in compute[start:end]:
            low.node(node, layers)
            if node is not compute[end - 1] or cut is None:
                low.fork(node, layers)
        if not layers:
            raise LoweringError(f"segment {k} (nodes {start}..{end}) has no hardware layer")
        if cut is not None:
            dt = codes_datatype(model, model.find_producer(cut.tensor))
            low.crossed(cut.tensor, dt.bitwidth(), dt.signed())
        out.append(Segment(index=k, nodes=tuple(n.name for n in compute[start:end]),
                           layers=tuple(layers), cut=cut, in_bytes=in_bytes,
                           in_shape=tuple(int(d) for d in in_shape), in_bits=in_bits))
        start = end
        if cut is not None:
            in_bytes, in_shape = cut.bytes_per_frame, cut.shape
    return out
