"""The digits demo's data: scikit-learn's 8x8 digits as uint8 images (no torch needed, so that
`fab benchmark --source dataset` starts streaming at once)."""

from __future__ import annotations

import numpy as np


def dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images uint8 (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    imgs = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    xtr, xte, ytr, yte = train_test_split(
        imgs, d.target, test_size=0.2, random_state=seed, stratify=d.target
    )
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64)
