#!/usr/bin/env python3
"""finnchain serve against the Python client, side by side on the same chain in one run.

Two chains of three stage daemons on this machine: digits-cnv on three small boards (the
emulated fabric, 64-byte frames) and three pass-through stages moving MobileNetV1's 150,528-byte
input frames. On each, alternating rounds of a few seconds: the Python client (``Chain``, a
window of 16 frames) straight to the chain, then Triton's own clients through ``finnchain
serve`` (the same window of 16 in the chain): gRPC, and HTTP with the binary tensor data
extension, each as CONCURRENCY threads sending requests of BATCH frames. Every answer through
the server is checked against the Python client's on the same frames. Prints a table and writes
bench/results/serve.json: frames/s per client (the median of the rounds) and each one's ratio to
the Python client's (the goal: at least 0.8).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from rich.console import Console
from rich.table import Table

from finnchain.benchresult import save
from finnchain.ops.local import LocalChain
from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.client import Chain
from transport import PLANNED_FPS, pass_through_build

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
WINDOW = 16
CONCURRENCY = 4
GOAL = 0.8


def digits_build(work: Path) -> Path:
    from finnchain.boards.catalogue import Catalogue
    from finnchain.models.zoo import resolve_model
    from finnchain.plan.make import make_plan, write_plan

    catalogue = work / "small.yml"
    catalogue.write_text("boards:\n  small:\n    title: a small board\n    part: xc7z020clg400-1\n"
                         "    family: xc7z020\n    clock_mhz: 100\n    ethernet_mbps: 1000\n"
                         "    power_w: 1\n    arm: {frame_us: 10, byte_ns: 1}\n"
                         "    limits: {lut: 0.16, bram18: 0.1, dsp: 0.02}\n"
                         "    shell: {lut: 300, bram18: 0}\n")
    plan, _, models = make_plan(resolve_model("digits-cnv"), Catalogue(catalogue).chain("small:3"),
                                "digits-cnv", "x")
    write_plan(plan, models, work / "digits-plan")
    subprocess.run([sys.executable, str(ROOT / "build" / "build.py"), str(work / "digits-plan"),
                    "--out", str(work / "digits-build")], check=True, capture_output=True)
    return work / "digits-build"


class Server:
    def __init__(self, chain_file: Path, max_frames: int) -> None:
        import socket

        socks = [socket.socket() for _ in range(2)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        self.http_port, self.grpc_port = (s.getsockname()[1] for s in socks)
        for s in socks:
            s.close()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "finnchain"), "serve", "--chain", str(chain_file),
             "--host", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port",
             str(self.grpc_port), "--window", str(WINDOW), "--max-frames", str(max_frames)],
            stdout=subprocess.PIPE, text=True)
        if "serving model" not in self.proc.stdout.readline():
            raise RuntimeError("finnchain serve did not start")
        c = httpclient.InferenceServerClient(f"127.0.0.1:{self.http_port}")
        deadline = time.monotonic() + 20
        while not c.is_server_ready():
            if time.monotonic() > deadline:
                raise RuntimeError("finnchain serve was not ready in 20 s")
            time.sleep(0.2)
        self.model = c.get_model_metadata(ChainFile.read(chain_file).model or "finnchain")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def python_client(chain_file: Path, images: np.ndarray, seconds: float) -> float:
    with Chain(chain_file, window=WINDOW) as c:
        s = c.stream(images)
        s.send(seconds=seconds)
        r = s.finish()
    if r.failed:
        raise RuntimeError(f"{len(r.failed)} frames failed")
    return len(r.answers) / r.seconds


def served(server: Server, transport: str, images: np.ndarray, batch: int, seconds: float,
           expected: np.ndarray) -> float:
    """CONCURRENCY threads sending requests of ``batch`` frames for ``seconds``."""
    meta = server.model
    name, inp, out = meta["name"], meta["inputs"][0]["name"], meta["outputs"][0]["name"]
    counts, errors = [0] * CONCURRENCY, []
    start = threading.Barrier(CONCURRENCY + 1)

    def worker(k: int) -> None:
        module = grpcclient if transport == "grpc" else httpclient
        client = module.InferenceServerClient(
            f"127.0.0.1:{server.grpc_port if transport == 'grpc' else server.http_port}")
        first = (k * batch) % (len(images) - batch + 1)
        x = images[first: first + batch]
        tensor = module.InferInput(inp, list(x.shape), "UINT8")
        tensor.set_data_from_numpy(x)
        outputs = [module.InferRequestedOutput(out)]
        start.wait()
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                got = client.infer(name, [tensor], outputs=outputs).as_numpy(out)
                if counts[k] == 0 and not np.array_equal(got, expected[first: first + batch]):
                    raise AssertionError(f"{transport}: answers differ from the Python client's")
                counts[k] += batch
        except Exception as exc:  # noqa: BLE001 -- reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONCURRENCY)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def run_case(name: str, build: Path, images: np.ndarray, batch: int, rounds: int,
             seconds: float, work: Path, accelerator: str | None = None) -> dict:
    with LocalChain(build, work / f"run-{build.name}", accelerator) as lc:
        with Chain(lc.file, window=WINDOW) as c:
            expected = c.infer(images)
        server = Server(lc.file, max_frames=batch)
        try:
            rates: dict[str, list[float]] = {"python": [], "grpc": [], "http": []}
            for _ in range(rounds):
                rates["python"].append(python_client(lc.file, images, seconds))
                for transport in ("grpc", "http"):
                    rates[transport].append(served(server, transport, images, batch, seconds,
                                                   expected))
        finally:
            server.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"chain": name, "frame_bytes": int(images[0].size), "batch": batch,
            "concurrency": CONCURRENCY, "rounds": rounds, "seconds_per_round": seconds,
            "python_frames_per_s": round(med["python"], 1),
            "grpc_frames_per_s": round(med["grpc"], 1),
            "http_frames_per_s": round(med["http"], 1),
            "grpc_ratio": round(med["grpc"] / med["python"], 3),
            "http_ratio": round(med["http"] / med["python"], 3),
            "rounds_frames_per_s": {k: [round(r, 1) for r in v] for k, v in rates.items()}}


def summary(rows: list[dict]) -> dict:
    """The goal judged per chain: both transports at least GOAL times the Python client."""
    for r in rows:
        r["meets_goal"] = min(r["grpc_ratio"], r["http_ratio"]) >= GOAL
    return {"goal_ratio": GOAL, "window": WINDOW,
            "chains_meeting_goal": [r["chain"] for r in rows if r["meets_goal"]],
            "chains_below_goal": [r["chain"] for r in rows if not r["meets_goal"]],
            "results": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per client per round")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 120))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from finnchain.models.digits_data import dataset

        _, _, x, _ = dataset(0)
        digits = x.astype(np.uint8)[:256]
        console.print("digits-cnv on three emulated stages ...")
        rows.append(run_case("digits-cnv (3 emulated stages)", digits_build(work), digits, 64,
                             args.rounds, args.seconds, work, "emulate"))
        payload = 150_528
        frames = np.random.default_rng(0).integers(0, 256, (16, payload), dtype=np.uint8)
        console.print("150,528-byte frames through three pass-through stages, answered with "
                      "a top-5 (20 bytes) ...")
        rows.append(run_case("150,528 B in, top-5 out (3 pass-through stages)",
                             pass_through_build(work / "pt", payload, 3, result_bytes=20),
                             frames, 4, args.rounds, args.seconds, work))
        console.print(f"the same, each stage paced at MobileNetV1's planned {PLANNED_FPS} "
                      "frames/s ...")
        rows.append(run_case(f"150,528 B in, top-5 out, paced at {PLANNED_FPS} frames/s",
                             pass_through_build(work / "paced", payload, 3, result_bytes=20,
                                                fps=PLANNED_FPS),
                             frames, 4, args.rounds, args.seconds, work, "pass-through-paced"))
        console.print("150,528-byte frames through three pass-through stages and back ...")
        rows.append(run_case("150,528 B in and back (3 pass-through stages)",
                             pass_through_build(work / "echo", payload, 3), frames, 4,
                             args.rounds, args.seconds, work))
    table = Table(title=f"finnchain serve against the Python client, side by side (window "
                        f"{WINDOW}; {CONCURRENCY} concurrent Triton clients)")
    for col in ("chain", "frames per request", "Python client frames/s", "gRPC frames/s",
                "HTTP binary frames/s", "gRPC ratio", "HTTP ratio"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["chain"], str(r["batch"]), f"{r['python_frames_per_s']:,.1f}",
                      f"{r['grpc_frames_per_s']:,.1f}", f"{r['http_frames_per_s']:,.1f}",
                      f"{r['grpc_ratio']:.2f}", f"{r['http_ratio']:.2f}")
    console.print(table)
    save("serve", summary(rows), RESULTS)
    for r in rows:
        console.print(f"{r['chain']}: worst ratio {min(r['grpc_ratio'], r['http_ratio']):.2f} "
                      f"(goal {GOAL}): {'met' if r['meets_goal'] else 'not met'}")
    console.print(f"wrote {RESULTS / 'serve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
