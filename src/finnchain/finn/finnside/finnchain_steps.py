"""finnchain's build steps for FINN v0.10.1, on FINN's own transformations.

This file is copied into every finnchain build folder and runs inside FINN's environment (FINN's
docker, or the environment `finnchain finn-env` makes): it imports FINN and qonnx only, never
finnchain. The folder's ``build.py`` passes these steps to FINN's ``build_dataflow_cfg``.

Why FINN's default step list is not enough for finnchain's stages (each measured on FINN
v0.10.1's own compiler):
- its ``step_convert_to_hw`` never infers VVAUs, so a stage with a depthwise convolution fails
  at the dataflow partition; finn-examples builds MobileNetV1 with steps of its own for the
  same reason (streamline, lower convolutions, convert to HW layers), which these follow;
- a per-class bias before the classifier's TopK (Mul by the accumulator scale, then Add)
  keeps Mul, Add and TopK outside the dataflow partition, so the accelerator would return
  logits; when the bias is a whole number of accumulator steps the Mul moves behind the Add
  (``MoveScalarMulPastIntegerAdd``), FINN absorbs it into the TopK and the Add becomes a
  ChannelwiseOp in hardware, so the stage ends in a LabelSelect as the plan says;
- layers the plan splits by output channels (weights part in block RAM, part in LUTs) are
  split here, after conversion to HW layers, as DuplicateStreams -> two MVAUs ->
  StreamingConcat: each MVAU keeps its share of the weights and thresholds, so the split
  computes exactly what the layer did (``SplitMVAU``).
- a stage that starts at a cut with a scale per channel (Brevitas' MobileNet, ahead of a
  depthwise layer) keeps its input's integer datatype when FINN moves that scale past the
  depthwise layer (``MoveMulPastDWConvKeepingInputTypes``), or the layer is no VVAU;
- residual networks: a stage whose input forks gets a node before the fork
  (``GiveForkedInputAProducer``, ``MergeTwinTransposes``), without which streamlining stops
  on the join and no DuplicateStreams is made; and FINN's names for the two branches' layers
  follow qonnx's topological sort, not the plan, so the folding config is applied after the
  nodes get the plan's names by kind and dimensions (``step_finnchain_apply_folding``).
The steps also record which HW nodes FINN made and which it left outside the dataflow
partition (``step_finnchain_nodes``), so that finnchain can check them against the plan; FINN's
own PYNQ driver says what the stage exchanges with its DMAs (``finnchain_driver``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import finn.transformation.fpgadataflow.convert_to_hw_layers as to_hw
import finn.transformation.streamline.absorb as absorb
import finn.transformation.streamline.reorder as reorder
import numpy as np
import qonnx.core.data_layout as DataLayout
from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
from finn.transformation.qonnx.quant_act_to_multithreshold import (
    default_filter_function_generator,
)
from finn.transformation.streamline import Streamline
from finn.transformation.streamline.collapse_repeated import CollapseRepeatedMul
from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
from finn.util.fpgadataflow import is_fpgadataflow_node
from finnchain_rules import quantizer_codes, whole_steps  # (this folder's own copy)
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
from qonnx.transformation.double_to_single_float import DoubleToSingleFloat
from qonnx.transformation.general import (
    ApplyConfig,
    GiveReadableTensorNames,
    GiveUniqueNodeNames,
    RemoveUnusedTensors,
    SortGraph,
)
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
from qonnx.transformation.remove import RemoveIdentityOps
from qonnx.util.cleanup import cleanup_model

HERE = Path(__file__).resolve().parent
META = "finnchain.json"
STATUS = "finnchain-status.json"
NODES_REPORT = "finnchain_nodes.json"
HW_DOMAIN = "finn.custom_op.fpgadataflow"


def meta() -> dict:
    """The folder's finnchain.json: stage, board, split layers (written by finnchain)."""
    return json.loads((HERE / META).read_text())


# -- boards FINN does not know ------------------------------------------------------------------
def register_board(board: dict) -> None:
    """Register a Zynq-7000 board FINN lacks (the Zedboard) as FINN users do for such boards:
    its part in ``pynq_part_map``, its 64-bit HP port in ``pynq_native_port_width``, and a branch
    in FINN's Zynq shell Tcl template selecting its Vivado board definition and the zynq_7000 PS.
    FINN's checkout is not changed: this happens in the build's own process."""
    from finn.transformation.fpgadataflow import templates
    from finn.util import basic

    name = board["finn_name"]
    if name in basic.pynq_part_map:
        return
    basic.pynq_part_map[name] = board["part"]
    basic.pynq_native_port_width[name] = int(board["port_bits"])
    select = ""
    if board.get("vivado_board_part"):
        select = ("    set_property board_part [lindex [get_board_parts -quiet {}] end] "
                  "[current_project]\n".format(board["vivado_board_part"]))
    anchor = '} elseif {$BOARD == "Pynq-Z1"} {'
    branch = (f'}} elseif {{$BOARD == "{name}"}} {{\n    set ZYNQ_TYPE "{board["zynq"]}"\n'
              f'{select}{anchor}')
    templates.custom_zynq_shell_template = templates.custom_zynq_shell_template.replace(
        anchor, branch, 1)


