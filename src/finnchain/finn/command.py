"""``finnchain build`` (and ``build/build.py``): from plan.json to one overlay per stage."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from itertools import groupby
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from finnchain.fabric.compile import CompileError
from finnchain.finn import env as finn_env
from finnchain.finn import vectors
from finnchain.finn.collect import (
    CollectError,
    collect_emulated,
    collect_finn,
    finn_estimates,
    planner_estimates,
    stage_json,
)
from finnchain.finn.compare import StageComparison, compare_stage
from finnchain.finn.docker import FinnSetupError, finn_script, run_build
from finnchain.finn.estimate import COMPARISON, collect_local, read_status, run_local
from finnchain.finn.folder import BuildInputError, stage_model_path, write_folder
from finnchain.finn.manifest import (
    SCHEMA,
    TARGETS,
    Manifest,
    ManifestError,
    StageEntry,
    file_hashes,
    verify,
)
from finnchain.finn.overlay import OverlayError, collect_emulated_overlay
from finnchain.finn.vectors import VectorSpec, chain_vectors, write_vectors
from finnchain.plan.schema import Plan, PlanFileError, StagePlan

LOCAL_TARGETS = ("finn-estimate", "finn-cppsim")  # FINN's own environment, no Vivado
GB_PER_FINN_BUILD = 16  # Vivado's appetite for an xc7z020 build, to bound --jobs by memory


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Turn a plan into one overlay per stage. --target finn writes a FINN build folder per "
        "stage and runs FINN's docker flow ($FINN_ROOT/run-docker.sh build_custom), several at "
        "once with --jobs; FINN then checks its C++ simulation and its stitched IP's RTL "
        "simulation against verification vectors finnchain writes into each folder (frames "
        "of the stage's input and the emulated fabric's outputs). Without Vivado, in FINN's own "
        "environment (`finnchain finn-env`; no docker): --target finn-estimate runs the very "
        "same folders through FINN's compiler front-end up to its estimate reports and FINN's "
        "PYNQ driver, and checks each stage against the plan (layers, folding, cycles, "
        "resources, the driver's bytes on the wire); --target finn-cppsim also compiles every "
        "HLS layer's C++ (finn-hlslib, g++) and runs FINN's C++ simulation of the stage on the "
        "verification vectors, naming the layer where a stage parts from them. --target "
        "emulate makes the overlay an emulated board loads: FINN's own driver (FINN's "
        "environment, no Vivado), the block design's .hwh as FINN's Zynq flow makes it, and in "
        "place of the bitstream the emulated PL's configuration and the stage's integer "
        "program (--fabric-only: the program alone, for the emulated accelerator without "
        "FINN's driver; no FINN needed). Stages whose inputs did not change are not "
        "rebuilt, and the manifest is written as each stage finishes, so an interrupted build "
        "resumes where it stopped. Writes OUT/stage<k>/ and OUT/manifest.json (files and "
        "SHA-256) and prints FINN's estimates beside the plan's. Exits 1 if a stage failed or "
        "FINN did not build what was planned (the other stages are kept), 2 on bad input or a "
        "missing FINN.")
    p.add_argument("plan", help="plan.json (or the folder holding it) written by `finnchain plan`")
    p.add_argument("--target", choices=TARGETS, default="emulate",
                   help="emulate (default, no FINN needed), finn-estimate (FINN's front-end "
                   "and driver in .venv-finn, no Vivado), finn-cppsim (finn-estimate and FINN's "
                   "C++ simulation: g++ and HLS headers) or finn (FINN + Vivado via Docker)")
    p.add_argument("--out", help="output folder (default artifacts/<model>/<cluster>)")
    p.add_argument("--jobs", type=int, help="stages built at once (default: for finn by "
                   f"memory, {GB_PER_FINN_BUILD} GB each; otherwise one per core)")
    p.add_argument("--frames", type=int, default=vectors.FRAMES,
                   help="verification frames per stage for finn and finn-cppsim (default "
                   f"{vectors.FRAMES})")
    p.add_argument("--fabric-only", action="store_true",
                   help="emulate: the stage's integer program alone, no FINN driver (boards "
                   "then run the emulated accelerator, not FINN's driver on pynq)")
    p.add_argument("--force", action="store_true", help="rebuild every stage")


def cluster_name(plan: Plan) -> str:
    """e.g. zedboardx6, or zedboardx4-pynq-z2x2 for a mixed chain."""
    kinds = [s.board["kind"] for s in plan.stages]
    return "-".join(f"{k}x{len(list(g))}" for k, g in groupby(kinds))


def default_jobs(stages: int) -> int:
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = GB_PER_FINN_BUILD
    return max(1, min(stages, int(mem_gb // GB_PER_FINN_BUILD), os.cpu_count() or 1))


def _emulate_hash(model: Path, folder_inputs: str = "") -> str:
    """An emulated stage's inputs: its model, and the FINN folder its driver comes from."""
    return hashlib.sha256(b"emulate\0" + model.read_bytes() + b"\0"
                          + folder_inputs.encode()).hexdigest()


