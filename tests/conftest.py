"""Shared fixtures: the two models are exported once per test session."""

from __future__ import annotations

import numpy as np
import pytest

from finnchain.graph.model import load
from finnchain.models import zoo


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
