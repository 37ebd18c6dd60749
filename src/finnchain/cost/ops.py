"""FINN v0.10.1's cost model, one class per hardware layer, in our own words.

Every class mirrors one FINN HW op and answers two questions for a folding (``Fold``): how many
clock cycles one frame takes (FINN's ``get_exp_cycles``) and what it costs in LUT, RAMB18, URAM
and DSP (FINN's ``lut_estimation``, ``bram_estimation``, ``uram_estimation``,
``dsp_estimation``). Notation: P = PE, Q = SIMD, W = weight bits, A = input bits, B = output
bits. One RAMB18 holds 18 Kbit; the "ladder" below is how FINN packs a memory of depth d and
width w into RAMB18s in simple-dual-port mode.

Where FINN is known to be inaccurate the model says so and does one of two things, named at the
place: it keeps FINN's figure (so that our prediction and FINN's report agree) or it corrects it
(so that the plan fits the real device). The places:

- Max-pool cycles: FINN's StreamingMaxPool formula ``IFM_H*IFM_W*(1+1/K^2)`` ignores channels
  and PE and is marked inaccurate in FINN. The model reports FINN's figure (so that the plan's
  cycles are FINN's, layer for layer), but folds the pool as if it took one cycle per input
  word, ``IFM_H*IFM_W*C/P`` (``bound_cycles``): a PE that only FINN's figure would allow is
  never chosen.
- RTL MVAU LUTs: FINN reports 0 LUT for an RTL MVAU (FINN issue #1309). On 7-series parts FINN
  picks the RTL MVAU only for an MVAU without activation with DSP multipliers; the planner never
  emits that combination (such an MVAU gets LUT multipliers), so every MVAU is HLS and costed by
  the FINN-R formula below.
- VVAU DSPs: FINN counts ``P*ceil((W+A)/48)`` whatever Q is; the model counts ``P*Q*...``.
- VVAU thresholds: FINN v0.10.1's VVAU has no ``ram_style_thresholds``; its thresholds are
  always counted as LUTs, ``(2^B-1)*acc*TMEM/64``, and so are they here (measured: the plan's
  VVAU LUTs were 0.59x FINN's when it put them in block RAM).
- Thresholding LUTs: FINN's HLS Thresholding counts one A-bit comparator per PE whatever the
  number of thresholds; the model counts ``2^B-1`` comparators per PE, as FINN's MVAU does.
- Threshold memory inside MVAU/VVAU: FINN counts nothing when it is in block RAM
  (``ram_style_thresholds=block``); the model counts ladder(TMEM, P*(2^B-1)*acc) RAMB18.
- Ops FINN gives no resource estimate (FMPadding, DownSampler, GlobalAccPool, LabelSelect,
  StreamingMaxPool):
  FINN counts 0; the model counts ``UNESTIMATED_LUT`` LUTs each (FINN's own base cost of a
  streaming op), so that many small ops cannot add up unseen.
- Accumulator width: FINN narrows it from the actual weights (``minimize_accumulator_width``);
  the model uses the data-type bound, which is never smaller, so its LUTs are an upper bound.
- Split layers: a layer whose weights fit neither block RAM nor LUTs of one board may be split
  by output channels into two MVAUs (weights in block RAM and in LUTs) between a
  DuplicateStreams and a StreamingConcat; those two glue ops are costed as unestimated ops.
  FINN v0.10.1's StreamingConcat moves whole vectors (all channels a cycle), so FINN puts a
  data-width converter between each MVAU and it; those are costed with FINN's DWC formula.
- UltraRAM: an MVAU's or VVAU's weights may live in URAM (``ram_style="ultra"``, which FINN
  v0.10.1 allows only with runtime-writable weights: the driver loads them at start), costed
  with FINN's ``uram_estimation``: ceil(P*Q*W/72)*ceil(WMEM/4096).
- External weights (``mem_mode="external"``, weight style ``external``): a dense MVAU's
  weights stream from DDR through an IODMA of their own (FINN's ``InsertIODMA``, burst mode
  ``wrap``: the whole weight buffer once per frame), so FINN counts 0 block RAM and 0 LUTs of
  weight memory. FINN v0.10.1 builds this correctly only where each weight is used once per
  frame: an MVAU of a fully connected layer (``vectors == 1``); never a convolution's MVAU or
  a VVAU (``InsertIODMA`` asserts 2-D weights, ``create_stitched_ip`` exposes the weight
  stream of MVAUs only). The weight DMA is costed as an op of its own (``IODMA`` role
  ``weights``): IODMA_LUT LUTs and its depth-8 FIFO, and its cycles, MW*MH*W/64 per frame
  through the board's one HP port, which every DMA of the stage shares (``plan.stage``).
- Stream widths: FINN v0.10.1 generates an HLS layer only if the widest ``ap_int`` its C++
  uses is at most 8191 bits (``HLSBackend.get_ap_int_max_w``: the input and output streams; an
  MVAU also its weight stream P*Q*W and one PE's Q*W, a Thresholding its threshold stream);
  beyond, its code generation stops (found by FINN's C++ simulation, 2026-12-07: a split
  classifier's StreamingConcat of 1000 19-bit values and a LabelSelect with PE 1000). Such a
  folding is not buildable (``Op.buildable``) and never chosen. RTL layers (window generator,
  padding, FIFOs, width converters where one width divides the other) and the IODMA have no
  such bound.
- FIFO depths: FINN sizes them by simulation during the build; the model assumes one input row
  in front of a window generator and 32 words elsewhere (see ``plan.folding.input_fifo``), and
  on a residual block's skip side what the skip brings while the main branch's window
  generators fill (``AddStreams.skip_pixels``), an estimate of what FINN's simulation finds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

UNESTIMATED_LUT = 300  # LUTs assumed for an op FINN gives no estimate
AP_INT_MAX_W = 8191  # FINN v0.10.1: the widest ap_int an HLS layer's C++ may use (module notes)
IODMA_BITS = 64  # width of the AXI port an IODMA streams through per cycle (a Zynq-7000's)
# estimate: an HLS IODMA (FINN gives none); the catalogue's shell counts ~800 LUT for each of
# the stage's two frame DMAs, a weight DMA is one more
IODMA_LUT = 800
EXTERNAL = "external"  # the weight style of an MVAU whose weights stream from DDR
FIFO_RTL_MAX_DEPTH = 256  # deeper FIFOs go to a Vivado FIFO in block RAM


@dataclass(frozen=True)
class Fold:
    """One folding choice for one op, in FINN's folding-config terms."""

    pe: int = 1
    simd: int = 1
    ram_style: str = "block"  # weights / buffers: "block", "distributed" or "ultra" (URAM)
    res_type: str = "lut"  # multipliers: "lut" or "dsp"
    parallel_window: bool = False  # SWG only
    thr_style: str = "distributed"  # MVAU/VVAU threshold memory: "distributed" or "block"