def _up_to_date(old: Manifest | None, out: Path, index: int, inputs: str) -> StageEntry | None:
    entry = old.stage(index) if old else None
    if entry is None or entry.inputs_sha256 != inputs or verify(out, entry):
        return None
    return entry


def _finish(plan: Plan, stage: StagePlan, out: Path, accelerator: dict, inputs: str,
            seconds: float | None) -> StageEntry:
    dest = out / f"stage{stage.index}"
    (dest / "stage.json").write_text(
        json.dumps(stage_json(plan, stage, accelerator, inputs), indent=1) + "\n")
    return StageEntry(index=stage.index, board=stage.board["kind"], dir=dest.name,
                      accelerator=accelerator, inputs_sha256=inputs,
                      files=file_hashes(out, dest), predicted=planner_estimates(stage),
                      finn_estimate=finn_estimates(dest), build_seconds=seconds)


def _compare(console: Console, entries: list[StageEntry]) -> None:
    table = Table(title="planner prediction beside FINN's estimate (dataflow only, per stage)")
    for col in ("stage", "board", "cycles plan/FINN", "fps plan/FINN", "LUT plan/FINN",
                "RAMB18 plan/FINN", "DSP plan/FINN"):
        table.add_column(col, justify="right")
    for e in sorted(entries, key=lambda e: e.index):
        p, f = e.predicted, e.finn_estimate

        def pair(key, fmt="{:,.0f}", p=p, f=f):
            theirs = fmt.format(f[key]) if f else "-"
            return f"{fmt.format(p[key])} / {theirs}"

        table.add_row(str(e.index), e.board, pair("max_cycles"), pair("fps", "{:,.1f}"),
                      pair("lut"), pair("bram18"), pair("dsp"))
    console.print(table)
    if not any(e.finn_estimate for e in entries):
        console.print("no FINN estimates for emulated stages: build with --target "
                      "finn-estimate (or finn) to compare")
    else:
        console.print("FINN's estimates are for its layers alone; FIFOs, width converters, DMAs "
                      "and the shell come later in FINN's flow, and the plan counts them "
                      "(see finnchain.cost.ops)")


def print_acceptance(console: Console, comparisons: list[StageComparison]) -> None:
    """Per stage: accepted by FINN's front-end, fps and resources against the plan, fits."""
    table = Table(title="FINN v0.10.1's front-end on each stage (estimate reports)")
    for col in ("stage", "board", "accepted", "cycles plan/FINN", "fps plan/FINN",
                "LUT plan/FINN", "RAMB18 plan/FINN", "URAM plan/FINN", "DSP plan/FINN",
                "fits (FINN + shell)"):
        table.add_column(col, justify="right")
    for c in sorted(comparisons, key=lambda c: c.index):
        if not c.ran:
            table.add_row(str(c.index), c.board, "[red]no[/red]", *["-"] * 7)
            continue
        res = [f"{c.plan_total[k]:,.0f} / {c.finn_total[k]:,.0f}"
               for k in ("lut", "bram18", "uram", "dsp")]
        table.add_row(str(c.index), c.board, "yes" if c.accepted else "[red]no[/red]",
                      f"{c.plan_cycles:,} / {c.finn_cycles:,}",
                      f"{c.plan_fps:,.1f} / {c.finn_fps:,.1f}", *res,
                      "yes" if c.fits else f"[red]no: {'; '.join(c.over)}[/red]")
    console.print(table)
    for c in comparisons:
        for problem in c.problems:
            console.print(f"[red]stage {c.index}[/red]: {problem}", markup=True, highlight=False)
        wrong = [layer.name for layer in c.layers if layer.finn and not layer.cycles_equal]
        if wrong:
            console.print(f"stage {c.index}: cycles differ from FINN's at {', '.join(wrong)}")


def print_verification(console: Console, entries: list[StageEntry],
                       failed: dict[int, str]) -> None:
    """Per stage: FINN's C++ simulation against the verification vectors."""
    table = Table(title="FINN's C++ simulation of each stage against its verification vectors")
    for col in ("stage", "board", "frames equal", "distinct in / out", "HLS layers (C++)",
                "RTL layers (Verilator / python)", "build s", "simulate s"):
        table.add_column(col, justify="right")
    for e in sorted(entries, key=lambda e: e.index):
        v = (e.verification or {}).get("folded_hls_cppsim")
        if v is None:
            table.add_row(str(e.index), e.board, *["-"] * 6)
            continue
        table.add_row(str(e.index), e.board, f"{v['equal']} / {v['frames']}",
                      f"{v['distinct_in']} / {v['distinct_out']}", str(v["layers"]),
                      f"{v['rtl_layers']} / {v['python_layers']}",
                      f"{v['compile_seconds']:.0f}", f"{v['sim_seconds']:.0f}")
    for index in sorted(failed):
        table.add_row(str(index), "", "[red]failed[/red]", *["-"] * 5)
    console.print(table)


