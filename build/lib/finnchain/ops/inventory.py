"""The boards of a chain, read from the Ansible inventory (one source of truth for hosts).

Ansible's own parser reads it (``ansible-inventory --list``), so every inventory form Ansible
takes works here too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INVENTORY = Path("inventory/emulated.yml")
DEFAULT_KEY = "~/.ssh/finnchain_ed25519"


class InventoryError(RuntimeError):
    """An inventory that cannot be read or has no boards."""


@dataclass(frozen=True)
class BoardHost:
    name: str
    address: str  # the board's static address in the chain
    ssh_host: str  # how the controller reaches it (ansible_host)
    user: str
    key: str
    emulated: bool


def _ansible_inventory() -> str:
    local = Path(sys.executable).with_name("ansible-inventory")
    found = str(local) if local.is_file() else shutil.which("ansible-inventory")
    if not found:
        raise InventoryError("ansible-inventory not found: install ansible-core")
    return found


def boards(inventory: str | Path = DEFAULT_INVENTORY) -> list[BoardHost]:
    """The hosts of group ``boards``, in chain order."""
    path = Path(inventory)
    if not path.exists():
        raise InventoryError(f"inventory not found: {path} (finnchain emu up writes "
                             f"{DEFAULT_INVENTORY})")
    r = subprocess.run([_ansible_inventory(), "-i", str(path), "--list"], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise InventoryError(f"ansible-inventory could not read {path}: {r.stderr.strip()}")
    data = json.loads(r.stdout)
    hosts = data.get("boards", {}).get("hosts", [])
    if not hosts:
        raise InventoryError(f"{path} has no hosts in group 'boards'")
    hostvars = data.get("_meta", {}).get("hostvars", {})
    out = []
    for name in hosts:
        v = hostvars.get(name, {})
        out.append(BoardHost(
            name=name, address=str(v.get("finnchain_address", v.get("ansible_host", name))),
            ssh_host=str(v.get("ansible_host", name)), user=str(v.get("ansible_user", "xilinx")),
            key=str(v.get("ansible_ssh_private_key_file", DEFAULT_KEY)),
            emulated=bool(v.get("finnchain_emulated", False))))
    return out
