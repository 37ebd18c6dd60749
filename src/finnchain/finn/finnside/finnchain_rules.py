"""Rules both sides apply alike: finnchain's emulated fabric (``fabric/compile.py``, on the
controller) and finnchain's FINN steps (``finnchain_steps.py``, in FINN's environment). numpy
only, so that both import this one file: the controller as
``finnchain.finn.finnside.finnchain_rules``, a build folder as its own copy (``finn/folder.py``
copies it with the steps)."""

from __future__ import annotations

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
