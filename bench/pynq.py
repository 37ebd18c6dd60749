#!/usr/bin/env python3
"""What the board side costs with FINN's driver and the pynq library in the path.

On a PYNQ v3.0 image's Python (``.venv-board``: Python 3.10, numpy 1.21, pynq 3.0.1, the
emulated PL's hook), for each stage of the digits demo built as emulated boards load it
(``finnchain build --target emulate``: FINN's own driver, the emulated bitstream), in one run
and alternating, per frame and in CPU time of the process:

- a bare copy of the same bytes in and out (two ``np.copyto`` into preallocated buffers);
- pynq's path, the fabric's compute left out: the copy into the input DMA buffer and its cache
  flush, the DMA register writes, the polling of the output DMA's status, the cache invalidate
  and the copy out (FINN's ``copy_input_data_to_device``, ``execute_on_buffers``,
  ``wait_until_finished``, ``copy_output_data_from_device``), with the emulated PL's own
  compute time subtracted;
- the whole ``FinnAccelerator.run`` and, beside it, ``EmulatedAccelerator.run`` (the fabric
  without pynq, what the local chain runs);

and the resident memory of a process that has loaded the stage each way. Prints a table and
writes bench/results/pynq.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save

ROOT = Path(__file__).resolve().parents[1]
BOARD_PYTHON = ROOT / ".venv-board" / "bin" / "python"

MEASURE = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from finnchain.runtime.accel import EmulatedAccelerator, load_accelerator

stage_dir, frames, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
kind = sys.argv[4]
stage = json.loads((stage_dir / "stage.json").read_text())


def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


if kind == "emulate":
    acc = EmulatedAccelerator.load(stage_dir / stage["accelerator"]["model"], stage)
    x = bytes(acc.in_bytes)
    for _ in range(20):
        acc.run(x, 1)
    t = time.process_time()
    for _ in range(frames):
        acc.run(x, 1)
    print(json.dumps({"emulate_us": (time.process_time() - t) / frames * 1e6,
                      "rss_mib": rss_mib()}))
    sys.exit(0)

import pynq  # noqa: E402  (only here: the emulated accelerator's process goes without it)

acc = load_accelerator(stage_dir)[0]
ov, dev = acc.overlay, pynq.Device.active_device
fabric = dev.fabric
spent = [0.0]
real_run = fabric.run


def timed_run(payload, n):  # the PL's own compute, to take out of pynq's path
    t0 = time.process_time()
    try:
        return real_run(payload, n)
    finally:
        spent[0] += time.process_time() - t0


fabric.run = timed_run
x = np.zeros(ov.ishape_packed(0), np.uint8)
obuf = np.empty(ov.oshape_packed(0), np.uint8)
bare_in, bare_out = np.empty_like(x), np.empty_like(obuf)
out = {"bare_us": [], "path_us": [], "finn_us": [], "parts_us": {k: [] for k in (
    "copy in + flush", "DMA registers", "status polling", "invalidate + copy out")}}
for _ in range(20):
    acc.run(x.tobytes(), 1)
for _ in range(rounds):
    t = time.process_time()
    for _ in range(frames):
        np.copyto(bare_in, x)
        np.copyto(bare_out, obuf)
    out["bare_us"].append((time.process_time() - t) / frames * 1e6)
    parts = dict.fromkeys(out["parts_us"], 0.0)
    spent[0] = 0.0
    t = time.process_time()
    for _ in range(frames):
        t0 = time.process_time()
        ov.copy_input_data_to_device(x)
        t1 = time.process_time()
        before = spent[0]
        ov.execute_on_buffers(asynch=True)
        t2 = time.process_time()
        ov.wait_until_finished()
        t3 = time.process_time()
        ov.copy_output_data_from_device(obuf)
        t4 = time.process_time()
        parts["copy in + flush"] += t1 - t0
        parts["DMA registers"] += t2 - t1 - (spent[0] - before)
        parts["status polling"] += t3 - t2
        parts["invalidate + copy out"] += t4 - t3
    total = time.process_time() - t - spent[0]
    out["path_us"].append(total / frames * 1e6)
    for k, v in parts.items():
        out["parts_us"][k].append(v / frames * 1e6)
    t = time.process_time()
    for _ in range(frames):
        acc.run(x.tobytes(), 1)
    out["finn_us"].append((time.process_time() - t) / frames * 1e6)
out["rss_mib"] = rss_mib()
out["in_bytes"], out["out_bytes"] = int(acc.in_bytes), int(acc.out_bytes)
print(json.dumps(out))
"""


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2]


