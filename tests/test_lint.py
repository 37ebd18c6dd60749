"""The code's own rules, as CI runs them: ruff (pyproject.toml's rule set) on the Python,
shellcheck on the shell scripts, ansible-lint (.ansible-lint: the production profile) on the
playbooks and roles, and the controller's tools at the versions constraints.txt pins."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_ruff_passes():
    r = subprocess.run([str(BIN / "ruff"), "check", "--output-format", "concise", "."],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr


def test_shellcheck_passes_on_every_shell_script():
    """The emulated board's boot (package data), CI's script, the test stand-ins."""
    files = subprocess.run(["git", "ls-files", "*.sh", ".ci/run"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    # FINN's run-docker.sh stand-in is Python under a shell script's name
    scripts = [f for f in files if "python" not in (ROOT / f).read_text().split("\n", 1)[0]]
    assert "src/finnchain/emu/boot.sh" in scripts and ".ci/run" in scripts
    r = subprocess.run(["shellcheck", "--format", "gcc", *scripts], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr


def test_ansible_lint_passes_the_production_profile():
    r = subprocess.run([str(BIN / "ansible-lint"), "deploy.yml", "playbooks", "roles",
                        "molecule"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       check=False, env={"PATH": f"{BIN}:/usr/bin:/bin", "NO_COLOR": "1",
                                         "HOME": str(Path.home())})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr


def test_the_tools_are_the_pinned_versions():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[name] = pinned
    assert {"ansible-core", "ansible-lint", "molecule", "ruff", "fabric"} <= set(pins)
    for name, pinned in pins.items():
        assert version(name) == pinned, (name, version(name), pinned)
