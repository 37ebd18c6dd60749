"""The FINN build driver: emulate and FINN targets, the manifest, resuming, failures, splits."""

from __future__ import annotations

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
from finnchain.graph.model import load, with_batch
from finnchain.plan.make import make_plan, write_plan

ROOT = Path(__file__).resolve().parents[1]
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


def _check_manifest(out: Path, stages: int) -> Manifest:
    m = Manifest.read(out / "manifest.json")
    assert [s.index for s in m.stages] == list(range(stages))
    for s in m.stages:
        assert s.files, s.index
        for rel, digest in s.files.items():
            assert sha256_file(out / rel) == digest
    return m


def test_emulate_target_layout_and_resume(plan_dir, tmp_path):
    """The fabric alone (--fabric-only: what stages on this machine run; the emulated
    overlay a board loads is tested in tests/test_pynq.py)."""
    plan = json.loads((plan_dir / "plan.json").read_text())
    out = tmp_path / "out"
    r = _build(plan_dir / "plan.json", "--target", "emulate", "--fabric-only", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    m = _check_manifest(out, len(plan["stages"]))
    assert m.plan_hash == plan["plan_hash"] and m.target == "emulate" and m.cluster.startswith("tinyx")
    # the chain's rate is the plan's own (links and ARM sides count), not the slowest fabric
    assert m.predicted == {"fps": plan["predicted_fps"], "bottleneck": plan["bottleneck"]}
    assert m.predicted["fps"] <= min(s["fabric_fps"] for s in plan["stages"])
    for s in plan["stages"]:
        stage = json.loads((out / f"stage{s['index']}" / "stage.json").read_text())
        assert stage["accelerator"] == {"kind": "emulate", "model": "model.onnx",
                                        "program": "program.onnx"}
        assert (out / f"stage{s['index']}" / "program.json").is_file()
        assert stage["input"] == s["input"] and stage["cycles"] == s["cycles"]
        assert sha256_file(out / f"stage{s['index']}" / "model.onnx") == s["files"]["model_sha256"]
    # unchanged inputs: nothing is rebuilt
    stamp = (out / "stage0" / "model.onnx").stat().st_mtime_ns
    r = _build(plan_dir, "--target", "emulate", "--fabric-only", "--out", out)
    assert r.returncode == 0 and r.stdout.count("up to date") == len(plan["stages"])
    assert (out / "stage0" / "model.onnx").stat().st_mtime_ns == stamp
    # a damaged output is noticed and that stage alone is rebuilt
    (out / "stage1" / "model.onnx").write_bytes(b"damaged")
    r = _build(plan_dir, "--target", "emulate", "--fabric-only", "--out", out)
    assert r.returncode == 0 and r.stdout.count("up to date") == len(plan["stages"]) - 1
    _check_manifest(out, len(plan["stages"]))


def test_finn_target_needs_finn_root(plan_dir, tmp_path):
    r = _build(plan_dir, "--target", "finn", "--out", tmp_path)
    assert r.returncode == 2
    assert "FINN_ROOT" in r.stderr and "git clone" in r.stderr and "--target emulate" in r.stderr
    r = _build(plan_dir, "--target", "finn", "--out", tmp_path, env={"FINN_ROOT": str(tmp_path)})
    assert r.returncode == 2 and "run-docker.sh" in r.stderr


def test_finn_estimate_target_needs_finns_environment(plan_dir, tmp_path):
    r = _build(plan_dir, "--target", "finn-estimate", "--out", tmp_path / "out",
               env={"FINNCHAIN_FINN_ENV": str(tmp_path / "nowhere")})
    assert r.returncode == 2
    assert "no FINN environment at" in r.stderr and "finnchain finn-env" in r.stderr
    assert not (tmp_path / "out").exists()


def _fake_finn_env(path: Path, hls: bool, deps: bool) -> Path:
    """A FINN environment's layout without FINN in it: what ``finn.env.find`` looks for."""
    root = path / "src" / "finn"
    (root / "src" / "finn").mkdir(parents=True)
    (path / "bin").mkdir()
    (path / "bin" / "python").symlink_to(sys.executable)
    (path / "finnchain-finn-env.json").write_text(json.dumps({"finn_root": str(root),
                                                              "source": "deps"}))
    if deps:
        for name, probe in (("finn-hlslib", "mvau.hpp"), ("cnpy", "cnpy.cpp")):
            (root / "deps" / name).mkdir(parents=True)
            (root / "deps" / name / probe).write_text("")
    if hls:
        (path / "hls" / "include").mkdir(parents=True)
        for header in ("ap_int.h", "hls_stream.h"):
            (path / "hls" / "include" / header).write_text("")
    return path


def test_finn_cppsim_says_in_one_line_what_is_missing(plan_dir, tmp_path, monkeypatch):
    """Without finn-hlslib, the HLS headers or g++, --target finn-cppsim stops before any
    work with one line saying how to get what is missing (exit 2)."""
    from finnchain.finn import env as finn_env

    for var in ("HLS_PATH", "XILINX_HLS", "XILINX_VITIS"):
        monkeypatch.delenv(var, raising=False)
    no_deps = _fake_finn_env(tmp_path / "a", hls=True, deps=False)
    no_hls = _fake_finn_env(tmp_path / "b", hls=False, deps=True)
    ready = _fake_finn_env(tmp_path / "c", hls=True, deps=True)
    assert "finn-hlslib is missing" in finn_env.find(no_deps).cppsim_unavailable()
    assert "no HLS include folder" in finn_env.find(no_hls).cppsim_unavailable()
    assert finn_env.find(ready).cppsim_unavailable() is None  # g++ and zlib are here
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "no g++ on the PATH" in finn_env.find(ready).cppsim_unavailable()
    monkeypatch.undo()
    for env, words in ((no_deps, "finn-hlslib is missing"), (no_hls, "set HLS_PATH")):
        r = _build(plan_dir, "--target", "finn-cppsim", "--out", tmp_path / "out",
                   env={"FINNCHAIN_FINN_ENV": str(env), "HLS_PATH": ""})
        assert r.returncode == 2, r.stdout + r.stderr
        assert "FINN's C++ simulation cannot run" in r.stderr and words in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


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


def test_models_prepared_for_finn_compute_the_same(digits, mobilenet, digits_test_set,
                                                   mobilenet_images):
    """The rewrites FINN's front-end needs (a Relu before an unsigned identity quantizer, a
    whole-map AveragePool as GlobalAveragePool) leave the function unchanged, bit for bit."""
    from finnchain.finn.prepare import prepare_for_finn

    for model, x in ((digits, digits_test_set[0][:64]), (mobilenet, mobilenet_images[:1])):
        prepared = prepare_for_finn(model)
        ops = [n.op_type for n in prepared.graph.node]
        assert ops.count("Relu") > [n.op_type for n in model.graph.node].count("Relu")
        name = model.graph.input[0].name
        a = execute_onnx(with_batch(model, len(x)), {name: x.astype(np.float32)})
        b = execute_onnx(with_batch(prepared, len(x)), {name: x.astype(np.float32)})
        out = model.graph.output[0].name
        assert np.array_equal(a[out], b[out]) and np.unique(a[out]).size > 1
    assert "GlobalAveragePool" in [n.op_type for n in prepare_for_finn(mobilenet).graph.node]
    assert "AveragePool" in [n.op_type for n in mobilenet.graph.node]  # the original is kept


def test_a_stage_the_emulator_cannot_compile_is_named_and_the_others_kept(plan_dir, tmp_path,
                                                                          monkeypatch, capsys):
    """A stage whose model the emulated fabric refuses (as a user's TensorNorm tail was): the
    build names that stage, builds the others and writes their manifest; exit 1."""
    from finnchain.fabric.compile import CompileError
    from finnchain.finn import command

    real = command.collect_emulated

    def refuse_stage1(model, dest):
        if dest.name == "stage1":
            raise CompileError("node Mul_7 (Mul): a float tail the emulator cannot take")
        return real(model, dest)

    monkeypatch.setattr(command, "collect_emulated", refuse_stage1)
    assert command.build(plan_dir, out=tmp_path / "out", fabric_only=True) == 1
    err = capsys.readouterr().err
    assert "error: stage 1 failed: the emulated fabric cannot run it: node Mul_7" in err
    m = Manifest.read(tmp_path / "out" / "manifest.json")
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert [s.index for s in m.stages] == [s["index"] for s in plan["stages"] if s["index"] != 1]
