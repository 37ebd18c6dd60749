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
from finnchain.fabric.executor import Executor
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
    # a PYNQ image runs sshd and nothing else of this machine's (no database, no web server)
    listening = subprocess.run(["ip", "netns", "exec", "fc-board2", "ss", "-ltnH"],
                               capture_output=True, text=True, check=True).stdout
    ports = {line.split()[3].rsplit(":", 1)[1] for line in listening.splitlines()}
    assert ports == {"22"}, listening
    # tools see a board without systemd (the health checks' service module, Ansible's facts)
    r = ssh(board["address"], "command -v systemctl || echo none")
    assert r.returncode == 0 and r.stdout.strip() == "none", r.stdout + r.stderr


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
    from finnchain.models.digits_data import dataset

    _, _, x, y = dataset(0)  # the test images, labelled: accuracy beside the whole model's
    np.savez(tmp_path / "test-images.npz", images=x.astype(np.uint8), labels=y)
    r = fab("benchmark", "--build", str(build), "--frames", "400", "--dataset",
            str(tmp_path / "test-images.npz"), "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "benchmark-digits-cnv.json").read_text())
    acc = result["accuracy"]
    assert acc["images"] == acc["of"] == len(x) and acc["parted"] == 0
    assert acc["top1"] == acc["top1_whole_model"] > 0.9
    assert "top-1" in r.stdout and f"{acc['top1']:.2%}" in r.stdout
    for key in ("frames", "frames_lost", "frames_per_s", "latency_ms_p50", "latency_ms_p99",
                "bit_exact", "predicted_fps"):
        assert key in result, key
    assert result["frames"] == 400 and result["frames_lost"] == 0 and result["bit_exact"]
    # compared with the plan's own prediction for the chain, and what binds it is said
    planned = json.loads((build / "manifest.json").read_text())["predicted"]
    assert result["predicted_fps"] == round(planned["fps"], 2)
    assert result["predicted_by"].startswith(f"stage {planned['bottleneck']['stage']} "
                                             f"{planned['bottleneck']['limit']}")
    assert "bound by" in r.stdout
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

    # a stage stopped by hand, a link planted in its overlay and a directory left empty: the
    # health checks fail and name that board, and only it
    planted = "/opt/finnchain/stage/shadow /opt/finnchain/stage/leftover"
    assert ssh("127.77.0.12", "sudo /etc/init.d/finnchain-stage stop && sudo ln -s /etc/shadow "
               "/opt/finnchain/stage/shadow && sudo mkdir /opt/finnchain/stage/leftover"
               ).returncode == 0
    r = subprocess.run(health, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env=env)
    assert ssh("127.77.0.12", f"sudo rm -r {planted}").returncode == 0
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED")]
    assert r.returncode == 1 and failed, r.stdout[-3000:]
    assert all("board2" in line for line in failed), failed
    assert "not files of the overlay: ['/opt/finnchain/stage/shadow']" in r.stdout, r.stdout[-3000:]
    assert "empty directories in the overlay: ['/opt/finnchain/stage/leftover']" in r.stdout
    r = fab("status", "--inventory", str(boards))
    assert r.returncode == 1 and "board2 (127.77.0.12): stopped" in r.stdout, r.stdout + r.stderr
    # fab start brings the stopped stage back (last stage first); the checks pass again
    r = fab("start", "--inventory", str(boards), "--build", str(build))
    assert r.returncode == 0 and "board2" in r.stdout, r.stdout + r.stderr
    r = fab("restart", "--inventory", str(boards), "--build", str(build))
    assert r.returncode == 0 and "restarted: board3, board2, board1" in r.stdout, r.stdout
    r = fab("logs", "--inventory", str(boards), "--lines", "5")
    assert r.returncode == 0 and r.stdout.count("ready") >= 3, r.stdout  # each stage's log
    r = subprocess.run(health, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env=env)
    assert r.returncode == 0, r.stdout[-3000:]


def test_a_changed_host_key_stops_the_deploy_by_name(boards, deployed, build):
    """board2 answers with another host key than the one recorded (as another machine at its
    address would): the deploy stops before changing anything, naming board2."""
    from clusterkit import KNOWN_HOSTS

    saved = KNOWN_HOSTS.read_text()
    impostor = Path(KNOWN_HOSTS.parent / "impostor")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)],
                   check=True)
    other = impostor.with_suffix(".pub").read_text().split()[:2]
    lines = [ln if not ln.startswith("board2,") else f"{ln.split()[0]} {' '.join(other)}"
             for ln in saved.splitlines()]
    try:
        KNOWN_HOSTS.write_text("\n".join(lines) + "\n")
        r = playbook(boards, build, fresh_connections=True)
        assert r.returncode != 0
        assert "board2" in r.stdout and "Host key verification failed" in r.stdout, r.stdout[-3000:]
        counts = recap(r.stdout)
        assert all(c["changed"] == 0 for c in counts.values()), counts
        assert "PLAY [Provision the boards" not in r.stdout  # stopped before any board changed
    finally:
        KNOWN_HOSTS.write_text(saved)
        for f in (impostor, impostor.with_suffix(".pub")):
            f.unlink(missing_ok=True)


