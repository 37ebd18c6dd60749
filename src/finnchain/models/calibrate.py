"""Seeded calibration data and calibration of untrained (seeded) quantized networks.

No pretrained weights can be downloaded, and a network whose activations are all zero or all one
value would make every bit-exactness test worthless. :func:`calibrate` therefore sets, on a few
seeded images, each batch-norm's statistics from the data it sees (so its output is centred and
scaled as chosen) and each activation quantizer's power-of-two scale from the values it sees
(Brevitas' calibration mode), so that every activation spreads over most of its integer range.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from brevitas.graph.calibrate import calibration_mode
from torch import nn


def calibrate(
    model: nn.Module,
    images: np.ndarray,
    seed: int,
    last_bn_gain: float = 1.0,
    scales: bool = True,
) -> None:
    """Set batch-norm statistics and activation scales of ``model`` on ``images`` (uint8 NCHW).

    Each batch-norm output is centred on a seeded beta drawn from (0.2, 1.0) with a seeded gamma
    in (0.6, 1.4), so a following ReLU keeps most of it. ``last_bn_gain`` multiplies the last
    batch-norm's output after the scales are set: a truncating average pool after it keeps only
    the high bits of a sum of codes, which stay varied only when the codes are high.
    ``scales=False`` sets the batch-norm statistics only.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(0.6 + 0.8 * torch.rand(bn.num_features, generator=gen))
            bn.bias.copy_(0.2 + 0.8 * torch.rand(bn.num_features, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        x = torch.from_numpy(images.astype(np.float32))
        model.eval()
        # scales=False: batch-norm statistics only (a ResNet's two sides of an add must keep
        # one scale, which calibrating each quantizer on its own would break)
        with calibration_mode(model) if scales else contextlib.nullcontext():
            for bn in bns:
                bn.train()
            for batch in torch.split(x, 4):
                model(batch)
        model.eval()
        for bn in bns:
            bn.momentum = 0.1
        if bns:
            bns[-1].weight.mul_(last_bn_gain)
            bns[-1].bias.mul_(last_bn_gain)
        # small seeded biases for fully connected outputs
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=gen))
