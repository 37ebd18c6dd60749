"""Rules both sides apply alike: finnchain's emulated fabric (``fabric/compile.py``, on the
controller) and finnchain's FINN steps (``finnchain_steps.py``, in FINN's environment). numpy
only, so that both import this one file: the controller as
``finnchain.finn.finnside.finnchain_rules``, a build folder as its own copy (``finn/folder.py``
copies it with the steps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def whole_steps(b, s) -> np.ndarray | None:
    """A bias b as whole accumulator steps s (a scalar), or None. A bias Brevitas quantizes
    with the accumulator's scale (Int32Bias) is n * s stored in float32, so b / s is n to
    float32's rounding, not exactly: within 2**-20 of n relative (float32 carries 24 bits),
    and |n| < 2**22 so that the margin stays under a half. An empty bias is none."""
    steps = np.asarray(b, dtype=np.float64).reshape(-1) / float(np.asarray(s).reshape(-1)[0])
    n = np.round(steps)
    if n.size == 0 or np.abs(n).max() >= 2**22 or \
            np.any(np.abs(steps - n) > 2.0**-20 * np.maximum(1, np.abs(n))):
        return None
    return n.reshape(np.shape(b))


def int_range(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """The codes of an integer quantizer: [-2**(bits-1) (+1 if narrow), 2**(bits-1) - 1]
    signed, [0, 2**bits - 1] (- 1 if narrow) unsigned, as qonnx's min_int and max_int."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


# qonnx's defaults for a Trunc's (v2) attributes: signed, not narrow. A Quant must state both
# (qonnx requires them), and a Trunc v1 has neither (it clamps nothing): it takes these too.
QUANT_DEFAULTS = {"signed": 1, "narrow": 0}
QUANTIZERS = ("Quant", "BipolarQuant", "Trunc")


@dataclass(frozen=True)
class Codes:
    """The integer codes a quantizer emits: ``bits`` wide, ``signed``, ``narrow`` (the most
    negative code left out), from ``lo`` to ``hi``; a BipolarQuant's are -1 and +1 (FINN's
    BIPOLAR: one bit, signed, no zero)."""

    bits: int
    signed: bool
    narrow: bool
    bipolar: bool = False

    @property
    def lo(self) -> int:
        return -1 if self.bipolar else int_range(self.bits, self.signed, self.narrow)[0]

    @property
    def hi(self) -> int:
        return 1 if self.bipolar else int_range(self.bits, self.signed, self.narrow)[1]


def bits_input(op_type: str, inputs: int) -> int | None:
    """Which input of a quantizer holds its output bit width: Quant (x, scale, zeropt, bits)
    the fourth, Trunc v2 (x, scale, zeropt, in_bits, out_scale, out_bits) the sixth, Trunc v1
    (x, scale, zeropt, in_bits, out_bits) the fifth; a BipolarQuant has none."""
    if op_type == "Quant":
        return 3
    if op_type == "Trunc":
        return 5 if inputs == 6 else 4
    if op_type == "BipolarQuant":
        return None
    raise ValueError(f"{op_type} is not a quantizer ({', '.join(QUANTIZERS)})")


def quantizer_codes(op_type: str, attrs: dict, bits) -> Codes:
    """The codes of a quantizer node from its decoded attributes and its bit width (the value
    of its bit-width input; unused for a BipolarQuant). A Trunc's missing attributes take
    qonnx's defaults; a Quant without them, and a bit width that is not one whole number, are
    refused."""
    if op_type == "BipolarQuant":
        return Codes(1, True, False, bipolar=True)
    bits_input(op_type, 0)  # refuses what is no quantizer
    missing = [k for k in QUANT_DEFAULTS if k not in attrs]
    if op_type == "Quant" and missing:
        raise ValueError(f"a Quant needs the attributes signed and narrow (qonnx requires "
                         f"them); this one lacks {' and '.join(missing)}")
    b = np.asarray(bits, dtype=np.float64).reshape(-1)
    if b.size != 1 or not np.isfinite(b[0]) or b[0] != np.round(b[0]) or b[0] < 1:
        raise ValueError(f"a {op_type}'s bit width must be one whole number of at least 1, not "
                         f"{np.asarray(bits).tolist()}")
    return Codes(int(b[0]), bool(attrs.get("signed", QUANT_DEFAULTS["signed"])),
                 bool(attrs.get("narrow", QUANT_DEFAULTS["narrow"])))
