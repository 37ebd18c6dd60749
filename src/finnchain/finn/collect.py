"""Collecting a stage's overlay (or its emulated stand-in) and FINN's estimate reports.

A collected stage folder ``stage<k>/`` holds ``stage.json`` (what the runtime needs: the
accelerator kind and its files, the stage's input and output tensors, predicted cycles and
clock) and either, for FINN, ``bitfile/finn-accel.bit`` and ``.hwh``, ``driver/`` (FINN's
generated PYNQ driver) and ``report/`` (FINN's estimate reports), or, for the emulated
accelerator, ``model.onnx`` (the stage's QONNX, run bit-exactly on the CPU).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from finnchain.boards.catalogue import rated_temperature
from finnchain.plan.schema import Plan, StagePlan

FINN_REQUIRED = ("bitfile/finn-accel.bit", "bitfile/finn-accel.hwh", "driver/driver.py",
                 "driver/driver_base.py")
REPORTS = ("estimate_layer_resources.json", "estimate_network_performance.json",
           "estimate_layer_cycles.json", "finnchain_nodes.json", "finnchain_cppsim.json",
           "finnchain_zynq.json")


class CollectError(RuntimeError):
    """A build that finished without the files a deployment needs."""


def stage_json(plan: Plan, stage: StagePlan, accelerator: dict, inputs_sha256: str) -> dict:
    return {
        "schema": "finnchain.stage/1",
        "plan_hash": plan.plan_hash,
        "index": stage.index,
        "stages": len(plan.stages),
        "board": stage.board["kind"],
        "power_w_estimate": stage.board["power_w_estimate"],
        "clock_mhz": stage.board["clock_mhz"],
        # what the stage's metrics compare its readings with (link use, die temperature)
        "ethernet_mbps": stage.board["ethernet_mbps"],
        "temperature_max_c": rated_temperature(stage.board["part"]),
        "cycles": stage.cycles,
        "predicted_fps": stage.fabric_fps,
        "input": asdict(stage.input),
        "output": asdict(stage.output),
        "accelerator": accelerator,
        "inputs_sha256": inputs_sha256,
    }


def collect_emulated(model: Path, dest: Path) -> dict:
    """The emulated stage: its QONNX in place of a bitstream, and the integer program the
    emulated accelerator runs (``program.onnx``: a board needs only onnxruntime for it)."""
    from finnchain.fabric.executor import Executor

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, dest / "model.onnx")
    Executor(dest / "model.onnx").save(dest)
    return {"kind": "emulate", "model": "model.onnx", "program": "program.onnx"}


def collect_finn(build_folder: Path, dest: Path) -> dict:
    """Copy FINN's bitfile, hwh, driver and estimate reports out of ``build_folder/output``."""
    out = build_folder / "output"
    missing = [f for f in FINN_REQUIRED if not (out / f).is_file()]
    if missing:
        raise CollectError(f"FINN finished but {out} lacks {', '.join(missing)}")
    if dest.exists():
        for sub in ("bitfile", "driver", "report"):
            shutil.rmtree(dest / sub, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "bitfile").mkdir()
    for name in ("finn-accel.bit", "finn-accel.hwh"):
        shutil.copyfile(out / "bitfile" / name, dest / "bitfile" / name)
    shutil.copytree(out / "driver", dest / "driver")
    (dest / "report").mkdir()
    for name in REPORTS:
        if (out / "report" / name).is_file():
            shutil.copyfile(out / "report" / name, dest / "report" / name)
    return {"kind": "finn", "bitfile": "bitfile/finn-accel.bit",
            "hwh": "bitfile/finn-accel.hwh", "driver": "driver"}


def finn_estimates(dest: Path) -> dict | None:
    """FINN's own estimates for a collected stage (None when there are none)."""
    perf, res = dest / "report" / REPORTS[1], dest / "report" / REPORTS[0]
    if not perf.is_file() or not res.is_file():
        return None
    p, r = json.loads(perf.read_text()), json.loads(res.read_text())
    total = r.get("total", {})
    return {
        "max_cycles": int(p["max_cycles"]),
        "max_cycles_node": p.get("max_cycles_node_name"),
        "fps": float(p["estimated_throughput_fps"]),
        "lut": float(total.get("LUT", 0)),
        "bram18": float(total.get("BRAM_18K", 0)),
        "uram": float(total.get("URAM", 0)),
        "dsp": float(total.get("DSP", 0)),
    }


def planner_estimates(stage: StagePlan) -> dict:
    """The planner's prediction for the dataflow alone (no shell), comparable with FINN's."""
    shell = stage.board["shell"]
    r = stage.resources
    return {"max_cycles": stage.cycles, "max_cycles_node": stage.bottleneck_op,
            "fps": stage.fabric_fps, "lut": r["lut"] - shell["lut"],
            "bram18": r["bram18"] - shell["bram18"], "uram": r["uram"], "dsp": r["dsp"]}