# -- transformations of our own -------------------------------------------------------------------
class MoveScalarMulPastIntegerAdd(Transformation):
    """Mul(s) -> Add(b) becomes Add(n) -> Mul(s) where s is a positive scalar and b is a whole
    number n of steps s for every channel (``whole_steps``: both orders compute x*s + b, up
    to float32's rounding of the product b a quantized bias was stored as). Used before a TopK,
    where FINN then absorbs the scalar Mul into the TopK (the order of the scores is kept) and
    turns the integer Add into a ChannelwiseOp."""

    def apply(self, model):
        for n in model.graph.node:
            if n.op_type != "Mul" or model.is_fork_node(n):
                continue
            add = model.find_consumer(n.output[0])
            if add is None or add.op_type != "Add":
                continue
            s = model.get_initializer(n.input[1])
            b = model.get_initializer(add.input[1])
            if s is None or b is None or s.size != 1 or float(s.flatten()[0]) <= 0:
                continue
            after = model.find_consumer(add.output[0])
            if after is None or after.op_type != "TopK":
                continue
            steps = whole_steps(b, s)
            if steps is None:
                continue
            x, mid, out = n.input[0], n.output[0], add.output[0]
            model.set_initializer(add.input[1], steps.astype(np.float32))
            add.input[0], add.output[0] = x, mid
            n.input[0], n.output[0] = mid, out
            model.set_tensor_datatype(mid, DataType["FLOAT32"])
            return model.transform(SortGraph()), True
        return model, False


def _reroute(model: ModelWrapper, old: str, new: str) -> None:
    """Every node that reads tensor ``old`` reads ``new`` instead."""
    for consumer in model.find_consumers(old):
        consumer.input[list(consumer.input).index(old)] = new


class AbsorbInputFlatten(Transformation):
    """A stage that starts with a Flatten of its (N, C, H, W) input into a dense layer (a cut
    just before a classifier, or TFC's image) takes its input flattened in NHWC order instead:
    the dense layer's weight rows are reordered from CHW to HWC (as FINN's RemoveCNVtoFCFlatten
    does for a Transpose inside the graph) and the Flatten goes. The bytes on the wire do not change: they
    are NHWC already. FINN's RemoveCNVtoFCFlatten itself fails on a Flatten of the graph input."""

    def apply(self, model):
        inp = model.graph.input[0]
        flat = model.find_consumer(inp.name)
        shape = model.get_tensor_shape(inp.name)
        if flat is None or flat.op_type not in ("Flatten", "Reshape") or len(shape) != 4:
            return model, False
        dense = model.find_consumer(flat.output[0])
        n, c, h, w = shape
        if dense is None or len(model.get_tensor_shape(flat.output[0])) != 2:
            return model, False
        if c > 1 and h * w > 1:  # NCHW and NHWC orders differ: the dense layer takes it
            if dense.op_type != "MatMul":
                return model, False
            weights = model.get_initializer(dense.input[1])
            weights = weights.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
            model.set_initializer(dense.input[1], weights)
        # (one channel, as TFC's 28x28 image, or 1x1 pixels: both orders are the same, and the
        # input quantizer's thresholds between the Flatten and the dense layer stay as they are)
        dt = model.get_tensor_datatype(inp.name)
        _reroute(model, flat.output[0], inp.name)
        model.graph.node.remove(flat)
        model.set_tensor_shape(inp.name, [n, c * h * w])
        model.set_tensor_datatype(inp.name, dt)
        model.set_tensor_layout(inp.name, DataLayout.NC)  # not the image's NCHW any more
        return model.transform(InferShapes()), False


