"""The emulated cluster and the Ansible deployment, end to end (needs root, as CI has).

Three emulated boards (the session's ``boards`` fixture, shared with tests/faults); the small
trained model's plan deployed with the real ``ansible-playbook deploy.yml``; a second run
changes nothing; images through the chain match the whole model bit for bit; ``emu down``
leaves nothing behind (checked when the fixture ends).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clusterkit import ROOT, fab, playbook, recap, ssh
from finnchain.emu import cluster
from finnchain.emu.executor import Executor
from finnchain.runtime.client import Chain

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the emulated cluster needs root")


def test_boards_look_like_fresh_pynq_images(boards):
    status = cluster.status()
    assert [b["name"] for b in status] == ["board1", "board2", "board3"]
    assert all(b["running"] and b["ssh"] for b in status)
    assert all(b["address"].startswith("127.77.0.") for b in status)
    board = status[1]
    r = ssh(board["address"], ("hostname; ls /usr/local/share/pynq-venv/bin/python; "
                               "cat /etc/network/interfaces.d/eth0; "
                               "echo xilinx | sudo -S -p '' id -u"), password="xilinx")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "board2" and "inet dhcp" in r.stdout and "192.168.2.99" in r.stdout
    assert r.stdout.strip().endswith("0")  # sudo works with the default password
    assert not Path("/etc/finnchain-emu-board").exists()  # the machine's /etc is untouched


def test_deploy_twice_then_infer_bit_exactly(boards, build, digits, digits_test_set):
    first = playbook(boards, build)
    assert first.returncode == 0, first.stdout[-3000:]
    second = playbook(boards, build, fresh_connections=True)
    assert second.returncode == 0, second.stdout[-3000:]
    counts = recap(second.stdout)
    assert set(counts) >= {"board1", "board2", "board3"}
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in counts.values()), counts
    images = digits_test_set[0].astype(np.uint8)
    spec = json.loads((build / "chain.json").read_text())
    assert spec["curve"]  # the deployed links are CURVE-encrypted and authenticated
    with Chain(build / "chain.json", timeout=30) as chain:
        got = chain.infer(images)
    assert np.array_equal(got, Executor(digits).run(images).astype(np.int32))
    # a client without the chain's keys gets nothing from the first board
    import zmq

    from finnchain.runtime import protocol as P

    stranger = zmq.Context.instance().socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect(spec["first"])
    size = spec["input"]["bytes_per_frame"]
    stranger.send_multipart([P.Header(P.DATA, P.CLIENT, P.plan_id(spec["plan_hash"]), 0, 1,
                                      size).pack(), bytes(size)])
    assert not stranger.poll(2000)
    stranger.close()
    # provisioning took the default password away: it no longer opens the board
    r = ssh("127.77.0.11", "true", password="xilinx")
    assert r.returncode != 0


def test_fab_benchmark_status_and_health(boards, build, tmp_path):
    r = fab("benchmark", "--build", str(build), "--frames", "400", "--source", "dataset",
            "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "benchmark-digits-cnv.json").read_text())
    for key in ("frames", "frames_lost", "frames_per_s", "latency_ms_p50", "latency_ms_p99",
                "bit_exact", "predicted_fps"):
        assert key in result, key
    assert result["frames"] == 400 and result["frames_lost"] == 0 and result["bit_exact"]
    assert all(s["busy_percent"] > 0 for s in result["stages"])
    assert (tmp_path / "benchmark-digits-cnv.png").stat().st_size > 1000

    health = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "health",
              "--hosts=ansible://boards", f"--ansible-inventory={boards}"]
    env = {**os.environ, "FINNCHAIN_BUILD": str(build),  # testinfra calls ansible-inventory
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(health, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env=env)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "skipped" not in r.stdout.splitlines()[-1]

    # a stage stopped by hand: the health checks fail and name that board, and only it
    assert ssh("127.77.0.12", "sudo /etc/init.d/finnchain-stage stop").returncode == 0
    r = subprocess.run(health, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env=env)
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert r.returncode == 1 and failed, r.stdout[-3000:]
    assert all("board2" in line for line in failed), failed
    r = fab("status", "--inventory", str(boards))
    assert r.returncode == 1 and "board2 (127.77.0.12): stopped" in r.stdout, r.stdout + r.stderr
    # fab start brings the stopped stage back (last stage first); the checks pass again
    r = fab("start", "--inventory", str(boards))
    assert r.returncode == 0 and "board2" in r.stdout, r.stdout + r.stderr
    r = fab("restart", "--inventory", str(boards))
    assert r.returncode == 0 and "restarted: board3, board2, board1" in r.stdout, r.stdout
    r = fab("logs", "--inventory", str(boards), "--lines", "5")
    assert r.returncode == 0 and r.stdout.count("ready") >= 3, r.stdout  # each stage's log
    r = subprocess.run(health, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env=env)
    assert r.returncode == 0, r.stdout[-3000:]
