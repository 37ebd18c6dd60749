"""The first stage's admission: its clients served in turn, each with a bounded share of the
chain (standard library only: it runs on the board).

Frames from each client wait in a queue of their own (at most ``depth`` frames; beyond, a frame
is refused at once) and are taken one client after another. While more than one client has
sent anything within ``ACTIVE_S`` seconds, a client may have at most ``window`` frames in the
chain beyond the first stage: the frames it sent on and that have not ended. A client says
which have ended with CREDIT messages (the header's ``seq``: every frame below it has ended,
answered or failed); ``Chain`` sends one whenever that number moves. A client that never sends
one (a client that does not read, or a bare ZeroMQ client) is capped at ``window`` frames for
as long as another client is active, and runs free when it is alone.

Why a window per client and not only turns: the chain's queues between stages hold frames too
(about ``hwm`` a socket each way). Without the cap, a client with a large window fills them and
every other client's frames wait behind its frames; a client with a window of 16 then gets a
fifth of the chain, not half. With the cap, the chain holds at most ``window`` frames of each
client.

Messages that travel in a client's place among its frames (its pings) wait in its queue and
leave in their turn, never before the frames sent before them. A client shares the chain while
it is active or has frames waiting; a frame that waited ``MAX_WAIT_S`` is dropped (``expired``:
the stage tells its client), so a client that floods and leaves does not hold the chain after
it has gone."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

ACTIVE_S = 2.0  # a client that sent anything this recently shares the chain
FORGET_S = 60.0  # a client silent this long, with nothing queued, is forgotten
MAX_WAIT_S = 10.0  # a frame queued this long is dropped (its client has timed it out by now)
EXPIRE_MOST = 64  # frames dropped at most per take: the rest wait for the next


@dataclass
class _Client:
    queue: deque = field(default_factory=deque)  # (item, seq, frames, when queued): 0 frames
    # for a ping
    queued_frames: int = 0
    sent: deque = field(default_factory=deque)  # (seq, frames) sent on, not yet credited
    in_chain: int = 0  # frames in ``sent``
    credits: bool = False  # has sent a CREDIT: its frames in the chain are known
    seen: float = 0.0


class FairQueue:
    def __init__(self, window: int, depth: int) -> None:
        self.window, self.depth = window, depth
        self.clients: dict[bytes, _Client] = {}
        self._turn: deque[bytes] = deque()  # clients with something queued, in turn order
        self._forgot = time.monotonic()
        self.expired: list[tuple[bytes, object]] = []  # dropped by take, for the stage to tell

    def _client(self, identity: bytes, now: float) -> _Client:
        c = self.clients.get(identity)
        if c is None:
            c = self.clients[identity] = _Client()
        c.seen = now
        return c

    def put(self, identity: bytes, item, seq: int, frames: int) -> bool:
        """Queue ``item`` (``frames`` frames from ``seq``; 0 for a message that only keeps its
        place); False when the client's queue is full (the item is not queued)."""
        now = time.monotonic()
        c = self._client(identity, now)
        if frames and c.queued_frames + frames > self.depth:
            return False
        if not c.queue:
            self._turn.append(identity)
        c.queue.append((item, seq, frames, now))
        c.queued_frames += frames
        return True

    def credit(self, identity: bytes, done_below: int) -> None:
        """Every frame of the client below ``done_below`` has ended."""
        c = self._client(identity, time.monotonic())
        c.credits = True
        while c.sent and c.sent[0][0] < done_below:
            c.in_chain -= c.sent.popleft()[1]

    def sharing(self, now: float) -> int:
        """Clients that share the chain: active lately, or with frames waiting."""
        return sum(1 for c in self.clients.values() if c.queue or now - c.seen < ACTIVE_S)

    def _may_send(self, c: _Client, frames: int, shared: bool) -> bool:
        return frames == 0 or not shared or c.in_chain + frames <= self.window

    def take(self, max_frames: int) -> tuple[list, bool]:
        """The next items in turn: data items up to ``max_frames`` frames (True), or one item
        that keeps its client's place (False); ([], True) when nothing may go now."""
        now = time.monotonic()
        self._forget(now)
        self._expire(now)
        shared = self.sharing(now) > 1
        items, frames = [], 0
        for _ in range(len(self._turn)):
            identity = self._turn[0]
            c = self.clients[identity]
            item, seq, n, _ = c.queue[0]
            if n == 0:
                if items:  # a ping waits until the frames taken before it have run
                    break
                self._pop(identity, c)
                return [item], False
            if frames + n > max_frames and items:
                break
            if not self._may_send(c, n, shared):
                self._turn.rotate(-1)
                continue
            self._pop(identity, c)
            c.sent.append((seq, n))
            if not c.credits and len(c.sent) > self.window:  # never credited: its last frames
                c.in_chain -= c.sent.popleft()[1]
            c.in_chain += n
            items.append(item)
            frames += n
            if frames >= max_frames:
                break
        return items, True

    def _expire(self, now: float) -> None:
        """Drop frames that waited too long, oldest first (each client's queue is in order)."""
        for identity in list(self._turn):
            c = self.clients[identity]
            while c.queue and now - c.queue[0][3] > MAX_WAIT_S \
                    and len(self.expired) < EXPIRE_MOST:
                item, _, n, _ = c.queue.popleft()
                c.queued_frames -= n
                if n:
                    self.expired.append((identity, item))
            if not c.queue:
                self._turn.remove(identity)

    def _pop(self, identity: bytes, c: _Client) -> None:
        _, _, n, _ = c.queue.popleft()
        c.queued_frames -= n
        self._turn.popleft()
        if c.queue:
            self._turn.append(identity)  # its next item waits for the others' turns

    def waiting(self) -> int:
        """Frames queued, over all clients."""
        return sum(c.queued_frames for c in self.clients.values())

    def ready(self) -> bool:
        """Whether ``take`` would give something now."""
        if not self._turn:
            return False
        shared = self.sharing(time.monotonic()) > 1
        return any(self._may_send(self.clients[i], self.clients[i].queue[0][2], shared)
                   for i in self._turn)

    def _forget(self, now: float) -> None:
        if now - self._forgot < FORGET_S / 4:
            return
        self._forgot = now
        for identity in [i for i, c in self.clients.items()
                         if not c.queue and now - c.seen > FORGET_S]:
            del self.clients[identity]
