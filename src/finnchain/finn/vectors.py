"""Verification vectors: frames of each stage's input and the outputs the emulator gives.

FINN checks a build against a pair of .npy files (``verify_input_npy``,
``verify_expected_output_npy``: batch first, in the stage's own NCHW layout) at each of the
build config's ``verify_steps``: its C++ simulation of the HLS layers ("folded_hls_cppsim", run
here by ``finnchain build --target finn-cppsim``) and, in a Vivado build, the RTL simulation of
the stitched IP ("stitched_ip_rtlsim"). finnchain writes the pair into each stage's build folder
(``verify/``): seeded inputs of the whole model run through the stages before it by the
emulated fabric, and what the emulated fabric computes for the stage, which is the integer
function FINN builds. The frames are chosen for values that are not degenerate: the distinct
values at both ends are counted, and a stage whose frames take fewer than ``MIN_DISTINCT`` is
named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finnchain.plan.schema import Plan

FRAMES = 4
SEED = 0
MIN_DISTINCT = 2
DIR = "verify"
INPUT = f"{DIR}/input.npy"
EXPECTED = f"{DIR}/expected_output.npy"
SPEC = f"{DIR}/vectors.json"  # how they were made: part of a folder's inputs, not the arrays
STEPS = ["folded_hls_cppsim", "stitched_ip_rtlsim"]


@dataclass(frozen=True)
class VectorSpec:
    frames: int = FRAMES
    seed: int = SEED

    def to_dict(self) -> dict:
        return {"frames": self.frames, "seed": self.seed,
                "inputs": "finnchain.models.zoo.sample_inputs of the model's input, run "
                          "through the stages before by the emulated fabric",
                "expected": "the emulated fabric's outputs for the stage"}


@dataclass
class StageVectors:
    inputs: np.ndarray  # (frames, ...) the stage's input codes, NCHW
    outputs: np.ndarray  # (frames, ...) the emulator's outputs for them

    @property
    def distinct_in(self) -> int:
        return int(np.unique(self.inputs).size)

    @property
    def distinct_out(self) -> int:
        return int(np.unique(self.outputs).size)

    @property
    def degenerate(self) -> bool:
        return min(self.distinct_in, self.distinct_out) < MIN_DISTINCT


def chain_vectors(plan: Plan, stage_models: dict[int, Path], spec: VectorSpec,
                  upto: int | None = None) -> dict[int, StageVectors]:
    """Vectors for stages 0..``upto`` (default: all): ``spec.frames`` seeded inputs of the
    model through the emulated fabric, stage by stage."""
    from finnchain.fabric.executor import Executor
    from finnchain.models.zoo import sample_inputs

    last = len(plan.stages) - 1 if upto is None else upto
    codes = sample_inputs(tuple(plan.model["input"]["shape"]), spec.frames,
                          spec.seed).astype(np.int64)
    out = {}
    for stage in plan.stages[: last + 1]:
        result = np.asarray(Executor(stage_models[stage.index]).run(codes))
        out[stage.index] = StageVectors(codes, result)
        codes = result
    return out


def write_spec(folder: Path, spec: VectorSpec) -> None:
    (folder / DIR).mkdir(exist_ok=True)
    (folder / SPEC).write_text(json.dumps(spec.to_dict(), indent=1) + "\n")


def write_vectors(folder: Path, vectors: StageVectors) -> None:
    """The pair FINN reads, as float32 (what its execution takes)."""
    (folder / DIR).mkdir(exist_ok=True)
    np.save(folder / INPUT, vectors.inputs.astype(np.float32))
    np.save(folder / EXPECTED, vectors.outputs.astype(np.float32))


def have_vectors(folder: Path) -> bool:
    return (folder / INPUT).is_file() and (folder / EXPECTED).is_file()


def results(report: Path, verification_output: Path | None = None) -> dict | None:
    """FINN's checks of a stage against its vectors, per verify step: finnchain's report of
    the C++ simulation (``report/finnchain_cppsim.json``: frames equal and in all, distinct
    values, seconds) and, from FINN's own ``verification_output`` files (one per frame,
    ``verify_<step>_<frame>_SUCCESS|FAIL.npy``), the frames that passed each step."""
    out = {}
    cppsim = report / "finnchain_cppsim.json"
    if cppsim.is_file():
        data = json.loads(cppsim.read_text())
        out[data["step"]] = {**{k: data[k] for k in (
            "frames", "equal", "distinct_in", "distinct_out", "compile_seconds", "sim_seconds",
            "first_mismatch", "layer")}, "layers": len(data["layers"]),
            "rtl_layers": len(data.get("rtl_layers", [])),
            "python_layers": len(data.get("python_layers", [])),
            "verilator_failed": data.get("verilator_failed", {})}
    if verification_output is not None and verification_output.is_dir():
        for step in STEPS:
            files = sorted(verification_output.glob(f"verify_{step}_*_*.npy"))
            if files and step not in out:
                out[step] = {"frames": len(files),
                             "equal": sum(f.stem.endswith("_SUCCESS") for f in files)}
    return out or None
