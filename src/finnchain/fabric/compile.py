"""Compile a QONNX model (a whole network or one stage) into a fast, bit-exact integer program.

The result is a plain ONNX graph that onnxruntime runs with all graph optimisations off. It is the
emulated FPGA: it computes, bit for bit, what qonnx's reference ``execute_onnx`` computes.

Why it is exact
---------------
- Every tensor of the program is a float32 tensor of integers: the *codes* of a quantized
  activation (value = (code - zero_point) * scale) or the exact accumulator of a linear layer.
- Weights and biases are power-of-two scaled integers in finnchain's own models (fixed-point
  quantizers; for learned scales see below). A convolution or matrix product of
  integer codes by integer weights is computed exactly in float32 in any summation order while
  its magnitude stays below 2**24, which is checked per layer from the weights.
- Between a linear layer and the next quantizer the reference runs a chain of float operations
  (batch-norm as Mul/Add, ReLU, the quantizer's divide/round/clip). That chain is a function of
  the exact integer accumulator, one per channel. It is *measured*: the chain's own nodes are run
  through qonnx's ``execute_onnx`` (the reference itself) on probe accumulators, and replaced by
  - where the function is monotone (checked), its thresholds are located per channel and level,
    and an affine form ``clip(rint(fl(fl(acc + B) * M)))`` is fitted and then verified exactly,
    in float32, at every threshold and both ends of the range, with the scale-and-round step
    computed with one rounding and with two. Being monotone as well, the affine form then
    equals the chain on the whole range.
    ``+ B`` becomes the convolution's bias;
  - when no affine form verifies, a lookup table per channel for small ranges, otherwise the
    thresholds themselves (FINN's MultiThreshold: the code is the number of thresholds the
    accumulator reaches), slower but exact.
- Pooling: max-pool of codes is exact; an average pool is computed as an exact window sum of
  codes, and the reference's AveragePool and the quantizer after it (Brevitas' TruncAvgPool
  included) are measured as a function of that sum like any other chain.
- A residual join adds the codes of two tensors on one grid (exact); a BipolarQuant is handled
  like any quantizer (two levels, one threshold); a float tail before the output's TopK runs
  the reference's own nodes, except a bias of whole accumulator steps, which is added as
  integers (FINN's ChannelwiseOp).

Scales that are not powers of two
---------------------------------
Brevitas' learned scales (0.2659...), per-channel ones and weights quantized with float scales
make the float reference round where the hardware does not: qonnx computes each product and
partial sum of a convolution in float32, FINN's hardware an exact integer accumulator. The
emulator computes the integer function FINN builds: integer codes times integer weight codes
(the weight quantizer's own codes), exact, and each quantizer as thresholds on the exact
accumulator, as FINN's MultiThreshold is. Where the chain after the linear layer is what FINN
streamlines into thresholds (multiplications and additions by constants, a ReLU, a Quant with
zero point 0 or a BipolarQuant of scale 1), the thresholds are FINN's own, derived in FINN's
float32 order (its handlers' thresholds ``T0``, the multiplications collapsed into one product
``M`` and the additions into one ``A``, ``ceil((T0 - A) / |M|)``;
:meth:`_Compiler._finn_thresholds`): they equal the thresholds of FINN's streamlined stages on
every quantizer of Brevitas' bnn_pynq networks, resnet18_4w4a and quant_mobilenet_v1_4b. Its
first layer takes two more of FINN's steps: the image's mean and std move past the
convolution as FINN moves them, the offset by onnxruntime's float32 convolution of a map of
the mean (``MoveAddPastConv``), and the four multiplications (/255, std, the weight scale, the
batch norm's factor) collapse in FINN's grouping
(:func:`collapse_pairwise`); in float64 and from the left, 1 or 2 of its 480 thresholds
differed. Other chains (truncating pools, a batch norm node, an
offset ahead of the layer) are measured through the reference's own nodes on the
accumulator's value (``acc * scale``, rounded once to float32); so is one whose derived
thresholds part from that measurement by more than a tie (one code, at no more than
``TIE_SHARE`` of the probes).
A rescaling ahead of a linear layer (a cut's learned scale; an image's /255 (FINN's
reciprocal in float32), per-channel mean and one std ahead of the first, unpadded convolution,
which FINN moves past it too) goes into the layer's scale and bias. With power-of-two scales
this is the reference bit for bit; with learned ones a value within float32 rounding of a
quantizer's step can come out one code apart from the reference (FINN's thresholds decide it,
``tests/test_finn.py``), and the difference travels on (``finnchain check`` counts the codes
and says why).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_node, execute_onnx
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_preferred_qonnx_opset, qonnx_make_model

from finnchain.fabric.affine import EXACT_LIMIT, ROUNDER, fit_affine
from finnchain.fabric.finn_order import collapse_pairwise
from finnchain.fabric.ir import (
    Builder,
    CompileError,
    Pending,
    Program,
    Q,
    chan_shape,
    integer_codes,
)
from finnchain.finn.finnside.finnchain_rules import quantizer_codes, whole_steps
from finnchain.graph.model import attributes, is_pow2

LUT_LIMIT = 4096  # a function that is not monotone becomes a table up to this range
COARSE_POINTS = 2049
TIE_SHARE = 0.01  # FINN's thresholds may differ from the measured chain at this share of probes

# ONNX op type -> the compiler's handler of such a node (as qonnx's registry maps a custom op's
# type to its class); a node of a type not here is named as not supported
HANDLERS: dict[str, Callable[[_Compiler, onnx.NodeProto], None]] = {}


def handles(*op_types: str):
    """Register the decorated method as the handler of nodes of ``op_types``."""
    def register(method):
        for op_type in op_types:
            HANDLERS[op_type] = method
        return method
    return register


class _Compiler:
    def __init__(self, model: ModelWrapper) -> None:
        self.m = model
        self.b = Builder()
        self.env: dict[str, object] = {}
        self.consts: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in model.graph.initializer
        }
        self.opset = get_preferred_qonnx_opset()
        self.grids: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # weight quantizer scale, zp
        self.stats = {"lut": 0, "affine": 0, "thresholds": 0, "linear": 0, "finn_order": 0}
        self.finn_thresholds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.weights: dict[str, tuple] = {}

    # ---- helpers -------------------------------------------------------------------------
    def shape(self, tensor: str) -> tuple[int, ...]:
        return tuple(self.m.get_tensor_shape(tensor))

    def const_of(self, tensor: str) -> np.ndarray | None:
        return self.consts.get(tensor)

    def fold(self, node: onnx.NodeProto) -> None:
        ctx = {t: self.consts[t] for t in node.input if t}
        for t in node.output:
            ctx[t] = None
        execute_node(node, ctx, self.m.graph, self.opset)
        for t in node.output:
            self.consts[t] = np.asarray(ctx[t])
        if node.op_type in ("Quant", "BipolarQuant"):  # a weight quantizer: its grid, for codes
            zp = self.consts[node.input[2]] if node.op_type == "Quant" else np.zeros(1)
            self.grids[node.output[0]] = (np.asarray(self.consts[node.input[1]], np.float64),
                                          np.asarray(zp, np.float64))

    def weight_codes(self, tensor: str, node: onnx.NodeProto, transpose: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
        """A linear layer's weights as (integer codes (out, ...), scale per output channel).

        Power-of-two scaled weights split exactly (:func:`integer_codes`). Others are the codes
        of their quantizer (Brevitas' learned, per-channel scales): value / scale, rounded, with
        the scale of each output channel (per input channel cannot be taken out of the sum)."""
        w = self.consts[tensor]
        w = w.T if transpose else w
        what = f"{self.where(node)} weights"
        try:
            return integer_codes(w, 0, what)
        except CompileError:
            if tensor not in self.grids:
                raise
        scale, zp = self.grids[tensor]
        if np.any(zp != 0):
            raise CompileError(f"{what}: a zero point other than 0") from None
        full = np.broadcast_to(scale, self.consts[tensor].shape)
        full = (full.T if transpose else full).reshape(w.shape[0], -1)
        per_out = full[:, 0]
        if not np.all(full == per_out[:, None]):
            raise CompileError(f"{what}: the scale varies along the input channels") from None
        codes = np.asarray(w, np.float64).reshape(w.shape[0], -1) / per_out[:, None]
        rounded = np.round(codes)
        if np.any(np.abs(codes - rounded) > 1e-3) or np.any(np.abs(rounded) >= 2**20):
            raise CompileError(f"{what}: values are not their quantizer's codes") from None
        return rounded.reshape(w.shape), per_out

    def where(self, node: onnx.NodeProto) -> str:
        return f"node {node.name or node.op_type} ({node.op_type})"

    def q_of(self, tensor: str, node: onnx.NodeProto) -> Q:
        r = self.env.get(tensor)
        if isinstance(r, Pending):
            r = self.materialize(r, node)
        if not isinstance(r, Q):
            raise CompileError(f"{self.where(node)}: input {tensor} is not a quantized tensor")
        return r

    def materialize(self, p: Pending, node: onnx.NodeProto) -> Q:
        """A chain of additions of constants on the base's grid (a bias) stays exact."""
        q = p.base
        name = q.name
        lo, hi = q.lo.copy(), q.hi.copy()
        for n in p.nodes:
            c = self.consts.get(n.input[1]) if n.op_type in ("Add", "Sub") else None
            if c is None or p.window:
                break
            steps = np.asarray(c, dtype=np.float64) / q.scale * (1 if n.op_type == "Add" else -1)
            if not np.all(steps == np.round(steps)):
                break
            steps = np.broadcast_to(steps, np.broadcast(steps, q.scale).shape)
            name = self.b.op("Add", [name, self.b.const(steps)])
            flat = steps.reshape(-1) if steps.size == lo.size else np.full(lo.size, steps.flat[0])
            lo, hi = lo + flat, hi + flat
        else:
            if max(abs(lo.min()), abs(hi.max())) < EXACT_LIMIT:
                return Q(name, q.scale, q.zp, lo, hi, q.shape)
        aff = self._affine(p)
        if aff is not None and not np.any(aff[1]):  # a rescaling only (a cut's learned scale)
            return self._rescaled(p.base, aff[0])
        raise CompileError(
            f"{self.where(node)}: float operations "
            f"({', '.join(n.op_type for n in p.nodes)}) on {p.src} are not followed by a quantizer"
        )

    def _rescaled(self, q: Q, a: np.ndarray) -> Q:
        """The codes of ``q`` with the scale ``a`` (per channel) that constant multiplications
        and divisions gave them: the integer function the hardware computes; the float
        reference rounds the product once more (see the module's note on such scales)."""
        if np.all(a == a[0]):
            scale = np.array(a[0])
        else:
            scale = a.reshape(chan_shape(len(q.shape), a.size))
        return Q(q.name, scale, q.zp, q.lo, q.hi, q.shape)

    # ---- entry -----------------------------------------------------------------------------
    def run(self) -> Program:
        g = self.m.graph
        if len(g.input) != 1 or len(g.output) != 1:
            raise CompileError("the executor takes models with one input and one output")
        inp = g.input[0].name
        dt = self.m.get_tensor_datatype(inp)
        if not dt.is_integer():
            raise CompileError(f"input {inp} has datatype {dt.name}; an integer datatype is needed")
        shp = self.shape(inp)
        c = shp[1] if len(shp) > 1 else 1
        self.env[inp] = Q(
            "x",
            np.array(1.0),
            0.0,
            np.full(c, dt.min(), dtype=np.float64),
            np.full(c, dt.max(), dtype=np.float64),
            shp,
        )
        for node in g.node:
            if all(t in self.consts for t in node.input if t):
                self.fold(node)
                continue
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise CompileError(f"{self.where(node)}: operation not supported by the executor")
            handler(self, node)
        out = g.output[0].name
        res = self.env.get(out)
        out_name = self.finish_output(res, out)
        graph = helper.make_graph(
            self.b.nodes,
            "finnchain-emulated-stage",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shp[1:]])],
            [helper.make_tensor_value_info(out_name, self._out_type(out), None)],
            self.b.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return Program(model, tuple(shp[1:]), (int(dt.min()), int(dt.max())), out_name, self.stats,
                       self.finn_thresholds, self.weights)

    def _out_type(self, out: str) -> int:
        elem = self.m.get_tensor_valueinfo(out).type.tensor_type.elem_type
        return TensorProto.INT64 if elem == TensorProto.INT64 else TensorProto.FLOAT

    def finish_output(self, res: object, out: str) -> str:
        if isinstance(res, str):  # a raw tensor (TopK indices)
            return res
        if isinstance(res, Pending):
            raise CompileError(f"output {out} ends in float operations without a quantizer")
        if not isinstance(res, Q):
            raise CompileError(f"output {out} is not computed by the graph")
        name = res.name
        if res.zp != 0:
            name = self.b.op("Sub", [name, self.b.const(res.zp)])
        if not np.all(res.scale == 1.0):
            name = self.b.op("Mul", [name, self.b.const(res.scale)])
        return self.b.op("Identity", [name], hint="y")

    # ---- element-wise ---------------------------------------------------------------------
    @handles("Mul", "Div", "Add", "Sub", "Relu", "BatchNormalization")
    def _elementwise(self, node: onnx.NodeProto) -> None:
        data = [t for t in node.input if t not in self.consts]
        if len(data) == 2 and node.op_type == "Add":
            self._residual_add(node)
            return
        if len(data) != 1:
            raise CompileError(f"{self.where(node)}: needs one data input and constants")
        src = data[0]
        r = self.env.get(src)
        if node.op_type in ("Mul", "Div") and isinstance(r, Q):
            other = next(t for t in node.input if t in self.consts)
            c = self.consts[other]
            if node.input[0] == src and c.size in (1, r.lo.size):
                c = c.reshape(()) if c.size == 1 else c.reshape(chan_shape(len(r.shape), c.size))
                scale = r.scale * c if node.op_type == "Mul" else r.scale / c
                # exact: a power of two, or the codes themselves (a cut's value / its scale)
                if is_pow2(c) or np.all(scale == 1.0):
                    self.env[node.output[0]] = Q(r.name, scale, r.zp, r.lo, r.hi, r.shape)
                    return
        if isinstance(r, Q):
            r = Pending(r, src, [])
        if not isinstance(r, Pending):
            raise CompileError(f"{self.where(node)}: input {src} is not a quantized tensor")
        self.env[node.output[0]] = Pending(r.base, r.src, r.nodes + [node], r.window)

    def _residual_add(self, node: onnx.NodeProto) -> None:
        """Two quantized tensors on one grid (a residual join of Brevitas' ResNets: both sides
        quantized with one scale): the sum of their codes, exact, on that grid (FINN's
        AddStreams). Tensors on different grids are refused by name."""
        a, b = (self.q_of(t, node) for t in node.input)
        if a.zp != 0 or b.zp != 0 or a.scale.shape != b.scale.shape or \
                not np.all(a.scale == b.scale):
            raise CompileError(f"{self.where(node)}: the two tensors it adds are not on one "
                               "grid (the same scale, zero point 0)")
        total = self.b.op("Add", [a.name, b.name], hint="sum")
        self.env[node.output[0]] = Q(total, a.scale, 0.0, a.lo + b.lo, a.hi + b.hi,
                                     self.shape(node.output[0]))

    # BatchNormalization: per-channel float operations like the others (FINN absorbs it into
    # thresholds; here the quantizer after it measures the chain)

    # ---- linear layers -------------------------------------------------------------------------
    def _linear(self, node: onnx.NodeProto, x: Q, w_codes: np.ndarray, w_scale: np.ndarray,
                bias: np.ndarray | None, emit, depthwise: bool = False) -> None:
        # a per-channel input scale comes out of a depthwise sum (each output reads one channel)
        if x.zp != 0 or (x.scale.size != 1 and not depthwise):
            raise CompileError(f"{self.where(node)}: input needs one scale and zero point 0")
        amax = float(max(abs(x.lo.min()), abs(x.hi.max())))
        cout = w_codes.shape[0]
        wabs = np.abs(w_codes.reshape(cout, -1)).sum(axis=1)
        wpos = np.clip(w_codes.reshape(cout, -1), 0, None).sum(axis=1)
        wneg = np.clip(w_codes.reshape(cout, -1), None, 0).sum(axis=1)
        if float(wabs.max()) * amax >= EXACT_LIMIT:
            raise CompileError(f"{self.where(node)}: accumulator may exceed 2**24, not exact")
        xlo, xhi = float(x.lo.min()), float(x.hi.max())
        lo = wpos * xlo + wneg * xhi
        hi = wpos * xhi + wneg * xlo
        acc = emit(x.name)
        shape = self.shape(node.output[0])
        acc_scale = (np.asarray(x.scale, np.float64).reshape(-1) * w_scale).reshape(
            chan_shape(len(shape), cout))
        factors = ()
        if x.factors:  # FINN's Mul of the weights' scale follows the layer's input's
            w32 = np.asarray(w_scale, np.float32).reshape(-1)
            factors = x.factors if np.all(w32 == 1) else (*x.factors, w32)
        q = Q(acc, acc_scale, 0.0, lo, hi, shape, factors)
        self.stats["linear"] += 1
        if bias is None:
            self.env[node.output[0]] = q
            return
        # the bias joins the measured chain, as the reference adds it (exactly) in float
        bias_name = self.b.fresh("bias")
        self.consts[bias_name] = bias.astype(np.float32).reshape(chan_shape(len(shape), cout))
        add = helper.make_node("Add", ["__acc__", bias_name], [node.output[0]])
        self.env[node.output[0]] = Pending(q, "__acc__", [add])

    def _affine(self, p: Pending, dtype=np.float64, mults: list | None = None
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """(a, b) per channel with value = a * (code - zp) + b when the pending operations are
        multiplications, divisions, additions and subtractions by constants (a cut's learned
        scale entering a stage; an image's /255, per-channel mean and std); None otherwise.
        Computed in ``dtype``: float32 is FINN's streamlining, which collapses the
        multiplications into one product (in its own order where the base keeps FINN's
        factors apart, :attr:`Q.factors`) and the additions, each multiplied by what follows
        it, into one sum. ``mults``, if given, receives each multiplication's constant."""
        q = p.base
        C = q.lo.size
        if p.window or np.size(q.scale) not in (1, C):
            return None
        a = np.broadcast_to(np.asarray(q.scale, np.float64).reshape(-1), (C,)).astype(dtype)
        b = np.zeros(C, dtype)
        muls: list[np.ndarray] = []
        sign = 1  # of a, from subtractions c - x
        data = {p.src, *(n.output[0] for n in p.nodes)}
        for n in p.nodes:
            k = 1 if n.input[0] in data else 0  # the constant's position
            c = self.consts.get(n.input[k]) if len(n.input) == 2 else None
            if c is None or n.op_type not in ("Mul", "Div", "Add", "Sub") or \
                    (k == 0 and n.op_type == "Div") or np.size(c) not in (1, C):
                return None
            if n.op_type == "Div":  # FINN multiplies by the reciprocal in the divisor's dtype
                c = np.asarray(c)
                dt = c.dtype if np.issubdtype(c.dtype, np.floating) else np.float64
                c, op = (1.0 / c).astype(dt), "Mul"
            else:
                op = n.op_type
            c = np.broadcast_to(np.asarray(c).reshape(-1), (C,)).astype(dtype)
            if op == "Mul":
                a, b = a * c, b * c
                muls.append(c)
            elif op == "Add":
                b = b + c
            elif k == 1:  # x - c
                b = b - c
            else:  # c - x
                a, b, sign = -a, c - b, -sign
        if mults is not None:
            mults.extend(muls)
        if q.factors and np.dtype(dtype) == np.float32:  # FINN's factors, collapsed as it does
            base = [np.broadcast_to(f.reshape(-1), (C,)).astype(dtype) for f in q.factors]
            a = sign * collapse_pairwise(base + muls)
        return a, b

    def linear_input(self, node: onnx.NodeProto, values: np.ndarray, padded: bool,
                     weights: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> tuple[Q, np.ndarray | None]:
        """A linear layer's input as integer codes, and the constant (per output) the layer adds
        when its input is an affine map of codes: finn-examples' MobileNet takes uint8 images
        and runs /255, the per-channel mean and one std ahead of its first convolution, which
        FINN moves past that (unpadded) convolution; so does this. ``values`` are the weights
        as (out, in, ...) float values; ``weights`` a convolution's (integer codes, scale per
        output channel), with which the offset is FINN's own (:meth:`_moved_past_conv`)."""
        r = self.env.get(node.input[0])
        aff = self._affine(r) if isinstance(r, Pending) else None
        if aff is not None and not np.any(aff[1]):  # a rescaling only
            return self._rescaled(r.base, aff[0]), None
        if aff is None or r.base.zp != 0 or not np.all(aff[0] == aff[0][0]) or aff[0][0] == 0:
            return self.q_of(node.input[0], node), None
        a, b = float(aff[0][0]), aff[1]
        if padded:
            ops = ", ".join(n.op_type for n in r.nodes)
            raise CompileError(f"{self.where(node)}: an offset ({ops}) ahead of a padded layer "
                               "(FINN cannot move it past the padding either)")
        C = r.base.lo.size
        if weights is not None and node.op_type == "Conv":
            a, factors, offset = self._moved_past_conv(node, r, *weights)
            q = r.base
            return Q(q.name, np.array(a), 0.0, q.lo, q.hi, q.shape, factors), offset
        per_in = np.asarray(values, np.float64).reshape(values.shape[0], values.shape[1], -1)
        if per_in.shape[1] == C:
            offset = per_in.sum(axis=2) @ b
        elif per_in.shape[1] == 1 and values.shape[0] == C:  # depthwise
            offset = per_in[:, 0, :].sum(axis=1) * b
        else:
            return self.q_of(node.input[0], node), None
        q = r.base
        return Q(q.name, np.array(a), 0.0, q.lo, q.hi, q.shape), offset

    def _moved_past_conv(self, node: onnx.NodeProto, r: Pending, codes: np.ndarray,
                         w_scale: np.ndarray
                         ) -> tuple[float, tuple[np.ndarray, ...], np.ndarray]:
        """The input's scale, its factors and the offset per output of an (unpadded)
        convolution whose input is ``a * codes + b``, as FINN's streamlining computes them: the
        multiplications move past the layer one by one (FINN collapses them with those after
        it), the additions collapse into ``b`` (:meth:`_affine`, float32), and
        ``MoveAddPastConv`` runs the convolution itself, by onnxruntime in float32 (qonnx's
        ``execute_node``), on a map filled with ``b``, weights its integer codes (FINN folds a
        weight quantizer's scale into a Mul after the layer), and reads the first pixel; moved
        past that Mul, it is multiplied by the weight scale in float32. (In float64 the offset
        could part from FINN's by an ulp: 2 of quant_mobilenet_v1_4b's first 480 thresholds
        did.)"""
        mults: list[np.ndarray] = []
        a, b = self._affine(r, np.float32, mults)
        shape = (1, *self.shape(node.input[0])[1:])
        fill = np.ascontiguousarray(np.broadcast_to(b.reshape(1, -1, 1, 1), shape), np.float32)
        w = codes.astype(np.float32)
        graph = helper.make_graph(
            [onnx.NodeProto.FromString(node.SerializeToString())], "moved", [
                helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, list(shape)),
                helper.make_tensor_value_info(node.input[1], TensorProto.FLOAT, list(w.shape))],
            [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)])
        del graph.node[0].input[2:]  # a bias stays the layer's own
        out = np.zeros((1, *self.shape(node.output[0])[1:]), np.float32)
        ctx = {node.input[0]: fill, node.input[1]: w, node.output[0]: out}
        execute_node(graph.node[0], ctx, graph, opset_version=11)  # FINN v0.10.1: 11
        moved = np.asarray(ctx[node.output[0]], np.float32)[0, :, 0, 0]
        # FINN moves scalar multiplications past the layer (and removes a Mul by 1)
        scalar = all(np.all(m == m[0]) for m in mults)
        factors = tuple(m[:1] for m in mults if not np.all(m == 1)) if scalar else ()
        offset = (moved * np.asarray(w_scale, np.float32).reshape(-1)).astype(np.float32)
        return float(a[0]), factors, offset

    @handles("Conv")
    def conv(self, node: onnx.NodeProto) -> None:
        w = self.const_of(node.input[1])
        if w is None:
            raise CompileError(f"{self.where(node)}: weights must be constant")
        attrs = attributes(node)
        codes, scale = self.weight_codes(node.input[1], node)
        x, offset = self.linear_input(node, w, any(attrs.get("pads", [0])), (codes, scale))
        bias = self.const_of(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        bias = _plus(bias, offset)

        def emit(xname: str) -> str:
            return self.b.op("Conv", [xname, self.b.const(codes)], hint="acc", **attrs)

        depthwise = attrs.get("group", 1) == codes.shape[0] == x.lo.size and codes.shape[1] == 1
        self._linear(node, x, codes, scale.reshape(-1), bias, emit, depthwise)

    @handles("Gemm")
    def gemm(self, node: onnx.NodeProto) -> None:
        attrs = attributes(node)
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            raise CompileError(f"{self.where(node)}: only alpha = beta = 1 without transA")
        w = self.const_of(node.input[1])
        if w is None:
            raise CompileError(f"{self.where(node)}: weights must be constant")
        x, offset = self.linear_input(node, w if attrs.get("transB", 0) else w.T, False)
        codes, scale = self.weight_codes(node.input[1], node,  # (out, in)
                                         transpose=not attrs.get("transB", 0))
        bias = self.const_of(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        bias = _plus(bias, offset)

        def emit(xname: str) -> str:
            w = self.b.const(codes)
            self.weights[node.name] = (w, "out_in", *codes.shape[::-1])
            return self.b.op("Gemm", [xname, w], hint="acc", transB=1)

        self._linear(node, x, codes, scale.reshape(-1), bias, emit)

    @handles("MatMul")
    def matmul(self, node: onnx.NodeProto) -> None:
        w = self.const_of(node.input[1])
        if w is None or w.ndim != 2:
            raise CompileError(f"{self.where(node)}: weights must be a constant matrix")
        x, offset = self.linear_input(node, w.T, False)
        codes, scale = self.weight_codes(node.input[1], node, transpose=True)

        def emit(xname: str) -> str:
            w = self.b.const(codes.T)
            self.weights[node.name] = (w, "in_out", *codes.shape[::-1])
            return self.b.op("MatMul", [xname, w], hint="acc")

        self._linear(node, x, codes, scale.reshape(-1), offset, emit)

    # ---- pooling and shapes ---------------------------------------------------------------
    @handles("MaxPool")
    def max_pool(self, node: onnx.NodeProto) -> None:
        x = self.q_of(node.input[0], node)
        attrs = attributes(node)
        out = self.b.op("MaxPool", [x.name], **attrs)
        self.env[node.output[0]] = Q(out, x.scale, x.zp, x.lo, x.hi, self.shape(node.output[0]))

    @handles("AveragePool")
    def average_pool(self, node: onnx.NodeProto) -> None:
        x = self.q_of(node.input[0], node)
        attrs = attributes(node)
        kh, kw = attrs["kernel_shape"]
        if any(attrs.get("pads", [0])) or x.zp != 0:
            raise CompileError(f"{self.where(node)}: padded average pools are not supported")
        # exact window sum of codes: the float average times the window size, rounded
        avg = self.b.op("AveragePool", [x.name], **attrs)
        s = self.b.op("Round", [self.b.op("Mul", [avg, self.b.const(float(kh * kw))])], hint="sum")
        q = Q(s, x.scale, 0.0, x.lo * kh * kw, x.hi * kh * kw, self.shape(node.output[0]))
        self.env[node.output[0]] = Pending(q, node.input[0], [node], (kh, kw))

    def _reshape_like(self, node: onnx.NodeProto, emit) -> None:
        x = self.env.get(node.input[0])
        if isinstance(x, Pending) and not x.window and x.nodes and all(
                self._scalar_elementwise(n) for n in x.nodes):
            # a layout op behind float operations by one constant each (a flatten after the
            # /255 of an image): they commute, so the layout moves onto the integer tensor and
            # the operations stay pending, renamed onto this node's output
            base = self._reshaped(x.base, node, emit)
            rename = helper.make_node("Identity", [x.nodes[-1].output[0]], [node.output[0]])
            self.env[node.output[0]] = Pending(base, x.src, x.nodes + [rename])
            return
        if not isinstance(x, Q):
            raise CompileError(f"{self.where(node)}: input is not a quantized tensor")
        self.env[node.output[0]] = self._reshaped(x, node, emit)

    def _scalar_elementwise(self, n: onnx.NodeProto) -> bool:
        c = self.consts.get(n.input[1]) if len(n.input) == 2 else None
        return n.op_type in ("Mul", "Div", "Add", "Sub") and c is not None and np.size(c) == 1

    def _reshaped(self, x: Q, node: onnx.NodeProto, emit) -> Q:
        out_shape = self.shape(node.output[0])
        scale = x.scale
        if scale.size > 1:
            c = scale.size
            if len(out_shape) == 2 and out_shape[1] == c and int(np.prod(x.shape[2:])) == 1:
                scale = scale.reshape(1, c)
            else:
                raise CompileError(f"{self.where(node)}: per-channel scale cannot be reshaped")
        lo, hi = x.lo, x.hi
        if lo.size > 1 and len(out_shape) == 2 and out_shape[1] != lo.size:
            lo, hi = np.array([lo.min()]), np.array([hi.max()])
        return Q(emit(x.name), scale, x.zp, lo, hi, out_shape)

    @handles("Flatten")
    def flatten(self, node: onnx.NodeProto) -> None:
        axis = helper.get_attribute_value(node.attribute[0]) if node.attribute else 1
        if axis != 1:
            raise CompileError(f"{self.where(node)}: only Flatten(axis=1)")
        self._reshape_like(node, lambda n: self.b.op("Flatten", [n], axis=1))

    @handles("Reshape")
    def reshape(self, node: onnx.NodeProto) -> None:
        target = np.array(self.shape(node.output[0]), dtype=np.int64)
        target[0] = 0  # keep the batch dimension of the input
        self._reshape_like(node, lambda n: self.b.op("Reshape", [n, self.b.const(target, dtype=np.int64)]))

    @handles("TopK")
    def top_k(self, node: onnx.NodeProto) -> None:
        k = self.const_of(node.input[1])
        attrs = attributes(node)
        pending = self.env.get(node.input[0])
        tail = isinstance(pending, Pending) and not pending.window
        if tail:
            x = pending.base
            vals = self._whole_bias(pending) or self._float_tail(pending)
        else:
            x = self.q_of(node.input[0], node)
            vals = x.name
            if x.zp != 0:
                vals = self.b.op("Sub", [vals, self.b.const(x.zp)])
            if x.scale.size > 1:  # per-channel scale changes the order: compare values (exact)
                vals = self.b.op("Mul", [vals, self.b.const(x.scale)])
        out_v, out_i = self.b.fresh("topk_values"), self.b.fresh("topk_indices")
        self.b.nodes.append(
            helper.make_node("TopK", [vals, self.b.const(k, dtype=np.int64)], [out_v, out_i], **attrs)
        )
        self.env[node.output[1]] = out_i
        if tail:
            return  # the values are the tail's floats, not codes: only the indices go on
        self.env[node.output[0]] = Q(out_v, x.scale if x.scale.size == 1 else np.array(1.0),
                                     0.0, x.lo, x.hi, self.shape(node.output[0]))

    def _whole_bias(self, p: Pending) -> str | None:
        """A classifier's bias that is a whole number n of accumulator steps (Brevitas' Int32Bias:
        n times the accumulator's one scale, stored in float32) before the TopK: the scores are
        the integers acc + n, as FINN builds them (a ChannelwiseOp adding n, the scale absorbed
        into its TopK, a LabelSelect); the float reference rounds acc * s + b, which can only
        part from it where two classes tie. None for any other tail."""
        q = p.base
        scale = np.asarray(q.scale, np.float64).reshape(-1)
        if len(p.nodes) != 1 or p.nodes[0].op_type != "Add" or q.zp != 0 or \
                scale[0] <= 0 or np.any(scale != scale[0]):
            return None
        add = p.nodes[0]
        const = [t for t in add.input if t != p.src]
        if len(const) != 1 or const[0] not in self.consts:
            return None
        n = whole_steps(self.consts[const[0]], scale[0])  # as the FINN build's step
        if n is None or float(np.abs(n).max() + max(abs(q.lo.min()), abs(q.hi.max()))) \
                >= EXACT_LIMIT:
            return None
        self.stats["tail"] = self.stats.get("tail", 0) + 1
        return self.b.op("Add", [q.name, self.b.const(n.astype(np.float32))])

    def _float_tail(self, p: Pending) -> str:
        """A float tail before the output's TopK (TensorNorm, a per-channel batch norm, scalar
        Mul/Add): FINN leaves it outside the dataflow partition, to the host, and so does the
        emulator: the integer tensor becomes its value (exactly with a power-of-two scale, once
        rounded to float32 with a learned one), and the reference's own float32 operations run
        on it, node for node (renamed), so with power-of-two scales the logits and the order
        TopK sees are the reference's bit for bit."""
        q = p.base
        if max(abs(q.lo.min()), abs(q.hi.max())) >= EXACT_LIMIT:
            raise CompileError(f"the float operations on {p.src} before the TopK need an exact "
                               "value to start from (codes below 2**24)")
        value = q.name
        if q.zp != 0:
            value = self.b.op("Sub", [value, self.b.const(q.zp)])
        if not np.all(q.scale == 1.0):
            value = self.b.op("Mul", [value, self.b.const(q.scale)])
        names = {p.src: value}
        for n in p.nodes:
            inputs = []
            for t in n.input:
                if t in names:
                    inputs.append(names[t])
                elif t in self.consts:
                    c = np.asarray(self.consts[t])
                    inputs.append(self.b.const(c, dtype=c.dtype))
                else:
                    raise CompileError(f"{self.where(n)}: input {t} before the TopK is neither "
                                       "the tensor nor a constant")
            outputs = [self.b.fresh("tail") for _ in n.output]
            names.update(zip(n.output, outputs))
            self.b.nodes.append(helper.make_node(n.op_type, inputs, outputs,
                                                 **{a.name: helper.get_attribute_value(a)
                                                    for a in n.attribute}))
        self.stats["tail"] = self.stats.get("tail", 0) + len(p.nodes)
        return names[p.nodes[-1].output[0]]

    # ---- quantizers: measure the float chain and replace it ----------------------------------
    @handles("Quant", "Trunc", "BipolarQuant")
    def _quantizer(self, node: onnx.NodeProto) -> None:
        r = self.env.get(node.input[0])
        if isinstance(r, Q):
            r = Pending(r, node.input[0], [])
        if not isinstance(r, Pending):
            raise CompileError(f"{self.where(node)}: input is not computed from the model input")
        chain = r.nodes + [node]
        if node.op_type == "BipolarQuant":
            # codes -1 and +1 (FINN's BIPOLAR): a step measured like any other (the levels
            # -1 -> 0 -> +1 share one threshold)
            scale, zp, bits = self.consts[node.input[1]], np.zeros(1), None
        elif node.op_type == "Quant":
            scale, zp, bits = (self.consts[t] for t in node.input[1:4])
        elif len(node.input) == 6:  # Trunc v2: x, scale, zeropt, in_bits, out_scale, out_bits
            zp = self.consts[node.input[2]]
            scale = self.consts[node.input[4]]
            bits = self.consts[node.input[5]]
        else:  # Trunc v1: x, scale, zeropt, in_bits, out_bits; the scale grows by the bits cut
            in_scale, zp, in_bits, bits = (self.consts[t] for t in node.input[1:5])
            scale = in_scale * 2.0 ** (float(in_bits) - float(bits))
        try:
            out = quantizer_codes(node.op_type, attributes(node), bits)
        except ValueError as exc:
            raise CompileError(f"{self.where(node)}: {exc}") from exc
        qmin, qmax = out.lo, out.hi
        if np.size(zp) != 1:
            raise CompileError(f"{self.where(node)}: one zero point is needed")
        codes = self.requant(r, chain, float(scale.flatten()[0]) if scale.size == 1 else scale,
                             float(np.asarray(zp).flatten()[0]), qmin, qmax, node)
        out_shape = self.shape(node.output[0])
        c = r.base.lo.size
        sc = np.asarray(scale, dtype=np.float64)
        sc = sc.reshape(()) if sc.size == 1 else sc.reshape(chan_shape(len(out_shape), sc.size))
        self.env[node.output[0]] = Q(codes, sc, float(np.asarray(zp).flatten()[0]),
                                     np.full(c, qmin, dtype=np.float64),
                                     np.full(c, qmax, dtype=np.float64), out_shape)


    def _probe(self, p: Pending, chain: list[onnx.NodeProto], acc: np.ndarray,
               scale, zp: float) -> np.ndarray:
        """Run the reference chain on accumulators ``acc`` (P, C); return the output codes."""
        base = p.base
        rank = len(base.shape)
        P, C = acc.shape
        if p.window:
            kh, kw = p.window
            n = kh * kw
            q, rem = np.divmod(acc.astype(np.int64), n)
            cells = np.repeat(q[:, :, None], n, axis=2) + (np.arange(n)[None, None, :] < rem[:, :, None])
            codes = cells.reshape(P, C, kh, kw).astype(np.float64)
            in_shape = (P, C, kh, kw)
        else:
            codes = acc.astype(np.float64).reshape((P, C) + (1,) * (rank - 2))
            in_shape = codes.shape
        value = ((codes - base.zp) * np.asarray(base.scale, dtype=np.float64)).astype(np.float32)
        inits = {}
        for n in chain:
            for t in n.input[1:]:
                if t and t in self.consts:
                    inits[t] = self.consts[t]
        out = chain[-1].output[0]
        graph = helper.make_graph(
            chain,
            "probe",
            [helper.make_tensor_value_info(p.src, TensorProto.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
        )
        pm = ModelWrapper(qonnx_make_model(graph, opset_imports=list(self.m.model.opset_import)))
        pm = pm.transform(InferShapes())
        y = execute_onnx(pm, {p.src: value})[out].astype(np.float64)
        y = (y / np.asarray(scale, dtype=np.float64) + zp).reshape(P, C)
        codes = np.round(y)  # a scale that is not a power of two: code * scale / scale ~ code
        if np.any(np.abs(y - codes) > 1e-3):
            raise CompileError(f"node {chain[-1].name}: probe output is not integer codes")
        return codes

    def requant(self, p: Pending, chain, scale, zp, qmin, qmax, node) -> str:
        base = p.base
        C = base.lo.size
        lo, hi = base.lo.astype(np.int64), base.hi.astype(np.int64)
        width = int((hi - lo).max()) + 1

        def measured(acc: np.ndarray) -> np.ndarray:
            return self._probe(p, chain, acc, scale, zp)

        points = min(COARSE_POINTS, width)
        grid = np.linspace(lo, hi, points).round().astype(np.int64)  # (G, C)
        y = measured(grid)
        f = measured
        finn = self._finn_thresholds(p, chain, qmin, qmax)
        if finn is not None:
            sign, Tf = finn

            def thresholded(acc: np.ndarray) -> np.ndarray:  # FINN's thresholds on acc
                a = acc * sign[None, :]
                return qmin + (a[:, :, None] >= Tf[None]).sum(axis=2).astype(np.float64)

            # a tie moves a code by one at a point or two of the grid; more means the chain
            # is not what FINN's derivation assumes: it stays measured
            apart = np.abs(thresholded(grid) - y)
            if apart.max() <= 1 and np.mean(apart > 0) <= TIE_SHARE:
                f = thresholded
                self.stats["finn_order"] += 1
                self.finn_thresholds[node.name] = (Tf, sign)
        if f is measured:
            d = np.diff(y, axis=0)
            inc = np.all(d >= 0, axis=0)
            dec = np.all(d <= 0, axis=0)
            if not np.all(inc | dec):
                if width <= LUT_LIMIT:
                    return self._emit_lut(p, f, lo, width)
                bad = int(np.flatnonzero(~(inc | dec))[0])
                raise CompileError(f"{self.where(node)}: channel {bad} is not monotone in its "
                                   "input")
            sign = np.where(inc, 1, -1)
        acc_name = base.name
        if np.any(sign < 0):
            signs = self.b.const(sign.reshape(chan_shape(len(base.shape), C)))
            acc_name = self.b.op("Mul", [acc_name, signs])
        slo = np.where(sign > 0, lo, -hi)
        shi = np.where(sign > 0, hi, -lo)

        def g(a: np.ndarray) -> np.ndarray:  # non-decreasing in a
            return f(a * sign[None, :])

        T = self._thresholds(g, slo, shi, qmin, qmax)
        fit = fit_affine(T, slo, shi, g(np.stack([slo, shi])), qmin, qmax)
        rank = len(base.shape)
        cs = chan_shape(rank, C)
        if fit is not None:
            B, M = fit
            self.stats["affine"] += 1
            added = self._into_bias(acc_name, B.reshape(cs))
            return self._emit_scale_round_clip(added, M, C, rank, qmin, qmax)
        if width <= LUT_LIMIT:
            return self._emit_lut(p, f, lo, width)
        self.stats["thresholds"] += 1
        L = T.shape[1]
        Tt = np.where(np.isfinite(T), T, np.where(T > 0, 3e38, -3e38)).astype(np.float32)
        ge = self.b.op("GreaterOrEqual", [
            self.b.op("Unsqueeze", [acc_name, self.b.const(np.array([-1]), dtype=np.int64)]),
            self.b.const(Tt.reshape(cs + (L,)))])
        cnt = self.b.op("ReduceSum", [self.b.op("Cast", [ge], to=TensorProto.FLOAT),
                                      self.b.const(np.array([-1]), dtype=np.int64)], keepdims=0)
        return self.b.op("Add", [cnt, self.b.const(float(qmin))], hint="codes")

    def _finn_thresholds(self, p: Pending, chain: list[onnx.NodeProto], qmin: int, qmax: int
                         ) -> tuple[np.ndarray, np.ndarray] | None:
        """The thresholds FINN's streamlining puts on this accumulator, in its float32 order.

        For a chain of multiplications and additions by constants, then a Quant (unsigned after
        a Relu, signed without one; zero point 0) or a BipolarQuant of scale 1 (one threshold
        at 0, which its two levels share): FINN's QONNX conversion makes the Quant a
        MultiThreshold with thresholds ``T0`` in the quantizer's input domain (float32, computed
        as its handlers do); streamlining collapses the multiplications into one product ``M``
        (an addition moved past a multiplication is multiplied by it) and the additions into one
        ``A``, absorbs them as ``(T0 - A) / |M|`` in float32 (a negative ``M``'s sign goes into
        the weights), and rounds up. Returns (sign per channel, thresholds (C, L) on
        ``sign * acc``), or None for any other chain (it is measured instead): where a value
        lies within float32 rounding of a step, FINN's thresholds and a measurement of the
        reference can fall on either side, and the hardware computes FINN's."""
        base = p.base
        q = chain[-1]
        if p.window or q.op_type not in ("Quant", "BipolarQuant") or base.zp != 0:
            return None
        C = base.lo.size
        f32 = np.float32
        relu = len(chain) > 1 and chain[-2].op_type == "Relu"
        if q.op_type == "BipolarQuant":  # FINN: one threshold at 0, the two levels share it
            qscale, signed, narrow = self.consts.get(q.input[1]), True, False
            if relu or qscale is None or np.any(np.asarray(qscale) != 1):
                return None  # FINN takes only a bipolar identity of scale 1
        else:
            qscale, qzp, bits = (self.consts.get(t) for t in q.input[1:4])
            if qscale is None or qzp is None or bits is None or np.any(qzp != 0):
                return None
            codes = quantizer_codes(q.op_type, attributes(q), bits)
            signed, narrow = codes.signed, codes.narrow
            if relu and (signed or narrow) or not relu and not signed:
                return None  # FINN's handlers refuse these too
        if np.size(qscale) not in (1, C):
            return None
        # the multiplications and additions before it (a Relu only directly before the Quant)
        found = self._affine(Pending(base, p.src, chain[:-2] if relu else chain[:-1]), f32)
        if found is None:
            return None
        M, A = found
        if np.any(M == 0) or not np.all(np.isfinite(M)):
            return None
        # the quantizer's thresholds, as FINN's handlers compute them (float64 scalars into a
        # float32 table)
        step = np.abs(np.asarray(qscale).reshape(-1)).astype(f32)
        count = qmax - qmin
        t = np.arange(count, dtype=np.float64)
        if q.op_type == "BipolarQuant":
            step, first = np.zeros(1, f32), np.zeros(1, f32)
        elif relu:
            first = step / f32(2)
        else:
            first = -(step / f32(2.0)) - step * f32(count // 2 - 1)
            if not narrow:
                first = first - step
        T0 = (first.astype(np.float64)[:, None] + step.astype(np.float64)[:, None] * t).astype(f32)
        T0 = np.broadcast_to(T0, (C, count))
        sign = np.where(M > 0, 1, -1)
        T = (T0 - A[:, None]) / np.abs(M)[:, None]
        return sign, np.ceil(T.astype(np.float64))

    def _emit_scale_round_clip(self, v: str, M: np.ndarray, C: int, rank: int,
                               qmin: int, qmax: int) -> str:
        """clip(rint(v * M)). On 4-D tensors as two depthwise 1x1 convolutions (scale, then
        unshift), whose biases add and remove ROUNDER: onnxruntime keeps those in its blocked
        layout and fuses the clip, where Mul/Floor nodes would be reordered around. Whether it
        computes v * M + R with one rounding or two does not matter: the form is verified both
        ways (see :func:`_apply`)."""
        if rank != 4:
            cs = chan_shape(rank, C)
            r = self.b.op("Mul", [v, self.b.const(M.reshape(cs))])
            r = self.b.op("Add", [self.b.op("Add", [r, self.b.const(ROUNDER)]),
                                  self.b.const(-ROUNDER)])
        else:
            w = (C, 1, 1, 1)
            r = self.b.op("Conv", [v, self.b.const(M.reshape(w)), self.b.const(np.full(C, ROUNDER))],
                          group=C, kernel_shape=[1, 1])
            r = self.b.op("Conv", [r, self.b.const(np.ones(w)), self.b.const(np.full(C, -ROUNDER))],
                          group=C, kernel_shape=[1, 1])
        return self.b.op("Clip", [r, self.b.const(qmin), self.b.const(qmax)], hint="codes")

    def _into_bias(self, acc: str, B: np.ndarray) -> str:
        """acc + B: as the bias of the convolution that made ``acc`` when it has none (the
        convolution adds its bias to the finished sum, one float add, as an Add node would)."""
        node = next((n for n in self.b.nodes if acc in n.output), None)
        if node is not None and node.op_type == "Conv" and len(node.input) == 2:
            node.input.append(self.b.const(B.reshape(-1)))
            return acc
        return self.b.op("Add", [acc, self.b.const(B)])

    def _emit_lut(self, p: Pending, f, lo: np.ndarray, width: int) -> str:
        base = p.base
        C = base.lo.size
        accs = lo[None, :] + np.arange(width)[:, None]  # (W, C)
        table = f(accs).T.reshape(-1)  # channel-major
        cs = chan_shape(len(base.shape), C)
        offset = (np.arange(C) * width - lo).reshape(cs)
        idx = self.b.op("Cast", [self.b.op("Add", [base.name, self.b.const(offset)])],
                        to=TensorProto.INT64)
        self.stats["lut"] += 1
        return self.b.op("Gather", [self.b.const(table), idx], hint="codes", axis=0)

    def _thresholds(self, g, lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
        """T[c, j]: the least a in [lo, hi] with g(a) >= qmin + 1 + j (+inf/-inf outside)."""
        C = lo.size
        levels = np.arange(qmin + 1, qmax + 1)
        L = levels.size
        y_lo, y_hi = g(np.stack([lo, hi]))  # (C,) each
        T = np.empty((C, L))
        a = np.repeat(lo[:, None], L, axis=1).astype(np.int64)  # g(a) < level
        b = np.repeat(hi[:, None], L, axis=1).astype(np.int64)  # g(b) >= level
        below = y_lo[:, None] >= levels[None, :]
        never = y_hi[:, None] < levels[None, :]
        active = ~(below | never)
        while True:
            open_ = active & (b - a > 1)
            if not open_.any():
                break
            mid = (a + b) // 2
            # evaluate the (C, L) midpoints as L probes per channel
            y = g(mid.T).T  # (C, L)
            up = y >= levels[None, :]
            b = np.where(open_ & up, mid, b)
            a = np.where(open_ & ~up, mid, a)
        T[:] = b
        T[below] = -np.inf
        T[never] = np.inf
        return T


def _plus(bias: np.ndarray | None, offset: np.ndarray | None) -> np.ndarray | None:
    """A linear layer's bias plus the constant its input's offset adds (either may be absent)."""
    if offset is None:
        return bias
    return offset if bias is None else np.asarray(bias, np.float64).reshape(-1) + offset


def compile_model(model: ModelWrapper) -> Program:
    """Compile a QONNX model (integer input, one output) into a bit-exact program."""
    return _Compiler(model).run()
