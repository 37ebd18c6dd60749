"""FINN build of one finnchain stage (this folder), written by finnchain; do not edit.

Run by FINN's docker flow for the bitstream, PYNQ driver and deployment package:
    $FINN_ROOT/run-docker.sh build_custom <this folder>
or, in any FINN environment without Vivado, up to FINN's estimate reports and FINN's PYNQ
driver (output/driver, output/deploy/driver):
    python build.py --estimate
and, with g++ and HLS headers ($HLS_PATH/include), also FINN's C++ simulation of every HLS
layer against the verification vectors (FINN's "folded_hls_cppsim" verify step):
    python build.py --cppsim

Inputs: model.onnx (the stage's QONNX), build_config.json (FINN's DataflowBuildConfig
arguments, verify_steps among them), folding_config.json, specialize_layers.json,
finnchain.json (stage, board, layers the plan splits), verify/input.npy and
verify/expected_output.npy (frames of the stage's input codes and the outputs finnchain's
emulated fabric gives for them: FINN's verify_input_npy and verify_expected_output_npy, in the
stage's own NCHW layout) and finnchain_steps.py, finnchain_cppsim.py, finnchain_driver.py (the
build steps). In the full flow FINN checks its C++ simulation ("folded_hls_cppsim") and its
stitched IP's RTL simulation ("stitched_ip_rtlsim") against the vectors; its
output/verification_output holds one file per frame and check. Outputs land in ./output in
FINN's layout. The outcome is written to finnchain-status.json (ok, the failed step, its error,
the layer and first differing value when a simulation parts from the vectors):
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
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--estimate", action="store_true",
                      help="stop after FINN's estimate reports and its PYNQ driver (no Vivado)")
    mode.add_argument("--cppsim", action="store_true",
                      help="as --estimate, and FINN's C++ simulation against the verification "
                      "vectors (g++, $HLS_PATH/include; no Vivado)")
    args = ap.parse_args(argv)
    bitstream = not (args.estimate or args.cppsim)
    meta = steps.meta()
    steps.register_board(meta["board"])
    cfg = json.loads((HERE / "build_config.json").read_text())
    outputs = cfg["generate_outputs"] if bitstream else ["estimate_reports"]
    cfg["generate_outputs"] = [build_cfg.DataflowOutputType(o) for o in outputs]
    cfg["shell_flow_type"] = build_cfg.ShellFlowType(cfg["shell_flow_type"])
    cfg["output_dir"] = str(HERE / cfg["output_dir"])
    for key in ("folding_config_file", "specialize_layers_config_file", "verify_input_npy",
                "verify_expected_output_npy"):
        if key in cfg:
            cfg[key] = str(HERE / cfg[key])
    if not bitstream:  # no Vivado: at most the C++ simulation
        cfg["verify_steps"] = ["folded_hls_cppsim"] if args.cppsim else None
    if cfg.get("verify_steps"):
        cfg["verify_steps"] = [build_cfg.VerificationStepType(v) for v in cfg["verify_steps"]]
    tracker = steps.StepTracker()
    cfg["steps"] = steps.steps(tracker, bitstream)
    cfg["enable_build_pdb_debug"] = False  # a failed step is reported, not debugged
    t0 = time.time()
    try:
        ok = build_dataflow_cfg(str(HERE / "model.onnx"),
                                build_cfg.DataflowBuildConfig(**cfg)) == 0
    except Exception as exc:  # a failure outside the steps (configuration, model file)
        tracker.error = f"{type(exc).__name__}: {exc}"
        ok = False
    mode = "bitstream" if bitstream else "cppsim" if args.cppsim else "estimate"
    steps.write_status(ok, tracker, time.time() - t0, mode)
    outcome = "built" if ok else f"FAILED at {tracker.current}: {tracker.error}"
    print(f"finnchain: stage {meta.get('stage')} {outcome}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
