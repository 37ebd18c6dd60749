"""Legal cut points of a QONNX model and what crosses the link at each.

A cut may sit only on the output of an activation quantizer (a ``Quant`` or ``BipolarQuant``
node whose input is computed from the model input, not a weight) with positive scales (any
value: a learned one crosses as the integer code and a ``Mul`` in the next stage; one scale, or
one per channel as Brevitas' MobileNet has ahead of its depthwise layers) and one zero point,
and only where that tensor is the one thing that crosses: no other computed tensor of the part
before is used by the part after (so a residual network cuts between its blocks). What crosses
is the integer code ``value / scale + zero_point`` with a FINN datatype (UINT4, INT8, BIPOLAR,
...), in FINN's packed NHWC layout (see ``pack``); a per-channel scale stays in the stages on
either side (the codes are integers either way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from finnchain.graph.model import constant_tensors, input_name, quantizer_codes
from finnchain.graph.pack import packed_bytes


@dataclass(frozen=True)
class CutPoint:
    """A place where the model may be split between two boards."""

    index: int  # position among the model's legal cuts, in graph order
    tensor: str  # the quantizer output in the whole model
    node: str  # the quantizer that produces it
    shape: tuple[int, ...]  # NCHW (or NC) shape for batch 1
    datatype: str  # FINN datatype of the codes, e.g. "UINT4"
    scale: float | tuple[float, ...]  # value = (code - zero_point) * scale, per channel if a tuple
    zero_point: float
    bytes_per_frame: int  # packed NHWC, innermost dimension (channels) padded to whole bytes
    nodes_before: int  # non-constant nodes upstream of the cut (for display and planning)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, tuple)

    def scale_array(self) -> np.ndarray:
        """The scale as float32, shaped to broadcast over the cut's NCHW (or NC) tensor."""
        if not self.per_channel:
            return np.asarray(self.scale, dtype=np.float32)
        return np.asarray(self.scale, dtype=np.float32).reshape(
            [1, len(self.scale)] + [1] * (len(self.shape) - 2))


def codes_datatype(model: ModelWrapper, node) -> DataType | None:
    if node.op_type == "BipolarQuant":  # sign(x) * scale: -1 and +1 on the wire (FINN's BIPOLAR)
        return DataType["BIPOLAR"]
    try:
        codes = quantizer_codes(model, node)
    except ValueError:  # a computed bit width
        return None
    bits, signed = codes.bits, codes.signed
    if bits == 1 and signed:
        return DataType["BIPOLAR"]
    # a narrow range (-7..7 for INT4) travels in the full type's container
    return DataType[f"INT{bits}" if signed else f"UINT{bits}"]


def compute_nodes(model: ModelWrapper) -> list:
    """Nodes that depend on the model input (weights and their quantizers are excluded)."""
    const = constant_tensors(model)
    return [n for n in model.graph.node if not all(t in const for t in n.input if t)]


def _crossing(model: ModelWrapper, compute: list, upto: int) -> set[str]:
    """Computed tensors produced by compute[:upto+1] and used by compute[upto+1:]."""
    produced = {t for n in compute[: upto + 1] for t in n.output}
    used = {t for n in compute[upto + 1 :] for t in n.input}
    outputs = {o.name for o in model.graph.output}
    return (produced & used) | (produced & outputs if upto + 1 < len(compute) else set())


@dataclass(frozen=True)
class Rejection:
    """An activation quantizer that is not a legal cut, and why (for ``finnchain cuts``)."""

    node: str
    op_type: str
    tensor: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


# quantizers whose output could be a cut once supported (issue: bring your own model)
QUANTIZERS = ("Quant", "BipolarQuant", "Trunc")


def _why_not(model: ModelWrapper, compute: list, i: int, inp: str) -> str | None:
    """Why the quantizer ``compute[i]`` is not a legal cut, or None when it is one."""
    node = compute[i]
    if i == len(compute) - 1:
        return "it computes the model's output: there is nothing after it to put on another board"
    if node.input[0] == inp:
        return "it quantizes the model input itself (a cut there would be the model's input)"
    if node.op_type not in ("Quant", "BipolarQuant"):
        return f"{node.op_type} outputs are not supported as cuts yet (Quant and BipolarQuant)"
    scale = model.get_initializer(node.input[1])
    zp = _zero_point(model, node)
    if scale is None or zp is None:
        return "its scale or zero point is computed, not a constant"
    if np.size(zp) != 1:
        return f"its zero point is per-channel ({np.size(zp)} values); a cut needs one"
    if np.size(scale) != 1 and not _one_per_channel(model, node, scale):
        return (f"its scale has shape {list(np.shape(scale))}: a cut takes one scale or one "
                f"per channel (shape [1, C, 1, 1] or [1, C])")
    if not np.all(np.asarray(scale) > 0):
        return f"its scale {float(np.min(scale)):.6g} is not positive"
    crossing = _crossing(model, compute, i)
    if crossing != {node.output[0]}:
        others = sorted(crossing - {node.output[0]})
        return (f"other tensors cross here too ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}): e.g. a residual branch")
    try:
        quantizer_codes(model, node)
    except ValueError as exc:  # a computed bit width, a Quant without its attributes
        return str(exc)
    return None


