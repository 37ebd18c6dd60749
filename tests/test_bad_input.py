"""Bad input at deploy time: the deployment refuses, by name, an inventory with a missing or a
duplicate board, a build whose files no longer match its manifest, and a missing build, before
anything reaches a board (the boards of these inventories do not even exist).

Bad input elsewhere is tested where it is handled: frames (tests/test_runtime.py), plans and
models (tests/test_plan.py, tests/test_build.py, tests/test_cli.py), board specs
(tests/test_boards.py), images (tests/test_executor.py); the README counts them all.
"""

from __future__ import annotations

import shutil

from clusterkit import fab, inventory_file, playbook
from finnchain.cli import main as finnchain


def _inventory(path, addresses: list[str], **host_vars):
    """Boards that do not exist (port 9 of TEST-NET-1): a deploy that reached them would fail
    as unreachable, not with the message the test looks for."""
    hosts = {f"zed{i + 1}": {"ansible_host": "192.0.2.1", "ansible_port": 9,
                             "finnchain_address": a, **host_vars.get(f"zed{i + 1}", {})}
             for i, a in enumerate(addresses)}
    return inventory_file(path, {"all": {"children": {"boards": {
        "hosts": hosts, "vars": {"finnchain_emulated": True}}}}})


def _refused(inventory, build, message: str) -> None:
    r = playbook(inventory, build)
    assert r.returncode != 0
    assert message in r.stdout, r.stdout[-3000:]
    assert "UNREACHABLE" not in r.stdout  # stopped on the controller, before any board


def test_an_inventory_with_a_board_missing(build, tmp_path):
    inv = _inventory(tmp_path / "inv.yml", ["10.0.0.11", "10.0.0.12"])
    _refused(inv, build, "the build has 3 stages but the inventory has 2 boards")


def test_an_inventory_with_a_board_twice(build, tmp_path):
    inv = _inventory(tmp_path / "inv.yml", ["10.0.0.11", "10.0.0.12", "10.0.0.11"])
    _refused(inv, build, "the inventory gives the same address to two boards: "
                                     "zed1=10.0.0.11, zed2=10.0.0.12, zed3=10.0.0.11")


def test_a_build_whose_overlay_changed_after_its_manifest(build, tmp_path):
    good, build = build, tmp_path / "build"
    shutil.copytree(good, build)
    model = build / "stage1" / "fabric" / "model.onnx"  # the emulated bitstream's program
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # one byte flipped: a corrupted copy
    model.write_bytes(bytes(data))
    (build / "stage2" / "stage.json").unlink()
    assert finnchain(["manifest", "verify", str(build)]) == 1
    inv = _inventory(tmp_path / "inv.yml", ["10.0.0.11", "10.0.0.12", "10.0.0.13"])
    _refused(inv, build, "stage 1: stage1/fabric/model.onnx (changed); stage 2: stage2/stage.json "
                         "(missing)")
    assert finnchain(["manifest", "verify", str(good)]) == 0


def test_no_build_at_all(tmp_path):
    inv = _inventory(tmp_path / "inv.yml", ["10.0.0.11"])
    _refused(inv, tmp_path / "nothing", f"no build at {tmp_path / 'nothing'}")


def test_a_build_with_a_file_its_manifest_does_not_list(build, tmp_path):
    good, build = build, tmp_path / "build"
    shutil.copytree(good, build)
    (build / "stage1" / "planted.sh").write_text("#!/bin/sh\necho hello\n")
    assert finnchain(["manifest", "verify", str(build)]) == 1
    inv = _inventory(tmp_path / "inv.yml", ["10.0.0.11", "10.0.0.12", "10.0.0.13"])
    _refused(inv, build, "stage 1: stage1/planted.sh (not in the manifest)")


def test_an_inventory_missing_an_address_or_of_the_wrong_type(build, tmp_path):
    inv = _inventory(tmp_path / "inv.yml", ["10.0.0.11", "10.0.0.12", "10.0.0.13"],
                     zed2={"finnchain_batch": "many"})
    _refused(inv, build, "zed2: finnchain_address must be the board's IPv4 address")
    _refused(inv, build, "finnchain_batch a whole number of frames (got many)")
    inv = _inventory(tmp_path / "inv2.yml", ["10.0.0.11", "board-three", "10.0.0.13"])
    _refused(inv, build, "zed2: finnchain_address must be the board's IPv4 address (got "
                         "board-three)")
    doc = tmp_path / "inv3.yml"
    inventory_file(doc, {"all": {"children": {"boards": {"hosts": {
        "zed1": {"ansible_host": "192.0.2.1", "ansible_port": 9, "finnchain_address": "10.0.0.11"},
        "zed2": {"ansible_host": "192.0.2.1", "ansible_port": 9}}}}}})
    _refused(doc, build, "zed2: finnchain_address must be the board's IPv4 address (got "
                         "nothing)")
    inv = _inventory(tmp_path / "inv4.yml", ["10.0.0.11", "10.0.0.12", "10.0.0.13"],
                     zed3={"finnchain_accelerator": "gpu"})
    _refused(inv, build, "(got 'gpu')")


def test_two_boards_stating_the_same_stage(build, tmp_path):
    inv = _inventory(tmp_path / "inv.yml", ["10.0.0.11", "10.0.0.12", "10.0.0.13"],
                     zed1={"finnchain_stage": 1}, zed2={"finnchain_stage": 1})
    _refused(inv, build, "zed1 says finnchain_stage 1, but it is board 0 of group boards "
                         "(stage 0 first), and another board says the same stage")


def test_fab_names_a_missing_inventory_a_missing_build_and_bad_numbers(build, tmp_path):
    """fab refuses, in one line and without a traceback, an inventory that does not exist, a
    build folder without a manifest and benchmark numbers out of range, before sending a frame
    (a report of an earlier run is not overwritten)."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "keep.json").write_text("{}")
    for args, words in (
            (("status", "--inventory", str(tmp_path / "nope.yml")), "inventory not found"),
            (("logs", "--inventory", str(tmp_path / "nope.yml")), "inventory not found"),
            (("benchmark", "--build", str(tmp_path)), "has no manifest.json"),
            (("benchmark", "--build", str(build), "--frames", "-5"), "--frames -5: at least 1"),
            (("benchmark", "--build", str(build), "--window", "0"), "--window 0: at least 1"),
            (("benchmark", "--build", str(build), "--duration", "nan"), "--duration nan")):
        r = fab(*args, "--out", str(reports)) if args[0] == "benchmark" else fab(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert words in r.stdout and "Traceback" not in r.stdout + r.stderr, (args, r.stdout)
    assert sorted(p.name for p in reports.iterdir()) == ["keep.json"]
