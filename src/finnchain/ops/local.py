"""A chain of stage daemons as processes on this host, from a build folder (``manifest.json``).

Used by ``finnchain up``, the tests and the benchmarks: the same daemons a board runs, on
localhost ports (``ports.local_ports``), started last stage first, each checked through its
metrics endpoint before the next starts.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from finnchain.finn.manifest import Manifest
from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.metrics import fetch
from finnchain.runtime.ports import StagePorts, local_ports

READY_SECONDS = 120.0


class LaunchError(RuntimeError):
    """A stage that did not come up; the message holds the tail of its log."""


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ephemeral() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_base(stages: int, tries: int = 50) -> int:
    """A base port whose local ports for ``stages`` stages are all free, below the kernel's
    range for outgoing connections: a client connecting to a port there before the stage
    listens can be given that very port as its own and talk to itself."""
    top = _ephemeral()[0] - 10 * stages - 10
    for _ in range(tries):
        base = random.randrange(10000, max(10100, top), 100)
        ports = [p for k in range(stages) for p in vars(local_ports(k, base)).values()]
        if all(_free(p) for p in ports):
            return base
    raise LaunchError("no free block of local ports found")


def curve_keys(workdir: Path, n: int) -> dict[str, Path]:
    """Certificates for ``n`` stages and one client, and each listener's allowed keys."""
    import shutil as sh

    from finnchain.runtime.curve import make_certificates

    keys = workdir / "keys"
    make_certificates(keys, ["client", *(f"stage{k}" for k in range(n))])
    for k in range(n):  # stage k takes frames from stage k-1 (stage 0: from the client)
        allow = keys / f"allow{k}"
        allow.mkdir(exist_ok=True)
        sh.copy(keys / ("client.key" if k == 0 else f"stage{k - 1}.key"), allow)
    clients = keys / "clients"
    clients.mkdir(exist_ok=True)
    sh.copy(keys / "client.key", clients)
    return {"dir": keys}


def stage_configs(build_dir: Path, workdir: Path, base: int, accelerator: str | None = None,
                  batch: int = 1, hwm: int = 8, curve: bool = False, metrics: bool = True,
                  options: dict | None = None) -> tuple[list[Path], ChainFile]:
    """Write one config file per stage and the chain file for clients (``metrics``: whether
    the stages serve /metrics; ``options``: more of each stage's config, e.g. client_window)."""
    manifest = Manifest.read(build_dir / "manifest.json")
    stages = sorted(manifest.stages, key=lambda s: s.index)
    n = len(stages)
    infos = [json.loads((build_dir / s.dir / "stage.json").read_text()) for s in stages]
    if [i["index"] for i in infos] != list(range(n)) or any(i["stages"] != n for i in infos):
        raise LaunchError(f"{build_dir}: the manifest does not hold a whole chain "
                          f"(stages {[i['index'] for i in infos]} of {infos[0]['stages']})")
    ports: list[StagePorts] = [local_ports(k, base) for k in range(n)]
    workdir.mkdir(parents=True, exist_ok=True)
    keys = curve_keys(workdir, n)["dir"] if curve else None
    paths = []
    for k, entry in enumerate(stages):
        cfg = {"stage_dir": str((build_dir / entry.dir).resolve()),
               "listen": f"tcp://127.0.0.1:{ports[k].data}", "batch": batch, "hwm": hwm,
               **(options or {})}
        if metrics:
            cfg["metrics"] = f"127.0.0.1:{ports[k].metrics}"
        if accelerator:
            cfg["accelerator"] = accelerator
        if k + 1 < n:
            cfg["downstream"] = f"tcp://127.0.0.1:{ports[k + 1].data}"
        else:
            cfg["results"] = f"tcp://127.0.0.1:{ports[k].results}"
        if keys:
            cfg["curve"] = {"secret": str(keys / f"stage{k}.key_secret"),
                            "allow": str(keys / f"allow{k}"), "clients": str(keys / "clients")}
            if k + 1 < n:
                cfg["curve"]["downstream"] = str(keys / f"stage{k + 1}.key")
        path = workdir / f"stage{k}.json"
        path.write_text(json.dumps(cfg, indent=1) + "\n")
        paths.append(path)
    chain = ChainFile(plan_hash=manifest.plan_hash, first=f"tcp://127.0.0.1:{ports[0].data}",
                      last=f"tcp://127.0.0.1:{ports[-1].results}", input=infos[0]["input"],
                      output=infos[-1]["output"],
                      stages=[{"index": k, "host": "127.0.0.1", "data": p.data,
                               "metrics": p.metrics} for k, p in enumerate(ports)],
                      curve={"secret": str(keys / "client.key_secret"),
                             "first": str(keys / "stage0.key"),
                             "last": str(keys / f"stage{n - 1}.key")} if keys else None,
                      model=str(manifest.model.get("name", "")))
    return paths, chain


