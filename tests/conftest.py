"""Shared fixtures: the two models are exported once per test session; one emulated cluster
(three boards, root only) serves every test that needs it, and is removed at the end."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from finnchain.graph.model import load
from finnchain.models import zoo


def pytest_collection_modifyitems(items):
    """Molecule's scenario runs first (it brings up and takes down a cluster of its own); the
    fault tests (tests/faults/) run last: they break and mend the cluster that the other
    cluster tests want as freshly flashed boards."""
    items.sort(key=lambda item: (item.path.name != "test_molecule.py",
                                 "/faults/" in str(item.path)))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits_path(models_dir):
    return zoo.export("digits-cnv", models_dir / "digits-cnv.onnx", seed=0)


@pytest.fixture(scope="session")
def mobilenet_path(models_dir):
    return zoo.export("mobilenet-v1", models_dir / "mobilenet-v1.onnx", seed=0)


@pytest.fixture(scope="session")
def brevitas_mobilenet_path(models_dir):
    """Brevitas' own quant_mobilenet_v1_4b as `finnchain export` makes it (calibrated, seed 1)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zoo.export("quant_mobilenet_v1_4b", models_dir / "quant_mobilenet_v1_4b.onnx",
                          seed=1)


@pytest.fixture(scope="session")
def digits(digits_path):
    return load(digits_path)


@pytest.fixture(scope="session")
def mobilenet(mobilenet_path):
    return load(mobilenet_path)


@pytest.fixture(scope="session")
def digits_test_set():
    from finnchain.models.digits_cnv import dataset

    _, _, x, y = dataset(0)
    return x, y


@pytest.fixture(scope="session")
def mobilenet_images():
    return zoo.sample_inputs((1, 3, 224, 224), 3, seed=42)


def distinct(a: np.ndarray) -> int:
    return int(np.unique(a).size)


TINY_BOARD = """
boards:
  tiny:
    title: A tiny test board
    part: xc7z020clg484-1
    family: xc7z020
    finn_board: null
    vivado_board_part: "avnet.com:zedboard:part0:*"
    clock_mhz: 100
    ethernet_mbps: 1000
    power_w: 1
    arm: {frame_us: 10, byte_ns: 1}
    limits: {lut: 0.1, bram18: 0.1, dsp: 0.02}
    shell: {lut: 300, bram18: 0}
"""


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory):
    """A catalogue file with a board small enough that digits-cnv needs several of them."""
    path = tmp_path_factory.mktemp("catalogue") / "tiny.yml"
    path.write_text(TINY_BOARD)
    return path


@pytest.fixture(scope="session")
def boards(tmp_path_factory):
    """Three emulated boards, freshly flashed; yields their inventory. Checks at the end that
    ``emu down`` leaves nothing behind."""
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root")
    from clusterkit import finnchain
    from finnchain.emu import cluster

    if cluster.load():
        pytest.skip("an emulated cluster is already up on this machine (finnchain emu down)")
    from clusterkit import INVENTORY as inventory

    r = finnchain("emu", "up", "--boards", "3", "--inventory", str(inventory))
    assert r.returncode == 0, r.stdout + r.stderr
    yield inventory
    r = finnchain("emu", "down")
    assert r.returncode == 0, r.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=False).stdout
    assert "fc-" not in netns, netns
    links = subprocess.run(["ip", "link"], capture_output=True, text=True, check=False).stdout
    assert cluster.HOST_LINK not in links
    assert not cluster.STATE.exists()


@pytest.fixture(scope="session")
def make_build(tmp_path_factory):
    """``make_build(model, boards, name)``: the model planned onto ``boards`` (a list of
    catalogue boards) and built for emulation in a fresh folder; returns the build folder."""
    from finnchain.finn.command import build as build_command
    from finnchain.plan.make import make_plan, write_plan

    def make(model, boards, name: str = "build"):
        folder = tmp_path_factory.mktemp(name)
        plan, _, models = make_plan(model, boards, "digits-cnv", "x")
        write_plan(plan, models, folder / "plan")
        assert build_command(folder / "plan", out=folder / "build") == 0
        return folder / "build"

    return make


@pytest.fixture(scope="session")
def build(digits, tiny_file, make_build):
    """digits-cnv planned onto three tiny boards and built for emulation."""
    from finnchain.boards.catalogue import Catalogue

    out = make_build(digits, Catalogue(tiny_file).chain("tiny:3"), "deploy")
    assert len(list(out.glob("stage*"))) == 3
    return out


@pytest.fixture(scope="session")
def deployed(boards, build):
    """The build deployed on the boards (once per session; a later deploy changes nothing)."""
    from clusterkit import playbook

    r = playbook(boards, build)
    assert r.returncode == 0, r.stdout[-3000:]
    return build