@dataclass
class Res:
    """Resources of an op or a stage. ``lutram`` is the part of ``lut`` used as memory."""

    lut: float = 0
    bram18: int = 0
    uram: int = 0
    dsp: int = 0
    lutram: float = 0

    def __add__(self, other: Res) -> Res:
        return Res(self.lut + other.lut, self.bram18 + other.bram18, self.uram + other.uram,
                   self.dsp + other.dsp, self.lutram + other.lutram)

    def to_dict(self) -> dict:
        return {"lut": round(self.lut), "bram18": self.bram18, "uram": self.uram,
                "dsp": self.dsp, "lutram": round(self.lutram)}


def bram_ladder(depth: float, width: int, rungs: tuple[int, int, int] = (9, 18, 36)) -> int:
    """RAMB18s for a memory of ``depth`` words of ``width`` bits (FINN's SDP ladder).

    width 1: ceil(d/16384); 2: ceil(d/8192); <=4: ceil(d/4096)*ceil(w/4);
    <=9: ceil(d/2048)*ceil(w/r0); <=18 or d>512: ceil(d/1024)*ceil(w/r1); else
    ceil(d/512)*ceil(w/r2). MVAU and FIFO use r = (9, 18, 36); VVAU uses (8, 16, 32).
    """
    r0, r1, r2 = rungs
    if width <= 0 or depth <= 0:
        return 0
    if width == 1:
        return math.ceil(depth / 16384)
    if width == 2:
        return math.ceil(depth / 8192)
    if width <= 4:
        return math.ceil(depth / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(depth / 2048) * math.ceil(width / r0)
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / r1)
    return math.ceil(depth / 512) * math.ceil(width / r2)


def ram_width_for_depth(depth: float) -> int:
    """Width of one RAMB18 configured ``depth`` deep (SWG buffers): 36 up to 512 ... 1."""
    for limit, width in ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2)):
        if depth <= limit:
            return width
    return 1


def acc_bits(dot: int, wbits: int, abits: int, asigned: bool) -> int:
    """Accumulator bits for a dot product of ``dot`` terms: FINN's data-type bound.

    alpha = log2(dot) + W + A - 1 - signed(A); bits = ceil(alpha + log2(1 + 2^-alpha) + 1),
    at most 32 (FINN's default accumulator).
    """
    alpha = math.log2(dot) + wbits + abits - 1 - int(asigned)
    return int(min(32, math.ceil(alpha + math.log2(1 + 2.0**-alpha) + 1)))


def _mult_luts(q: int, wbits: int, abits: int) -> int:
    """LUT multipliers of Q lanes: Q*(2*ceil((W+A)/6)-1)*(W+A)."""
    wa = wbits + abits
    return q * (2 * math.ceil(wa / 6) - 1) * wa


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


STYLES = ("block", "distributed")  # window buffers, stand-alone thresholds
WEIGHT_STYLES = ("block", "distributed", "ultra")  # an MVAU's or VVAU's weights


