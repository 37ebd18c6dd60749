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
kept. A slower target therefore never loses an option, which the partition search relies on.
Unlike FINN's SetFolding there is no 36-bit cap on an MVAU's weight width
(W*SIMD): wide shallow memories are allowed where the BRAM count says they are cheaper, and
SIMD is not raised before PE (PE and SIMD are searched together).
DSP multipliers are not an option here: a stage swaps LUT multipliers for DSPs afterwards,
where it has DSPs to spare (``DspSwap``). Weights may also go to UltraRAM (``ultra``) on boards
that have it; options with URAM are kept apart from those without (``Candidates.at``).

**The wire at a cut is FINN's driver layout.** FINN's generated driver packs the *folded*
tensor: each group of the first HW layer's SIMD (or PE) input values, and of the last layer's
PE output values, is padded to whole bytes. That equals the wire's layout (NHWC, the channels of
a pixel packed and padded to whole bytes) exactly when the group is all the channels, or when
both the group and the channels fill whole bytes (checked against FINN's own packing in the
tests). So a stage's first layer and last layer are folded that way (``aligned``): the bytes one
board's output DMA writes are the bytes the next board's input DMA reads, with no repacking on
the ARM cores.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from finnchain.cost.lower import Layer, Segment
from finnchain.cost.ops import (
    DWC,
    FIFO,
    MVAU,
    SWG,
    VVAU,
    AddStreams,
    DownSampler,
    FMPadding,
    Fold,
    Op,
    Placed,
    Res,
    StreamGlue,
    divisors,
    fifo_depth,
)

MAX_COMBOS = 20_000  # a segment's layer combinations costed at once; beyond, pruned layer by layer
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
    cycles: int  # slowest op, FINN's figures
    swaps: tuple[DspSwap, ...] = ()
    bound: int = 0  # slowest op by the cycles folding is chosen by (``Op.bound_cycles``)

    @property
    def buildable(self) -> bool:
        """Whether FINN generates every op of it (``Op.buildable``: HLS stream widths)."""
        return all(p.op.buildable(p.fold) for p in self.placed)

    def __add__(self, other: Option) -> Option:
        n = len(self.placed)
        moved = tuple(DspSwap(s.op_index + n, s.dsp, s.lut_saved) for s in other.swaps)
        return Option(self.placed + other.placed, self.res + other.res,
                      max(self.cycles, other.cycles), self.swaps + moved,
                      max(self.bound, other.bound))


def _option(placed: list[Placed]) -> Option:
    res = Res()
    swaps = []
    for i, p in enumerate(placed):
        res = res + p.res
        op = p.op
        if op.takes_dsps():
            dsp = op.resources(replace(p.fold, res_type="dsp"))  # all else as placed
            swaps.append(DspSwap(i, dsp.dsp, p.res.lut - dsp.lut))
    return Option(tuple(placed), res, max(p.cycles for p in placed), tuple(swaps),
                  max(p.op.bound_cycles(p.fold) for p in placed))


def pareto(options: list[Option], keep: int = MAX_OPTIONS) -> list[Option]:
    """The cheapest options: those not beaten in RAMB18 and LUT, and those not beaten in
    RAMB18 and LUT RAM; at most ``keep`` of them (an even spread over RAMB18, both ends).
    Options using URAM are pruned among those with the same URAM count, so that a little
    more URAM for a lot less block RAM is never lost; an option is dropped when one kept with
    less URAM costs no more RAMB18 and no more LUT (or LUT RAM)."""
    return [options[i] for i in _pareto_index(_costs(options), keep)]


def _costs(options: list[Option]) -> np.ndarray:
    """Each option's (RAMB18, LUT, LUT RAM, URAM), a row each."""
    return np.array([(o.res.bram18, o.res.lut, o.res.lutram, o.res.uram) for o in options],
                    dtype=np.float64).reshape(-1, 4)


