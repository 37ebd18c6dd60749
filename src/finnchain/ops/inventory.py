"""The boards of a chain, read from the Ansible inventory (one source of truth for hosts and for
the names the boards share, ``inventory/group_vars``).

Ansible's own parser reads it (``ansible-inventory --list``), so every inventory form Ansible
takes works here too, and the group variables beside it apply as they do for the deploy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from finnchain.runtime.ports import METRICS_PORT

DEFAULT_INVENTORY = Path("inventory/boards.yml")  # the operator's (ansible.cfg's default)
EMULATED_INVENTORY = Path("inventory/emulated.yml")  # finnchain emu up's


class InventoryError(RuntimeError):
    """An inventory that cannot be read or has no boards."""


@dataclass(frozen=True)
class BoardHost:
    name: str
    stage: int  # its position in group boards (stage 0 first)
    address: str  # the board's static address in the chain
    ssh_host: str  # how the controller reaches it (ansible_host)
    user: str
    key: str
    known_hosts: str  # the SSH host keys the connection checks
    emulated: bool
    service: str  # the stage service's name
    log: str  # the stage's log file
    stage_dir: str  # where the stage's files are
    venv: str  # the PYNQ venv
    metrics_port: int = METRICS_PORT  # its stage's /metrics (finnchain_metrics_port, if set)


def _ansible_inventory() -> str:
    local = Path(sys.executable).with_name("ansible-inventory")
    found = str(local) if local.is_file() else shutil.which("ansible-inventory")
    if not found:
        raise InventoryError("ansible-inventory not found: install ansible-core")
    return found


def known_hosts(common_args: str) -> str:
    """The known_hosts file SSH checks under ``common_args`` (the inventory's
    ``ansible_ssh_common_args``): its ``UserKnownHostsFile=``, else SSH's own default."""
    for arg in str(common_args).split():
        if arg.startswith("UserKnownHostsFile="):
            return arg.split("=", 1)[1]
    return "~/.ssh/known_hosts"


def read(inventory: str | Path = DEFAULT_INVENTORY) -> dict:
    """``ansible-inventory --list`` of ``inventory`` (group variables applied)."""
    path = Path(inventory)
    if not path.exists():
        hint = (f"copy inventory/boards.example.yml to {path} and set your boards' addresses"
                if path == DEFAULT_INVENTORY else
                f"`finnchain emu up` writes {EMULATED_INVENTORY}")
        raise InventoryError(f"inventory not found: {path} ({hint})")
    r = subprocess.run([_ansible_inventory(), "-i", str(path), "--list"], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise InventoryError(f"ansible-inventory could not read {path}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def _port(inventory, name: str, value) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise InventoryError(f"{inventory}: {name} has finnchain_metrics_port {value!r}: a "
                             "stage needs a metrics port (1 to 65535), or leave it unset for "
                             f"the chain's ({METRICS_PORT})")
    return port


def boards(inventory: str | Path = DEFAULT_INVENTORY) -> list[BoardHost]:
    """The hosts of group ``boards``, in chain order."""
    data = read(inventory)
    hosts = data.get("boards", {}).get("hosts", [])
    if not hosts:
        raise InventoryError(f"{inventory} has no hosts in group 'boards'")
    hostvars = data.get("_meta", {}).get("hostvars", {})
    out = []
    for k, name in enumerate(hosts):
        v = hostvars.get(name, {})
        missing = [var for var in ("finnchain_address", "finnchain_service", "finnchain_log",
                                   "finnchain_stage_dir", "finnchain_venv", "ansible_user",
                                   "ansible_ssh_private_key_file") if var not in v]
        if missing:
            raise InventoryError(f"{inventory}: {name} has no {', '.join(missing)} (the shared "
                                 "names come from inventory/group_vars beside the inventory)")
        out.append(BoardHost(
            name=name, stage=k, address=str(v["finnchain_address"]),
            ssh_host=str(v.get("ansible_host", name)), user=str(v["ansible_user"]),
            key=str(v["ansible_ssh_private_key_file"]),
            known_hosts=known_hosts(v.get("ansible_ssh_common_args", "")),
            emulated=bool(v.get("finnchain_emulated", False)),
            service=str(v["finnchain_service"]), log=str(v["finnchain_log"]),
            stage_dir=str(v["finnchain_stage_dir"]), venv=str(v["finnchain_venv"]),
            metrics_port=_port(inventory, name, v.get("finnchain_metrics_port", METRICS_PORT))))
    return out
