"""The models finnchain knows by name: how to make each, its input, and sample inputs.

Importing it needs no torch (the ops extra reads names and paths); making a model does."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    input_shape: tuple[int, ...]  # NCHW, batch 1
    topk: int
    make: Callable[..., object]  # (seed[, weights]) -> Brevitas model (eval mode)
    takes_weights: bool = False  # --weights: a state dict the user has


def _mobilenet(seed: int):
    from finnchain.models import mobilenet_v1
    from finnchain.models.calibrate import calibrate

    model = mobilenet_v1.build(seed)
    calibrate(model, seeded_images(8, 3, 224, 224, seed=seed + 1), seed=seed + 2)
    return model


def _digits(seed: int):
    from finnchain.models import digits_cnv

    return digits_cnv.build(seed, log=None)


def _bnn_pynq(name: str):
    """Brevitas' bnn_pynq example ``name`` (the networks of FINN's BNN-PYNQ and finn-examples)
    as finn-examples prepares it: uint8 images in, the /255 inside the model (its input
    quantizer then sees the range it was trained on), random weights from the seed unless
    ``weights`` (a state dict the user has, e.g. Brevitas' released checkpoint) is given."""

    def make(seed: int, weights: Path | None = None):
        import torch
        from brevitas_examples.bnn_pynq.models import model_with_cfg

        class Unit(torch.nn.Module):
            def forward(self, x):
                return x / 255.0

        torch.manual_seed(seed)
        model, _ = model_with_cfg(name, pretrained=False)  # never downloads
        if weights is not None:
            model.load_state_dict(_state_dict(weights, name), strict=True)
        else:  # TensorNorm starts as the identity: give its scalar tail values a trained one has
            g = torch.Generator().manual_seed(seed)
            for m in model.modules():
                if type(m).__name__ == "TensorNorm":
                    with torch.no_grad():
                        m.weight.uniform_(0.5, 2.0, generator=g)
                        m.bias.normal_(0.0, 1.0, generator=g)
                        m.running_mean.normal_(0.0, 1.0, generator=g)
                        m.running_var.uniform_(0.5, 2.0, generator=g)
        net = torch.nn.Sequential(Unit(), model)
        if weights is None and name.startswith("resnet"):  # its outputs are one class untrained
            from finnchain.models.calibrate import calibrate

            calibrate(net, seeded_images(8, 3, 32, 32, seed=seed + 1), seed=seed + 2,
                      scales=False, last_bn_gain=3.0)
            # its pooled features hardly vary between images, so one class would always win:
            # the classifier's bias centres its logits on the calibration images
            fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            seen = []
            hook = fc.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
            with torch.no_grad():
                net(torch.from_numpy(seeded_images(16, 3, 32, 32, seed=seed + 3)).float())
                hook.remove()
                logits = torch.cat([getattr(o, "value", o) for o in seen])
                fc.bias.sub_(logits.mean(dim=0))
        return net.eval()

    return make


def _imagenet(name: str):
    """Brevitas' imagenet_classification example ``name`` (quant_mobilenet_v1_4b: the network
    finn-examples deploys) with its preprocessing inside, as finn-examples and FINN's
    MobileNet test merge it: uint8 images, /255, the per-channel mean and the std of its
    configuration. Random weights are calibrated on seeded images (batch-norm statistics and
    activation scales, Brevitas' calibration mode) so that activations are not degenerate."""

    def make(seed: int, weights: Path | None = None):
        import torch
        from brevitas_examples.imagenet_classification.models import model_with_cfg

        torch.manual_seed(seed)
        model, cfg = model_with_cfg(name, pretrained=None)  # never downloads
        mean = [float(cfg.get("PREPROCESS", f"MEAN_{c}")) for c in range(3)]
        std = [float(cfg.get("PREPROCESS", f"STD_{c}")) for c in range(3)]

        class Preprocess(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
                # one std as one scalar: FINN moves a scalar Mul past the first convolution
                # (MoveScalarMulPastConv), not three equal ones
                self.register_buffer("std", torch.tensor(std[0]) if len(set(std)) == 1
                                     else torch.tensor(std).view(1, 3, 1, 1))

            def forward(self, x):
                return (x / 255.0 - self.mean) / self.std

        net = torch.nn.Sequential(Preprocess(), model)
        if weights is not None:
            model.load_state_dict(_state_dict(weights, name), strict=True)
        else:
            from finnchain.models.calibrate import calibrate

            calibrate(net, seeded_images(8, 3, 224, 224, seed=seed + 1), seed=seed + 2)
        return net.eval()

    return make


def _state_dict(path: Path, name: str) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"--weights {path}: not a PyTorch state dict ({exc})") from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"--weights {path}: not a state dict of {name}")
    return state


