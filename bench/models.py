#!/usr/bin/env python3
"""The networks FINN users bring, end to end: export, cuts, plan, emulate, FINN's front-end.

For each of Brevitas' bnn_pynq examples (TFC, SFC, LFC, CNV at 1w1a, 1w2a, 2w2a, and
resnet18_4w4a) and its imagenet_classification quant_mobilenet_v1_4b, as ``finnchain export``
gives them (uint8 images in, the /255 and normalisation inside, a TopK out, random weights from
a seed, calibrated where untrained outputs would be one class: nothing is downloaded), it
records the time of each step and:
the legal cut points (and how many quantizers are not cuts), the plan onto Zedboards (stages,
predicted frames/s, what bounds it), the chain of emulated stages against qonnx's reference of
the whole model frame by frame (with the distinct codes at every cut), each stage against the
reference fed the same codes (codes that differ: none with power-of-two scales, a few with
learned ones, where the reference rounds in float32), and, with FINN's
environment (.venv-finn), every stage through FINN's front-end up to the estimate reports:
accepted as the plan costed it, and FINN's python-mode execution against the emulator.
Prints a table, writes bench/results/models.json. A model that stops at a step says why.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from finnchain.benchresult import RESULTS, save
from finnchain.boards.catalogue import Catalogue
from finnchain.check import inexact_scales
from finnchain.fabric.compile import CompileError
from finnchain.fabric.executor import Executor
from finnchain.finn import env as finn_env
from finnchain.finn.estimate import read_stage
from finnchain.finn.verify import check_stage
from finnchain.graph.cuts import examine
from finnchain.graph.model import load
from finnchain.graph.reference import run_reference
from finnchain.models import zoo
from finnchain.plan.make import make_plan, write_plan
from finnchain.plan.partition import PlanError
from finnchain.plan.schema import Plan

ROOT = Path(__file__).resolve().parents[1]
MODELS = [name for name, r in zoo.MODELS.items() if r.takes_weights]


def _timed(record: dict, step: str, fn):
    t = time.perf_counter()
    try:
        return fn()
    finally:
        record["seconds"][step] = round(time.perf_counter() - t, 2)


def run_model(name: str, boards: str, work: Path, frames: int, finn, finn_frames: int,
              exec_max: int, console: Console) -> dict:
    rec: dict = {"model": name, "seconds": {}, "stopped_at": None, "why": None}
    folder = work / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _timed(rec, "export", lambda: zoo.export(name, folder / "model.onnx", seed=1))
    model = load(path)
    cuts, rejected = _timed(rec, "cuts", lambda: examine(model))
    rec.update(cuts=len(cuts), not_cuts=len(rejected),
               cut_types=sorted({c.datatype for c in cuts}))
    if not cuts:
        reasons = sorted({r.reason.split(":")[0].split(" (")[0] for r in rejected})
        rec.update(stopped_at="cuts", why="; ".join(reasons)[:300])
        return rec
    try:
        plan, _, stage_models = _timed(rec, "plan", lambda: make_plan(
            model, Catalogue().chain(boards), name, str(path)))
    except PlanError as exc:
        rec.update(stopped_at="plan", why=str(exc)[:300])
        return rec
    plan_dir = folder / "plan"
    write_plan(plan, stage_models, plan_dir)
    b = plan.bottleneck
    rec.update(stages=len(plan.stages), predicted_fps=round(plan.predicted_fps, 1),
               bound_by=f"stage {b.get('stage')} {b.get('limit')}")
    images = zoo.sample_inputs(zoo.recipe(name).input_shape, frames, seed=2)
    try:
        want = _timed(rec, "reference", lambda: np.asarray(
            run_reference(model, images.astype(np.float32))))
        codes, distinct, ref_in, differ, total = images, [], images, 0, 0
        t = time.perf_counter()
        for k, s in enumerate(plan.stages):
            run = Executor(plan_dir / s.files["model"]).run
            codes = np.asarray(run(codes))
            if k < len(plan.stages) - 1:
                distinct.append(int(np.unique(codes).size))
            # the stage alone: emulator and reference fed the same (the reference's) codes
            ref = np.round(np.asarray(run_reference(load(plan_dir / s.files["model"]),
                                                    ref_in.astype(np.float32))))
            differ += int((np.asarray(run(ref_in)) != ref).sum())
            total += ref.size
            ref_in = ref
        rec["seconds"]["emulate"] = round(time.perf_counter() - t, 2)
    except CompileError as exc:
        rec.update(stopped_at="emulate", why=str(exc)[:300])
        return rec
    same = (codes.reshape(len(codes), -1) == want.reshape(len(want), -1)).all(axis=1)
    rec.update(bit_exact_frames=int(same.sum()), frames=len(same), distinct_at_cuts=distinct,
               distinct_outputs=int(np.unique(want).size), stage_codes_differ=differ,
               stage_codes=total, pow2_scales=not inexact_scales([model]))
    if finn is not None:
        rec["finn"] = run_finn(rec, plan_dir, images, finn, finn_frames, exec_max)
    console.print(f"{name}: done", highlight=False)
    return rec


def run_finn(rec: dict, plan_dir: Path, images: np.ndarray, finn, frames: int,
             exec_max: int) -> dict:
    """Every stage through FINN's front-end; FINN's execution of each against the emulator."""
    plan = Plan.read(plan_dir / "plan.json")
    out = plan_dir.parent / "finn-estimate"
    r = _timed(rec, "finn", lambda: subprocess.run(
        [sys.executable, "-m", "finnchain.cli", "build", str(plan_dir), "--target",
         "finn-estimate", "--out", str(out), "--jobs", "2"], cwd=ROOT, capture_output=True,
        text=True, check=False))
    stages, codes = [], images[:frames].astype(np.int64)
    t = time.perf_counter()
    for s in plan.stages:
        c, problems = read_stage(out, s.index, r.returncode)
        entry = {"stage": s.index, "accepted": bool(c and c["accepted"]), "problems": problems}
        if c and c["accepted"] and s.input.shape[-1] <= exec_max:
            check, codes = check_stage(finn, out / "finn-build" / f"stage{s.index}", s.index,
                                       plan_dir / s.files["model"], codes)
            entry["bit_exact"] = f"{check.equal_frames}/{check.frames}"
        else:
            codes = np.asarray(Executor(plan_dir / s.files["model"]).run(codes))
        stages.append(entry)
    rec["seconds"]["finn_execute"] = round(time.perf_counter() - t, 2)
    return {"accepted": sum(s["accepted"] for s in stages), "stages": stages,
            "exit": r.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default="zedboard:6", help="the chain to plan onto "
                    "(default zedboard:6; the planner uses as few as reach the best rate)")
    ap.add_argument("--frames", type=int, default=32, help="frames for the emulated check")
    ap.add_argument("--finn-frames", type=int, default=4,
                    help="frames FINN executes per stage (python mode is slow)")
    ap.add_argument("--exec-max", type=int, default=32,
                    help="FINN executes stages whose input is at most this wide (default 32; "
                    "a 224x224 stage takes minutes a frame in FINN's python mode)")
    ap.add_argument("--no-finn", action="store_true", help="skip FINN's front-end")
    ap.add_argument("--only", help="comma-separated model names (default: all); their rows "
                    "replace those of an earlier run with the same settings, the rest kept")
    ap.add_argument("--work", default="artifacts/bench-models", help="where the files go")
    ap.add_argument("--name", default="models", help="results name (bench/results/NAME.json)")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))
    finn = None
    if not args.no_finn:
        try:
            finn = finn_env.require()
        except finn_env.FinnEnvError as exc:
            console.print(f"FINN's front-end skipped: {exc}")
    names = args.only.split(",") if args.only else MODELS
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}",
              file=sys.stderr)
        return 2
    results = [run_model(n, args.boards, Path(args.work), args.frames, finn, args.finn_frames,
                         args.exec_max, console) for n in names]
    table = Table(title=f"Brevitas' examples on {args.boards} (random weights)")
    for col in ("model", "cuts", "stages", "planned fps", "bound by", "bit-exact frames",
                "stage codes unlike the reference", "distinct at cuts", "FINN accepts",
                "FINN = emulator", "seconds", "stopped"):
        table.add_column(col, justify="right")
    for r in results:
        f = r.get("finn")
        table.add_row(
            r["model"], f"{r['cuts']} ({'/'.join(r['cut_types'])})" if r["cuts"] else "0",
            str(r.get("stages", "-")), f"{r['predicted_fps']:,.1f}" if "predicted_fps" in r
            else "-", str(r.get("bound_by", "-")),
            f"{r['bit_exact_frames']}/{r['frames']}" if "frames" in r else "-",
            f"{r['stage_codes_differ']:,}/{r['stage_codes']:,}"
            + ("" if r["pow2_scales"] else " (learned scales)") if "frames" in r else "-",
            ",".join(map(str, r.get("distinct_at_cuts", []))) or "-",
            f"{f['accepted']}/{r['stages']}" if f else "-",
            ", ".join(s.get("bit_exact", "-") for s in f["stages"]) if f else "-",
            f"{sum(r['seconds'].values()):.1f}",
            f"{r['stopped_at']}: {r['why'][:70]}" if r["stopped_at"] else "")
    console.print(table)
    settings = {"boards": args.boards, "frames": args.frames,
                "finn_frames": args.finn_frames if finn else None, "exec_max": args.exec_max}
    for r in results:
        r["date"] = date.today().isoformat()
    previous = RESULTS / f"{args.name}.json"
    if args.only and previous.is_file():  # a partial run replaces its models, keeps the rest
        old = json.loads(previous.read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            mine = {r["model"]: r for r in results}
            kept = [mine.pop(m["model"], m) for m in old.get("models", [])]
            results = kept + list(mine.values())
        else:
            console.print(f"{previous} was run with other settings: it is replaced")
    path = save(args.name, {**settings, "models": results})
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
