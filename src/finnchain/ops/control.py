"""``fab status|logs|start|stop|restart``: the stage services of the boards, over SSH (Fabric).

Start goes last stage first (each stage answers before the one before it starts, as the
deployment does); stop goes first stage first.
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ThreadPoolExecutor

from fabric import Connection

from finnchain.ops.inventory import BoardHost
from finnchain.runtime.metrics import scrape
from finnchain.runtime.ports import METRICS_PORT

SERVICE = "finnchain-stage"
LOG = "/var/log/finnchain-stage.log"
STAGE_DIR = "/opt/finnchain/stage"
CONNECT_SECONDS = 3  # a board that does not open SSH in this time is named unreachable


def connect(board: BoardHost) -> Connection:
    from pathlib import Path

    return Connection(board.ssh_host, user=board.user, connect_timeout=CONNECT_SECONDS,
                      connect_kwargs={"key_filename": str(Path(board.key).expanduser())})


def sudo(conn: Connection, cmd: str):
    """Run ``cmd`` as root with sudo's non-interactive mode (the operator's sudo needs no
    password after provisioning; nothing is ever typed into a remote prompt)."""
    return conn.run(f"sudo -n sh -c {shlex.quote(cmd)}", hide=True, warn=True, in_stream=False)


def service(conn: Connection, action: str):
    """The service command on either init system (systemd on a board, init script where not)."""
    return sudo(conn, f"if [ -d /run/systemd/system ]; then systemctl {action} {SERVICE}; "
                      f"else /etc/init.d/{SERVICE} {action}; fi")


def metrics(board: BoardHost) -> dict[str, float]:
    return scrape(board.address, METRICS_PORT, timeout=3)


def _status(b: BoardHost) -> dict:
    row = {"board": b.name, "address": b.address}
    try:
        with connect(b) as c:
            row["service"] = "running" if service(c, "status").ok else "stopped"
            r = sudo(c, f"sha256sum {STAGE_DIR}/stage.json")
            row["overlay_sha256"] = r.stdout.split()[0][:12] if r.ok else "-"
    except Exception as exc:  # noqa: BLE001 (any connection failure is reported per board)
        row["service"] = f"unreachable ({type(exc).__name__})"
        row["overlay_sha256"] = "-"
    m = scrape(b.address, METRICS_PORT, timeout=CONNECT_SECONDS)
    info = next((k for k in m if k.startswith("finnchain_stage_info{")), "")
    row["plan"] = info.split('plan="')[1].split('"')[0] if 'plan="' in info else "-"
    row["frames_in"] = int(m.get('finnchain_frames_total{direction="in"}', 0))
    row["errors"] = int(sum(v for k, v in m.items() if k.startswith("finnchain_errors_total{")))
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
            out[b.name] = sudo(c, f"tail -n {int(lines)} {LOG}").stdout
    return out


def _wait(board: BoardHost, up: bool, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if bool(metrics(board)) == up:
            return True
        time.sleep(0.5)
    return False


def stop(boards: list[BoardHost]) -> list[str]:
    done = []
    for b in boards:  # first stage first: nothing new enters the chain
        with connect(b) as c:
            service(c, "stop")
        _wait(b, up=False, seconds=15)
        done.append(b.name)
    return done


def start(boards: list[BoardHost]) -> list[str]:
    done = []
    for b in reversed(boards):  # last stage first, each answering before the one before
        with connect(b) as c:
            service(c, "start")
        if not _wait(b, up=True):
            raise RuntimeError(f"{b.name}: the stage did not answer on {b.address}:{METRICS_PORT}")
        done.append(b.name)
    return done
