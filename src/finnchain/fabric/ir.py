"""The compiled program's intermediate form: integer tensors held as codes (``Q``), the
reference's float operations still to be applied to them (``Pending``), the builder of the
program's ONNX graph (``Builder``) and the program itself (``Program``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper


class CompileError(ValueError):
    """The model uses something the exact executor cannot emulate; the message names the node."""


@dataclass
class Q:
    """A tensor held as integer codes: value = (codes - zp) * scale."""

    name: str  # tensor of the compiled program (float32, integer-valued)
    scale: np.ndarray  # broadcastable to the value (scalar, (1, C, 1, 1) or (1, C))
    zp: float
    lo: np.ndarray  # per-channel code bounds, shape (C,) or (1,)
    hi: np.ndarray
    shape: tuple[int, ...]  # shape in the source model
    # FINN's separate multiplications (float32, graph order) whose product is ``scale``, where
    # its streamlining keeps them apart until it collapses them (:func:`collapse_pairwise`):
    # an image's /255 and std ahead of the first convolution; empty: ``scale`` is one factor
    factors: tuple[np.ndarray, ...] = ()


@dataclass
class Pending:
    """Float operations of the reference still to be applied to an integer tensor."""

    base: Q
    src: str  # source-model tensor that holds base's value
    nodes: list[onnx.NodeProto]
    window: tuple[int, int] | None = None  # set when the chain starts with an AveragePool


@dataclass
class Program:
    """The compiled graph and what it takes and gives."""

    model: onnx.ModelProto
    input_shape: tuple[int, ...]  # without the batch dimension
    input_range: tuple[int, int]  # codes accepted at the input
    output_name: str
    stats: dict[str, int] = field(default_factory=dict)
    # quantizer node -> FINN's thresholds the program took for it, (C, L) on sign * accumulator
    # (as FINN's streamlined MultiThreshold holds them where every sign is +1), and the signs
    finn_thresholds: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # fully connected node -> the program's constant holding its weight codes, as (inputs,
    # outputs) ("in_out") or transposed ("out_in"), and (inputs, outputs): what a weight DMA
    # may replace
    weights: dict[str, tuple] = field(default_factory=dict)


def integer_codes(values: np.ndarray, axis: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split power-of-two scaled integers into (integer codes, power-of-two scale per ``axis``).

    Raises CompileError when the values are not integers times a power of two (per ``axis``)."""
    v = np.asarray(values, dtype=np.float64)
    flat = v.reshape(v.shape[0], -1) if axis == 0 else v.reshape(1, -1)
    mant, exp = np.frexp(flat)
    ints = np.round(mant * 2.0**53).astype(np.int64)
    tz = np.zeros_like(ints)
    nz = ints != 0
    low = ints & -ints
    tz[nz] = np.log2(low[nz].astype(np.float64)).astype(np.int64)
    lsb = np.where(nz, exp - 53 + tz, 10**6)
    step_exp = lsb.min(axis=1)
    step_exp = np.where(step_exp == 10**6, 0, step_exp)
    scale = np.ldexp(1.0, step_exp)
    codes = flat / scale[:, None]
    if np.any(np.abs(codes) >= 2**20) or not np.all(codes == np.round(codes)):
        raise CompileError(f"{what}: values are not power-of-two scaled integers")
    shape = (-1,) + (1,) * (v.ndim - 1) if axis == 0 else ()
    return codes.reshape(v.shape), scale.reshape(shape) if axis == 0 else scale.reshape(())


class Builder:
    """Collects the nodes and initializers of the compiled program."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def fresh(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, value: np.ndarray, hint: str = "c", dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def chan_shape(rank: int, c: int) -> tuple[int, ...]:
    return (1, c) + (1,) * (rank - 2)
