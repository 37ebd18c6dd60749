"""The plan beside FINN's own estimate of what FINN built for a stage.

For each HW layer the plan names (FINN's node name after specialisation, e.g. ``MVAU_hls_3``):
cycles, LUT, RAMB18, URAM and DSP as the plan predicted them and as FINN's estimate reports
give them; the folding FINN applied; what FINN's own generated PYNQ driver exchanges with the
stage's DMAs against the bytes the plan puts on the wire (``graph.driver``: what the board's
``FinnAccelerator`` checks at start); and the nodes FINN left outside the dataflow partition. A
stage is *accepted* when FINN's front-end ran to its estimate reports, built exactly the layers
the plan costed with the plan's folding, keeps every compute node in hardware (only layout
Transposes outside: the wire is NHWC already), and its driver's buffers are the plan's wire
bytes.

FINN's estimates do not include what FINN inserts later (FIFOs, data-width converters, DMAs)
nor the Zynq shell; ``fits`` adds the plan's figures for those to FINN's layer totals and
checks the board's limits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finnchain.graph.driver import (
    DriverMismatch,
    check_io_shapes,
    driver_bytes,
    read_io_shape_dict,
)
from finnchain.graph.pack import same_bits
from finnchain.plan.schema import StagePlan

LAYOUT_ONLY = {"Transpose", "Reshape", "Flatten"}
RESOURCES = (("lut", "LUT"), ("bram18", "BRAM_18K"), ("uram", "URAM"), ("dsp", "DSP"))
FOLD_ATTRS = (("pe", "PE"), ("simd", "SIMD"))


@dataclass
class Layer:
    name: str
    kind: str
    plan: dict
    finn: dict | None

    @property
    def cycles_equal(self) -> bool:
        return self.finn is not None and self.finn["cycles"] == self.plan["cycles"]


@dataclass
class StageComparison:
    index: int
    board: str
    ran: bool
    layers: list[Layer] = field(default_factory=list)
    finn_only: list[str] = field(default_factory=list)
    plan_only: list[str] = field(default_factory=list)
    folding_differs: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    wire: dict = field(default_factory=dict)
    plan_total: dict = field(default_factory=dict)
    finn_total: dict = field(default_factory=dict)
    plan_fps: float = 0.0
    finn_fps: float = 0.0
    plan_cycles: int = 0
    # the plan's slowest layer: FINN's cycle estimate has no DDR term, so where the stage's
    # DMAs on the one HP port bind (weights from DDR) the plan's stage cycles are above it
    plan_layer_cycles: int = 0
    finn_cycles: int = 0
    fits: bool = False
    over: list[str] = field(default_factory=list)
    error: str | None = None
    driver_error: str | None = None  # FINN's driver missing or not the plan's wire

    @property
    def accepted(self) -> bool:
        return (self.ran and not self.finn_only and not self.plan_only
                and not self.folding_differs and not self.outside and not self.driver_error
                and all(w["equal"] for w in self.wire.values()))

    @property
    def problems(self) -> list[str]:
        out = []
        if not self.ran:
            out.append(self.error or "FINN did not finish")
            return out
        if self.finn_only:
            out.append(f"FINN made layers the plan did not cost: {', '.join(self.finn_only)}")
        if self.plan_only:
            out.append(f"layers of the plan FINN did not make: {', '.join(self.plan_only)}")
        if self.folding_differs:
            out.append(f"folding differs: {'; '.join(self.folding_differs)}")
        if self.outside:
            out.append(f"left outside the dataflow partition: {', '.join(self.outside)}")
        for end, w in self.wire.items():
            if not w["equal"]:
                out.append(f"{end}: FINN's driver moves {w['finn_bytes']:,} bytes a frame "
                           f"({w['datatype']} folded {w['folded']}), the plan's wire "
                           f"{w['plan_bytes']:,}")
        if self.driver_error:
            out.append(self.driver_error)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["accepted"] = self.accepted
        d["problems"] = self.problems
        return d


def _load(report: Path, name: str) -> dict:
    return json.loads((report / name).read_text())


def _wire(cmp: StageComparison, stage: StagePlan, driver: Path) -> None:
    """FINN's generated driver against the plan's wire, end by end."""
    try:
        io = read_io_shape_dict(driver)
    except DriverMismatch as exc:
        cmp.driver_error = str(exc)
        return
    for end, tensor, dt_key, prefix in (("input", stage.input, "idt", "ishape"),
                                        ("output", stage.output, "odt", "oshape")):
        datatype = io[dt_key][0]
        finn_bytes = driver_bytes(io, end)
        cmp.wire[end] = {"datatype": datatype, "folded": list(io[f"{prefix}_folded"][0]),
                         "finn_bytes": finn_bytes, "plan_bytes": tensor.bytes_per_frame,
                         "plan_datatype": tensor.datatype,
                         "equal": finn_bytes == tensor.bytes_per_frame
                         and same_bits(datatype, tensor.datatype)}
    try:  # what the board's FinnAccelerator checks at start, packing included
        check_io_shapes(io, {"input": asdict(stage.input), "output": asdict(stage.output)})
    except DriverMismatch as exc:
        cmp.driver_error = f"FINN's driver {driver}: {exc}"


def compare_stage(stage: StagePlan, built: Path | None, error: str | None = None
                  ) -> StageComparison:
    """Compare ``stage`` with what FINN made for it, collected in the stage folder ``built``
    (``report/`` with FINN's estimate reports, ``driver/`` with FINN's PYNQ driver; None: FINN
    did not finish)."""
    cmp = StageComparison(index=stage.index, board=stage.board["kind"], ran=built is not None,
                          error=error, plan_cycles=stage.cycles, plan_fps=stage.fabric_fps,
                          plan_layer_cycles=max((o.cycles for o in stage.ops
                                                 if o.kind != "IODMA"), default=0))
    shell = stage.board["shell"]
    added = {"lut": float(shell["lut"]), "bram18": int(shell["bram18"]),
             "uram": int(shell.get("uram", 0)), "dsp": int(shell.get("dsp", 0))}
    plan_layers = [op for op in stage.ops if op.finn_name]
    for op in stage.ops:
        if not op.finn_name:  # inserted by FINN later: FIFOs, converters, DMAs
            for k, _ in RESOURCES:
                added[k] += op.resources.get(k, 0)
    cmp.plan_total = {k: sum(op.resources.get(k, 0) for op in plan_layers) for k, _ in RESOURCES}
    if built is None:
        cmp.layers = [Layer(op.finn_name, op.kind, {"cycles": op.cycles, **{
            k: op.resources.get(k, 0) for k, _ in RESOURCES}}, None) for op in plan_layers]
        return cmp
    report = built / "report"
    cycles = _load(report, "estimate_layer_cycles.json")
    res = _load(report, "estimate_layer_resources.json")
    perf = _load(report, "estimate_network_performance.json")
    recorded = _load(report, "finnchain_nodes.json")
    nodes = {n["name"]: n for n in recorded["nodes"]}
    for op in plan_layers:
        plan = {"cycles": op.cycles, **{k: op.resources.get(k, 0) for k, _ in RESOURCES}}
        finn = None
        if op.finn_name in cycles:
            r = res.get(op.finn_name, {})
            finn = {"cycles": int(cycles[op.finn_name]),
                    **{k: float(r.get(f, 0)) for k, f in RESOURCES}}
        else:
            cmp.plan_only.append(op.finn_name)
        cmp.layers.append(Layer(op.finn_name, op.kind, plan, finn))
        attrs = nodes.get(op.finn_name, {}).get("attrs", {})
        for ours, theirs in FOLD_ATTRS:
            if theirs in attrs and op.kind != "LabelSelect" and attrs[theirs] != op.fold[ours]:
                if ours == "simd" and op.kind in ("Thresholding", "VVAU") and op.fold[ours] == 1:
                    continue
                cmp.folding_differs.append(
                    f"{op.finn_name} {theirs} {attrs[theirs]} (plan {op.fold[ours]})")
    names = {op.finn_name for op in plan_layers}
    cmp.finn_only = [n for n in cycles if n not in names]
    cmp.outside = [f"{o['name']} ({o['op_type']})" for o in recorded["outside_partition"]
                   if o["op_type"] not in LAYOUT_ONLY]
    driver = built / "driver" / "driver.py"
    if driver.is_file():
        _wire(cmp, stage, driver)
    else:
        cmp.driver_error = f"FINN wrote no PYNQ driver ({driver} is missing)"
    total = res.get("total", {})
    cmp.finn_total = {k: float(total.get(f, 0)) for k, f in RESOURCES}
    cmp.finn_cycles = int(perf["max_cycles"])
    cmp.finn_fps = float(perf["estimated_throughput_fps"])
    limits = stage.limits
    for k, label in (("lut", "LUT"), ("bram18", "RAMB18"), ("uram", "URAM"), ("dsp", "DSP")):
        used = cmp.finn_total[k] + added[k]
        if used > limits[k]:
            cmp.over.append(f"{label} {used:,.0f} > {limits[k]:,.0f}")
    cmp.fits = not cmp.over
    return cmp

