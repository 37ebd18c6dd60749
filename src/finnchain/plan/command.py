"""``finnchain plan`` (and ``build/plan.py``): plan a model onto boards, write and report it."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REFERENCE = {"fps": 118.3, "boards": 6, "kind": "zedboard", "power_w": 16.176,
             "source": "Hannoun et al., WiPiEC Journal 11(1), 2025"}
MAX_SUGGEST = 64  # largest cluster tried when suggesting one that would fit


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Plan a quantized model onto a chain of boards with FINN's cost model: fold every "
        "layer, choose the cut points, and write plan.json, one QONNX model and one FINN "
        "folding/build configuration per stage, and a chart. By default the plan is the "
        "fastest the boards allow; with --target-fps it uses as few of them as reach that "
        "rate. Exits 1 when the model cannot fit, naming the layer and resource, and 2 on "
        "bad arguments.")
    p.add_argument("model", help="a model name (mobilenet-v1, digits-cnv) or a QONNX file")
    p.add_argument("--boards", default="zedboard:6",
                   help="the chain, in order: KIND:COUNT[,KIND:COUNT...] (default zedboard:6)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--target-fps", type=float,
                   help="use the fewest boards (a prefix of --boards) that reach this rate")
    p.add_argument("--catalogue", action="append", default=[],
                   help="a YAML file overriding or adding board kinds (repeatable)")
    p.add_argument("--no-chart", action="store_true", help="do not write plan.png")
    p.add_argument("--weights-from-ddr", default="", metavar="NODE[,NODE...]",
                   help="stream these fully connected layers' weights from DDR (FINN's "
                        "mem_mode external; QONNX node names, e.g. Gemm_0) instead of letting "
                        "the planner choose per layer")


def _suggest(model, catalogue, boards, target) -> str:
    """The smallest cluster of the chain's last board kind that would fit, if any."""
    from finnchain.cost.lower import segments
    from finnchain.plan.partition import PlanError, Search, best_chain

    kind = boards[-1].kind
    segs = segments(model)
    lo, hi = len(boards) + 1, MAX_SUGGEST
    if hi < lo:
        return ""
    try:
        best_chain(Search(segs, catalogue.chain(f"{kind}:{hi}")), fewest_at=target)
    except PlanError:
        return f" No chain of up to {MAX_SUGGEST} {kind} boards fits either."
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            best_chain(Search(segs, catalogue.chain(f"{kind}:{mid}")), fewest_at=target)
            hi = mid
        except PlanError:
            lo = mid + 1
    return f" The smallest chain that fits: --boards {kind}:{lo}."


def run(args: argparse.Namespace) -> int:
    """``finnchain plan`` (and ``build/plan.py``)."""
    return plan(args.model, boards=args.boards, out=Path(args.out), target_fps=args.target_fps,
                catalogues=args.catalogue, draw=not args.no_chart,
                weights_from_ddr=args.weights_from_ddr)


def plan(model_spec: str, boards: str = "zedboard:6", out: Path = Path("plan"),
         target_fps: float | None = None, catalogues: list[str] | tuple = (),
         draw: bool = True, weights_from_ddr: str = "") -> int:
    """Plan the model ``model_spec`` (a known name or a QONNX file) onto the chain ``boards``
    (KIND:COUNT,...) and write it into ``out``; 0 when planned, 1 when the model cannot fit
    (naming the layer and resource), 2 on bad input."""
    from rich.console import Console

    from finnchain.boards.catalogue import Catalogue, CatalogueError
    from finnchain.cost.lower import LoweringError
    from finnchain.models.zoo import resolve_model
    from finnchain.plan.folding import WeightsFromDdrError
    from finnchain.plan.make import make_plan, write_plan
    from finnchain.plan.partition import PlanError
    from finnchain.plan.report import chart, print_plan

    console = Console(width=max(Console().width, 132))
    try:
        catalogue = Catalogue(*catalogues)
        chain = catalogue.chain(boards)
        model = resolve_model(model_spec)
    except (CatalogueError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if target_fps is not None and not (math.isfinite(target_fps) and target_fps > 0):
        print(f"error: --target-fps must be a positive number of frames/s, not {target_fps}",
              file=sys.stderr)
        return 2
    name = model_spec
    if model_spec.endswith(".onnx"):  # artifacts/<name>/model.onnx or <name>.onnx
        path = Path(model_spec)
        name = path.parent.name if path.stem == "model" and path.parent.name else path.stem
    try:
        with console.status(f"planning {name} onto {len(chain)} boards ..."):
            result, _, stage_models = make_plan(
                model, chain, name, str(model_spec), target_fps=target_fps,
                weights_from_ddr=[n for n in weights_from_ddr.split(",") if n])
    except (LoweringError, WeightsFromDdrError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PlanError as exc:
        hint = _suggest(model, catalogue, chain, target_fps)
        print(f"error: {name} cannot be planned onto {boards}: {exc}.{hint}", file=sys.stderr)
        return 1
    out = Path(out)
    path = write_plan(result, stage_models, out)
    reference = REFERENCE if name == "mobilenet-v1" else None
    print_plan(result, console, reference)
    if draw:
        console.print(f"wrote {chart(result, out / 'plan.png')}")
    console.print(f"wrote {path} (plan {result.plan_hash[:12]}) and {len(result.stages)} stage folders")
    return 0