# name -> input shape (MNIST for the fully connected nets, CIFAR-10 for CNV and ResNet18)
_BNN_PYNQ = {
    **{f"{a}_{w}": (1, 1, 28, 28) for a in ("tfc", "sfc", "lfc")
       for w in ("1w1a", "1w2a", "2w2a") if not (a == "lfc" and w == "2w2a")},
    **{f"cnv_{w}": (1, 3, 32, 32) for w in ("1w1a", "1w2a", "2w2a")},
    "resnet18_4w4a": (1, 3, 32, 32),
}

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
MODELS.update({
    name: Recipe(name, f"Brevitas' bnn_pynq {name}, {shape[2]}x{shape[3]} uint8 input "
                       "(/255 inside), random weights from the seed or --weights",
                 shape, 1, _bnn_pynq(name), takes_weights=True)
    for name, shape in _BNN_PYNQ.items()
})
MODELS["quant_mobilenet_v1_4b"] = Recipe(
    "quant_mobilenet_v1_4b", "Brevitas' imagenet_classification MobileNetV1 W4A4 (learned "
    "scales, TruncAvgPool), 224x224 uint8 input (/255, mean, std inside), calibrated seeded "
    "weights or --weights", (1, 3, 224, 224), 5, _imagenet("quant_mobilenet_v1_4b"),
    takes_weights=True)


def recipe(name: str) -> Recipe:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def default_path(name: str, root: Path = Path("artifacts")) -> Path:
    return root / name / "model.onnx"


def export(name: str, out: Path, seed: int = 0, weights: Path | None = None) -> Path:
    """Make the model ``name`` with ``seed`` (or the state dict ``weights``) and write its
    QONNX file to ``out``."""
    from finnchain.graph.model import save
    from finnchain.models.export import to_qonnx

    r = recipe(name)
    if weights is not None and not r.takes_weights:
        raise ValueError(f"{name} is made and trained here; --weights is for Brevitas' examples")
    model = r.make(seed, weights) if r.takes_weights else r.make(seed)
    return save(to_qonnx(model, r.input_shape, topk=r.topk), out)


def resolve_model(spec: str, root: Path = Path("artifacts")) -> ModelWrapper:
    """A QONNX file, or a known model name (exported to ``root``/<name>/model.onnx if missing)."""
    from finnchain.graph.model import load

    path = Path(spec)
    if path.suffix == ".onnx" or path.exists():
        return load(path)
    recipe(spec)  # raises with the list of known names
    path = default_path(spec, root)
    if not path.exists():
        print(f"exporting {spec} to {path} ...", file=sys.stderr)
        export(spec, path)
    return load(path)


def sample_inputs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """``n`` seeded uint8 inputs of a model's input ``shape`` (images where the shape is NCHW)."""
    if len(shape) == 4:
        return seeded_images(n, shape[1], shape[2], shape[3], seed)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape[1:]), dtype=np.uint8)


def seeded_images(n: int, channels: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 images with structure (smooth gradients and blobs plus noise), not flat noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    out = np.empty((n, channels, height, width), dtype=np.uint8)
    for i in range(n):
        for c in range(channels):
            img = np.zeros((height, width))
            for _ in range(4):
                fy, fx = rng.uniform(0.5, 6.0, size=2)
                phase = rng.uniform(0, 2 * np.pi)
                img += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
            img += rng.normal(0, 0.25, size=img.shape)
            img = (img - img.min()) / (np.ptp(img) + 1e-9)
            out[i, c] = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return out
