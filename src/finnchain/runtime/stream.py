"""Frames streamed through a chain with a window in flight, each one timed: the one loop that
``finnchain bench``, ``fab benchmark``, the soak and the fault tests share.

``Chain.stream(images)`` gives a ``Stream``; ``send(frames=...)``, ``send(seconds=...)`` or
``send(until=...)`` submit images (cycling through them), reading what has come back after each
frame, so that every frame's end is timed when it happens; ``finish()`` waits for the rest and
returns a ``StreamReport``: every frame's sequence number, when it was sent and when it ended,
its answer (a result or the ``ChainError`` it failed with), and the figures derived from them
(delivered, failed, lost, frames/s, latency percentiles, a throughput timeline).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from finnchain.runtime.errors import ChainError

if TYPE_CHECKING:
    from finnchain.runtime.client import Chain


@dataclass
class StreamReport:
    """What a stream did. Times are ``time.monotonic()`` seconds."""

    seqs: list[int]  # in submission order
    sent: dict[int, float]
    ended: dict[int, float]  # when each frame's answer (or failure) was seen
    answers: dict[int, np.ndarray | ChainError]  # every frame that ended, once
    carried: dict[int, int]  # the index of the image each frame carried
    started: float
    finished: float
    late: int  # answers that came after their frame had already failed (dropped)

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def failed(self) -> list[tuple[int, ChainError]]:
        return [(s, v) for s, v in self.ordered() if isinstance(v, ChainError)]

    @property
    def delivered(self) -> list[tuple[int, np.ndarray]]:
        return [(s, v) for s, v in self.ordered() if not isinstance(v, ChainError)]

    @property
    def lost(self) -> int:
        """Frames that never ended: none, when the chain keeps its promise."""
        return len(self.seqs) - len(self.answers)

    def ordered(self) -> list[tuple[int, np.ndarray | ChainError]]:
        """The answers in submission order."""
        return [(s, self.answers[s]) for s in self.seqs if s in self.answers]

    def frames_per_s(self) -> float:
        return len(self.delivered) / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self) -> np.ndarray:
        """Per frame that ended: from its submission to its answer, in ms."""
        return np.array([(self.ended[s] - self.sent[s]) * 1e3 for s in self.seqs
                         if s in self.ended])

    def percentile_ms(self, q: float) -> float | None:
        lat = self.latency_ms()
        return round(float(np.percentile(lat, q)), 3) if lat.size else None

    def recovery_s(self, since: float) -> float | None:
        """From ``since`` (a fault's end) to the first frame delivered after it."""
        after = [self.ended[s] for s, _ in self.delivered if self.ended[s] > since]
        return round(min(after) - since, 2) if after else None

    def failure_reported_s(self) -> float:
        """How long the slowest failure took to be reported, from its frame's submission."""
        return round(max((self.ended[s] - self.sent[s] for s, _ in self.failed), default=0.0), 2)

    def timeline(self, steps: int = 40) -> list[list[float]]:
        """Frames delivered per second over the run, in about ``steps`` steps."""
        done = [self.ended[s] - self.started for s, _ in self.delivered]
        if not done:
            return []
        step = max(max(done) / steps, 0.01)
        edges = np.arange(0, max(done) + step, step)
        counts, _ = np.histogram(done, bins=edges)
        # edges to the microsecond: rounded to 10 ms, a step of 11 ms read back as 10 ms made
        # the rates' sum over the run 9 % short of the frames (seen in a slow CI run)
        return [[round(float(e), 6), round(float(c / step), 1)]
                for e, c in zip(edges[:-1], counts)]


@dataclass
class Stream:
    """Images through ``chain``, cycled; see the module's docstring."""

    chain: Chain
    images: np.ndarray  # uint8 (N, C, H, W)
    seqs: list[int] = field(default_factory=list)
    sent: dict[int, float] = field(default_factory=dict)
    ended: dict[int, float] = field(default_factory=dict)
    answers: dict[int, object] = field(default_factory=dict)
    carried: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise ValueError("a stream needs at least one image")

    def send(self, frames: int | None = None, *, seconds: float | None = None,
             until: Callable[[], bool] | None = None, pause: float = 0.0,
             each: Callable[[Stream], None] | None = None) -> int:
        """Submit ``frames`` images, or for ``seconds``, or until ``until()`` is true (exactly
        one of the three), ``pause`` seconds apart; ``each(stream)`` after every frame (a
        progress bar, a memory sample). Returns the frames sent."""
        if sum(x is not None for x in (frames, seconds, until)) != 1:
            raise ValueError("send: give exactly one of frames, seconds or until")
        stop = time.monotonic() + seconds if seconds is not None else None
        n = 0
        while True:
            if frames is not None and n >= frames:
                break
            if stop is not None and time.monotonic() >= stop:
                break
            if until is not None and until():
                break
            k = len(self.seqs) % len(self.images)
            (seq,) = self.chain.submit(self.images[k][None])
            self.sent[seq], self.carried[seq] = time.monotonic(), k
            self.seqs.append(seq)
            n += 1
            self.harvest()
            if each is not None:
                each(self)
            if pause:
                time.sleep(pause)
        return n

    def harvest(self) -> int:
        """Take what has come back so far (without waiting); returns how many frames ended."""
        now = time.monotonic()
        mine = [s for s in self.chain.done if s in self.sent and s not in self.answers]
        for s in mine:
            self.answers[s] = self.chain.done.pop(s)
            self.ended[s] = now
        return len(mine)

    def finish(self) -> StreamReport:
        """Wait for every frame still in flight; every frame ends once (a result or a failure)."""
        self.harvest()
        rest = [s for s in self.seqs if s not in self.answers]
        for s, value in self.chain.results(rest):
            self.answers[s] = value
            self.ended[s] = time.monotonic()
        return StreamReport(seqs=list(self.seqs), sent=dict(self.sent), ended=dict(self.ended),
                            answers=dict(self.answers), carried=dict(self.carried),
                            started=self.started,
                            finished=time.monotonic(), late=self.chain.late)
