"""Brevitas quantizers shared by finnchain's models.

Every scale in these models is a power of two (Brevitas' fixed-point quantizers). That choice is
what makes the emulated accelerator provably bit-exact: a convolution over integer codes times
power-of-two scales is computed exactly in float32 in any summation order (as long as the
accumulator stays below 2**24 units), so the float reference and an integer kernel agree bit for
bit. FINN absorbs any scale into its thresholds, so the hardware does not care.
"""

from __future__ import annotations

from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)


class WeightPerChannelPoT(Int8WeightPerTensorFixedPoint):
    """Signed narrow-range weights, one power-of-two scale per output channel."""

    scaling_per_output_channel = True
    bit_width = None


class WeightPerTensorPoT(Int8WeightPerTensorFixedPoint):
    """Signed narrow-range weights, one power-of-two scale for the tensor."""

    bit_width = None


class UintActPoT(Uint8ActPerTensorFixedPoint):
    """Unsigned activations (ReLU), one power-of-two scale per tensor."""

    bit_width = None


class IntActPoT(Int8ActPerTensorFixedPoint):
    """Signed activations (the preprocessed image), one power-of-two scale per tensor."""

    bit_width = None
