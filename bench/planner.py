#!/usr/bin/env python3
"""The planner on MobileNetV1-W4A4 and xc7z020 boards (Zedboard, 100 MHz, FINN's limits).

Measures, side by side with the reference system (six Zedboards, 118.3 frames/s):
- the predicted rate on six boards and the time to plan it;
- the fewest boards that reach 118.3 frames/s;
- the fastest chain with up to 32 boards (the ceiling) and what sets it;
- how the planning time grows with the number of boards.
Prints tables, writes bench/results/planner.json and bench/results/planner.png (the six-board
plan's chart). With --uram instead: planning onto UltraRAM boards (ZCU104) beside boards
without (ZCU102), MobileNetV1 and Brevitas' resnet18_4w4a (seed 0): rate, cuts, seconds and
the most folding options a segment keeps at the plan's rate, into bench/results/planner-uram.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save
from finnchain.boards.catalogue import Catalogue
from finnchain.models.zoo import resolve_model
from finnchain.plan.command import REFERENCE
from finnchain.plan.make import make_plan
from finnchain.plan.partition import PlanError
from finnchain.plan.report import chart, print_plan

RESULTS = Path(__file__).resolve().parent / "results"
KIND = "zedboard"


def timed_plan(model, catalogue, count: int, target: float | None = None):
    t = time.perf_counter()
    plan, _, _ = make_plan(model, catalogue.chain(f"{KIND}:{count}"), "mobilenet-v1",
                           "mobilenet-v1", target_fps=target)
    return plan, time.perf_counter() - t


URAM_RUNS = (("mobilenet-v1", "zcu104:1"), ("resnet18_4w4a", "zcu102:4"),
             ("resnet18_4w4a", "zcu104:4"), ("resnet18_4w4a", "aup-zu3:4"))


def uram(console: Console) -> int:
    """Plan each of URAM_RUNS; the widest option list is Search's, at the plan's own rate."""
    from finnchain.cost.lower import segments
    from finnchain.plan.fit import stage_uram
    from finnchain.plan.folding import Candidates

    catalogue, rows = Catalogue(), []
    for name, boards in URAM_RUNS:
        model = resolve_model(name)
        chain = catalogue.chain(boards)
        t = time.perf_counter()
        try:
            plan, stages, _ = make_plan(model, chain, name, name)
        except PlanError as exc:  # a row of its own: what does not fit, and why
            rows.append({"model": name, "boards": boards, "fps": None, "why": str(exc),
                         "plan_seconds": round(time.perf_counter() - t, 3)})
            continue
        sec = time.perf_counter() - t
        target = int(chain[0].clock_mhz * 1e6 // plan.predicted_fps)
        widest = max(len(Candidates(s).at(target, stage_uram(chain[0])))
                     for s in segments(model))
        rows.append({"model": name, "boards": boards, "fps": plan.predicted_fps,
                     "plan_seconds": round(sec, 3), "stages": [s.segments for s in plan.stages],
                     "uram_per_stage": [int(s.res.uram) for s in stages],
                     "most_options_per_segment": widest, "bottleneck": plan.bottleneck})
    table = Table(title="planning onto boards with and without UltraRAM")
    for col in ("model", "boards", "frames/s", "seconds", "URAM per stage", "most options"):
        table.add_column(col, justify="left" if col in ("model", "boards") else "right")
    for r in rows:
        if r["fps"] is None:
            table.add_row(r["model"], r["boards"], "not planned", f"{r['plan_seconds']:.1f}",
                          r["why"][:60], "-")
            continue
        table.add_row(r["model"], r["boards"], f"{r['fps']:.1f}", f"{r['plan_seconds']:.1f}",
                      ", ".join(map(str, r["uram_per_stage"])),
                      f"{r['most_options_per_segment']:,}")
    console.print(table)
    console.print(f"wrote {save('planner-uram', {'runs': rows})}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,4,6,8,12,16,24,32",
                    help="board counts for the planning-time curve")
    ap.add_argument("--uram", action="store_true",
                    help="plan onto UltraRAM boards instead (bench/results/planner-uram.json)")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 132))
    if args.uram:
        return uram(console)
    model = resolve_model("mobilenet-v1")
    catalogue = Catalogue()

    plan6, sec6 = timed_plan(model, catalogue, 6)
    fewest, sec_fewest = timed_plan(model, catalogue, 32, REFERENCE["fps"])
    plan32, sec32 = timed_plan(model, catalogue, 32)
    growth = []
    for n in (int(s) for s in args.sizes.split(",")):
        try:
            p, sec = timed_plan(model, catalogue, n)
            growth.append({"boards": n, "seconds": round(sec, 3), "fps": p.predicted_fps,
                           "boards_used": len(p.stages)})
        except ValueError as exc:
            growth.append({"boards": n, "seconds": None, "fps": None, "error": str(exc)})

    print_plan(plan6, console, REFERENCE)
    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(plan6, RESULTS / "planner.png")

    side = Table(title="MobileNetV1-W4A4 on Zedboards (xc7z020, 100 MHz, FINN's usage limits)")
    for col in ("figure", "reference", "finnchain (predicted)"):
        side.add_column(col, justify="right" if col != "figure" else "left")
    side.add_row("frames/s on 6 boards", f"{REFERENCE['fps']}", f"{plan6.predicted_fps:.1f}")
    side.add_row("boards for 118.3 frames/s", "6", str(len(fewest.stages)))
    side.add_row("W (estimate) on 6 boards", f"{REFERENCE['power_w']}",
                 f"{plan6.estimates['power_w']}")
    side.add_row("mJ per frame on 6 boards",
                 f"{REFERENCE['power_w'] / REFERENCE['fps'] * 1e3:.0f}",
                 f"{plan6.estimates['mj_per_frame']:.0f}")
    side.add_row("ceiling, up to 32 boards", "-",
                 f"{plan32.predicted_fps:.1f} on {len(plan32.stages)} boards")
    console.print(side)
    b = plan32.bottleneck
    ceiling_reason = f"stage {b['stage']}, {b['limit']}: {b['what']}"
    console.print(f"ceiling set by {ceiling_reason}")

    grow = Table(title="planning time against chain length (fastest plan)")
    for col in ("boards", "seconds", "frames/s", "boards used"):
        grow.add_column(col, justify="right")
    for g in growth:
        grow.add_row(str(g["boards"]), str(g["seconds"]), str(g["fps"]),
                     str(g.get("boards_used", "-")))
    console.print(grow)

    result = {
        "model": "mobilenet-v1",
        "board": KIND,
        "fps_6_boards": plan6.predicted_fps,
        "plan_seconds_6_boards": round(sec6, 3),
        "min_boards_for_118_3": len(fewest.stages),
        "plan_seconds_min_boards": round(sec_fewest, 3),
        "fps_32_boards": plan32.predicted_fps,
        "boards_used_32": len(plan32.stages),
        "plan_seconds_32_boards": round(sec32, 3),
        "ceiling_fps": plan32.predicted_fps,
        "ceiling_reason": ceiling_reason,
        "bottleneck_6_boards": plan6.bottleneck,
        "power_w_6_boards_estimate": plan6.estimates["power_w"],
        "mj_per_frame_6_boards_estimate": plan6.estimates["mj_per_frame"],
        "reference": REFERENCE,
        "speedup_vs_reference_6_boards": round(plan6.predicted_fps / REFERENCE["fps"], 3),
        "stages_6_boards": [{"segments": s.segments, "utilization": s.utilization,
                             "cycles": s.cycles, "bottleneck": s.bottleneck_op}
                            for s in plan6.stages],
        "growth": growth,
    }
    out = save("planner", result)
    console.print(f"wrote {out} and {RESULTS / 'planner.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
