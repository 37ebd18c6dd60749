"""``fab status|logs|start|stop|restart``: the stage services of the boards.

Status and logs go over SSH with Fabric, all boards at once, each board's host key checked
against the inventory's known_hosts. Start, stop and restart run the deployment's own play
(``playbooks/control.yml``, the chain role's start and stop tasks): the ordering (start last
stage first, each answering before the one before it; stop first stage first) and the
readiness rule live there once, for the deploy and for fab alike.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fabric import Connection

from finnchain.ops.inventory import BoardHost
from finnchain.runtime.metrics import ERROR_CLASS_NAMES, scrape

CONNECT_SECONDS = 3  # a board that does not open SSH in this time is named unreachable
CONTROL_PLAY = "playbooks/control.yml"


class ControlError(RuntimeError):
    """A start or stop that did not complete; the message holds Ansible's account."""


def connect(board: BoardHost) -> Connection:
    """A Fabric connection that accepts only the host key recorded for the board."""
    import paramiko

    conn = Connection(board.ssh_host, user=board.user, connect_timeout=CONNECT_SECONDS,
                      connect_kwargs={"key_filename": str(Path(board.key).expanduser())})
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    known = Path(board.known_hosts).expanduser()
    if known.is_file():
        conn.client.load_host_keys(str(known))
    return conn


def sudo(conn: Connection, cmd: str):
    """Run ``cmd`` as root with sudo's non-interactive mode (the operator's sudo needs no
    password after provisioning; nothing is ever typed into a remote prompt)."""
    return conn.run(f"sudo -n sh -c {shlex.quote(cmd)}", hide=True, warn=True, in_stream=False)


def _status(b: BoardHost) -> dict:
    row = {"board": b.name, "address": b.address}
    try:
        with connect(b) as c:
            r = sudo(c, f"service {b.service} status")
            row["service"] = "running" if r.ok else "stopped"
            r = sudo(c, f"sha256sum {b.stage_dir}/stage.json")
            row["overlay_sha256"] = r.stdout.split()[0][:12] if r.ok else "-"
    except Exception as exc:  # noqa: BLE001 (any connection failure is reported per board)
        row["service"] = f"unreachable ({type(exc).__name__}: {str(exc)[:60]})"
        row["overlay_sha256"] = "-"
    m = scrape(b.address, b.metrics_port, timeout=CONNECT_SECONDS)
    info = [s.labels for s in m.samples if s.name == "finnchain_stage_info"]
    row["plan"] = info[0].get("plan", "-") if info else "-"
    # what runs the stage: the accelerator, and for FINN's the pynq library and the PL clock
    labels = info[0] if info else {}
    row["accelerator"] = " ".join(filter(None, (
        labels.get("accelerator", "-"),
        f"pynq {labels['pynq']}" if "pynq" in labels else "",
        f"{labels['fclk_mhz']} MHz" if "fclk_mhz" in labels else "")))
    row["frames_in"] = int(m.total("finnchain_frames_total", direction="in"))
    for name in ERROR_CLASS_NAMES:  # a client's own doing apart from faults
        row[name] = int(m.total("finnchain_errors_total", **{"class": name}))
    row["uptime_s"] = round(m.get("finnchain_uptime_seconds", 0), 1)
    row["rss_mb"] = round(m.get("process_resident_memory_bytes", 0) / 2**20, 1)
    return row


def status(boards: list[BoardHost]) -> list[dict]:
    """One row per board, all boards asked at once: a board that is down costs
    ``CONNECT_SECONDS``, not a wait per board."""
    with ThreadPoolExecutor(max(1, len(boards))) as pool:
        return list(pool.map(_status, boards))


def logs(boards: list[BoardHost], lines: int = 20) -> dict[str, str]:
    out = {}
    for b in boards:
        with connect(b) as c:
            out[b.name] = sudo(c, f"tail -n {int(lines)} {b.log}").stdout
    return out


def control(action: str, inventory: str | Path, build: str | Path) -> str:
    """Run the control play (``start``, ``stop`` or ``restart``); returns its output, or raises
    ControlError naming what failed."""
    if action not in ("start", "stop", "restart"):
        raise ValueError(f"unknown action {action!r}")
    playbook = Path(sys.executable).with_name("ansible-playbook")
    r = subprocess.run([str(playbook), CONTROL_PLAY, "-i", str(inventory), "-e",
                        f"finnchain_action={action}", "-e", f"finnchain_build={build}"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        failed = [line for line in r.stdout.splitlines() if "FAILED" in line or "fatal:" in line]
        raise ControlError(f"{action} did not complete: " + ("; ".join(failed[:3]) or
                                                             r.stdout[-800:] + r.stderr[-400:]))
    return r.stdout
