"""Accelerators behind one small interface: packed bytes of ``n`` frames in, packed bytes out.

- ``EmulatedAccelerator``: the stage's QONNX on the bit-exact CPU executor (``emu``).
- ``PacedAccelerator``: the same, never faster than the plan's cycles at the board's clock, so
  that an emulated chain runs at the speed the real one would.
- ``PassThrough``: moves bytes only (for measuring the transport).
- ``FinnAccelerator``: the FINN overlay on a PYNQ board through FINN's generated driver
  (``driver_base.FINNExampleOverlay``) and the ``pynq`` library, packed bytes copied straight
  into and out of its DMA buffers: no unpacking or repacking on the ARM cores. The planner folds
  every stage's first and last layer so that FINN's driver layout is the wire's
  (``plan.folding``); the accelerator checks the overlay's real folded shapes against the plan
  when it starts. An emulated board runs the very same code: its pynq finds the emulated PL
  (``emu.pl``), which paces each transfer by the plan's cycles at the PL clock.

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

    def describe(self) -> dict[str, str]:
        """What runs the stage beyond its kind (library versions, device, clock), for the
        stage's metrics."""
        return {}


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
    """The stage's integer program, bit-exact on the CPU; frames travel in FINN's packed NHWC
    layout (the wire's bytes in, the wire's bytes out)."""

    kind = "emulate"

    def __init__(self, executor, wire_in: dict, wire_out: dict) -> None:
        self.executor = executor  # runs NCHW codes: fabric.program.Runner or fabric.Executor
        self.input, self.output = wire_in, wire_out
        self.in_bytes = int(wire_in["bytes_per_frame"])
        self.out_bytes = int(wire_out["bytes_per_frame"])

    @classmethod
    def load(cls, model: Path, stage: dict, threads: int = 1) -> EmulatedAccelerator:
        """From a built stage: its compiled program beside ``model`` where the build wrote one
        (numpy and onnxruntime suffice), else ``model`` compiled here."""
        program = model.with_name(Path(stage["accelerator"].get("program",
                                                                "program.onnx")).name)
        if program.is_file():
            from finnchain.fabric.program import Runner

            executor = Runner.load(program.parent, threads=threads)
        else:
            from finnchain.fabric.executor import Executor

            executor = Executor(model, threads=threads)
        return cls(executor, stage["input"], stage["output"])

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
    """Import a module of FINN's driver folder, writing no bytecode beside it: the overlay's
    folder holds exactly what the manifest lists (the health checks compare them)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # driver.py imports driver_base by this name
    write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = write
    return module


class AcceleratorUnavailable(ValueError):
    """An accelerator this Python cannot run (a library it needs is missing)."""


class AcceleratorHang(RuntimeError):
    """The FPGA did not finish a transfer in time, as a hung bitstream does: the stage cannot
    go on (its overlay must be loaded again); the message names the DMA registers' state."""


IODMA_CTRL, IODMA_ADDR, IODMA_REPS, IODMA_DONE = 0x00, 0x10, 0x1C, 0x2  # FINN's IODMA core
HANG_SECONDS = 2.0  # a transfer taking this long, or 20 times its planned time, has hung
POLL_SECONDS = 0.0002  # between two reads of the output DMA's status


