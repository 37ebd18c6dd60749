"""Shared fixtures: the two models are exported once per test session; one emulated cluster
(three boards, root only) serves every test that needs it, and is removed at the end."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from finnchain.graph.model import load
from finnchain.models import zoo

# FINN-side unit tests: they import FINN, so they run in FINN's environment (tests/test_finn.py)
collect_ignore = ["finnside"]


def pytest_collection_modifyitems(items):
    """Molecule's scenario runs first (it brings up and takes down a cluster of its own); the
    fault tests (tests/faults/) run last: they break and mend the cluster that the other
    cluster tests want as freshly flashed boards."""
    items.sort(key=lambda item: (item.path.name != "test_molecule.py",
                                 "/faults/" in str(item.path)))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits_path(models_dir):
    return zoo.export("digits-cnv", models_dir / "digits-cnv.onnx", seed=0)


@pytest.fixture(scope="session")
def mobilenet_path(models_dir):
    return zoo.export("mobilenet-v1", models_dir / "mobilenet-v1.onnx", seed=0)


@pytest.fixture(scope="session")
def brevitas_mobilenet_path(models_dir):
    """Brevitas' own quant_mobilenet_v1_4b as `finnchain export` makes it (calibrated, seed 1)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zoo.export("quant_mobilenet_v1_4b", models_dir / "quant_mobilenet_v1_4b.onnx",
                          seed=1)


@pytest.fixture(scope="session")
def digits(digits_path):
    return load(digits_path)


# what ONNX lets a node leave out: every attribute but auto_pad (the first and third
# convolutions), only the pads (the others), the pools' defaults
BARE = {"Conv_0": {"auto_pad": "SAME_UPPER"}, "Conv_1": {"pads"}, "Conv_2": {"auto_pad": "SAME_UPPER"},
        "Conv_3": {"pads"}, "MaxPool_0": {"kernel_shape", "strides"},
        "MaxPool_1": {"kernel_shape", "strides"}}


@pytest.fixture(scope="session")
def bare_digits_path(digits_path, models_dir):
    """digits-cnv with its convolutions and pools written as tersely as ONNX allows (BARE):
    valid ONNX, the same function (onnxruntime pads SAME_UPPER as the explicit pads)."""
    import onnx

    model = onnx.load(str(digits_path))
    for node in model.graph.node:
        if node.name not in BARE:
            continue
        kept = [a for a in node.attribute if a.name in BARE[node.name]]
        del node.attribute[:]
        node.attribute.extend(kept)
        if isinstance(BARE[node.name], dict):
            node.attribute.extend(onnx.helper.make_attribute(k, v)
                                  for k, v in BARE[node.name].items())
    path = models_dir / "digits-bare.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def mobilenet(mobilenet_path):
    return load(mobilenet_path)


@pytest.fixture(scope="session")
def digits_test_set():
    from finnchain.models.digits_data import dataset

    _, _, x, y = dataset(0)
    return x, y


@pytest.fixture(scope="session")
def mobilenet_images():
    return zoo.sample_inputs((1, 3, 224, 224), 3, seed=42)


def distinct(a: np.ndarray) -> int:
    return int(np.unique(a).size)


# A float32 tie, as Brevitas' resnet18_4w4a (seed 1) has one in the identity block's first
# convolution (channel 60): input and output scale 1/15, that channel's weight scale, batch
# norm. An accumulator of 692 is worth 3.4999990 output steps exactly, so its code is 3 in
# exact arithmetic; FINN's thresholds, derived in float32, put its threshold for 4 at 692.
TIE = dict(scale=0.06666667014360428, weight_scale=0.016574645414948463,
           bn_mul=1.86298406124115, bn_add=-1.191185712814331, acc=692)
