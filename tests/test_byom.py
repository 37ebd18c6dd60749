"""Models users bring (Brevitas' own bnn_pynq examples, exported with export_qonnx as a FINN user
would): what finnchain cannot take yet is refused up front with the reason and the fix, never
with a traceback. (Full support for them is the open bring-your-own-model issue.)"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

pytest.importorskip("brevitas_examples")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tfc_1w1a (BipolarQuant activations) and tfc_2w2a, random weights, FLOAT32 input."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    folder = tmp_path_factory.mktemp("byom")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("tfc_1w1a", "tfc_2w2a"):
            model, _ = model_with_cfg(name, pretrained=False)
            model.eval()
            export_qonnx(model, input_t=torch.randn(1, 1, 28, 28),
                         export_path=str(folder / f"{name}.onnx"))
            out[name] = folder / f"{name}.onnx"
    return out


@pytest.fixture(scope="module")
def tfc_uint8(tmp_path_factory):
    """tfc_2w2a as finn-examples prepares a model: UINT8 images in (the /255 inside the
    model), a TopK out, shapes inferred."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg
    from qonnx.core.datatype import DataType
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.insert_topk import InsertTopK
    from qonnx.util.cleanup import cleanup_model

    from finnchain.graph.model import load, save

    class Scale(torch.nn.Module):
        def forward(self, x):
            return x / 255.0

    folder = tmp_path_factory.mktemp("tfc")
    model, _ = model_with_cfg("tfc_2w2a", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(torch.nn.Sequential(Scale(), model).eval(),
                     input_t=torch.randint(0, 256, (1, 1, 28, 28)).float(),
                     export_path=str(folder / "raw.onnx"))
    m = cleanup_model(load(folder / "raw.onnx"))
    m.set_tensor_datatype(m.graph.input[0].name, DataType["UINT8"])
    return save(m.transform(InsertTopK(k=1)).transform(InferShapes()), folder / "tfc.onnx")


def test_a_flatten_behind_the_scaling_and_batch_norm_run_bit_exactly(tfc_uint8):
    """TFC's first stages (the /255, a flatten, the input quantizer; a dense layer with batch
    norm and its quantizer) on the emulated fabric equal qonnx's reference, non-degenerate."""
    import numpy as np

    from finnchain.fabric.executor import Executor
    from finnchain.graph.cuts import cut_points
    from finnchain.graph.model import load
    from finnchain.graph.reference import run_reference
    from finnchain.graph.split import split

    model = load(tfc_uint8)
    cuts = cut_points(model)
    assert [c.datatype for c in cuts] == ["INT2"] * 4
    ops = {n.op_type for n in model.graph.node}
    assert {"Reshape", "BatchNormalization", "Div"} <= ops
    x = np.random.default_rng(0).integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)
    for stage in split(model, [c.index for c in cuts[:2]])[:2]:
        ours = Executor(stage).run(x)
        assert np.array_equal(ours, run_reference(stage, x.astype(np.float32)))
        assert np.unique(ours).size >= 3  # 2-bit codes: not degenerate
        x = ours
    # the whole model still ends in TensorNorm's float tail, which the emulator names
    r = _finnchain("check", tfc_uint8, "--stages", "2", "--inputs", "4")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "float operations (Sub, Div, Mul, Add)" in r.stderr, r.stderr[-1500:]


def _finnchain(*args):
    import os

    return subprocess.run([sys.executable, "-m", "finnchain.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "COLUMNS": "200"})  # rich: one row per line


def test_no_legal_cut_says_why_for_each_quantizer(exported, tmp_path):
    r = _finnchain("cuts", exported["tfc_1w1a"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "has no legal cut point" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout.count("BipolarQuant outputs are not supported as cuts yet") >= 3, r.stdout
    r = _finnchain("split", exported["tfc_1w1a"], "--stages", "2", "--out", tmp_path)
    assert r.returncode == 2 and "2 stages need 1 cuts; the model has 0" in r.stderr
    assert "BipolarQuant" in r.stderr and "Traceback" not in r.stderr
    r = _finnchain("cuts", exported["tfc_2w2a"], "--why")  # cuts, and the rest explained
    assert r.returncode == 0 and "legal cut points" in r.stdout


def test_a_float_input_or_no_top_k_is_refused_with_the_fix(exported, tmp_path):
    from qonnx.core.datatype import DataType

    from finnchain.graph.model import load, save

    r = _finnchain("plan", exported["tfc_2w2a"], "--boards", "zedboard:2", "--out",
                   tmp_path / "p1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "input 'x' is FLOAT32" in r.stderr and "UINT8" in r.stderr
    model = load(exported["tfc_2w2a"])
    model.set_tensor_datatype(model.graph.input[0].name, DataType["UINT8"])
    marked = save(model, tmp_path / "tfc_2w2a-uint8.onnx")
    r = _finnchain("plan", marked, "--boards", "zedboard:2", "--out", tmp_path / "p2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "not a TopK" in r.stderr and "InsertTopK" in r.stderr
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()
