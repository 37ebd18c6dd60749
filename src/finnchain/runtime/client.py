"""The client: ``Chain`` submits uint8 images and returns results in submission order.

A chain is described by a chain file (JSON, written by the deploy or by ``finnchain up``):

    {"plan_hash": ..., "first": "tcp://host:5550", "last": "tcp://host:5551",
     "input": {"shape": [1, 3, 224, 224], "datatype": "UINT8", "bytes_per_frame": ...},
     "output": {"shape": [1, 5], "bytes_per_frame": 20, ...}, "stages": [...]}

Frames go to the first stage (a DEALER socket to its ROUTER); results come back from the last
stage (a second DEALER with the same identity, introduced by HELLO/WELCOME before anything is
sent). At most ``window`` frames are in flight; a frame without an answer after ``timeout``
seconds ends as an explicit failure (a ``ChainError`` in its place among the results): every
submitted frame ends as a result or a failure, none twice (an answer arriving after its frame
failed is dropped and counted in ``late``), in submission order. ``ChainTimeout`` is raised only
when the chain cannot be reached at all.

A chain keeps order (each link is one FIFO ZeroMQ pipe, each stage one loop), so a frame that a
later frame overtakes on the results socket was lost on the way, by a stage that died or a link
that dropped it: it fails ``OVERTAKEN_GRACE`` seconds later (the grace lets the first stage's
direct refusals, which travel on the other socket, arrive first), not after ``timeout``. When
nothing comes back for ``PING_AFTER`` seconds (every frame in the window may have been lost),
the client sends a PING down the chain every ``PING_EVERY`` seconds; stages pass it on in its
place among the frames, so when it comes back, every frame sent before it is known lost.

Failures say why: the client asks every stage's metrics endpoint at once and names the boards
that do not answer ("board2 (stage 1 at 10.0.0.12) does not answer") or that restarted since
the frame was sent ("board2 (stage 1 at 10.0.0.12) restarted 1.2 s ago"), rather than a bare
timeout. It asks at most once per ``timeout`` for timed-out frames (a board that is down makes
every probe wait) and at most once per ``OVERTAKEN_GRACE`` for lost ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zmq

from finnchain.graph.pack import PackError, unpack
from finnchain.runtime import protocol as P
from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.errors import ChainError, ChainTimeout
from finnchain.runtime.metrics import scrape
from finnchain.runtime.stream import Stream

OVERTAKEN_GRACE = 1.0  # seconds an overtaken frame may still be answered (first stage's refusals)
CHECK_EVERY = 0.05  # seconds between looks for frames that have ended without an answer
PING_AFTER = 0.5  # seconds without an answer, frames in flight, before pinging the chain
PING_EVERY = 1.0  # seconds between pings while nothing comes back
RESULT = np.int32  # class indices as the client returns them



def survey(spec: ChainFile, timeout: float = 1.0) -> list[dict]:
    """Every stage of ``spec`` with a metrics endpoint, asked all at once: its name ('board2
    (stage 1 at 10.0.0.12)') and its uptime in seconds, None when it does not answer in time."""
    def uptime(stage: dict) -> float | None:
        return scrape(stage["host"], int(stage["metrics"]), timeout).get(
            "finnchain_uptime_seconds")

    stages = [s for s in spec.stages if "metrics" in s]
    if not stages:
        return []
    with ThreadPoolExecutor(len(stages)) as pool:
        uptimes = list(pool.map(uptime, stages))
    return [{"name": f"{s['name']} (stage {s['index']} at {s['host']})" if s.get("name")
             else f"stage {s['index']} (at {s['host']}:{s['metrics']})", "uptime": u}
            for s, u in zip(stages, uptimes)]


class Chain:
    """A connection to a running chain of stages."""

    def __init__(self, chain: ChainFile | str | Path, window: int = 16, timeout: float = 10.0,
                 context: zmq.Context | None = None) -> None:
        self.spec = chain if isinstance(chain, ChainFile) else ChainFile.read(chain)
        self.window, self.timeout = window, timeout
        self.plan = P.plan_id(self.spec.plan_hash)
        shape = self.spec.input["shape"]
        self.image_shape = tuple(shape[1:])  # NCHW without the batch
        self.in_bytes = int(self.spec.input["bytes_per_frame"])
        self.k = int(np.prod(self.spec.output["shape"][1:]))
        self.out_type = self.spec.output.get("datatype", "INT32")  # FINN's LabelSelect type
        self.ctx = context or zmq.Context.instance()
        self.identity = os.urandom(8)
        self.send = self._dealer(self.spec.first, "first")
        self.recv = self._dealer(self.spec.last, "last")
        # results come from the last stage; the first stage answers bad frames directly
        self.poller = zmq.Poller()
        self.poller.register(self.recv, zmq.POLLIN)
        self.poller.register(self.send, zmq.POLLIN)
        self.next_seq = 0
        self.in_flight: dict[int, float] = {}
        self.done: dict[int, np.ndarray | ChainError] = {}
        self.late = 0  # answers that came after their frame had failed
        self.overtaken: dict[int, tuple[float, str]] = {}  # seq: (when, what came back first)
        self._checked = self._heard = self._pinged = time.monotonic()
        self._credited = 0  # the last CREDIT sent: every frame below it had ended
        self._diagnosis: tuple[float, list[dict]] = (-float("inf"), [])
        self._hello()

    def _dealer(self, address: str, end: str) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, self.identity)
        s.setsockopt(zmq.LINGER, 0)
        P.liveness(s)
        # what comes back: results from the last stage, short refusals from the first
        out_bytes = int(self.spec.output.get("bytes_per_frame", 0)) if end == "last" else 0
        P.limit(s, out_bytes)
        if self.spec.curve:
            from finnchain.runtime.curve import connect_with

            connect_with(s, self.spec.curve["secret"], self.spec.curve[end])
        s.connect(address)
        return s

    def _hello(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            self.recv.send_multipart([P.Header(P.HELLO, P.CLIENT, self.plan, 0, 0, 0).pack(), b""])
            if self.recv.poll(200):
                h = P.Header.parse(self.recv.recv_multipart()[0])
                if h.kind == P.WELCOME:
                    return
        raise ChainTimeout(f"the last stage at {self.spec.last} did not answer in "
                           f"{self.timeout:g} s: is the chain up?")

    def close(self) -> None:
        self.send.close(0)
        self.recv.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- frames ------------------------------------------------------------------------
    def _frames(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        if x.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got {x.dtype}")
        if x.shape == self.image_shape:
            x = x[None]
        if x.shape[1:] != self.image_shape:
            raise ValueError(f"images of shape {x.shape}: expected (N, "
                             f"{', '.join(map(str, self.image_shape))})")
        if x.ndim == 4:  # NCHW -> FINN's NHWC on the wire
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x)

    def submit(self, images: np.ndarray) -> list[int]:
        """Send images (N, C, H, W) uint8, one message each; returns their sequence numbers.
        Blocks while ``window`` frames are in flight."""
        frames = self._frames(images)
        seqs = []
        for frame in frames:
            while len(self.in_flight) >= self.window:
                self._receive(block=True)
            seq = self.next_seq
            self.next_seq += 1
            payload = memoryview(frame).cast("B")
            header = P.Header(P.DATA, P.CLIENT, self.plan, seq, 1, len(payload)).pack()
            # copied, whatever its size: at 150 KB a copy costs less than pyzmq's zero-copy
            # bookkeeping (bench/serve.py: 4-8 % more frames/s straight, 10-25 % through serve)
            self.send.send_multipart([header, payload])
            self.in_flight[seq] = time.monotonic()
            seqs.append(seq)
        return seqs

    def free(self) -> int:
        """How many more frames may be submitted before ``submit`` blocks."""
        return self.window - len(self.in_flight)

    def receive(self, block: bool = True) -> dict[int, np.ndarray | ChainError]:
        """Take what has come back (waiting up to 0.1 s for something when ``block``): the
        frames that have ended since the last call, each a result or a ``ChainError``."""
        self._receive(block)
        done, self.done = self.done, {}
        return done

    def _receive(self, block: bool) -> bool:
        events = dict(self.poller.poll(100 if block else 0))
        # the first stage's refusals first: a result that overtakes a refused frame must not
        # make it look lost while its refusal waits on the other socket
        for sock in (s for s in (self.send, self.recv) if s in events):
            parts = sock.recv_multipart()
            h = P.Header.parse(parts[0])
            self._heard = time.monotonic()
            if sock is self.recv and h.kind in (P.RESULT, P.ERROR, P.PING):
                self._overtake(h.seq, f"a ping sent behind frame {h.seq - 1}"
                               if h.kind == P.PING else f"frame {h.seq}")
            if h.kind == P.RESULT:
                try:
                    values = unpack(parts[1], self.out_type, (h.count, self.k)).astype(RESULT)
                except PackError as exc:
                    for i in range(h.count):
                        self._settle(h.seq + i, ChainError(
                            h.seq + i, f"a result the client cannot read: {exc}"))
                    continue
                for i in range(h.count):
                    self._settle(h.seq + i, values[i].copy())
            elif h.kind == P.ERROR:
                self._settle(h.seq, ChainError(h.seq, parts[1].decode(errors="replace")))
        if self._credited < self._done_below():
            self._credit()
        if block or events:
            now = time.monotonic()
            if not events or now - self._checked >= CHECK_EVERY:
                self._checked = now
                self._check_timeouts()
            if not events and self.in_flight and now - self._heard >= PING_AFTER \
                    and now - self._pinged >= PING_EVERY:
                self._ping(now)
        return bool(events)

    def _done_below(self) -> int:
        """Every frame below this one has ended (a result or a failure)."""
        return next(iter(self.in_flight), self.next_seq)

    def _credit(self) -> None:
        """Tell the first stage which frames have ended: it bounds each client's frames in the
        chain with it while others share the chain (runtime.fair)."""
        done = self._done_below()
        header = P.Header(P.CREDIT, P.CLIENT, self.plan, done, 0, 0).pack()
        try:
            self.send.send_multipart([header, b""], flags=zmq.NOBLOCK)
            self._credited = done
        except zmq.Again:  # the first stage's queue is full: sent again with the next answer
            pass

    def _ping(self, now: float) -> None:
        """Ask the chain to send back a marker behind every frame submitted so far (and say
        again which frames have ended, in case that was lost)."""
        self._pinged = now
        self._credit()
        header = P.Header(P.PING, P.CLIENT, self.plan, self.next_seq, 0, 0).pack()
        try:
            self.send.send_multipart([header, b""], flags=zmq.NOBLOCK)
        except zmq.Again:  # the first stage's queue is full: frames are moving, or it is down
            pass

    def _overtake(self, seq: int, what: str) -> None:
        """Frames sent before ``seq`` and still unanswered when its answer comes back through
        the chain were lost on the way (the chain keeps order)."""
        now = time.monotonic()
        for s in self.in_flight:  # in submission order
            if s >= seq:
                break
            self.overtaken.setdefault(s, (now, what))

    def _settle(self, seq: int, value) -> None:
        if seq not in self.in_flight:  # already failed: never delivered twice
            self.late += 1
            return
        del self.in_flight[seq]
        self.overtaken.pop(seq, None)
        self.done[seq] = value

    def survey(self, timeout: float = 1.0) -> list[dict]:
        """Every stage with a metrics endpoint, asked all at once (``survey``)."""
        return survey(self.spec, timeout)

    def _why(self, age: float, every: float) -> str:
        """Why a frame sent ``age`` seconds ago went unanswered, from the stages' endpoints
        (asked again when the last survey is older than ``every`` seconds)."""
        if time.monotonic() - self._diagnosis[0] >= every:
            self._diagnosis = (time.monotonic(), self.survey(min(1.0, self.timeout)))
        survey = self._diagnosis[1]
        down = [s["name"] for s in survey if s["uptime"] is None]
        if down:
            return f"{', '.join(down)} {'does' if len(down) == 1 else 'do'} not answer"
        restarted = [f"{s['name']} restarted {s['uptime']:.1f} s ago" for s in survey
                     if s["uptime"] < age]
        return ", ".join(restarted) or "every stage answers and none restarted since"

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        lost = [s for s, (t, _) in self.overtaken.items() if now - t > OVERTAKEN_GRACE]
        for seq in lost:
            why = self._why(now - self.in_flight[seq], OVERTAKEN_GRACE)
            first = self.overtaken[seq][1]
            self._settle(seq, ChainError(seq, f"lost on the way ({first} came back before it, "
                                              f"and the chain keeps order); {why}"))
        expired = [s for s, t in self.in_flight.items() if now - t > self.timeout]
        for seq in expired:
            why = self._why(now - self.in_flight[seq], self.timeout)
            self._settle(seq, ChainError(seq, f"no answer within "
                                              f"{self.timeout:g} s (chain {self.spec.first} -> "
                                              f"{self.spec.last}); {why}"))

    def results(self, seqs: list[int]) -> Iterator[tuple[int, np.ndarray | ChainError]]:
        """Results of ``seqs`` in the order given, waiting as needed."""
        for seq in seqs:
            while seq not in self.done:
                if seq not in self.in_flight:
                    raise KeyError(f"frame {seq} was never submitted on this connection")
                self._receive(block=True)
            yield seq, self.done.pop(seq)

    def stream(self, images: np.ndarray) -> Stream:
        """Frames of ``images`` (uint8 (N, C, H, W), cycled) streamed and timed one by one:
        ``send(frames=... | seconds=... | until=...)`` then ``finish()`` (runtime/stream.py)."""
        return Stream(self, np.asarray(images))

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Top-k class indices (N, k) for images (N, C, H, W) uint8; raises the first error."""
        x = np.asarray(images)
        if x.shape == self.image_shape:
            x = x[None]
        seqs = []
        for i in range(len(x)):
            seqs += self.submit(x[i: i + 1])
        out = np.empty((len(seqs), self.k), dtype=RESULT)
        for i, (_, value) in enumerate(self.results(seqs)):
            if isinstance(value, ChainError):
                raise value
            out[i] = value
        return out