class BipolarInputToXnor(Transformation):
    """A stage that starts at a BIPOLAR cut: the wire carries -1 as bit 0 and +1 as bit 1, which
    is FINN's BINARY. qonnx's ConvertBipolarMatMulToXnorPopcount turns a bipolar MatMul into
    XNOR-popcount only after a bipolar MultiThreshold (made binary) or on the graph input itself;
    behind a convolution's Transpose and Im2Col it raises. So the input gets a bipolar
    MultiThreshold of its own (binary in, threshold 1/2), the conversion runs, and that
    threshold, binary to binary once converted, goes again: the input is BINARY."""

    def apply(self, model):
        inp = model.graph.input[0].name
        if model.get_tensor_datatype(inp) != DataType["BIPOLAR"]:
            return model, False
        bits = model.make_new_valueinfo_name()
        model.set_tensor_shape(bits, model.get_tensor_shape(inp))
        thr = model.make_new_valueinfo_name()
        model.set_initializer(thr, np.full((1, 1), 0.5, dtype=np.float32))
        _reroute(model, inp, bits)
        mt = helper.make_node("MultiThreshold", [inp, thr], [bits], name="finnchain_bipolar_in",
                              domain="qonnx.custom_op.general",
                              out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0,
                              data_layout="NCHW" if len(model.get_tensor_shape(inp)) == 4 else "NC")
        model.graph.node.insert(0, mt)
        model.set_tensor_datatype(inp, DataType["BINARY"])
        model.set_tensor_datatype(bits, DataType["BIPOLAR"])
        model = model.transform(InferDataTypes())
        model = model.transform(ConvertBipolarMatMulToXnorPopcount())  # a copy of the model
        mt = model.get_node_from_name("finnchain_bipolar_in")
        if getCustomOp(mt).get_nodeattr("out_dtype") != "BINARY":
            raise ValueError("the stage's BIPOLAR input does not reach a bipolar MatMul")
        _reroute(model, bits, inp)
        model.graph.node.remove(mt)
        return model.transform(InferDataTypes()), False


class SplitMVAU(Transformation):
    """Split MVAUs by output channels as the plan says: DuplicateStreams -> MVAU (channels
    [0, first)) and MVAU (channels [first, MH)) -> StreamingConcat.

    ``splits`` lists, in graph order, the positions among the graph's MVAUs (counted before any
    split) with the expected MW and MH and the channel count of the first part. Weights (MW, MH)
    and thresholds (MH, levels) are sliced, so each part computes its channels exactly."""

    def __init__(self, splits: list[dict]):
        super().__init__()
        self.splits = splits

    def apply(self, model):
        mvaus = [n for n in model.graph.node if n.op_type == "MVAU"]
        for s in sorted(self.splits, key=lambda s: -s["position"]):
            if s["position"] >= len(mvaus):
                raise ValueError(f"the plan splits MVAU #{s['position']} but FINN made only "
                                 f"{len(mvaus)} MVAUs")
            _split_one(model, mvaus[s["position"]], s)
        return model.transform(SortGraph()).transform(InferShapes()).transform(
            InferDataTypes()), False


def _split_one(model: ModelWrapper, node, s: dict) -> None:
    inst = getCustomOp(node)
    mw, mh = inst.get_nodeattr("MW"), inst.get_nodeattr("MH")
    if (mw, mh) != (s["mw"], s["mh"]):
        raise ValueError(f"MVAU #{s['position']} is {mw}x{mh} (MW x MH) in FINN's graph, the "
                         f"plan split a {s['mw']}x{s['mh']} layer: the graph is not the one "
                         "planned")
    first = int(s["first"])
    idt = inst.get_nodeattr("inputDataType")
    odt = inst.get_nodeattr("outputDataType")
    x, y = node.input[0], node.output[0]
    w = model.get_initializer(node.input[1])
    t = model.get_initializer(node.input[2]) if len(node.input) > 2 else None
    ishape, oshape = model.get_tensor_shape(x), model.get_tensor_shape(y)
    base = node.name
    dup_outs = [model.make_new_valueinfo_name() for _ in range(2)]
    for d in dup_outs:
        model.set_tensor_shape(d, ishape)
        model.set_tensor_datatype(d, DataType[idt])
    parts_out = []
    new_nodes = [helper.make_node(
        "DuplicateStreams", [x], dup_outs, domain=HW_DOMAIN, backend="fpgadataflow",
        NumChannels=mw, PE=1, inputDataType=idt, numInputVectors=list(ishape[:-1]),
        NumOutputStreams=2,
        outFIFODepths=[2, 2], name=base + "_dup")]
    for k, (lo, hi) in enumerate(((0, first), (first, mh))):
        wname = model.make_new_valueinfo_name()
        model.set_initializer(wname, np.ascontiguousarray(w[:, lo:hi]))
        model.set_tensor_datatype(wname, model.get_tensor_datatype(node.input[1]))
        ins = [dup_outs[k], wname]
        if t is not None:
            tname = model.make_new_valueinfo_name()
            tk = t if t.shape[0] == 1 else t[lo:hi]
            model.set_initializer(tname, np.ascontiguousarray(tk))
            model.set_tensor_datatype(tname, model.get_tensor_datatype(node.input[2]))
            ins.append(tname)
        out = model.make_new_valueinfo_name()
        model.set_tensor_shape(out, list(oshape[:-1]) + [hi - lo])
        model.set_tensor_datatype(out, DataType[odt])
        part = helper.make_node(node.op_type, ins, [out], domain=node.domain,
                                name=f"{base}_p{k}")
        part.attribute.extend(a for a in node.attribute if a.name != "MH")
        part.attribute.append(helper.make_attribute("MH", hi - lo))
        new_nodes.append(part)
        parts_out.append(out)
    new_nodes.append(helper.make_node(
        "StreamingConcat", parts_out, [y], domain=HW_DOMAIN, backend="fpgadataflow",
        ElemsPerStream=[first, mh - first], inputDataType=odt,
        numInputVectors=list(oshape[:-1]),
        name=base + "_concat"))
    idx = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    for k, n in enumerate(new_nodes):
        model.graph.node.insert(idx + k, n)


