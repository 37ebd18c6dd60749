"""Folding: for a target number of cycles per frame, the cheap ways to build each segment.

FINN's constraints: an MVAU's PE divides MH and its SIMD divides MW; a VVAU's PE divides the
channels and its SIMD divides Kh*Kw; the window generator in front of an MVAU streams SIMD
channels of one pixel per cycle (its SIMD divides the input channels) unless it outputs whole
windows (``parallel_window``, SIMD = input channels, the MVAU's SIMD = Kh*Kw*C); a depthwise
generator takes the VVAU's PE as its SIMD (and outputs whole windows when the VVAU's SIMD is
Kh*Kw); padding runs at its generator's SIMD.

Every legal (PE, SIMD) is a candidate, with weights in block RAM or in LUTs and window buffers
in block RAM or LUTs; the candidates of a layer are costed once (``Candidates``), and at a
target only those that meet it and are not beaten in LUT, RAMB18 and LUT RAM by another are
kept. A slower target therefore never loses an option, which the partition search relies on. Unlike FINN's SetFolding there is no 36-bit cap on an MVAU's weight width
(W*SIMD): wide shallow memories are allowed where the BRAM count says they are cheaper, and
SIMD is not raised before PE (PE and SIMD are searched together).
DSP multipliers are not an option here: a stage swaps LUT multipliers for DSPs afterwards,
where it has DSPs to spare (``DspSwap``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from finnchain.cost.lower import Layer, Segment
from finnchain.cost.ops import (
    FIFO,
    MVAU,
    SWG,
    VVAU,
    FMPadding,
    Fold,
    Placed,
    Res,
    StreamGlue,
    divisors,
    fifo_depth,
)

STYLES = ("block", "distributed")
# (weights, thresholds) memory styles of an MVAU or VVAU
MEMORY = tuple(itertools.product(STYLES, STYLES))
MAX_OPTIONS = 24  # options kept per segment (the cheapest in LUT for each RAMB18 count)


@dataclass(frozen=True)
class DspSwap:
    """Turning one op's LUT multipliers into DSPs: DSPs it takes, LUTs it frees."""

    op_index: int  # index into the option's placed ops
    dsp: int
    lut_saved: float


@dataclass
class Option:
    """One way to build a segment (or a layer): ops with folds and their total cost."""

    placed: tuple[Placed, ...]
    res: Res
    cycles: int  # slowest op
    swaps: tuple[DspSwap, ...] = ()

    def __add__(self, other: Option) -> Option:
        n = len(self.placed)
        moved = tuple(DspSwap(s.op_index + n, s.dsp, s.lut_saved) for s in other.swaps)
        return Option(self.placed + other.placed, self.res + other.res,
                      max(self.cycles, other.cycles), self.swaps + moved)


def _option(placed: list[Placed]) -> Option:
    res = Res()
    swaps = []
    for i, p in enumerate(placed):
        res = res + p.res
        op = p.op
        # an MVAU without activation stays on LUTs (FINN would make it an RTL MVAU)
        if isinstance(op, VVAU) or (isinstance(op, MVAU) and op.obits):
            dsp = op.resources(Fold(p.fold.pe, p.fold.simd, p.fold.ram_style, "dsp"))
            swaps.append(DspSwap(i, dsp.dsp, p.res.lut - dsp.lut))
    return Option(tuple(placed), res, max(p.cycles for p in placed), tuple(swaps))


def _front(options: list[Option], key) -> list[Option]:
    """The options not beaten in both RAMB18 and ``key`` (one pass after sorting)."""
    best: list[Option] = []
    for o in sorted(options, key=lambda o: (o.res.bram18, key(o))):
        if not best or key(o) < key(best[-1]):
            best.append(o)
    return best


def pareto(options: list[Option], keep: int = MAX_OPTIONS) -> list[Option]:
    """The cheapest options: those not beaten in RAMB18 and LUT, and those not beaten in
    RAMB18 and LUT RAM; at most ``keep`` of them (an even spread over RAMB18, both ends)."""
    by_lut = _front(options, lambda o: o.res.lut)
    if len(by_lut) > keep:
        step = (len(by_lut) - 1) / (keep - 1)
        by_lut = [by_lut[round(i * step)] for i in range(keep)]
    by_ram = _front(options, lambda o: (o.res.lutram, o.res.lut))[:keep]
    seen = {id(o) for o in by_lut}
    return by_lut + [o for o in by_ram if id(o) not in seen]


def _fronts(layer: Layer, simd: int, parallel: bool) -> list[list[Placed]]:
    """Padding and window generator in front of the main op, one list per buffer style."""
    front = []
    for op in layer.ops[:-1]:
        if isinstance(op, FMPadding):
            front.append([Placed(op, Fold(simd=simd))])
        elif isinstance(op, SWG):
            front.append([Placed(op, Fold(simd=simd, ram_style=s, parallel_window=parallel))
                          for s in STYLES])
    return [list(c) for c in itertools.product(*front)]


def _mvau_folds(layer: Layer) -> list[tuple[Fold, list[list[Placed]]]]:
    """Legal (PE, SIMD) of an MVAU layer with the window ops each implies."""
    main: MVAU = layer.main
    swg = next((op for op in layer.ops if isinstance(op, SWG)), None)
    out = []
    for pe in divisors(main.mh):
        for simd in divisors(main.mw):
            if swg is None:
                out.append((Fold(pe, simd), [[]]))
            elif swg.channels % simd == 0:
                out.append((Fold(pe, simd), _fronts(layer, simd, False)))
            elif simd == main.mw:
                out.append((Fold(pe, simd), _fronts(layer, swg.channels, True)))
    return out