class LocalChain:
    """Start with ``with LocalChain(build_dir) as chain:``; ``chain.file`` is the chain file."""

    def __init__(self, build_dir: str | Path, workdir: str | Path, accelerator: str | None = None,
                 batch: int = 1, base: int | None = None, hwm: int = 8,
                 curve: bool = False, python: str | Path | None = None,
                 metrics: bool = True, options: dict | None = None) -> None:
        """``python``: the interpreter the stages run on (default this one), e.g. a venv with
        a PYNQ image's Python and packages; ``metrics``: whether the stages serve /metrics
        (without, a stage is ready when its log says so); ``options``: more of each stage's
        config (``StageConfig``)."""
        self.python = str(python or sys.executable)
        self.build_dir, self.workdir = Path(build_dir), Path(workdir)
        self.accelerator, self.batch, self.hwm, self.curve = accelerator, batch, hwm, curve
        self.base, self.serve_metrics, self.options = base, metrics, options
        self.configs: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self) -> LocalChain:
        manifest = Manifest.read(self.build_dir / "manifest.json")
        base = self.base or free_base(len(manifest.stages))
        configs, self.chain = stage_configs(self.build_dir, self.workdir, base, self.accelerator,
                                            self.batch, self.hwm, self.curve, self.serve_metrics,
                                            self.options)
        self.file = self.chain.write(self.workdir / "chain.json")
        self.configs = configs
        self.procs = [None] * len(configs)
        self.logs = [self.workdir / f"stage{k}.log" for k in range(len(configs))]
        for k in reversed(range(len(configs))):  # last stage first
            self._launch(k)
        return self

    def _launch(self, k: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.logs[k], "ab") as log:
            self.procs[k] = subprocess.Popen(
                [self.python, "-m", "finnchain.cli", "stage", "--config", str(self.configs[k])],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(k)

    def restart(self, k: int) -> None:
        """Kill stage ``k`` (SIGKILL: what it holds is lost) and start it again, as a
        supervisor would."""
        self.procs[k].kill()
        self.procs[k].wait()
        self._launch(k)

    def _wait_ready(self, k: int) -> None:
        port = self.chain.stages[k]["metrics"]
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.procs[k].poll() is not None:
                self.stop()
                raise LaunchError(f"stage {k} exited with {self.procs[k].returncode}:\n"
                                  + self.log_tail(k))
            if not self.serve_metrics:
                if f"stage {k} ready" in self.logs[k].read_text(errors="replace"):
                    return
                time.sleep(0.1)
                continue
            try:
                fetch("127.0.0.1", port, timeout=0.5)
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise LaunchError(f"stage {k} not ready after {READY_SECONDS:g} s:\n{self.log_tail(k)}")

    def log_tail(self, k: int, lines: int = 15) -> str:
        text = self.logs[k].read_text(errors="replace") if self.logs[k].is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self, k: int) -> str:
        return fetch("127.0.0.1", self.chain.stages[k]["metrics"])

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
