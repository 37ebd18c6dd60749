"""The stage daemon: receive frames, run them through the accelerator, send them on.

``finnchain stage --config FILE``. Three threads per stage, joined by in-process ZeroMQ pipes
with small high-water marks, so that receiving the next batch, computing this one and sending
the last overlap (double buffering) and a slow stage pushes back on its upstream:

    receiver: the data socket (ROUTER for the first stage, where clients connect; PULL from
              the upstream stage otherwise); checks every message, answers bad ones.
    worker:   gathers up to ``batch`` messages, runs the accelerator, splits the output.
    sender:   PUSH to the next stage, or, on the last stage, the results ROUTER where clients
              collect their results (and say HELLO first).

Bad input never stops a stage: a garbled header, another plan's hash, a wrong size or random
bytes are counted by kind and answered with an ERROR that names what was wrong (to the client
directly on the first stage, through the chain to the client further on, when the message says
who the client is). The config file (JSON or YAML):

    stage_dir: folder with stage.json (and model.onnx, or bitfile/ and driver/)
    listen: tcp://*:5550            where frames come in
    downstream: tcp://host:5550     the next stage (absent on the last stage)
    results: tcp://*:5551           the last stage: where clients collect results
    metrics: 0.0.0.0:9150           Prometheus text at /metrics
    accelerator: emulate            emulate, emulate-paced, finn, pass-through (default: built)
    batch: 1                        frames per accelerator call
    hwm: 8                          messages queued per socket before pushing back
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from finnchain.runtime import protocol as P
from finnchain.runtime.accel import Accelerator, FrameError, load_accelerator
from finnchain.runtime.metrics import Metrics, serve

POLL_MS = 100
log = logging.getLogger("finnchain.stage")


class ConfigError(ValueError):
    """A stage config that cannot be used; the message names the key."""


@dataclass
class StageConfig:
    stage_dir: Path
    listen: str
    downstream: str | None = None
    results: str | None = None
    metrics: str | None = None
    accelerator: str | None = None
    batch: int = 1
    hwm: int = 8
    threads: int = 1

    @classmethod
    def read(cls, path: str | Path) -> StageConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"stage config not found: {path}")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else _yaml(text)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid: {exc}") from exc
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
        for key in ("stage_dir", "listen"):
            if key not in data:
                raise ConfigError(f"{path}: '{key}' is required")
        data["stage_dir"] = (path.parent / data["stage_dir"]).resolve()
        cfg = cls(**data)
        if cfg.batch < 1 or cfg.hwm < 1:
            raise ConfigError(f"{path}: batch and hwm must be at least 1")
        return cfg


def _yaml(text: str) -> dict:
    import yaml  # only where a YAML config is used; JSON needs nothing beyond the stdlib

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


class Stage:
    """One running stage: sockets, threads, counters."""

    def __init__(self, cfg: StageConfig, accelerator: Accelerator | None = None,
                 info: dict | None = None) -> None:
        if accelerator is None:
            accelerator, info = load_accelerator(cfg.stage_dir, cfg.accelerator, cfg.batch,
                                                 cfg.threads)
        self.cfg, self.acc, self.info = cfg, accelerator, info
        self.index = int(info["index"])
        self.last = self.index == int(info["stages"]) - 1
        self.plan = P.plan_id(info["plan_hash"])
        if self.last and not cfg.results:
            raise ConfigError("the last stage needs 'results' (where clients collect results)")
        if not self.last and not cfg.downstream:
            raise ConfigError(f"stage {self.index} needs 'downstream' (the next stage)")
        self.metrics = Metrics(self.index, info["plan_hash"], accelerator.kind)
        self.ctx = zmq.Context()
        self.stop = threading.Event()
        self.pending = {"in": 0, "out": 0}
        self.metrics.queues = {q: (lambda q=q: self.pending[q]) for q in self.pending}
        self.threads: list[threading.Thread] = []
        self.http = None
        self.ready = threading.Event()

    # -- sockets -------------------------------------------------------------------------
    def _socket(self, kind: int, hwm: int | None = None) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, hwm or self.cfg.hwm)
        s.setsockopt(zmq.RCVHWM, hwm or self.cfg.hwm)
        return s

    # -- threads -------------------------------------------------------------------------
    def start(self) -> Stage:
        pipe_hwm = max(2, 2 * self.cfg.batch)
        self.work_push = self._socket(zmq.PUSH, pipe_hwm)
        self.work_push.bind(f"inproc://work-{id(self)}")
        self.out_push = self._socket(zmq.PUSH, pipe_hwm)
        self.out_push.bind(f"inproc://out-{id(self)}")
        self.data = self._socket(zmq.ROUTER if self.index == 0 else zmq.PULL)
        self.data.bind(self.cfg.listen)
        if self.last:
            self.out = self._socket(zmq.ROUTER)
            self.out.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.out.bind(self.cfg.results)
        else:
            self.out = self._socket(zmq.PUSH)
            self.out.connect(self.cfg.downstream)
        if self.cfg.metrics:
            host, _, port = self.cfg.metrics.rpartition(":")
            self.http = serve(self.metrics, host or "0.0.0.0", int(port))
        for target in (self._receiver, self._worker, self._sender):
            t = threading.Thread(target=target, name=target.__name__.strip("_"), daemon=True)
            t.start()
            self.threads.append(t)
        self.ready.set()
        log.info("stage %d ready: %s in on %s, %s, accelerator %s, batch %d", self.index,
                 self.acc.in_bytes, self.cfg.listen,
                 f"results on {self.cfg.results}" if self.last else f"out to {self.cfg.downstream}",
                 self.acc.kind, self.cfg.batch)
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2)
        if self.http:
            self.http.shutdown()
        for s in (self.data, self.out, self.work_push, self.out_push):
            s.close(0)
        self.ctx.term()

    def _count(self, key: str, delta: int) -> None:
        with self.metrics.lock:
            self.pending[key] += delta

    def _reject(self, client: bytes | None, seq: int, kind: str, text: str,
                via: str = "reply") -> None:
        """Count a bad message and tell its client what was wrong: ``via`` "reply" answers
        on the first stage's data socket (receiver thread only), "work" and "out" send the
        error down the chain to the last stage, which hands it to the client."""
        self.metrics.error(kind)
        log.warning("stage %d: %s (client %s)", self.index, text,
                    client.hex() if client else "unknown")
        if client is None:
            return
        msg = [client, *P.error_message(self.index, self.plan, seq, f"stage {self.index}: {text}")]
        if via == "reply" and self.index == 0:
            self.data.send_multipart(msg)
        elif via == "out":
            self._send_out(msg)
        else:
            self._forward(msg)

    def _forward(self, parts: list) -> None:
        while not self.stop.is_set():
            try:
                self.work_push.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                time.sleep(0.0005)

    def _receiver(self) -> None:
        poller = zmq.Poller()
        poller.register(self.data, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            parts = self.data.recv_multipart(copy=False)
            # the first stage's ROUTER put the client's identity first; later stages get it
            # from upstream as the first part
            client = parts[0].bytes if self.index == 0 or len(parts) == 3 else None
            if len(parts) != 3:
                got = len(parts) - 1 if self.index == 0 else len(parts)
                self._reject(client, 0, "malformed", f"a message of {got} parts, expected "
                             + ("2 (header, payload)" if self.index == 0 else
                                "3 (client, header, payload)"))
                continue
            try:
                h = P.Header.parse(parts[1].buffer)
            except P.HeaderError as exc:
                self._reject(client, 0, "header", f"garbled header: {exc}")
                continue
            if h.kind == P.HELLO and self.index == 0:
                self.data.send_multipart([client, P.Header(P.WELCOME, 0, self.plan, h.seq, 0,
                                                           0).pack(), b""])
                continue
            if h.kind == P.ERROR:
                self._forward(parts)  # an error on its way to its client
                continue
            if h.kind != P.DATA:
                self._reject(client, h.seq, "kind", f"frame {h.seq}: a {P.KINDS[h.kind]} "
                             "message where data was expected")
                continue
            if h.plan != self.plan:
                self._reject(client, h.seq, "plan", f"frame {h.seq} carries plan "
                             f"{h.plan.hex()}, this chain runs plan {self.plan.hex()}")
                continue
            size = len(parts[2].buffer)
            if h.count < 1 or size != h.size or size != h.count * self.acc.in_bytes:
                self._reject(client, h.seq, "size", f"frame {h.seq}: {size} bytes for "
                             f"{h.count} frame(s) (header says {h.size}); this stage takes "
                             f"{self.acc.in_bytes} bytes per frame")
                continue
            self.metrics.add("in", h.count, size)
            self._count("in", h.count)
            self._forward(parts)

    def _worker(self) -> None:
        pull = self._socket(zmq.PULL, max(2, 2 * self.cfg.batch))
        pull.connect(f"inproc://work-{id(self)}")
        while not self.stop.is_set():
            if not pull.poll(POLL_MS):
                continue
            batch = [pull.recv_multipart(copy=False)]
            while len(batch) < self.cfg.batch:
                try:
                    batch.append(pull.recv_multipart(copy=False, flags=zmq.NOBLOCK))
                except zmq.Again:
                    break
            data = []
            for parts in batch:
                if P.Header.parse(parts[1].buffer).kind == P.DATA:
                    data.append(parts)
                else:
                    self._send_out(parts)
            if data:
                self._run(data)
        pull.close(0)

    def _run(self, batch: list) -> None:
        headers = [P.Header.parse(p[1].buffer) for p in batch]
        n = sum(h.count for h in headers)
        payload = batch[0][2].buffer if len(batch) == 1 else b"".join(p[2].buffer for p in batch)
        t0 = time.perf_counter()
        try:
            out = memoryview(self.acc.run(payload, n)).cast("B")
        except FrameError as exc:
            self.metrics.work(time.perf_counter() - t0)
            if len(batch) > 1:  # find the bad frame: run the messages one by one
                for parts in batch:
                    self._run([parts])
                return
            self._count("in", -n)
            h = headers[0]
            self._reject(batch[0][0].bytes, h.seq, "frame", f"frame {h.seq}: {exc}", via="out")
            return
        self.metrics.work(time.perf_counter() - t0)
        self._count("in", -n)
        kind = P.RESULT if self.last else P.DATA
        offset = 0
        for parts, h in zip(batch, headers):
            size = h.count * self.acc.out_bytes
            chunk = out[offset: offset + size]
            offset += size
            header = P.Header(kind, self.index, self.plan, h.seq, h.count, size).pack()
            self._count("out", h.count)
            self._send_out([parts[0], header, chunk])

    def _send_out(self, parts: list) -> None:
        while not self.stop.is_set():
            try:
                self.out_push.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                time.sleep(0.0005)

    def _sender(self) -> None:
        pull = self._socket(zmq.PULL, max(2, 2 * self.cfg.batch))
        pull.connect(f"inproc://out-{id(self)}")
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        if self.last:
            poller.register(self.out, zmq.POLLIN)  # clients' HELLO
        while not self.stop.is_set():
            events = dict(poller.poll(POLL_MS))
            if self.last and self.out in events:
                self._hello(self.out.recv_multipart())
            if pull not in events:
                continue
            parts = pull.recv_multipart(copy=False)
            h = P.Header.parse(parts[1].buffer)
            try:
                self._deliver(parts)
            except zmq.ZMQError as exc:
                self.metrics.error("undeliverable")
                log.warning("stage %d: result %d for client %s not delivered: %s", self.index,
                            h.seq, parts[0].bytes.hex(), exc)
            if h.kind in (P.DATA, P.RESULT):
                self._count("out", -h.count)
                self.metrics.add("out", h.count, len(parts[2].buffer))
        pull.close(0)

    def _deliver(self, parts: list) -> None:
        while not self.stop.is_set():
            try:
                self.out.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
                return
            except zmq.Again:  # downstream full: wait (back-pressure)
                time.sleep(0.0005)

    def _hello(self, parts: list[bytes]) -> None:
        client = parts[0]
        try:
            h = P.Header.parse(parts[1]) if len(parts) >= 2 else None
        except P.HeaderError:
            h = None
        if h is None or h.kind != P.HELLO:
            self.metrics.error("results-port")
            return
        welcome = P.Header(P.WELCOME, self.index, self.plan, h.seq, 0, 0).pack()
        try:
            self.out.send_multipart([client, welcome, b""])
        except zmq.ZMQError:
            self.metrics.error("undeliverable")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="finnchain stage", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Run one stage of a chain: receive frames, run them through the "
                     "accelerator, send them on (see finnchain.runtime.stage for the config).")
    p.add_argument("--config", required=True, help="the stage's config file (JSON or YAML)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = StageConfig.read(args.config)
        stage = Stage(cfg).start()
    except (ConfigError, FileNotFoundError, ValueError, zmq.ZMQError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"stage {stage.index} ready", flush=True)
    done.wait()
    stage.close()
    return 0
