"""Operating a deployed chain: ``fab benchmark``, ``fab status``, ``fab logs``, ``fab start``,
``fab stop``, ``fab restart``. Thin over ``finnchain.ops``; hosts come from the Ansible
inventory (``--inventory``, default inventory/boards.yml, yours; the emulated cluster's is
inventory/emulated.yml). ``fab --help <task>`` explains each.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from fabric import task
from rich.console import Console
from rich.table import Table

from finnchain.ops import control
from finnchain.ops.inventory import DEFAULT_INVENTORY, InventoryError, boards

warnings.filterwarnings("ignore", message="fast_hadamard_transform")  # brevitas, not needed
BUILD = "artifacts/deploy"
console = Console(width=max(Console().width, 120))


@task(help={"build": f"the deployed build folder, with chain.json (default {BUILD})",
            "frames": "frames to send (default 1000; ignored with --duration)",
            "duration": "seconds to stream instead of a frame count",
            "window": "frames in flight (default 16)",
            "source": "seeded (default), dataset (digits-cnv's test images) or a .npy file",
            "dataset": "labelled images: an .npz of images and labels, or a folder of class "
                       "subfolders (ImageNet's validation layout); every image is sent and "
                       "checked, and top-1/top-5 are reported beside the whole model's",
            "out": "folder for the JSON and PNG (default artifacts/reports)",
            "timeout": "seconds after which a frame without an answer counts as failed "
                       "(default 30)"})
def benchmark(c, build=BUILD, frames=1000, duration=0.0, window=16, source="seeded",
              out="artifacts/reports", timeout=30.0, dataset=None):
    """Stream frames through the chain; report rate, latency, load, links, losses, bits, energy."""
    from finnchain.ops.benchmark import BenchmarkError, print_report, run

    try:
        result, path = run(Path(build), frames=int(frames), duration=float(duration),
                           window=int(window), source=source, timeout=float(timeout),
                           out=Path(out), console=console, dataset=dataset)
    except BenchmarkError as exc:
        _fail(exc, 2)
    print_report(result, path, console)
    if result["frames_lost"] or result["frames_failed"] or not result["bit_exact"]:
        raise SystemExit(1)


def _fail(exc: Exception, code: int = 1):
    console.print(f"[bold red]error: {exc}[/]")
    raise SystemExit(code) from exc


def _boards(inventory: str):
    """The inventory's boards, or exit 2 naming what is wrong with it."""
    try:
        return boards(inventory)
    except InventoryError as exc:
        _fail(exc, 2)


@task(help={"inventory": f"Ansible inventory (default {DEFAULT_INVENTORY})"})
def status(c, inventory=str(DEFAULT_INVENTORY)):
    """Per board: service state, overlay checksum, plan hash, accelerator (FINN's: the pynq
    library's version and the PL clock), frames in, what did not go through (dropped: answers
    of a client that does not read them; refused: a client's queue full at the first stage;
    rejected: bad input; failed: a fault), uptime, memory.
    Exits 1 when a board's stage is not running or the board does not answer."""
    rows = control.status(_boards(inventory))
    t = Table(title="boards")
    shown = [_counted(r) for r in rows]
    for col in shown[0]:  # a board's state is never cut short ("unreachable", "stopped")
        t.add_column(col, min_width=len("unreachable") if col == "service" else None)
    for r in shown:
        t.add_row(*[str(v) for v in r.values()])
    console.print(t)
    down = [r for r in rows if r["service"] != "running"]
    for r in down:
        console.print(f"[bold red]{r['board']} ({r['address']}): {r['service']}[/]")
    if down:
        raise SystemExit(1)


def _counted(row: dict) -> dict:
    """The four classes of what did not go through in one column (the table stays readable
    on an 80-column terminal)."""
    out, classes = {}, ("dropped", "refused", "rejected", "failed")
    for k, v in row.items():
        if k == classes[0]:
            out["dropped/ refused/ rejected/ failed"] = "/".join(str(row[c]) for c in classes)
        elif k not in classes:
            out[k] = v
    return out


@task(help={"inventory": "Ansible inventory", "lines": "lines per board (default 20)"})
def logs(c, inventory=str(DEFAULT_INVENTORY), lines=20):
    """The last lines of every stage's log."""
    for name, text in control.logs(_boards(inventory), int(lines)).items():
        console.rule(name)
        console.print(text.rstrip(), markup=False, highlight=False)


def _control(action: str, inventory: str, build: str) -> None:
    try:
        control.control(action, inventory, build)
    except control.ControlError as exc:
        _fail(exc)
    names = [b.name for b in _boards(inventory)]
    order = names if action == "stop" else names[::-1]  # the order the stages came up in
    past = {"start": "started", "stop": "stopped", "restart": "restarted"}[action]
    console.print(f"{past}: " + ", ".join(order))


@task(help={"inventory": "Ansible inventory", "build": f"the deployed build (default {BUILD})"})
def start(c, inventory=str(DEFAULT_INVENTORY), build=BUILD):
    """Start the stages, last first, each answering before the one before it (the deploy's own
    play, playbooks/control.yml)."""
    _control("start", inventory, build)


@task(help={"inventory": "Ansible inventory", "build": f"the deployed build (default {BUILD})"})
def stop(c, inventory=str(DEFAULT_INVENTORY), build=BUILD):
    """Stop the stages, first first."""
    _control("stop", inventory, build)


@task(help={"inventory": "Ansible inventory", "build": f"the deployed build (default {BUILD})"})
def restart(c, inventory=str(DEFAULT_INVENTORY), build=BUILD):
    """Stop the stages first first, then start them last first."""
    _control("restart", inventory, build)
