"""The plan for people: a terminal table per board and a PNG chart of the same."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from finnchain.plan.schema import Plan


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def print_plan(plan: Plan, console: Console | None = None, reference: dict | None = None) -> None:
    """One row per board: use against limits, cycles, bottleneck, link at the predicted rate."""
    console = console or Console()
    table = Table(title=f"{plan.model['name']} on {_boards(len(plan.stages))}: "
                        f"{plan.predicted_fps:.1f} frames/s predicted")
    for col in ("stage", "board", "segments", "LUT", "RAMB18", "DSP", "LUT RAM", "cycles",
                "fabric fps", "bottleneck", "link in MB/s"):
        table.add_column(col, justify="right" if col not in ("board", "bottleneck") else "left")
    for s in plan.stages:
        u = s.utilization
        table.add_row(str(s.index), s.board["kind"], f"{s.segments[0]}-{s.segments[1] - 1}",
                      _pct(u["lut"]), _pct(u["bram18"]), _pct(u["dsp"]), _pct(u["lutram"]),
                      f"{s.cycles:,}", f"{s.fabric_fps:.1f}", s.bottleneck_op,
                      f"{s.link_in_mb_s:.1f}")
    console.print(table)
    b = plan.bottleneck
    console.print(f"rate set by stage {b['stage']} ({b['limit']}: {b['what']}); "
                  f"{plan.estimates['power_w']} W, {plan.estimates['mj_per_frame']} mJ/frame "
                  f"(estimates); planned in {plan.search['seconds']} s")
    for line in ddr_lines(plan):
        console.print(line)
    given = len(plan.boards)
    if len(plan.stages) < given:
        why = (f"the fewest that reach {plan.objective['target_fps']:g} frames/s"
               if plan.objective.get("kind") == "fewest-boards" else
               "more would not be faster (what binds is above)")
        console.print(f"{_boards(len(plan.stages))} of the {given} given: {why}")
    if reference:
        console.print(f"reference: {reference['fps']} frames/s on {reference['boards']} "
                      f"{reference['kind']} ({reference['source']})")
    console.print("LUT, RAMB18 and DSP as a share of the board's usage limit; "
                  "LUT RAM as a share of the part's LUTs usable as memory.")


def _boards(n: int) -> str:
    return f"{n} board" if n == 1 else f"{n} boards"


def ddr_lines(plan: Plan) -> list[str]:
    """Per stage with weights in DDR: which layers, and every DMA's traffic at the planned rate
    against the board's HP port (its width a PL cycle, shared by all the stage's DMAs)."""
    from finnchain.cost.ops import IODMA_BITS

    out = []
    for s in plan.stages:
        dmas = [o for o in s.ops if o.kind == "IODMA"]
        weights = [o for o in dmas if o.shape.get("role") == "weights"]
        if not weights:
            continue
        frame = sum(o.shape["bytes_per_frame"] for o in dmas)
        bits = s.board.get("hp_port_bits", IODMA_BITS)  # (a plan of before the field: 64)
        port = bits / 8 * s.board["clock_mhz"]  # MB/s
        used = frame * plan.predicted_fps / 1e6
        names = ", ".join(f"{o.node} ({o.shape['bytes_per_frame']:,} B/frame)" for o in weights)
        out.append(f"stage {s.index}: weights from DDR: {names}; all DMAs {used:,.1f} MB/s "
                   f"of the HP port's {port:,.0f} MB/s ({used / port:.0%})")
    return out


def chart(plan: Plan, path: Path) -> Path:
    """Per stage: use of each limit (bars) and the stage's rate against the chain's (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = plan.stages
    x = list(range(len(stages)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 1.1 * len(stages) + 3), 6),
                                      sharex=True)
    width = 0.2
    for k, (key, label) in enumerate((("lut", "LUT"), ("bram18", "RAMB18"), ("dsp", "DSP"),
                                      ("lutram", "LUT RAM"))):
        top.bar([i + (k - 1.5) * width for i in x], [100 * s.utilization[key] for s in stages],
                width, label=label)
    top.axhline(100, color="black", linewidth=0.8)
    top.set_ylabel("% of limit")
    top.legend(ncol=4, fontsize="small")
    top.set_title(f"{plan.model['name']}: {plan.predicted_fps:.1f} frames/s on "
                  f"{_boards(len(stages))}")
    bottom.bar(x, [s.fabric_fps for s in stages], color="tab:gray", label="stage fabric rate")
    bottom.axhline(plan.predicted_fps, color="tab:red", label="chain rate")
    bottom.set_ylabel("frames/s")
    bottom.set_ylim(0, 1.15 * max(s.fabric_fps for s in stages))
    bottom.set_xticks(x, [f"{s.index}\n{s.board['kind']}" for s in stages])
    bottom.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
