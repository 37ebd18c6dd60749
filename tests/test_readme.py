"""The README stays true: short, every link resolves, and every command it shows is accepted by
the real tool it names (finnchain's own parser, make, ansible-playbook --syntax-check, fab's
task list, pytest's health folder). The commands themselves run end to end elsewhere: `make
demo` and `make test` in CI (.ci/run), the plan, build, deploy, benchmark, status and health
steps in tests/test_cluster.py and tests/faults, the SD-card step in tests/test_sdcard.py."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = ROOT / ".venv" / "bin"


def commands(text: str) -> list[list[str]]:
    """Every command of the README's ``sh`` blocks (continuation lines joined, comments and
    leading VAR=value assignments dropped) and of its inline code naming a tool."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words.pop(0)
            if words:
                out.append(words)
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        words = shlex.split(span)
        if words and Path(words[0]).name in ("make", "finnchain", "fab", "ansible-playbook"):
            out.append([Path(words[0]).name, *words[1:]])  # `.venv/bin/fab status` in prose
    return out


ALL = commands(README.read_text())


def _ids(prog: str) -> list[list[str]]:
    return [c for c in ALL if c[0] == prog or c[:3] == ["python", "-m", prog]]


def test_the_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.encode()) <= 12 * 1024, len(text.encode())
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith("http"):
            continue
        assert (ROOT / target.split("#")[0]).exists(), target
    # the docs it links to link back to files that exist
    for doc in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)]+)\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target.split("#")[0]).exists(), (doc.name, target)


def test_the_readme_shows_every_kind_of_command():
    progs = {c[0] if c[0] != "python" else c[2] for c in ALL}
    assert {"make", "finnchain", "ansible-playbook", "fab", "pytest"} <= progs, progs


@pytest.mark.parametrize("cmd", _ids("finnchain"), ids=" ".join)
def test_finnchain_commands_parse(cmd):
    from finnchain.cli import build_parser

    if "--help" in cmd:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(cmd[1:])
        assert exit_.value.code == 0
        return
    args = build_parser().parse_args(cmd[1:])  # exits 2 on an unknown command or option
    assert callable(args.func)


@pytest.mark.parametrize("cmd", _ids("make"), ids=" ".join)
def test_make_targets_exist(cmd):
    r = subprocess.run(["make", "-n", *cmd[1:]], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and "No rule" not in r.stderr, r.stderr


@pytest.mark.parametrize("cmd", _ids("ansible-playbook"), ids=" ".join)
def test_playbook_commands_pass_ansibles_syntax_check(cmd):
    args = [a for a in cmd[1:] if a not in ("-K", "--ask-become-pass", "--ask-pass")]
    r = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check",
                        "-i", "inventory/boards.example.yml", *args],
                       cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("cmd", _ids("fab"), ids=" ".join)
def test_fab_tasks_and_their_options_exist(cmd):
    if len(cmd) == 1 or cmd[1].startswith("-"):  # `fab`, `fab --list`: the task list
        r = subprocess.run([str(BIN / "fab"), "--list"], cwd=ROOT, capture_output=True,
                           text=True, check=False)
        assert r.returncode == 0 and "benchmark" in r.stdout, r.stdout + r.stderr
        return
    task = cmd[1]
    r = subprocess.run([str(BIN / "fab"), "--help", task], cwd=ROOT, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    for option in (a.split("=")[0] for a in cmd[2:] if a.startswith("--")):
        assert option in r.stdout, (task, option)


@pytest.mark.parametrize("cmd", _ids("pytest"), ids=" ".join)
def test_pytest_commands_name_what_exists(cmd):
    paths = [a for a in cmd[3:] if not a.startswith("-")]
    assert paths and all((ROOT / p).exists() for p in paths), paths
    assert any(a.startswith("--hosts=ansible://") for a in cmd) or "tests" in paths[0]
