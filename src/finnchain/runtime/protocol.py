"""The wire protocol between clients and stages: a small fixed header, then the payload.

Every message is a ZeroMQ multipart message. Between stages: ``[client, header, payload]``;
from a client to the first stage the ROUTER socket adds the client's identity itself. The
header (40 bytes, little-endian):

    magic  4s  b"FCH1"
    kind   B   DATA 1, RESULT 2, ERROR 3, HELLO 4, WELCOME 5, PING 6, CREDIT 7
    flags  B   reserved, 0
    stage  H   index of the stage that wrote the message (0xFFFF: a client)
    plan   16s the first 16 bytes of the plan's SHA-256 (plan_hash)
    seq    Q   the client's sequence number of the first frame
    count  I   frames in the payload
    size   I   payload bytes

A DATA payload is ``count`` frames in FINN's packed layout, back to back (``graph.pack``); an
ERROR payload is UTF-8 text naming what was wrong. A PING (no payload) is passed on by every
stage in its place among the frames and delivered to its client like a result: as the chain
keeps order, a frame sent before a ping that comes back was lost on the way. A CREDIT (no
payload, from a client to the first stage) says that every frame of the client below its
``seq`` has ended: the first stage bounds each client's frames in the chain with it
(``runtime.fair``).

Every socket of the chain (stages and clients) watches its peers (``liveness``): a peer that
stops answering (a board powered off, a link down) is dropped after a few seconds and
reconnected within about a second of its coming back (connect attempts time out after
``CONNECT_TIMEOUT_MS`` and are tried again), instead of waiting on TCP's retransmission
backoff, which can take minutes after a long outage. The watching is TCP's own: keepalive
probes on an idle connection (``KEEPALIVE_*``, answered by the peer's kernel) and a bound on
unacknowledged data (``TCP_MAXRT_MS``, Linux's TCP_USER_TIMEOUT). ZMTP heartbeats did the
same until they were found to abort a stage: libzmq 4.3.5 asserts ``!_io_error``
(stream_engine_base.cpp:310) when a heartbeat timeout fires on a connection whose input is
stopped by back-pressure, as after a stage was frozen under load (``bench/freeze.py``
reproduces it; upstream: zeromq/libzmq#4364, #3937, #4767). ``FINNCHAIN_LIVENESS=zmtp`` brings
the heartbeats back, for that benchmark only.

Every socket also refuses oversized messages before reading them (``limit``): libzmq drops a
peer that declares a larger frame, so an unauthenticated peer cannot make a stage hold more
than a few messages' worth of memory.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAGIC = b"FCH1"
HEADER = struct.Struct("<4sBBH16sQII")
DATA, RESULT, ERROR, HELLO, WELCOME, PING, CREDIT = 1, 2, 3, 4, 5, 6, 7
KINDS = {DATA: "data", RESULT: "result", ERROR: "error", HELLO: "hello", WELCOME: "welcome",
         PING: "ping", CREDIT: "credit"}
CLIENT = 0xFFFF
HEARTBEAT_IVL_MS = 1000  # ZMTP heartbeats, only with FINNCHAIN_LIVENESS=zmtp (see above)
HEARTBEAT_TIMEOUT_MS = 3000
KEEPALIVE_IDLE_S = 1  # TCP keepalive: first probe after 1 s idle, then every second,
KEEPALIVE_INTVL_S = 1  # the peer dropped after 3 unanswered probes
KEEPALIVE_CNT = 3
TCP_MAXRT_MS = 3000  # data unacknowledged this long: the peer is gone
RECONNECT_IVL_MAX_MS = 1000
CONNECT_TIMEOUT_MS = 1000  # a connect attempt into a dead link is retried, not left to TCP
MAX_COUNT = 16  # frames in one message (clients send one; stages pass messages on whole)
MAX_SMALL_PART = 1024  # identities, headers, commands: every part that is not frames


class HeaderError(ValueError):
    """A header that cannot be read; the message says why."""


class Header(NamedTuple):
    """A parsed header (a NamedTuple: it is built for every message, so it must be cheap)."""

    kind: int
    stage: int
    plan: bytes
    seq: int
    count: int
    size: int

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.kind, 0, self.stage, self.plan, self.seq, self.count,
                           self.size)

    @classmethod
    def parse(cls, raw: bytes | memoryview) -> Header:
        if len(raw) != HEADER.size:
            raise HeaderError(f"header of {len(raw)} bytes, expected {HEADER.size}")
        magic, kind, _, stage, plan, seq, count, size = HEADER.unpack(raw)
        if magic != MAGIC:
            raise HeaderError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
        if kind not in KINDS:
            raise HeaderError(f"unknown message kind {kind}")
        if count > MAX_COUNT:
            raise HeaderError(f"{count} frames in one message, at most {MAX_COUNT}")
        return cls(kind, stage, plan, seq, count, size)

    @staticmethod
    def make(kind: int, stage: int, plan: bytes, seq: int, count: int, size: int) -> bytes:
        """A packed header, without building a Header first."""
        return HEADER.pack(MAGIC, kind, 0, stage, plan, seq, count, size)


def plan_id(plan_hash: str) -> bytes:
    """The 16 bytes of a plan's SHA-256 that travel in every header."""
    return bytes.fromhex(plan_hash)[:16]


def error_message(stage: int, plan: bytes, seq: int, text: str) -> list[bytes]:
    body = text.encode()
    return [Header(ERROR, stage, plan, seq, 0, len(body)).pack(), body]


def liveness(sock) -> None:
    """Dead peers noticed and links reconnected quickly, on a ZeroMQ socket (before
    connect/bind): TCP keepalive and TCP_USER_TIMEOUT, bounded reconnect intervals."""
    import os

    import zmq

    if os.environ.get("FINNCHAIN_LIVENESS") == "zmtp":  # bench/freeze.py: the old way
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    else:
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
        sock.setsockopt(zmq.TCP_MAXRT, TCP_MAXRT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)


MIN_BUFFER = 65536  # bytes of kernel buffer a socket keeps each way, at least


def buffers(sock, receive: int, send: int) -> None:
    """Fixed kernel buffer sizes (at least ``MIN_BUFFER``): Linux otherwise grows a busy TCP
    connection's buffers to megabytes, where thousands of small frames can queue ahead of
    everyone else's."""
    import zmq

    sock.setsockopt(zmq.RCVBUF, max(MIN_BUFFER, receive))
    sock.setsockopt(zmq.SNDBUF, max(MIN_BUFFER, send))


def limit(sock, frame_bytes: int) -> int:
    """The largest message part ``sock`` accepts: ``MAX_COUNT`` frames of ``frame_bytes``
    (0: a socket that carries no frames in), or a small part. A peer declaring more is
    dropped by libzmq before anything is read. Returns the limit."""
    import zmq

    size = max(MAX_COUNT * frame_bytes, MAX_SMALL_PART)
    sock.setsockopt(zmq.MAXMSGSIZE, size)
    return size
