"""The affine form a quantizer's thresholds take where it can: per channel B and M (float32)
with clip(rint(fl(fl(a + B) * M))) equal to the thresholds at every level, fitted and then
verified exactly in float32, with the scale-and-round step rounded once and twice
(``fabric/compile.py`` emits it as the layer's bias and a depthwise convolution)."""

from __future__ import annotations

import numpy as np

EXACT_LIMIT = 2**24  # float32 holds every integer below this exactly
ROUNDER = 1.5 * 2**23  # fl(v + R) - R rounds v to an integer while |v| < 2**22


def fit_affine(T: np.ndarray, lo: np.ndarray, hi: np.ndarray, y_ends: np.ndarray,
                qmin: int, qmax: int):
    """Per-channel B, M (float32) with clip(rint(fl(fl(a + B) * M))) equal to the thresholds."""
    C = T.shape[0]
    B = np.zeros(C, dtype=np.float32)
    M = np.zeros(C, dtype=np.float32)
    levels = np.arange(qmin + 1, qmax + 1, dtype=np.float64)
    for c in range(C):
        fin = np.isfinite(T[c])
        j, t = levels[fin], T[c][fin]
        if j.size == 0:
            # a constant channel: a tiny slope on a huge offset rounds to its one code everywhere
            M[c] = np.float32(2.0**-30)
            B[c] = np.float32(y_ends[0, c] * 2.0**30)
            if not verify_affine(T[c], lo[c], hi[c], y_ends[:, c], B[c], M[c], qmin, qmax):
                return None
        else:
            # the level-j threshold of the affine form is j*d + e (d = 1/M, e = -B); find d, e
            # with T_j - 1 < j*d + e <= T_j for every finite threshold
            # unreachable levels bound the threshold line too: above hi (+inf), at most lo (-inf)
            up = levels[T[c] == np.inf]
            down = levels[T[c] == -np.inf]
            if j.size == 1:
                span = float(max(hi[c] - lo[c], 1))
                candidates = [span * 4.0, 1.0, span]
            else:
                dj = j[None, :] - j[:, None]
                dt = t[None, :] - t[:, None]
                mask = dj > 0
                dlo = ((dt - 1) / np.where(mask, dj, 1))[mask].max()
                dhi = ((dt + 1) / np.where(mask, dj, 1))[mask].min()
                if dlo >= dhi:
                    return None
                candidates = list(dlo + (dhi - dlo) * np.linspace(0.5, 0.02, 25)) + list(
                    dlo + (dhi - dlo) * np.linspace(0.52, 0.98, 24))
            for d in (d for d in candidates if d > 0):  # (BIPOLAR's two levels share a step)
                elo = (t - 1 - j * d).max()
                ehi = (t - j * d).min()
                if up.size:
                    elo = max(elo, hi[c] - up.min() * d)
                if down.size:
                    ehi = min(ehi, lo[c] - down.max() * d)
                if elo >= ehi:
                    continue
                e = (elo + ehi) / 2.0
                # rint(v) >= j where v >= j - 1/2: the level-j threshold (j - 1/2)*d - B = j*d + e
                M[c], B[c] = np.float32(1.0 / d), np.float32(-e - 0.5 * d)
                if verify_affine(T[c], lo[c], hi[c], y_ends[:, c], B[c], M[c], qmin, qmax):
                    break
            else:
                return None
    return B, M


def apply_affine(a: np.ndarray, B: np.float32, M: np.float32, qmin: int, qmax: int,
           fused: bool = False) -> np.ndarray:
    """clip(rint(fl(fl(a + B) * M))) as the program computes it in float32: the scale and the
    rounder R are one depthwise convolution, fl(fl(v * M) + R) - R, or with ``fused`` (a fused
    multiply-add) fl(v * M + R) - R. Both are monotone in ``a``."""
    v = (a.astype(np.float32) + B).astype(np.float32)
    if fused:
        y = (v.astype(np.float64) * np.float64(M) + ROUNDER).astype(np.float32)
    else:
        y = ((v * M).astype(np.float32) + np.float32(ROUNDER)).astype(np.float32)
    r = (y - np.float32(ROUNDER)).astype(np.float32)
    return np.clip(r, qmin, qmax)


def verify_affine(T, lo, hi, y_ends, B, M, qmin, qmax) -> bool:
    levels = np.arange(qmin + 1, qmax + 1)
    pts = [np.array([lo, hi])]
    exp = [y_ends]
    fin = np.isfinite(T)
    for shift, expect in ((0, levels[fin]), (-1, levels[fin] - 1)):
        p = T[fin] + shift
        ok = (p >= lo) & (p <= hi)
        pts.append(p[ok])
        exp.append(expect[ok])
    a = np.concatenate(pts).astype(np.int64)
    e = np.concatenate(exp)
    if np.any(np.abs(a) >= EXACT_LIMIT):
        return False
    return all(bool(np.all(apply_affine(a, B, M, qmin, qmax, fused) == e)) for fused in (False, True))
