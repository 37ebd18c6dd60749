"""Per board: the stage service, its port, its overlay, SSH and passwords, Jupyter, the clock,
the next board. A failing check names the board (pytest's id ``ansible://<board>``)."""

from __future__ import annotations

import time

from finnchain.runtime.ports import DATA_PORT, METRICS_PORT

JUPYTER_PORT = 9090


def test_stage_service_running_and_enabled(host, board, stage):
    me, _ = board
    with host.sudo():
        service = host.service(me.service)
        assert service.is_running, f"{me.service} is not running"
        assert service.is_enabled, f"{me.service} does not start at boot"


def test_stage_listens_on_its_static_address(host, board, stage):
    me, _ = board
    for port in (DATA_PORT, METRICS_PORT):
        assert host.socket(f"tcp://{me.address}:{port}").is_listening, port


def test_overlay_is_exactly_the_manifest(host, board, stage):
    me, _ = board
    expected = {f"{me.stage_dir}/{rel.split('/', 1)[1]}": digest
                for rel, digest in stage["files"].items()}
    with host.sudo():
        for path, digest in expected.items():
            f = host.file(path)
            assert f.exists and f.sha256sum == digest, path
        present = set(host.check_output(f"find {me.stage_dir} -type f").split())
    assert present == set(expected), sorted(present ^ set(expected))


def test_password_logins_off_and_default_passwords_locked(host):
    with host.sudo():
        assert "passwordauthentication no" in host.check_output("/usr/sbin/sshd -T").lower()
        for user in ("xilinx", "root"):
            assert host.user(user).password.startswith("!"), f"{user}'s password is not locked"


def test_jupyter_not_on_the_network(host, board):
    me, _ = board
    for address in ("0.0.0.0", me.address):
        assert not host.socket(f"tcp://{address}:{JUPYTER_PORT}").is_listening


def test_clock_in_sync(host):
    board_time = float(host.check_output("date +%s.%N"))
    assert abs(board_time - time.time()) < 2.0


def test_stage_log_is_rotated(host, board, stage):
    me, _ = board
    rule = host.file(f"/etc/logrotate.d/{me.service}")
    assert rule.exists and me.log in rule.content_string and "rotate" in rule.content_string


def test_next_board_reachable(host, board):
    me, nxt = board
    if nxt is None:
        return  # the last board has no next board
    # the network path to the next board (its SSH port; its stage is checked on that board)
    probe = (f"{me.venv}/bin/python -c 'import socket; "
             f"socket.create_connection((\"{nxt.address}\", 22), 3)'")
    r = host.run(probe)
    assert r.rc == 0, f"cannot reach {nxt.name} at {nxt.address}: {r.stderr}"
