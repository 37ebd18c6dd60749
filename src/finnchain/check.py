"""Split a model into stages, run the chain and the whole model, and compare bit for bit.

    finnchain check MODEL --stages N [--cuts I,J,...] [--inputs K] [--seed S]

MODEL is a QONNX file or a known model name (exported on first use). The chain of stages runs on
the emulated accelerator (``--engine emulate``, the default) or on qonnx's reference; the whole
model runs on the reference. Exits 0 only when every output is equal bit for bit, 1 when not,
2 on bad input. For every cut it prints the datatype, the bytes per frame on the wire and how many
distinct values crossed it (a degenerate cut with one or two values proves little).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from finnchain.graph.cuts import CutPoint, even_cuts
from finnchain.graph.model import input_name
from finnchain.graph.reference import run_reference
from finnchain.graph.split import resolve_cuts, split


@dataclass
class CutReport:
    tensor: str
    datatype: str
    shape: tuple[int, ...]
    bytes_per_frame: int
    distinct: int
    reference_differs: int = 0  # codes unlike the reference chain's (found on a mismatch)


@dataclass
class CheckResult:
    equal: bool
    stages: int
    cuts: list[CutReport] = field(default_factory=list)
    output_distinct: int = 0
    seconds_whole: float = 0.0
    seconds_chain: float = 0.0
    detail: str = ""


def runner(engine: str):
    if engine == "reference":
        return lambda m: (lambda x: run_reference(m, x))
    if engine == "emulate":
        from finnchain.fabric.executor import Executor

        return lambda m: Executor(m).run
    raise ValueError(f"unknown engine {engine!r} (emulate or reference)")


def check_split(
    model: ModelWrapper,
    cuts: list[int | str | CutPoint],
    x: np.ndarray,
    engine: str = "emulate",
    whole_engine: str = "reference",
) -> CheckResult:
    """Run ``x`` through the whole model and through its stages; compare the outputs."""
    points = resolve_cuts(model, cuts)
    stages = split(model, points)
    t0 = time.perf_counter()
    whole = runner(whole_engine)(model)(x)
    t1 = time.perf_counter()
    make = runner(engine)
    runs = [make(stage) for stage in stages]  # compiled once, for the chain and any search
    y = x
    reports = []
    for k, run in enumerate(runs):
        y = run(y)
        if k < len(points):
            c = points[k]
            reports.append(CutReport(c.tensor, c.datatype, c.shape, c.bytes_per_frame,
                                     int(np.unique(y).size)))
    t2 = time.perf_counter()
    equal = bool(np.array_equal(np.asarray(y), np.asarray(whole)))
    detail = ""
    if not equal:
        diff = np.asarray(y) != np.asarray(whole)
        frames = int(diff.reshape(len(diff), -1).any(axis=1).sum())
        detail = (f"{frames} of {len(diff)} frames differ ({int(diff.sum())} of {diff.size} "
                  "output values)")
        if whole_engine == "reference" and engine == "emulate":
            detail += _where_they_part(stages, runs, x, reports)
    return CheckResult(equal, len(stages), reports, int(np.unique(whole).size),
                       t1 - t0, t2 - t1, detail)


def _where_they_part(stages: list, runs: list, x: np.ndarray, reports: list) -> str:
    """Each stage on the emulator (``runs``) and on the reference, both fed the reference's
    codes: at which cuts they differ, and the cause when the scales are not powers of two."""
    ref_in = x
    for k, stage in enumerate(stages[:-1]):
        ours = np.asarray(runs[k](ref_in))
        # value / scale in float32 is the code give or take an ulp where the scale is not 2^k
        ref = np.round(np.asarray(run_reference(stage, ref_in.astype(np.float32))))
        reports[k].reference_differs = int((ours != ref).sum())
        ref_in = ref
    parts = [f"cut {k}: {r.reference_differs} codes" for k, r in enumerate(reports)
             if r.reference_differs]
    cause = inexact_scales(stages)
    text = f"; against the reference chain, {', '.join(parts) or 'no cut differs'}"
    if cause:
        text += (f". Cause: scales that are not powers of two ({cause}). qonnx's reference "
                 "rounds every product and sum in float32; the emulator computes the integer "
                 "function FINN builds (exact accumulators, thresholds on them). A value within "
                 "that rounding of a step comes out one code apart, and the difference travels "
                 "on. For such a model the emulator's reference is FINN's own execution "
                 "(finnchain build --target finn-estimate; bench/models.py)")
    return text


def inexact_scales(stages: list) -> str:
    """The quantizers whose scale is not a power of two, named (the first three) and counted."""
    from finnchain.graph.model import is_pow2

    names = []
    for stage in stages:
        for n in stage.graph.node:
            if n.op_type in ("Quant", "BipolarQuant", "Trunc"):
                scale = stage.get_initializer(n.input[1])
                if scale is not None and not is_pow2(scale) and n.name not in names:
                    names.append(n.name)
    if not names:
        return ""
    return f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}: {len(names)} quantizers"


def print_result(res: CheckResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{res.stages} stages")
    for col in ("cut", "tensor", "datatype", "shape", "bytes/frame", "distinct values"):
        table.add_column(col)
    for i, c in enumerate(res.cuts):
        table.add_row(str(i), c.tensor, c.datatype, "x".join(map(str, c.shape[1:])),
                      f"{c.bytes_per_frame:,}", str(c.distinct))
    console.print(table)
    verdict = "[green]bit-exact[/green]" if res.equal else f"[red]MISMATCH[/red]: {res.detail}"
    console.print(f"chain vs whole model: {verdict} (whole {res.seconds_whole:.2f} s, "
                  f"chain {res.seconds_chain:.2f} s, {res.output_distinct} distinct outputs)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="QONNX file or model name (mobilenet-v1, digits-cnv)")
    p.add_argument("--stages", type=int, default=2, help="number of stages (default 2)")
    p.add_argument("--cuts", default=None,
                   help="comma-separated cut indices (see 'finnchain cuts'); overrides --stages")
    p.add_argument("--inputs", type=int, default=4, help="seeded inputs to run (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    p.add_argument("--engine", choices=("emulate", "reference"), default="emulate",
                   help="what runs the stages (default: the emulated accelerator)")


def run(args: argparse.Namespace) -> int:
    from finnchain.models.zoo import resolve_model, sample_inputs

    try:
        model = resolve_model(args.model)
        if args.cuts:
            cuts: list = [int(c) for c in args.cuts.split(",") if c.strip()]
        else:
            cuts = even_cuts(model, args.stages)
        shape = tuple(model.get_tensor_shape(input_name(model)))
        x = sample_inputs(shape, args.inputs, args.seed)
        res = check_split(model, cuts, x, engine=args.engine)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_result(res)
    return 0 if res.equal else 1
