#!/usr/bin/env python3
"""The chain's software cost against bare pyzmq, and a small network end to end.

1. Six stage daemons with pass-through accelerators, for the payload sizes that cross
   MobileNetV1's links, beside six bare pyzmq PULL->PUSH relay processes moving the same bytes
   with the same window of frames in flight, in the same run, alternating. Measured: frames/s
   and the CPU time of the six hop processes per frame (from /proc), their ratio, and the share
   of one core a hop would use at the planned MobileNetV1 rate.
2. digits-cnv planned onto three small boards, built for emulation, run as a chain of stage
   daemons: images/s, bit-exact against the whole model.
Prints tables and writes bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq
from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save
from finnchain.finn.manifest import SCHEMA, Manifest, StageEntry
from finnchain.ops.command import stream
from finnchain.ops.local import LocalChain, free_base
from finnchain.runtime import protocol as P
from finnchain.runtime.client import Chain

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
HOPS = 6
WINDOW = 16
PLANNED_FPS = 249.1  # MobileNetV1 on six Zedboards (bench/planner.py)
# bytes per frame: the uint8 image, then activation cuts of MobileNetV1 (UINT4, packed), with
# frames enough that each run's CPU time spans hundreds of clock ticks
PAYLOADS = {150_528: 1500, 200_704: 1200, 50_176: 3000, 25_088: 4000, 512: 8000}
TICK = os.sysconf("SC_CLK_TCK")

RELAY = """
import sys, zmq
ctx = zmq.Context()
pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
for s in (pull, push):
    s.setsockopt(zmq.SNDHWM, 8); s.setsockopt(zmq.RCVHWM, 8); s.setsockopt(zmq.LINGER, 0)
pull.bind(sys.argv[1]); push.connect(sys.argv[2])
print("ready", flush=True)
while True:
    push.send_multipart(pull.recv_multipart(copy=False), copy=False)