def _one_per_channel(model: ModelWrapper, node, scale: np.ndarray) -> bool:
    """Whether ``scale`` holds one value per channel (axis 1) of the quantizer's NCHW or NC
    output, broadcast over everything else."""
    shape = model.get_tensor_shape(node.output[0])
    sshape = list(np.shape(scale))
    if shape is None or len(shape) < 2 or len(sshape) not in (len(shape), len(shape) - 1):
        return False
    full = [1] * (len(shape) - len(sshape)) + sshape  # numpy broadcasting pads on the left
    return full == [1, shape[1]] + [1] * (len(shape) - 2)


def _scale_of(model: ModelWrapper, node) -> float | tuple[float, ...]:
    """The quantizer's scale: one float, or one per channel (a tuple, in channel order)."""
    scale = np.asarray(model.get_initializer(node.input[1]), dtype=np.float32)
    if scale.size == 1:
        return float(scale.flatten()[0])
    return tuple(float(v) for v in scale.flatten())


def _zero_point(model: ModelWrapper, node) -> np.ndarray | None:
    """A quantizer's zero point (BipolarQuant has none: 0)."""
    if node.op_type == "BipolarQuant":
        return np.zeros(1, dtype=np.float32)
    return model.get_initializer(node.input[2])


def examine(model: ModelWrapper) -> tuple[list[CutPoint], list[Rejection]]:
    """Every activation quantizer of ``model``: a legal cut, or a rejection with its reason."""
    compute = compute_nodes(model)
    cuts: list[CutPoint] = []
    rejected: list[Rejection] = []
    inp = input_name(model)
    for i, node in enumerate(compute):
        if node.op_type not in QUANTIZERS:
            continue
        out = node.output[0]
        reason = _why_not(model, compute, i, inp)
        if reason is not None:
            rejected.append(Rejection(node.name, node.op_type, out, reason))
            continue
        dt = codes_datatype(model, node)
        shape = tuple(model.get_tensor_shape(out))
        cuts.append(
            CutPoint(
                index=len(cuts),
                tensor=out,
                node=node.name,
                shape=shape,
                datatype=dt.name,
                scale=_scale_of(model, node),
                zero_point=float(np.asarray(_zero_point(model, node)).flatten()[0]),
                bytes_per_frame=packed_bytes(nhwc(shape), dt),
                nodes_before=i + 1,
            )
        )
    return cuts, rejected


def cut_points(model: ModelWrapper) -> list[CutPoint]:
    """Every legal cut of ``model``, in graph order (the graph must be topologically sorted)."""
    return examine(model)[0]


def rejections(model: ModelWrapper) -> list[Rejection]:
    """Every activation quantizer that is not a legal cut, with the reason, in graph order."""
    return examine(model)[1]


def why_no_cuts(model: ModelWrapper, limit: int = 6) -> str:
    """A sentence for an error: why the model has too few cuts (the first ``limit`` reasons)."""
    rej = rejections(model)
    if not rej:
        return ("it has no activation quantizer (Quant) between two computed layers: a cut "
                "sits on a quantized activation")
    lines = [f"{r.node} ({r.op_type}): {r.reason}" for r in rej[:limit]]
    more = f"; and {len(rej) - limit} more (finnchain cuts MODEL --why)" if len(rej) > limit else ""
    return "its activation quantizers are not legal cuts: " + "; ".join(lines) + more


def nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    """NCHW -> NHWC (FINN's layout on the wire); 2-D shapes stay as they are."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    return tuple(shape)


def even_cuts(model: ModelWrapper, stages: int) -> list[CutPoint]:
    """``stages - 1`` legal cuts spread evenly over the model's legal cuts."""
    legal = cut_points(model)
    if stages < 1:
        raise ValueError("the number of stages must be at least 1")
    if stages - 1 > len(legal):
        raise ValueError(f"{stages} stages need {stages - 1} cuts; the model has {len(legal)}: "
                         f"{why_no_cuts(model)}")
    if stages == 1:
        return []
    pos = np.linspace(0, len(legal) - 1, stages + 1)[1:-1]
    idx = sorted({round(p) for p in pos})
    while len(idx) < stages - 1:  # crowded: take the first free ones
        idx = sorted(set(idx) | {next(i for i in range(len(legal)) if i not in idx)})
    return [legal[i] for i in idx]
