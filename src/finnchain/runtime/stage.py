"""The stage daemon: receive frames, run them through the accelerator, send them on.

``finnchain stage --config FILE``. Sockets: the data socket (ROUTER on the first stage, where
clients connect; PULL from the upstream stage otherwise) and the output socket (PUSH to the
next stage, or on the last stage a ROUTER where clients collect their results after a HELLO).

One Python thread runs the loop: take up to ``batch`` messages, check them, run the
accelerator, hand the results to the output socket. ZeroMQ's own I/O thread moves the bytes:
while the accelerator works on one batch, it already receives the next into the data socket's
queue and sends the last from the output socket's queue (double buffering), without the
Python-level hand-offs between threads that would cost more than the transport itself
(bench/transport.py). Queues are bounded (``hwm`` messages), so a slow stage pushes back on
its upstream, and through it on the client.

Bad input never stops a stage: a garbled header, another plan's hash, a wrong size or random
bytes are counted by kind and answered with an ERROR that names what was wrong (to the client
directly on the first stage, through the chain to the client further on, when the message says
who the client is). Messages that travel on to the client (errors from a later stage, pings)
leave in their place among the frames: after the results of the frames received before them.
The config file (JSON or YAML):

    stage_dir: folder with stage.json (and model.onnx, or bitfile/ and driver/)
    listen: tcp://*:5550            where frames come in
    downstream: tcp://host:5550     the next stage (absent on the last stage)
    results: tcp://*:5551           the last stage: where clients collect results
    metrics: 0.0.0.0:9150           Prometheus text at /metrics
    accelerator: emulate            emulate, emulate-paced, finn, pass-through[-paced] (default: built)
    batch: 1                        frames per accelerator call
    hwm: 8                          messages queued per socket before pushing back
    client_window: 32               the first stage: frames of one client in the chain while
                                    others share it (runtime.fair; twice Chain's own window, so
                                    a client's credits in flight do not slow it)
    client_queue_mb: 4              the first stage: megabytes of one client's frames waiting
                                    their turn (at least client_window frames); beyond, refused
    curve:                          optional: encrypted, authenticated links (runtime.curve)
      secret: keys/self.key_secret  this stage's certificate
      allow: keys/allow             public keys that may send frames in (upstream or clients)
      clients: keys/clients         the last stage: public keys that may collect results
      downstream: keys/next.key     the next stage's public key
    iio: /sys/bus/iio/devices       where the Zynq's temperature sensor is found (by its name)
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
from finnchain.runtime.accel import (
    ACCELERATORS,
    Accelerator,
    AcceleratorHang,
    FrameError,
    load_accelerator,
)
from finnchain.runtime.fair import MAX_WAIT_S, FairQueue
from finnchain.runtime.metrics import Metrics, serve
from finnchain.runtime.sensors import IIO_DEVICES, find_temperature_sensor

POLL_MS = 100
HELLO_EVERY = 64
ZERO_COPY_BYTES = 65536  # pyzmq's advice: below this, copying beats zero-copy bookkeeping
RESULTS_HWM = 1024  # results queued per client on the last stage; beyond, they are dropped
INTAKE_MOST = 64  # messages the first stage reads at most before it runs a frame
LOG_EVERY_S = 5.0  # a warning of one kind at most this often (the rest are counted)
log = logging.getLogger("finnchain.stage")


class QuietLog:
    """Warnings of one kind at most once per ``LOG_EVERY_S``, with a count of those held back:
    a flood of bad messages costs a log line every few seconds, not one per message."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def warning(self, kind: str, text: str, *args) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
            self.held[kind] = self.held.get(kind, 0) + 1
            return
        held = self.held.pop(kind, 0)
        self.last[kind] = now
        log.warning(text + (f" ({held} more like it in the last {LOG_EVERY_S:g} s not logged)"
                            if held else ""), *args)


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
    client_window: int = 32
    client_queue_mb: float = 4.0
    curve: dict | None = None
    iio: str = IIO_DEVICES  # where the board's iio devices are (its temperature sensor)

    # the controller checks rendered configs against this dataclass with pydantic
    # (finnchain.schemas, "stage-config"); the board reads it with the checks below alone
    __pydantic_config__ = {"extra": "forbid"}

    def __post_init__(self) -> None:
        if not isinstance(self.client_queue_mb, (int, float)) or self.client_queue_mb <= 0:
            raise ConfigError(f"client_queue_mb must be a number above 0, got "
                              f"{self.client_queue_mb!r}")
        for name in ("batch", "hwm", "threads", "client_window"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got "
                                  f"{getattr(self, name)!r}")
        for name in ("listen", "downstream", "results"):
            value = getattr(self, name)
            if value is not None and not str(value).startswith("tcp://"):
                raise ConfigError(f"{name} must be a tcp:// address, got {value!r}")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"accelerator must be one of "
                              f"{', '.join(a for a in ACCELERATORS if a)}, got {self.accelerator!r}")

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
        if data.get("curve"):
            data["curve"] = {k: str((path.parent / v).resolve()) for k, v in data["curve"].items()}
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _yaml(text: str) -> dict:
    import yaml  # only where a YAML config is used; JSON needs nothing beyond the stdlib

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


