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
when the chain cannot be reached at all. When frames time out, the client asks every stage's
metrics endpoint (at most once per ``timeout``) and names the boards that do not answer in the
failures' messages, so an operator reads "board2 (stage 1 at 10.0.0.12) does not answer" rather
than a bare timeout.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from finnchain.runtime import protocol as P
from finnchain.runtime.accel import RESULT_DTYPE
from finnchain.runtime.metrics import fetch


class ChainError(RuntimeError):
    """A stage refused a frame; the message is the stage's own."""

    def __init__(self, seq: int, text: str) -> None:
        super().__init__(f"frame {seq}: {text}" if not text.startswith("stage") else text)
        self.seq = seq
        self.text = text


class ChainTimeout(TimeoutError):
    """No answer in time; names the frames and the chain's ends."""


@dataclass
class ChainFile:
    plan_hash: str
    first: str
    last: str
    input: dict
    output: dict
    stages: list[dict] = field(default_factory=list)
    curve: dict | None = None  # secret (the client's certificate), first, last (public keys)

    @classmethod
    def read(cls, path: str | Path) -> ChainFile:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"chain file not found: {path}")
        data = json.loads(path.read_text())
        curve = data.get("curve")
        if curve:  # paths relative to the chain file
            curve = {k: str((path.parent / v).resolve()) for k, v in curve.items()}
        return cls(**{k: data[k] for k in ("plan_hash", "first", "last", "input", "output")},
                   stages=data.get("stages", []), curve=curve)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.__dict__, indent=1) + "\n")
        return path


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
        self.late = 0  # answers that came after their frame had failed by timeout
        self._diagnosis: tuple[float, str] = (-float("inf"), "")
        self._hello()

    def _dealer(self, address: str, end: str) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, self.identity)
        s.setsockopt(zmq.LINGER, 0)
        P.liveness(s)
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
            self.send.send_multipart([header, payload], copy=len(payload) < 65536)
            self.in_flight[seq] = time.monotonic()
            seqs.append(seq)
        return seqs

    def _receive(self, block: bool) -> bool:
        events = dict(self.poller.poll(100 if block else 0))
        if not events:
            if block:
                self._check_timeouts()
            return False
        sock = self.recv if self.recv in events else self.send
        parts = sock.recv_multipart()
        h = P.Header.parse(parts[0])
        if h.kind == P.RESULT:
            values = np.frombuffer(parts[1], dtype=RESULT_DTYPE).reshape(h.count, self.k)
            for i in range(h.count):
                self._settle(h.seq + i, values[i].copy())
        elif h.kind == P.ERROR:
            self._settle(h.seq, ChainError(h.seq, parts[1].decode(errors="replace")))
        return True

    def _settle(self, seq: int, value) -> None:
        if seq not in self.in_flight:  # already failed by timeout: never delivered twice
            self.late += 1
            return
        del self.in_flight[seq]
        self.done[seq] = value

    def unreachable(self, timeout: float = 1.0) -> list[str]:
        """The stages whose metrics endpoint does not answer within ``timeout`` seconds, each
        as 'board2 (stage 1 at 10.0.0.12)'; asked all at once."""
        def down(stage: dict) -> bool:
            try:
                fetch(stage["host"], int(stage["metrics"]), timeout)
                return False
            except (OSError, ValueError):
                return True

        stages = [s for s in self.spec.stages if "metrics" in s]
        if not stages:
            return []
        with ThreadPoolExecutor(len(stages)) as pool:
            flags = list(pool.map(down, stages))
        return [f"{s['name']} (stage {s['index']} at {s['host']})" if s.get("name") else
                f"stage {s['index']} (at {s['host']}:{s['metrics']})"
                for s, d in zip(stages, flags) if d]

    def _why(self) -> str:
        """Why frames go unanswered, from the stages' endpoints; asked once per timeout."""
        now = time.monotonic()
        if now - self._diagnosis[0] >= self.timeout:
            names = self.unreachable(min(1.0, self.timeout))
            why = (f"{', '.join(names)} {'does' if len(names) == 1 else 'do'} not answer"
                   if names else "it was lost on the way")
            self._diagnosis = (time.monotonic(), why)
        return self._diagnosis[1]

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        expired = [s for s, t in self.in_flight.items() if now - t > self.timeout]
        if not expired:
            return
        why = self._why()
        for seq in expired:
            self._settle(seq, ChainError(seq, f"frame {seq}: no answer within "
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

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Top-k class indices (N, k) for images (N, C, H, W) uint8; raises the first error."""
        x = np.asarray(images)
        if x.shape == self.image_shape:
            x = x[None]
        seqs = []
        for i in range(len(x)):
            seqs += self.submit(x[i: i + 1])
        out = np.empty((len(seqs), self.k), dtype=RESULT_DTYPE)
        for i, (_, value) in enumerate(self.results(seqs)):
            if isinstance(value, ChainError):
                raise value
            out[i] = value
        return out
