#!/usr/bin/env python3
"""Emulated accelerator against qonnx's reference: whole MobileNetV1-W4A4, batch 1 and 8.

Both run in the same process, alternately, on the same seeded images, so that the ratio holds on a
shared, noisy machine. Prints a table and writes bench/results/executor.json: one row per batch
size under "results", and at the top level the worst row (lowest speedup) with the fields
model, batch, reference_images_per_s, finnchain_images_per_s, speedup, bit_exact.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from finnchain.fabric.executor import Executor
from finnchain.graph.model import with_batch
from finnchain.graph.reference import run_reference
from finnchain.models import zoo
from finnchain.models.zoo import resolve_model

OUT = Path(__file__).resolve().parent / "results" / "executor.json"


def measure(model, batch: int, rounds: int, ex: Executor) -> dict:
    x = zoo.sample_inputs((1, 3, 224, 224), batch, seed=batch)
    model = with_batch(model, batch)  # once, outside the timed runs: only execution is timed
    run_reference(model, x)  # warm both
    ex.run(x)
    t_ref = t_emu = 0.0
    n_ref = n_emu = 0
    exact = True
    for _ in range(rounds):
        t = time.perf_counter()
        ref = run_reference(model, x)
        t_ref += time.perf_counter() - t
        n_ref += batch
        t = time.perf_counter()
        reps = 5
        for _ in range(reps):
            out = ex.run(x)
        t_emu += time.perf_counter() - t
        n_emu += batch * reps
        exact &= bool(np.array_equal(out, ref))
    ref_ips, emu_ips = n_ref / t_ref, n_emu / t_emu
    return {
        "model": "mobilenet-v1",
        "batch": batch,
        "reference_images_per_s": round(ref_ips, 2),
        "finnchain_images_per_s": round(emu_ips, 2),
        "speedup": round(emu_ips / ref_ips, 1),
        "bit_exact": exact,
        "distinct_outputs": int(np.unique(out).size),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="alternations per batch size")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--out", default=str(OUT), help=f"JSON file (default {OUT})")
    args = p.parse_args()
    console = Console()
    model = resolve_model("mobilenet-v1")
    t = time.perf_counter()
    ex = Executor(model)
    compile_s = time.perf_counter() - t
    rows = []
    for b in (int(v) for v in args.batches.split(",")):
        with console.status(f"batch {b} ..."):
            rows.append(measure(model, b, args.rounds, ex))
    table = Table(title=f"MobileNetV1-W4A4, emulated accelerator vs qonnx reference ({date.today()})")
    for col in ("batch", "reference img/s", "finnchain img/s", "speedup", "bit-exact"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["batch"]), f"{r['reference_images_per_s']:.2f}",
                      f"{r['finnchain_images_per_s']:.1f}", f"{r['speedup']:.1f}x",
                      "yes" if r["bit_exact"] else "NO")
    console.print(table)
    console.print(f"compile time {compile_s:.1f} s; {ex.program.stats}")
    worst = min(rows, key=lambda r: r["speedup"])
    result = {
        **worst,
        "bit_exact": all(r["bit_exact"] for r in rows),
        "results": rows,
        "compile_seconds": round(compile_s, 2),
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}".strip(", "),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0 if result["bit_exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