class GiveForkedInputAProducer(Transformation):
    """A stage whose input forks (its first block's skip and main branch both read it, directly
    or through the input's own rescaling, which streamlining copies into each branch) gets a
    layout change and its inverse at the input: NCHW to NHWC and back. FINN's steps need a node
    before a fork: streamlining takes an Add that joins the graph input for an Add of a
    constant (``AbsorbAddIntoMultiThreshold`` asserts "Initializer for add weights is not
    set"), and DuplicateStreams is inferred only on a node's output. The inverse moves into the
    branches and cancels against each convolution's own layout change; the first stays ahead
    of the dataflow partition, as the input's layout change of every stage does, and the fork
    becomes a DuplicateStreams on its output (the plan's layer)."""

    def apply(self, model):
        name = model.graph.input[0].name
        shape = model.get_tensor_shape(name)
        if len(shape) != 4 or not self._forks(model, name):
            return model, False
        dt = model.get_tensor_datatype(name)
        nhwc = model.make_new_valueinfo_name()
        back = model.make_new_valueinfo_name()
        model.set_tensor_shape(nhwc, [shape[0], shape[2], shape[3], shape[1]])
        model.set_tensor_shape(back, list(shape))
        _reroute(model, name, back)
        for t in (nhwc, back):
            model.set_tensor_datatype(t, dt)
        model.graph.node.insert(0, helper.make_node("Transpose", [nhwc], [back],
                                                    perm=[0, 3, 1, 2]))
        model.graph.node.insert(0, helper.make_node("Transpose", [name], [nhwc],
                                                    perm=[0, 2, 3, 1]))
        return model, False

    @staticmethod
    def _forks(model: ModelWrapper, tensor: str) -> bool:
        """Whether ``tensor`` forks, or reaches a fork through rescalings by constants."""
        while True:
            consumers = model.find_consumers(tensor)
            if len(consumers) > 1:
                return True
            if len(consumers) != 1 or consumers[0].op_type not in ("Mul", "Add") or (
                    model.get_initializer(consumers[0].input[1]) is None):
                return False
            tensor = consumers[0].output[0]


class MergeTwinTransposes(Transformation):
    """Transposes of one tensor by the same permutation become one, whose output forks. FINN's
    ``MoveTransposePastFork`` copies a layout change into every branch of a fork; where the fork
    is the graph input's (``GiveForkedInputAProducer``) the copies are left reading the input,
    with no node before the fork for DuplicateStreams. Merged, the one layout change stays ahead
    of the dataflow partition and the fork is on its output."""

    def apply(self, model):
        for node in model.graph.node:
            if node.op_type != "Transpose":
                continue
            perm = list(helper.get_attribute_value(node.attribute[0]))
            for twin in model.find_consumers(node.input[0]):
                if twin.output[0] == node.output[0] or twin.op_type != "Transpose" or list(
                        helper.get_attribute_value(twin.attribute[0])) != perm:
                    continue
                _reroute(model, twin.output[0], node.output[0])
                model.graph.node.remove(twin)
                return model, True
        return model, False


def layer_key(node, attrs: dict) -> list:
    """A HW node's kind (its op type without _hls/_rtl) and the dimensions that tell it from
    others of its kind, read from the node attributes finnchain.json's ``layer_attrs`` name
    for its kind (finnchain's op classes hold them), as its ``layers`` list them after the
    plan's name. A kind the plan does not make matches no planned layer."""
    kind = node.op_type.removesuffix("_hls").removesuffix("_rtl")
    inst = getCustomOp(node)
    key = []
    for attr in attrs.get(kind, ()):
        if attr not in inst.get_nodeattr_types():
            return [kind]
        v = inst.get_nodeattr(attr)
        key += [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]
    return [kind, *key] if kind in attrs else [kind]


