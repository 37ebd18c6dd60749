"""The FINN build driver: emulate and FINN targets, the manifest, resuming, failures, splits."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qonnx.core.onnx_exec import execute_onnx

from finnchain.boards.catalogue import Catalogue
from finnchain.files import sha256_file
from finnchain.finn.manifest import Manifest
from finnchain.finn.split_layers import SplitLayerError, split_layer
from finnchain.graph.model import load, with_batch
from finnchain.plan.make import make_plan, write_plan

ROOT = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "finn_standin" / "run-docker.sh"
@pytest.fixture(scope="module")
def plan_dir(digits, tiny_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan")
    boards = Catalogue(tiny_file).chain("tiny:4")
    plan, _, stage_models = make_plan(digits, boards, "digits-cnv", "digits-cnv.onnx")
    write_plan(plan, stage_models, folder / "plan")
    assert len(plan.stages) >= 2
    return folder / "plan"


def _build(*args, env=None):
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("FINN_ROOT", "FINN_STANDIN_FAIL")}
    full.update(env or {})
    return subprocess.run([sys.executable, "build/build.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False, env=full)


@pytest.fixture()
def finn_root(tmp_path):
    root = tmp_path / "finn"
    root.mkdir()
    shutil.copy(STANDIN, root / "run-docker.sh")
    return root


def _check_manifest(out: Path, stages: int) -> Manifest:
    m = Manifest.read(out / "manifest.json")
    assert [s.index for s in m.stages] == list(range(stages))
    for s in m.stages:
        assert s.files, s.index
        for rel, digest in s.files.items():
            assert sha256_file(out / rel) == digest
    return m


def test_emulate_target_layout_and_resume(plan_dir, tmp_path):
    plan = json.loads((plan_dir / "plan.json").read_text())
    out = tmp_path / "out"
    r = _build(plan_dir / "plan.json", "--target", "emulate", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    m = _check_manifest(out, len(plan["stages"]))
    assert m.plan_hash == plan["plan_hash"] and m.target == "emulate" and m.cluster.startswith("tinyx")
    for s in plan["stages"]:
        stage = json.loads((out / f"stage{s['index']}" / "stage.json").read_text())
        assert stage["accelerator"] == {"kind": "emulate", "model": "model.onnx",
                                        "program": "program.onnx"}
        assert (out / f"stage{s['index']}" / "program.json").is_file()
        assert stage["input"] == s["input"] and stage["cycles"] == s["cycles"]
        assert sha256_file(out / f"stage{s['index']}" / "model.onnx") == s["files"]["model_sha256"]
    # unchanged inputs: nothing is rebuilt
    stamp = (out / "stage0" / "model.onnx").stat().st_mtime_ns
    r = _build(plan_dir, "--target", "emulate", "--out", out)
    assert r.returncode == 0 and r.stdout.count("up to date") == len(plan["stages"])
    assert (out / "stage0" / "model.onnx").stat().st_mtime_ns == stamp
    # a damaged output is noticed and that stage alone is rebuilt
    (out / "stage1" / "model.onnx").write_bytes(b"damaged")
    r = _build(plan_dir, "--target", "emulate", "--out", out)
    assert r.returncode == 0 and r.stdout.count("up to date") == len(plan["stages"]) - 1
    _check_manifest(out, len(plan["stages"]))


def test_finn_target_needs_finn_root(plan_dir, tmp_path):
    r = _build(plan_dir, "--target", "finn", "--out", tmp_path)
    assert r.returncode == 2
    assert "FINN_ROOT" in r.stderr and "git clone" in r.stderr and "--target emulate" in r.stderr
    r = _build(plan_dir, "--target", "finn", "--out", tmp_path, env={"FINN_ROOT": str(tmp_path)})
    assert r.returncode == 2 and "run-docker.sh" in r.stderr


def test_finn_target_with_the_stand_in(plan_dir, finn_root, tmp_path):
    plan = json.loads((plan_dir / "plan.json").read_text())
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn", "--out", out, "--jobs", "2",
               env={"FINN_ROOT": str(finn_root)})
    assert r.returncode == 0, r.stdout + r.stderr
    m = _check_manifest(out, len(plan["stages"]))
    for s in m.stages:
        files = set(s.files)
        for rel in ("bitfile/finn-accel.bit", "bitfile/finn-accel.hwh", "driver/driver.py",
                    "report/estimate_network_performance.json", "stage.json"):
            assert f"stage{s.index}/{rel}" in files
        report = json.loads((out / f"stage{s.index}/report/estimate_network_performance.json")
                            .read_text())
        assert s.finn_estimate["max_cycles"] == report["max_cycles"]
        assert s.predicted["max_cycles"] == plan["stages"][s.index]["cycles"]
        folder = out / "finn-build" / f"stage{s.index}"
        ast.parse((folder / "build.py").read_text())  # a valid script for FINN's container
        cfg = json.loads((folder / "build_config.json").read_text())
        assert cfg["board"] == "Tiny" and cfg["fpga_part"] == "xc7z020clg484-1"
    assert "plan/FINN" in r.stdout
    _run_build_script(out / "finn-build" / "stage0")


def _run_build_script(folder: Path) -> None:
    """Run a generated build.py against a stand-in of FINN's Python interface."""
    fake = Path(__file__).resolve().parent / "finn_standin" / "fake_finn"
    r = subprocess.run([sys.executable, "build.py"], cwd=folder, capture_output=True, text=True,
                       env={"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin"}, check=False)
    assert r.returncode == 0, r.stderr
    record = json.loads((folder / "standin_record.json").read_text())
    assert record["model"] == "model.onnx"
    cfg = record["cfg"]
    assert cfg["board"] == "Tiny" and cfg["fpga_part"] == "xc7z020clg484-1"
    assert cfg["folding_config_file"] == "folding_config.json"
    assert cfg["shell_flow_type"] == "vivado_zynq" and "bitfile" in cfg["generate_outputs"]
    assert record["types"] == {"shell_flow_type": "ShellFlowType",
                               "generate_outputs": ["DataflowOutputType"]}
    # the unknown board is registered as FINN's own Zynq-7000 boards are
    assert record["part_map"]["Tiny"] == "xc7z020clg484-1" and record["port_width"]["Tiny"] == 64
    tcl = record["template"]
    branch = tcl.index('} elseif {$BOARD == "Tiny"} {')
    assert tcl.index('set ZYNQ_TYPE "zynq_7000"', branch) < tcl.index('{$BOARD == "Pynq-Z1"}')
    assert "get_board_parts -quiet avnet.com:zedboard:part0:*" in tcl
    assert tcl.count("{$BOARD ==") == 4  # ZCU104, Pynq-Z2, Tiny, Pynq-Z1


