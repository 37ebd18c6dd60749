"""Plan a model onto a chain of boards and write the plan, stage models and FINN configs.

``make_plan`` runs the search (``partition``) and describes the result as a ``Plan``;
``write_plan`` writes into one folder:

- ``plan.json`` (see ``schema``),
- per stage ``stage<k>/model.onnx`` (the stage's QONNX), ``stage<k>/folding_config.json``
  (FINN's folding per node), ``stage<k>/specialize_layers.json`` (HLS or RTL per node, so that
  FINN builds what was costed) and ``stage<k>/build_config.json`` (the arguments of FINN's
  ``DataflowBuildConfig`` for this stage's board).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import onnx
from qonnx.core.modelwrapper import ModelWrapper

from finnchain.boards.catalogue import Board
from finnchain.cost.lower import input_bytes, segments
from finnchain.cost.ops import EXTERNAL, Placed
from finnchain.graph.cuts import CutPoint
from finnchain.graph.model import input_name, load, output_name, save
from finnchain.graph.split import split
from finnchain.plan.folding import external_weights
from finnchain.plan.partition import Search, best_chain
from finnchain.plan.schema import SCHEMA, OpPlan, Plan, StagePlan, Tensor
from finnchain.plan.stage import Stage

OUTPUTS = ["estimate_reports", "bitfile", "pynq_driver", "deployment_package"]


def model_sha256(model: ModelWrapper) -> str:
    buf = io.BytesIO()
    onnx.save(model.model, buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _tensor_of_cut(cut: CutPoint) -> Tensor:
    scale = list(cut.scale) if cut.per_channel else cut.scale
    return Tensor(cut.tensor, list(cut.shape), cut.datatype, cut.bytes_per_frame, scale,
                  cut.zero_point)


def _model_input(model: ModelWrapper) -> Tensor:
    name = input_name(model)
    shape = [1, *model.get_tensor_shape(name)[1:]]
    return Tensor(name, shape, model.get_tensor_datatype(name).name, input_bytes(model))


def _model_output(model: ModelWrapper, stage: Stage) -> Tensor:
    """The last stage's result as FINN's LabelSelect gives it: k label indices of the smallest
    whole-byte UINT holding them (UINT8 up to 256 classes, UINT16 beyond)."""
    name = output_name(model)
    shape = [1, *model.get_tensor_shape(name)[1:]]
    return Tensor(name, shape, stage.label_select.out_datatype, stage.out_bytes)


def _op_shape(p: Placed) -> dict:
    """The op's dimensions; ``split_part`` only on the parts of a split layer."""
    skip = {"name", "node"}
    return {k: v for k, v in asdict(p.op).items()
            if k not in skip and not (k == "split_part" and not v)}


def _ops(stage: Stage) -> list[OpPlan]:
    count: Counter[str] = Counter()
    out = []
    for p in stage.placed:
        finn = ""
        if not p.op.inserted_by_finn:
            ftype = p.op.finn_type
            finn = f"{ftype}_{count[ftype]}"
            count[ftype] += 1
        out.append(OpPlan(name=p.op.name, finn_name=finn, kind=p.op.kind, node=p.op.node,
                          fold=asdict(p.fold), cycles=p.cycles, resources=p.res.to_dict(),
                          shape=_op_shape(p)))
    return out


def _utilization(stage: Stage) -> dict:
    b, r = stage.board, stage.res
    util = {"lut": r.lut / b.limit("lut"), "bram18": r.bram18 / b.limit("bram18"),
            "dsp": r.dsp / b.limit("dsp") if b.limit("dsp") else 0.0,
            "lutram": r.lutram / b.lutram}
    return {k: round(v, 4) for k, v in util.items()}


def _limits(board: Board) -> dict:
    return {"lut": round(board.limit("lut")), "bram18": int(board.limit("bram18")),
            "dsp": int(board.limit("dsp")), "uram": int(board.limit("uram")),
            "lutram": board.lutram}


def weight_dmas(stage: Stage) -> int:
    """The weight DMAs FINN builds for a stage: one per layer whose weights stream from DDR."""
    return sum(p.fold.ram_style == EXTERNAL for p in stage.placed)


def _arm_fps(stage: Stage) -> float:
    return stage.board.arm_fps(stage.in_bytes, stage.out_bytes, weight_dmas(stage))


def _rates(stages: list[Stage]) -> tuple[float, dict]:
    """The chain's predicted rate and what sets it (fabric, link or ARM of one stage)."""
    best = (float("inf"), {})
    for k, s in enumerate(stages):
        sender = stages[k - 1].board if k else s.board
        link = min(s.board.link_bytes_per_s, sender.link_bytes_per_s) / s.in_bytes
        arm = _arm_fps(s)
        for limit, fps, what in (("fabric", s.fabric_fps, s.bottleneck.op.name),
                                 ("link", link, f"{s.in_bytes:,} bytes/frame into {s.board.kind}"),
                                 ("arm", arm, f"ARM side of {s.board.kind} (estimate)")):
            if fps < best[0]:
                best = (fps, {"stage": k, "limit": limit, "what": what, "fps": round(fps, 3)})
    return best


