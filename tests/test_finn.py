"""FINN v0.10.1's own compiler on finnchain's build folders, in FINN's own environment.

Every stage of the digits demo plan and of MobileNetV1 on six Zedboards goes through FINN's
front-end (every step up to the estimate reports) from the very build folder ``--target finn``
hands to FINN's docker flow; each must be what the plan costed (layers, folding, cycles, the
driver's bytes on the wire), and FINN's python-mode execution of its HW graph must equal the
emulated accelerator frame for frame. Skipped, saying why, only where there is no FINN at all
(no FINN_ROOT and no FINN archives in ../shared/deps); otherwise the environment is made once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import distinct
from finnchain.boards.catalogue import Catalogue
from finnchain.finn import env as finn_env
from finnchain.finn.verify import check_stage
from finnchain.plan.make import make_plan, write_plan
from finnchain.plan.schema import Plan

ROOT = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "finn_standin"  # docker and Vivado
DEMO_BOARDS = ROOT / "src" / "finnchain" / "boards" / "demo.yaml"


@pytest.fixture(scope="session")
def finn(tmp_path_factory):
    found = finn_env.find()
    if found is not None:
        return found
    reason = finn_env.unavailable_reason()
    if reason:
        pytest.skip(f"FINN checks skipped: {reason}")
    return finn_env.make()


def _build(*args, env=None, timeout=3600):
    full = {k: v for k, v in os.environ.items() if k != "FINN_ROOT"}
    full.update(env or {})
    return subprocess.run([sys.executable, "build/build.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False, env=full)


def _plan(model, spec, out: Path, catalogue: Path | None = None) -> Path:
    cat = Catalogue(catalogue) if catalogue else Catalogue()
    plan, _, stage_models = make_plan(model, cat.chain(spec), "m", "m.onnx")
    write_plan(plan, stage_models, out)
    return out


def _comparisons(out: Path, stages: int) -> list[dict]:
    return [json.loads((out / f"stage{k}" / "comparison.json").read_text())
            for k in range(stages)]


def _check_accepted(comparisons: list[dict]) -> None:
    for c in comparisons:
        assert c["accepted"], (c["index"], c["problems"])
        assert c["fits"], (c["index"], c["over"])
        # FINN's estimate has no DDR term: where the stage's DMAs bind (weights streamed from
        # DDR) the plan is slower than FINN's figure, never faster
        assert c["finn_cycles"] == c["plan_layer_cycles"] <= c["plan_cycles"]
        if c["plan_cycles"] == c["plan_layer_cycles"]:
            assert c["finn_fps"] == pytest.approx(c["plan_fps"], rel=1e-3)
        for layer in c["layers"]:
            plan, finn = layer["plan"], layer["finn"]
            assert finn is not None, layer["name"]
            assert finn["cycles"] == plan["cycles"], layer["name"]  # FINN's own cycle model
            # resources: the plan is never low (it is FINN's model, or conservative)
            assert finn["lut"] <= plan["lut"] * 1.02 + 1, layer
            assert finn["bram18"] <= plan["bram18"] and finn["dsp"] <= plan["dsp"], layer
            assert finn["uram"] == plan["uram"], layer
        for end in ("input", "output"):
            assert c["wire"][end]["equal"], c["wire"]


@pytest.fixture(scope="session")
def digits_plan(digits, tmp_path_factory):
    return _plan(digits, "demo-small:3", tmp_path_factory.mktemp("digits") / "plan", DEMO_BOARDS)


DIGITS_FRAMES = 8


@pytest.fixture(scope="session")
def digits_estimate(finn, digits_plan, tmp_path_factory):
    """Every digits stage through FINN without Vivado, C++ simulation included
    (``finn-cppsim``: the estimate flow, FINN's driver, and each HLS layer's C++ compiled and
    run on the verification vectors)."""
    out = tmp_path_factory.mktemp("digits-estimate")
    # --out relative to where the command runs, as a user types it (Verilator's models of
    # the RTL layers once failed to load from a relative build folder)
    r = _build(digits_plan, "--target", "finn-cppsim", "--out", os.path.relpath(out, ROOT),
               "--jobs", "2", "--frames", DIGITS_FRAMES)
    return r, out


def test_finn_environment_is_finn_v0101(finn):
    r = subprocess.run([str(finn.python), "-c", (
        "import finn.builder.build_dataflow_steps as s, qonnx, torchvision.transforms.functional"
        " as tv\nprint(s.__file__)\ntry:\n    tv.resize(None, 1)\nexcept RuntimeError as e:\n"
        "    print('placeholder:', e)")], env=finn.environ(finn.path / "tmp"),
        capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert str(finn.finn_root / "src" / "finn" / "builder") in r.stdout
    assert "placeholder: torchvision is a placeholder" in r.stdout


def test_each_finnside_transformation_on_a_small_graph_in_finns_environment(finn, tmp_path):
    """tests/finnside: each transformation finnchain adds to FINN's flow, on a graph of its
    own, executed before and after by FINN's execute_onnx, in FINN's environment; every
    Transformation class in finnchain_steps.py has its test there."""
    import ast

    steps = ROOT / "src" / "finnchain" / "finn" / "finnside" / "finnchain_steps.py"
    classes = [n.name for n in ast.parse(steps.read_text()).body if isinstance(n, ast.ClassDef)
               and any(getattr(b, "id", "") == "Transformation" for b in n.bases)]
    assert len(classes) >= 9, classes
    tests = (ROOT / "tests" / "finnside" / "test_transformations.py").read_text()
    assert all(f"def test_{c}" in tests for c in classes), \
        [c for c in classes if f"def test_{c}" not in tests]
    r = subprocess.run([str(finn.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--confcutdir", "tests/finnside", "-o", "addopts=", "tests/finnside"],
                       cwd=ROOT, env=finn.environ(tmp_path), capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "passed" in r.stdout and "failed" not in r.stdout and "skipped" not in r.stdout


def test_every_digits_stage_is_what_finn_builds(digits_plan, digits_estimate):
    r, out = digits_estimate
    assert r.returncode == 0, r.stdout + r.stderr
    plan = Plan.read(digits_plan / "plan.json")
    assert len(plan.stages) == 3
    _check_accepted(_comparisons(out, 3))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "finn-cppsim"
    assert all(s["accelerator"]["kind"] == "finn-cppsim" for s in manifest["stages"])
    # the last stage ends in FINN's LabelSelect: the plan's output is its datatype and bytes
    assert plan.stages[-1].output.datatype == "UINT8" and plan.stages[-1].output.bytes_per_frame == 1
    nodes = json.loads((out / "stage2" / "report" / "finnchain_nodes.json").read_text())
    assert [n["op_type"] for n in nodes["nodes"]][-2:] == ["ChannelwiseOp_hls", "LabelSelect_hls"]
    # nothing ran twice: a second build finds every stage up to date
    again = _build(digits_plan, "--target", "finn-cppsim", "--out", out, "--frames",
                   DIGITS_FRAMES)
    assert again.returncode == 0 and again.stdout.count("up to date") == 3, again.stdout


def test_a_cppsim_build_where_make_cannot_go_is_refused(finn, digits_plan, tmp_path):
    """make (Verilator's models of the RTL layers) cannot take ':' or a space in a path: said
    before any work, where FINN's own error was 'cannot open shared object file'."""
    for name in ("demo-small:3", "two words"):
        r = _build(digits_plan, "--target", "finn-cppsim", "--out", tmp_path / name)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"{tmp_path / name}: FINN's C++ simulation builds its RTL layers with " \
            "Verilator and make, and make cannot take a path holding ':' or a space" in r.stderr
        assert not (tmp_path / name).exists()


def test_finns_cpp_simulation_of_every_digits_stage_equals_the_emulator(digits_plan,
                                                                      digits_estimate):
    """Each stage's HLS layers compiled from finn-hlslib and simulated in C++ (FINN's own
    PrepareCppSim, CompileCppSim and verify_step) equal the emulated fabric on every
    verification frame, and the frames are not degenerate at any cut."""
    r, out = digits_estimate
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["stages"]:
        v = entry["verification"]["folded_hls_cppsim"]
        assert v["frames"] == v["equal"] == DIGITS_FRAMES, (entry["index"], v)
        assert v["layers"] >= 2 and v["first_mismatch"] is None
        assert v["distinct_in"] >= 8 and v["distinct_out"] >= (3 if entry["index"] < 2 else 2)
        folder = out / "finn-build" / f"stage{entry['index']}"
        files = sorted((folder / "output" / "verification_output").glob("verify_*.npy"))
        assert [f.name for f in files] == [f"verify_folded_hls_cppsim_{b}_SUCCESS.npy"
                                           for b in range(DIGITS_FRAMES)]
        expected = np.load(folder / "verify" / "expected_output.npy")
        for b, f in enumerate(files):  # FINN's own outputs, frame by frame
            assert np.array_equal(np.load(f).reshape(expected[b].shape), expected[b])
        cfg = json.loads((folder / "build_config.json").read_text())
        assert cfg["verify_steps"] == ["folded_hls_cppsim", "stitched_ip_rtlsim"]
        assert "FINN's C++ simulation" in r.stdout


def test_finns_own_driver_is_the_plans_wire(digits_plan, digits_estimate):
    """The driver FINN's MakePYNQDriver writes for every stage (on the graph of its Zynq flow,
    its DMAs named as FINN's block design names them) moves the plan's wire bytes."""
    from finnchain.graph.driver import check_io_shapes, read_io_shape_dict

    _, out = digits_estimate
    plan = Plan.read(digits_plan / "plan.json")
    for s in plan.stages:
        driver = out / f"stage{s.index}" / "driver"
        assert (driver / "driver_base.py").is_file() and (driver / "finn" / "util").is_dir()
        io = read_io_shape_dict(driver / "driver.py")
        assert io["input_dma_name"] == ["idma0"] and io["output_dma_name"] == ["odma0"]
        assert io["number_of_external_weights"] == 0
        stage = json.loads((out / f"stage{s.index}" / "stage.json").read_text())
        check_io_shapes(io, stage)  # what FinnAccelerator checks at start on the board
        deployed = out / "finn-build" / f"stage{s.index}" / "output" / "deploy" / "driver"
        assert (deployed / "driver.py").read_bytes() == (driver / "driver.py").read_bytes()


def test_finn_executes_every_digits_stage_as_the_emulator(finn, digits_plan, digits_estimate,
                                                          digits_test_set):
    _, out = digits_estimate
    plan = Plan.read(digits_plan / "plan.json")
    codes = digits_test_set[0][:24].astype(np.int64)
    for s in plan.stages:
        check, codes = check_stage(finn, out / "finn-build" / f"stage{s.index}", s.index,
                                   digits_plan / s.files["model"], codes)
        assert check.bit_exact, check
        assert check.distinct_in >= 8, check  # inputs are not degenerate at any cut
    assert np.array_equal(codes[:, 0], _whole(digits_plan, plan, digits_test_set[0][:24]))


def _whole(plan_dir: Path, plan: Plan, images: np.ndarray) -> np.ndarray:
    from finnchain.fabric.executor import Executor

    codes = images
    for s in plan.stages:
        codes = Executor(plan_dir / s.files["model"]).run(codes)
    return np.asarray(codes)[:, 0]


def test_finn_packs_as_the_wire_where_the_planner_folds(finn, tmp_path):
    """FINN's driver packing of a folded tensor equals the wire's exactly when the group is all
    channels or both group and channels fill whole bytes (the planner's rule at cuts)."""
    script = tmp_path / "packcheck.py"
    script.write_text(f"""
import importlib.util, sys, json
import numpy as np
from finn.util.data_packing import finnpy_to_packed_bytearray
from qonnx.core.datatype import DataType
spec = importlib.util.spec_from_file_location("pk", "{ROOT}/src/finnchain/graph/pack.py")
pk = importlib.util.module_from_spec(spec); sys.modules["pk"] = pk; spec.loader.exec_module(pk)
rng = np.random.default_rng(0)
out = []
for name in ["UINT4", "INT4", "UINT8", "INT8", "UINT2", "BIPOLAR", "UINT3", "UINT16"]:
    dt = DataType[name]
    for c, fold in [(16, 16), (16, 4), (16, 2), (16, 1), (12, 3), (10, 10), (5, 5), (6, 2)]:
        x = rng.integers(dt.min(), dt.max() + 1, size=(2, 3, 3, c)).astype(np.float32)
        if name == "BIPOLAR":
            x = np.where(x > 0, 1, -1).astype(np.float32)
        wire = pk.pack(x, name)
        unfolded = finnpy_to_packed_bytearray(x, dt, reverse_endian=True, reverse_inner=True,
                                              fast_mode=True)
        folded = finnpy_to_packed_bytearray(x.reshape(2, 3, 3, c // fold, fold), dt,
                                            reverse_endian=True, reverse_inner=True,
                                            fast_mode=True)
        same = folded.size == wire.size and bool((folded.reshape(wire.shape) == wire).all())
        out.append([name, c, fold, bool((unfolded == wire).all()), same])
print(json.dumps(out))
""")
    r = subprocess.run([str(finn.python), str(script)], env=finn.environ(tmp_path),
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    from finnchain.graph.pack import IntType
    from finnchain.plan.folding import aligned

    cases = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(cases) == 64
    for name, c, fold, unfolded_same, folded_same in cases:
        assert unfolded_same, (name, c)  # the wire is FINN's packing of the unfolded tensor
        assert folded_same == aligned(fold, c, IntType(name).bitwidth()), (name, c, fold)
    assert sum(not case[4] for case in cases) >= 8  # the rule rejects real cases


def test_unknown_boards_are_registered_in_finn(finn, digits_estimate):
    _, out = digits_estimate
    folder = out / "finn-build" / "stage0"
    meta = json.loads((folder / "finnchain.json").read_text())
    meta["board"].update(finn_name="Zedboard", part="xc7z020clg484-1",
                         vivado_board_part="avnet.com:zedboard:part0:*")
    r = subprocess.run([str(finn.python), "-c", (
        "import json, sys; sys.path.insert(0, '.'); import finnchain_steps as s\n"
        "from finn.util import basic\nfrom finn.transformation.fpgadataflow import templates\n"
        f"s.register_board(json.loads({json.dumps(json.dumps(meta['board']))}))\n"
        "print(json.dumps([basic.pynq_part_map['Zedboard'], "
        "basic.pynq_native_port_width['Zedboard'], templates.custom_zynq_shell_template]))")],
        cwd=folder, env=finn.environ(folder / "finn-tmp"), capture_output=True, text=True,
        check=False)
    assert r.returncode == 0, r.stderr
    part, width, tcl = json.loads(r.stdout.strip().splitlines()[-1])
    assert part == "xc7z020clg484-1" and width == 64
    branch = tcl.index('} elseif {$BOARD == "Zedboard"} {')
    assert tcl.index('set ZYNQ_TYPE "zynq_7000"', branch) < tcl.index('{$BOARD == "Pynq-Z1"}')
    assert "get_board_parts -quiet avnet.com:zedboard:part0:*" in tcl


def test_a_failed_finn_step_is_named_and_the_other_stages_kept(digits_plan, finn, tmp_path):
    plan_dir = tmp_path / "plan"
    shutil.copytree(digits_plan, plan_dir)
    fold = json.loads((plan_dir / "stage1" / "folding_config.json").read_text())
    name = next(k for k in fold if k.startswith("MVAU"))
    fold[name]["mem_mode"] = "nosuchmode"  # FINN refuses it when the folding config is applied
    (plan_dir / "stage1" / "folding_config.json").write_text(json.dumps(fold))
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn-estimate", "--out", out, "--jobs", "2", timeout=900)
    assert r.returncode == 1
    assert "stage 1 failed: FINN step step_finnchain_apply_folding failed" in r.stderr, r.stderr
    assert "nosuchmode" in r.stderr and "Traceback" not in r.stderr and "(Pdb)" not in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in manifest["stages"]] == [0, 2]
    status = json.loads((out / "finn-build" / "stage1" / "finnchain-status.json").read_text())
    assert status["ok"] is False and status["failed_step"] == "step_finnchain_apply_folding"


CPPSIM_SCRIPT = """
import json, sys
sys.path.insert(0, ".")
import numpy as np
import finnchain_steps  # the folder's steps register nothing else; imported as build.py does
from finnchain_cppsim import CppsimError, compile_cppsim, step_finnchain_verify_cppsim
from finn.builder.build_dataflow_config import DataflowBuildConfig, VerificationStepType
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
model = ModelWrapper("output/intermediate_models/step_finnchain_minimize_bit_width.onnx")
cfg = DataflowBuildConfig(output_dir="output", synth_clk_period_ns=10.0, generate_outputs=[],
                          fpga_part="xc7z020clg400-1",
                          verify_steps=[VerificationStepType.FOLDED_HLS_CPPSIM],
                          verify_input_npy="verify/input.npy",
                          verify_expected_output_npy="verify/expected_output.npy")
if sys.argv[1] == "overflow":
    # the narrowest accumulator FINN's code generation takes (it holds the thresholds) but not
    # the sums of large inputs: the C++ wraps around where FINN's python model does not
    node = model.get_nodes_by_op_type("MVAU_hls")[0]
    thr = model.get_initializer(node.input[2])
    narrow = max(DataType.get_smallest_possible(thr.min()).bitwidth(),
                 DataType.get_smallest_possible(thr.max()).bitwidth() + 1)
    getCustomOp(node).set_nodeattr("accDataType", f"INT{narrow}")
try:
    if sys.argv[1] == "compile":
        compile_cppsim(model)
    else:
        step_finnchain_verify_cppsim(model, cfg)
    print(json.dumps({"raised": False}))
except CppsimError as exc:
    print(json.dumps({"raised": True, "message": str(exc), "layer": exc.layer,
                      "mismatch": exc.mismatch}))
"""


def _cppsim_case(finn, folder: Path, case: str, env: dict | None = None) -> dict:
    (folder / "case.py").write_text(CPPSIM_SCRIPT)
    r = subprocess.run([str(finn.python), "case.py", case], cwd=folder,
                       env={**finn.environ(folder / "finn-tmp"), **(env or {})},
                       capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_layer_whose_cpp_parts_from_its_python_model_is_named(finn, digits_plan,
                                                                digits_estimate, tmp_path):
    """A stage whose C++ computes otherwise than FINN's python model of its layers (here an
    accumulator too narrow for frames of large codes: the C++ wraps around) fails FINN's
    C++ simulation naming the first differing frame, index and values, and the layer, found
    by running each layer's python model on what its C++ received."""
    from finnchain.fabric.executor import Executor

    _, out = digits_estimate
    folder = tmp_path / "stage1"
    shutil.copytree(out / "finn-build" / "stage1", folder)
    (folder / "finn-tmp").mkdir(exist_ok=True)
    shutil.rmtree(folder / "output" / "verification_output")
    x = np.load(folder / "verify" / "input.npy")
    x[0] = x.max()  # every code at its largest: the accumulators' extreme
    y = np.asarray(Executor(digits_plan / "stage1" / "model.onnx").run(x.astype(np.int64)))
    np.save(folder / "verify" / "input.npy", x)
    np.save(folder / "verify" / "expected_output.npy", y.astype(np.float32))
    got = _cppsim_case(finn, folder, "overflow")
    assert got["raised"], got
    assert got["layer"] == "MVAU_hls_0", got
    assert got["mismatch"]["frame"] == 0 and got["mismatch"]["got"] != got["mismatch"]["expected"]
    assert "layer MVAU_hls_0 (MVAU_hls) parts from FINN's python model of it" in got["message"]
    assert "frames differ in FINN's C++ simulation; first frame 0 at index" in got["message"]
    report = json.loads((folder / "output" / "report" / "finnchain_cppsim.json").read_text())
    assert report["layer"] == "MVAU_hls_0" and report["equal"] < report["frames"]


def test_a_layer_whose_cpp_does_not_compile_is_named_with_the_compilers_error(
        finn, digits_estimate, tmp_path):
    """HLS headers that do not compile: the first layer is named with g++'s first error line
    (FINN's own compile script goes on silently and leaves no program)."""
    _, out = digits_estimate
    folder = tmp_path / "stage0"
    shutil.copytree(out / "finn-build" / "stage0", folder)
    (folder / "finn-tmp").mkdir(exist_ok=True)
    hls = tmp_path / "hls"
    shutil.copytree(finn.hls_path, hls)
    with open(hls / "include" / "hls_stream.h", "a") as f:
        f.write("\nnot C++ at all;\n")
    got = _cppsim_case(finn, folder, "compile", env={"HLS_PATH": str(hls)})
    assert got["raised"] and got["layer"] in ("Thresholding_hls_0", "MVAU_hls_0"), got
    assert f"the C++ of layer {got['layer']}" in got["message"]
    assert "does not compile:" in got["message"] and "hls_stream.h" in got["message"]
    assert "error" in got["message"]


def test_the_finn_target_runs_finns_docker_flow_and_collects_its_outputs(finn, digits_plan,
                                                                        tmp_path):
    """``--target finn`` through FINN's docker command line (tests/finn_standin/run-docker.sh
    stands in for the container and Vivado: FINN's real front-end and its own MakePYNQDriver
    run, under pdb as in the container, and placeholder bit/hwh files stand in for Vivado's):
    every stage collected with FINN's driver, the folder's status read rather than pdb's exit
    code, the verification vectors and verify steps in each folder."""
    root = tmp_path / "finnroot"
    root.mkdir()
    shutil.copy(STANDIN / "run-docker.sh", root / "run-docker.sh")
    out = tmp_path / "digits-finn"
    r = _build(digits_plan, "--target", "finn", "--out", out, "--jobs", "2",
               env={"FINN_ROOT": str(root), "FINNCHAIN_FINN_ENV": str(finn.path)})
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "finn" and len(manifest["stages"]) == 3
    for k in range(3):
        stage = json.loads((out / f"stage{k}" / "stage.json").read_text())
        assert stage["accelerator"] == {"kind": "finn", "bitfile": "bitfile/finn-accel.bit",
                                        "hwh": "bitfile/finn-accel.hwh", "driver": "driver"}
        assert (out / f"stage{k}" / "driver" / "driver_base.py").is_file()
        folder = out / "finn-build" / f"stage{k}"
        cfg = json.loads((folder / "build_config.json").read_text())
        assert cfg["verify_steps"] == ["folded_hls_cppsim", "stitched_ip_rtlsim"]
        inputs, expected = (np.load(folder / f) for f in (cfg["verify_input_npy"],
                                                          cfg["verify_expected_output_npy"]))
        assert len(inputs) == len(expected) == 4 and distinct(inputs) >= 8


@pytest.mark.slow
def test_mobilenet_on_five_zedboards_is_what_finn_builds(finn, mobilenet, tmp_path):
    """Every stage accepted by FINN's front-end with the plan's cycles, the classifier's
    weights streaming from DDR (mem_mode external: FINN's driver writes them, 4-bit, for its
    weight DMA); FINN's execution equals the emulator on every stage whose input is 28x28 or
    smaller (the 224x224 first stage: bench/finn.py)."""
    plan_dir = _plan(mobilenet, "zedboard:5", tmp_path / "plan")
    plan = Plan.read(plan_dir / "plan.json")
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn-estimate", "--out", out, "--jobs", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    _check_accepted(_comparisons(out, len(plan.stages)))
    assert plan.stages[-1].output.datatype == "UINT16"  # top-5 of 1000 classes
    (k, fc), = [(s.index, op) for s in plan.stages for op in s.ops
                if op.fold["ram_style"] == "external"]
    zynq = json.loads((out / "finn-build" / f"stage{k}" / "output" / "report" /
                       "finnchain_zynq.json").read_text())
    (dma,) = [ip for ip in zynq["ips"] if ip.get("role") == "weights"]
    assert dma["bytes_per_frame"] == fc.shape["mw"] * fc.shape["mh"] * 4 // 8 == 512_000
    assert _finn_equals_emulator(finn, plan_dir, plan.stages, out) >= 3


def _finn_equals_emulator(finn, plan_dir: Path, stages: list, out: Path) -> int:
    """FINN's execution of every stage of 28x28 or less against the emulator (two seeded
    224x224 images, the emulator running the stages before); returns how many were checked."""
    from finnchain.fabric.executor import Executor
    from finnchain.models import zoo

    codes = zoo.sample_inputs((1, 3, 224, 224), 2, seed=0).astype(np.int64)
    checked = 0
    for s in stages:
        model = plan_dir / s.files["model"]
        if s.input.shape[-1] > 28:
            codes = np.asarray(Executor(model).run(codes))
            continue
        check, codes = check_stage(finn, out / "finn-build" / f"stage{s.index}", s.index,
                                   model, codes)
        assert check.bit_exact and check.distinct_in >= 8, check
        checked += 1
    return checked


# (cnv_2w2a, all its stages accepted and bit-exact too, is in bench/models.py: CI's time)
@pytest.mark.parametrize("name, boards", [
    ("tfc_1w1a", "zedboard:1"),
    pytest.param("cnv_1w1a", "zedboard:3", marks=pytest.mark.slow)])  # 3 min: make test-all
def test_brevitas_examples_are_what_finn_builds_and_executes(finn, name, boards, tmp_path):
    """Brevitas' bnn_pynq networks as `finnchain export` gives them (random weights): every
    stage planned onto Zedboards goes through FINN's front-end as the plan costed it
    (BIPOLAR activations as XNOR-popcount, TFC's flattened image, TensorNorm's tail on the
    host), and FINN's python-mode execution of each stage equals the emulator frame for frame
    on images whose codes are not degenerate at any cut."""
    from finnchain.graph.model import load
    from finnchain.models import zoo

    model = load(zoo.export(name, tmp_path / f"{name}.onnx", seed=1))
    plan_dir = _plan(model, boards, tmp_path / "plan")
    plan = Plan.read(plan_dir / "plan.json")
    out = tmp_path / "estimate"
    r = _build(plan_dir, "--target", "finn-estimate", "--out", out, "--jobs", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _check_accepted(_comparisons(out, len(plan.stages)))
    images = zoo.sample_inputs(zoo.recipe(name).input_shape, 8, seed=4)
    codes = images.astype(np.int64)
    for s in plan.stages:
        check, codes = check_stage(finn, out / "finn-build" / f"stage{s.index}", s.index,
                                   plan_dir / s.files["model"], codes)
        assert check.bit_exact, check
        assert check.distinct_in >= 2, check  # BIPOLAR: both codes seen at every cut
    assert np.array_equal(codes[:, 0], _whole(plan_dir, plan, images))


def test_brevitas_mobilenet_classifier_is_what_finn_builds(finn, brevitas_mobilenet_path,
                                                          tmp_path):
    """The last stage of Brevitas' own quant_mobilenet_v1_4b (from its last cut: the truncating
    average pool, the classifier with its Int32 bias, the TopK), planned onto one Zedboard and
    through FINN's front-end: the pool as a GlobalAccPool and thresholds on its sum, the bias
    as whole accumulator steps in a ChannelwiseOp, a LabelSelect, nothing left to the host; and
    FINN's execution equals the emulator on codes that cover the pool's range."""
    from finnchain.graph.cuts import cut_points
    from finnchain.graph.model import load
    from finnchain.graph.split import split

    model = load(brevitas_mobilenet_path)
    tail = split(model, [cut_points(model)[-1]])[-1]
    tail_path = tmp_path / "classifier.onnx"
    tail.save(str(tail_path))
    plan_dir = _plan(load(tail_path), "zedboard:1", tmp_path / "plan")
    plan = Plan.read(plan_dir / "plan.json")
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn-estimate", "--out", out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (c,) = _comparisons(out, 1)
    _check_accepted([c])
    assert not c["outside"]
    kinds = [layer["kind"] for layer in c["layers"]]
    assert kinds[:2] == ["GlobalAccPool", "Thresholding"] and kinds[-2:] == [
        "ChannelwiseOp", "LabelSelect"], kinds
    # codes drawn per frame from narrow and wide ranges: the pool's sums cross many thresholds
    rng = np.random.default_rng(5)
    shape = plan.stages[0].input.shape
    codes = np.stack([rng.integers(0, hi, size=shape[1:]) for hi in (2, 4, 9, 16, 16, 16)])
    check, top = check_stage(finn, out / "finn-build" / "stage0", 0, plan_dir /
                             plan.stages[0].files["model"], codes.astype(np.int64))
    assert check.bit_exact and check.distinct_in == 16, check
    assert len(np.unique(top[:, 0])) >= 2


@pytest.mark.slow
def test_brevitas_mobilenet_is_what_finn_builds(finn, brevitas_mobilenet_path, tmp_path):
    """Brevitas' own quant_mobilenet_v1_4b (learned scales; see tests/test_byom.py) on six
    Zedboards: every stage accepted with the plan's cycles, and FINN's execution equals the
    emulator on those of 28x28 or less: the integer function with learned scales is FINN's,
    also for the stages on either side of a cut whose scale is per channel (FINN moves it
    past the next stage's first, depthwise, layer into its thresholds)."""
    from finnchain.graph.model import load

    plan_dir = _plan(load(brevitas_mobilenet_path), "zedboard:6", tmp_path / "plan")
    plan = Plan.read(plan_dir / "plan.json")
    per_channel = [s for s in plan.stages if isinstance(s.input.scale, list)]
    assert per_channel and all(s.input.shape[-1] <= 28 for s in per_channel), "no such cut"
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn-estimate", "--out", out, "--jobs", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _check_accepted(_comparisons(out, len(plan.stages)))
    assert _finn_equals_emulator(finn, plan_dir, plan.stages, out) >= 3
    _first_layer_thresholds_are_finns(plan_dir / plan.stages[0].files["model"],
                                      out / "finn-build" / "stage0")


def _first_layer_thresholds_are_finns(stage_model: Path, build: Path) -> None:
    """The 224x224 first stage is too slow for FINN's python mode here; its first layer's
    thresholds (the image's /255, mean and std moved past the convolution by FINN's own
    float32 convolution, the multiplications collapsed in FINN's order) are compared with the
    MultiThreshold of FINN's streamlined stage instead: all of them."""
    from qonnx.core.modelwrapper import ModelWrapper

    from finnchain.fabric.compile import compile_model
    from finnchain.graph.cuts import cut_points
    from finnchain.graph.model import load

    model = load(stage_model)
    first = cut_points(model)[0].node
    T, sign = compile_model(model).finn_thresholds[first]
    streamlined = ModelWrapper(str(build / "output" / "intermediate_models" /
                                   "step_finnchain_streamline.onnx"))
    mt = next(n for n in streamlined.graph.node if n.op_type == "MultiThreshold")
    theirs = streamlined.get_initializer(mt.input[1])
    assert np.all(sign == 1) and T.shape == theirs.shape and T.size >= 32 * 15
    assert np.array_equal(T, theirs), f"{int((T != theirs).sum())} of {T.size} differ"


COLLAPSE = """
import json, sys
import numpy as np
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model
from finn.transformation.streamline.collapse_repeated import CollapseRepeatedMul
for chain in json.loads(sys.argv[1]):
    nodes, inits, x = [], [], "x"
    for k, f in enumerate(chain):
        nodes.append(helper.make_node("Mul", [x, f"m{k}"], [f"y{k}"]))
        inits.append(helper.make_tensor(f"m{k}", TensorProto.FLOAT, [], [np.float32(f)]))
        x = f"y{k}"
    graph = helper.make_graph(nodes, "muls", [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info(x, 1, [1, 4])], inits)
    model = ModelWrapper(qonnx_make_model(graph)).transform(CollapseRepeatedMul())
    (mul,) = model.graph.node
    print(float(model.get_initializer(mul.input[1])).hex())
"""


def test_the_emulator_collapses_multiplications_in_finns_order(finn, tmp_path):
    """A chain of float32 multiplications (the first layer's /255, std, weight scale and
    batch-norm factor) collapsed by FINN's CollapseRepeatedMul is one product in FINN's grouping,
    ((m1 m2)(m3 m4)) and so on: the emulator's collapse_pairwise gives it bit for bit, where
    the product from the left does not (on some of these factors it parts by an ulp)."""
    from finnchain.fabric.finn_order import collapse_pairwise

    rng = np.random.default_rng(0)
    chains = [rng.uniform(1e-3, 5, n).astype(np.float32) for n in (2, 3, 4, 5, 7) * 8]
    r = subprocess.run([str(finn.python), "-c", COLLAPSE, json.dumps([c.tolist() for c in chains])],
                       env=finn.environ(tmp_path), capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = [np.float32(float.fromhex(v)) for v in r.stdout.split()]
    assert len(theirs) == len(chains)
    parted = 0
    for chain, product in zip(chains, theirs):
        assert collapse_pairwise(list(chain)) == product, chain.tolist()
        left = chain[0]
        for v in chain[1:]:
            left = np.float32(left * v)
        parted += left != product
    assert parted >= 1, parted  # the grouping matters on these factors


@pytest.mark.slow  # 3 min: make test-all
def test_residual_stages_are_what_finn_builds(finn, tmp_path):
    """The tail of Brevitas' resnet18_4w4a from its last downsampling block, planned onto two
    ZCU102s and through FINN's front-end. Each stage starts at a fork (the skip reads the
    stage's own input: in the first, through a 1x1 stride-2 convolution): the fork becomes
    FINN's DuplicateStreams, the strided skip a DownSampler and an MVAU, and every layer has
    the plan's name, folding and cycles whatever order FINN puts the two branches in; FINN's
    execution equals the emulator on codes of every value."""
    import warnings

    from finnchain.cost.lower import segments
    from finnchain.graph.cuts import cut_points
    from finnchain.graph.model import load
    from finnchain.graph.split import split
    from finnchain.models import zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load(zoo.export("resnet18_4w4a", tmp_path / "resnet18.onnx", seed=1))
    k = max(s.index for s in segments(model) if any(
        op.kind == "DownSampler" for layer in s.layers for op in layer.ops))
    tail = split(model, [cut_points(model)[k - 1]])[1]
    tail_path = tmp_path / "tail.onnx"
    tail.save(str(tail_path))
    plan_dir = _plan(load(tail_path), "zcu102:2", tmp_path / "plan")
    plan = Plan.read(plan_dir / "plan.json")
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn-estimate", "--out", out, "--jobs", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    comparisons = _comparisons(out, len(plan.stages))
    _check_accepted(comparisons)
    kinds = [[layer["kind"] for layer in c["layers"]] for c in comparisons]
    assert all(k[0] == "DuplicateStreams" and not c["outside"]
               for k, c in zip(kinds, comparisons)), kinds
    assert kinds[0].count("DownSampler") == 1 and kinds[-1][-1] == "LabelSelect", kinds
    assert sum(k.count("AddStreams") for k in kinds) == 2, kinds
    rng = np.random.default_rng(7)
    shape = plan.stages[0].input.shape
    codes = np.stack([rng.integers(0, hi, size=shape[1:]) for hi in (4, 16)])
    codes = codes.astype(np.int64)
    for s in plan.stages:  # the second stage's input is the first's output: 8+ codes at the cut
        check, codes = check_stage(finn, out / "finn-build" / f"stage{s.index}", s.index,
                                   plan_dir / s.files["model"], codes)
        assert check.bit_exact and check.distinct_in >= 8, check


def _one_board_through_finn(finn, model, frames: np.ndarray, tmp_path: Path):
    """Plan ``model`` onto one Zedboard, build it with FINN's front-end (accepted as planned)
    and run ``frames`` through FINN's execution and the emulator: (check, FINN's output)."""
    plan_dir = _plan(model, "zedboard:1", tmp_path / "plan")
    plan = Plan.read(plan_dir / "plan.json")
    out = tmp_path / "out"
    r = _build(plan_dir, "--target", "finn-estimate", "--out", out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _check_accepted(_comparisons(out, 1))
    return check_stage(finn, out / "finn-build" / "stage0", 0,
                       plan_dir / plan.stages[0].files["model"], frames.astype(np.int64))


def test_finns_thresholds_decide_a_float32_tie(finn, tie_model, tmp_path):
    """A value within float32 rounding of a quantizer's step (resnet18_4w4a's, conftest.TIE):
    exact arithmetic gives code 3, FINN's thresholds (derived in float32 by its streamlining)
    give 4, and so does the emulator: FINN's execution equals it on every frame, the frame
    whose label the tie decides included."""
    from conftest import TIE, TIE_LABEL
    from finnchain.graph.model import load

    path, frames = tie_model
    check, labels = _one_board_through_finn(finn, load(path), frames, tmp_path)
    assert check.bit_exact and check.distinct_in == 16, check  # every input code
    exact = TIE["acc"] * TIE["scale"] * TIE["weight_scale"] * TIE["bn_mul"] + TIE["bn_add"]
    assert round(exact / TIE["scale"]) == 3 and labels.reshape(-1)[0] == TIE_LABEL


def test_finn_builds_a_model_written_as_tersely_as_onnx_allows(finn, bare_digits_path,
                                                               digits_test_set, tmp_path):
    """digits-cnv with convolutions that leave strides, dilations, group and kernel_shape to
    ONNX's defaults and pad by auto_pad=SAME_UPPER (FINN's LowerConvsToMatMul failed on such a
    node: "'NoneType' object has no attribute 'ints'"): planned onto one Zedboard, FINN builds
    the stage as planned and executes it as the emulator does."""
    from finnchain.graph.model import load

    check, _ = _one_board_through_finn(finn, load(bare_digits_path), digits_test_set[0][:8],
                                       tmp_path)
    assert check.bit_exact and check.distinct_in >= 8, check


# FINN's op classes, asked in FINN's environment: a JSON line {op_type: [node attributes]}
_FINN_OP_ATTRS = """
import json, sys, onnx
from finn.custom_op.fpgadataflow.hls import custom_op as hls
from finn.custom_op.fpgadataflow.rtl import custom_op as rtl
out = {}
for name in json.loads(sys.argv[1]):
    cls = {**hls, **rtl}.get(name)
    if cls is not None:  # its attribute table, without __init__'s checks of attribute values
        inst = cls.__new__(cls)
        inst.onnx_node = onnx.helper.make_node(name, [], [])
    out[name] = None if cls is None else sorted(inst.get_nodeattr_types())
print(json.dumps(out))
"""


def _every_op_at_every_fold() -> list[tuple[object, object]]:
    """One op of each kind the cost model knows (and both glues of a split layer), each at
    every fold the planner tries and with weights in URAM where it has weights."""
    from dataclasses import replace

    from finnchain.cost.ops import KINDS, Fold, StreamGlue

    ops = [cls(name=kind, node="n") for kind, cls in KINDS.items()]
    ops += [StreamGlue(name=g, node="n", glue=g) for g in ("DuplicateStreams", "StreamingConcat")]
    ops += [replace(op, inw=8, outw=12) for op in ops if op.kind == "StreamingDataWidthConverter"]
    out = []
    for op in ops:
        folds = op.folds() if hasattr(op, "channels") or hasattr(op, "labels") else [Fold()]
        if hasattr(op, "front_folds"):
            folds += op.front_folds(1, False) + op.front_folds(1, True)
        out += [(op, f) for f in folds]
    return out


def test_every_op_kind_is_a_finn_op_that_takes_what_the_plan_sets(finn):
    """Each op class's FINN type exists in FINN v0.10.1 as that implementation (HLS or RTL),
    and FINN's class of it has every attribute the folding config sets on it and every
    attribute its key is read from (what one home per op kind promises FINN)."""
    pairs = _every_op_at_every_fold()
    types = sorted({op.finn_type for op, _ in pairs})
    r = subprocess.run([str(finn.python), "-c", _FINN_OP_ATTRS, json.dumps(types)],
                       env=finn.environ(finn.path / "tmp"), capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    attrs = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"MVAU_hls", "ConvolutionInputGenerator_rtl", "StreamingFIFO_rtl", "IODMA_hls",
            "StreamingDataWidthConverter_hls", "StreamingDataWidthConverter_rtl"} <= set(types)
    missing = [t for t, a in attrs.items() if a is None]
    assert not missing, f"not op types of FINN v0.10.1: {missing}"
    for op, fold in pairs:
        have = set(attrs[op.finn_type])
        config = op.finn_config(fold)
        assert set(config) <= have, (op.finn_type, fold, set(config) - have)
        assert set(op.key_attrs()) <= have, (op.finn_type, op.key_attrs())
        assert len(op.key()) >= len(op.KEY)
