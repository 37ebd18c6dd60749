"""Per board: the stage service, its port, its overlay, SSH and passwords, Jupyter, the clock,
the next board. A failing check names the board (pytest's id ``ansible://<board>``)."""

from __future__ import annotations

import json
import time

from finnchain.runtime.ports import DATA_PORT, RESULTS_PORT

JUPYTER_PORT = 9090


def test_stage_service_running_and_enabled(host, board, stage):
    me, _ = board
    with host.sudo():
        service = host.service(me.service)
        assert service.is_running, f"{me.service} is not running"
        assert service.is_enabled, f"{me.service} does not start at boot"


def test_stage_listens_on_its_static_address(host, board, stage):
    me, _ = board
    for port in (DATA_PORT, me.metrics_port):
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
        # nothing else either: no link (to a file outside the overlay), no directory a
        # redeploy left empty
        links = host.check_output(f"find {me.stage_dir} -mindepth 1 ! -type f ! -type d")
        empty = host.check_output(f"find {me.stage_dir} -mindepth 1 -type d -empty")
    assert present == set(expected), sorted(present ^ set(expected))
    strays = ([f"not files of the overlay: {links.split()}"] if links else []) + \
        ([f"empty directories in the overlay: {empty.split()}"] if empty else [])
    assert not strays, "; ".join(strays)


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
    """The rule is there and logrotate (installed, as the board's cron runs it) reads it
    without an error: ``logrotate -d`` (debug: reads the rule, rotates nothing)."""
    me, _ = board
    rule = f"/etc/logrotate.d/{me.service}"
    assert host.file(rule).exists, f"no log rotation rule {rule}"
    with host.sudo():
        r = host.run(f"logrotate -d {rule}")
    out = r.stdout + r.stderr
    assert r.rc == 0 and "error:" not in out, f"logrotate -d {rule}: {out[-1500:]}"
    assert f"rotating pattern: {me.log}" in out and f"considering log {me.log}" in out, out


def test_stage_sends_where_the_inventory_says(host, board, stage, manifest):
    """The stage's configuration names the next board's address as its downstream, or, on
    the last stage's board, no downstream and the results port at its own address."""
    me, nxt = board
    path = f"{host.ansible.get_variables()['finnchain_config_dir']}/stage-config.json"
    with host.sudo():
        config = json.loads(host.file(path).content_string)
    assert config["listen"] == f"tcp://{me.address}:{DATA_PORT}", config
    if me.stage == len(manifest["stages"]) - 1:
        assert "downstream" not in config, config
        assert config["results"] == f"tcp://{me.address}:{RESULTS_PORT}", config
    else:
        assert config["downstream"] == f"tcp://{nxt.address}:{DATA_PORT}", config
        assert "results" not in config, config


def test_next_board_reachable(host, board, stage, manifest):
    me, nxt = board
    if me.stage == len(manifest["stages"]) - 1:  # the last stage answers the clients itself
        assert host.socket(f"tcp://{me.address}:{RESULTS_PORT}").is_listening
        return
    # the network path to the next board (its SSH port; its stage is checked on that board)
    probe = (f"{me.venv}/bin/python -c 'import socket; "
             f"socket.create_connection((\"{nxt.address}\", 22), 3)'")
    r = host.run(probe)
    assert r.rc == 0, f"cannot reach {nxt.name} at {nxt.address}: {r.stderr}"