def _front_index(bram: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Positions of the rows not beaten in both RAMB18 and ``key`` (sorted by RAMB18 then key,
    ties in their given order; a row is kept when its key is below every earlier one's)."""
    order = np.lexsort((key, bram))
    k = key[order]
    earlier = np.minimum.accumulate(k)
    keep = np.ones(len(k), dtype=bool)
    keep[1:] = k[1:] < earlier[:-1]
    return order[keep]


def _beaten(costs: np.ndarray, rows: np.ndarray, kept: list[int], key: np.ndarray
            ) -> np.ndarray:
    """Which of ``rows`` a row of ``kept`` (all with less URAM) beats: one with no more
    RAMB18 and no more ``key`` (one value per row of ``costs``)."""
    if not kept or not len(rows):
        return np.zeros(len(rows), dtype=bool)
    k = np.asarray(kept)
    order = np.argsort(costs[k, 0], kind="stable")
    bram = costs[k, 0][order]
    least = np.minimum.accumulate(key[k][order])  # the least key at or below each RAMB18
    at = np.searchsorted(bram, costs[rows, 0], side="right") - 1
    return (at >= 0) & (least[np.maximum(at, 0)] <= key[rows])


def _pareto_index(costs: np.ndarray, keep: int) -> list[int]:
    """``pareto`` on rows of ``_costs``: the positions kept, in pareto's order."""
    out: list[int] = []
    # LUT RAM first, then LUT: the rank of the pair orders both at once
    rank = np.unique(costs[:, [2, 1]], axis=0, return_inverse=True)[1].reshape(-1)
    rank = rank.astype(np.float64)
    by_uram = np.argsort(costs[:, 3], kind="stable")
    _, starts = np.unique(costs[by_uram, 3], return_index=True)
    for group in np.split(by_uram, starts[1:]):
        c = costs[group]
        front = group[_front_index(c[:, 0], c[:, 1])]
        by_lut = [int(i) for i in front[~_beaten(costs, front, out, costs[:, 1])]]
        if len(by_lut) > keep:
            step = (len(by_lut) - 1) / (keep - 1)
            by_lut = [by_lut[round(i * step)] for i in range(keep)]
        front = group[_front_index(c[:, 0], rank[group])]
        by_ram = [int(i) for i in front[~_beaten(costs, front, out, rank)]][:keep]
        seen = set(by_lut)
        out += by_lut + [i for i in by_ram if i not in seen]
    return out


def _fronts(layer: Layer, simd: int, parallel: bool) -> list[list[Placed]]:
    """Padding and window generator in front of the main op, one list per combination of
    their foldings (``front_folds``)."""
    front = [[Placed(op, f) for f in op.front_folds(simd, parallel)] for op in layer.ops[:-1]]
    return [list(c) for c in itertools.product(*front)]


def _main_fronts(layer: Layer, fold: Fold) -> list[list[Placed]]:
    """What goes in front of the main op at ``fold``: none when its window generator cannot
    feed it (the window generator's SIMD must divide its channels)."""
    main, window = layer.main, next((op for op in layer.ops if isinstance(op, (SWG, DownSampler))),
                                    None)
    if isinstance(main, VVAU):
        return _fronts(layer, fold.pe, fold.simd > 1)
    if isinstance(main, MVAU) and window is not None:
        if window.legal(Fold(simd=fold.simd)):
            return _fronts(layer, fold.simd, False)
        if fold.simd == main.mw and isinstance(window, SWG):
            return _fronts(layer, window.channels, True)
        return []
    return [[]]


def _candidates(layer: Layer, ddr: bool = False) -> list[Option]:
    """Every candidate build of one layer FINN can generate, costed (independent of the
    target); ``ddr``: only those whose weights stream from DDR (``external_weights``)."""
    out = [o for o in _all_candidates(layer) if o.buildable]
    if ddr:
        out = [o for o in out if any(not p.op.on_stream for p in o.placed)]
    return out


class WeightsFromDdrError(ValueError):
    """A layer asked to stream its weights from DDR that cannot; the message says why."""


def external_weights(segments: list[Segment], nodes: list[str]) -> frozenset[str]:
    """The layers a user asks to stream their weights from DDR (``plan --weights-from-ddr``),
    checked: WeightsFromDdrError naming a node that is no layer, or one whose weights FINN
    v0.10.1 cannot stream (``cost.ops`` module notes)."""
    layers: dict[str, list[Op]] = {}
    for seg in segments:
        for layer in seg.layers:
            layers.setdefault(layer.node, []).extend(layer.ops)
    for node in nodes:
        ops = layers.get(node)
        if ops is None:
            raise WeightsFromDdrError(f"--weights-from-ddr {node}: the model has no layer "
                                      f"{node!r} (its layers: {', '.join(layers)})")
        main = next((op for op in ops if isinstance(op, (MVAU, VVAU))), ops[-1])
        if isinstance(main, VVAU):
            raise WeightsFromDdrError(f"--weights-from-ddr {node}: a depthwise convolution (VVAU); FINN "
                             "v0.10.1 streams weights from DDR into an MVAU only (InsertIODMA "
                             "takes 2-D weights)")
        if not isinstance(main, MVAU):
            raise WeightsFromDdrError(f"--weights-from-ddr {node}: a {main.kind}, which has no weights")
        if not main.external_ok:
            raise WeightsFromDdrError(f"--weights-from-ddr {node}: a convolution, whose MVAU reads each "
                             f"weight {main.vectors} times a frame, while FINN v0.10.1's weight "
                             "DMA sends them once a frame; only a fully connected layer's can")
    return frozenset(nodes)


def _all_candidates(layer: Layer) -> list[Option]:
    main = layer.main
    out: list[Option] = []
    for fold in main.folds():
        skip = [Placed(main.skip_fifo(fold), Fold())] if isinstance(main, AddStreams) else []
        beside = main.attached(fold)  # a weight DMA
        for front in _main_fronts(layer, fold):
            out.append(_option([*front, *skip, Placed(main, fold), *beside]))
    if isinstance(main, MVAU) and len(layer.ops) == 1:
        out += _split_candidates(layer)
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
        a = replace(main, name=f"{main.name}_bram", mh=h1, split_part="bram")
        b = replace(main, name=f"{main.name}_lut", mh=main.mh - h1, split_part="lut")
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
                width = min(fa.simd, fb.simd)
                obits = main.obits or main.acc()
                dup = StreamGlue(name=f"DuplicateStreams_{layer.node}", node=layer.node,
                                 words=main.mw * main.vectors, width=width,
                                 abits=main.abits, glue="DuplicateStreams")
                cat = StreamGlue(name=f"StreamingConcat_{layer.node}", node=layer.node,
                                 words=main.mh * main.vectors, width=main.mh,
                                 abits=obits, glue="StreamingConcat")
                glue = [Placed(dup, Fold(pe=width))]
                for part, fold in ((a, fa), (b, fb)):  # FINN's converters around the parts
                    for k, (inw, outw) in enumerate((
                            (width * main.abits, part.in_width(fold)),
                            (part.out_width(fold), part.mh * obits))):
                        if inw != outw:
                            glue.append(Placed(DWC(name=f"DWC_{part.name}_{k}", node="",
                                                   inw=inw, outw=outw)))
                out.append(_option([glue[0], Placed(a, fa), Placed(b, fb), *glue[1:],
                                    Placed(cat)]))
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


def aligned(values: int, channels: int, bits: int) -> bool:
    """Whether a group of ``values`` of ``channels`` ``bits``-bit values packs, as FINN's driver
    packs a folded tensor, into the wire's bytes (see the module notes)."""
    return values == channels or (values * bits % 8 == 0 and channels * bits % 8 == 0)


def _ends(option: Option) -> tuple[Placed, Placed]:
    ops = [p for p in option.placed if p.op.on_stream and not isinstance(p.op, (FIFO, DWC))]
    return ops[0], ops[-1]


def _datatype_bits(datatype: str) -> int:
    from finnchain.graph.pack import IntType

    return IntType(datatype).bitwidth()


class Candidates:
    """A segment's candidate builds, costed once; ``at(target)`` filters and prunes them.

    ``at`` can ask for the options whose first layer reads the segment's input as FINN's driver
    writes it (``start``: the segment begins a stage) and whose last layer writes its output
    that way (``end``: the segment ends a stage), and for options within a board's URAM
    (``uram``; 0 for boards that have none: an option that needs more can never fit)."""

    def __init__(self, segment: Segment, ddr: frozenset[str] = frozenset()) -> None:
        self.segment = segment
        self._pruned: dict[tuple, list[Option]] = {}
        self.layers = [_candidates(layer, layer.node in ddr and isinstance(layer.main, MVAU))
                       for layer in segment.layers]
        # the segment's input FIFO depends on how its first layer is folded; so does the
        # converter FINN puts in front of it when the producer's width differs
        self.layers[0] = [_with_input(segment, o) for o in self.layers[0]]
        for opts in self.layers:
            opts.sort(key=lambda o: o.bound)
        self.fastest = max(min(o.bound for o in opts) for opts in self.layers)
        in_ch = segment.in_shape[1]
        self.starts_ok = set()
        for o in self.layers[0]:
            first = _ends(o)[0]
            if aligned(first.op.in_width(first.fold) // first.op.abits, in_ch, segment.in_bits):
                self.starts_ok.add(id(o))
        self.ends_ok = set()
        cut = segment.cut
        for o in self.layers[-1]:
            last = _ends(o)[1]
            if cut is None or aligned(last.op.out_width(last.fold) // last.op.out_bits(),
                                      cut.shape[1], _datatype_bits(cut.datatype)):
                self.ends_ok.add(id(o))

    def at(self, target: int, uram: float = math.inf, start: bool = False, end: bool = False
           ) -> list[Option]:
        """The pruned options meeting ``target`` cycles per frame ([] if none does), using at
        most ``uram`` URAM blocks (what a stage of the board holds; 0 on boards without)."""
        per_layer = []
        last = len(self.layers) - 1
        for k, opts in enumerate(self.layers):
            first_aligned, last_aligned = start and k == 0, end and k == last
            key = (k, target, uram, first_aligned, last_aligned)
            if key not in self._pruned:  # a layer's pruned options serve every variant
                meeting = [o for o in opts if o.bound <= target and o.res.uram <= uram
                           and (not first_aligned or id(o) in self.starts_ok)
                           and (not last_aligned or id(o) in self.ends_ok)]
                self._pruned[key] = pareto(meeting) if meeting else []
            if not self._pruned[key]:
                return []
            per_layer.append(self._pruned[key])
        if math.prod(len(p) for p in per_layer) <= MAX_COMBOS:
            combos = []
            for parts in itertools.product(*per_layer):
                total = parts[0]
                for part in parts[1:]:
                    total = total + part
                if total.res.uram <= uram:
                    combos.append(total)
            return pareto(combos) if combos else []
        # many layers with many options each (a residual block): prune after each layer. The
        # cheapest builds of a sum are sums of the parts' cheapest builds, so this loses only
        # what ``pareto``'s spread leaves out along the way
        front = per_layer[0]
        for part in per_layer[1:]:
            m = len(part)
            sums = (_costs(front)[:, None, :] + _costs(part)[None, :, :]).reshape(-1, 4)
            fit = np.flatnonzero(sums[:, 3] <= uram)
            if not len(fit):
                return []
            front = [front[fit[i] // m] + part[fit[i] % m]
                     for i in _pareto_index(sums[fit], MAX_OPTIONS)]
        return front

    def failing_layer(self, target: int) -> str | None:
        """The first layer that cannot meet ``target`` however folded."""
        for layer, opts in zip(self.segment.layers, self.layers):
            if min(o.bound for o in opts) > target:
                return layer.node
        return None
