"""A small CNV-like network, really trained, on scikit-learn's 8x8 digits (shipped with the package).

uint8 image input (N, 1, 8, 8) with the /255 inside the model, an 8-bit input quantizer, four
3x3 convolutions (8-bit weights in the first, 4-bit weights and activations elsewhere) with two
2x2 max-pools, and two fully connected layers, then a top-1 label. Trains in seconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int32Bias
from torch import nn

from finnchain.models.digits_data import dataset  # noqa: F401  (the data, without torch)
from finnchain.models.quant import UintActPoT, WeightPerChannelPoT, WeightPerTensorPoT

BITS = 4


class DigitsCNV(nn.Module):
    def __init__(self, bits: int = BITS) -> None:
        super().__init__()
        self.input_quant = QuantIdentity(act_quant=UintActPoT, bit_width=8, return_quant_tensor=True)

        def conv(cin: int, cout: int, wbits: int) -> list[nn.Module]:
            return [
                QuantConv2d(cin, cout, 3, padding=1, bias=False,
                            weight_quant=WeightPerChannelPoT, weight_bit_width=wbits),
                nn.BatchNorm2d(cout),
                QuantReLU(act_quant=UintActPoT, bit_width=bits, return_quant_tensor=True),
            ]

        self.features = nn.Sequential(
            *conv(1, 16, 8), *conv(16, 16, bits), nn.MaxPool2d(2),
            *conv(16, 32, bits), *conv(32, 32, bits), nn.MaxPool2d(2),
        )
        self.fc1 = QuantLinear(128, 64, bias=False, weight_quant=WeightPerTensorPoT,
                               weight_bit_width=bits)
        self.bn1 = nn.BatchNorm1d(64)
        self.act1 = QuantReLU(act_quant=UintActPoT, bit_width=bits, return_quant_tensor=True)
        self.fc2 = QuantLinear(64, 10, bias=True, weight_quant=WeightPerTensorPoT,
                               weight_bit_width=bits, bias_quant=Int32Bias)

    def forward(self, x):
        x = self.input_quant(x * (1.0 / 255.0))
        x = self.features(x).flatten(1)
        x = self.act1(self.bn1(self.fc1(x)))
        return self.fc2(x)


def build(seed: int = 0, epochs: int = 40, log=print) -> DigitsCNV:
    """Train the network (quantization-aware) with a fixed seed; deterministic on one thread."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xtr, ytr, xte, yte = dataset(seed)
        model = DigitsCNV()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        x = torch.from_numpy(xtr.astype(np.float32))
        y = torch.from_numpy(ytr)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                idx = perm[i : i + 64]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
            sched.step()
            if log and (epoch + 1) % 10 == 0:
                log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, "
                    f"test accuracy {accuracy(model, xte, yte):.3f}")
        model.eval()
        return model
    finally:
        torch.set_num_threads(threads)


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(images.astype(np.float32))).argmax(1).numpy()
    return float((pred == labels).mean())
