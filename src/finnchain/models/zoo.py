"""The models finnchain knows by name: how to make each, its input, and sample inputs.

Importing it needs no torch (the ops extra reads names and paths); making a model does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    input_shape: tuple[int, ...]  # NCHW, batch 1
    topk: int
    make: Callable[[int], object]  # seed -> Brevitas model (eval mode)


def _mobilenet(seed: int):
    from finnchain.models import mobilenet_v1
    from finnchain.models.calibrate import calibrate, seeded_images

    model = mobilenet_v1.build(seed)
    calibrate(model, seeded_images(8, 3, 224, 224, seed=seed + 1), seed=seed + 2)
    return model


def _digits(seed: int):
    from finnchain.models import digits_cnv

    return digits_cnv.build(seed, log=None)


MODELS: dict[str, Recipe] = {
    "mobilenet-v1": Recipe(
        "mobilenet-v1",
        "MobileNetV1 W4A4 (8-bit first layer), 224x224 uint8 input, seeded and calibrated",
        (1, 3, 224, 224),
        5,
        _mobilenet,
    ),
    "digits-cnv": Recipe(
        "digits-cnv",
        "CNV-like W4A4 convnet trained on scikit-learn's 8x8 digits",
        (1, 1, 8, 8),
        1,
        _digits,
    ),
}


def recipe(name: str) -> Recipe:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def default_path(name: str, root: Path = Path("artifacts")) -> Path:
    return root / name / "model.onnx"


def export(name: str, out: Path, seed: int = 0) -> Path:
    """Make the model ``name`` with ``seed`` and write its QONNX file to ``out``."""
    from finnchain.graph.model import save
    from finnchain.models.export import to_qonnx

    r = recipe(name)
    model = r.make(seed)
    return save(to_qonnx(model, r.input_shape, topk=r.topk), out)


def sample_inputs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """``n`` seeded uint8 inputs of a model's input ``shape`` (images where the shape is NCHW)."""
    if len(shape) == 4:
        from finnchain.models.calibrate import seeded_images  # torch: the models extra

        return seeded_images(n, shape[1], shape[2], shape[3], seed)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape[1:]), dtype=np.uint8)