# frame 0's input and the weights of three channels: 670 (code 3), the tie's 692, and 32 (code
# 0 under a negative batch-norm scale)
TIE_FRAME = np.array([14, 14, 14, 14, 14, 14, 14, 2])
TIE_WEIGHTS = np.array([[7, 7, 7, 7, 7, 7, 6, -1], [7, 7, 7, 7, 7, 7, 7, 3],
                        [-2, 5, 1, -7, 3, 6, -4, 2]])
TIE_LABEL = 1  # frame 0's top-1 where the tie gives 4 (0 where it gives 3)


@pytest.fixture(scope="session")
def tie_model(tmp_path_factory):
    """A one-layer network (8 UINT4 codes in, a learned scale, a matrix product with weight
    scales per output, batch norm, ReLU, a 4-bit quantizer, the top-1 of its codes) with
    TIE's scales in channels 0 and 1 (channel 2 has a negative batch-norm scale). Frame 0 reaches
    the tie in channel 1 and code 3 in channel 0: its label is TIE_LABEL where the tie gives 4
    and 0 where it gives 3. The others are random codes. Returns the model's path and frames."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    f32 = np.float32
    inits = []

    def const(name, value, kind=TensorProto.FLOAT):
        inits.append(helper.make_tensor(name, kind, np.shape(value), np.asarray(
            value, f32 if kind == TensorProto.FLOAT else np.int64).flatten()))
        return name

    quant = dict(domain="qonnx.custom_op.general", rounding_mode="ROUND")
    ws = np.array([TIE["weight_scale"]] * 2 + [0.021], f32).reshape(1, 3)
    w = (TIE_WEIGHTS.T * ws).astype(f32)  # (in, out)
    nodes = [
        helper.make_node("Mul", ["x", const("s_in", TIE["scale"])], ["xs"]),
        helper.make_node("Quant", [const("w", w), const("ws", ws), const("wz", 0.0),
                                   const("wb", 4.0)], ["wq"], signed=1, narrow=1, **quant),
        helper.make_node("MatMul", ["xs", "wq"], ["acc"]),
        helper.make_node("Mul", ["acc", const("bn_mul", np.array(
            [TIE["bn_mul"]] * 2 + [-1.3], f32).reshape(1, 3))], ["bn"]),
        helper.make_node("Add", ["bn", const("bn_add", np.array(
            [TIE["bn_add"]] * 2 + [-0.4], f32).reshape(1, 3))], ["bnb"]),
        helper.make_node("Relu", ["bnb"], ["r"]),
        helper.make_node("Quant", ["r", const("qs", TIE["scale"]), const("qz", 0.0),
                                   const("qb", 4.0)], ["y"], signed=0, narrow=0, **quant),
        helper.make_node("TopK", ["y", const("k", [1], TensorProto.INT64)],
                         ["values", "label"]),
    ]
    graph = helper.make_graph(
        nodes, "tie", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [1, 1])], inits)
    model = ModelWrapper(qonnx_make_model(graph, producer_name="finnchain-tests"))
    model.set_tensor_datatype("x", DataType["UINT4"])
    model = model.transform(InferShapes()).transform(GiveUniqueNodeNames())
    path = tmp_path_factory.mktemp("tie") / "tie.onnx"
    model.save(str(path))
    frames = np.random.default_rng(3).integers(0, 16, size=(12, 8))
    frames[0] = TIE_FRAME
    # thresholds of channels 0 and 1 at 660 and 692 (FINN's): codes 3 and the tie
    assert list(TIE_WEIGHTS @ TIE_FRAME) == [670, TIE["acc"], 32]
    return path, frames


TINY_BOARD = """
boards:
  tiny:
    title: A tiny test board
    part: xc7z020clg484-1
    family: xc7z020
    finn_board: null
    vivado_board_part: "avnet.com:zedboard:part0:*"
    clock_mhz: 100
    ethernet_mbps: 1000
    power_w: 1
    arm: {frame_us: 10, byte_ns: 1}
    limits: {lut: 0.1, bram18: 0.1, dsp: 0.02}
    shell: {lut: 300, bram18: 0}
