"""One chain shared by concurrent requests: a thread owns the ``Chain`` (a ZeroMQ connection is
used from one thread) and takes requests from the server's event loop.

Requests take the chain's window in turn, one frame each (round robin), so a large request
does not hold back a small one; each request's frames come back in order, because the chain
keeps order. A request ends when all its frames have ended, or at its first failed frame, with
the failure's own text (which names the board: the client asks the stages). While the chain
does not answer its HELLO, requests fail at once as unavailable and the thread tries again
every ``RETRY`` seconds."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import zmq

from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.client import Chain
from finnchain.runtime.errors import ChainError, ChainTimeout

RETRY = 1.0  # seconds between attempts to reach a chain that does not answer
HELLO_TIMEOUT = 2.0  # seconds one attempt waits for the last stage's WELCOME


class ChainUnavailable(RuntimeError):
    """The chain does not answer (the request was not sent)."""


class FrameFailed(RuntimeError):
    """A frame of the request failed in the chain; the message is the chain's."""


@dataclass(eq=False)
class Job:
    frames: np.ndarray  # (N, ...) uint8
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    out: np.ndarray | None = None
    sent: int = 0  # frames submitted
    ended: int = 0  # frames answered
    failed: bool = False

    def settle(self, value) -> None:
        def resolve():
            if not self.future.done():
                if isinstance(value, BaseException):
                    self.future.set_exception(value)
                else:
                    self.future.set_result(value)
        self.loop.call_soon_threadsafe(resolve)


class Dispatcher:
    """The chain behind a server. ``await infer(frames)`` from the event loop's thread."""

    def __init__(self, spec: ChainFile, window: int = 16, timeout: float = 10.0) -> None:
        self.spec, self.window, self.timeout = spec, window, timeout
        self.connected = False
        self.frames_done = self.frames_failed = 0
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._ctx = zmq.Context.instance()
        self._wake_address = f"inproc://finnchain-serve-{id(self)}"
        self._wake_in = self._ctx.socket(zmq.PULL)
        self._wake_in.bind(self._wake_address)
        self._wake_out: zmq.Socket | None = None  # the event loop's end, made there
        # the chain's thread alone touches these
        self._open: set[Job] = set()  # requests not yet answered
        self._to_send: deque[Job] = deque()  # requests with frames to send, in turn
        self._owner: dict[int, tuple[Job, int]] = {}  # chain seq -> (request, frame index)
        self._thread = threading.Thread(target=self._run, name="chain", daemon=True)
        self._stop = False

    def start(self) -> Dispatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._jobs.put(None)
        self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        if self._wake_out is None:
            self._wake_out = self._ctx.socket(zmq.PUSH)
            self._wake_out.setsockopt(zmq.LINGER, 0)
            self._wake_out.connect(self._wake_address)
        try:
            self._wake_out.send(b"", zmq.NOBLOCK)
        except zmq.Again:  # the thread has wake-ups waiting already
            pass

    async def infer(self, frames: np.ndarray) -> np.ndarray:
        """Class indices (N, k) int32 of ``frames`` (N, ...) uint8, in order. Raises
        ``ChainUnavailable`` or ``FrameFailed``."""
        loop = asyncio.get_running_loop()
        job = Job(frames, loop.create_future(), loop)
        self._jobs.put(job)
        self._wake()
        return await job.future

    # -- the chain's thread ----------------------------------------------------------------
    def _run(self) -> None:
        chain: Chain | None = None
        while not self._stop:
            if chain is None:
                chain = self._connect()
                continue
            try:
                self._turn(chain)
            except Exception as exc:  # noqa: BLE001 -- every request ends, with the reason
                self._fail_all(FrameFailed(f"the server's connection to the chain failed: "
                                           f"{type(exc).__name__}: {exc}"))
                chain.close()
                chain, self.connected = None, False
        if chain is not None:
            chain.close()
        self._fail_all(ChainUnavailable("the server is stopping"))

    def _take(self) -> None:
        """Requests that came from the event loop join the turn."""
        while self._wake_in.poll(0):
            self._wake_in.recv()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._open.add(job)
                self._to_send.append(job)

    def _fail_all(self, error: Exception) -> None:
        self._take()
        for job in self._open:
            job.settle(error)
        self._open.clear()
        self._to_send.clear()
        self._owner.clear()

    def _connect(self) -> Chain | None:
        try:
            chain = Chain(self.spec, window=self.window, timeout=HELLO_TIMEOUT,
                          context=self._ctx)
        except ChainTimeout as exc:
            self.connected = False
            error = ChainUnavailable(f"the chain does not answer: {exc}")
            self._fail_all(error)
            deadline = time.monotonic() + RETRY
            while not self._stop and time.monotonic() < deadline:
                if self._wake_in.poll(100):
                    self._fail_all(error)
            return None
        chain.timeout = self.timeout  # frames wait the full timeout; the HELLO did not
        chain.poller.register(self._wake_in, zmq.POLLIN)
        self.connected = True
        return chain

    def _turn(self, chain: Chain) -> None:
        """Take new requests, fill the window one frame per request in turn, take what came
        back (waiting up to 0.1 s, or until a request comes)."""
        self._take()
        while self._to_send and chain.free() > 0:
            job = self._to_send.popleft()
            if job.failed:
                continue
            seq = chain.submit(job.frames[job.sent: job.sent + 1])[0]
            self._owner[seq] = (job, job.sent)
            job.sent += 1
            if job.sent < len(job.frames):
                self._to_send.append(job)
        for seq, value in chain.receive(block=True).items():
            job, index = self._owner.pop(seq, (None, 0))
            if job is None or job.failed:
                continue
            if isinstance(value, ChainError):
                self.frames_failed += 1
                job.failed = True
                self._open.discard(job)
                job.settle(FrameFailed(f"frame {index} of the request: {value.text}"))
                continue
            self.frames_done += 1
            if job.out is None:
                job.out = np.empty((len(job.frames), value.size), dtype=np.int32)
            job.out[index] = value.reshape(-1)
            job.ended += 1
            if job.ended == len(job.frames):
                self._open.discard(job)
                job.settle(job.out)