def run(args: argparse.Namespace) -> int:
    """``finnchain build`` (and ``build/build.py``)."""
    return build(Path(args.plan), target=args.target, out=Path(args.out) if args.out else None,
                 jobs=args.jobs, force=args.force, frames=args.frames,
                 fabric_only=args.fabric_only)


def build(plan_path: Path, target: str = "emulate", out: Path | None = None,
          jobs: int | None = None, force: bool = False, frames: int = vectors.FRAMES,
          fabric_only: bool = False) -> int:
    """Overlays for every stage of the plan at ``plan_path`` (plan.json or its folder) into
    ``out`` (default artifacts/<model>/<cluster>), with manifest.json; 0 when every stage
    built, 1 when one failed (the others are kept), 2 on bad input. ``fabric_only``
    (emulate): the integer program alone, without FINN's driver."""
    console = Console(width=max(Console().width, 120))
    env = script = None
    try:
        path = Path(plan_path)
        path = path / "plan.json" if path.is_dir() else path
        plan = Plan.read(path)
        models = {s.index: stage_model_path(path.parent, s) for s in plan.stages}
        if fabric_only and target != "emulate":
            raise BuildInputError("--fabric-only goes with --target emulate")
        if target == "finn":
            script = finn_script()
        elif target in LOCAL_TARGETS or (target == "emulate" and not fabric_only):
            env = finn_env.require(why="--target emulate takes FINN's own driver from it "
                                   "(--fabric-only: the emulated accelerator without it)"
                                   if target == "emulate" else None)
            why = env.cppsim_unavailable() if target == "finn-cppsim" else None
            if why:
                raise finn_env.FinnEnvError(f"FINN's C++ simulation cannot run: {why}")
    except (PlanFileError, BuildInputError, FinnSetupError, finn_env.FinnEnvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if jobs is not None and jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    if frames < 1:
        print("error: --frames must be at least 1", file=sys.stderr)
        return 2
    verify = VectorSpec(frames=frames) if target in ("finn", "finn-cppsim") else None
    out = out if out is not None else Path("artifacts") / plan.model["name"] / cluster_name(plan)
    if target == "finn-cppsim" and any(c in str(out.resolve()) for c in ": "):
        print(f"error: {out.resolve()}: FINN's C++ simulation builds its RTL layers with "
              "Verilator and make, and make cannot take a path holding ':' or a space; give "
              "--out a folder whose path has neither", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    old = None
    if (out / "manifest.json").is_file() and not force:
        try:
            old = Manifest.read(out / "manifest.json")
        except ManifestError as exc:
            console.print(f"ignoring the old manifest: {exc}")
        if old and (old.plan_hash != plan.plan_hash or old.target != target):
            old = None
    entries: dict[int, StageEntry] = {}
    failed: dict[int, str] = {}
    comparisons: dict[int, StageComparison] = {}
    queue = []
    for stage in plan.stages:
        if target == "emulate":
            folder_inputs = "" if fabric_only else write_folder(
                plan, path.parent, stage, out / "finn-build").inputs_sha256
            inputs = _emulate_hash(models[stage.index], folder_inputs)
        else:
            inputs = write_folder(plan, path.parent, stage, out / "finn-build",
                                  verify).inputs_sha256
        kept = _up_to_date(old, out, stage.index, inputs)
        if kept is not None:
            entries[stage.index] = kept
            console.print(f"stage {stage.index}: up to date ({inputs[:12]}), not rebuilt")
            if target in LOCAL_TARGETS:
                comparisons[stage.index] = compare_stage(stage, out / kept.dir)
        else:
            queue.append((stage, inputs))

    def write_manifest() -> None:
        Manifest(schema=SCHEMA, plan_hash=plan.plan_hash,
                 model={k: plan.model[k] for k in ("name", "sha256", "file")},
                 target=target, cluster=cluster_name(plan),
                 stages=[entries[k] for k in sorted(entries)],
                 predicted={"fps": plan.predicted_fps, "bottleneck": plan.bottleneck}
                 ).write(out / "manifest.json")

    write_manifest()  # the stages kept, before any is rebuilt: a stopped build resumes
    if verify is not None and queue:
        console.print(f"verification vectors: {frames} frames through the emulated fabric, "
                      f"stages 0 to {max(s.index for s, _ in queue)}")
        made = chain_vectors(plan, models, verify, upto=max(s.index for s, _ in queue))
        for stage, _ in queue:
            v = made[stage.index]
            write_vectors(out / "finn-build" / f"stage{stage.index}", v)
            if v.degenerate:
                console.print(f"[yellow]stage {stage.index}: its verification frames take "
                              f"{v.distinct_in} distinct values in and {v.distinct_out} out: "
                              "they check little[/yellow]")

    def build_one(stage: StagePlan, inputs: str) -> tuple[StageEntry | None, str | None]:
        dest = out / f"stage{stage.index}"
        shutil.rmtree(dest, ignore_errors=True)  # a stage folder holds what the build puts
        folder = out / "finn-build" / f"stage{stage.index}"
        if target == "emulate":
            if fabric_only:
                acc = collect_emulated(models[stage.index], dest)
                return _finish(plan, stage, out, acc, inputs, None), None
            collect_emulated(models[stage.index], dest / "fabric")
            outcome = run_local(env, folder, folder / "build.log", "estimate",
                                workers=max(1, (os.cpu_count() or 1) // jobs))
            if not outcome.ok:
                return None, outcome.describe() + f" (log: {outcome.log})"
            acc = collect_emulated_overlay(folder, dest, stage, plan.plan_hash)
            return _finish(plan, stage, out, acc, inputs, round(outcome.seconds, 1)), None
        if target in LOCAL_TARGETS:
            outcome = run_local(env, folder, folder / "build.log", target.split("-")[1],
                                workers=max(1, (os.cpu_count() or 1) // jobs))
        else:
            result = run_build(script, folder, folder / "build.log")
            # FINN's build_custom runs build.py under pdb: its exit code says nothing
            outcome = read_status(folder, result.log, result.seconds, result.returncode)
        if not outcome.ok:
            if target in LOCAL_TARGETS:
                comparisons[stage.index] = compare_stage(stage, None, outcome.describe())
            return None, outcome.describe() + f" (log: {outcome.log})"
        if target in LOCAL_TARGETS:
            collect_local(folder, dest)
            comparison = compare_stage(stage, dest)
            comparisons[stage.index] = comparison
            (dest / COMPARISON).write_text(
                json.dumps(comparison.to_dict(), indent=1) + "\n")
            acc = {"kind": target, "reports": "report", "driver": "driver"}
        else:
            acc = collect_finn(folder, dest)
        entry = _finish(plan, stage, out, acc, inputs, round(outcome.seconds, 1))
        entry.verification = vectors.results(dest / "report",
                                             folder / "output" / "verification_output")
        failing = [f"{step}: {v['equal']} of {v['frames']} frames equal"
                   for step, v in (entry.verification or {}).items() if v["equal"] < v["frames"]]
        if failing:
            return None, "FINN's verification parts from the vectors: " + "; ".join(failing)
        return entry, None

    cpu = os.cpu_count() or 1
    jobs = jobs or (default_jobs(len(queue)) if target == "finn" else
                    1 if fabric_only else cpu)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(jobs) as pool:
        tasks = {s.index: progress.add_task(f"stage {s.index} ({s.board['kind']}): building",
                                            total=1) for s, _ in queue}
        futures = {pool.submit(build_one, s, h): s for s, h in queue}
        for fut in as_completed(futures):
            stage = futures[fut]
            task = tasks[stage.index]
            try:
                entry, why = fut.result()
            except (CollectError, OverlayError, OSError) as exc:
                entry, why = None, str(exc)
            except CompileError as exc:  # the emulated fabric cannot take the stage's model
                entry, why = None, f"the emulated fabric cannot run it: {exc}"
            if entry is not None:
                entries[stage.index] = entry
                write_manifest()
                progress.update(task, completed=1,
                                description=f"stage {stage.index} ({stage.board['kind']}): done")
            else:
                failed[stage.index] = why
                progress.update(task, completed=1,
                                description=f"stage {stage.index}: [red]failed[/red]")
    write_manifest()
    if target in LOCAL_TARGETS:
        print_acceptance(console, list(comparisons.values()))
    else:
        _compare(console, list(entries.values()))
    if verify is not None:
        print_verification(console, list(entries.values()), failed)
    for index, why in sorted(failed.items()):
        print(f"error: stage {index} failed: {why}", file=sys.stderr)
    refused = sorted(k for k, c in comparisons.items() if c.ran and not c.accepted)
    for index in refused:
        print(f"error: stage {index}: FINN did not build what the plan costed: "
              f"{'; '.join(comparisons[index].problems)}", file=sys.stderr)
    console.print(f"wrote {out / 'manifest.json'}: {len(entries)} of {len(plan.stages)} stages "
                  f"built ({target})")
    return 1 if failed or refused else 0