"""


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory):
    """A catalogue file with a board small enough that digits-cnv needs several of them."""
    path = tmp_path_factory.mktemp("catalogue") / "tiny.yml"
    path.write_text(TINY_BOARD)
    return path


@pytest.fixture(scope="session")
def boards(tmp_path_factory):
    """Three emulated boards, freshly flashed; yields their inventory. Checks at the end that
    ``emu down`` leaves nothing behind."""
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root")
    from clusterkit import finnchain
    from finnchain.emu import cluster

    if cluster.load():
        pytest.skip("an emulated cluster is already up on this machine (finnchain emu down)")
    from clusterkit import INVENTORY as inventory

    r = finnchain("emu", "up", "--boards", "3", "--inventory", str(inventory))
    assert r.returncode == 0, r.stdout + r.stderr
    yield inventory
    r = finnchain("emu", "down")
    assert r.returncode == 0, r.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=False).stdout
    assert "fc-" not in netns, netns
    links = subprocess.run(["ip", "link"], capture_output=True, text=True, check=False).stdout
    assert cluster.HOST_LINK not in links
    assert not cluster.STATE.exists()


@pytest.fixture(scope="session")
def make_build(tmp_path_factory):
    """``make_build(model, boards, name, overlay=False, **plan_args)``: the model planned onto
    ``boards`` (a list of catalogue boards; ``plan_args`` for ``make_plan``) and built for
    emulation in a fresh folder; returns the build
    folder. ``overlay``: the emulated overlay an emulated board loads (FINN's own driver, the
    emulated bitstream; FINN's environment is made when missing), else the fabric alone (what
    stages on this machine run with the emulated accelerator)."""
    from finnchain.finn.command import build as build_command
    from finnchain.plan.make import make_plan, write_plan

    def make(model, boards, name: str = "build", overlay: bool = False, **plan_args):
        folder = tmp_path_factory.mktemp(name)
        plan, _, models = make_plan(model, boards, "digits-cnv", "x", **plan_args)
        write_plan(plan, models, folder / "plan")
        if overlay:
            from finnchain.finn import env as finn_env

            if finn_env.find() is None:
                if finn_env.unavailable_reason():
                    pytest.skip(f"FINN's driver for emulated boards: {finn_env.unavailable_reason()}")
                finn_env.make()
        assert build_command(folder / "plan", out=folder / "build", fabric_only=not overlay) == 0
        return folder / "build"

    return make


@pytest.fixture(scope="session")
def build(digits, tiny_file, make_build):
    """digits-cnv planned onto three tiny boards and built as emulated boards load it: FINN's
    own driver, run on the pynq library, the emulated PL behind it."""
    from finnchain.boards.catalogue import Catalogue

    out = make_build(digits, Catalogue(tiny_file).chain("tiny:3"), "deploy", overlay=True)
    assert len(list(out.glob("stage*"))) == 3
    return out


@pytest.fixture(scope="session")
def deployed(boards, build):
    """The build deployed on the boards (once per session; a later deploy changes nothing)."""
    from clusterkit import playbook

    r = playbook(boards, build)
    assert r.returncode == 0, r.stdout[-3000:]
    return build


BOARD_PYTHON = Path(__file__).resolve().parents[1] / ".venv-board" / "bin" / "python"


@pytest.fixture(scope="session")
def board_python() -> Path:
    """A PYNQ v3.0 image's Python (3.10, ``make board``: the oldest numpy and pyzmq finnchain
    accepts, the image's pynq library, the emulated PL's hook as an emulated board has it)."""
    if not BOARD_PYTHON.exists():
        if os.environ.get("FINNCHAIN_REQUIRE_BOARD_PYTHON"):
            pytest.fail(f"{BOARD_PYTHON} is missing: `make board` makes it (CI requires it)")
        pytest.skip("no .venv-board (`make board` makes it with a Python 3.10)")
    return BOARD_PYTHON