def test_a_board_gets_exactly_the_manifest_and_tags_redeploy_one_role(boards, deployed, build):
    from finnchain.runtime.metrics import scrape
    from finnchain.runtime.ports import METRICS_PORT

    assert ssh("127.77.0.12", "echo echo owned | sudo tee /opt/finnchain/stage/planted.sh "
                              ">/dev/null").returncode == 0
    before = scrape("127.77.0.12", METRICS_PORT)["finnchain_uptime_seconds"]
    r = playbook(boards, build, "--tags", "overlay", fresh_connections=True)
    assert r.returncode == 0, r.stdout[-3000:]
    counts = recap(r.stdout)
    assert counts["board2"]["changed"] >= 1 and counts["board1"]["changed"] == 0, counts
    # no task of the other roles ran (their argument checks run always, as Ansible adds them),
    # but the chain role's restart in the chain's order, which the overlay's change asks for
    ran = [line for line in r.stdout.splitlines() if line.startswith("TASK [")
           and "Validating arguments against arg spec" not in line]
    restart = ("Ask finnchain for the chain's ports once", "Work out this board's place",
               "Ask for a restart", "Restart the stage now", "Start the stage",
               "Wait until the stage answers")
    assert not any(t.startswith(("TASK [provision", "TASK [runtime")) for t in ran), ran
    assert all(t.split(" : ", 1)[1].startswith(restart) for t in ran
               if t.startswith("TASK [chain")), ran
    assert ssh("127.77.0.12", "test -e /opt/finnchain/stage/planted.sh").returncode == 1
    # the stage was restarted by the handler (its files changed), the others were not
    assert scrape("127.77.0.12", METRICS_PORT)["finnchain_uptime_seconds"] < before
    r = playbook(boards, build, "--tags", "chain", fresh_connections=True)
    assert r.returncode == 0 and all(c["changed"] == 0 for c in recap(r.stdout).values())


def test_a_stray_sigterm_is_not_a_stop_and_logs_rotate(boards, deployed):
    import time

    from clusterkit import STAGE_PROCESS
    from finnchain.runtime.metrics import scrape
    from finnchain.runtime.ports import METRICS_PORT

    assert ssh("127.77.0.13", f"sudo pkill -TERM -f {STAGE_PROCESS}").returncode == 0
    deadline = time.monotonic() + 20
    back = None
    while time.monotonic() < deadline and back is None:
        m = scrape("127.77.0.13", METRICS_PORT, timeout=1)
        if m and m["finnchain_uptime_seconds"] < 15:
            back = m
        time.sleep(0.5)
    assert back, "the stage did not come back after SIGTERM"
    r = ssh("127.77.0.11", "sudo logrotate -f /etc/logrotate.d/finnchain-stage && "
                           "ls /var/log/finnchain-stage.log*")
    assert r.returncode == 0, r.stderr
    assert "/var/log/finnchain-stage.log.1.gz" in r.stdout.split(), r.stdout


def test_what_ansible_renders_fits_the_schemas(boards, deployed):
    """Each board's stage config, as the chain role rendered it, and the chain file it wrote
    for clients, checked against finnchain.schemas (the controller's one schema of each)."""
    from finnchain import documents
    from finnchain.runtime.chainfile import ChainFile

    for k, address in enumerate(("127.77.0.11", "127.77.0.12", "127.77.0.13")):
        r = ssh(address, "cat /etc/finnchain/stage-config.json")
        assert r.returncode == 0, r.stderr
        cfg = documents.check_document("stage-config", json.loads(r.stdout), f"board{k + 1}")
        assert cfg.listen.startswith("tcp://") and (cfg.results is None) == (k < 2)
        assert cfg.curve and set(cfg.curve) >= {"secret", "allow"}
    spec = ChainFile.read(deployed / "chain.json")
    assert spec.first.startswith("tcp://127.77.0.11:") and len(spec.stages) == 3
