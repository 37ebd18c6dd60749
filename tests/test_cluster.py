"""The emulated cluster and the Ansible deployment, end to end (needs root, as CI has).

Three emulated boards; the small trained model's plan deployed with the real
``ansible-playbook deploy.yml``; a second run changes nothing; images through the chain match
the whole model bit for bit; ``emu down`` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finnchain.boards.catalogue import Catalogue
from finnchain.emu import cluster
from finnchain.emu.executor import Executor
from finnchain.plan.make import make_plan, write_plan
from finnchain.runtime.client import Chain, ChainError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the emulated cluster needs root")


def _finnchain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finnchain.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


def _playbook(inventory: Path, build: Path, fresh_connections: bool = False
              ) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if fresh_connections:  # no SSH connection kept from the run before: key logins only
        env["ANSIBLE_SSH_ARGS"] = "-o ControlMaster=no"
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "deploy.yml", "-i",
         str(inventory), "-e", f"finnchain_build={build}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False, env=env)


def _recap(output: str) -> dict[str, dict[str, int]]:
    rows = re.findall(r"^(\S+)\s+:\s+(.*)$", output.split("PLAY RECAP")[-1], re.MULTILINE)
    return {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
            for host, counts in rows}


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    if cluster.load():
        pytest.skip("an emulated cluster is already up on this machine (finnchain emu down)")
    inventory = tmp_path_factory.mktemp("inventory") / "emulated.yml"
    r = _finnchain("emu", "up", "--boards", "3", "--inventory", str(inventory))
    assert r.returncode == 0, r.stdout + r.stderr
    yield inventory
    r = _finnchain("emu", "down")
    assert r.returncode == 0, r.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=False).stdout
    assert "fc-" not in netns, netns
    links = subprocess.run(["ip", "link"], capture_output=True, text=True, check=False).stdout
    assert cluster.HOST_LINK not in links
    assert not cluster.STATE.exists()


@pytest.fixture(scope="module")
def build(digits, tiny_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    plan, _, models = make_plan(digits, Catalogue(tiny_file).chain("tiny:3"), "digits-cnv", "x")
    assert len(plan.stages) == 3
    write_plan(plan, models, folder / "plan")
    r = subprocess.run([sys.executable, "build/build.py", str(folder / "plan"), "--out",
                        str(folder / "build")], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    return folder / "build"


def test_boards_look_like_fresh_pynq_images(boards):
    status = cluster.status()
    assert [b["name"] for b in status] == ["board1", "board2", "board3"]
    assert all(b["running"] and b["ssh"] for b in status)
    assert all(b["address"].startswith("127.77.0.") for b in status)
    board = status[1]
    r = subprocess.run(["sshpass", "-p", "xilinx", "ssh", "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", f"xilinx@{board['address']}",
                        ("hostname; ls /usr/local/share/pynq-venv/bin/python; "
                         "cat /etc/network/interfaces.d/eth0; echo xilinx | sudo -S -p '' id -u")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "board2" and "inet dhcp" in r.stdout and "192.168.2.99" in r.stdout
    assert r.stdout.strip().endswith("0")  # sudo works with the default password
    assert not Path("/etc/finnchain-emu-board").exists()  # the machine's /etc is untouched


def test_deploy_twice_then_infer_bit_exactly(boards, build, digits, digits_test_set):
    first = _playbook(boards, build)
    assert first.returncode == 0, first.stdout[-3000:]
    second = _playbook(boards, build, fresh_connections=True)
    assert second.returncode == 0, second.stdout[-3000:]
    recap = _recap(second.stdout)
    assert set(recap) >= {"board1", "board2", "board3"}
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap
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
    r = subprocess.run(["sshpass", "-p", "xilinx", "ssh", "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no",
                        "xilinx@127.77.0.11", "true"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode != 0


def test_fab_benchmark_status_and_health(boards, build, tmp_path):
    fab = str(Path(sys.executable).with_name("fab"))
    r = subprocess.run([fab, "benchmark", "--build", str(build), "--frames", "400", "--source",
                        "dataset", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, check=False)
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
    subprocess.run(["ssh", "-i", str(Path("~/.ssh/finnchain_ed25519").expanduser()),
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "xilinx@127.77.0.12", "sudo /etc/init.d/finnchain-stage stop"],
                   capture_output=True, timeout=60, check=True)
    r = subprocess.run(health, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env=env)
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert r.returncode == 1 and failed, r.stdout[-3000:]
    assert all("board2" in line for line in failed), failed
    r = subprocess.run([fab, "status", "--inventory", str(boards)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    # fab start brings the stopped stage back (last stage first); the checks pass again
    r = subprocess.run([fab, "start", "--inventory", str(boards)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and "board2" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([fab, "restart", "--inventory", str(boards)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and "restarted: board3, board2, board1" in r.stdout, r.stdout
    r = subprocess.run([fab, "logs", "--inventory", str(boards), "--lines", "5"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and r.stdout.count("ready") >= 3, r.stdout  # each stage's log
    r = subprocess.run(health, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env=env)
    assert r.returncode == 0, r.stdout[-3000:]


def test_a_killed_stage_comes_back_and_no_frame_is_lost_silently(boards, build, digits,
                                                                   digits_test_set):
    """Kill stage 1's process mid-stream: it restarts by itself, the chain resumes, and every
    submitted frame ends once, as a correct result or as an explicit failure, in order."""
    images = digits_test_set[0].astype(np.uint8)
    whole = Executor(digits).run(images).astype(np.int32)
    frames, kill_at = 600, 150
    ssh = ["ssh", "-i", str(Path("~/.ssh/finnchain_ed25519").expanduser()), "-o",
           "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "xilinx@127.77.0.12"]
    with Chain(build / "chain.json", window=8, timeout=5) as chain:
        seqs = []
        for i in range(frames):
            seqs += chain.submit(images[i % len(images)][None])
            if i == kill_at:
                # the stage's python, not its supervisor (whose command line names it too)
                subprocess.run([*ssh, ("sudo pkill -KILL -f '^/usr/local/share/pynq-venv/bin/"
                                      "python -m [f]innchain.cli stage'")],
                               capture_output=True, timeout=60, check=True)
        answers = list(chain.results(seqs))
    assert [s for s, _ in answers] == seqs  # each frame once, in submission order
    failed = [s for s, v in answers if isinstance(v, ChainError)]
    delivered = [(s, v) for s, v in answers if not isinstance(v, ChainError)]
    assert all(np.array_equal(v, whole[s % len(images)]) for s, v in delivered)
    assert all("no answer within" in str(v) for _, v in answers if isinstance(v, ChainError))
    assert max(s for s, _ in delivered) > kill_at + 50  # the chain resumed after the restart
    assert len(failed) < 60
    print(f"submitted {len(seqs)}, delivered {len(delivered)}, failed {len(failed)}, lost 0, "
          f"late answers dropped {chain.late}")
