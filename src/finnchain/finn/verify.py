"""FINN's own execution of a stage against the emulated accelerator, frame for frame.

After ``build --target finn-estimate`` a stage's build folder holds FINN's graph of the stage as
HW layers (``output/intermediate_models/step_finnchain_convert_to_hw.onnx``). FINN executes it
in python mode in its own environment (``finnside/execute.py``); the emulated accelerator runs
the stage's QONNX. Both take the same integer codes; their outputs must be equal, frame for
frame (the emulator's truth is the integer function FINN builds).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finnchain.finn.env import FINNSIDE, FinnEnv

HW_MODEL = "output/intermediate_models/step_finnchain_convert_to_hw.onnx"


class FinnExecError(RuntimeError):
    """FINN's execution of a stage failed; the message holds the end of its output."""


@dataclass
class StageCheck:
    stage: int
    frames: int
    equal_frames: int
    distinct_in: int  # distinct values in the frames given (non-degenerate inputs)
    distinct_out: int
    finn_seconds: float

    @property
    def bit_exact(self) -> bool:
        return self.frames > 0 and self.equal_frames == self.frames

    def to_dict(self) -> dict:
        return {**self.__dict__, "bit_exact": self.bit_exact}


def finn_execute(env: FinnEnv, model: Path, frames: np.ndarray) -> tuple[np.ndarray, float]:
    """FINN's python-mode execution of ``model`` on ``frames``; (outputs, seconds)."""
    with tempfile.TemporaryDirectory(prefix="finnchain-exec-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "in.npy", frames)
        t0 = time.perf_counter()
        r = subprocess.run([str(env.python), str(FINNSIDE / "execute.py"), str(model),
                            str(tmp / "in.npy"), str(tmp / "out.npy")],
                           env=env.environ(tmp / "build"), capture_output=True, text=True,
                           check=False)
        seconds = time.perf_counter() - t0
        if r.returncode != 0 or not (tmp / "out.npy").is_file():
            raise FinnExecError(f"FINN's execution of {model} failed: "
                                f"{(r.stdout + r.stderr).strip()[-800:]}")
        return np.load(tmp / "out.npy"), seconds


def _to_finn_layout(codes: np.ndarray, model: Path) -> np.ndarray:
    """Codes (N, C, H, W) in the layout the FINN graph's input has (a stage whose Flatten was
    absorbed takes (N, H*W*C) in NHWC order; a BIPOLAR input FINN takes as BINARY, -1/+1 as
    0/1: the wire's bits)."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    graph = ModelWrapper(str(model))
    inp = graph.graph.input[0].name
    if graph.get_tensor_datatype(inp) == DataType["BINARY"] and codes.min() < 0:
        codes = (codes + 1) // 2
    if len(graph.get_tensor_shape(inp)) == 2 and codes.ndim == 4:
        return codes.transpose(0, 2, 3, 1).reshape(len(codes), -1)
    return codes


def check_stage(env: FinnEnv, folder: Path, index: int, stage_model: Path,
                codes: np.ndarray) -> tuple[StageCheck, np.ndarray]:
    """FINN's HW graph of the stage in ``folder`` against the emulator on ``codes`` (the
    stage's input codes, NCHW); returns the check and the emulator's outputs."""
    from finnchain.fabric.executor import Executor

    model = folder / HW_MODEL
    if not model.is_file():
        raise FinnExecError(f"{model} is missing: build the stage with --target finn-estimate")
    ours = np.asarray(Executor(stage_model).run(codes))
    theirs, seconds = finn_execute(env, model, _to_finn_layout(codes, model))
    theirs = theirs.reshape(ours.shape) if theirs.size == ours.size else theirs
    equal = sum(bool(np.array_equal(a, b)) for a, b in zip(ours, theirs)) \
        if theirs.shape == ours.shape else 0
    return StageCheck(index, len(codes), equal, int(np.unique(codes).size),
                      int(np.unique(ours).size), round(seconds, 1)), ours
