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
