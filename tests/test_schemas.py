"""One schema per controller-side document (finnchain.schemas): a document of the wrong type or
range is refused with every bad field named by its path, and the files the tools write pass."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finnchain import documents
from finnchain.boards.catalogue import Catalogue
from finnchain.finn.manifest import Manifest, ManifestError
from finnchain.ops.local import stage_configs
from finnchain.plan.schema import Plan, PlanFileError
from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.errors import ChainFileError
from finnchain.runtime.stage import ConfigError, StageConfig


@pytest.fixture(scope="module")
def built(digits, tiny_file, make_build):
    """A plan (built/plan) and its emulated build (built/build)."""
    return make_build(digits, Catalogue(tiny_file).chain("tiny:3"), "schemas").parent


def _edit(src: Path, dest: Path, change) -> Path:
    data = json.loads(src.read_text())
    change(data)
    dest.write_text(json.dumps(data))
    return dest


def test_every_document_has_a_json_schema():
    for kind in ("plan", "manifest", "chain", "stage-config", "catalogue"):
        assert documents.json_schema(kind)["type"] == "object", kind
    with pytest.raises(KeyError, match="no document 'recipe'"):
        documents.json_schema("recipe")


def test_the_documents_import_nothing_above_them():
    """Reading a plan, a manifest or the catalogue imports no runtime and no pyzmq (the
    schema checker once kept a registry of every document, and so imported the client); the
    stream imports the client's errors, not the client."""
    code = ("import sys\nfrom finnchain.plan.schema import Plan\n"
            "from finnchain.finn.manifest import Manifest\n"
            "from finnchain.boards.catalogue import Catalogue\nCatalogue()\n"
            "import finnchain.runtime.stream\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'zmq' or m in "
            "('finnchain.runtime.client', 'finnchain.documents')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_a_plan_with_fields_of_the_wrong_type_or_range(built, tmp_path):
    good = built / "plan" / "plan.json"
    assert Plan.read(good).stages[1].cycles > 0

    def spoil(d):
        d["stages"][1]["cycles"] = "many"
        d["stages"][0]["input"]["bytes_per_frame"] = 0
        del d["stages"][2]["ops"][0]["fold"]

    with pytest.raises(PlanFileError) as info:
        Plan.read(_edit(good, tmp_path / "plan.json", spoil))
    text = str(info.value)
    assert str(tmp_path / "plan.json") in text
    assert "stages.1.cycles: Input should be a valid integer" in text and "'many'" in text
    assert "stages.0.input: tensor" in text and "bytes_per_frame must be at least 1" in text
    assert "stages.2.ops.0 lacks 'fold'" in text


def test_a_manifest_of_an_unknown_target_or_bad_stage(built, tmp_path):
    good = built / "build" / "manifest.json"
    assert Manifest.read(good).predicted["fps"] > 0

    with pytest.raises(ManifestError) as info:
        Manifest.read(_edit(good, tmp_path / "manifest.json",
                            lambda d: d["stages"][0].update(files=["stage0/model.onnx"])))
    assert "stages.0.files: Input should be a valid dictionary" in str(info.value)
    # ranges and sets are checked once the types are right
    with pytest.raises(ManifestError) as info:
        Manifest.read(_edit(good, tmp_path / "manifest.json", lambda d: d.update(target="fpga")))
    assert "target must be one of emulate, finn, finn-estimate, finn-cppsim, got 'fpga'" in str(
        info.value)


def test_chain_files_and_stage_configs_as_the_tools_write_them(built, tmp_path):
    """What LocalChain writes passes both schemas; spoiled copies are refused, naming fields."""
    paths, chain = stage_configs(built / "build", tmp_path / "run", 20000, curve=True)
    chain.write(tmp_path / "run" / "chain.json")
    spec = ChainFile.read(tmp_path / "run" / "chain.json")
    assert spec.first.startswith("tcp://") and set(spec.curve) == {"secret", "first", "last"}
    for p in paths:
        data = json.loads(p.read_text())
        cfg = documents.check_document("stage-config", data, str(p))
        assert isinstance(cfg, StageConfig) and cfg.batch == 1
        assert StageConfig.read(p).listen == data["listen"]  # the board's own reader agrees

    for change, message in ((lambda d: d.update(first="http://127.0.0.1:1"),
                             "first must be a tcp:// address, got 'http://127.0.0.1:1'"),
                            (lambda d: d.update(colour="blue"), "colour: not a known field")):
        with pytest.raises(ChainFileError, match=message):
            ChainFile.read(_edit(tmp_path / "run" / "chain.json", tmp_path / "bad-chain.json",
                                 change))
    (tmp_path / "garbled.json").write_text("{not json")
    with pytest.raises(ChainFileError, match="garbled.json is not JSON"):
        ChainFile.read(tmp_path / "garbled.json")

    bad = _edit(paths[0], tmp_path / "run" / "bad-stage.json",
                lambda d: d.update(batch=0, accelerator="gpu"))
    with pytest.raises(ValueError) as info:
        documents.check_document("stage-config", json.loads(bad.read_text()), str(bad))
    assert "batch must be a whole number of at least 1" in str(info.value)
    with pytest.raises(ConfigError, match="bad-stage.json: batch must be a whole number"):
        StageConfig.read(bad)  # the board refuses it too, without pydantic
    shutil.rmtree(tmp_path / "run")
