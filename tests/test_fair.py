"""The first stage's fair sharing (runtime/fair.py): clients in turn, each with a bounded share
of the chain; then the same through real stage daemons and clients: credits on the wire, a
client that never credits held to its share, a full queue refused by name, counters by class."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from finnchain.boards.catalogue import Catalogue
from finnchain.fabric.executor import Executor
from finnchain.ops.local import LocalChain
from finnchain.runtime import fair
from finnchain.runtime import protocol as P
from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.client import Chain
from finnchain.runtime.fair import FairQueue
from finnchain.runtime.metrics import error_class, parse


def drain(q: FairQueue, max_frames: int = 1) -> list:
    out = []
    while True:
        items, data = q.take(max_frames)
        if not items:
            return out
        out += [(item, data) for item in items]


def test_clients_take_turns():
    q = FairQueue(window=100, depth=100)
    for k in range(4):
        assert q.put(b"A", f"a{k}", k, 1)
    for k in range(2):
        assert q.put(b"B", f"b{k}", k, 1)
    assert [i for i, _ in drain(q)] == ["a0", "b0", "a1", "b1", "a2", "a3"]


def test_the_window_binds_only_while_clients_share():
    q = FairQueue(window=2, depth=100)
    for k in range(5):
        q.put(b"A", k, k, 1)
    q.credit(b"A", 0)  # A credits: its frames in the chain are known
    assert [i for i, _ in drain(q)] == [0, 1, 2, 3, 4]  # alone: no bound
    q.credit(b"A", 5)
    q.put(b"B", "b", 0, 1)  # B is active: now they share
    for k in range(5, 10):
        q.put(b"A", k, k, 1)
    assert [i for i, _ in drain(q)] == ["b", 5, 6]  # A holds two frames in the chain
    assert q.take(1) == ([], True) and not q.ready()
    q.credit(b"A", 6)  # frame 5 ended
    assert [i for i, _ in drain(q)] == [7]
    q.credit(b"A", 8)
    assert [i for i, _ in drain(q)] == [8, 9]


def test_a_client_that_never_credits_is_held_while_others_share(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(fair.time, "monotonic", lambda: now[0])
    q = FairQueue(window=3, depth=100)
    q.put(b"B", "b0", 0, 1)
    q.credit(b"B", 0)
    for k in range(6):
        q.put(b"N", k, k, 1)
    got = [i for i, _ in drain(q)]
    assert got == ["b0", 0, 1, 2]  # N: its window, then held
    now[0] += fair.ACTIVE_S + 0.1  # B has gone quiet; N is alone
    q.put(b"N", 6, 6, 1)
    assert [i for i, _ in drain(q)] == [3, 4, 5, 6]


def test_a_ping_keeps_its_place_and_a_full_queue_refuses():
    q = FairQueue(window=1, depth=2)
    assert q.put(b"A", "f0", 0, 1) and q.put(b"A", "ping", 1, 0) and q.put(b"A", "f1", 1, 1)
    assert not q.put(b"A", "f2", 2, 1)  # two frames wait: the third is refused
    assert q.put(b"A", "ping2", 2, 0)  # a ping takes no room
    assert drain(q, max_frames=4) == [("f0", True), ("ping", False), ("f1", True),
                                      ("ping2", False)]


def test_frames_that_waited_too_long_are_dropped_for_the_stage_to_tell(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(fair.time, "monotonic", lambda: now[0])
    q = FairQueue(window=1, depth=100)
    q.put(b"B", "b0", 0, 1)
    q.credit(b"B", 0)
    for k in range(3):
        q.put(b"N", k, k, 1)  # never credits: one frame in the chain, two held
    assert [i for i, _ in drain(q)] == ["b0", 0]
    now[0] += fair.MAX_WAIT_S + 1
    assert q.take(1) == ([], True)  # N alone now, but its frames waited too long
    assert q.expired == [(b"N", 1), (b"N", 2)] and not q.ready()


def test_quiet_clients_are_forgotten(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(fair.time, "monotonic", lambda: now[0])
    q = FairQueue(window=4, depth=8)
    q.put(b"A", "x", 0, 1)
    drain(q)
    now[0] += fair.FORGET_S + 1
    q.take(1)
    assert b"A" not in q.clients


def test_error_kinds_have_classes():
    assert error_class("client-not-reading") == "dropped"
    assert error_class("queue-full") == "refused"
    assert error_class("plan") == "rejected"
    assert error_class("frame") == "failed"  # a fault, and whatever is not named


# -- through stage daemons ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def build_dir(digits, tiny_file, make_build):
    return make_build(digits, Catalogue(tiny_file).chain("tiny:3"), "fair")


@pytest.fixture(scope="module")
def images(digits_test_set):
    x = digits_test_set[0].astype(np.uint8)[:120]
    assert np.unique(x).size > 10
    return x


def test_clients_sharing_a_small_window_get_every_answer(build_dir, tmp_path, digits, images):
    """Two clients with windows of 16 through a first stage that lets each hold 2 frames in the
    chain: only their credits free the window, so without them both would stall."""
    expected = Executor(digits).run(images).astype(np.int32)
    got, errors = {}, []
    with LocalChain(build_dir, tmp_path, "emulate", options={"client_window": 2}) as lc:
        def client(name: str) -> None:
            try:
                with Chain(lc.file, window=16, timeout=20) as c:
                    got[name] = np.concatenate([c.infer(images) for _ in range(3)])
            except Exception as exc:  # noqa: BLE001 -- reported below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in "AB"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        m = parse(lc.metrics(0))
    assert not errors, errors
    for name in "AB":
        np.testing.assert_array_equal(got[name], np.concatenate([expected] * 3))
    assert m.total("finnchain_errors_total") == 0


def _bare(spec: ChainFile, identity: bytes) -> tuple[zmq.Socket, zmq.Socket, bytes]:
    """A bare client: a DEALER to each end, HELLO said, no credits ever."""
    ctx = zmq.Context.instance()
    first, last = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for s, end in ((first, spec.first), (last, spec.last)):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, identity)
        s.connect(end)
    plan = P.plan_id(spec.plan_hash)
    last.send_multipart([P.Header(P.HELLO, P.CLIENT, plan, 0, 0, 0).pack(), b""])
    assert last.poll(5000) and P.Header.parse(last.recv_multipart()[0]).kind == P.WELCOME
    return first, last, plan


def test_a_client_that_never_credits_waits_while_another_streams(build_dir, tmp_path, images):
    with LocalChain(build_dir, tmp_path, "emulate",
                    options={"client_window": 4, "client_queue_mb": 0.01}) as lc:
        spec = ChainFile.read(lc.file)
        depth = int(0.01 * 2**20 / images[0].size)  # 163 frames of 64 bytes
        with Chain(lc.file, window=8, timeout=20) as b:
            b.infer(images[:8])  # B is active: the two share the chain
            first, last, plan = _bare(spec, b"bare-client")
            frame = images[0].transpose(1, 2, 0).tobytes()
            for seq in range(depth + 4 + 10):
                first.send_multipart([P.Header(P.DATA, P.CLIENT, plan, seq, 1, len(frame))
                                      .pack(), frame])
            stream = b.stream(images)
            stream.send(seconds=1.5)  # B streams on while the bare client is held
            report = stream.finish()
            m = parse(lc.metrics(0))
            # the bare client's window went through; the rest wait, and what is past its
            # queue was refused, by name
            assert depth <= m.get("finnchain_queue_depth", 0, queue="stage") <= depth + 8
            refusals = []
            while first.poll(500):
                refusals.append(first.recv_multipart()[1].decode())
            # (the first stage's socket queues 8 messages a client: a burst of refusals to a
            # client that reads none may lose some; the counter has them all)
            assert 1 <= len(refusals) <= 10
            assert all("refused" in r and "wait their turn" in r for r in refusals)
            assert m.total("finnchain_errors_total", **{"class": "refused"}) == 10
            got = 0
            while last.poll(200):
                got += P.Header.parse(last.recv_multipart()[0]).kind == P.RESULT
            assert got == 4
        assert not report.failed and len(report.delivered) > 50
        # B has gone: the bare client is alone, and its frames run
        deadline = time.monotonic() + 20
        while got < depth + 4 and time.monotonic() < deadline:
            if last.poll(500):
                got += P.Header.parse(last.recv_multipart()[0]).kind == P.RESULT
        assert got == depth + 4
        first.close()
        last.close()
        # fab status's row for the first stage: what did not go through, by class
        from finnchain.ops.control import _status
        from finnchain.ops.inventory import BoardHost

        row = _status(BoardHost("board1", 0, "127.0.0.1", "127.0.0.1", "nobody", "/nonexistent",
                                "/nonexistent", True, "finnchain-stage", "", "", "",
                                int(spec.stages[0]["metrics"])))
        assert (row["refused"], row["rejected"], row["failed"]) == (10, 0, 0), row
        assert "errors" not in row
