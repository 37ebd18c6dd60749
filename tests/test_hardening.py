"""A hostile, careful user against the stage daemons (local chain of real processes, CURVE on):
memory before authentication, a client that stops reading, the metrics server, log floods."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from finnchain.fabric.executor import Executor
from finnchain.ops.local import LocalChain
from finnchain.runtime.client import Chain
from finnchain.runtime.metrics import parse

MIB = 1 << 20


@pytest.fixture(scope="module")
def build_dir(digits, make_build):
    """digits-cnv on the demo's three small boards, built for emulation."""
    from finnchain.boards.catalogue import Catalogue

    demo = Path(__file__).resolve().parents[1] / "src" / "finnchain" / "boards" / "demo.yaml"
    return make_build(digits, Catalogue(demo).chain("demo-small:3"), "hard")


@pytest.fixture(scope="module")
def chain(build_dir, tmp_path_factory):
    with LocalChain(build_dir, tmp_path_factory.mktemp("run"), curve=True) as running:
        yield running


@pytest.fixture(scope="module")
def images(digits_test_set):
    return digits_test_set[0].astype(np.uint8)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


GREETING = (b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"CURVE".ljust(20, b"\0") + b"\0"
            + bytes(31))


def _flood(port: int, total: int, seconds: float = 10.0) -> int:
    """A peer with no keys: ZMTP greeting, then one frame declared and sent ``total`` bytes
    long. Returns how many bytes the stage took before closing the connection."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(GREETING)
        s.sendall(b"\x02" + struct.pack(">Q", total))  # a long message frame
        block = bytes(1 << 20)
        deadline = time.monotonic() + seconds
        try:
            while sent < total and time.monotonic() < deadline:
                sent += s.send(block)
        except OSError:  # the stage dropped us
            pass
    return sent


def test_a_peer_without_keys_cannot_fill_a_stages_memory(chain, images, digits):
    """200 MB pushed with no keys at every listener (each stage's data port, the results port):
    each stage's resident memory grows by less than 32 MiB and the chain keeps serving."""
    spec = json.loads(Path(chain.file).read_text())
    ports = [(k, s["data"]) for k, s in enumerate(spec["stages"])]
    ports.append((len(spec["stages"]) - 1, int(spec["last"].rsplit(":", 1)[1])))
    for k, port in ports:
        pid = chain.procs[k].pid
        before = _rss(pid)
        threads = [threading.Thread(target=_flood, args=(port, 200 * MIB)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        grown = _rss(pid) - before
        print(f"stage {k}, port {port}: 3 x 200 MB without keys, resident {grown / MIB:+.1f} MiB")
        assert grown < 32 * MIB, (k, port, grown / MIB)
        assert chain.procs[k].poll() is None
    with Chain(chain.file, timeout=20) as c:
        got = c.infer(images[:40])
    assert np.array_equal(got, Executor(digits).run(images[:40]).astype(np.int32))


GREEDY = """
import sys, time
from finnchain.models.digits_data import dataset
from finnchain.runtime import protocol as P
from finnchain.runtime.client import Chain
images = dataset(0)[2]
chain = Chain(sys.argv[1], timeout=60)  # connected, then never asks for a result
t0, i = time.monotonic(), 0
while time.monotonic() - t0 < float(sys.argv[2]):
    payload = memoryview(chain._frames(images[i % len(images)][None])[0]).cast("B")
    chain.send.send_multipart([P.Header(P.DATA, P.CLIENT, chain.plan, i, 1,
                                        len(payload)).pack(), payload])
    i += 1
"""


def test_a_client_that_stops_reading_costs_only_itself(chain, images, digits):
    """Client A (another process) floods frames and never reads its results; client B streams
    meanwhile: B's answers never stop for longer than a second (a heartbeat's worth), B gets
    every answer right, and the last stage drops A's answers, counted."""
    import subprocess
    import sys

    spec = json.loads(Path(chain.file).read_text())
    last = len(spec["stages"]) - 1
    before = parse(chain.metrics(last))
    greedy = subprocess.Popen([sys.executable, "-c", GREEDY, str(chain.file), "16"])
    time.sleep(3)  # A's results have filled its queue by now
    gaps, arrivals = [], {}
    whole = Executor(digits).run(images).astype(np.int32)
    with Chain(chain.file, window=8, timeout=20) as c:
        seqs, n = [], 0
        t0 = previous = time.monotonic()
        while time.monotonic() - t0 < 10:
            seqs += c.submit(images[n % len(images)][None])
            n += 1
            while c.done:
                seq = min(c.done)
                arrivals[seq] = c.done.pop(seq)
                now = time.monotonic()
                gaps.append(now - previous)
                previous = now
        for seq, value in c.results([s for s in seqs if s not in arrivals]):
            arrivals[seq] = value
    greedy.wait(timeout=60)
    assert len(arrivals) == n and n > 200
    for seq, value in arrivals.items():
        assert np.array_equal(value, whole[seq % len(images)]), (seq, value)
    after = parse(chain.metrics(last))
    dropped = sum(after.total("finnchain_errors_total", kind=k)
                  - before.total("finnchain_errors_total", kind=k)
                  for k in ("client-not-reading", "undeliverable"))
    print(f"client B: {n} frames in 10 s, longest gap {max(gaps):.3f} s; A's answers dropped: {dropped:.0f}")
    assert max(gaps) < 1.0, max(gaps)
    assert dropped > 100


def test_the_metrics_server_is_bounded(chain):
    """300 half-open connections: the stage's threads stay bounded, and once they time out
    the metrics answer again."""
    pid = chain.procs[0].pid
    port = json.loads(Path(chain.file).read_text())["stages"][0]["metrics"]
    before = _threads(pid)
    conns = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"GET /metr")  # and never finish the request
        conns.append(s)
    time.sleep(0.5)
    print(f"300 half-open connections: threads {before} -> {_threads(pid)}")
    assert _threads(pid) <= before + 8 + 2, (before, _threads(pid))
    for s in conns:
        s.close()
    time.sleep(4)  # READ_TIMEOUT_S: the held connections are dropped
    assert "finnchain_frames_total" in chain.metrics(0)
    assert parse(chain.metrics(0)).total("finnchain_errors_total", kind="metrics-busy") > 0


def test_a_flood_of_bad_messages_costs_a_few_log_lines(chain):
    import zmq

    from finnchain.runtime.curve import connect_with

    spec = json.loads(Path(chain.file).read_text())
    log = Path(chain.logs[0])
    lines = len(log.read_text().splitlines())
    before = parse(chain.metrics(0)).total("finnchain_errors_total", kind="header")
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    connect_with(s, spec["curve"]["secret"], Path(spec["curve"]["first"]))
    s.connect(spec["first"])
    for _ in range(500):
        s.send_multipart([b"garbage", b"x"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = parse(chain.metrics(0)).total("finnchain_errors_total", kind="header")
        if after - before >= 500:
            break
        time.sleep(0.2)
    s.close()
    print(f"500 bad messages: {after - before:.0f} counted, "
          f"{len(log.read_text().splitlines()) - lines} log lines")
    assert after - before == 500  # every one counted
    assert len(log.read_text().splitlines()) - lines <= 6  # a handful logged