def _candidates(layer: Layer) -> list[Option]:
    """Every candidate build of one layer, costed (independent of the target)."""
    main = layer.main
    out: list[Option] = []
    if isinstance(main, MVAU):
        for fold, fronts in _mvau_folds(layer):
            for (style, thr), front in itertools.product(MEMORY, fronts):
                out.append(_option([*front, Placed(main, replace(fold, ram_style=style,
                                                                 thr_style=thr))]))
        if len(layer.ops) == 1:
            out += _split_candidates(layer)
    elif isinstance(main, VVAU):
        for pe in divisors(main.channels):
            for simd in (1, main.k2):
                for (style, thr), front in itertools.product(MEMORY, _fronts(layer, pe, simd > 1)):
                    out.append(_option([*front, Placed(main, Fold(pe, simd, style,
                                                                  thr_style=thr))]))
    else:
        count = getattr(main, "channels", None) or getattr(main, "labels", 1)
        styles = STYLES if main.kind == "Thresholding" else ("block",)
        for pe in divisors(count):
            for style in styles:
                out.append(_option([Placed(main, Fold(pe=pe, ram_style=style))]))
    return out


SPLITS = 16  # a split layer's output channels are divided in sixteenths


def _split_candidates(layer: Layer) -> list[Option]:
    """A 1x1 or dense layer split by output channels: one part in block RAM, one in LUTs.

    FINN builds it as DuplicateStreams -> two MVAUs -> StreamingConcat. It lets a layer whose
    weights exceed one board's block RAM live on one board (MobileNetV1's last two layers
    need more than 80 % of an xc7z020's RAMB18 by FINN's own estimate). For each share and
    each fold of the block-RAM part, the LUT part takes its cheapest fold that is not slower.
    """
    main: MVAU = layer.main
    out: list[Option] = []
    if main.mh < 2 * SPLITS:
        return out
    for k in range(1, SPLITS):
        h1 = main.mh * k // SPLITS
        a = replace(main, name=f"{main.name}_bram", mh=h1)
        b = replace(main, name=f"{main.name}_lut", mh=main.mh - h1)
        b_folds = sorted(((b.cycles(Fold(p, q)), b.resources(Fold(p, q, "distributed")).lut,
                           Fold(p, q, "distributed"))
                          for p in divisors(b.mh) for q in divisors(b.mw)),
                         key=lambda t: (t[0], t[1]))
        for pa in divisors(a.mh):
            for qa in divisors(a.mw):
                fa = Fold(pa, qa, "block")
                ca = a.cycles(fa)
                fb = min((t for t in b_folds if t[0] <= ca), key=lambda t: t[1], default=None)
                if fb is None:
                    continue
                fb = fb[2]
                dup = StreamGlue(name=f"DuplicateStreams_{layer.node}", node=layer.node,
                                 words=main.mw * main.vectors, width=min(fa.simd, fb.simd),
                                 abits=main.abits, glue="DuplicateStreams")
                cat = StreamGlue(name=f"StreamingConcat_{layer.node}", node=layer.node,
                                 words=main.mh * main.vectors, width=min(fa.pe, fb.pe),
                                 abits=main.obits or main.acc(), glue="StreamingConcat")
                out.append(_option([Placed(dup), Placed(a, fa), Placed(b, fb), Placed(cat)]))
    return out


def input_fifo(segment: Segment, first: Placed) -> Placed:
    """The FIFO in front of a segment (see ``fifo_depth``).

    In front of a window generator (which takes its input a row at a time while it emits
    windows) it holds one input row; in front of anything else FINN's FIFOs stay shallow.
    """
    width = first.op.in_width(first.fold)
    words = 32
    if isinstance(first.op, (SWG, FMPadding)):
        shape = segment.in_shape
        row_bits = (shape[1] * shape[3] if len(shape) == 4 else shape[1]) * segment.in_bits
        words = -(-row_bits // width)
    return Placed(FIFO(name=f"StreamingFIFO_seg{segment.index}", node="",
                       depth=fifo_depth(words), width=width))


def dwc_reserve(width: int) -> float:
    """LUTs held back for a data-width converter into a stream ``width`` bits wide.

    When one width divides the other (all power-of-two foldings) FINN's converter costs the
    output width plus its counters; the planner reserves that in front of every segment and
    the assembled stage counts the converters actually needed.
    """
    return width + 8


def _with_input(segment: Segment, option: Option) -> Option:
    first = option.placed[0]
    total = _option([input_fifo(segment, first)]) + option
    total.res = total.res + Res(lut=dwc_reserve(first.op.in_width(first.fold)))
    return total


class Candidates:
    """A segment's candidate builds, costed once; ``at(target)`` filters and prunes them."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.layers = [_candidates(layer) for layer in segment.layers]
        # the segment's input FIFO depends on how its first layer is folded; so does the
        # converter FINN puts in front of it when the producer's width differs
        self.layers[0] = [_with_input(segment, o) for o in self.layers[0]]
        for opts in self.layers:
            opts.sort(key=lambda o: o.cycles)
        self.fastest = max(min(o.cycles for o in opts) for opts in self.layers)

    def at(self, target: int) -> list[Option]:
        """The pruned options meeting ``target`` cycles per frame ([] if none does)."""
        per_layer = []
        for opts in self.layers:
            meeting = [o for o in opts if o.cycles <= target]
            if not meeting:
                return []
            per_layer.append(pareto(meeting))
        combos = []
        for parts in itertools.product(*per_layer):
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            combos.append(total)
        return pareto(combos)

    def failing_layer(self, target: int) -> str | None:
        """The first layer that cannot meet ``target`` however folded."""
        for layer, opts in zip(self.segment.layers, self.layers):
            if min(o.cycles for o in opts) > target:
                return layer.node
        return None
