"""The wire protocol between clients and stages: a small fixed header, then the payload.

Every message is a ZeroMQ multipart message. Between stages: ``[client, header, payload]``;
from a client to the first stage the ROUTER socket adds the client's identity itself. The
header (40 bytes, little-endian):

    magic  4s  b"FCH1"
    kind   B   DATA 1, RESULT 2, ERROR 3, HELLO 4, WELCOME 5, PING 6
    flags  B   reserved, 0
    stage  H   index of the stage that wrote the message (0xFFFF: a client)
    plan   16s the first 16 bytes of the plan's SHA-256 (plan_hash)
    seq    Q   the client's sequence number of the first frame
    count  I   frames in the payload
    size   I   payload bytes

A DATA payload is ``count`` frames in FINN's packed layout, back to back (``graph.pack``); an
ERROR payload is UTF-8 text naming what was wrong. A PING (no payload) is passed on by every
stage in its place among the frames and delivered to its client like a result: as the chain
keeps order, a frame sent before a ping that comes back was lost on the way.

Every socket of the chain (stages and clients) sends ZMTP heartbeats (``liveness``): a peer
that stops answering (a board powered off, a link down) is dropped after
``HEARTBEAT_TIMEOUT_MS`` and reconnected within about a second of its coming back (connect
attempts time out after ``CONNECT_TIMEOUT_MS`` and are tried again), instead of waiting on
TCP's retransmission backoff, which can take minutes after a long outage.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAGIC = b"FCH1"
HEADER = struct.Struct("<4sBBH16sQII")
DATA, RESULT, ERROR, HELLO, WELCOME, PING = 1, 2, 3, 4, 5, 6
KINDS = {DATA: "data", RESULT: "result", ERROR: "error", HELLO: "hello", WELCOME: "welcome",
         PING: "ping"}
CLIENT = 0xFFFF
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
RECONNECT_IVL_MAX_MS = 1000
CONNECT_TIMEOUT_MS = 1000  # a connect attempt into a dead link is retried, not left to TCP
MAX_COUNT = 4096  # frames in one message


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
    """Heartbeats and a bounded reconnect interval on a ZeroMQ socket (before connect/bind)."""
    import zmq

    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
