"""Accuracy on labelled images (``fab benchmark --dataset``): the .npz and ImageNet's
validation layout, prepared as FINN prepares ImageNet, the chain's top-1/top-5 beside the whole
model's, bad datasets named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from finnchain.boards.catalogue import Catalogue
from finnchain.ops.benchmark import BenchmarkError, run
from finnchain.ops.dataset import DatasetError, load_dataset, prepare, topk
from finnchain.ops.local import LocalChain

ROOT = Path(__file__).resolve().parents[1]


def test_topk_reads_class_indices():
    pred = np.array([[3, 1, 0, 2, 4], [0, 1, 2, 3, 4], [9, 8, 7, 6, 5]])
    labels = np.array([3, 4, 0])
    assert topk(pred, labels, 1) == pytest.approx(1 / 3)
    assert topk(pred, labels, 5) == pytest.approx(2 / 3)
    assert topk(pred[:, :1], labels, 5) is None  # a top-1 chain has no top-5


def _images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = []
    for k, (w, h) in enumerate(sizes):
        cls = folder / ("n0144" if k % 2 else "n0001")
        cls.mkdir(parents=True, exist_ok=True)
        path = cls / f"ILSVRC2012_val_{k:08d}.JPEG"
        # smooth gradients plus noise: many distinct values after resizing
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path, quality=95)
        paths.append(path)
    return paths


def test_imagenet_layout_is_prepared_as_finn_prepares_it(tmp_path):
    """Class indices from the sorted folder names; each image with its shorter side resized to
    256 and the central 224x224 kept, channels first (FINN's load_resize_crop; its torchvision
    is a placeholder in FINN's environment here, so the steps are checked by what they do): a
    mark at the centre of a landscape and of a portrait image lands at the centre of the crop,
    and a mark 100 pixels right of the centre of a 500x375 image lands 100 * 256 / 375 = 68
    pixels right of the crop's centre."""
    paths = _images(tmp_path / "val", [(500, 375), (333, 500), (256, 256), (640, 427)])
    data = load_dataset(tmp_path / "val", (3, 224, 224))
    assert data.images.shape == (4, 3, 224, 224) and data.images.dtype == np.uint8
    assert sorted(data.labels.tolist()) == [0, 0, 1, 1]
    assert data.labels[0] == 0  # n0001 sorts before n0144
    assert len(np.unique(data.images)) > 200  # not degenerate
    from PIL import Image

    for w, h in ((500, 375), (375, 500)):
        img = np.zeros((h, w, 3), np.uint8)
        img[h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4] = 255  # the centre, red green blue
        if w > h:
            img[h // 2 - 4:h // 2 + 4, w // 2 + 96:w // 2 + 104, 0] = 255  # 100 px right
        path = tmp_path / f"mark{w}x{h}.png"
        Image.fromarray(img).save(path)
        x = prepare(path)
        white = np.argwhere(x.min(axis=0) > 128)
        assert np.allclose(white.mean(axis=0), (111.5, 111.5), atol=1.0), white.mean(axis=0)
        if w > h:
            red = np.argwhere((x[0] > 128) & (x[1] < 64))
            assert abs(red[:, 1].mean() - (111.5 + 100 * 256 / 375)) < 1.5, red[:, 1].mean()
    assert len(paths) == 4


def test_bad_datasets_are_named(tmp_path):
    shape = (1, 8, 8)
    good = np.zeros((4, *shape), np.uint8)
    cases = [
        ({"images": good}, "has no labels"),
        ({"images": good.astype(np.float32), "labels": np.arange(4)}, "images must be uint8"),
        ({"images": good, "labels": np.arange(3)}, "labels must be 4 whole numbers"),
        ({"images": good[:, :, :4], "labels": np.arange(4)}, "(N, 1, 8, 8)"),
    ]
    for k, (arrays, message) in enumerate(cases):
        path = tmp_path / f"bad{k}.npz"
        np.savez(path, **arrays)
        with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_dataset(path, shape)
    (tmp_path / "garbled.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="garbled.npz: not a readable .npz"):
        load_dataset(tmp_path / "garbled.npz", shape)
    (tmp_path / "val" / "n01").mkdir(parents=True)
    with pytest.raises(DatasetError, match="ImageNet's validation images"):
        load_dataset(tmp_path / "val", shape)  # a digits chain is not 3x224x224
    with pytest.raises(DatasetError, match="hold no images"):
        load_dataset(tmp_path / "val", (3, 224, 224))
    with pytest.raises(DatasetError, match="not an .npz of images and labels"):
        load_dataset(tmp_path / "missing.npz", shape)


@pytest.fixture(scope="module")
def served(digits, tiny_file, make_build, tmp_path_factory):
    """digits-cnv on three emulated stages on this machine, its chain file in the build."""
    build = make_build(digits, Catalogue(tiny_file).chain("tiny:3"), "accuracy")
    work = tmp_path_factory.mktemp("accuracy-run")
    with LocalChain(build, work) as lc:
        shutil.copy(lc.file, build / "chain.json")
        yield build


def test_the_chains_accuracy_equals_the_whole_models_on_every_image(served, tmp_path):
    from finnchain.models.digits_data import dataset

    _, _, x, y = dataset(0)
    npz = tmp_path / "digits-test.npz"
    np.savez(npz, images=x.astype(np.uint8), labels=y)
    result, path = run(served, frames=10, window=8, dataset=str(npz), out=tmp_path)
    acc = result["accuracy"]
    assert result["frames"] == len(x)  # every image, though 10 frames were asked
    assert result["bit_exact"] and result["bit_exact_sample"] == len(x)  # every answer
    assert acc["images"] == acc["of"] == len(x) and acc["parted"] == 0
    assert acc["top1"] == acc["top1_whole_model"] > 0.9  # the test images it was not trained on
    assert acc["top5"] is None  # digits-cnv answers with its top class only
    assert json.loads(path.read_text())["accuracy"] == acc
    # the labels are what is scored: shuffled, the same answers score near chance
    np.savez(npz, images=x.astype(np.uint8), labels=np.random.default_rng(0).permutation(y))
    result, _ = run(served, frames=10, window=8, dataset=str(npz), out=tmp_path)
    assert result["accuracy"]["top1"] == result["accuracy"]["top1_whole_model"] < 0.3
    with pytest.raises(BenchmarkError, match="the dataset is the source"):
        run(served, dataset=str(npz), source="dataset", out=tmp_path)