class NameAsPlanned(Transformation):
    """The HW nodes get the plan's names, so that each takes the folding the plan chose for it.
    FINN names a node by its op type and a count in graph order, and its graph order is qonnx's
    topological sort by depth: the two branches of a residual block interleave (a downsampling
    skip's layers among the main branch's), where the plan lowers one branch after the other.
    Each HW node, in graph order, takes the name of the first planned layer of its kind and
    dimensions not yet taken. Nothing is renamed when a node matches no planned layer (FINN
    made another layer: the check against the plan names it)."""

    def __init__(self, planned: list[list], attrs: dict[str, list[str]]):
        super().__init__()
        self.planned = planned
        self.attrs = attrs

    def apply(self, model):
        free = list(range(len(self.planned)))
        names = []
        for node in model.graph.node:
            if not is_fpgadataflow_node(node):
                continue
            key = layer_key(node, self.attrs)
            at = next((j for j in free if self.planned[j][1:] == key), None)
            if at is None:
                return model, False
            free.remove(at)
            names.append((node, self.planned[at][0]))
        for node, name in names:
            node.name = name
        return model, False


# -- the steps -------------------------------------------------------------------------------------
def _tidy(model: ModelWrapper) -> ModelWrapper:
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(GiveReadableTensorNames())
    return model.transform(InferDataTypes())


class MoveMulPastDWConvKeepingInputTypes(Transformation):
    """FINN's ``MoveMulPastDWConv``, the graph inputs keeping their datatypes: it marks the
    tensor ahead of the moved Mul FLOAT32, which in a whole network is a MultiThreshold's
    output (its type inferred again) but in a stage that starts at a cut with a scale per
    channel is the stage's input codes; the depthwise layer then read a float and was left
    outside the dataflow partition as Im2Col and MatMul."""

    def apply(self, model: ModelWrapper):
        kept = {t.name: model.get_tensor_datatype(t.name) for t in model.graph.input}
        model, changed = reorder.MoveMulPastDWConv().apply(model)
        for name, dt in kept.items():
            model.set_tensor_datatype(name, dt)
        return model, changed


class TruncAvgPoolToThresholds(Transformation):
    """Brevitas' TruncAvgPool2d over the whole map as a GlobalAveragePool and thresholds, which
    FINN builds as a GlobalAccPool and a Thresholding layer (the plan's ops). Brevitas 0.13
    exports the pool as an AveragePool and a Trunc of qonnx's second version (its own output
    scale, no Mul). The Trunc's input over its scale is the window's sum of codes s (the pool's
    input over the Trunc's scale times k*k), and its output code is s shifted right by t bits
    and clamped to the output range [lo, hi]: lo plus the count of j in lo+1..hi with
    s >= j * 2**t, thresholds on the sum. They are written half a step below (ceil(j * 2**t) - 1/2,
    over k*k for the average the GlobalAveragePool gives) so that FINN's rounding of them
    after it multiplies the pool's 1/(k*k) back in gives exactly ceil(j * 2**t). FINN v0.10.1 would
    build the same function from the older export as a QuantAvgPool2d, a sliding window
    generator and a Pool: thousands of LUTs for a 7x7 window that the GlobalAccPool needs not.
    A stage that starts at the pool takes the codes as they come (the stage's own Mul by the
    input scale is skipped rather than divided out again)."""

    def apply(self, model):
        for pool in model.graph.node:
            trunc = model.find_consumer(pool.output[0]) if pool.op_type in (
                "AveragePool", "GlobalAveragePool") else None
            if trunc is None or trunc.op_type != "Trunc" or len(trunc.input) != 6:
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
            dims = list(model.get_tensor_shape(pool.input[0])[2:])
            if pool.op_type == "AveragePool" and (list(attrs.get("kernel_shape", [])) != dims
                                                   or any(attrs.get("pads", [0]))):
                raise ValueError(f"{trunc.name}: only a truncating average pool over the whole "
                                 "map is supported")
            scale, zp, _, out_scale, out_bits = (model.get_initializer(t) for t in trunc.input[1:])
            mode = {a.name: helper.get_attribute_value(a) for a in trunc.attribute}
            if (np.any(zp != 0) or np.size(scale) != 1 or np.size(out_scale) != 1
                    or mode.get("rounding_mode", b"FLOOR").upper() != b"FLOOR"):
                raise ValueError(f"{trunc.name}: a truncating pool needs one scale, zero point 0 "
                                 "and FLOOR rounding")
            kk = int(np.prod(dims))
            shift = float(np.round(np.log2(float(np.asarray(out_scale).item())
                                           / float(np.asarray(scale).item()))))
            out = quantizer_codes("Trunc", mode, out_bits)  # as the emulator reads it
            signed, bits, lo, hi = out.signed, out.bits, out.lo, out.hi
            s_in = np.float32(np.asarray(scale).item() * kk)
            src = pool.input[0]
            producer = model.find_producer(src)
            nodes = []
            c = model.get_initializer(producer.input[1]) if producer is not None and \
                producer.op_type == "Mul" else None
            if c is not None and np.size(c) == 1 and np.float32(np.asarray(c).item()) == s_in:
                codes = producer.input[0]  # the stage's own input scaling: take the codes
            else:
                codes = model.make_new_valueinfo_name()
                inv = model.make_new_valueinfo_name()
                model.set_initializer(inv, np.asarray(1.0 / s_in, dtype=np.float32))
                nodes.append(helper.make_node("Mul", [src, inv], [codes]))
            channels = int(model.get_tensor_shape(src)[1])
            steps = (np.ceil(np.arange(lo + 1, hi + 1, dtype=np.float64) * 2.0**shift) - 0.5) / kk
            thresholds = model.make_new_valueinfo_name()
            model.set_initializer(thresholds, np.tile(steps, (channels, 1)).astype(np.float32))
            avg, out_codes = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            outs = model.make_new_valueinfo_name()
            model.set_initializer(outs, np.asarray(out_scale, dtype=np.float32).reshape(()))
            out_type = f"{'INT' if signed else 'UINT'}{bits}"
            nodes += [
                helper.make_node("GlobalAveragePool", [codes], [avg]),
                helper.make_node("MultiThreshold", [avg, thresholds], [out_codes],
                                 domain="qonnx.custom_op.general", out_dtype=out_type,
                                 out_bias=float(lo), out_scale=1.0),
                helper.make_node("Mul", [out_codes, outs], [trunc.output[0]])]
            at = list(model.graph.node).index(pool)
            for i, n in enumerate(nodes):
                model.graph.node.insert(at + i, n)
            model.graph.node.remove(pool)
            model.graph.node.remove(trunc)
            model = model.transform(InferShapes()).transform(InferDataTypes())
            model.set_tensor_datatype(out_codes, DataType[out_type])
            return model, True
        return model, False


