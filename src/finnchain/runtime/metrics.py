"""A stage's counters, in Prometheus' text exposition format over HTTP (``GET /metrics``).

The board writes it with the standard library only: it runs the stage with what its PYNQ image
has (numpy, pyzmq), and the format is a dozen lines. The controller reads it with
``prometheus_client``'s parser (``scrape``/``parse`` give a ``Reading``: look samples up by
name and labels, never by a literal 'name{label="..."}' string).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from finnchain.runtime.sensors import board_uptime, read_celsius

PREFIX = "finnchain_"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# what each kind of error is, as fab status shows them: a client's own doing or a fault
ERROR_CLASSES = {
    # a client that does not read its results, or has gone: its answers, not others'
    "client-not-reading": "dropped", "undeliverable": "dropped", "expired": "dropped",
    # the stage's limits: a client's queue at the first stage, the metrics server's
    "queue-full": "refused", "metrics-busy": "refused",
    # bad input, answered with an error that names it
    "malformed": "rejected", "header": "rejected", "kind": "rejected", "plan": "rejected",
    "size": "rejected", "results-port": "rejected",
}
ERROR_CLASS_NAMES = ("dropped", "refused", "rejected", "failed")


def error_class(kind: str) -> str:
    """dropped, refused, rejected (bad input) or failed (a fault: any other kind, such as a
    frame the accelerator could not run)."""
    return ERROR_CLASSES.get(kind, "failed")


class Metrics:
    """Counters and gauges of one stage: written by the stage's loop alone (no lock on the
    hot path), read by the HTTP thread."""

    def __init__(self, stage: int, plan_hash: str, accelerator: str, **details: str) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        # details of the accelerator (FINN's: pynq's version, its device, the PL clock)
        self.info = {"stage": str(stage), "plan": plan_hash[:16], "accelerator": accelerator,
                     **details}
        self.frames = Counter()  # in, out
        self.bytes = Counter()
        self.errors = Counter()  # by kind
        self.busy = 0.0
        self.batches = 0
        self.queues: dict[str, callable] = {}
        # the board's side (runtime.sensors): its temperature sensor, and what the readings are
        # compared with: the link's line rate and the part's rated temperature (stage.json)
        self.sensor: Path | None = None
        self.link_bytes_per_s: float | None = None
        self.temperature_max_c: float | None = None

    def add(self, direction: str, frames: int, nbytes: int) -> None:
        self.frames[direction] += frames
        self.bytes[direction] += nbytes

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def work(self, seconds: float) -> None:
        self.busy += seconds
        self.batches += 1

    def snapshot(self) -> dict:
        with self.lock:  # one reader at a time; copies are taken under the GIL
            return {"frames": dict(self.frames), "bytes": dict(self.bytes),
                    "errors": dict(self.errors), "busy_seconds": self.busy,
                    "batches": self.batches, "uptime_seconds": time.time() - self.started,
                    "queues": {k: f() for k, f in self.queues.items()}, **self.info}

    def render(self) -> str:
        s = self.snapshot()
        labels = ",".join(f'{k}="{v}"' for k, v in self.info.items())
        lines = [f"# TYPE {PREFIX}stage_info gauge", f"{PREFIX}stage_info{{{labels}}} 1"]

        def family(name: str, kind: str, rows: list[tuple[str, float]]) -> None:
            lines.append(f"# TYPE {PREFIX}{name} {kind}")
            lines.extend(f"{PREFIX}{name}{lbl} {val}" for lbl, val in rows)

        family("frames_total", "counter",
               [(f'{{direction="{d}"}}', s["frames"].get(d, 0)) for d in ("in", "out")])
        family("bytes_total", "counter",
               [(f'{{direction="{d}"}}', s["bytes"].get(d, 0)) for d in ("in", "out")])
        family("errors_total", "counter",
               [(f'{{kind="{k}",class="{error_class(k)}"}}', v)
                for k, v in sorted(s["errors"].items())] or [("", 0)])
        family("busy_seconds_total", "counter", [("", round(s["busy_seconds"], 6))])
        family("batches_total", "counter", [("", s["batches"])])
        family("queue_depth", "gauge", [(f'{{queue="{q}"}}', v) for q, v in s["queues"].items()])
        family("uptime_seconds", "gauge", [("", round(s["uptime_seconds"], 3))])
        board = [("board_uptime_seconds", board_uptime()),
                 ("link_capacity_bytes_per_second", self.link_bytes_per_s),
                 ("temperature_max_celsius", self.temperature_max_c),
                 ("temperature_celsius",
                  read_celsius(self.sensor) if self.sensor is not None else None)]
        for name, value in board:
            if value is not None:
                family(name, "gauge", [("", round(value, 3))])
        # Prometheus' standard process metrics, unprefixed: CPU time, start (restarts), memory
        cpu = os.times()
        lines += ["# TYPE process_cpu_seconds_total counter",
                  f"process_cpu_seconds_total {round(cpu.user + cpu.system, 3)}",
                  "# TYPE process_start_time_seconds gauge",
                  f"process_start_time_seconds {round(self.started, 3)}"]
        rss = resident_bytes()
        if rss is not None:
            lines += ["# TYPE process_resident_memory_bytes gauge",
                      f"process_resident_memory_bytes {rss}"]
        return "\n".join(lines) + "\n"


def resident_bytes() -> int | None:
    """This process's resident memory (Linux's /proc/self/statm), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Reading:
    """One scrape of a stage's ``/metrics``, parsed by ``prometheus_client``'s own parser (on
    the controller; the board only writes the text). Empty when the stage did not answer."""

    samples: tuple = ()  # prometheus_client Sample(name, labels, value, ...)

    def __bool__(self) -> bool:
        return bool(self.samples)

    def _matching(self, name: str, labels: dict[str, str]) -> list[float]:
        return [s.value for s in self.samples if s.name == name
                and all(s.labels.get(k) == v for k, v in labels.items())]

    def get(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """The value of the sample ``name`` with these labels (the first, if several match)."""
        found = self._matching(name, labels)
        return found[0] if found else default

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample ``name`` whose labels include these (0 when none)."""
        return float(sum(self._matching(name, labels)))

    def __getitem__(self, name: str) -> float:
        value = self.get(name)
        if value is None:
            raise KeyError(f"no sample {name} in the stage's metrics")
        return value


def parse(text: str) -> Reading:
    """Prometheus' text exposition format, read with ``prometheus_client``'s parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return Reading(tuple(s for family in text_string_to_metric_families(text)
                         for s in family.samples))


def fetch(host: str, port: int, timeout: float = 2.0) -> str:
    """A stage's ``/metrics`` text (raises OSError when the stage does not answer)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def scrape(host: str, port: int, timeout: float = 2.0) -> Reading:
    """A stage's counters, parsed; empty when the stage does not answer."""
    try:
        return parse(fetch(host, port, timeout))
    except OSError:
        return Reading()


MAX_CONNECTIONS = 8  # metrics readers at once; more are closed at once
READ_TIMEOUT_S = 3.0  # a reader that does not finish its request in this time is dropped


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with at most ``MAX_CONNECTIONS`` connections at a time (one
    thread each); beyond that, connections are closed as they come. Each connection's socket
    times out after ``READ_TIMEOUT_S``, so half-open connections do not hold threads."""

    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.on_refuse = lambda: None

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.on_refuse()
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` on a daemon thread; returns the server (``.server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S

        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics here")
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: the stage logs what matters
            pass

    server = BoundedHTTPServer((host, port), Handler)
    server.on_refuse = lambda: metrics.error("metrics-busy")
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
