"""The Ansible code: ansible-lint clean, every playbook parses, roles laid out alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROLES = ["controller", "provision", "network", "overlay", "runtime", "chain", "sdcard", "board",
         "monitoring"]
DEFAULTS_ONLY = {"board"}  # values computed once for the roles that depend on it; no tasks


def test_playbooks_parse(tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text((ROOT / "inventory" / "boards.example.yml").read_text())
    (tmp_path / "group_vars").symlink_to(ROOT / "inventory" / "group_vars")
    for playbook in ("deploy.yml", "playbooks/sdcard.yml", "playbooks/control.yml"):
        r = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i",
                            str(inventory), playbook], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, check=False)
        assert r.returncode == 0, r.stdout + r.stderr


def test_roles_follow_one_layout_and_state_their_contract():
    import yaml

    assert sorted(p.name for p in (ROOT / "roles").iterdir()) == sorted(ROLES)
    for role in ROLES:
        folder = ROOT / "roles" / role
        for part in ("defaults/main.yml", "meta/main.yml", "meta/argument_specs.yml") + \
                (() if role in DEFAULTS_ONLY else ("tasks/main.yml",)):
            assert (folder / part).is_file(), (role, part)
        assert role not in DEFAULTS_ONLY or not (folder / "tasks").exists(), role
        defaults = yaml.safe_load((folder / "defaults" / "main.yml").read_text())
        assert all(n.startswith(f"{role}_") for n in defaults), (role, list(defaults))
        # every default is an input the role documents, with a type
        spec = yaml.safe_load((folder / "meta" / "argument_specs.yml").read_text())
        options = spec["argument_specs"]["main"]["options"]
        assert set(defaults) <= set(options), (role, set(defaults) - set(options))
        assert all("type" in o and o.get("description") for o in options.values()), role
        # and the spec agrees with the defaults: an input with a default is not required, and
        # a default the spec states is the role's own (a templated one the spec leaves out)
        for entry in spec["argument_specs"].values():
            for name, o in entry.get("options", {}).items():
                if name not in defaults:
                    continue
                assert not o.get("required"), (role, name, "has a default: not required")
                value = defaults[name]
                if isinstance(value, str) and "{{" in value:
                    assert "default" not in o, (role, name, value)
                elif "default" in o:
                    assert o["default"] == value, (role, name, o["default"], value)
        # no placeholders: a handlers file only where something is notified, no empty files
        if (folder / "handlers").exists():
            handlers = yaml.safe_load((folder / "handlers" / "main.yml").read_text())
            assert handlers, role
        assert not list(folder.glob("templates/README*")), role
        r = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "-r", "roles", role],
                           cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
        assert r.returncode == 0 and "ENTRY POINT: *main*" in r.stdout, r.stderr


def test_a_boards_place_in_the_chain_is_computed_once_and_right(tmp_path):
    """The board role's values, on the six-board example inventory with a three-stage build:
    the stage is the position in group boards, boards past the build's stages get none, and
    every role that needs the stage reads it from there (none computes it again)."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text((ROOT / "inventory" / "boards.example.yml").read_text())
    (tmp_path / "group_vars").symlink_to(ROOT / "inventory" / "group_vars")
    play = tmp_path / "place.yml"
    play.write_text(f"""- hosts: boards
  connection: local
  gather_facts: false
  vars:
    controller_manifest: {{stages: [0, 1, 2]}}
    ansible_python_interpreter: {sys.executable}
  roles: [board]
  tasks:
    - ansible.builtin.debug:
        msg: "PLACE {{{{ [inventory_hostname, board_stage, board_has_stage, board_is_last,
                          board_chain | join(',')] | join(' ') }}}}"
""")
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(play)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
                            "ANSIBLE_NOCOLOR": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    places = sorted(line.split('"PLACE ', 1)[1].rstrip('"').split()
                    for line in r.stdout.splitlines() if '"PLACE ' in line)
    chain = "zed1,zed2,zed3"  # the boards with a stage, in stage order, the same on every board
    assert places == [["zed1", "0", "True", "False", chain], ["zed2", "1", "True", "False", chain],
                      ["zed3", "2", "True", "True", chain], ["zed4", "3", "False", "False", chain],
                      ["zed5", "4", "False", "False", chain],
                      ["zed6", "5", "False", "False", chain]], places
    for rule in (".index(inventory_hostname)", "groups['boards'][:"):
        computed = [str(f.relative_to(ROOT)) for f in [*(ROOT / "roles").rglob("*.yml"),
                                                       *(ROOT / "playbooks").glob("*.yml")]
                    if rule in f.read_text()]
        assert computed == ["roles/board/defaults/main.yml"], (rule, computed)


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
    # (the boards' host keys are recorded in ~/.ssh/finnchain_known_hosts, outside the clone)
    wanted = ["artifacts/deploy/keys/stage0.key_secret", "inventory/emulated.yml",
              "inventory/boards.yml", "artifacts/sdcards/hostkeys/zed1/ssh_host_ed25519_key"]
    ignored = subprocess.run(["git", "check-ignore", *wanted], cwd=ROOT, capture_output=True,
                             text=True, check=False).stdout.split()
    assert ignored == wanted


