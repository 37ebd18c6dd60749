"""Accelerators behind one small interface: packed bytes of ``n`` frames in, packed bytes out.

- ``EmulatedAccelerator``: the stage's QONNX on the bit-exact CPU executor (``emu``).
- ``PacedAccelerator``: the same, never faster than the plan's cycles at the board's clock, so
  that an emulated chain runs at the speed the real one would.
- ``PassThrough``: moves bytes only (for measuring the transport).
- ``FinnAccelerator``: the FINN overlay on a PYNQ board through FINN's generated driver
  (``driver_base.FINNExampleOverlay``), packed bytes copied straight into and out of its DMA
  buffers: no unpacking or repacking on the ARM cores. The planner folds every stage's first
  and last layer so that FINN's driver layout is the wire's (``plan.folding``); the
  accelerator checks the overlay's real folded shapes against the plan when it starts.

The results of the last stage are what FINN's LabelSelect writes: ``k`` class indices per
frame as the plan's output datatype (UINT8, or UINT16 beyond 256 classes), little-endian.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from finnchain.graph.driver import check_io_shapes


class FrameError(ValueError):
    """Frames an accelerator cannot take (size, values); the message says what is wrong."""


class Accelerator:
    """``run(payload, n)``: ``n`` frames of ``in_bytes`` each in, ``n * out_bytes`` out."""

    in_bytes: int
    out_bytes: int
    kind = "none"

    def check(self, payload, n: int) -> None:
        if len(payload) != n * self.in_bytes:
            raise FrameError(f"{len(payload)} bytes for {n} frame(s): expected {self.in_bytes} "
                             "per frame")

    def run(self, payload, n: int):
        raise NotImplementedError


class PassThrough(Accelerator):
    kind = "pass-through"

    def __init__(self, in_bytes: int, out_bytes: int | None = None) -> None:
        self.in_bytes = in_bytes
        self.out_bytes = in_bytes if out_bytes is None else out_bytes

    def run(self, payload, n: int):
        self.check(payload, n)
        if self.out_bytes == self.in_bytes:
            return payload
        return bytes(self.out_bytes * n)


def _nhwc(shape: list[int]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


class EmulatedAccelerator(Accelerator):
    """The stage's QONNX, bit-exact on the CPU; frames travel in FINN's packed NHWC layout."""

    kind = "emulate"

    def __init__(self, model: Path, stage: dict, threads: int = 1) -> None:
        program = model.with_name(stage["accelerator"].get("program", "program.onnx"))
        if program.is_file():  # compiled at build time: numpy and onnxruntime suffice
            from finnchain.fabric.program import Runner

            self.executor = Runner.load(program.parent, threads=threads)
        else:
            from finnchain.fabric.executor import Executor

            self.executor = Executor(model, threads=threads)
        self.input, self.output = stage["input"], stage["output"]
        self.in_bytes = int(self.input["bytes_per_frame"])
        self.out_bytes = int(self.output["bytes_per_frame"])
        self.last = stage["index"] == stage["stages"] - 1

    def run(self, payload, n: int):
        from finnchain.graph.pack import PackError, pack, unpack

        self.check(payload, n)
        shape = _nhwc([n, *self.input["shape"][1:]])
        try:
            codes = unpack(payload, self.input["datatype"], shape)
        except PackError as exc:
            raise FrameError(str(exc)) from exc
        if codes.ndim == 4:
            codes = codes.transpose(0, 3, 1, 2)
        y = self.executor.run(codes)
        if y.ndim == 4:
            y = y.transpose(0, 2, 3, 1)
        return pack(y, self.output["datatype"]).tobytes()


class PacedAccelerator(Accelerator):
    """An accelerator held to at least ``cycles`` per frame at ``clock_mhz``."""

    def __init__(self, inner: Accelerator, cycles: int, clock_mhz: float) -> None:
        self.inner = inner
        self.in_bytes, self.out_bytes = inner.in_bytes, inner.out_bytes
        self.seconds_per_frame = cycles / (clock_mhz * 1e6)
        self.kind = f"{inner.kind}-paced"

    def run(self, payload, n: int):
        t0 = time.perf_counter()
        out = self.inner.run(payload, n)
        rest = n * self.seconds_per_frame - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)
        return out


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # driver.py imports driver_base by this name
    spec.loader.exec_module(module)
    return module


class FinnAccelerator(Accelerator):
    """FINN's overlay through its generated PYNQ driver (``FINNExampleOverlay``)."""

    kind = "finn"

    def __init__(self, stage_dir: Path, stage: dict, batch: int = 1) -> None:
        driver = stage_dir / stage["accelerator"].get("driver", "driver")
        sys.path.insert(0, str(driver))  # driver_base imports its neighbours (qonnx copies)
        base = _load_module(driver / "driver_base.py", "driver_base")
        io_shape_dict = _load_module(driver / "driver.py", "finn_driver").io_shape_dict
        check_io_shapes(io_shape_dict, stage)  # DriverMismatch (a ValueError): refused
        self.overlay = base.FINNExampleOverlay(
            bitfile_name=str(stage_dir / stage["accelerator"]["bitfile"]),
            platform="zynq-iodma", io_shape_dict=io_shape_dict, batch_size=batch,
            fclk_mhz=float(stage["clock_mhz"]),
            runtime_weight_dir=str(driver / "runtime_weights") + "/")
        self.in_bytes = int(np.prod(self.overlay.ishape_packed(0)[1:]))
        self.out_bytes = int(np.prod(self.overlay.oshape_packed(0)[1:]))

    def run(self, payload, n: int):
        self.check(payload, n)
        ov = self.overlay
        if ov.batch_size != n:
            ov.batch_size = n  # reallocates the DMA buffers
        ibuf = np.frombuffer(payload, dtype=np.uint8).reshape(ov.ishape_packed(0))
        ov.copy_input_data_to_device(ibuf)
        ov.execute_on_buffers()
        obuf = np.empty(ov.oshape_packed(0), dtype=np.uint8)
        ov.copy_output_data_from_device(obuf)
        return obuf


# what a stage config may ask for (None or "": what the stage was built for)
ACCELERATORS = (None, "", "finn", "emulate", "emulate-paced", "pass-through")


def load_accelerator(stage_dir: Path, kind: str | None = None, batch: int = 1,
                     threads: int = 1) -> tuple[Accelerator, dict]:
    """The accelerator of a built stage folder (``stage.json``), optionally paced."""
    stage = json.loads((stage_dir / "stage.json").read_text())
    kind = kind or stage["accelerator"]["kind"]
    if kind == "finn":
        acc: Accelerator = FinnAccelerator(stage_dir, stage, batch)
    elif kind in ("emulate", "emulate-paced"):
        model = stage_dir / stage["accelerator"].get("model", "model.onnx")
        if not model.is_file():
            raise FileNotFoundError(f"{model} missing: this stage was not built for emulation")
        acc = EmulatedAccelerator(model, stage, threads)
        if kind == "emulate-paced":
            acc = PacedAccelerator(acc, int(stage["cycles"]), float(stage["clock_mhz"]))
    elif kind == "pass-through":
        acc = PassThrough(int(stage["input"]["bytes_per_frame"]),
                          int(stage["output"]["bytes_per_frame"]))
    else:
        raise ValueError(f"unknown accelerator {kind!r}: finn, emulate, emulate-paced or "
                         "pass-through")
    return acc, stage
