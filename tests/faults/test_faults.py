"""Faults on the emulated cluster (root only): a stage killed during a benchmark, a board's link
down for seconds, a board that stays down and is replaced. Each test streams real frames and
checks the chain's promise: every submitted frame ends once, as a correct result or as an
explicit failure, in submission order; none is lost silently. Each prints frames submitted,
delivered, failed and lost, and the recovery time.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from clusterkit import STAGE_PROCESS, fab, finnchain, playbook, recap, ssh
from finnchain.fabric.executor import Executor
from finnchain.runtime.client import Chain, ChainError
from finnchain.runtime.metrics import scrape
from finnchain.runtime.ports import METRICS_PORT
from finnchain.runtime.stream import Stream

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the emulated cluster needs root")
BOARD2 = "127.77.0.12"  # stage 1 of the three-board chain


@pytest.fixture(scope="module")
def expected(digits, digits_test_set):
    images = digits_test_set[0].astype(np.uint8)
    return images, Executor(digits).run(images).astype(np.int32)


def check(stream: Stream, whole: np.ndarray, name: str, since: float | None = None,
          timed: bool = True) -> dict:
    """Finish ``stream`` and check the chain's promise: every frame ended once, delivered ones
    correct. ``timed``: the stream was read all along, so failures were seen when they came."""
    r = stream.finish()
    assert set(r.answers) == set(r.seqs)  # each frame ended, once
    wrong = [s for s, v in r.delivered if not np.array_equal(v, whole[r.carried[s]])]
    assert not wrong, f"frames {wrong[:5]} delivered with wrong results"
    report = {"fault": name, "submitted": len(r.seqs), "delivered": len(r.delivered),
              "failed": len(r.failed), "lost": r.lost, "late_answers_dropped": r.late,
              "errors": [str(v) for _, v in r.failed],
              "failure_reported_s": r.failure_reported_s() if timed else None}
    if since is not None:  # the first frame delivered after the fault (or its end)
        report["recovery_s"] = r.recovery_s(since)
    print(f"\n{name}: submitted {report['submitted']}, delivered {report['delivered']}, "
          f"failed {report['failed']}, lost {report['lost']}, late answers dropped "
          f"{report['late_answers_dropped']}, recovery {report.get('recovery_s')} s"
          + (f", failures reported within {report['failure_reported_s']} s of sending"
             if timed else "")
          + (f"; first failure: {report['errors'][0]}" if r.failed else ""))
    return report


def test_a_stage_killed_during_a_benchmark_comes_back(deployed, boards, tmp_path):
    """`fab benchmark` streams for 20 s; stage 1's process is killed 5 s in: its supervisor
    starts it again, the benchmark goes on, and no frame is lost."""
    import subprocess

    from clusterkit import BIN, ROOT

    bench = subprocess.Popen(
        [str(BIN / "fab"), "benchmark", "--build", str(deployed), "--duration", "20",
         "--timeout", "20", "--window", "8", "--source", "dataset", "--out", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(5)
        before = scrape(BOARD2, METRICS_PORT)
        assert before.total("finnchain_frames_total", direction="in") > 0  # streaming
        assert bench.poll() is None
        killed = time.monotonic()
        assert ssh(BOARD2, f"sudo pkill -KILL -f {STAGE_PROCESS}").returncode == 0
        while True:  # until a new stage process answers (its uptime restarts)
            m = scrape(BOARD2, METRICS_PORT, timeout=1)
            if m and m["finnchain_uptime_seconds"] < time.monotonic() - killed:
                break
            assert time.monotonic() - killed < 60, "stage 1 did not come back"
            time.sleep(0.1)
        restarted = round(time.monotonic() - killed, 2)
        out, _ = bench.communicate(timeout=300)
    finally:
        if bench.poll() is None:
            bench.kill()
    result = json.loads((tmp_path / "benchmark-digits-cnv.json").read_text())
    assert bench.returncode == (1 if result["frames_failed"] else 0), out[-2000:]
    assert result["frames_lost"] == 0 and result["bit_exact"], result
    assert result["frames_received"] + result["frames_failed"] == result["frames"]
    # frames the killed process held (if any) are overtaken by later frames or by the client's
    # ping: they fail as lost once the stage is back, naming it, not after the 20 s timeout
    assert all("lost on the way" in e and "board2 (stage 1 at 127.77.0.12) restarted" in e
               for e in result["errors"]), result["errors"]
    timeline = result["throughput_timeline"]
    assert timeline and sum(rate for _, rate in timeline[-5:]) > 0  # still streaming at the end
    print(f"\nstage killed in fab benchmark: submitted {result['frames']}, delivered "
          f"{result['frames_received']}, failed {result['frames_failed']}, lost "
          f"{result['frames_lost']}; stage back after {restarted} s"
          + (f"; first failure: {result['errors'][0]}" if result["errors"] else ""))


def test_a_link_down_for_three_seconds(deployed, expected):
    images, whole = expected
    events: dict[str, float] = {}

    def outage() -> None:
        events["down"] = time.monotonic()
        assert finnchain("emu", "link", "board2", "down").returncode == 0
        time.sleep(3)
        assert finnchain("emu", "link", "board2", "up").returncode == 0
        events["up"] = time.monotonic()

    with Chain(deployed / "chain.json", window=8, timeout=5) as chain:
        stream = chain.stream(images)
        stream.send(100)
        fault = threading.Thread(target=outage)
        fault.start()
        # frames keep coming while the link is down
        stream.send(until=lambda: not fault.is_alive(), pause=0.01)
        stream.send(300)
        report = check(stream, whole, "link down 3 s", since=events["up"])
    assert report["lost"] == 0 and report["delivered"] >= 400
    assert all("lost on the way" in e or "no answer within 5 s" in e for e in report["errors"])
    assert report["recovery_s"] is not None  # frames sent after the link came back got through


def test_a_board_that_stays_down_is_named_and_a_deploy_restores_it(deployed, boards, build,
                                                                   expected):
    """board2 loses power: the client's failures and `fab status` name it; it comes back as a
    freshly flashed board; `ansible-playbook deploy.yml --limit board2` restores the chain."""
    images, whole = expected
    with Chain(deployed / "chain.json", window=8, timeout=3) as chain:
        stream = chain.stream(images)
        stream.send(100)
        assert finnchain("emu", "power", "board2", "off").returncode == 0
        off = time.monotonic()
        named = None
        while named is None:  # the client's explicit failures name the board
            stream.send(1, pause=0.05)
            for s, v in stream.answers.items():
                if isinstance(v, ChainError) and "board2 (stage 1 at 127.77.0.12) does not " \
                                                  "answer" in str(v):
                    named = stream.ended[s] - off
            assert time.monotonic() - off < 60, "the client never named board2"
        t0 = time.monotonic()
        r = fab("status", "--inventory", str(boards), timeout=60)
        status_s = time.monotonic() - t0
        assert r.returncode == 1, r.stdout + r.stderr  # a board is down
        rows = [line for line in r.stdout.splitlines() if "board2" in line]
        assert rows and all("unreachable" in line for line in rows), r.stdout
        assert not any("unreachable" in line for line in r.stdout.splitlines()
                       if "board1" in line or "board3" in line), r.stdout

        # a replacement board (a freshly flashed card): the chain does not work by itself ...
        assert finnchain("emu", "power", "board2", "on", "--fresh").returncode == 0
        assert ssh(BOARD2, "true", password="xilinx").returncode == 0  # fresh image
        assert not scrape(BOARD2, METRICS_PORT, timeout=1)  # no stage on it
        # ... the deploy of that one board does; the others are not touched
        t0 = time.monotonic()
        r = playbook(boards, build, "--limit", "board2", fresh_connections=True)
        deploy_s = time.monotonic() - t0
        assert r.returncode == 0, r.stdout[-3000:]
        assert set(recap(r.stdout)) == {"board2"}
        restored, first_after = time.monotonic(), len(stream.seqs)
        stream.send(300)
        report = check(stream, whole, "board down, replaced, deploy --limit", since=restored,
                       timed=False)  # not read during the deploy
    assert report["lost"] == 0
    assert report["failed"] > 0 and all("does not answer" in e or "no answer" in e or
                                        "lost on the way" in e for e in report["errors"])
    # every frame sent after the deploy got through
    assert all(not isinstance(v, ChainError) for s, v in stream.answers.items()
               if s >= first_after)
    print(f"board2 named by the client after {named:.1f} s, by fab status in {status_s:.1f} s; "
          f"deploy --limit board2 took {deploy_s:.0f} s")


def test_a_deploy_with_a_board_down_starts_none_and_leaves_the_chain_as_it_was(deployed, boards,
                                                                           build):
    """board2 is off: `ansible-playbook deploy.yml` stops before any board changes, exits
    non-zero naming board2, and the stages of board1 and board3 keep running untouched."""
    up = {b: scrape(a, METRICS_PORT)["finnchain_uptime_seconds"]
          for b, a in (("board1", "127.77.0.11"), ("board3", "127.77.0.13"))}
    assert finnchain("emu", "power", "board2", "off").returncode == 0
    try:
        t0 = time.monotonic()
        r = playbook(boards, build, "-e", "finnchain_reach_seconds=5", fresh_connections=True)
        took = time.monotonic() - t0
        assert r.returncode != 0
        assert "board2" in r.stdout and ("UNREACHABLE" in r.stdout or "timed out" in r.stdout)
        counts = recap(r.stdout)
        assert all(c["changed"] == 0 for c in counts.values()), counts
        assert "PLAY [Provision the boards" not in r.stdout
        for b, a in (("board1", "127.77.0.11"), ("board3", "127.77.0.13")):
            now = scrape(a, METRICS_PORT)["finnchain_uptime_seconds"]
            assert now > up[b] + took - 1, (b, up[b], now)  # not restarted
    finally:
        assert finnchain("emu", "power", "board2", "on").returncode == 0
    print(f"deploy with board2 off: stopped after {took:.0f} s, naming board2; nothing changed")
