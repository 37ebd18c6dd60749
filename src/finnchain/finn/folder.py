"""One FINN build folder per stage, as FINN's ``run-docker.sh build_custom <folder>`` expects.

A folder is all FINN's container gets, and finnchain is not installed there, so it runs on its
own with FINN alone:

- ``build.py``, ``finnchain_steps.py``, ``finnchain_cppsim.py`` and ``finnchain_driver.py``: the
  build script and finnchain's build steps on FINN's transformations (``finnside/``, the same
  files for every stage; read their docstrings), and ``finnchain_rules.py``, the rules the
  steps and the emulated fabric share (the controller imports the very same file).
  ``python build.py --estimate`` stops after FINN's estimate reports and FINN's PYNQ driver,
  which is what ``finnchain build --target finn-estimate`` runs in FINN's environment without
  Vivado; ``--cppsim`` (``--target finn-cppsim``) adds FINN's C++ simulation of the stage
  against the verification vectors;
- ``model.onnx``: the stage's QONNX, prepared for FINN's front-end (``prepare``);
- ``folding_config.json``, ``specialize_layers.json``, ``build_config.json`` (from the plan;
  for ``--target finn`` and ``finn-cppsim`` with FINN's ``verify_steps`` and the paths of the
  verification vectors, ``verify/``, see ``finn.vectors``);
- ``finnchain.json``: the stage, its board (registered at run time when FINN does not know it,
  see ``finnchain_steps.register_board``) and the layers the plan splits;
- ``inputs.sha256``: the hash of all of them, by which a build that already ran on the same
  inputs is not rerun.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from finnchain.boards.catalogue import HP_PORT_BITS
from finnchain.files import sha256_file
from finnchain.finn import vectors
from finnchain.finn.prepare import prepare_for_finn
from finnchain.finn.vectors import VectorSpec
from finnchain.graph.model import load, save
from finnchain.plan.schema import Plan, StagePlan

FINNSIDE = Path(__file__).with_name("finnside")
STATIC_FILES = ("build.py", "finnchain_steps.py", "finnchain_cppsim.py", "finnchain_driver.py",
                "finnchain_rules.py")
INPUTS = (*STATIC_FILES, "model.onnx", "folding_config.json", "specialize_layers.json",
          "build_config.json", "finnchain.json")


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


def split_mvaus(stage: StagePlan) -> list[dict]:
    """The MVAUs the plan splits by output channels, as FINN's steps find them: position
    among the stage's MVAUs in stream order (counting a split layer once), MW, MH and the
    channels of the block-RAM part."""
    out, position = [], 0
    for op in stage.ops:
        part = op.shape.get("split_part", "")
        if op.kind != "MVAU" or part == "lut":
            continue
        if part == "bram":
            lut = next(o for o in stage.ops if o.node == op.node
                       and o.shape.get("split_part") == "lut")
            out.append({"position": position, "node": op.node, "mw": int(op.shape["mw"]),
                        "mh": int(op.shape["mh"]) + int(lut.shape["mh"]),
                        "first": int(op.shape["mh"])})
        position += 1
    return out


def layer_keys(stage: StagePlan) -> list[list]:
    """The stage's planned HW layers in the plan's order, each as its name in FINN's graph, its
    kind and the dimensions that tell it from others of its kind (``Op.key``; finnside
    ``layer_key`` reads the same from FINN's nodes, by the attributes ``layer_attrs`` names, to
    give each the plan's name and so the plan's folding)."""
    return [[op.finn_name, op.kind, *op.op().key()] for op in stage.ops if op.finn_name]


def layer_attrs(stage: StagePlan) -> dict[str, list[str]]:
    """Per planned kind, FINN's node attributes that hold its key (``Op.key_attrs``)."""
    return {op.kind: op.op().key_attrs() for op in stage.ops if op.finn_name}


def folder_meta(plan: Plan, stage: StagePlan) -> dict:
    board = stage.board
    # a plan of before 2026-12-07 names neither: a Zynq UltraScale+ part is xczu* or xck*
    zynq = board.get("zynq") or ("zynq_us+" if board["part"].startswith(("xczu", "xck"))
                                 else "zynq_7000")
    splits = split_mvaus(stage)
    return {
        "schema": "finnchain.finn-folder/1",
        "model": plan.model["name"], "plan_hash": plan.plan_hash, "stage": stage.index,
        "stages": len(plan.stages),
        "board": {"kind": board["kind"], "title": board["title"], "finn_name": board["finn_name"],
                  "part": board["part"], "vivado_board_part": board["vivado_board_part"],
                  "clock_mhz": board["clock_mhz"],
                  "port_bits": board.get("hp_port_bits", HP_PORT_BITS[zynq]), "zynq": zynq},
        "split_mvaus": splits,
        # a split layer's glue has no channels of its own; its stage keeps FINN's order
        "layers": [] if splits else layer_keys(stage),
        "layer_attrs": {} if splits else layer_attrs(stage),
    }


def inputs_hash(folder: Path) -> str:
    """The hash of the folder's inputs (the verification vectors by how they are made: they
    follow from the stage models, the seed and the frame count)."""
    h = hashlib.sha256()
    spec = [vectors.SPEC] if (folder / vectors.SPEC).is_file() else []
    for name in (*INPUTS, *spec):
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return h.hexdigest()


def _build_config(src: Path, verify: VectorSpec | None) -> dict:
    cfg = json.loads(src.read_text())
    if verify is not None:
        cfg.update(verify_steps=vectors.STEPS, verify_input_npy=vectors.INPUT,
                   verify_expected_output_npy=vectors.EXPECTED)
    return cfg


def write_folder(plan: Plan, plan_dir: Path, stage: StagePlan, root: Path,
                 verify: VectorSpec | None = None) -> StageFolder:
    """Write (or rewrite) the FINN build folder of ``stage`` under ``root``; with ``verify``,
    the build config lists FINN's verify steps and the vectors' paths (the vectors themselves
    are written by ``vectors.write_vectors`` for the stages that are built)."""
    src = plan_dir / f"stage{stage.index}"
    model_path = stage_model_path(plan_dir, stage)
    folder = root / f"stage{stage.index}"
    folder.mkdir(parents=True, exist_ok=True)
    save(prepare_for_finn(load(model_path)), folder / "model.onnx")
    for name in ("folding_config.json", "specialize_layers.json", "build_config.json"):
        if not (src / name).is_file():
            raise BuildInputError(f"stage {stage.index}: {src / name} is missing")
        shutil.copyfile(src / name, folder / name)
    (folder / "build_config.json").write_text(
        json.dumps(_build_config(src / "build_config.json", verify), indent=1) + "\n")
    if verify is not None:
        vectors.write_spec(folder, verify)
    else:
        shutil.rmtree(folder / vectors.DIR, ignore_errors=True)
    for name in STATIC_FILES:
        shutil.copyfile(FINNSIDE / name, folder / name)
    (folder / "finnchain.json").write_text(json.dumps(folder_meta(plan, stage), indent=1) + "\n")
    digest = inputs_hash(folder)
    (folder / "inputs.sha256").write_text(digest + "\n")
    return StageFolder(stage, folder, digest)
