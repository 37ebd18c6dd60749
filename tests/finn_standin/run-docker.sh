#!/usr/bin/env python3
"""TEST STAND-IN for FINN's run-docker.sh: same command line, FINN's output layout, no FINN.

Only the tests use it (they point FINN_ROOT at a folder holding a copy). It accepts
``run-docker.sh build_custom <folder> [flow]``, checks the folder holds what FINN's build script
needs, and writes <folder>/output the way FINN v0.10.1's build_dataflow does: logs, reports
(estimate_layer_cycles/resources, estimate_network_performance), bitfile/finn-accel.bit and .hwh,
driver/ and deploy/. Its estimates are made up from the folding config (cycles 100000/(PE*SIMD),
100 LUT per PE*SIMD), enough to test that finnchain reads them back.
Set FINN_STANDIN_FAIL=<stage folder name> to make that build fail with a log.
"""

import json
import os
import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] != "build_custom":
        print("usage: run-docker.sh build_custom <folder> [flow]", file=sys.stderr)
        return 2
    folder = Path(sys.argv[2]).resolve()
    flow = sys.argv[3] if len(sys.argv) > 3 else "build"
    print(f"Running build_custom: {folder}/{flow}.py")
    for name in (f"{flow}.py", "model.onnx", "build_config.json", "folding_config.json"):
        if not (folder / name).is_file():
            print(f"ERROR: {folder / name} not found")
            return 1
    if os.environ.get("FINN_STANDIN_FAIL") == folder.name:
        for step in ("step_qonnx_to_finn", "step_tidy_up", "step_streamline"):
            print(f"Running step: {step}")
        print("AssertionError: stand-in failure requested for " + folder.name)
        return 1
    cfg = json.loads((folder / "build_config.json").read_text())
    fold = json.loads((folder / "folding_config.json").read_text())
    out = folder / cfg.get("output_dir", "output")
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    (out / "intermediate_models").mkdir(exist_ok=True)
    cycles, res = {}, {}
    for node, attrs in fold.items():
        if node == "Defaults":
            continue
        par = attrs.get("PE", 1) * attrs.get("SIMD", 1)
        cycles[node] = 100000 // par
        res[node] = {"LUT": 100 * par, "BRAM_18K": 1, "URAM": 0, "DSP": 0}
    total = {k: sum(r[k] for r in res.values()) for k in ("LUT", "BRAM_18K", "URAM", "DSP")}
    slowest = max(cycles, key=cycles.get)
    clk_ns = cfg["synth_clk_period_ns"]
    (report / "estimate_layer_cycles.json").write_text(json.dumps(cycles, indent=2))
    (report / "estimate_layer_resources.json").write_text(json.dumps({**res, "total": total}, indent=2))
    (report / "estimate_network_performance.json").write_text(json.dumps({
        "critical_path_cycles": sum(cycles.values()), "max_cycles": cycles[slowest],
        "max_cycles_node_name": slowest,
        "estimated_throughput_fps": 1e9 / clk_ns / cycles[slowest],
        "estimated_latency_ns": sum(cycles.values()) * clk_ns}, indent=2))
    (out / "build_dataflow.log").write_text("stand-in build\n")
    (out / "time_per_step.json").write_text(json.dumps({"step_qonnx_to_finn": 0.1}))
    (out / "final_hw_config.json").write_text(json.dumps(fold, indent=2))
    for sub in ("bitfile", "deploy/bitfile"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        (out / sub / "finn-accel.bit").write_bytes(b"\x00\x09\x0f\xf0" + folder.name.encode() * 64)
        (out / sub / "finn-accel.hwh").write_text(f"<MODULE NAME=\"{cfg['fpga_part']}\"/>\n")
    for sub in ("driver", "deploy/driver"):
        (out / sub / "runtime_weights").mkdir(parents=True, exist_ok=True)
        (out / sub / "driver.py").write_text("# FINN-generated driver (stand-in)\n")
        (out / sub / "driver_base.py").write_text("class FINNExampleOverlay: pass\n")
        (out / sub / "validate.py").write_text("# validate (stand-in)\n")
    print("Completed successfully")
    return 0


if __name__ == "__main__":
    sys.exit(main())
