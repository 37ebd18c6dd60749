"""Does a run of segments fit one board at a target rate, and how full is it?

For a board and a first segment, ``StageFitter`` adds segments one at a time and keeps, for
every RAMB18 budget b and every budget r of LUTs used as memory (in steps of ``LUTRAM_BINS``-th
of the part's LUT RAM, rounded up), the fewest LUTs any combination of the segments' options
needs within b and r (a knapsack, exact for the options given up to that rounding). On a board
with UltraRAM the second budget is URAM blocks instead (exact); LUT RAM is then only checked
once the stage is assembled (such boards have LUT RAM to spare: their LUT limit binds first).
A run fits when the
cheapest combination within the board's RAMB18 limit is within its LUT limit, after LUT
multipliers are swapped for DSPs where DSPs are left (a second, small knapsack over DSPs).
Shell resources (catalogue) are reserved first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finnchain.boards.catalogue import Board
from finnchain.plan.folding import Option, dwc_reserve

LUTRAM_BINS = 64  # resolution of the LUT-RAM budget


@dataclass
class Budget:
    """What the dataflow may use on a board after the shell: RAMB18, LUT, DSP."""

    bram: int
    lut: float
    dsp: int

    @classmethod
    def of(cls, board: Board) -> Budget:
        return cls(bram=int(board.limit("bram18")) - board.shell["bram18"],
                   lut=board.limit("lut") - board.shell["lut"]
                   - 2 * dwc_reserve(board.hp_port_bits),
                   dsp=int(board.limit("dsp")) - board.shell["dsp"])


def dsp_swaps(options: list[Option], capacity: int) -> tuple[float, list[tuple[int, int]]]:
    """Best LUT saving from DSP multipliers within ``capacity`` DSPs (0/1 knapsack).

    Returns the saving and the chosen (option index, swap index) pairs.
    """
    items = [(k, s, sw) for k, o in enumerate(options) for s, sw in enumerate(o.swaps)
             if 0 < sw.dsp <= capacity and sw.lut_saved > 0]
    if not items or capacity <= 0:
        return 0.0, []
    best = np.zeros(capacity + 1)
    take = np.zeros((len(items), capacity + 1), dtype=bool)
    for n, (_, _, sw) in enumerate(items):
        cand = np.full(capacity + 1, -1.0)
        cand[sw.dsp:] = best[: capacity + 1 - sw.dsp] + sw.lut_saved
        take[n] = cand > best
        best = np.maximum(best, cand)
    chosen, c = [], capacity
    for n in range(len(items) - 1, -1, -1):
        if take[n, c]:
            chosen.append((items[n][0], items[n][1]))
            c -= items[n][2].dsp
    return float(best[capacity]), chosen[::-1]


def stage_uram(board: Board) -> int:
    """The URAM blocks one stage on ``board`` may use: its limit less the shell's."""
    return max(0, int(board.limit("uram")) - int(board.shell.get("uram", 0)))


class StageFitter:
    """Adds segments' options one by one for one board; answers fit and fullness."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.budget = Budget.of(board)
        self.uram = stage_uram(board)
        if self.uram >= 1:
            rows, self.grain = self.uram, 1.0
        else:
            rows, self.grain = LUTRAM_BINS, max(1.0, board.lutram / LUTRAM_BINS)
        self.dp = np.zeros((rows + 1, max(self.budget.bram, 0) + 1))
        self.steps: list[tuple[list[Option], np.ndarray]] = []

    def _bins(self, o: Option) -> int:
        if self.uram >= 1:
            return int(o.res.uram)
        if o.res.uram:
            return 1 << 30  # no URAM on this board
        return int(np.ceil(o.res.lutram / self.grain - 1e-9))

    def trial(self, options: list[Option]) -> StageFitter | None:
        """A copy with one more segment added (None if it cannot be); this one is unchanged."""
        other = StageFitter.__new__(StageFitter)
        other.__dict__.update(self.__dict__)
        other.steps = list(self.steps)
        return other if other.add(options) else None

    def add(self, options: list[Option]) -> bool:
        """Add one segment; False (and nothing added) if it cannot be part of this stage."""
        rows, cols = self.dp.shape
        new = np.full(self.dp.shape, np.inf)
        arg = np.full(self.dp.shape, -1, dtype=np.int32)
        for k, o in enumerate(options):
            b0, r0 = o.res.bram18, self._bins(o)
            if b0 >= cols or r0 >= rows:
                continue
            cand = self.dp[: rows - r0, : cols - b0] + o.res.lut
            view, aview = new[r0:, b0:], arg[r0:, b0:]
            better = cand < view
            view[better] = cand[better]
            aview[better] = k
        if not np.isfinite(new[-1, -1]):
            return False
        self.steps.append((options, arg))
        self.dp = new
        return True

    def choose(self) -> list[Option]:
        """The options chosen for each segment with the fewest LUTs within the budgets."""
        r, b = self.dp.shape[0] - 1, self.dp.shape[1] - 1
        out = []
        for options, arg in reversed(self.steps):
            o = options[int(arg[r, b])]
            out.append(o)
            b -= o.res.bram18
            r -= self._bins(o)
        return out[::-1]

    def fits(self) -> bool:
        if self.dp[-1, -1] <= self.budget.lut:
            return True
        saved, _ = dsp_swaps(self.choose(), self.budget.dsp)
        return self.dp[-1, -1] - saved <= self.budget.lut

    def fullness(self) -> float:
        """The smallest, over RAMB18 budgets, of the larger of LUT and RAMB18 use as a share
        of the board's limits (shell included): 1.0 is exactly full."""
        b = np.arange(self.dp.shape[1])
        lut = (self.dp[-1] + self.board.shell["lut"]) / self.board.limit("lut")
        bram = (b + self.board.shell["bram18"]) / self.board.limit("bram18")
        score = float(np.min(np.maximum(lut, bram)))
        if score > 1.0:  # only DSP swaps make it fit: count it as just full
            return 1.0
        return score
