#!/usr/bin/env python3
"""Sharing a chain: a client beside one that floods it, and beside one that never reads.

Three pass-through stages paced at RATE frames/s (so the chain, not this machine's two cores,
binds), 784-byte frames. Client B is ``Chain`` with its default window (16 frames). In turn,
in one run, each for SECONDS, alternating rounds:
- B alone;
- B beside A, a client that floods and reads (``Chain`` with a window of 256);
- B beside N, a bare ZeroMQ client that sends frames as fast as the first stage takes them and
  never reads an answer;
- B alone right after N has left (what N left queued at the first stage).
Each against two first stages: as built (each client at most ``client_window`` frames in the
chain while others share it, its turn at the first stage), and with the window off (turns
only: ``client_window`` 10^6). Every client runs in a process of its own.

Prints a table and writes bench/results/fairness.json: B's frames/s and share of the chain
beside A (its fair share is half), and what N costs B (goals: at least 45 %, under 5 %).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save
from finnchain.ops.local import LocalChain
from finnchain.runtime.fair import MAX_WAIT_S
from finnchain.runtime.stage import StageConfig
from transport import pass_through_build

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 1500.0  # frames/s each paced stage is held to
FRAME = 784
WINDOWS = {f"as built (client_window {StageConfig.client_window})": None,
           "window off (turns only)": 10**6}


def client(chain_file: str, window: int, seconds: float, delay: float, out) -> None:
    """A ``Chain`` client streaming for ``seconds`` after ``delay``: (frames delivered,
    failed, seconds, start, finish, when each delivered frame ended), times from the
    machine's monotonic clock (the same in every process)."""
    from finnchain.runtime.client import Chain

    time.sleep(delay)
    images = np.random.default_rng(window).integers(0, 256, (32, FRAME), dtype=np.uint8)
    with Chain(chain_file, window=window, timeout=30) as c:
        s = c.stream(images)
        s.send(seconds=seconds)
        r = s.finish()
    out.put((len(r.delivered), len(r.failed), r.seconds, r.started, r.finished,
             [r.ended[s] for s, _ in r.delivered]))


def non_reader(chain_file: str, seconds: float, out) -> None:
    """Frames as fast as the first stage takes them, answers never read."""
    import zmq

    from finnchain.runtime import protocol as P
    from finnchain.runtime.chainfile import ChainFile

    spec = ChainFile.read(chain_file)
    ctx = zmq.Context()
    plan = P.plan_id(spec.plan_hash)
    s, r = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for sock, end in ((s, spec.first), (r, spec.last)):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, b"nonreader")
        sock.connect(end)
    # says HELLO where results are collected, then never reads an answer
    r.send_multipart([P.Header(P.HELLO, P.CLIENT, plan, 0, 0, 0).pack(), b""])
    frame = bytes(FRAME)
    sent, seq, end = 0, 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s.send_multipart([P.Header(P.DATA, P.CLIENT, plan, seq, 1, FRAME).pack(), frame],
                             flags=zmq.NOBLOCK)
            sent += 1
            seq += 1
        except zmq.Again:
            time.sleep(0.0005)
    s.close()
    r.close()
    ctx.term()
    out.put(sent)


