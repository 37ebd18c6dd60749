#!/usr/bin/env python3
"""A stage frozen under load and resumed, many times: does any stage die?

Three digits-cnv stage daemons on this machine with CURVE links, a client streaming frames
through them without pause; stage 1 is frozen (SIGSTOP) for ``--freeze`` seconds, resumed
(SIGCONT), and after ``--settle`` seconds every stage must still be alive and frames must flow
again. Repeated ``--runs`` times, once with the chain's liveness as it is (TCP keepalive and
TCP_USER_TIMEOUT) and once with ZMTP heartbeats (FINNCHAIN_LIVENESS=zmtp, as before), side by
side. With heartbeats, libzmq 4.3.5 aborts a stage now and then ("Assertion failed: !_io_error
(src/stream_engine_base.cpp:310)"): a heartbeat timeout on a connection whose input is stopped
by back-pressure. Prints a table, writes bench/results/freeze.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save

ROOT = Path(__file__).resolve().parents[1]


def build(work: Path) -> Path:
    from finnchain.cli import main as cli

    plan = work / "plan"
    out = work / "build"
    if not (out / "manifest.json").is_file():
        assert cli(["plan", "digits-cnv", "--boards", "demo-small:3", "--catalogue",
                    str(ROOT / "src/finnchain/boards/demo.yaml"), "--out", str(plan),
                    "--no-chart"]) == 0
        assert cli(["build", str(plan), "--target", "emulate", "--out", str(out)]) == 0
    return out


class Load(threading.Thread):
    """A client streaming frames until stopped; counts what comes back."""

    def __init__(self, chain_file: Path, images) -> None:
        super().__init__(daemon=True)
        self.chain_file, self.images = chain_file, images
        self.done = self.failed = 0
        self.halt = threading.Event()

    def run(self) -> None:
        from finnchain.runtime.client import Chain, ChainError

        with Chain(self.chain_file, window=32, timeout=60) as chain:
            seqs: list[int] = []
            i = 0
            while not self.halt.is_set():
                seqs += chain.submit(self.images[i % len(self.images)][None])
                i += 1
                while chain.done:
                    seq = min(chain.done)
                    value = chain.done.pop(seq)
                    self.failed += isinstance(value, ChainError)
                    self.done += not isinstance(value, ChainError)


def one_mode(mode: str, build_dir: Path, runs: int, freeze: float, settle: float,
             console: Console) -> dict:
    from finnchain.models.digits_data import dataset
    from finnchain.ops.local import LocalChain

    if mode == "zmtp":
        os.environ["FINNCHAIN_LIVENESS"] = "zmtp"
    else:
        os.environ.pop("FINNCHAIN_LIVENESS", None)
    images = dataset(0)[2]
    deaths, assertions, stalls, restarts = 0, 0, 0, 0
    seen: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, LocalChain(build_dir, Path(tmp), curve=True) as lc:
        load = Load(lc.file, images)
        load.start()
        time.sleep(2)
        for run in range(runs):
            victim = lc.procs[1]
            os.kill(victim.pid, signal.SIGSTOP)
            time.sleep(freeze)
            os.kill(victim.pid, signal.SIGCONT)
            before = load.done
            time.sleep(settle)
            dead = [k for k, p in enumerate(lc.procs) if p.poll() is not None]
            if dead:
                deaths += 1
                logs = "\n".join(lc.log_tail(k, 40) for k in dead)
                assertions += "Assertion failed" in logs
                seen += [line.strip() for line in logs.splitlines() if "Assertion" in line]
                console.print(f"{mode} run {run}: stage(s) {dead} died: "
                              f"{[lc.procs[k].returncode for k in dead]}; "
                              f"{'libzmq assertion' if 'Assertion failed' in logs else ''}")
                for k in dead:  # as the board's supervisor would, to go on
                    lc._launch(k)
                    restarts += 1
                time.sleep(settle)
            if load.done == before:
                stalls += 1
            console.print(f"{mode} run {run + 1}/{runs}: frames {load.done:,}, "
                          f"failed {load.failed}", highlight=False)
        load.halt.set()
        load.join(timeout=90)
    return {"mode": mode, "runs": runs, "freeze_s": freeze, "runs_with_a_dead_stage": deaths,
            "libzmq_assertions": assertions, "runs_without_progress": stalls,
            "frames": load.done, "failed_frames": load.failed,
            "assertion_lines": sorted(set(seen))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="freezes per mode (default 50)")
    ap.add_argument("--zmtp-runs", type=int, default=15,
                    help="freezes with ZMTP heartbeats, the old way (default 15; 0: skip)")
    ap.add_argument("--freeze", type=float, default=10.0, help="seconds frozen (default 10)")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds after resuming")
    ap.add_argument("--work", default="artifacts/bench-freeze")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 120))
    build_dir = build(Path(args.work))
    results = []
    if args.zmtp_runs:
        results.append(one_mode("zmtp", build_dir, args.zmtp_runs, args.freeze, args.settle,
                                console))
    results.append(one_mode("keepalive", build_dir, args.runs, args.freeze, args.settle,
                            console))
    table = Table(title=f"stage 1 frozen {args.freeze:g} s under load, then resumed")
    for col in ("liveness", "runs", "runs with a dead stage", "libzmq assertions",
                "runs without progress", "frames through", "failed frames"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row("ZMTP heartbeats (before)" if r["mode"] == "zmtp" else
                      "TCP keepalive + TCP_USER_TIMEOUT (now)", str(r["runs"]),
                      str(r["runs_with_a_dead_stage"]), str(r["libzmq_assertions"]),
                      str(r["runs_without_progress"]), f"{r['frames']:,}",
                      str(r["failed_frames"]))
    console.print(table)
    console.print(f"wrote {save('freeze', {'results': results, 'freeze_s': args.freeze})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
