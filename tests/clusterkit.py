"""Helpers for the tests that use the emulated cluster (tests/test_cluster.py, tests/faults/):
the commands an operator types, run as subprocesses from the repository's root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = Path("~/.ssh/finnchain_ed25519").expanduser()  # the operator's key (emu up, the deploy)
INVENTORY = ROOT / "inventory" / "emulated.yml"  # where emu up writes it: group_vars apply
KNOWN_HOSTS = Path("~/.ssh/finnchain_known_hosts").expanduser()  # host keys (emu up)
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={KNOWN_HOSTS}",
               "-o", "ConnectTimeout=5"]


def inventory_file(path: Path, doc: dict) -> Path:
    """Write an inventory at ``path`` beside a link to the repository's inventory/group_vars,
    so that the shared names apply to it as they do to inventory/*.yml."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    link = path.parent / "group_vars"
    if not link.exists():
        link.symlink_to(ROOT / "inventory" / "group_vars")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(cmd: list[str], timeout: float = 600, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)


def finnchain(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "finnchain.cli", *args], timeout=timeout)


def fab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run([str(BIN / "fab"), *args], timeout=timeout)


def playbook(inventory: Path, build: Path, *extra: str, fresh_connections: bool = False
             ) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if fresh_connections:  # no SSH connection kept from the run before: key logins only
        env["ANSIBLE_SSH_ARGS"] = "-o ControlMaster=no"
    return run([str(BIN / "ansible-playbook"), "deploy.yml", "-i", str(inventory), "-e",
                f"finnchain_build={build}", *extra], timeout=1200, env=env)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP's counts per host."""
    rows = re.findall(r"^(\S+)\s+:\s+(.*)$", output.split("PLAY RECAP")[-1], re.MULTILINE)
    return {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
            for host, counts in rows}


def ssh(address: str, command: str, password: str | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess:
    """``command`` on a board as xilinx: with the operator's key, or with a password."""
    if password is None:
        cmd = ["ssh", "-i", str(KEY), "-o", "BatchMode=yes", *SSH_OPTIONS, f"xilinx@{address}",
               command]
    else:
        cmd = ["sshpass", "-p", password, "ssh", *SSH_OPTIONS, "-o", "PubkeyAuthentication=no",
               f"xilinx@{address}", command]
    return run(cmd, timeout=timeout)


# the stage's python on a board, not its supervisor (whose command line names it too)
STAGE_PROCESS = "'^/usr/local/share/pynq-venv/bin/python -m [f]innchain.cli stage'"
