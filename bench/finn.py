#!/usr/bin/env python3
"""FINN v0.10.1's own compiler front-end on finnchain's plans: accepted, rates, resources, bits.

For each plan (the digits demo on three small boards, MobileNetV1-W4A4 on six Zedboards, the
fewest Zedboards for the reference rate of 118.3 frames/s, one ZCU104 with UltraRAM): plan it,
run every stage's build folder through FINN up to its estimate reports (``build --target
finn-estimate``, FINN's environment .venv-finn), and record per stage whether FINN built what
the plan costed, FINN's frames/s and resources beside the plan's, whether it fits the board,
and FINN's python-mode execution of the stage's HW graph against the emulated accelerator on
seeded frames. Prints a table, writes bench/results/finn.json.

What only Vivado can tell is not here: timing closure at the planned clock, post-synthesis LUT
and FF counts, FIFO depths sized by simulation, and the bitstream itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save
from finnchain.boards.catalogue import Catalogue
from finnchain.fabric.executor import Executor
from finnchain.finn import env as finn_env
from finnchain.finn.estimate import read_stage
from finnchain.finn.verify import check_stage
from finnchain.graph.check import resolve_model
from finnchain.models import zoo
from finnchain.plan.make import make_plan, write_plan
from finnchain.plan.partition import PlanError
from finnchain.plan.schema import Plan

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "finnchain" / "boards" / "demo.yaml"
FIRST_STAGE_PLAN = "mobilenet-v1 on zedboard:6"
PLANS = [  # name, model, boards, target fps, catalogue
    ("digits-cnv on demo-small:3", "digits-cnv", "demo-small:3", None, DEMO),
    ("mobilenet-v1 on zedboard:6", "mobilenet-v1", "zedboard:6", None, None),
    ("mobilenet-v1 on zedboard:5 at 118.3", "mobilenet-v1", "zedboard:5", 118.3, None),
    ("mobilenet-v1 on zedboard:6 at 118.3", "mobilenet-v1", "zedboard:6", 118.3, None),
    ("mobilenet-v1 on zcu104:1", "mobilenet-v1", "zcu104:1", None, None),
    ("mobilenet-v1 on pynq-z1:2,ultra96-v2:1,zedboard:3", "mobilenet-v1",
     "pynq-z1:2,ultra96-v2:1,zedboard:3", None, None),
]


def inputs(name: str, plan: Plan, frames: int) -> np.ndarray:
    if name == "digits-cnv":
        from finnchain.models.digits_cnv import dataset

        return dataset(0)[2][:frames].astype(np.int64)
    return zoo.sample_inputs(tuple(plan.model["input"]["shape"]), frames, seed=0).astype(np.int64)


def run_plan(label, name, spec, fps, catalogue, work: Path, env, frames: int, exec_max: int,
             first_stage: bool, console: Console) -> dict:
    model = resolve_model(name)
    t = time.perf_counter()
    try:
        cat = Catalogue(catalogue) if catalogue else Catalogue()
        plan, _, stage_models = make_plan(model, cat.chain(spec), name, name,
                                          target_fps=fps)
    except PlanError as exc:
        console.print(f"{label}: [red]not planned[/red]: {exc}")
        return {"plan": label, "planned": False, "why": str(exc)}
    plan_seconds = time.perf_counter() - t
    plan_dir = work / label.replace(" ", "-") / "plan"
    write_plan(plan, stage_models, plan_dir)
    out = plan_dir.parent / "finn-estimate"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "finnchain.cli", "build", str(plan_dir), "--target",
                        "finn-estimate", "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, check=False)
    build_seconds = time.perf_counter() - t
    stages = []
    codes = inputs(name, plan, frames)
    for s in plan.stages:
        c, problems = read_stage(out, s.index, r.returncode)
        model_path = plan_dir / s.files["model"]
        entry = {"stage": s.index, "board": s.board["kind"], "accepted": bool(c and c["accepted"]),
                 "problems": problems}
        if c:
            entry.update(plan_fps=c["plan_fps"], finn_fps=c["finn_fps"], fits=c["fits"],
                         plan=c["plan_total"], finn=c["finn_total"],
                         cycles_equal=sum(la["finn"] is not None and la["finn"]["cycles"]
                                          == la["plan"]["cycles"] for la in c["layers"]),
                         layers=len(c["layers"]))
        big = first_stage and label == FIRST_STAGE_PLAN and s.index == 0
        if c and (s.input.shape[-1] <= exec_max or big):
            check, codes = check_stage(env, out / "finn-build" / f"stage{s.index}", s.index,
                                       model_path, codes)
            entry["bit_exact"] = check.to_dict()
        else:
            codes = np.asarray(Executor(model_path).run(codes))
            entry["bit_exact"] = None
        stages.append(entry)
        console.print(f"{label}: stage {s.index} done", highlight=False)
    return {"plan": label, "planned": True, "predicted_fps": plan.predicted_fps,
            "boards": len(plan.stages), "plan_seconds": round(plan_seconds, 1),
            "finn_seconds": round(build_seconds, 1), "build_exit": r.returncode,
            "stages": stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2, help="frames per stage for the bit check")
    ap.add_argument("--exec-max", type=int, default=28,
                    help="FINN executes stages whose input is at most this wide (default 28)")
    ap.add_argument("--first-stage", action="store_true",
                    help=f"also execute the 224x224 first stage of {FIRST_STAGE_PLAN!r} in "
                    "FINN (one frame takes tens of minutes on two cores)")
    ap.add_argument("--only", help="run only the plan of this name (e.g. 'mobilenet-v1 on "
                    "zedboard:6')")
    ap.add_argument("--work", default="artifacts/bench-finn", help="where the builds go")
    ap.add_argument("--name", default="finn", help="results name (bench/results/NAME.json)")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 140))
    try:
        env = finn_env.require()
    except finn_env.FinnEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = []
    for label, name, spec, fps, catalogue in PLANS:
        if args.only and args.only != label:
            continue
        results.append(run_plan(label, name, spec, fps, catalogue, Path(args.work), env,
                                args.frames, args.exec_max, args.first_stage, console))
    table = Table(title="FINN v0.10.1's front-end on finnchain's plans (estimate reports)")
    for col in ("plan", "stage", "accepted", "fps plan/FINN", "LUT plan/FINN",
                "RAMB18 plan/FINN", "URAM plan/FINN", "DSP plan/FINN", "fits",
                "cycles equal", "bit-exact vs FINN"):
        table.add_column(col, justify="right")
    for res in results:
        if not res["planned"]:
            table.add_row(res["plan"], "-", "not planned", *["-"] * 7, res["why"][:40])
            continue
        for s in res["stages"]:
            if "plan" not in s:
                table.add_row(res["plan"], str(s["stage"]), "no", *["-"] * 8)
                continue
            pair = [f"{s['plan'][k]:,.0f} / {s['finn'][k]:,.0f}"
                    for k in ("lut", "bram18", "uram", "dsp")]
            bits = s["bit_exact"]
            table.add_row(res["plan"], str(s["stage"]), "yes" if s["accepted"] else "NO",
                          f"{s['plan_fps']:,.1f} / {s['finn_fps']:,.1f}", *pair,
                          "yes" if s["fits"] else "NO", f"{s['cycles_equal']}/{s['layers']}",
                          "-" if bits is None else
                          f"{bits['equal_frames']}/{bits['frames']} ({bits['finn_seconds']} s)")
    console.print(table)
    path = save(args.name, {"plans": results, "frames": args.frames, "exec_max": args.exec_max,
                         "first_stage": args.first_stage, "finn_env": str(env.finn_root)})
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
