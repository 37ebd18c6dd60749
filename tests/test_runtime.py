"""The run-time chain: protocol, stage daemons as real processes, the client, bad input, fuzz."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from conftest import distinct
from finnchain.boards.catalogue import Catalogue
from finnchain.fabric.executor import Executor
from finnchain.graph.model import load
from finnchain.ops.local import LocalChain
from finnchain.runtime import protocol as P
from finnchain.runtime.accel import PacedAccelerator, PassThrough
from finnchain.runtime.client import Chain, ChainError
from finnchain.runtime.metrics import parse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_dir(digits, tiny_file, make_build):
    """digits-cnv planned onto tiny boards (several stages) and built for emulation."""
    out = make_build(digits, Catalogue(tiny_file).chain("tiny:4"), "chain")
    assert len(list(out.glob("stage*"))) >= 3
    return out


@pytest.fixture(scope="module")
def chain(build_dir, tmp_path_factory):
    with LocalChain(build_dir, tmp_path_factory.mktemp("run")) as running:
        yield running


@pytest.fixture(scope="module")
def images(digits_test_set):
    return digits_test_set[0].astype(np.uint8)


def test_header_round_trip_and_garbage():
    h = P.Header(P.DATA, 3, b"p" * 16, 2**40, 2, 1234)
    assert P.Header.parse(h.pack()) == h
    with pytest.raises(P.HeaderError, match="header of 5 bytes"):
        P.Header.parse(b"short")
    raw = bytearray(h.pack())
    raw[0] = ord("X")
    with pytest.raises(P.HeaderError, match="bad magic"):
        P.Header.parse(bytes(raw))
    raw = bytearray(h.pack())
    raw[4] = 99
    with pytest.raises(P.HeaderError, match="unknown message kind 99"):
        P.Header.parse(bytes(raw))
    with pytest.raises(P.HeaderError, match="at most"):
        P.Header.parse(P.Header(P.DATA, 0, b"p" * 16, 0, 10**6, 0).pack())


def test_chain_is_bit_exact_with_the_whole_model(chain, build_dir, digits, images):
    with Chain(chain.file, window=8) as c:
        got = c.infer(images)
    whole = Executor(digits).run(images)
    assert np.array_equal(got, whole.astype(np.int32))
    assert distinct(got) == 10
    # the values crossing each cut are not degenerate
    x = images.astype(np.float32)
    for k in range(len(chain.procs) - 1):
        x = Executor(load(build_dir / f"stage{k}" / "model.onnx")).run(x)
        assert distinct(x) >= 8, (k, distinct(x))


def test_counters_in_prometheus_text(chain, images):
    before = parse(chain.metrics(0))
    with Chain(chain.file) as c:
        c.infer(images[:20])
    for k in range(len(chain.procs)):
        m = parse(chain.metrics(k))
        assert m.get("finnchain_frames_total", direction="in") == \
            m.get("finnchain_frames_total", direction="out")
        assert m["finnchain_uptime_seconds"] > 0 and m["finnchain_busy_seconds_total"] > 0
        assert m.get("finnchain_stage_info", stage=str(k)) == 1
        with open(f"/proc/{chain.procs[k].pid}/status") as f:  # the stage's own resident memory
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        assert abs(m["process_resident_memory_bytes"] - rss) < 0.2 * rss
    after = parse(chain.metrics(0))
    assert after.get("finnchain_frames_total", direction="in") - before.get(
        "finnchain_frames_total", direction="in") == 20


def _dealer(address: str, identity: bytes | None = None) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    if identity:
        s.setsockopt(zmq.ROUTING_ID, identity)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    return s


def _reply(sock: zmq.Socket, timeout_ms: int = 5000) -> tuple[P.Header, bytes]:
    assert sock.poll(timeout_ms), "no answer from the stage"
    parts = sock.recv_multipart()
    return P.Header.parse(parts[0]), parts[1]


def test_bad_frames_are_answered_by_name(chain, images):
    plan = P.plan_id(chain.chain.plan_hash)
    size = chain.chain.input["bytes_per_frame"]
    s = _dealer(chain.chain.first)
    try:
        s.send_multipart([P.Header(P.DATA, P.CLIENT, b"x" * 16, 7, 1, size).pack(), bytes(size)])
        h, text = _reply(s)
        assert h.kind == P.ERROR and h.seq == 7
        assert b"frame 7 carries plan 78787878" in text and plan.hex().encode() in text
        s.send_multipart([P.Header(P.DATA, P.CLIENT, plan, 8, 1, 10).pack(), bytes(10)])
        h, text = _reply(s)
        assert b"frame 8: 10 bytes" in text and f"takes {size} bytes".encode() in text
        s.send_multipart([b"garbage!", bytes(size)])
        h, text = _reply(s)
        assert b"garbled header" in text
        s.send_multipart([b"only one part"])
        h, text = _reply(s)
        assert b"expected 2 (header, payload)" in text
    finally:
        s.close()
    m = parse(chain.metrics(0))
    for kind in ("plan", "size", "header", "malformed"):
        assert m.get("finnchain_errors_total", 0, kind=kind) >= 1
    with Chain(chain.file) as c:  # and everyone else is still served
        assert c.infer(images[:5]).shape == (5, 1)


def test_a_client_with_another_plan_gets_the_stage_error(chain, images):
    spec = json.loads(Path(chain.file).read_text())
    spec["plan_hash"] = "ab" * 32
    other = Path(chain.file).with_name("other.json")
    other.write_text(json.dumps(spec))
    with Chain(other, timeout=5) as c, pytest.raises(ChainError, match="stage 0: frame 0 carries"):
        c.infer(images[:1])


def test_errors_deep_in_the_chain_reach_their_client(chain, images):
    """A garbled message arriving at stage 1 names the problem to the client it came from."""
    with Chain(chain.file, timeout=5) as c:
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(f"tcp://127.0.0.1:{chain.chain.stages[1]['data']}")
        push.send_multipart([c.identity, b"not a header", b"payload"])
        c.in_flight[0] = time.monotonic()  # the client waits for "frame 0"
        c.next_seq = 1
        _, value = next(c.results([0]))
        push.close()
    assert isinstance(value, ChainError) and "stage 1: garbled header" in str(value)


def test_fuzzing_the_ports_breaks_nothing(chain, images, digits):
    rng = random.Random(1234)
    plan = P.plan_id(chain.chain.plan_hash)
    size = chain.chain.input["bytes_per_frame"]
    good = P.Header(P.DATA, P.CLIENT, plan, 1, 1, size).pack()
    first = _dealer(chain.chain.first)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{chain.chain.stages[1]['data']}")
    before = parse(chain.metrics(0)).total("finnchain_errors_total")
    sent_bad = 0
    for _i in range(300):
        choice = rng.randrange(4)
        if choice == 0:  # random parts
            parts = [os.urandom(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 5))]
        elif choice == 1:  # a valid header with one byte flipped
            h = bytearray(good)
            h[rng.randrange(len(h))] ^= 1 << rng.randrange(8)
            parts = [bytes(h), os.urandom(size)]
        elif choice == 2:  # a valid header, a payload of the wrong size
            parts = [good, os.urandom(rng.choice([0, size - 1, size + 1, 3 * size]))]
        else:  # random bytes as the payload of a well-formed frame: must still be served
            parts = [good, os.urandom(size)]
        first.send_multipart(parts)
        sent_bad += choice != 3
        push.send_multipart([os.urandom(8), *[os.urandom(rng.randrange(0, 50))
                                              for _ in range(rng.randrange(0, 4))]])
    raw = socket.create_connection(("127.0.0.1", chain.chain.stages[0]["data"]))
    raw.sendall(os.urandom(4096))  # not even ZeroMQ
    raw.close()
    time.sleep(0.5)
    first.close()
    push.close()
    assert all(p.poll() is None for p in chain.procs), "a stage died"
    after = parse(chain.metrics(0)).total("finnchain_errors_total")
    assert after - before >= sent_bad * 0.9  # flipped bits in reserved fields may stay valid
    with Chain(chain.file) as c:
        got = c.infer(images[:50])
    assert np.array_equal(got, Executor(digits).run(images[:50]).astype(np.int32))


def test_bad_images_are_refused_by_the_client(chain, images):
    with Chain(chain.file) as c:
        with pytest.raises(TypeError, match="uint8"):
            c.infer(images[:2].astype(np.float32))
        with pytest.raises(ValueError, match="expected \\(N, 1, 8, 8\\)"):
            c.infer(np.zeros((2, 3, 8, 8), np.uint8))


def test_a_killed_stage_times_out_by_name(build_dir, tmp_path, images):
    with LocalChain(build_dir, tmp_path) as lc, Chain(lc.file, timeout=2) as c:
        assert c.infer(images[:3]).shape == (3, 1)
        lc.procs[1].send_signal(signal.SIGKILL)
        lc.procs[1].wait()
        with pytest.raises(ChainError, match="no answer within 2 s.*; stage 1 .* does not answer"):
            c.infer(images[:3])
        assert not c.in_flight  # every frame ended: a result or an explicit failure


@pytest.mark.parametrize("after", [25, 0], ids=["overtaken by frames", "found by a ping"])
def test_frames_lost_in_a_restarted_stage_fail_by_name_without_waiting(build_dir, tmp_path,
                                                                       images, digits, after):
    """Stage 1 is frozen with frames inside, killed and started again (as its supervisor
    would): the frames it held are overtaken by later ones (or, when none follow, by the
    client's ping) and fail as lost, naming the stage that restarted, long before the
    client's timeout; every frame ends once, in order."""
    whole = Executor(digits).run(images[:40]).astype(np.int32)
    with LocalChain(build_dir, tmp_path) as lc, Chain(lc.file, timeout=120) as c:
        assert np.array_equal(c.infer(images[:5]), whole[:5])
        lc.procs[1].send_signal(signal.SIGSTOP)  # frames pile up in its socket buffers
        sent = parse(lc.metrics(0)).total("finnchain_frames_total", direction="out")
        seqs = c.submit(images[5:15])
        deadline = time.monotonic() + 60  # (a loaded machine: stage 0 computes each frame)
        while parse(lc.metrics(0)).total("finnchain_frames_total", direction="out") < sent + 10:
            assert time.monotonic() < deadline, "stage 0 did not pass the frames on"
            time.sleep(0.05)
        time.sleep(0.3)  # its I/O thread writes them to stage 1's socket
        lc.restart(1)
        for i in range(15, 15 + after):
            seqs += c.submit(images[i:i + 1])
        answers = list(c.results(seqs))
    assert [s for s, _ in answers] == seqs and not c.in_flight and c.late == 0
    lost = [(s, v) for s, v in answers if isinstance(v, ChainError)]
    assert lost, "no frame was held by the killed stage"
    print(f"\n{len(seqs)} frames, {len(lost)} lost in the restarted stage: {lost[0][1]}")
    for s, v in lost:
        assert 5 <= s < 15, f"frame {s} failed, but it was sent after the restart"
        assert re.search(r"lost on the way \((frame|a ping sent behind frame) \d+ came back "
                         r"before it.*stage 1 .*restarted",
                         str(v)), str(v)
        assert "no answer within" not in str(v)
    for s, v in answers:
        if not isinstance(v, ChainError):
            assert np.array_equal(v, whole[s]), f"frame {s} wrong"
    assert sum(not isinstance(v, ChainError) for s, v in answers if s >= 15) == after


def test_a_first_stage_refusal_overtaken_by_results_keeps_its_own_message(chain, images):
    """The first stage answers a bad frame directly, on the other socket: results of later
    frames that come back through the chain first must not make it look lost."""
    with Chain(chain.file, timeout=60) as c:
        c.send.send_multipart([P.Header(P.DATA, P.CLIENT, c.plan, c.next_seq, 1, 3).pack(),
                               b"abc"])
        seqs = [c.next_seq]
        c.in_flight[c.next_seq] = time.monotonic()
        c.next_seq += 1
        seqs += c.submit(images[:30])
        answers = dict(c.results(seqs))
    assert isinstance(answers[seqs[0]], ChainError)
    assert "stage 0: frame" in str(answers[seqs[0]]) and "3 bytes" in str(answers[seqs[0]])
    assert not any(isinstance(answers[s], ChainError) for s in seqs[1:]) and c.late == 0


def test_stage_config_errors_are_named(tmp_path):
    cfg = tmp_path / "stage.json"
    cfg.write_text(json.dumps({"listen": "tcp://127.0.0.1:1", "colour": "red"}))
    r = subprocess.run([sys.executable, "-m", "finnchain.cli", "stage", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "unknown keys ['colour']" in r.stderr
    cfg.write_text(json.dumps({"listen": "tcp://127.0.0.1:1"}))
    r = subprocess.run([sys.executable, "-m", "finnchain.cli", "stage", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "'stage_dir' is required" in r.stderr


def test_paced_accelerator_is_never_faster_than_the_plan():
    acc = PacedAccelerator(PassThrough(100), cycles=2_000_000, clock_mhz=100)  # 20 ms a frame
    t = time.perf_counter()
    out = acc.run(bytes(300), 3)
    assert time.perf_counter() - t >= 0.06 and bytes(out) == bytes(300)


def test_curve_links_refuse_strangers(build_dir, tmp_path, images, digits):
    """With CURVE, the configured client is served bit-exactly; a client without keys or with
    keys of its own is not, and a stranger's frames pushed at stage 1 never enter it."""
    with LocalChain(build_dir, tmp_path, curve=True) as lc:
        with Chain(lc.file, timeout=10) as c:
            got = c.infer(images[:40])
        assert np.array_equal(got, Executor(digits).run(images[:40]).astype(np.int32))
        before = [parse(lc.metrics(k)) for k in range(2)]
        spec = json.loads(Path(lc.file).read_text())
        size = spec["input"]["bytes_per_frame"]
        frame = [P.Header(P.DATA, P.CLIENT, P.plan_id(spec["plan_hash"]), 0, 1, size).pack(),
                 bytes(size)]
        plain = _dealer(spec["first"])  # no CURVE at all
        plain.send_multipart(frame)
        assert not plain.poll(1500)
        plain.close()
        import zmq.auth

        from finnchain.runtime.curve import connect_with, make_certificates

        make_certificates(tmp_path / "stranger", ["mallory"])
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        connect_with(s, tmp_path / "stranger" / "mallory.key_secret",
                     Path(spec["curve"]["first"]))
        s.connect(spec["first"])
        s.send_multipart(frame)
        assert not s.poll(1500)  # a key the stage was not given: refused
        s.close()
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(f"tcp://127.0.0.1:{spec['stages'][1]['data']}")
        push.send_multipart([b"client12", *frame], flags=zmq.NOBLOCK)
        time.sleep(1.0)
        push.close()
        after = [parse(lc.metrics(k)) for k in range(2)]
        assert [a.get("finnchain_frames_total", direction="in") for a in after] == \
            [b.get("finnchain_frames_total", direction="in") for b in before]
        with Chain(lc.file, timeout=10) as c:  # and the configured client is still served
            assert c.infer(images[:5]).shape == (5, 1)


def test_a_stream_times_every_frame_and_keeps_the_promise(chain, digits, images):
    """Chain.stream: frames cycle through the images, every frame ends once with its own
    result, timed from its submission; ``send`` takes exactly one of frames/seconds/until."""
    whole = Executor(digits).run(images).astype(np.int32)
    with Chain(chain.file, window=8) as c:
        s = c.stream(images[:7])  # fewer images than frames: they cycle
        seen = []
        assert s.send(frames=30, each=lambda st: seen.append(len(st.seqs))) == 30
        assert seen == list(range(1, 31))
        with pytest.raises(ValueError, match="exactly one"):
            s.send(frames=1, seconds=1.0)
        sent = s.send(seconds=0.3)
        assert sent > 0
        r = s.finish()
    assert len(r.seqs) == 30 + sent and r.lost == 0 and not r.failed
    assert [r.carried[q] for q in r.seqs[:9]] == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    for q, v in r.delivered:
        assert np.array_equal(v, whole[r.carried[q]]), q
    lat = r.latency_ms()
    assert lat.shape == (len(r.seqs),) and (lat > 0).all()
    assert all(r.ended[q] >= r.sent[q] for q in r.seqs)
    assert r.frames_per_s() == pytest.approx(len(r.seqs) / r.seconds)
    step = r.timeline()[1][0] - r.timeline()[0][0]
    assert sum(rate for _, rate in r.timeline()) * step == pytest.approx(len(r.seqs), rel=0.01)


def test_the_stages_run_on_a_pynq_images_python(build, board_python, digits, images):
    """The board side on PYNQ v3.0's Python (3.10) with the oldest numpy and pyzmq finnchain
    accepts, the image's pynq library and nothing of the controller's: stages started there
    (CURVE on, FINN's own driver on pynq, the emulated PL behind it) answer this machine's
    client bit for bit and serve their metrics, which name pynq and the PL clock."""
    probe = subprocess.run(
        [str(board_python), "-c", "import sys, numpy, zmq, importlib.util as u; "
         "print(sys.version_info[:2], numpy.__version__, zmq.__version__, "
         "[m for m in ('torch', 'qonnx', 'onnx', 'brevitas', 'rich', 'yaml', 'prometheus_client') "
         "if u.find_spec(m)])"], capture_output=True, text=True, check=True).stdout.strip()
    print(f"\nboard python: {probe}")
    assert probe == "(3, 10) 1.21.6 22.3.0 []", probe
    whole = Executor(digits).run(images).astype(np.int32)
    with LocalChain(build, build.parent / "board-py", python=board_python,
                    curve=True) as lc, Chain(lc.file, window=8, timeout=30) as c:
        got = c.infer(images)
        readings = [parse(lc.metrics(k)) for k in range(len(lc.procs))]
    assert readings[0].get("finnchain_frames_total", direction="in") == len(images)
    for r in readings:
        (info,) = [s.labels for s in r.samples if s.name == "finnchain_stage_info"]
        assert (info["accelerator"], info["pynq"], info["device"], info["fclk_mhz"]) == (
            "finn", "3.0.1", "finnchain-emulated-pl", "100"), info
    rss = [r["process_resident_memory_bytes"] / 2**20 for r in readings]
    print("stage resident memory on the board's Python, MiB: "
          + ", ".join(f"{m:.1f}" for m in rss))
    assert all(m > 0 for m in rss)
    assert np.array_equal(got, whole) and distinct(got) == 10


@pytest.mark.parametrize("span", [0.3, 0.44, 7.3])
def test_a_timeline_adds_up_to_the_frames_delivered(span):
    """The timeline's rates times its step give back every frame delivered, whatever the run's
    length (a 0.44 s run has 11 ms steps, which edges rounded to 10 ms read 9 % short)."""
    from finnchain.runtime.stream import StreamReport

    ends = np.sort(np.random.default_rng(5).uniform(0.001, span, size=129))
    report = StreamReport(seqs=list(range(129)), sent=dict.fromkeys(range(129), 0.0),
                          ended={q: float(t) for q, t in enumerate(ends)},
                          answers={q: np.zeros(1, np.int32) for q in range(129)},
                          carried=dict.fromkeys(range(129), 0), started=0.0,
                          finished=span, late=0)
    line = report.timeline()
    step = line[1][0] - line[0][0]
    assert sum(rate for _, rate in line) * step == pytest.approx(129, rel=0.01)
