"""FINN's float32 arithmetic order where it decides a result: the emulator computes the
product of a chain of multiplications as FINN's streamlining collapses it."""

from __future__ import annotations

import numpy as np


def collapse_pairwise(factors: list[np.ndarray]) -> np.ndarray:
    """One product of a chain of multiplications, as FINN's ``CollapseRepeatedMul`` makes it:
    each pass walks the chain and merges neighbours two by two ((m1 m2)(m3 m4)), until one is
    left; in float32, so the grouping is part of the result (for three or fewer it is the
    product from the left)."""
    while len(factors) > 1:
        merged = [factors[k] * factors[k + 1] for k in range(0, len(factors) - 1, 2)]
        factors = merged + ([factors[-1]] if len(factors) % 2 else [])
    return factors[0]