def test_no_password_in_any_inventory():
    """First contact is by the key a seeded card carries, or a password typed at a prompt
    (--ask-pass): no committed inventory or variable file holds one."""
    tracked = subprocess.run(["git", "ls-files", "inventory", "playbooks", "roles", "deploy.yml",
                              "molecule"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for f in (f for f in tracked if (ROOT / f).is_file()):
        text = (ROOT / f).read_text()
        assert "ansible_password" not in text and "ansible_become_password" not in text, f
        assert "ansible_ssh_pass" not in text and "become_pass" not in text, f


def test_host_keys_are_checked_everywhere():
    cfg = (ROOT / "ansible.cfg").read_text()
    assert "host_key_checking = True" in cfg
    assert "StrictHostKeyChecking=no" not in cfg
    import yaml

    shared = yaml.safe_load((ROOT / "inventory" / "group_vars" / "all.yml").read_text())
    assert "StrictHostKeyChecking=yes" in shared["ansible_ssh_common_args"]
    assert "UserKnownHostsFile=~/.ssh/finnchain_known_hosts" in shared["ansible_ssh_common_args"]


def test_fab_reads_the_inventory_as_ansible_does_and_names_what_is_missing(tmp_path):
    """finnchain.ops reads the boards through ansible-inventory: the example inventory's six
    boards in order, the connection settings of group_vars (its known_hosts included), and an
    inventory without the shared group_vars is refused, naming the variables it lacks (no
    guessed user or key)."""
    import pytest

    from finnchain.ops.inventory import InventoryError, boards, known_hosts

    inventory = tmp_path / "inventory.yml"
    inventory.write_text((ROOT / "inventory" / "boards.example.yml").read_text())
    (tmp_path / "group_vars").symlink_to(ROOT / "inventory" / "group_vars")
    found = boards(inventory)
    assert [b.name for b in found] == [f"zed{i}" for i in range(1, 7)]
    assert [b.stage for b in found] == list(range(6))
    assert found[0].ssh_host == "192.168.2.99" and found[0].address == "10.42.0.11"
    assert found[2].user == "xilinx" and found[2].key == "~/.ssh/finnchain_ed25519"
    assert found[5].known_hosts == "~/.ssh/finnchain_known_hosts"
    assert known_hosts("-o Foo=1") == "~/.ssh/known_hosts"
    (tmp_path / "group_vars").unlink()
    with pytest.raises(InventoryError, match=r"zed1 has no finnchain_service, .*ansible_user, "
                                             r"ansible_ssh_private_key_file \(the shared names"):
        boards(inventory)