def measure(stage_dir: Path, frames: int, rounds: int) -> dict:
    res = {}
    for kind in ("finn", "emulate"):
        r = subprocess.run([str(BOARD_PYTHON), "-c", MEASURE, str(stage_dir), str(frames),
                            str(rounds), kind], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{stage_dir}: {r.stderr[-2000:]}")
        res[kind] = json.loads(r.stdout.strip().splitlines()[-1])
    f, e = res["finn"], res["emulate"]
    return {"stage": stage_dir.name, "in_bytes": f["in_bytes"], "out_bytes": f["out_bytes"],
            "bare_copy_us": round(_median(f["bare_us"]), 2),
            "pynq_path_us": round(_median(f["path_us"]), 2),
            "path_over_copy": round(_median(f["path_us"]) / _median(f["bare_us"]), 1),
            "parts_us": {k: round(_median(v), 2) for k, v in f["parts_us"].items()},
            "finn_run_us": round(_median(f["finn_us"]), 1),
            "emulate_run_us": round(e["emulate_us"], 1),
            "rss_mib_finn": round(f["rss_mib"], 1), "rss_mib_emulate": round(e["rss_mib"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500, help="frames per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (median kept)")
    ap.add_argument("--build", help="an emulated-overlay build to measure (default: the "
                    "digits demo, built here)")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 140))
    if not BOARD_PYTHON.exists():
        print(f"error: {BOARD_PYTHON} is missing: `make board` makes it", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(args.build) if args.build else Path(tmp) / "build"
        if not args.build:
            from finnchain.boards.catalogue import Catalogue
            from finnchain.finn.command import build as build_command
            from finnchain.models.zoo import resolve_model
            from finnchain.plan.make import make_plan, write_plan

            demo = ROOT / "src" / "finnchain" / "boards" / "demo.yaml"
            plan, _, models = make_plan(resolve_model("digits-cnv"),
                                        Catalogue(demo).chain("demo-small:3"), "digits-cnv", "x")
            write_plan(plan, models, Path(tmp) / "plan")
            if build_command(Path(tmp) / "plan", out=build) != 0:
                return 1
        rows = [measure(d, args.frames, args.rounds) for d in sorted(build.glob("stage[0-9]*"))]
    table = Table(title="the board side per frame (CPU µs, PYNQ v3.0's Python, one run)")
    for col in ("stage", "bytes in/out", "bare copy", "pynq's path", "ratio",
                "copy in+flush / registers / polling / invalidate+out", "FinnAccelerator.run",
                "EmulatedAccelerator.run", "RSS MiB finn / emulate"):
        table.add_column(col, justify="right")
    for r in rows:
        parts = " / ".join(f"{v:.1f}" for v in r["parts_us"].values())
        table.add_row(r["stage"], f"{r['in_bytes']}/{r['out_bytes']}", f"{r['bare_copy_us']:.2f}",
                      f"{r['pynq_path_us']:.1f}", f"{r['path_over_copy']:.0f}x", parts,
                      f"{r['finn_run_us']:.0f}", f"{r['emulate_run_us']:.0f}",
                      f"{r['rss_mib_finn']:.0f} / {r['rss_mib_emulate']:.0f}")
    console.print(table)
    path = save("pynq", {"stages": rows, "frames": args.frames, "rounds": args.rounds,
                         "python": "PYNQ v3.0 image's (.venv-board)"})
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
