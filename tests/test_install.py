"""Installs by role (pyproject.toml's extras): the base is what a board has, `ops` has no
torch, and what an operator runs works without the model toolchain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MODEL_TOOLS = ("torch", "brevitas", "sklearn", "onnxoptimizer")


def _requirement_names(reqs: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_the_extras_by_role():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert _requirement_names(project["dependencies"]) == {"numpy", "pyzmq"}  # a PYNQ image's
    assert project["requires-python"] == ">=3.10"
    assert extras["board"] == []
    ops = _requirement_names(extras["ops"])
    assert {"ansible-core", "fabric", "pytest-testinfra", "prometheus-client", "pydantic"} <= ops
    assert not ops & {"torch", "brevitas", "scikit-learn", "onnxoptimizer"}
    assert "finnchain" in _requirement_names(extras["models"])  # models = ops + the toolchain
    assert {"torch", "brevitas"} <= _requirement_names(extras["models"])
    assert "finnchain" in _requirement_names(extras["dev"])


BLOCKER = f"""
import sys
from importlib.abc import MetaPathFinder

class NoModelTools(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {MODEL_TOOLS!r}:
            raise ImportError(f"{{name}} is not in the ops install")
        return None

sys.meta_path.insert(0, NoModelTools())
"""


def test_what_an_operator_runs_needs_no_model_toolchain(build, digits):
    """With torch, Brevitas and scikit-learn unimportable: the CLI's parser, fab's tasks, the
    benchmark's bit-exact reference from a build, status and the client all load and work."""
    code = BLOCKER + f"""
import json, numpy as np
from pathlib import Path
from finnchain.cli import build_parser
build_parser().parse_args(["manifest", "verify", "x"])
sys.path.insert(0, {str(ROOT)!r})
import fabfile, finnchain.ops.control, finnchain.ops.inventory
from finnchain.runtime.client import Chain
from finnchain.ops.benchmark import whole_model_results
b = Path({str(build)!r})
x = np.random.default_rng(0).integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)
print(json.dumps(whole_model_results(b, json.loads((b / "manifest.json").read_text()), x).tolist()))
assert not any(m.split(".")[0] in {MODEL_TOOLS!r} for m in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    import numpy as np

    from finnchain.fabric.executor import Executor

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)
    got = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    assert np.array_equal(got, Executor(digits).run(x).astype(np.int32))