@dataclass(frozen=True)
class Op:
    """A FINN HW op. ``node`` is the QONNX node it comes from (for messages and folding).

    Besides its costs, each class holds what FINN calls it and how FINN is told to build it, so
    that adding an op kind touches one class: ``kind`` (FINN's op type before specialisation),
    ``impl`` (after it: ``hls`` or ``rtl``, ``finn_type``), ``inserted_by_finn`` (FIFOs,
    converters and DMAs FINN inserts itself: costed, never configured), ``KEY`` (the dimensions
    that tell one layer from another of its kind, as our fields and FINN's node attributes),
    ``finn_config`` (its folding-config entry), ``folds`` (the foldings the planner tries) and
    ``out_bits``.
    """

    name: str
    node: str

    kind = "Op"
    impl = "hls"  # FINN builds it from HLS C++: bounded by AP_INT_MAX_W (module notes)
    inserted_by_finn = False
    KEY: ClassVar[tuple[tuple[str, str], ...]] = (("channels", "NumChannels"),)
    FOLD_COUNT = "channels"  # what PE divides (``folds``)
    FOLD_STYLES: ClassVar[tuple[str, ...]] = ("block",)  # the ram_style values ``folds`` tries

    @property
    def finn_type(self) -> str:
        """FINN's node type after specialisation (``MVAU_hls``, ``FMPadding_rtl``)."""
        return f"{self.kind}_{self.impl}"

    def key(self) -> list[int]:
        """The dimensions ``KEY`` names, flat (FINN's node attributes read the same)."""
        dims: list[int] = []
        for ours, _ in self.KEY:
            v = getattr(self, ours)
            dims += [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v)]
        return dims

    @classmethod
    def key_attrs(cls) -> list[str]:
        """FINN's node attributes that hold ``key()``, in its order."""
        return [theirs for _, theirs in cls.KEY]

    def finn_config(self, f: Fold) -> dict:
        """This op's entry in FINN's folding config at ``f`` (none for an op FINN inserts and
        sizes itself)."""
        return {} if self.inserted_by_finn else {"PE": f.pe}

    def folds(self) -> list[Fold]:
        """The foldings the planner tries when this op is a layer's main op, in its order."""
        count = getattr(self, self.FOLD_COUNT)
        return [Fold(pe=pe, ram_style=s) for pe in divisors(count) for s in self.FOLD_STYLES]

    def out_bits(self) -> int:
        """Bits of one output value."""
        return getattr(self, "obits", 0) or self.abits

    on_stream = True  # on the stage's stream (False: beside it, as a weight DMA)

    def attached(self, f: Fold) -> list[Placed]:
        """Ops FINN adds beside this one at ``f`` (an MVAU's weight DMA), costed with it."""
        return []

    def cycles(self, f: Fold) -> int:
        raise NotImplementedError

    def bound_cycles(self, f: Fold) -> int:
        """Cycles a frame takes at most, by which a folding is chosen: FINN's figure unless
        FINN's is known to be low (``StreamingMaxPool``)."""
        return self.cycles(f)

    def resources(self, f: Fold) -> Res:
        return Res(lut=UNESTIMATED_LUT)

    def in_width(self, f: Fold) -> int:
        """Bits per cycle on the input stream."""
        raise NotImplementedError

    def out_width(self, f: Fold) -> int:
        raise NotImplementedError

    def ap_int_width(self, f: Fold) -> int:
        """The widest ap_int of FINN's HLS code for this op at ``f`` (its streams)."""
        return max(self.in_width(f), self.out_width(f))

    def takes_dsps(self) -> bool:
        """Whether FINN can build this op's multipliers in DSPs (``resType`` dsp): the planner
        then offers the swap where DSPs are left over."""
        return False

    def buildable(self, f: Fold) -> bool:
        """Whether FINN v0.10.1 generates this op at ``f``: an HLS op's widest ap_int is at
        most AP_INT_MAX_W."""
        return self.impl != "hls" or self.ap_int_width(f) <= AP_INT_MAX_W

    def describe(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


class _MacUnit:
    """What MVAU and VVAU share: FINN-R's LUT model, weight and threshold memories, DSPs.

    Subclasses give ``acc()``, ``wmem(f)``, ``tmem(f)``, the RAMB18 rungs of their weight
    memory and whether FINN rounds the threshold-memory LUTs up to whole 64-deep LUTs.
    """

    RUNGS: tuple[int, int, int] = (9, 18, 36)
    THR_CEIL = True
    THR_BLOCK = True  # FINN lets the thresholds go to block RAM (MVAU: ram_style_thresholds)
    MEM_MODE = "internal_decoupled"  # FINN's mem_mode: the weights stream from a memory beside it

    def memories(self) -> tuple[tuple[str, str], ...]:
        """The (weights, thresholds) memory styles the planner tries, in its order: thresholds
        in block RAM too where FINN allows it and there are thresholds."""
        thresholds = STYLES if self.THR_BLOCK and self.obits else ("distributed",)
        return tuple(itertools.product(WEIGHT_STYLES, thresholds))

    def finn_config(self, f: Fold) -> dict:
        entry = {"PE": f.pe, "SIMD": f.simd, "ram_style": f.ram_style, "resType": f.res_type,
                 "mem_mode": self.MEM_MODE}
        if f.ram_style == EXTERNAL:  # no weight memory: FINN's ram_style stays its default
            entry.update(ram_style="auto", mem_mode="external")
        if self.THR_BLOCK:
            entry["ram_style_thresholds"] = f.thr_style
        if f.ram_style == "ultra":
            entry["runtime_writeable_weights"] = 1  # FINN v0.10.1 requires it for URAM
        return entry

    def out_bits(self) -> int:
        """The activation's bits, or the accumulator's without one."""
        return self.obits or self.acc()

    def resources(self, f: Fold) -> Res:
        p, q, w, a = f.pe, f.simd, self.wbits, self.abits
        acc = self.acc()
        mult = 0 if f.res_type == "dsp" else _mult_luts(q, w, a)
        adder = (w + a) * (2 * q - 1)
        thr = comp = 0.0
        thr_bram = 0
        if self.obits:
            levels = 2**self.obits - 1
            comp = levels * acc
            tmem = self.tmem(f)
            if f.thr_style == "block" and self.THR_BLOCK:
                thr_bram = bram_ladder(tmem, p * levels * acc)
            else:
                thr = levels * acc * (math.ceil(tmem / 64) if self.THR_CEIL else tmem / 64)
        distributed = f.ram_style == "distributed"
        c2 = p * q * w * math.ceil(self.wmem(f) / 64) if distributed else 0
        lut = 300 + 1.1 * p * (mult + adder + acc + thr + comp) + c2
        uram = 0
        if f.ram_style == EXTERNAL:  # in DDR: the weight DMA is costed beside (``attached``)
            weights = 0
        elif f.ram_style == "ultra":
            weights, uram = 0, math.ceil(p * q * w / 72) * math.ceil(self.wmem(f) / 4096)
        else:
            weights = 0 if distributed else bram_ladder(self.wmem(f), p * q * w, self.RUNGS)
        dsp = p * q * math.ceil((w + a) / 48) if f.res_type == "dsp" else 0
        return Res(lut=lut, bram18=thr_bram + weights, uram=uram, dsp=dsp,
                   lutram=c2 + 1.1 * p * thr)


@dataclass(frozen=True)
class MVAU(_MacUnit, Op):
    """Matrix-vector unit: fully connected layers and convolutions after the window generator.

    cycles = (MH/P) * (MW/Q) * vectors (vectors = OH*OW for a convolution, 1 for a dense layer).
    WMEM = MW*MH/(P*Q) words of P*Q*W bits; TMEM = MH/P (0 without activation).
    BRAM18 (weights in block RAM, internal_decoupled): ladder(WMEM, P*Q*W), 0 when distributed.
    LUT = 300 + 1.1*P*(mult + adder + acc + thr + comp) + c2 with
    mult = Q*(2*ceil((W+A)/6)-1)*(W+A) (0 with DSPs), adder = (W+A)*(2Q-1), acc = accumulator
    bits, thr = (2^B-1)*acc*ceil(TMEM/64) and comp = (2^B-1)*acc with an activation,
    c2 = P*Q*W*ceil(WMEM/64) for distributed weights.  DSP = P*Q*ceil((W+A)/48) with DSPs.
    """

    mw: int = 1
    mh: int = 1
    vectors: int = 1
    wbits: int = 4
    abits: int = 4
    asigned: bool = False
    obits: int = 0  # 0: no activation, the output is the accumulator
    split_part: str = ""  # "bram" or "lut": one part of a layer split by output channels

    kind = "MVAU"
    KEY = (("mw", "MW"), ("mh", "MH"))

    def takes_dsps(self) -> bool:
        """Only with an activation: an MVAU without one FINN makes an RTL MVAU, on LUTs here."""
        return bool(self.obits)

    def memories(self) -> tuple[tuple[str, str], ...]:
        """As every MAC unit's, and weights in DDR for a dense layer (module notes)."""
        styles = super().memories()
        if self.external_ok:
            styles += tuple((EXTERNAL, thr) for thr in dict.fromkeys(t for _, t in styles))
        return styles

    @property
    def external_ok(self) -> bool:
        """Whether FINN v0.10.1 streams this layer's weights from DDR correctly: each weight
        used once a frame (a fully connected layer, not a convolution)."""
        return self.vectors == 1

    def folds(self) -> list[Fold]:
        """PE over output channels, SIMD over the inputs, then each memory style."""
        return [Fold(pe, simd, style, thr_style=thr) for pe in divisors(self.mh)
                for simd in divisors(self.mw) for style, thr in self.memories()]

    def weight_bytes(self) -> int:
        """Bytes of weights a frame reads from DDR with external weights (FINN's packing:
        P*Q weights a word, padded to whole nibbles, the words in bytes)."""
        return self.mw * self.mh * self.wbits // 8

    def attached(self, f: Fold) -> list[Placed]:
        if f.ram_style != EXTERNAL:
            return []
        width = -(-f.pe * f.simd * self.wbits // 8) * 8  # FINN pads the weight stream to bytes
        return [Placed(IODMA(name=f"IODMA_weights_{self.name}", node=self.node,
                             bytes_per_frame=self.weight_bytes(), role="weights",
                             stream_bits=width))]

    def legal(self, f: Fold) -> bool:
        return self.mh % f.pe == 0 and self.mw % f.simd == 0

    def cycles(self, f: Fold) -> int:
        return int(self.mh // f.pe * (self.mw // f.simd) * self.vectors)

    def wmem(self, f: Fold) -> int:
        return self.mw * self.mh // (f.pe * f.simd)

    def tmem(self, f: Fold) -> int:
        return self.mh // f.pe if self.obits else 0

    def acc(self) -> int:
        return acc_bits(self.mw, self.wbits, self.abits, self.asigned)

    def in_width(self, f: Fold) -> int:
        return f.simd * self.abits

    def out_width(self, f: Fold) -> int:
        return f.pe * (self.obits or self.acc())

    def buildable(self, f: Fold) -> bool:
        """As every HLS op; with external weights also FINN v0.10.1's packing of them: its
        driver writes each P*Q*W-bit word as whole bytes (``to_external_tensor`` fails on an
        odd number of hex digits), which also gives its weight DMA a whole-byte interface."""
        if f.ram_style == EXTERNAL and f.pe * f.simd * self.wbits % 8:
            return False
        return super().buildable(f)

    def ap_int_width(self, f: Fold) -> int:
        """FINN's MVAU_hls: the streams, the weight stream P*Q*W and one PE's Q*W."""
        return max(super().ap_int_width(f), f.pe * f.simd * self.wbits, f.simd * self.wbits)


@dataclass(frozen=True)
class VVAU(_MacUnit, Op):
    """Vector-vector unit: depthwise convolutions.

    cycles = (C*Kh*Kw/P/Q) * OH*OW. WMEM = Kh*Kw*C/(P*Q), TMEM = C/P.
    BRAM18: ladder(WMEM, P*Q*W) with the VVAU rungs (8, 16, 32).
    LUT: as the MVAU, with acc from a dot product of Kh*Kw terms and thr = (2^B-1)*acc*TMEM/64
    (FINN applies no ceiling here, and the thresholds are always LUTs). DSP: P*Q*ceil((W+A)/48)
    (FINN: P*..., see module notes).
    """

    channels: int = 1
    kernel: tuple[int, int] = (3, 3)
    out_dims: tuple[int, int] = (1, 1)
    wbits: int = 4
    abits: int = 4
    asigned: bool = False
    obits: int = 4

    kind = "VVAU"
    KEY = (("channels", "Channels"), ("kernel", "Kernel"))
    RUNGS = (8, 16, 32)
    THR_CEIL = False
    THR_BLOCK = False  # FINN v0.10.1's VVAU has no ram_style_thresholds

    def takes_dsps(self) -> bool:
        return True
    def folds(self) -> list[Fold]:
        """PE over channels, SIMD one or the whole window (a window generator gives a VVAU a
        pixel or a whole window a cycle), then each memory style."""
        return [Fold(pe, simd, style, thr_style=thr) for pe in divisors(self.channels)
                for simd in (1, self.k2) for style, thr in self.memories()]

    @property
    def k2(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def legal(self, f: Fold) -> bool:
        return self.channels % f.pe == 0 and self.k2 % f.simd == 0

    def cycles(self, f: Fold) -> int:
        oh, ow = self.out_dims
        return int(self.channels * self.k2 // (f.pe * f.simd) * oh * ow)

    def wmem(self, f: Fold) -> int:
        return self.k2 * self.channels // (f.pe * f.simd)

    def tmem(self, f: Fold) -> int:
        return self.channels // f.pe if self.obits else 0

    def acc(self) -> int:
        return acc_bits(self.k2, self.wbits, self.abits, self.asigned)

    def in_width(self, f: Fold) -> int:
        return f.pe * f.simd * self.abits

    def out_width(self, f: Fold) -> int:
        return f.pe * self.obits


class _PerSimd:
    """Ops folded by SIMD over channels: SIMD divides the channels, SIMD values in a cycle (and
    out, unless the op says otherwise)."""

    def legal(self, f: Fold) -> bool:
        return self.channels % f.simd == 0

    def front_folds(self, simd: int, parallel: bool) -> list[Fold]:
        """Its foldings in front of a layer's main op that takes ``simd`` values a cycle."""
        return [Fold(simd=simd)]

    def finn_config(self, f: Fold) -> dict:
        return {"SIMD": f.simd}

    def in_width(self, f: Fold) -> int:
        return f.simd * self.abits

    def out_width(self, f: Fold) -> int:
        return self.in_width(f)


@dataclass(frozen=True)
class SWG(_PerSimd, Op):
    """ConvolutionInputGenerator, FINN's RTL implementation (the default in v0.10.1).

    Default style, cf = C/Q: buffer = ((Kh-1)*IW + (Kw-1) + 1)*cf
    (+ max(0, (Sw-1-Kh*Kw)*cf) + max(0, ((Sh-1)*IW-Kh*Kw)*cf));
    cycles = buffer_min + OH*max(OW*Kw*Kh*cf, Sw*IW*cf), a depthwise generator adding
    OW*(Sw-1)*(cf-1) inside the max and (Sh-1)*IW*cf outside.
    Parallel window (all Kh*Kw pixels of a window per cycle): cycles = IH*IW*C/Q + 2,
    Kh-1 line buffers of depth IW-Kw, total depth ((Kh-1)*IW + Kw-1)*cf + 2.
    BRAM18 (block): ceil(width/rw)*ceil(depth/16384) per buffer, rw from the depth
    (36 up to 512 deep ... 1 beyond 8192), width = Q*A. LUT = 300 (+ width*ceil(depth/38)
    when distributed).
    """

    channels: int = 1
    in_dims: tuple[int, int] = (1, 1)
    out_dims: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    abits: int = 4
    depthwise: bool = False

    kind = "ConvolutionInputGenerator"
    impl = "rtl"  # FINN v0.10.1's RTL window generator
    KEY = (("channels", "IFMChannels"), ("kernel", "ConvKernelDim"), ("stride", "Stride"))

    def front_folds(self, simd: int, parallel: bool) -> list[Fold]:
        """Each buffer style; ``parallel``: all of a window's pixels a cycle."""
        return [Fold(simd=simd, ram_style=s, parallel_window=parallel) for s in STYLES]

    def finn_config(self, f: Fold) -> dict:
        return {"SIMD": f.simd, "ram_style": f.ram_style, "parallel_window": int(f.parallel_window)}

    def buffer_depth(self, f: Fold) -> int:
        (kh, kw), (_, iw), (sh, sw) = self.kernel, self.in_dims, self.stride
        cf = self.channels // f.simd
        if f.parallel_window:
            return ((kh - 1) * iw + (kw - 1)) * cf + 2
        depth = ((kh - 1) * iw + (kw - 1) + 1) * cf
        depth += max(0, (sw - 1 - kh * kw) * cf) + max(0, ((sh - 1) * iw - kh * kw) * cf)
        return depth

    def cycles(self, f: Fold) -> int:
        (kh, kw), (ih, iw), (oh, ow), (sh, sw) = self.kernel, self.in_dims, self.out_dims, self.stride
        cf = self.channels // f.simd
        if f.parallel_window:
            return ih * iw * cf + 2
        buffer_min = ((kh - 1) * iw + (kw - 1) + 1) * cf
        inner = max(ow * kw * kh * cf, sw * iw * cf)
        if self.depthwise:
            inner += ow * (sw - 1) * (cf - 1)
        cycles = buffer_min + oh * inner
        if self.depthwise:
            cycles += (sh - 1) * iw * cf
        return int(cycles)

    def resources(self, f: Fold) -> Res:
        width = f.simd * self.abits
        depth = self.buffer_depth(f)
        if f.ram_style == "distributed":
            ram = width * math.ceil(depth / 38)
            return Res(lut=300 + ram, lutram=ram)
        (kh, kw), (ih, iw) = self.kernel, self.in_dims
        count = 1
        if f.parallel_window:
            if ih == 1 or iw == 1:
                return Res(lut=300)
            depth, count = iw - kw, kh - 1
        cascade = math.ceil(width / ram_width_for_depth(depth))
        bram = math.ceil(depth / 16384) * cascade
        if depth > 16384:
            bram -= cascade - math.ceil(width / ram_width_for_depth(depth % 16384))
        return Res(lut=300, bram18=bram * count)

    def out_width(self, f: Fold) -> int:
        k2 = self.kernel[0] * self.kernel[1]
        return f.simd * self.abits * (k2 if f.parallel_window else 1)


class _PerChannel:
    """Ops folded by PE over channels: PE divides the channels, PE values in and out a cycle."""

    def legal(self, f: Fold) -> bool:
        return self.channels % f.pe == 0

    def in_width(self, f: Fold) -> int:
        return f.pe * self.abits

    def out_width(self, f: Fold) -> int:
        return f.pe * getattr(self, "obits", self.abits)


@dataclass(frozen=True)
class FMPadding(_PerSimd, Op):
    """Zero padding in front of a window generator: cycles = (C/Q) * OHpad * OWpad."""

    channels: int = 1
    out_dims: tuple[int, int] = (1, 1)  # padded
    abits: int = 4

    kind = "FMPadding"
    impl = "rtl"  # FINN's RTL padding

    def cycles(self, f: Fold) -> int:
        return int(self.channels // f.simd * self.out_dims[0] * self.out_dims[1])


@dataclass(frozen=True)
class DownSampler(_PerSimd, Op):
    """A 1x1 convolution's strided pick of pixels (FINN builds one in place of a window
    generator when the kernel is 1x1 and the stride is not): cycles = (C/Q) * IH * IW, every
    input pixel read once. FINN gives it no resource estimate (``UNESTIMATED_LUT`` here)."""

    channels: int = 1
    in_dims: tuple[int, int] = (1, 1)
    stride: int = 2
    abits: int = 4

    kind = "DownSampler"

    def cycles(self, f: Fold) -> int:
        return int(self.channels // f.simd * self.in_dims[0] * self.in_dims[1])


@dataclass(frozen=True)
class Thresholding(_PerChannel, Op):
    """A stand-alone multi-threshold activation (HLS): cycles = H*W*C/P, TMEM = C/P.

    LUT = (2^B-1)*A*P comparators (FINN: A*P, see module notes) + P*A*ceil(TMEM/64) memory
    when distributed and TMEM > 1; BRAM18 = ceil(A*P/16)*ceil(TMEM/1024) when block and TMEM > 1.
    """

    channels: int = 1
    dims: tuple[int, int] = (1, 1)
    abits: int = 8
    obits: int = 4

    kind = "Thresholding"
    FOLD_STYLES = STYLES

    def finn_config(self, f: Fold) -> dict:
        return {"PE": f.pe, "ram_style": f.ram_style}

    def cycles(self, f: Fold) -> int:
        return int(self.dims[0] * self.dims[1] * self.channels // f.pe)

    def ap_int_width(self, f: Fold) -> int:
        """FINN's Thresholding_hls (internal_decoupled): also its threshold stream, P
        thresholds sets of 2^B-1 values (of about the input's bits) a word."""
        return max(super().ap_int_width(f), f.pe * self.abits * (2**self.obits - 1))

    def resources(self, f: Fold) -> Res:
        p, a = f.pe, self.abits
        tmem = self.channels // p
        comp = (2**self.obits - 1) * a * p
        if f.ram_style == "distributed":
            mem = p * a * math.ceil(tmem / 64) if tmem > 1 else 0
            return Res(lut=comp + mem, lutram=mem)
        bram = math.ceil(a * p / 16) * math.ceil(tmem / 1024) if tmem > 1 else 0
        return Res(lut=comp, bram18=bram)


@dataclass(frozen=True)
class GlobalAccPool(_PerChannel, Op):
    """Global sum pooling (average pooling's accumulation): cycles = H*W*C/P + C/P."""

    channels: int = 1
    dims: tuple[int, int] = (1, 1)
    abits: int = 4
    obits: int = 16

    kind = "GlobalAccPool"

    def cycles(self, f: Fold) -> int:
        folds = self.channels // f.pe
        return int(self.dims[0] * self.dims[1] * folds + folds)


@dataclass(frozen=True)
class _Residual(_PerChannel, Op):
    """A residual fork or join: cycles = H*W*C/P (FINN gives no resource estimate)."""

    channels: int = 1
    dims: tuple[int, int] = (1, 1)
    abits: int = 4

    def cycles(self, f: Fold) -> int:
        return int(self.dims[0] * self.dims[1] * self.channels // f.pe)


@dataclass(frozen=True)
class AddStreams(_Residual):
    """The join, two streams added value by value (FINN's AddStreams). The skip side waits in a
    FIFO for the main branch: ``skip_pixels`` of the join's map, the pixels that arrive on the
    skip while the main branch's window generators take in what their first window needs
    (``skip_fifo``; FINN sizes it by simulation, module notes)."""

    obits: int = 5
    skip_pixels: int = 0

    def skip_fifo(self, f: Fold) -> FIFO:
        """The skip side's FIFO at this fold (the join's input stream, ``pe`` values a word)."""
        words = -(-self.skip_pixels * self.channels // f.pe)
        return FIFO(name=f"StreamingFIFO_skip_{self.name}", node=self.node,
                    depth=fifo_depth(words), width=self.in_width(f))

    kind = "AddStreams"


@dataclass(frozen=True)
class Fork(_Residual):
    """The fork, one stream sent to two consumers (FINN's DuplicateStreams)."""

    kind = "DuplicateStreams"


@dataclass(frozen=True)
class StreamingMaxPool(_PerChannel, Op):
    """Max pooling: FINN's cycles IH*IW*(1+1/K^2); folded for IH*IW*C/P (module notes)."""

    channels: int = 1
    in_dims: tuple[int, int] = (1, 1)
    kernel: int = 2
    abits: int = 4

    kind = "StreamingMaxPool"

    def cycles(self, f: Fold) -> int:
        ih, iw = self.in_dims
        return int(ih * iw * (1 + 1 / (self.kernel * self.kernel)))

    def bound_cycles(self, f: Fold) -> int:
        ih, iw = self.in_dims
        return max(self.cycles(f), ih * iw * self.channels // f.pe)


@dataclass(frozen=True)
class LabelSelect(Op):
    """Top-k over the class scores: cycles = Labels/P."""

    labels: int = 1
    k: int = 1
    abits: int = 16

    kind = "LabelSelect"
    KEY = (("labels", "Labels"),)
    FOLD_COUNT = "labels"

    @property
    def obits(self) -> int:
        """FINN's output datatype: the smallest UINT holding labels - 1, in whole bytes."""
        return 8 * math.ceil(max(1, (self.labels - 1).bit_length()) / 8)

    @property
    def out_datatype(self) -> str:
        return f"UINT{self.obits}"

    def legal(self, f: Fold) -> bool:
        return self.labels % f.pe == 0

    def cycles(self, f: Fold) -> int:
        return int(self.labels // f.pe)

    def in_width(self, f: Fold) -> int:
        return f.pe * self.abits

    def out_width(self, f: Fold) -> int:
        return self.obits


@dataclass(frozen=True)
class ChannelwiseOp(_PerChannel, Op):
    """A per-channel addition in hardware (FINN's ChannelwiseOp, HLS): the integer bias of a
    classifier before its LabelSelect. cycles = H*W*C/P (FINN: the folded output's words).
    LUT = A*P + P*A*ceil(TMEM/64) (parameters in LUTs, FINN's default), TMEM = C/P; A is
    FINN's input datatype at conversion, INT32 after an MVAU without activation."""

    channels: int = 1
    dims: tuple[int, int] = (1, 1)
    abits: int = 32
    obits: int = 32

    kind = "ChannelwiseOp"

    def finn_config(self, f: Fold) -> dict:
        return {"PE": f.pe, "ram_style": "distributed"}  # its parameters in LUTs

    def cycles(self, f: Fold) -> int:
        return int(self.dims[0] * self.dims[1] * self.channels // f.pe)

    def resources(self, f: Fold) -> Res:
        p, a = f.pe, self.abits
        tmem = self.channels // p
        mem = p * a * math.ceil(tmem / 64) if tmem > 1 else 0
        return Res(lut=a * p + mem, lutram=mem)


@dataclass(frozen=True)
class StreamGlue(Op):
    """DuplicateStreams or StreamingConcat around a split layer.

    cycles = words per frame / width in values (DuplicateStreams: its PE; StreamingConcat, which
    moves a whole vector a cycle in FINN v0.10.1: all channels, so one cycle per pixel). FINN
    gives no resource estimate (see module notes).
    """

    words: int = 1  # values per frame through the op
    width: int = 1  # values per cycle
    abits: int = 4
    glue: str = "DuplicateStreams"

    KEY = ()  # a split layer's stage keeps FINN's names (``finn.folder.folder_meta``)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.glue

    def finn_config(self, f: Fold) -> dict:
        """DuplicateStreams by PE; FINN v0.10.1's StreamingConcat has no folding."""
        return {"PE": f.pe} if self.glue == "DuplicateStreams" else {}

    def cycles(self, f: Fold) -> int:
        return -(-self.words // self.width)

    def in_width(self, f: Fold) -> int:
        return self.width * self.abits

    out_width = in_width


@dataclass(frozen=True)
class FIFO(Op):
    """A stream FIFO of ``depth`` words of ``width`` bits.

    Up to 256 deep: FINN's RTL FIFO in LUTs, 2*ceil(log2 d) + ceil(d/32)*ceil(W/2).
    Deeper: a Vivado FIFO in block RAM, depth rounded up to a power of two,
    ladder(d, W) RAMB18 and 2*ceil(log2 d) LUTs.
    """

    depth: int = 2
    width: int = 8

    kind = "StreamingFIFO"
    impl = "rtl"  # FINN's RTL FIFO, or a Vivado FIFO
    inserted_by_finn = True
    KEY = ()  # never named by the plan

    def cycles(self, f: Fold) -> int:
        return 0

    def resources(self, f: Fold) -> Res:
        d = max(2, self.depth)
        address = 2 * math.ceil(math.log2(d))
        if d <= FIFO_RTL_MAX_DEPTH:
            ram = math.ceil(d / 32) * math.ceil(self.width / 2)
            return Res(lut=address + ram, lutram=ram)
        d = 2 ** math.ceil(math.log2(d))
        return Res(lut=address, bram18=bram_ladder(d, self.width))

    def in_width(self, f: Fold) -> int:
        return self.width

    out_width = in_width


def fifo_depth(words: int) -> int:
    """A FIFO depth of at least ``words``: at least 32 and a power of two."""
    return 2 ** math.ceil(math.log2(max(32, words)))


@dataclass(frozen=True)
class DWC(Op):
    """Data width converter between a producer's and a consumer's stream widths.

    Through the least common multiple L of the two widths: for each conversion step that is
    needed, ceil(|log2 ratio|) counter LUTs plus L (in to L) or the output width (L to out).
    """

    inw: int = 8
    outw: int = 8

    kind = "StreamingDataWidthConverter"
    inserted_by_finn = True
    KEY = ()  # never named by the plan

    @property
    def impl(self) -> str:  # type: ignore[override]
        """FINN specialises a converter to RTL where one width divides the other, else HLS."""
        return "hls" if self.inw % self.outw and self.outw % self.inw else "rtl"

    def cycles(self, f: Fold) -> int:
        return 0

    def resources(self, f: Fold) -> Res:
        lcm = self.inw * self.outw // math.gcd(self.inw, self.outw)
        cnt = cset = 0
        if self.inw != lcm:
            cnt += abs(math.ceil(math.log2(self.inw / lcm)))
            cset += lcm
        if lcm != self.outw:
            cnt += abs(math.ceil(math.log2(lcm / self.outw)))
            cset += self.outw
        return Res(lut=cnt + cset)

    def in_width(self, f: Fold) -> int:
        return self.inw

    def out_width(self, f: Fold) -> int:
        return self.outw


@dataclass(frozen=True)
class IODMA(Op):
    """The DMA that moves a stage's frame between DDR and the dataflow: bytes*8/port_bits
    cycles, port_bits the board's HP port (FINN's ``pynq_native_port_width``: 64 on a
    Zynq-7000, 128 on a Zynq UltraScale+). A layer's weight DMA is costed with the candidates,
    which know no board, at IODMA_BITS; the stage puts the board's width on it
    (``plan.stage.assemble``), so the candidates' filter is the narrower port's, never wider.

    Its resources are part of the board's shell figure in the catalogue.
    """

    bytes_per_frame: int = 0
    role: str = "frame"  # "frame" (the stage's input or output) or "weights" (an MVAU's)
    stream_bits: int = 0  # a weight DMA's stream into its MVAU (P*Q*W padded to bytes)
    port_bits: int = IODMA_BITS  # the AXI port it streams through, bits a cycle

    kind = "IODMA"
    inserted_by_finn = True
    KEY = ()  # never named by the plan

    @property
    def on_stream(self) -> bool:  # type: ignore[override]
        return self.role != "weights"

    def buildable(self, f: Fold) -> bool:
        """Always: FINN's IODMA_hls sets its ap_int width without the bound."""
        return True

    def cycles(self, f: Fold) -> int:
        return math.ceil(self.bytes_per_frame * 8 / self.port_bits)

    def resources(self, f: Fold) -> Res:
        """The frame DMAs are in the board's shell figure; a weight DMA is IODMA_LUT and the
        depth-8 FIFO FINN puts between it and its MVAU."""
        if self.role != "weights":
            return Res()
        return Res(lut=IODMA_LUT) + FIFO(name="", node="", depth=8,
                                         width=self.stream_bits).resources(f)

    def in_width(self, f: Fold) -> int:
        return self.port_bits

    out_width = in_width


def _kinds() -> dict[str, type[Op]]:
    out: dict[str, type[Op]] = {}
    stack = list(Op.__subclasses__())
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        if isinstance(cls.__dict__.get("kind"), str):
            out[cls.kind] = cls
    return out


KINDS = _kinds()  # op kind -> class (StreamGlue's kinds are its ``glue``)


def op_of(kind: str, name: str, node: str, shape: dict) -> Op:
    """The op a plan describes (plan.json's ``kind`` and ``shape``), to ask it its facts."""
    cls = StreamGlue if "glue" in shape else KINDS.get(kind)
    if cls is None:
        raise ValueError(f"op {name}: kind {kind!r} is none the cost model knows "
                         f"({', '.join(sorted(KINDS))})")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in shape.items()}
    return cls(name=name, node=node, **fields)


@dataclass
class Placed:
    """An op with its folding, cycles and resources (what a stage is made of)."""

    op: Op
    fold: Fold = field(default_factory=Fold)

    @property
    def cycles(self) -> int:
        return self.op.cycles(self.fold)

    @property
    def res(self) -> Res:
        return self.op.resources(self.fold)