class FinnAccelerator(Accelerator):
    """FINN's overlay through its generated PYNQ driver (``FINNExampleOverlay``) and the
    ``pynq`` library: packed bytes copied into the input DMA buffer and out of the output
    one, the DMAs started as FINN's driver starts them, completion awaited by polling the
    output DMA's status register without spinning (sleeping for the frames' planned time
    first), and a transfer that does not finish reported with the DMAs' registers."""

    kind = "finn"

    def __init__(self, stage_dir: Path, stage: dict, batch: int = 1) -> None:
        driver = stage_dir / stage["accelerator"].get("driver", "driver")
        sys.path.insert(0, str(driver))  # driver_base imports its neighbours (qonnx copies)
        try:
            base = _load_module(driver / "driver_base.py", "driver_base")
        except ModuleNotFoundError as exc:
            raise AcceleratorUnavailable(
                f"FINN's driver ({driver}) needs {exc.name}, which this Python lacks: a PYNQ "
                "board's image has pynq, and the deployment installs what else the driver "
                "needs (on emulated boards pynq too); a stage on another machine runs the "
                "overlay's fabric with `accelerator: emulate`") from exc
        io_shape_dict = _load_module(driver / "driver.py", "finn_driver").io_shape_dict
        check_io_shapes(io_shape_dict, stage)  # DriverMismatch (a ValueError): refused
        self.overlay = base.FINNExampleOverlay(
            bitfile_name=str(stage_dir / stage["accelerator"]["bitfile"]),
            platform="zynq-iodma", io_shape_dict=io_shape_dict, batch_size=batch,
            fclk_mhz=float(stage["clock_mhz"]),
            runtime_weight_dir=str(driver / "runtime_weights") + "/")
        wanted = int(io_shape_dict.get("number_of_external_weights", 0))
        if len(self.overlay.external_weights) != wanted:  # FINN's driver checks only a folder
            found = sorted(p.name for p in (driver / "runtime_weights").glob("*.npy"))
            raise AcceleratorUnavailable(
                f"FINN's driver loaded {len(self.overlay.external_weights)} of the {wanted} "
                f"weight files its weight DMAs read ({driver / 'runtime_weights'}: "
                f"{', '.join(found) or 'none'}); without them the accelerator never finishes "
                "a frame")
        self.in_bytes = int(np.prod(self.overlay.ishape_packed(0)[1:]))
        self.out_bytes = int(np.prod(self.overlay.oshape_packed(0)[1:]))
        self.seconds_per_frame = int(stage["cycles"]) / (float(stage["clock_mhz"]) * 1e6)

    def describe(self) -> dict[str, str]:
        """What runs the stage: the pynq library's version, its device, the PL clock."""
        from pynq.ps import Clocks

        import pynq

        return {"pynq": pynq.__version__, "device": str(getattr(self.overlay.device, "name",
                                                                type(self.overlay.device).__name__)),
                "fclk_mhz": f"{Clocks.fclk0_mhz:g}"}

    def run(self, payload, n: int):
        self.check(payload, n)
        ov = self.overlay
        if ov.batch_size != n:
            ov.batch_size = n  # FINN's driver reallocates its DMA buffers
        ov.copy_input_data_to_device(np.frombuffer(payload, dtype=np.uint8).reshape(
            ov.ishape_packed(0)))
        ov.execute_on_buffers(asynch=True)
        self._wait(n)
        obuf = np.empty(ov.oshape_packed(0), dtype=np.uint8)
        ov.copy_output_data_from_device(obuf)
        return obuf

    def _wait(self, n: int) -> None:
        """Until every output DMA reports done (FINN's ``wait_until_finished``, but sleeping
        between reads and giving up at a deadline)."""
        planned = n * self.seconds_per_frame
        t0 = time.monotonic()
        deadline = t0 + max(HANG_SECONDS, 20 * planned)
        if planned > 0.001:
            time.sleep(planned * 0.9)
        for odma in self.overlay.odma:
            while not odma.read(IODMA_CTRL) & IODMA_DONE:
                if time.monotonic() > deadline:
                    raise AcceleratorHang(
                        f"the accelerator did not finish {n} frame(s) in "
                        f"{time.monotonic() - t0:.1f} s ({planned * 1e3:.2f} ms planned): "
                        f"{self.registers()}")
                time.sleep(POLL_SECONDS)

    def registers(self) -> str:
        """The DMAs' registers as the driver reads them: control, buffer address, frames."""
        ov, io = self.overlay, self.overlay._io_shape_dict
        dmas = [*zip(io.get("input_dma_name", []), ov.idma),
                *zip(io.get("output_dma_name", []), ov.odma),
                *((name, dma) for dma, _, name in ov.external_weights)]
        return "; ".join(f"{name} ctrl=0x{d.read(IODMA_CTRL):x} addr=0x{d.read(IODMA_ADDR):08x} "
                         f"frames={d.read(IODMA_REPS)}" for name, d in dmas)


# what a stage config may ask for (None or "": what the stage was built for)
ACCELERATORS = (None, "", "finn", "emulate", "emulate-paced", "pass-through",
                "pass-through-paced")


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
        acc = EmulatedAccelerator.load(model, stage, threads)
    elif kind in ("pass-through", "pass-through-paced"):
        acc = PassThrough(int(stage["input"]["bytes_per_frame"]),
                          int(stage["output"]["bytes_per_frame"]))
    else:
        raise ValueError(f"unknown accelerator {kind!r}: finn, emulate, emulate-paced, "
                         "pass-through or pass-through-paced")
    if kind.endswith("-paced"):  # held to the stage's planned cycles per frame
        acc = PacedAccelerator(acc, int(stage["cycles"]), float(stage["clock_mhz"]))
    return acc, stage