def test_a_failed_stage_is_named_and_the_others_kept(plan_dir, finn_root, tmp_path):
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn", "--out", out,
               env={"FINN_ROOT": str(finn_root), "FINN_STANDIN_FAIL": "stage1"})
    assert r.returncode == 1
    assert "stage 1 failed" in r.stderr and "stand-in failure requested" in r.stderr
    m = Manifest.read(out / "manifest.json")
    assert 1 not in [s.index for s in m.stages] and 0 in [s.index for s in m.stages]
    # the rerun builds stage 1 only
    r = _build(plan_dir, "--target", "finn", "--out", out, env={"FINN_ROOT": str(finn_root)})
    assert r.returncode == 0, r.stderr
    stages = len(json.loads((plan_dir / "plan.json").read_text())["stages"])
    assert r.stdout.count("up to date") == stages - 1
    _check_manifest(out, stages)


def test_a_plan_of_another_build_is_refused(plan_dir, tmp_path):
    other = tmp_path / "plan"
    shutil.copytree(plan_dir, other)
    model = load(other / "stage0" / "model.onnx")
    model.graph.doc_string = "changed"
    from finnchain.graph.model import save

    save(model, other / "stage0" / "model.onnx")
    r = _build(other, "--out", tmp_path / "out")
    assert r.returncode == 2 and "stage 0" in r.stderr and "another build" in r.stderr
    data = json.loads((plan_dir / "plan.json").read_text())
    data["stages"][0]["cycles"] += 1
    (other / "plan.json").write_text(json.dumps(data))
    r = _build(other, "--out", tmp_path / "out")
    assert r.returncode == 2 and "edited after planning" in r.stderr


@pytest.mark.parametrize("node, first", [("Conv_2", 12), ("Gemm_0", 3)])
def test_split_layer_computes_the_same(digits, digits_test_set, node, first):
    x = digits_test_set[0][:48]
    original = with_batch(digits, len(x))
    split = with_batch(split_layer(load_copy(digits), node, first), len(x))
    name = original.graph.input[0].name
    a = execute_onnx(original, {name: x.astype(np.float32)}, return_full_exec_context=True)
    b = execute_onnx(split, {name: x.astype(np.float32)}, return_full_exec_context=True)
    layer = next(n for n in digits.graph.node if n.name == node)
    concat = next(n for n in split.graph.node if n.op_type == "Concat")
    # the joined tensor is the original layer's activation, bit for bit, and not degenerate
    assert concat.output[0] in a and np.array_equal(a[concat.output[0]], b[concat.output[0]])
    assert np.unique(a[concat.output[0]]).size >= 8
    parts = [n for n in split.graph.node if n.name.startswith(f"{node}_part")]
    assert len(parts) == 2 and layer.name not in {n.name for n in split.graph.node}
    assert np.array_equal(a[original.graph.output[0].name], b[split.graph.output[0].name])


def load_copy(model):
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(model.model.__class__.FromString(model.model.SerializeToString()))


def test_split_layer_refuses_bad_requests(digits):
    with pytest.raises(SplitLayerError, match="no convolution or dense layer named 'Nope'"):
        split_layer(load_copy(digits), "Nope", 3)
    with pytest.raises(SplitLayerError, match="cannot split 10 channels at 10"):
        split_layer(load_copy(digits), "Gemm_0", 10)