def make_plan(model: ModelWrapper, boards: list[Board], model_name: str, model_file: str,
              target_fps: float | None = None, weights_from_ddr: list[str] = ()
              ) -> tuple[Plan, list[Stage], list[ModelWrapper]]:
    """Plan ``model`` onto ``boards`` (fastest chain, or fewest boards for ``target_fps``);
    ``weights_from_ddr``: layers (QONNX node names) whose weights must stream from DDR
    (ValueError naming one that cannot)."""
    t0 = time.perf_counter()
    model = load(model)  # its windows written out, as a model read from a file has them
    segs = segments(model)
    search = Search(segs, boards, ddr=external_weights(segs, list(weights_from_ddr)))
    _, stages = best_chain(search, fewest_at=target_fps)
    seconds = time.perf_counter() - t0
    fps, bottleneck = _rates(stages)
    cuts = [s.segments[-1].cut.index for s in stages[:-1]]
    stage_models = split(model, cuts)
    plans = []
    for k, (s, sm) in enumerate(zip(stages, stage_models)):
        first_cut = stages[k - 1].segments[-1].cut if k else None
        last_cut = s.segments[-1].cut
        plans.append(StagePlan(
            index=k, board=s.board.to_dict(), segments=[s.first, s.end],
            nodes=[n for seg in s.segments for n in seg.nodes],
            input=_tensor_of_cut(first_cut) if first_cut else _model_input(model),
            output=_tensor_of_cut(last_cut) if last_cut else _model_output(model, s),
            ops=_ops(s), cycles=s.cycles, bottleneck_op=s.bottleneck.op.name,
            fabric_fps=round(s.fabric_fps, 3),
            arm_fps=round(_arm_fps(s), 3),
            link_in_mb_s=round(s.in_bytes * fps / 1e6, 3), resources=s.res.to_dict(),
            limits=_limits(s.board), utilization=_utilization(s),
            files={"model": f"stage{k}/model.onnx", "model_sha256": model_sha256(sm),
                   "folding_config": f"stage{k}/folding_config.json",
                   "specialize_layers": f"stage{k}/specialize_layers.json",
                   "build_config": f"stage{k}/build_config.json"}))
    power = sum(s.board.power_w for s in stages)
    plan = Plan(
        schema=SCHEMA,
        model={"name": model_name, "file": model_file, "sha256": model_sha256(model),
               "input": asdict(_model_input(model)), "segments": len(segs)},
        boards=[{"position": k, "kind": b.kind} for k, b in enumerate(boards)],
        objective={"kind": "fewest-boards", "target_fps": target_fps} if target_fps
        else {"kind": "max-throughput"},
        predicted_fps=round(fps, 3), bottleneck=bottleneck, stages=plans,
        estimates={"power_w": round(power, 2), "mj_per_frame": round(power / fps * 1e3, 2),
                   "boards_used": len(stages), "boards_unused": len(boards) - len(stages),
                   "note": "power figures are catalogue estimates, not measurements"},
        search={"seconds": round(seconds, 3), "rates_tried": search.evaluations},
    ).seal()
    return plan, stages, stage_models


def folding_config(stage: StagePlan) -> dict:
    """FINN's folding config for one stage: one entry per node FINN will have."""
    cfg: dict = {"Defaults": {}}
    for op in stage.ops:
        if op.finn_name:
            cfg[op.finn_name] = op.op().finn_config(op.fold_of())
    return cfg


def specialize_config(stage: StagePlan) -> dict:
    """HLS or RTL per node (names before specialisation), matching the cost model."""
    cfg: dict = {"Defaults": {}}
    count: Counter[str] = Counter()
    for op in stage.ops:
        if not op.finn_name:
            continue
        cfg[f"{op.kind}_{count[op.kind]}"] = {"preferred_impl_style": op.op().impl}
        count[op.kind] += 1
    return cfg


def build_config(stage: StagePlan) -> dict:
    """The arguments of FINN's DataflowBuildConfig for this stage."""
    board = stage.board
    return {
        "output_dir": "output",
        "synth_clk_period_ns": round(1000.0 / board["clock_mhz"], 4),
        "fpga_part": board["part"],
        "board": board["finn_name"],
        "shell_flow_type": "vivado_zynq",
        "folding_config_file": "folding_config.json",
        "specialize_layers_config_file": "specialize_layers.json",
        "auto_fifo_depths": True,
        "split_large_fifos": True,
        "standalone_thresholds": False,
        "generate_outputs": OUTPUTS,
    }


def write_plan(plan: Plan, stage_models: list[ModelWrapper], out: Path) -> Path:
    """Write plan.json and each stage's folder; returns the path of plan.json."""
    out.mkdir(parents=True, exist_ok=True)
    for sp, sm in zip(plan.stages, stage_models):
        folder = out / f"stage{sp.index}"
        folder.mkdir(exist_ok=True)
        save(sm, folder / "model.onnx")
        for name, data in (("folding_config.json", folding_config(sp)),
                           ("specialize_layers.json", specialize_config(sp)),
                           ("build_config.json", build_config(sp))):
            (folder / name).write_text(json.dumps(data, indent=1) + "\n")
    return plan.write(out / "plan.json")
