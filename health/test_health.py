"""Per board: the stage service, its port, its overlay, SSH and passwords, Jupyter, the clock,
the next board. A failing check names the board (pytest's id ``ansible://<board>``)."""

from __future__ import annotations

import time

from finnchain.runtime.ports import DATA_PORT, METRICS_PORT

SERVICE = "finnchain-stage"
STAGE_DIR = "/opt/finnchain/stage"
VENV = "/usr/local/share/pynq-venv/bin/python"
JUPYTER_PORT = 9090


def _stage(board, manifest):
    return next((s for s in manifest["stages"] if s["index"] == board["index"]), None)


def test_stage_service_running_and_enabled(host, board, manifest):
    if _stage(board, manifest) is None:
        return  # a spare board: no stage
    with host.sudo():
        if host.file("/run/systemd/system").exists:
            svc = host.service(SERVICE)
            assert svc.is_running and svc.is_enabled
        else:
            assert host.run(f"/etc/init.d/{SERVICE} status").rc == 0, f"{SERVICE} not running"
            assert host.run(f"ls /etc/rc2.d/S*{SERVICE}").rc == 0, f"{SERVICE} not enabled"


def test_stage_listens_on_its_static_address(host, board, manifest):
    if _stage(board, manifest) is None:
        return
    for port in (DATA_PORT, METRICS_PORT):
        assert host.socket(f"tcp://{board['address']}:{port}").is_listening, port


def test_overlay_matches_the_manifest(host, board, manifest):
    stage = _stage(board, manifest)
    if stage is None:
        return
    with host.sudo():
        for rel, digest in stage["files"].items():
            f = host.file(f"{STAGE_DIR}/{rel.split('/', 1)[1]}")
            assert f.exists and f.sha256sum == digest, rel


def test_password_logins_off_and_default_password_unusable(host):
    with host.sudo():
        config = host.run("/usr/sbin/sshd -T").stdout.lower()
        assert "passwordauthentication no" in config
        for user in ("xilinx", "root"):
            shadow = host.run(f"getent shadow {user}").stdout.split(":")
            assert shadow[1].startswith("!"), f"{user}'s password is not locked"


def test_jupyter_not_on_the_network(host, board):
    for address in ("0.0.0.0", board["address"]):
        assert not host.socket(f"tcp://{address}:{JUPYTER_PORT}").is_listening


def test_clock_in_sync(host):
    board_time = float(host.run("date +%s.%N").stdout)
    assert abs(board_time - time.time()) < 2.0


def test_next_board_reachable(host, board):
    nxt = board["next"]
    if nxt is None:
        return
    # the network path to the next board (its SSH port; its stage is checked on that board)
    probe = f"{VENV} -c \"import socket; socket.create_connection(('{nxt.address}', 22), 3)\""
    r = host.run(probe)
    assert r.rc == 0, f"cannot reach {nxt.name} at {nxt.address}: {r.stderr}"
