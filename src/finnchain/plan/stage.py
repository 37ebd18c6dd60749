"""One stage as it will be built: its ops with folds, data-width converters, totals, checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

from finnchain.boards.catalogue import Board
from finnchain.cost.lower import Segment
from finnchain.cost.ops import DWC, FIFO, IODMA, Placed, Res, StreamGlue
from finnchain.plan.fit import Budget, dsp_swaps
from finnchain.plan.folding import Option


@dataclass
class Stage:
    """A run of segments on one board, assembled."""

    board: Board
    segments: list[Segment]
    placed: list[Placed]
    res: Res  # dataflow + shell
    cycles: int
    bottleneck: Placed

    @property
    def first(self) -> int:
        return self.segments[0].index

    @property
    def end(self) -> int:
        return self.segments[-1].index + 1

    @property
    def in_bytes(self) -> int:
        return self.segments[0].in_bytes

    @property
    def out_bytes(self) -> int:
        cut = self.segments[-1].cut
        if cut is not None:
            return cut.bytes_per_frame
        label = self.label_select
        if label is None:
            raise ValueError("the last stage has no LabelSelect: its output is not known")
        return label.k * label.obits // 8

    @property
    def label_select(self):
        """The LabelSelect op of the stage (the last stage's top-k), or None."""
        return next((p.op for p in self.placed if p.op.kind == "LabelSelect"), None)

    @property
    def fabric_fps(self) -> float:
        return self.board.clock_mhz * 1e6 / self.cycles

    def over_limits(self) -> list[str]:
        """Resources above the board's limits, as readable phrases ([] when it fits)."""
        b, out = self.board, []
        for name, used, cap in (("LUT", self.res.lut, b.limit("lut")),
                                ("RAMB18", self.res.bram18, b.limit("bram18")),
                                ("DSP", self.res.dsp, b.limit("dsp")),
                                ("URAM", self.res.uram, b.limit("uram")),
                                ("LUT as memory", self.res.lutram, b.lutram)):
            if used > cap:
                out.append(f"{name} {used:,.0f} > {cap:,.0f}")
        return out


def _dwc(prev_width: int, nxt: Placed, name: str) -> Placed | None:
    width = nxt.op.in_width(nxt.fold)
    if prev_width == width:
        return None
    return Placed(DWC(name=name, node="", inw=prev_width, outw=width))


def assemble(board: Board, segments: list[Segment], options: list[Option]) -> Stage:
    """Ops of the chosen options in stream order, with DMAs, converters and DSP swaps."""
    budget = Budget.of(board)
    _, swaps = dsp_swaps(options, budget.dsp)
    swapped = {(k, s) for k, s in swaps}
    port = board.hp_port_bits
    placed: list[Placed] = [Placed(IODMA(name=f"IODMA_in_seg{segments[0].index}", node="",
                                         bytes_per_frame=segments[0].in_bytes, port_bits=port))]
    for k, (seg, opt) in enumerate(zip(segments, options)):
        ops = [Placed(replace(p.op, port_bits=port), p.fold) if isinstance(p.op, IODMA) else p
               for p in opt.placed]  # a weight DMA: the board's port
        for s, sw in enumerate(opt.swaps):
            if (k, s) in swapped:
                p = ops[sw.op_index]
                ops[sw.op_index] = Placed(p.op, replace(p.fold, res_type="dsp"))
        first = next(p for p in ops if p.op.on_stream and not isinstance(p.op, FIFO))
        prev = next(p for p in reversed(placed)
                    if p.op.on_stream and not isinstance(p.op, (FIFO, DWC)))
        conv = _dwc(prev.op.out_width(prev.fold), first, f"StreamingDataWidthConverter_seg{seg.index}")
        if conv is not None:
            placed.append(conv)
        placed.extend(ops)
    last = next(p for p in reversed(placed) if p.op.on_stream)
    out_bytes = segments[-1].cut.bytes_per_frame if segments[-1].cut else 0
    dma_out = Placed(IODMA(name=f"IODMA_out_seg{segments[-1].index}", node="",
                           bytes_per_frame=out_bytes, port_bits=port))
    conv = _dwc(last.op.out_width(last.fold), dma_out, f"StreamingDataWidthConverter_out{segments[-1].index}")
    if conv is not None and not isinstance(last.op, StreamGlue):
        placed.append(conv)
    placed.append(dma_out)
    res = Res(lut=board.shell["lut"], bram18=board.shell["bram18"], uram=board.shell["uram"],
              dsp=board.shell["dsp"])
    for p in placed:
        res = res + p.res
    bottleneck = max(placed, key=lambda p: p.cycles)
    dmas = [p.op for p in placed if isinstance(p.op, IODMA)]
    if len(dmas) > 2:  # a weight DMA: every DMA of the stage shares the board's one HP port
        shared = Placed(IODMA(name="HP port (all DMAs)", node="",
                              bytes_per_frame=sum(d.bytes_per_frame for d in dmas),
                              port_bits=port))
        if shared.cycles > bottleneck.cycles:
            bottleneck = shared
    return Stage(board, segments, placed, res, bottleneck.cycles, bottleneck)
