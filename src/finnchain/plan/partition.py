"""Partition: contiguous stages over an ordered list of boards, as fast as the chain allows.

For a target rate, every board kind's cycle budget is its clock over the rate; each segment's
folding options at that budget come from ``folding``. ``StageFitter`` tells how far a stage
starting at segment i can reach on a board (a run that fits stays fitting when shortened, so the
reach is one number per start) and how full each run is. A dynamic program over (board, cut)
then finds a chain that covers all segments, respecting at every cut the link (bytes per frame
times frames per second within the usable Ethernet rate of both ends), the client link into the
first board, and each board's ARM-side cost; among the chains found it keeps the one whose
fullest board is least full. This is exact over contiguous partitions for the options given.

Throughput: a binary search over the rate (feasibility is monotone: a slower target only adds
options and allows more cuts). Fewest boards: the same program, stopped at the first number of
boards that reaches the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from finnchain.boards.catalogue import Board
from finnchain.cost.lower import Segment
from finnchain.plan.fit import StageFitter, stage_uram
from finnchain.plan.folding import Candidates, Option
from finnchain.plan.stage import Stage, assemble

MIN_FPS = 1.0  # the slowest rate a plan is searched at
SEARCH_STEPS = 40  # bisection steps over the rate (relative precision far below 1e-6)


class PlanError(ValueError):
    """The model cannot be planned onto the boards given; the message says why."""


@dataclass
class Search:
    """Everything a planning run caches: segment options per cycle budget, fits per board."""

    segments: list[Segment]
    boards: list[Board]
    options: dict[tuple, list[Option]] = field(default_factory=dict)
    evaluations: int = 0
    ddr: frozenset[str] = frozenset()  # layers whose weights must stream from DDR

    def __post_init__(self) -> None:
        self.candidates = [Candidates(s, self.ddr) for s in self.segments]

    def opts(self, seg: int, board: Board, target: int, start: bool = False,
             end: bool = False) -> list[Option]:
        """Segment ``seg``'s options on ``board`` at ``target`` cycles; ``start``/``end``: the
        segment begins/ends a stage, so its first/last layer is folded to FINN's driver
        layout (see ``folding``)."""
        key = (seg, target, stage_uram(board), start, end)
        if key not in self.options:
            self.options[key] = self.candidates[seg].at(target, key[2], start, end)
        return self.options[key]

    def target(self, board: Board, fps: float) -> int:
        return int(board.clock_mhz * 1e6 // fps)

    def runs(self, board: Board, fps: float) -> list[dict[int, float]]:
        """For each start i: {end j: fullness} of every run [i, j) that fits the board."""
        target, n = self.target(board, fps), len(self.segments)
        out: list[dict[int, float]] = []
        for i in range(n):
            fitter, ends = StageFitter(board), {}
            for j in range(i, n):
                last = self.opts(j, board, target, start=j == i, end=True)
                trial = fitter.trial(last) if last else None
                if trial is not None and trial.fits():
                    ends[j + 1] = trial.fullness()
                middle = self.opts(j, board, target, start=j == i)
                if j + 1 == n or not middle or not fitter.add(middle) or not fitter.fits():
                    break
            out.append(ends)
        return out


def _edge_ok(segments: list[Segment], boards: list[Board], k: int, i: int, j: int,
             fps: float) -> bool:
    """Links and ARM of board k when it runs segments [i, j) (the ARM without the weight DMAs
    a folding may add: the plan's rate counts them, ``make._rates``)."""
    board = boards[k]
    in_bytes = segments[i].in_bytes
    last = segments[j - 1].cut
    out_bytes = last.bytes_per_frame if last is not None else 0
    sender = boards[k - 1] if k > 0 else board  # the client's link is taken as the board's
    if in_bytes * fps > min(board.link_bytes_per_s, sender.link_bytes_per_s):
        return False
    return board.arm_fps(in_bytes, out_bytes) >= fps


def chain(search: Search, fps: float, max_boards: int | None = None,
          fewest: bool = False) -> list[tuple[int, int]] | None:
    """Stage bounds [(i, j), ...] for the rate ``fps``, or None if no chain reaches it."""
    segs, boards = search.segments, search.boards
    n, kmax = len(segs), min(max_boards or len(boards), len(boards))
    search.evaluations += 1
    runs_by_kind: dict[str, list[dict[int, float]]] = {}
    best: dict[int, tuple[float, list[tuple[int, int]]]] = {0: (0.0, [])}
    done: list[tuple[float, list[tuple[int, int]]]] = []
    for k in range(kmax):
        kind = boards[k].kind
        if kind not in runs_by_kind:
            runs_by_kind[kind] = search.runs(boards[k], fps)
        runs = runs_by_kind[kind]
        nxt: dict[int, tuple[float, list[tuple[int, int]]]] = {}
        for i, (score, path) in best.items():
            for j, full in runs[i].items():
                if not _edge_ok(segs, boards, k, i, j, fps):
                    continue
                cand = (max(score, full), [*path, (i, j)])
                if j not in nxt or cand[0] < nxt[j][0]:
                    nxt[j] = cand
        if n in nxt:
            done.append(nxt.pop(n))
            if fewest:
                break
        best = nxt
        if not best:
            break
    if not done:
        return None
    return min(done, key=lambda d: (d[0], len(d[1])))[1]


def assemble_chain(search: Search, fps: float, bounds: list[tuple[int, int]]) -> list[Stage]:
    stages = []
    for k, (i, j) in enumerate(bounds):
        board = search.boards[k]
        fitter = StageFitter(board)
        target = search.target(board, fps)
        for s in range(i, j):
            fitter.add(search.opts(s, board, target, start=s == i, end=s == j - 1))
        stages.append(assemble(board, search.segments[i:j], fitter.choose()))
    return stages


def _valid(stages: list[Stage]) -> bool:
    return all(not s.over_limits() for s in stages)


def ceiling_fps(search: Search) -> float:
    """No chain is faster than its slowest segment at full parallelism on the fastest clock."""
    clock = max(b.clock_mhz for b in search.boards) * 1e6
    return clock / max(c.fastest for c in search.candidates)


def floor_fps(search: Search) -> float:
    """Every candidate of every segment meets this rate (the slowest, fully folded)."""
    clock = min(b.clock_mhz for b in search.boards) * 1e6
    worst = max(o.bound for c in search.candidates for opts in c.layers for o in opts)
    return clock / worst


def _chain_or_raise(search: Search, fps: float, max_boards: int | None,
                    fewest: bool = False, bounds: list[tuple[int, int]] | None = None
                    ) -> list[Stage]:
    """The assembled chain for ``fps`` (its ``bounds`` when already found); PlanError saying
    why when there is none."""
    if bounds is None:
        bounds = chain(search, fps, max_boards, fewest=fewest)
    if bounds is None:
        raise PlanError(explain(search, fps))
    stages = assemble_chain(search, fps, bounds)
    if not _valid(stages):
        raise PlanError(_over(stages))
    return stages


def best_chain(search: Search, max_boards: int | None = None, fewest_at: float | None = None
               ) -> tuple[float, list[Stage]]:
    """The fastest chain (or, with ``fewest_at``, the fewest boards reaching that rate)."""
    if fewest_at is not None:
        return fewest_at, _chain_or_raise(search, fewest_at, max_boards, fewest=True)
    lo, hi = floor_fps(search) * 0.999, ceiling_fps(search) * 1.001
    bounds = chain(search, lo, max_boards)
    if bounds is None:
        # a small network: the links or the ARM side's per-frame cost may allow less than even
        # its most folded layers run at; the rate is then searched below that
        slow = chain(search, MIN_FPS, max_boards)
        if slow is not None:
            lo, hi, bounds = MIN_FPS, lo, slow
    found = (lo, _chain_or_raise(search, lo, max_boards, bounds=bounds))
    for _ in range(SEARCH_STEPS):
        if hi / lo < 1 + 1e-7:
            break
        mid = math.sqrt(lo * hi)
        bounds = chain(search, mid, max_boards)
        stages = assemble_chain(search, mid, bounds) if bounds else None
        if stages is not None and _valid(stages):
            lo, found = mid, (mid, stages)
        else:
            hi = mid
    return found


def _over(stages: list[Stage]) -> str:
    for k, s in enumerate(stages):
        if s.over_limits():
            return (f"stage {k} on {s.board.kind} exceeds its limits once assembled: "
                    + ", ".join(s.over_limits()))
    return "a stage exceeds its limits"


def explain(search: Search, fps: float) -> str:
    """Why no chain reaches ``fps``: the first segment that fits no board, and the resource."""
    for seg in search.segments:
        for board in {b.kind: b for b in search.boards}.values():
            target = search.target(board, fps)
            opts = search.opts(seg.index, board, target)
            if not opts:
                node = search.candidates[seg.index].failing_layer(target)
                return (f"layer {node} cannot reach {fps:.1f} frames/s at "
                        f"{board.clock_mhz:g} MHz on {board.kind} however folded")
            fitter = StageFitter(board)
            if not fitter.add(opts) or not fitter.fits():
                o = min(opts, key=lambda o: o.res.lut)
                p = min(opts, key=lambda o: o.res.bram18)
                names = f"{seg.layers[0].node} .. {seg.layers[-1].node}"
                return (f"the layers between two cuts ({names}) do not fit one {board.kind} "
                        f"however folded: with the fewest LUTs they take {o.res.lut:,.0f} LUT "
                        f"and {o.res.bram18:.0f} RAMB18, with the fewest RAMB18 "
                        f"{p.res.bram18:.0f} RAMB18, {p.res.lut:,.0f} LUT and "
                        f"{p.res.lutram:,.0f} LUTs as memory (limits {board.limit('lut'):,.0f} "
                        f"LUT, {board.limit('bram18'):.0f} RAMB18, {board.lutram:,.0f} LUTs "
                        "as memory, before the shell)")
    kinds = ", ".join(sorted({b.kind for b in search.boards}))
    return (f"{len(search.boards)} boards ({kinds}) are too few for {fps:.1f} frames/s, "
            "even with every layer folded as far as it goes" if fps <= floor_fps(search)
            else f"{len(search.boards)} boards ({kinds}) are too few for {fps:.1f} frames/s")
