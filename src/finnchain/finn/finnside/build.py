"""FINN build of one finnchain stage (this folder), written by finnchain; do not edit.

Run by FINN's docker flow for the bitstream, PYNQ driver and deployment package:
    $FINN_ROOT/run-docker.sh build_custom <this folder>
or, in any FINN environment without Vivado, up to FINN's estimate reports only:
    python build.py --estimate

Inputs: model.onnx (the stage's QONNX), build_config.json (FINN's DataflowBuildConfig
arguments), folding_config.json, specialize_layers.json, finnchain.json (stage, board, layers
the plan splits) and finnchain_steps.py (the build steps). Outputs land in ./output in FINN's
layout. The outcome is written to finnchain-status.json (ok, the failed step and its error):
FINN's build_custom runs this file under pdb, whose exit code is 0 whatever happens, so the
status file, not the exit code, is what finnchain reads. Run directly, the exit code is 0 on
success and 1 on a failed step.
"""

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import finnchain_steps as steps  # noqa: E402  (this folder's own steps)
from finn.builder import build_dataflow_config as build_cfg  # noqa: E402
from finn.builder.build_dataflow import build_dataflow_cfg  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--estimate", action="store_true",
                    help="stop after FINN's estimate reports (no Vivado needed)")
    args = ap.parse_args(argv)
    meta = steps.meta()
    steps.register_board(meta["board"])
    cfg = json.loads((HERE / "build_config.json").read_text())
    outputs = ["estimate_reports"] if args.estimate else cfg["generate_outputs"]
    cfg["generate_outputs"] = [build_cfg.DataflowOutputType(o) for o in outputs]
    cfg["shell_flow_type"] = build_cfg.ShellFlowType(cfg["shell_flow_type"])
    cfg["output_dir"] = str(HERE / cfg["output_dir"])
    for key in ("folding_config_file", "specialize_layers_config_file"):
        cfg[key] = str(HERE / cfg[key])
    tracker = steps.StepTracker()
    cfg["steps"] = steps.steps(tracker, args.estimate)
    cfg["enable_build_pdb_debug"] = False  # a failed step is reported, not debugged
    t0 = time.time()
    try:
        ok = build_dataflow_cfg(str(HERE / "model.onnx"),
                                build_cfg.DataflowBuildConfig(**cfg)) == 0
    except Exception as exc:  # a failure outside the steps (configuration, model file)
        tracker.error = f"{type(exc).__name__}: {exc}"
        ok = False
    steps.write_status(ok, tracker, time.time() - t0, args.estimate)
    outcome = "built" if ok else f"FAILED at {tracker.current}: {tracker.error}"
    print(f"finnchain: stage {meta.get('stage')} {outcome}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
