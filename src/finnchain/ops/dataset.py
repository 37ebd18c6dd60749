"""Labelled images for ``fab benchmark --dataset``: how accurate the chain is, beside the whole
model on this machine.

Two forms:

- an ``.npz`` with ``images`` (uint8, the chain's input shape per image) and ``labels``
  (integer class indices, one per image);
- a folder in ImageNet's validation layout: one subfolder per class, sorted by name to give the
  class indices (``n01440764`` is class 0), image files inside. Each image is prepared as FINN's
  and finn-examples' ImageNet validation prepares it (``finn.util.imagenet.load_resize_crop``):
  RGB, the shorter side resized to 256 pixels (bilinear, the longer side in proportion), the
  central 224×224 window, uint8, channels first. A chain whose input is not 3×224×224 is told
  so: the layout's preparation is ImageNet's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp"}
RESIZE, CROP = 256, 224  # ImageNet's validation preparation (FINN's load_resize_crop)


class DatasetError(ValueError):
    """A dataset the benchmark cannot use; the message names the file and what is wrong."""


@dataclass
class Labelled:
    name: str
    images: np.ndarray  # uint8 (N, *shape)
    labels: np.ndarray  # int64 (N,)


def load_dataset(spec: str | Path, shape: tuple[int, ...]) -> Labelled:
    path = Path(spec)
    if path.is_dir():
        return _folder(path, shape)
    if path.is_file() and path.suffix == ".npz":
        return _npz(path, shape)
    raise DatasetError(f"--dataset {spec}: not an .npz of images and labels, nor a folder of "
                       "class subfolders (ImageNet's validation layout)")


def _npz(path: Path, shape: tuple[int, ...]) -> Labelled:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz ({exc})") from None
    missing = [k for k in ("images", "labels") if k not in data.files]
    if missing:
        raise DatasetError(f"{path} has no {' or '.join(missing)} (it holds "
                           f"{', '.join(data.files) or 'nothing'})")
    images, labels = data["images"], data["labels"]
    if images.dtype != np.uint8 or images.shape[1:] != tuple(shape) or len(images) == 0:
        raise DatasetError(f"{path}: images must be uint8 (N, {', '.join(map(str, shape))}) "
                           f"with N at least 1, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: labels must be {len(images)} whole numbers, one per "
                           f"image, got {labels.dtype} {labels.shape}")
    return Labelled(str(path), images, labels.astype(np.int64))


def prepare(path: Path) -> np.ndarray:
    """One image as ImageNet's validation prepares it: uint8 (3, 224, 224)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(RESIZE * long / short)
        img = img.resize((RESIZE, new_long) if w <= h else (new_long, RESIZE),
                         Image.BILINEAR)
        w, h = img.size
        top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
        img = img.crop((left, top, left + CROP, top + CROP))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def _folder(path: Path, shape: tuple[int, ...]) -> Labelled:
    if tuple(shape) != (3, CROP, CROP):
        raise DatasetError(f"{path}: a folder of class subfolders is prepared as ImageNet's "
                           f"validation images (3x{CROP}x{CROP}); this chain takes "
                           f"{'x'.join(map(str, shape))}: give an .npz of images and labels")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    if not classes:
        raise DatasetError(f"{path} has no class subfolders (ImageNet's validation layout: "
                           "one folder per class, images inside)")
    images, labels = [], []
    for index, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                images.append(prepare(f))
            except OSError as exc:
                raise DatasetError(f"{f}: not an image ({exc})") from None
            labels.append(index)
    if not images:
        raise DatasetError(f"{path}: its {len(classes)} class folders hold no images "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return Labelled(f"{path} ({len(classes)} classes)", np.stack(images),
                    np.asarray(labels, np.int64))


def topk(predictions: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Share of rows whose label is among the first ``k`` predicted classes (None when the
    predictions hold fewer than ``k`` classes per row)."""
    if predictions.ndim != 2 or predictions.shape[1] < k:
        return None
    return float(np.mean(np.any(predictions[:, :k] == labels[:, None], axis=1)))