def step_finnchain_qonnx_to_finn(model: ModelWrapper, cfg):
    """FINN's ``step_qonnx_to_finn`` as it means to be: v0.10.1 counts "BinaryQuant" nodes, an op
    type no model has, so a binarized network (BNN-PYNQ's 1w1a: only BipolarQuant) went on
    unconverted and failed in streamlining. Counted here with BipolarQuant."""
    if not any(n.op_type in ("Quant", "BipolarQuant", "Trunc") for n in model.graph.node):
        return model
    model = cleanup_model(model.transform(TruncAvgPoolToThresholds()))
    model = model.transform(ConvertQONNXtoFINN(filter_function=default_filter_function_generator(
        max_multithreshold_bit_width=cfg.max_multithreshold_bit_width)))
    return model.transform(GiveForkedInputAProducer())


def step_finnchain_streamline(model: ModelWrapper, cfg):
    """FINN's Streamline and finn-examples' MobileNetV1 additions, then the classifier tail."""
    model = model.transform(absorb.AbsorbSignBiasIntoMultiThreshold())
    for _ in range(4):  # one pass leaves an image's /255 ahead of the first convolution
        before = model.model.SerializeToString()
        # a fork's scale copied into each branch and a residual join's moved past the join
        # (finn-examples' ResNet-50 steps), so that both branches meet as integers; the fork
        # first: Streamline moves a forked Mul into one branch and loses the other's input
        model = model.transform(reorder.MoveLinearPastFork())
        model = model.transform(reorder.MoveLinearPastEltwiseAdd())
        model = model.transform(Streamline())
        if model.model.SerializeToString() == before:
            break
    for t in (DoubleToSingleFloat(), MoveMulPastDWConvKeepingInputTypes(),
              absorb.AbsorbMulIntoMultiThreshold(), InferDataLayouts(),
              reorder.MoveTransposePastScalarMul(), absorb.AbsorbTransposeIntoFlatten(),
              reorder.MoveFlattenPastAffine(), reorder.MoveFlattenPastTopK(),
              reorder.MoveScalarMulPastMatMul(), CollapseRepeatedMul(), RemoveIdentityOps(),
              RoundAndClipThresholds(), MoveScalarMulPastIntegerAdd(),
              absorb.AbsorbScalarMulAddIntoTopK()):
        model = _tidy(model.transform(t))
    return model.transform(RemoveUnusedTensors())