"""


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def pass_through_build(folder: Path, payload: int, hops: int = HOPS,
                       result_bytes: int | None = None, fps: float | None = None) -> Path:
    """A build folder of ``hops`` pass-through stages moving ``payload`` bytes a frame; with
    ``result_bytes``, the last stage answers with that many (zero) bytes, as a classifier's
    top-k (FINN's LabelSelect) does; with ``fps``, each stage's cycles are planned for that
    rate (the ``pass-through-paced`` accelerator holds it)."""
    plan_hash = os.urandom(32).hex()
    tensor = {"name": "x", "shape": [1, payload], "datatype": "UINT8",
              "bytes_per_frame": payload, "scale": None, "zero_point": None}
    entries = []
    for k in range(hops):
        d = folder / f"stage{k}"
        d.mkdir(parents=True)
        out = result_bytes if result_bytes is not None and k == hops - 1 else payload
        (d / "stage.json").write_text(json.dumps({
            "schema": "finnchain.stage/1", "plan_hash": plan_hash, "index": k, "stages": hops,
            "board": "none", "clock_mhz": 100, "cycles": round(100e6 / fps) if fps else 1,
            "predicted_fps": fps or 0,
            "input": tensor,  # the same bytes out, read as INT32 values by the client
            "output": {**tensor, "shape": [1, out // 4], "datatype": "INT32",
                       "bytes_per_frame": out},
            "accelerator": {"kind": "pass-through"}, "inputs_sha256": ""}))
        entries.append(StageEntry(k, "none", d.name, {"kind": "pass-through"}, "", {}, {}))
    Manifest(SCHEMA, plan_hash, {"name": "pass-through"}, "emulate", "none", entries).write(
        folder / "manifest.json")
    return folder


def drive(send: zmq.Socket, recv: zmq.Socket, message: list, n: int) -> float:
    """The same lean source and sink for both sides: ``n`` messages, WINDOW in flight."""
    sent = got = 0
    t = time.perf_counter()
    while got < n:
        while sent < n and sent - got < WINDOW:
            send.send_multipart(message, copy=len(message[-1]) < 65536)
            sent += 1
        recv.recv_multipart(copy=False)
        got += 1
    return time.perf_counter() - t


def run_chain(payload: int, frames: int, workdir: Path) -> dict:
    """Six stage daemons, driven like the bare relays (the stages' cost, not the client's);
    then the Python client (``Chain``) on the same chain, for its own frames/s."""
    build = pass_through_build(workdir / f"build{payload}", payload)
    with LocalChain(build, workdir / f"run{payload}") as lc, Chain(lc.file, window=WINDOW) as c:
        frame = np.random.default_rng(0).integers(0, 256, payload, dtype=np.uint8)
        header = P.Header.make(P.DATA, P.CLIENT, c.plan, 0, 1, payload)
        drive(c.send, c.recv, [header, frame], min(frames, 20))  # warm up
        cpu0 = cpu_seconds(lc.pids())
        seconds = drive(c.send, c.recv, [header, frame], frames)
        cpu = cpu_seconds(lc.pids()) - cpu0
        client = stream(c, min(frames, 2000))
    return {"frames_per_s": frames / seconds, "cpu_s_per_frame_per_hop": cpu / frames / HOPS,
            "client_frames_per_s": client["frames_per_s"]}


def run_bare(payload: int, frames: int) -> dict:
    base = free_base(HOPS + 1)
    addrs = [f"tcp://127.0.0.1:{base + k}" for k in range(HOPS + 1)]
    procs = [subprocess.Popen([sys.executable, "-c", RELAY, addrs[k], addrs[k + 1]],
                              stdout=subprocess.PIPE, text=True) for k in range(HOPS)]
    ctx = zmq.Context.instance()
    src, sink = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for s in (src, sink):
        s.setsockopt(zmq.SNDHWM, 8)
        s.setsockopt(zmq.RCVHWM, 8)
        s.setsockopt(zmq.LINGER, 0)
    sink.bind(addrs[-1])
    src.connect(addrs[0])
    try:
        for p in procs:
            p.stdout.readline()
        frame = np.random.default_rng(0).integers(0, 256, payload, dtype=np.uint8)
        message = [b"client12", bytes(40), frame]
        drive(src, sink, message, min(frames, 20))
        pids = [p.pid for p in procs]
        cpu0 = cpu_seconds(pids)
        seconds = drive(src, sink, message, frames)
        cpu = cpu_seconds(pids) - cpu0
    finally:
        for p in procs:
            p.kill()
            p.wait()
        src.close()
        sink.close()
    return {"frames_per_s": frames / seconds, "cpu_s_per_frame_per_hop": cpu / frames / HOPS}


def end_to_end(workdir: Path, frames: int) -> dict:
    from finnchain.boards.catalogue import Catalogue
    from finnchain.fabric.executor import Executor
    from finnchain.models.digits_data import dataset
    from finnchain.models.zoo import resolve_model
    from finnchain.plan.make import make_plan, write_plan

    catalogue = workdir / "small.yml"
    catalogue.write_text("boards:\n  small:\n    title: a small board\n    part: xc7z020clg400-1\n"
                         "    family: xc7z020\n    clock_mhz: 100\n    ethernet_mbps: 1000\n"
                         "    power_w: 1\n    arm: {frame_us: 10, byte_ns: 1}\n"
                         "    limits: {lut: 0.16, bram18: 0.1, dsp: 0.02}\n"
                         "    shell: {lut: 300, bram18: 0}\n")
    model = resolve_model("digits-cnv")
    plan, _, models = make_plan(model, Catalogue(catalogue).chain("small:3"), "digits-cnv", "x")
    write_plan(plan, models, workdir / "digits-plan")
    subprocess.run([sys.executable, str(ROOT / "build" / "build.py"), str(workdir / "digits-plan"),
                    "--out", str(workdir / "digits-build")], check=True, capture_output=True)
    _, _, x, _ = dataset(0)
    x = x.astype(np.uint8)
    images = np.concatenate([x] * (frames // len(x) + 1))[:frames]
    with LocalChain(workdir / "digits-build", workdir / "digits-run") as lc, \
            Chain(lc.file, window=WINDOW) as c:
        c.infer(images[:50])
        t = time.perf_counter()
        got = c.infer(images)
        seconds = time.perf_counter() - t
    exact = bool(np.array_equal(got, Executor(model).run(images).astype(np.int32)))
    return {"model": "digits-cnv", "stages": len(plan.stages), "images": frames,
            "images_per_s": round(frames / seconds, 1), "bit_exact": exact}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="scale the frames per run")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 120))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for payload, frames in PAYLOADS.items():
            n = max(50, int(frames * args.scale))
            chain = run_chain(payload, n, work)
            bare = run_bare(payload, n)
            rows.append({
                "payload_bytes": payload, "frames": n,
                "chain_frames_per_s": round(chain["frames_per_s"], 1),
                "client_frames_per_s": round(chain["client_frames_per_s"], 1),
                "pyzmq_frames_per_s": round(bare["frames_per_s"], 1),
                "chain_cpu_us_per_frame_per_hop": round(chain["cpu_s_per_frame_per_hop"] * 1e6, 1),
                "pyzmq_cpu_us_per_frame_per_hop": round(bare["cpu_s_per_frame_per_hop"] * 1e6, 1),
                "overhead_ratio": round(chain["cpu_s_per_frame_per_hop"]
                                        / max(bare["cpu_s_per_frame_per_hop"], 1e-9), 2),
                "hop_core_share_at_planned_rate": round(
                    chain["cpu_s_per_frame_per_hop"] * PLANNED_FPS, 4),
            })
        e2e = end_to_end(work, 2000)
    table = Table(title=f"{HOPS} hops, window {WINDOW}: finnchain stages against bare pyzmq relays")
    for col in ("payload B", "chain f/s", "pyzmq f/s", "Chain client f/s", "chain CPU us/frame/hop",
                "pyzmq CPU us/frame/hop", "ratio", f"core share at {PLANNED_FPS} f/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['payload_bytes']:,}", f"{r['chain_frames_per_s']:,}",
                      f"{r['pyzmq_frames_per_s']:,}", f"{r['client_frames_per_s']:,}",
                      str(r["chain_cpu_us_per_frame_per_hop"]),
                      str(r["pyzmq_cpu_us_per_frame_per_hop"]), str(r["overhead_ratio"]),
                      f"{100 * r['hop_core_share_at_planned_rate']:.1f}%")
    console.print(table)
    console.print(f"end to end: {e2e['model']} over {e2e['stages']} emulated stages: "
                  f"{e2e['images_per_s']} images/s, bit-exact {e2e['bit_exact']}")
    worst = max(rows, key=lambda r: r["overhead_ratio"])
    result = {
        "chain_frames_per_s": worst["chain_frames_per_s"],
        "pyzmq_frames_per_s": worst["pyzmq_frames_per_s"],
        "overhead_ratio": worst["overhead_ratio"],
        "worst_payload_bytes": worst["payload_bytes"],
        "max_hop_core_share_at_planned_rate": max(r["hop_core_share_at_planned_rate"]
                                                  for r in rows),
        "results": rows,
        "end_to_end": e2e,
        "hops": HOPS, "window": WINDOW, "planned_fps": PLANNED_FPS,
    }
    out = save("transport", result)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