def scenario(chain_file: Path, other: str | None, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    out_b, out_o = ctx.Queue(), ctx.Queue()
    procs = []
    lead = 1.0 if other else 0.0  # the other client is flooding before B starts
    if other == "flood":
        procs.append(ctx.Process(target=client, args=(str(chain_file), 256, seconds + 2 * lead,
                                                      0.0, out_o)))
    elif other == "non-reader":
        procs.append(ctx.Process(target=non_reader, args=(str(chain_file), seconds + 2 * lead,
                                                          out_o)))
    procs.append(ctx.Process(target=client, args=(str(chain_file), 16, seconds, lead, out_b)))
    for p in procs:
        p.start()
    b = out_b.get(timeout=seconds + 120)
    o = out_o.get(timeout=seconds + 120) if other else None
    for p in procs:
        p.join(30)
    row = {"b_frames_per_s": b[0] / b[2], "b_failed": b[1]}
    if other == "flood":  # A's frames delivered while B ran
        row["a_frames_per_s"] = sum(1 for t in o[5] if b[3] <= t <= b[4]) / b[2]
        row["a_failed"] = o[1]
    if other == "non-reader":
        row["n_sent"] = o
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    console = Console(width=max(Console().width, 120))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build = pass_through_build(work / "pt", FRAME, 3, fps=RATE)
        for label, window in WINDOWS.items():
            runs: dict[str, list[dict]] = {"alone": [], "flood": [], "non-reader": [],
                                           "after-non-reader": []}
            with LocalChain(build, work / f"run{window}", "pass-through-paced",
                            options={"client_window": window} if window else None) as lc:
                for _ in range(args.rounds):
                    for name in runs:
                        runs[name].append(scenario(
                            lc.file, name if name in ("flood", "non-reader") else None,
                            args.seconds))
                    time.sleep(MAX_WAIT_S + 1)  # what the non-reader left has expired

                metrics = lc.metrics(0)
            alone = statistics.median(r["b_frames_per_s"] for r in runs["alone"])
            flood_b = statistics.median(r["b_frames_per_s"] for r in runs["flood"])
            flood_a = statistics.median(r["a_frames_per_s"] for r in runs["flood"])
            nonread = statistics.median(r["b_frames_per_s"] for r in runs["non-reader"])
            after = statistics.median(r["b_frames_per_s"] for r in runs["after-non-reader"])
            refused = sum(float(line.split()[-1]) for line in metrics.splitlines()
                          if line.startswith('finnchain_errors_total{kind="queue-full"}'))
            rows.append({
                "first_stage": label, "client_window": window or StageConfig.client_window,
                "b_alone_frames_per_s": round(alone, 1),
                "b_beside_flooder_frames_per_s": round(flood_b, 1),
                "flooder_frames_per_s": round(flood_a, 1),
                "b_share_beside_flooder": round(flood_b / (flood_a + flood_b), 3),
                "b_beside_non_reader_frames_per_s": round(nonread, 1),
                "non_reader_cost": round(1 - nonread / alone, 3),
                "b_right_after_non_reader_left_frames_per_s": round(after, 1),
                "b_failed": sum(r["b_failed"] for v in runs.values() for r in v),
                "flooder_refused_at_first_stage": int(refused),
                "runs": runs})
    table = Table(title=f"client B (window 16) sharing three stages paced at {RATE:g} frames/s, "
                        f"{FRAME}-byte frames; medians of {args.rounds} rounds of "
                        f"{args.seconds:g} s")
    for col in ("first stage", "B alone", "B beside flooder", "flooder", "B's share",
                "B beside non-reader", "non-reader's cost", "B after it left", "B failed"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["first_stage"], f"{r['b_alone_frames_per_s']:,.0f}",
                      f"{r['b_beside_flooder_frames_per_s']:,.0f}",
                      f"{r['flooder_frames_per_s']:,.0f}", f"{r['b_share_beside_flooder']:.1%}",
                      f"{r['b_beside_non_reader_frames_per_s']:,.0f}",
                      f"{r['non_reader_cost']:.1%}",
                      f"{r['b_right_after_non_reader_left_frames_per_s']:,.0f}", str(r["b_failed"]))
    console.print(table)
    built = rows[0]
    save("fairness", {"rate": RATE, "frame_bytes": FRAME, "goal_share": 0.45,
                      "goal_non_reader_cost": 0.05,
                      "meets_share": built["b_share_beside_flooder"] >= 0.45,
                      "meets_non_reader": built["non_reader_cost"] < 0.05, "results": rows},
         RESULTS)
    console.print(f"wrote {RESULTS / 'fairness.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