def step_finnchain_lower(model: ModelWrapper, cfg):
    """Convolutions to Im2Col + MatMul in NHWC, transposes absorbed (as FINN's default and
    finn-examples do), then streamlined again."""
    model = model.transform(LowerConvsToMatMul())
    # the pool's 1/N scale must exist before streamlining so that it joins the next thresholds
    model = model.transform(to_hw.InferGlobalAccPoolLayer())
    model = model.transform(Streamline())
    model = model.transform(reorder.MakeMaxPoolNHWC())
    # layout changes absorbed; at a residual fork and join they are first moved past it (the
    # change copied into each branch meets its inverse there), to a fixed point
    for _ in range(8):
        before = model.model.SerializeToString()
        for t in (absorb.AbsorbTransposeIntoMultiThreshold(), reorder.MakeMaxPoolNHWC(),
                  reorder.MoveTransposePastFork(), reorder.MoveTransposePastJoinAdd(),
                  absorb.AbsorbConsecutiveTransposes()):
            model = model.transform(t)
        if model.model.SerializeToString() == before:
            break
    model = model.transform(MergeTwinTransposes())
    # binarized layers (BIPOLAR activations into BIPOLAR weights) as XNOR-popcount, as FINN's
    # default streamlining does; streamlining again moves the rescaling into the thresholds
    model = model.transform(BipolarInputToXnor())
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = model.transform(Streamline())
    model = model.transform(RoundAndClipThresholds())
    model = model.transform(absorb.AbsorbScalarMulAddIntoTopK())
    model = _tidy(model)
    return model.transform(InferDataLayouts()).transform(RemoveUnusedTensors())


def step_finnchain_convert_to_hw(model: ModelWrapper, cfg):
    """Every layer finnchain plans, as FINN HW layers; thresholds inside MVAUs and VVAUs,
    stand-alone thresholds only where no linear layer precedes them; the plan's splits."""
    model = model.transform(AbsorbInputFlatten())
    for t in (to_hw.InferStreamingMaxPool(), to_hw.InferPool(),
              to_hw.InferConvInpGen(), to_hw.InferVectorVectorActivation(),
              to_hw.InferBinaryMatrixVectorActivation(),
              to_hw.InferQuantizedMatrixVectorActivation(), to_hw.InferThresholdingLayer(),
              to_hw.InferChannelwiseLinearLayer(), to_hw.InferLabelSelectLayer(),
              to_hw.InferAddStreamsLayer(), to_hw.InferDuplicateStreamsLayer(),
              RemoveCNVtoFCFlatten(), absorb.AbsorbConsecutiveTransposes()):
        model = model.transform(t)
    splits = meta().get("split_mvaus", [])
    if splits:
        model = model.transform(SplitMVAU(splits))
    model = model.transform(GiveUniqueNodeNames())
    return model.transform(InferDataLayouts())


def step_finnchain_apply_folding(model: ModelWrapper, cfg):
    """FINN's ``step_apply_folding_config`` (unique names, then the folding config by name),
    with the HW nodes named as the plan names them (``NameAsPlanned``) in between. The C++
    simulation FINN's step runs when ``verify_steps`` asks for it runs later, on the graph the
    hardware is made from (``finnchain_cppsim``)."""
    model = model.transform(GiveUniqueNodeNames())
    planned = meta().get("layers")
    if planned:
        model = model.transform(NameAsPlanned(planned, meta()["layer_attrs"]))
    return model.transform(ApplyConfig(cfg.folding_config_file))


def _join_types(types: list) -> DataType:
    """The narrowest integer type holding every value of ``types``."""
    lo = min(t.min() for t in types)
    hi = max(t.max() for t in types)
    return DataType.get_smallest_possible(lo) if lo < 0 and abs(lo) > hi else (
        DataType.get_smallest_possible(hi) if lo >= 0 else
        DataType.get_smallest_possible(-hi - 1))


def step_finnchain_minimize_bit_width(model: ModelWrapper, cfg):
    """FINN's step_minimize_bit_width (weights, then accumulators one node at a time with the
    datatypes propagated after each), except that the MVAUs feeding one StreamingConcat (a
    split layer) are narrowed together and share the widest result: StreamingConcat takes one
    input datatype, and FINN's own step stops on the first part narrowed alone."""
    if not cfg.minimize_bit_width:
        return model
    model = model.transform(MinimizeWeightBitWidth())
    groups = {}
    for c in model.graph.node:
        if c.op_type.startswith("StreamingConcat"):
            producers = [model.find_producer(t) for t in c.input]
            for p in producers:
                groups[p.name] = (c, producers)
    done = set()
    for index in range(len(model.graph.node)):
        node = model.graph.node[index]
        if node.name in done or not is_fpgadataflow_node(node):
            continue
        if not hasattr(getCustomOp(node), "minimize_accumulator_width"):
            continue
        if node.name not in groups:
            getCustomOp(node).minimize_accumulator_width(model)
        else:
            concat, producers = groups[node.name]
            insts = [getCustomOp(p) for p in producers]
            for inst in insts:
                inst.minimize_accumulator_width(model)
            joined = _join_types([inst.get_output_datatype() for inst in insts])
            for p, inst in zip(producers, insts):
                if inst.get_nodeattr("noActivation"):
                    inst.set_nodeattr("accDataType", joined.name)
                inst.set_nodeattr("outputDataType", joined.name)
                model.set_tensor_datatype(p.output[0], joined)
                done.add(p.name)
            getCustomOp(concat).set_nodeattr("inputDataType", joined.name)
        model = model.transform(InferDataTypes())
    return model


