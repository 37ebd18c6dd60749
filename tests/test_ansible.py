"""The Ansible code: ansible-lint clean, every playbook parses, roles laid out alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROLES = ["controller", "provision", "network", "overlay", "runtime", "chain", "sdcard"]


def test_ansible_lint_passes():
    r = subprocess.run([str(BIN / "ansible-lint"), "--offline", "deploy.yml", "playbooks",
                        "roles"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_playbooks_parse(tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text((ROOT / "inventory" / "zedboards.example.yml").read_text())
    for playbook in ("deploy.yml", "playbooks/sdcard.yml"):
        r = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i",
                            str(inventory), playbook], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, check=False)
        assert r.returncode == 0, r.stdout + r.stderr


def test_roles_follow_one_layout():
    for role in ROLES:
        for part in ("defaults", "tasks", "handlers", "meta"):
            assert (ROOT / "roles" / role / part / "main.yml").is_file(), (role, part)
        defaults = (ROOT / "roles" / role / "defaults" / "main.yml").read_text()
        names = [line.split(":")[0] for line in defaults.splitlines()
                 if line and not line.startswith(("#", " ", "-"))]
        assert all(n.startswith(f"{role}_") for n in names), (role, names)


def test_no_secret_is_committed():
    """Generated keys live outside the repository (the build folder, ~/.ssh): no private key,
    CURVE secret or vault-less password file is tracked, and the places keys are made are
    ignored by git."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    tracked = [f for f in tracked if f and (ROOT / f).is_file()]
    assert len(tracked) > 50
    secrets = [f for f in tracked if f.endswith((".key_secret", "_ed25519", "_rsa", ".pem"))]
    markers = (b"PRIVATE" + b" KEY-----", b"secret" + b"-key = ")  # (not this file itself)
    secrets += [f for f in tracked if any(m in (ROOT / f).read_bytes() for m in markers)]
    assert not secrets, secrets
    ignored = subprocess.run(["git", "check-ignore", "artifacts/deploy/keys/stage0.key_secret",
                              "inventory/emulated.yml"], cwd=ROOT, capture_output=True,
                             text=True, check=False).stdout.split()
    assert ignored == ["artifacts/deploy/keys/stage0.key_secret", "inventory/emulated.yml"]
