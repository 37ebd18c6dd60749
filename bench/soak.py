#!/usr/bin/env python3
"""Soak: the six-board paced MobileNetV1-W4A4 chain streaming for several minutes.

    .venv/bin/python bench/soak.py --minutes 5            # six stage daemons on this machine
    .venv/bin/python bench/soak.py --chain artifacts/deploy/chain.json   # a deployed chain

By default MobileNetV1 is planned onto six Zedboards, built for emulation and run as six stage
daemons (the same ones a board runs, real sockets, CURVE on), each paced to its FPGA's cycle
count. With ``--chain`` the chain already running at that file is soaked instead (e.g. the
emulated cluster after ``make demo-mobilenet``). Frames stream for ``--minutes``; every stage's
resident memory is read from its metrics endpoint after a warm-up and then every
``--every`` seconds. Prints the memory of each stage at the start and end and the frames
submitted, delivered, failed and lost; writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save
from finnchain.runtime.client import Chain, ChainError
from finnchain.runtime.metrics import scrape

MB = 2**20


def memory(chain: Chain) -> list[float]:
    """Each stage's resident memory in MiB (nan when it does not answer)."""
    return [scrape(s["host"], int(s["metrics"]), timeout=2).get(
        "process_resident_memory_bytes", float("nan")) / MB for s in chain.spec.stages]


def local_build(work: Path, console: Console) -> Path:
    """MobileNetV1-W4A4 planned onto six Zedboards and built for emulation, in ``work``."""
    from finnchain.finn.command import build
    from finnchain.plan.command import plan

    console.print("[bold]plan mobilenet-v1 onto zedboard:6[/]")
    if plan("mobilenet-v1", boards="zedboard:6", out=work / "plan", draw=False) != 0:
        raise SystemExit("planning failed")
    console.print("[bold]build the emulated overlays[/]")
    if build(work / "plan", target="emulate", out=work / "build") != 0:
        raise SystemExit("building failed")
    return work / "build"


def soak(chain: Chain, minutes: float, every: float, warmup: int, console: Console) -> dict:
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(16, *chain.image_shape), dtype=np.uint8)
    warm = chain.stream(images)  # allocations settle first
    warm.send(frames=warmup)
    warm.finish()
    start, samples = memory(chain), []
    last = time.monotonic()

    def sample(s) -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            last = time.monotonic()
            samples.append({"t_s": round(last - s.started, 1),
                            "rss_mb": [round(m, 1) for m in memory(chain)]})
            delivered = sum(1 for v in s.answers.values() if not isinstance(v, ChainError))
            console.print(f"{samples[-1]['t_s']:7.0f} s  {delivered:7d} delivered  rss MiB "
                          + " ".join(f"{m:6.1f}" for m in samples[-1]["rss_mb"]))

    stream = chain.stream(images)
    stream.send(seconds=minutes * 60, each=sample)
    r = stream.finish()
    end = memory(chain)
    return {"minutes": minutes, "seconds": round(r.seconds, 1), "frames_submitted": len(r.seqs),
            "frames_delivered": len(r.delivered), "frames_failed": len(r.failed),
            "frames_lost": r.lost, "frames_per_s": round(r.frames_per_s(), 2),
            "errors": [str(v) for _, v in r.failed[:10]],
            "rss_mb_start": [round(m, 1) for m in start], "rss_mb_end": [round(m, 1) for m in end],
            "rss_growth_mb": [round(b - a, 1) for a, b in zip(start, end)], "samples": samples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to stream (default 5)")
    ap.add_argument("--chain", type=Path, help="soak the chain running at this chain file "
                    "instead of starting six local stages")
    ap.add_argument("--every", type=float, default=30.0,
                    help="seconds between memory readings (default 30)")
    ap.add_argument("--warmup", type=int, default=32, help="frames before the first reading")
    ap.add_argument("--name", default="soak", help="bench/results/<name>.json (default soak)")
    args = ap.parse_args()
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    console = Console()
    with tempfile.TemporaryDirectory(prefix="finnchain-soak-") as tmp:
        if args.chain:
            with Chain(args.chain, window=8, timeout=30) as chain:
                result = soak(chain, args.minutes, args.every, args.warmup, console)
            result["chain"] = str(args.chain)
        else:
            from finnchain.ops.local import LocalChain

            build = local_build(Path(tmp), console)
            console.print("[bold]six paced stage daemons on this machine (CURVE links)[/]")
            with LocalChain(build, Path(tmp), accelerator="emulate-paced", curve=True) as lc, \
                    Chain(lc.file, window=8, timeout=30) as chain:
                result = soak(chain, args.minutes, args.every, args.warmup, console)
            result["chain"] = "six local stage daemons, emulate-paced, MobileNetV1-W4A4"
    table = Table(title=f"soak: {result['seconds']:.0f} s, {result['frames_per_s']} frames/s")
    for col in ("stage", "RSS start MiB", "RSS end MiB", "growth MiB"):
        table.add_column(col, justify="right")
    for k, (a, b, g) in enumerate(zip(result["rss_mb_start"], result["rss_mb_end"],
                                      result["rss_growth_mb"])):
        table.add_row(str(k), f"{a:.1f}", f"{b:.1f}", f"{g:+.1f}")
    console.print(table)
    console.print(f"frames: submitted {result['frames_submitted']}, delivered "
                  f"{result['frames_delivered']}, failed {result['frames_failed']}, "
                  f"lost {result['frames_lost']}")
    path = save(args.name, result)
    console.print(f"wrote {path}")
    return 0 if result["frames_lost"] == 0 and result["frames_failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