def _node_summary(node) -> dict:
    inst = getCustomOp(node)
    attrs = {}
    for k in ("PE", "SIMD", "MW", "MH", "NumChannels", "Channels", "IFMChannels", "Labels",
              "K", "ram_style", "mem_mode", "resType", "preferred_impl_style"):
        if k in inst.get_nodeattr_types():
            v = inst.get_nodeattr(k)
            attrs[k] = v if isinstance(v, (int, float, str)) else list(v)
    return {"name": node.name, "op_type": node.op_type, "attrs": attrs}


def step_finnchain_nodes(model: ModelWrapper, cfg):
    """Write report/finnchain_nodes.json: the dataflow partition's HW nodes (type, folding,
    memory attributes) and the nodes FINN left outside it, for finnchain's check against the
    plan. (What the driver exchanges is FINN's own driver's to say: ``finnchain_driver``.)"""
    parent_path = Path(cfg.output_dir) / "intermediate_models" / "dataflow_parent.onnx"
    outside = []
    if parent_path.is_file():
        parent = ModelWrapper(str(parent_path))
        outside = [{"name": n.name, "op_type": n.op_type} for n in parent.graph.node
                   if n.op_type != "StreamingDataflowPartition"]
    report = {"nodes": [_node_summary(n) for n in model.graph.node],
              "outside_partition": outside}
    out = Path(cfg.output_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / NODES_REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return model


# the folder's own modules beside this one (FINN's C++ simulation, FINN's driver without Vivado)
from finnchain_cppsim import step_finnchain_verify_cppsim  # noqa: E402
from finnchain_driver import step_finnchain_pynq_driver  # noqa: E402

STEPS_BEFORE_ESTIMATES = [
    step_finnchain_qonnx_to_finn,
    "step_tidy_up",
    step_finnchain_streamline,
    step_finnchain_lower,
    step_finnchain_convert_to_hw,
    "step_create_dataflow_partition",
    "step_specialize_layers",
    step_finnchain_apply_folding,
    step_finnchain_minimize_bit_width,
    step_finnchain_verify_cppsim,  # when verify_steps lists folded_hls_cppsim
    step_finnchain_nodes,
    "step_generate_estimate_reports",
]
STEPS_AFTER_ESTIMATES = [
    "step_hw_codegen",
    "step_hw_ipgen",
    "step_set_fifo_depths",
    "step_create_stitched_ip",
    "step_synthesize_bitfile",
    "step_make_pynq_driver",
    "step_deployment_package",
]


class StepTracker:
    """Wraps each step so that the status file can name the step that failed and why (FINN's
    ``build_dataflow_cfg`` only returns -1 and prints a traceback)."""

    def __init__(self) -> None:
        self.current = None
        self.error = None
        self.exception = None

    def wrap(self, step):
        from finn.builder.build_dataflow_steps import build_dataflow_step_lookup

        fn = build_dataflow_step_lookup[step] if isinstance(step, str) else step

        def run(model, cfg):
            self.current = fn.__name__
            try:
                return fn(model, cfg)
            except Exception as exc:  # recorded for the status file, then FINN's handling
                self.error = f"{type(exc).__name__}: {exc}"
                self.exception = exc
                raise

        run.__name__ = fn.__name__
        return run


def steps(tracker: StepTracker, bitstream: bool) -> list:
    """The folder's steps: up to FINN's estimate reports, then either FINN's own steps to the
    bitstream, driver and deployment package, or (no Vivado) FINN's driver alone."""
    rest = STEPS_AFTER_ESTIMATES if bitstream else [step_finnchain_pynq_driver]
    return [tracker.wrap(s) for s in STEPS_BEFORE_ESTIMATES + rest]


def write_status(ok: bool, tracker: StepTracker, seconds: float, mode: str) -> None:
    exc = tracker.exception
    status = {"ok": ok, "mode": mode, "estimate_only": mode != "bitstream",
              "seconds": round(seconds, 1),
              "stage": meta().get("stage"), "failed_step": None if ok else tracker.current,
              "error": None if ok else (tracker.error or "FINN reported a failed step"),
              "failed_layer": getattr(exc, "layer", None) if not ok else None,
              "mismatch": getattr(exc, "mismatch", None) if not ok else None,
              "finn_build_dir": os.environ.get("FINN_BUILD_DIR")}
    (HERE / STATUS).write_text(json.dumps(status, indent=1) + "\n")