class StageDaemon:
    """One running stage: sockets, the loop, counters."""

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
        self.metrics = Metrics(self.index, info["plan_hash"], accelerator.kind,
                               **accelerator.describe())
        # frames taken in and not yet handed on (ZeroMQ's own socket queues are not visible)
        frames = self.metrics.frames
        self.metrics.queues = {"stage": lambda: frames["in"] - frames["out"]}
        self.metrics.sensor = find_temperature_sensor(cfg.iio)
        if info.get("ethernet_mbps"):
            self.metrics.link_bytes_per_s = float(info["ethernet_mbps"]) * 1e6 / 8
        if info.get("temperature_max_c"):
            self.metrics.temperature_max_c = float(info["temperature_max_c"])
        self.ctx = zmq.Context()
        self.stop = threading.Event()
        self.pending: list[list] = []  # to send on after the frames received before them
        # the first stage serves its clients in turn, each with a bounded share of the chain
        self.fair = FairQueue(cfg.client_window, max(
            cfg.client_window, int(cfg.client_queue_mb * 2**20 / max(1, accelerator.in_bytes)))
        ) if self.index == 0 else None
        self.thread: threading.Thread | None = None
        self.http = None
        self.quiet = QuietLog()
        self.ended = threading.Event()  # set by a signal, or when the accelerator hangs
        self.fatal: str | None = None

    def _socket(self, kind: int, in_bytes: int = 0, out_bytes: int = 0) -> zmq.Socket:
        """A socket whose blocking calls give up after POLL_MS (to notice a stop), so that
        waiting costs no CPU: no polling loops, no sleeps. It takes no message part larger than
        ``MAX_COUNT`` frames of ``in_bytes`` (or a small part), from anyone, before or after
        authentication (``protocol.limit``), and its kernel buffers hold about ``hwm`` frames
        each way (``protocol.buffers``): frames wait in bounded queues, not in megabytes of
        TCP buffer, so one client's flood cannot stand between another client and the chain."""
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, POLL_MS)
        s.setsockopt(zmq.RCVTIMEO, POLL_MS)
        s.setsockopt(zmq.SNDHWM, self.cfg.hwm)
        s.setsockopt(zmq.RCVHWM, self.cfg.hwm)
        P.liveness(s)
        P.limit(s, in_bytes)
        P.buffers(s, self.cfg.hwm * in_bytes, self.cfg.hwm * out_bytes)
        return s

    def start(self) -> StageDaemon:
        curve = self.cfg.curve
        self.guard = None
        if curve:
            from finnchain.runtime import curve as C

            self.guard = C.Guard(self.ctx)
            self.guard.allow("data", curve["allow"])
        self.data = self._socket(zmq.ROUTER if self.index == 0 else zmq.PULL, self.acc.in_bytes)
        if curve:
            C.serve(self.data, curve["secret"], "data")
        self.data.bind(self.cfg.listen)
        if self.last:
            self.out = self._socket(zmq.ROUTER, 0, self.acc.out_bytes)  # takes HELLOs only
            self.out.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # one queue per client: a client that stops reading fills its own, not others'
            self.out.setsockopt(zmq.SNDHWM, RESULTS_HWM)
            if curve:
                self.guard.allow("results", curve["clients"])
                C.serve(self.out, curve["secret"], "results")
            self.out.bind(self.cfg.results)
        else:
            self.out = self._socket(zmq.PUSH, 0, self.acc.out_bytes)
            if curve:
                C.connect_with(self.out, curve["secret"], curve["downstream"])
            self.out.connect(self.cfg.downstream)
        if self.cfg.metrics:
            host, _, port = self.cfg.metrics.rpartition(":")
            self.http = serve(self.metrics, host or "0.0.0.0", int(port))
        self.thread = threading.Thread(target=self._loop, name="stage", daemon=True)
        self.thread.start()
        log.info("stage %d ready: %d bytes a frame in on %s, %s, accelerator %s, batch %d%s",
                 self.index, self.acc.in_bytes, self.cfg.listen,
                 f"results on {self.cfg.results}" if self.last else f"out to {self.cfg.downstream}",
                 self.acc.kind, self.cfg.batch, ", CURVE" if curve else "")
        return self

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=2)
        if self.http:
            self.http.shutdown()
        for sock in (self.data, self.out):
            sock.close(0)
        if self.guard:
            self.guard.stop()
        self.ctx.term()

    # -- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        if self.fair is not None:
            return self._loop_first()
        handled = 0
        while not self.stop.is_set():
            # the last stage greets clients on its results socket: when idle, and every
            # HELLO_EVERY messages under load (clients repeat HELLO until welcomed)
            if self.last and handled % HELLO_EVERY == 0:
                self._greet()
            try:
                first = self.data.recv_multipart(copy=False)
            except zmq.Again:
                handled = 0
                continue
            handled += 1
            msg = self._check(first)
            batch = [msg] if msg else []
            frames = msg[1].count if msg else 0
            while frames < self.cfg.batch and not self.pending:  # nothing overtakes a ping
                try:
                    msg = self._check(self.data.recv_multipart(copy=False, flags=zmq.NOBLOCK))
                except zmq.Again:
                    break
                if msg:
                    batch.append(msg)
                    frames += msg[1].count
            if batch and not self._run_or_end(batch, frames):
                return
            self._flush()

    def _loop_first(self) -> None:
        """The first stage: read until a frame may run (its client within its share of the
        chain, ``fair``), and one message at least, then run the next frames in turn. Reading
        little keeps the clients' turns ZeroMQ's own (the ROUTER reads its peers in turn) and
        costs a client that floods about one read for each frame run."""
        handled = 0
        while not self.stop.is_set():
            if self.last and handled % HELLO_EVERY == 0:  # a chain of one stage
                self._greet()
            read = 0
            while read < INTAKE_MOST and not self.fair.ready():
                if not self._intake(block=read == 0):
                    break
                read += 1
            # for a batch of more than one frame, what has arrived already
            while read < INTAKE_MOST + self.cfg.batch - 1 and self.fair.ready() \
                    and self.fair.waiting() < self.cfg.batch and self._intake(block=False):
                read += 1
            if read == 0:  # one read a frame at least: others' frames keep coming in
                read += self._intake(block=False)
            handled += read
            items, data = self.fair.take(self.cfg.batch)
            for client, (_, h) in self.fair.expired:
                self.metrics.add("in", -h.count, -h.size)  # never run
                self._reject(client, h.seq, "expired", f"frame {h.seq}: dropped after waiting "
                             f"{MAX_WAIT_S:g} s for its turn at the first stage")
            self.fair.expired.clear()
            if not data:  # a ping, in its place among its client's frames
                self.pending.extend(items)
            elif items and not self._run_or_end(items, sum(h.count for _, h in items)):
                return
            self._flush()

    def _run_or_end(self, batch: list[tuple[list, P.Header]], n: int) -> bool:
        """Run a batch; False when the accelerator hung and the stage ends (the overlay must
        be loaded again, so its service starts it anew)."""
        try:
            self._run(batch, n)
        except AcceleratorHang as exc:
            self.fatal = f"stage {self.index}: {exc}"
            log.error("%s; the stage ends so that it is started again", self.fatal)
            self.stop.set()
            self.ended.set()
            return False
        return True

    def _intake(self, block: bool) -> bool:
        """Read one message (waiting up to POLL_MS when ``block``) into its client's queue;
        a credit is taken at once. False when nothing had arrived."""
        try:
            parts = self.data.recv_multipart(copy=False, flags=0 if block else zmq.NOBLOCK)
        except zmq.Again:
            return False
        msg = self._check(parts)  # credits and pings go to ``fair`` there
        if msg is None:
            return True
        client, h = parts[0].bytes, msg[1]
        if not self.fair.put(client, msg, h.seq, h.count):
            self.metrics.add("in", -h.count, -h.size)  # refused: never taken in
            self._reject(client, h.seq, "queue-full",
                         f"frame {h.seq}: refused, {self.fair.depth} frames of this client "
                         "wait their turn already (the chain serves its clients in turn)")
        return True

    def _send(self, parts: list) -> None:
        """Hand a message to the output socket, waiting while it is full (back-pressure from
        the next stage). On the last stage a result goes into its client's own queue at once
        or not at all: a client that does not read its results (its queue full) loses them,
        counted, and never holds up the results of other clients."""
        if self.last:
            try:
                self.out.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                self.metrics.error("client-not-reading")
                self.quiet.warning("client-not-reading", "stage %d: client %s does not read "
                                   "its results (%d queued): dropped", self.index,
                                   bytes(parts[0]).hex(), RESULTS_HWM)
            except zmq.ZMQError as exc:  # the client has gone
                self.metrics.error("undeliverable")
                self.quiet.warning("undeliverable", "stage %d: message for client %s not "
                                   "delivered: %s", self.index, bytes(parts[0]).hex(), exc)
            return
        while not self.stop.is_set():
            try:
                self.out.send_multipart(parts, copy=False)
                return
            except zmq.Again:
                continue

    def _flush(self) -> None:
        """Send on what waited for the frames received before it (errors, pings)."""
        for parts in self.pending:
            self._send(parts)
        self.pending.clear()

    def _reject(self, client: bytes | None, seq: int, kind: str, text: str) -> None:
        """Count a bad message and tell its client what was wrong: directly from the first
        stage, through the rest of the chain from later ones (the last stage delivers it)."""
        self.metrics.error(kind)
        self.quiet.warning(kind, "stage %d: %s (client %s)", self.index, text,
                           client.hex() if client else "unknown")
        if client is None:
            return
        msg = [client, *P.error_message(self.index, self.plan, seq, f"stage {self.index}: {text}")]
        if self.index == 0:
            try:
                self.data.send_multipart(msg, flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                self.metrics.error("undeliverable")
        else:
            self.pending.append(msg)

    def _check(self, parts: list) -> tuple[list, P.Header] | None:
        """A data message worth running, or None (answered, forwarded or counted)."""
        # the first stage's ROUTER put the client's identity first; later stages get it from
        # upstream as the first part
        if len(parts) != 3:
            client = parts[0].bytes if self.index == 0 else None
            got = len(parts) - 1 if self.index == 0 else len(parts)
            self._reject(client, 0, "malformed", f"a message of {got} parts, expected "
                         + ("2 (header, payload)" if self.index == 0 else
                            "3 (client, header, payload)"))
            return None
        try:
            h = P.Header.parse(parts[1].buffer)
        except P.HeaderError as exc:
            self._reject(parts[0].bytes, 0, "header", f"garbled header: {exc}")
            return None
        if h.kind == P.DATA and h.plan == self.plan and h.count >= 1 \
                and len(parts[2]) == h.size == h.count * self.acc.in_bytes:
            self.metrics.add("in", h.count, h.size)
            return parts, h  # the common case, checked first
        client = parts[0].bytes
        if h.kind == P.HELLO and self.index == 0:
            self.data.send_multipart([client, P.Header(P.WELCOME, 0, self.plan, h.seq, 0,
                                                       0).pack(), b""])
            return None
        if h.kind == P.CREDIT and self.fair is not None:  # which of its frames have ended
            self.fair.credit(client, h.seq)
            return None
        if h.kind == P.PING and self.fair is not None:  # in its client's queue, in its place
            self.fair.put(client, parts, h.seq, 0)
            return None
        if h.kind in (P.ERROR, P.PING):  # on its way to its client, after the frames before it
            self.pending.append(parts)
            return None
        if h.kind != P.DATA:
            self._reject(client, h.seq, "kind",
                         f"frame {h.seq}: a {P.KINDS[h.kind]} message where data was expected")
            return None
        if h.plan != self.plan:
            self._reject(client, h.seq, "plan", f"frame {h.seq} carries plan {h.plan.hex()}, "
                         f"this chain runs plan {self.plan.hex()}")
            return None
        size = len(parts[2])
        self._reject(client, h.seq, "size", f"frame {h.seq}: {size} bytes for {h.count} "
                     f"frame(s) (header says {h.size}); this stage takes "
                     f"{self.acc.in_bytes} bytes per frame")
        return None

    def _run(self, batch: list[tuple[list, P.Header]], n: int) -> None:
        """Run a batch and send its results, and its errors, before what came after it."""
        later, self.pending = self.pending, []
        self._run_batch(batch, n)
        self._flush()
        self.pending = later

    def _run_batch(self, batch: list[tuple[list, P.Header]], n: int) -> None:
        payload = batch[0][0][2].buffer if len(batch) == 1 else b"".join(
            p[2].buffer for p, _ in batch)
        t0 = time.perf_counter()
        try:
            result = self.acc.run(payload, n)
        except FrameError as exc:
            self.metrics.work(time.perf_counter() - t0)
            if len(batch) > 1:  # find the bad frame: run the messages one by one
                for one in batch:
                    self._run([one], one[1].count)
                return
            parts, h = batch[0]
            self._reject(parts[0].bytes, h.seq, "frame", f"frame {h.seq}: {exc}")
            return
        self.metrics.work(time.perf_counter() - t0)
        kind = P.RESULT if self.last else P.DATA
        if result is payload and len(batch) == 1:  # unchanged: pass the received message on
            out = [batch[0][0][2]]
        else:
            view = memoryview(result).cast("B")
            out, offset = [], 0
            for _, h in batch:
                size = h.count * self.acc.out_bytes
                chunk = view[offset: offset + size]
                # small payloads are copied: cheaper than tracking a zero-copy buffer
                out.append(bytes(chunk) if size < ZERO_COPY_BYTES else chunk)
                offset += size
        for (parts, h), chunk in zip(batch, out):
            size = h.count * self.acc.out_bytes
            self._send([parts[0], P.Header.make(kind, self.index, self.plan, h.seq, h.count,
                                                size), chunk])
            self.metrics.add("out", h.count, size)

    def _greet(self) -> None:
        while True:
            try:
                parts = self.out.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._hello(parts)

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
            self.out.send_multipart([client, welcome, b""], flags=zmq.NOBLOCK)
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
        stage = StageDaemon(cfg).start()
    except (ConfigError, FileNotFoundError, ValueError, zmq.ZMQError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stage.ended.set())
    print(f"stage {stage.index} ready", flush=True)
    stage.ended.wait()
    stage.close()
    if stage.fatal:
        print(f"error: {stage.fatal}", file=sys.stderr)
        return 1
    return 0
