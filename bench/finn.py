#!/usr/bin/env python3
"""FINN v0.10.1 on finnchain's plans: its front-end, its PYNQ driver and its C++ simulation.

For each plan (the digits demo on three small boards; MobileNetV1-W4A4 on six Zedboards, on five,
on the fewest Zedboards for the reference rate of 118.3 frames/s, and on one ZCU104; Brevitas'
quant_mobilenet_v1_4b on six Zedboards; cnv_2w2a on two PYNQ-Z1s; resnet18_4w4a on four
ZCU102s): plan it, then build every stage with ``finnchain build --target finn-cppsim`` in
FINN's own environment (.venv-finn): FINN's compiler front-end up to its estimate reports,
FINN's own PYNQ driver (MakePYNQDriver on the graph of its Zynq flow), and FINN's C++
simulation of every HLS layer (finn-hlslib compiled with g++) on the stage's verification
vectors (seeded frames run through the emulated fabric). Records per stage whether FINN built
what the plan costed, FINN's frames/s and resources beside the plan's, whether it fits the
board, whether FINN's driver moves the plan's wire bytes, and the frames on which FINN's C++
simulation equals the emulator, with the distinct values at both ends and the seconds spent
compiling and simulating. Prints a table, writes bench/results/finn.json (``--name``).

RTL layers (FINN's sliding window and padding) run FINN's python model in cppsim mode. What
only Vivado can tell is not here: timing closure at the planned clock, post-synthesis LUT and
FF counts, FIFO depths sized by simulation, the stitched IP's RTL simulation and the bitstream.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save
from finnchain.boards.catalogue import Catalogue
from finnchain.finn import env as finn_env
from finnchain.finn.estimate import read_stage
from finnchain.models.zoo import resolve_model
from finnchain.plan.make import make_plan, write_plan
from finnchain.plan.partition import PlanError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "finnchain" / "boards" / "demo.yaml"
PLANS = [  # name, model, boards, target fps, catalogue
    ("digits-cnv on demo-small:3", "digits-cnv", "demo-small:3", None, DEMO),
    ("mobilenet-v1 on zedboard:6", "mobilenet-v1", "zedboard:6", None, None),
    ("mobilenet-v1 on zedboard:5", "mobilenet-v1", "zedboard:5", None, None),
    ("mobilenet-v1 on zedboard:6 at 118.3", "mobilenet-v1", "zedboard:6", 118.3, None),
    ("mobilenet-v1 on zcu104:1", "mobilenet-v1", "zcu104:1", None, None),
    ("quant_mobilenet_v1_4b on zedboard:6", "quant_mobilenet_v1_4b", "zedboard:6", None, None),
    ("cnv_2w2a on pynq-z1:2", "cnv_2w2a", "pynq-z1:2", None, None),
    ("resnet18_4w4a on zcu102:4", "resnet18_4w4a", "zcu102:4", None, None),
]


def run_plan(label, name, spec, fps, catalogue, work: Path, frames: int, jobs: int,
             console: Console) -> dict:
    model = resolve_model(name)
    t = time.perf_counter()
    try:
        cat = Catalogue(catalogue) if catalogue else Catalogue()
        plan, _, stage_models = make_plan(model, cat.chain(spec), name, name, target_fps=fps)
    except PlanError as exc:
        console.print(f"{label}: [red]not planned[/red]: {exc}")
        return {"plan": label, "planned": False, "why": str(exc)}
    plan_seconds = time.perf_counter() - t
    plan_dir = work / re.sub(r"[^A-Za-z0-9_.-]+", "-", label) / "plan"  # make takes no ':'

    write_plan(plan, stage_models, plan_dir)
    out = plan_dir.parent / "finn-cppsim"
    console.print(f"{label}: {len(plan.stages)} stages, building with FINN ...", highlight=False)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "finnchain.cli", "build", str(plan_dir), "--target",
                        "finn-cppsim", "--out", str(out), "--frames", str(frames), "--jobs",
                        str(jobs)], cwd=ROOT, capture_output=True, text=True, check=False)
    build_seconds = time.perf_counter() - t
    manifest = json.loads((out / "manifest.json").read_text()) \
        if (out / "manifest.json").is_file() else {"stages": []}
    verified = {e["index"]: (e.get("verification") or {}).get("folded_hls_cppsim")
                for e in manifest["stages"]}
    stages = []
    for s in plan.stages:
        c, problems = read_stage(out, s.index, r.returncode)
        entry = {"stage": s.index, "board": s.board["kind"], "input": s.input.shape[1:],
                 "accepted": bool(c and c["accepted"]), "problems": problems,
                 "cppsim": verified.get(s.index)}
        if c:
            entry.update(plan_fps=c["plan_fps"], finn_fps=c["finn_fps"], fits=c["fits"],
                         plan=c["plan_total"], finn=c["finn_total"],
                         driver_equal=bool(c["wire"]) and all(
                             w["equal"] for w in c["wire"].values()),
                         cycles_equal=sum(la["finn"] is not None and la["finn"]["cycles"]
                                          == la["plan"]["cycles"] for la in c["layers"]),
                         layers=len(c["layers"]))
        stages.append(entry)
    console.print(f"{label}: done in {build_seconds:.0f} s (exit {r.returncode})",
                  highlight=False)
    return {"plan": label, "planned": True, "predicted_fps": plan.predicted_fps,
            "boards": len(plan.stages), "plan_seconds": round(plan_seconds, 1),
            "finn_seconds": round(build_seconds, 1), "build_exit": r.returncode,
            "stages": stages}


def _cppsim_cell(v: dict | None) -> str:
    if v is None:
        return "-"
    return (f"{v['equal']}/{v['frames']} ({v['distinct_in']}/{v['distinct_out']} distinct; "
            f"{v['compile_seconds']:.0f}+{v['sim_seconds']:.0f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=4,
                    help="verification frames per stage (default 4)")
    ap.add_argument("--jobs", type=int, default=2, help="stages built at once (default 2)")
    ap.add_argument("--only", action="append",
                    help="run only the plan of this name (repeatable; e.g. 'mobilenet-v1 on "
                    "zedboard:6'); the other plans' rows of an earlier run are kept")
    ap.add_argument("--work", default="artifacts/bench-finn", help="where the builds go")
    ap.add_argument("--name", default="finn", help="results name (bench/results/NAME.json)")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))
    try:
        env = finn_env.require()
        why = env.cppsim_unavailable()
        if why:
            raise finn_env.FinnEnvError(why)
    except finn_env.FinnEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unknown = set(args.only or []) - {p[0] for p in PLANS}
    if unknown:
        print(f"error: no plan named {sorted(unknown)}; the plans: "
              f"{', '.join(p[0] for p in PLANS)}", file=sys.stderr)
        return 2
    previous = ROOT / "bench" / "results" / f"{args.name}.json"
    kept = {}
    if args.only and previous.is_file():
        kept = {p["plan"]: p for p in json.loads(previous.read_text()).get("plans", [])}
    results = []
    todo = [p for p in PLANS if not args.only or p[0] in args.only]
    for label, name, spec, fps, catalogue in PLANS:
        if args.only and label not in args.only:
            if label in kept:
                results.append(kept[label])
            continue
        results.append(run_plan(label, name, spec, fps, catalogue, Path(args.work),
                                args.frames, args.jobs, console))
        todo = todo[1:]
        if todo:  # each plan's rows are kept as it ends: an interrupted run loses none
            save(args.name, {"plans": results, "frames": args.frames, "finn_env":
                             str(env.finn_root), "hls_path": str(env.hls_path),
                             "not_run_yet": [p[0] for p in todo]})
    table = Table(title="FINN v0.10.1 on finnchain's plans: front-end, driver, C++ simulation")
    for col in ("plan", "stage", "input", "accepted", "fps plan/FINN", "LUT plan/FINN",
                "RAMB18 plan/FINN", "fits", "cycles equal", "driver = wire",
                "cppsim = emulator (distinct in/out; compile+simulate)"):
        table.add_column(col, justify="right")
    for res in results:
        if not res["planned"]:
            table.add_row(res["plan"], "-", "-", "not planned", *["-"] * 6, res["why"][:40])
            continue
        for s in res["stages"]:
            shape = "x".join(map(str, s["input"]))
            if "plan" not in s:
                table.add_row(res["plan"], str(s["stage"]), shape, "no", *["-"] * 6,
                              "; ".join(s["problems"])[:60])
                continue
            pair = [f"{s['plan'][k]:,.0f} / {s['finn'][k]:,.0f}" for k in ("lut", "bram18")]
            table.add_row(res["plan"], str(s["stage"]), shape,
                          "yes" if s["accepted"] else "NO",
                          f"{s['plan_fps']:,.1f} / {s['finn_fps']:,.1f}", *pair,
                          "yes" if s["fits"] else "NO", f"{s['cycles_equal']}/{s['layers']}",
                          "yes" if s["driver_equal"] else "NO", _cppsim_cell(s["cppsim"]))
    console.print(table)
    path = save(args.name, {"plans": results, "frames": args.frames,
                            "finn_env": str(env.finn_root), "hls_path": str(env.hls_path)})
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
