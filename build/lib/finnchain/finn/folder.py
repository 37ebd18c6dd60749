"""One FINN build folder per stage, as FINN's ``run-docker.sh build_custom <folder>`` expects.

A folder holds ``build.py`` (the script FINN's docker flow runs), ``model.onnx`` (the stage's
QONNX with the plan's split layers applied), ``folding_config.json``,
``specialize_layers.json`` and ``build_config.json`` (from the plan), and ``inputs.sha256``:
the hash of all of them, by which a build that already ran on the same inputs is not rerun.

Boards FINN does not know (the Zedboard, xc7z020clg484-1): the build script registers the board
the way FINN users do for other Zynq-7000 boards, at run time and inside the container, without
patching FINN's checkout: it adds the board's part to ``finn.util.basic.pynq_part_map`` and its
AXI port width (64 bits, the Zynq-7000 HP ports) to ``pynq_native_port_width``, and adds a branch
to FINN's Zynq shell Tcl template (``templates.custom_zynq_shell_template``) that selects the
Avnet board definition (``avnet.com:zedboard:part0:*`` from the Avnet/bdf repository, which
FINN's ``fetch-repos.sh`` places under ``deps/board_files``) and the ``zynq_7000`` PS.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from finnchain.files import sha256_file
from finnchain.finn.split_layers import split_layer
from finnchain.graph.model import load, save
from finnchain.plan.schema import Plan, StagePlan

HP_PORT_BITS = 64

BUILD_SCRIPT = '''\
"""FINN build of stage {index} of {model} for a {title} ({part}, {clock} MHz).

Written by finnchain from plan {plan_hash}; run by FINN's docker flow:
    $FINN_ROOT/run-docker.sh build_custom <this folder>
The outputs land in ./output (FINN's layout). Do not edit: finnchain rewrites this folder.
"""

import json

import finn.builder.build_dataflow as build
import finn.builder.build_dataflow_config as build_cfg
from finn.transformation.fpgadataflow import templates
from finn.util import basic

BOARD = {board!r}
PART = {part!r}
BOARD_PART = {board_part!r}  # Vivado board definition, for boards FINN does not know

if BOARD not in basic.pynq_part_map:
    # register the board the way FINN's own Zynq-7000 boards are registered
    basic.pynq_part_map[BOARD] = PART
    basic.pynq_native_port_width[BOARD] = {port_bits}
    select = (
        "    set_property board_part [lindex [get_board_parts -quiet %s] end] [current_project]\\n"
        % BOARD_PART if BOARD_PART else ""
    )  # without a board definition the project keeps the bare part
    branch = (
        "}} elseif {{$BOARD == \\"%s\\"}} {{\\n"
        "    set ZYNQ_TYPE \\"zynq_7000\\"\\n%s"
        "}} elseif {{$BOARD == \\"Pynq-Z1\\"}} {{" % (BOARD, select)
    )
    templates.custom_zynq_shell_template = templates.custom_zynq_shell_template.replace(
        "}} elseif {{$BOARD == \\"Pynq-Z1\\"}} {{", branch, 1
    )

with open("build_config.json") as f:
    cfg = json.load(f)
cfg["generate_outputs"] = [build_cfg.DataflowOutputType(o) for o in cfg["generate_outputs"]]
cfg["shell_flow_type"] = build_cfg.ShellFlowType(cfg["shell_flow_type"])
build.build_dataflow_cfg("model.onnx", build_cfg.DataflowBuildConfig(**cfg))
'''


class BuildInputError(ValueError):
    """A plan whose stage files are missing or are not the ones it was made with."""


@dataclass
class StageFolder:
    """A stage's FINN build folder and the hash of its inputs."""

    stage: StagePlan
    path: Path
    inputs_sha256: str


def stage_model_path(plan_dir: Path, stage: StagePlan) -> Path:
    """The stage's QONNX next to plan.json, checked against the hash the plan recorded."""
    path = plan_dir / stage.files["model"]
    if not path.is_file():
        raise BuildInputError(f"stage {stage.index}: {path} is missing (plan.json's folder "
                              "must hold the stage folders the planner wrote)")
    if sha256_file(path) != stage.files["model_sha256"]:
        raise BuildInputError(f"stage {stage.index}: {path} is not the model plan "
                              f"{stage.files.get('model_sha256', '')[:12]} was made with: the "
                              "folder holds a plan of another build; plan again")
    return path


def split_layers(stage: StagePlan) -> list[tuple[str, int]]:
    """(QONNX node, channels in the block-RAM part) of every layer the plan split."""
    out = []
    for op in stage.ops:
        if op.kind == "MVAU" and op.name.endswith("_bram"):
            out.append((op.node, int(op.shape["mh"])))
    return out


def write_folder(plan: Plan, plan_dir: Path, stage: StagePlan, root: Path) -> StageFolder:
    """Write (or rewrite) the FINN build folder of ``stage`` under ``root``."""
    src = plan_dir / f"stage{stage.index}"
    model_path = stage_model_path(plan_dir, stage)
    folder = root / f"stage{stage.index}"
    folder.mkdir(parents=True, exist_ok=True)
    model = load(model_path)
    for node, first in split_layers(stage):
        model = split_layer(model, node, first)
    save(model, folder / "model.onnx")
    for name in ("folding_config.json", "specialize_layers.json", "build_config.json"):
        if not (src / name).is_file():
            raise BuildInputError(f"stage {stage.index}: {src / name} is missing")
        shutil.copyfile(src / name, folder / name)
    board = stage.board["finn_name"]
    (folder / "build.py").write_text(BUILD_SCRIPT.format(
        index=stage.index, model=plan.model["name"], title=stage.board["title"],
        part=stage.board["part"], clock=stage.board["clock_mhz"], plan_hash=plan.plan_hash[:12],
        board=board, board_part=stage.board["vivado_board_part"], port_bits=HP_PORT_BITS))
    h = hashlib.sha256()
    for name in ("build.py", "model.onnx", "folding_config.json", "specialize_layers.json",
                 "build_config.json"):
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    digest = h.hexdigest()
    (folder / "inputs.sha256").write_text(digest + "\n")
    return StageFolder(stage, folder, digest)


