"""MobileNetV1 with 4-bit weights and activations, in the topology of finn-examples' mobilenet-v1.

- uint8 image input (N, 3, 224, 224); the /255 and per-channel mean/std preprocessing are inside
  the model, followed by a signed 8-bit activation quantizer (the first layer's input);
- first convolution 3x3/2, 32 channels, 8-bit weights;
- 13 depthwise-separable blocks (3x3 depthwise + 1x1 pointwise), 4-bit weights and activations;
- 7x7 average pool requantized to 4 bits, a 1024x1000 fully connected layer with 4-bit weights
  and a 32-bit bias, and a top-k label output added at export.

One deliberate difference from finn-examples: the pool is a float average followed by a 4-bit
power-of-two quantizer, not Brevitas' TruncAvgPool2d, whose output scale carries a factor 1/49 that
would make the classifier's float reference inexact (and its top-k ties order-dependent).

Weights are seeded, not trained (no weights can be downloaded here); :func:`calibrate` sets the
batch-norm statistics and activation scales on seeded inputs so that every activation uses most
of its integer range.
"""

from __future__ import annotations

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int32Bias
from torch import nn

from finnchain.models.quant import IntActPoT, UintActPoT, WeightPerChannelPoT, WeightPerTensorPoT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.226, 0.226, 0.226)  # finn-examples' preprocessing uses one std for all channels

# (output channels, stride) of the depthwise-separable blocks
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
    (1024, 2),
    (1024, 1),
]


class Preprocess(nn.Module):
    """uint8 pixel values -> (x / 255 - mean) / std, per channel."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * (1.0 / 255.0) - self.mean) * self.inv_std


class ConvBnAct(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        groups: int,
        weight_bits: int,
        act_bits: int,
        weight_quant=WeightPerChannelPoT,
    ) -> None:
        super().__init__()
        self.conv = QuantConv2d(
            cin,
            cout,
            kernel,
            stride=stride,
            padding=kernel // 2,
            groups=groups,
            bias=False,
            weight_quant=weight_quant,
            weight_bit_width=weight_bits,
        )
        self.bn = nn.BatchNorm2d(cout)
        self.act = QuantReLU(act_quant=UintActPoT, bit_width=act_bits, return_quant_tensor=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class MobileNetV1(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        weight_bits: int = 4,
        act_bits: int = 4,
        first_layer_weight_bits: int = 8,
        width: int = 32,
    ) -> None:
        super().__init__()
        self.preprocess = Preprocess(IMAGENET_MEAN, IMAGENET_STD)
        self.input_quant = QuantIdentity(act_quant=IntActPoT, bit_width=8, return_quant_tensor=True)
        layers: list[nn.Module] = [
            ConvBnAct(3, width, 3, 2, 1, first_layer_weight_bits, act_bits)
        ]
        cin = width
        for cout, stride in BLOCKS:
            layers.append(ConvBnAct(cin, cin, 3, stride, cin, weight_bits, act_bits))
            layers.append(ConvBnAct(cin, cout, 1, 1, 1, weight_bits, act_bits))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(kernel_size=7, stride=1)
        self.pool_quant = QuantIdentity(
            act_quant=UintActPoT, bit_width=act_bits, return_quant_tensor=True
        )
        self.fc = QuantLinear(
            cin,
            num_classes,
            bias=True,
            weight_quant=WeightPerTensorPoT,
            weight_bit_width=weight_bits,
            bias_quant=Int32Bias,
        )

    def forward(self, x):
        x = self.input_quant(self.preprocess(x))
        x = self.pool_quant(self.pool(self.features(x)))
        x = x.flatten(1)
        return self.fc(x)


def build(seed: int = 0) -> MobileNetV1:
    torch.manual_seed(seed)
    return MobileNetV1()
