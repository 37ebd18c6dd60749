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
