"""The package's layering (docs/architecture.md): every import points down the list below,
read from the sources (imports inside functions included), and the board side of the runtime
imports what a board has."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "finnchain"

# bottom first; a module imports only from its own folder and from folders of a lower rank
# (folders of one rank import nothing of each other)
RANKS = {
    "files": 0, "schemas": 0, "benchresult": 0,
    "finn.finnside": 0,  # copied verbatim into each build folder: imports nothing of ours
    "boards": 1,
    "graph": 2,
    "models": 3, "cost": 3,
    "plan": 4,
    "fabric": 5,
    "finn": 6, "runtime": 6,  # the runtime is the board side: see BOARD_SIDE
    "ops": 7, "serve": 7,  # the controller's side: operations, and the endpoint in front of a chain
    "emu": 8,  # reads the inventory as ops does
    "documents": 9, "check": 9,
    "demo": 10,
    "cli": 11,
}
# what the board side's modules import at their top from outside the runtime: numpy-only
# modules. The emulated accelerator (fabric) and the controller's schema checks are imported
# inside the functions that use them, which a board never calls.
BOARD_SIDE = {"finnchain.graph.pack", "finnchain.graph.driver", "finnchain.files"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """The folder of ``finnchain.<...>`` whose rank applies (the longest listed prefix)."""
    rest = module.split(".", 1)[1] if "." in module else ""
    best = ""
    for name in RANKS:
        if (rest == name or rest.startswith(name + ".")) and len(name) > len(best):
            best = name
    if not best:
        raise AssertionError(f"{module} is in no layer of RANKS: add its folder")
    return best


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported finnchain module or name, line, at the module's top) of one source file."""
    module = _module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]) \
                if node.level else node.module or ""
            base = base.rstrip(".")
            if base.split(".")[0] == "finnchain":
                found += [(f"{base}.{a.name}", node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names
                      if a.name.split(".")[0] == "finnchain"]
    return found


def _sources() -> list[Path]:
    """Every module but the package's own __init__ and finnside (FINN's side, checked by
    its own tests in FINN's environment)."""
    return [p for p in sorted(SRC.rglob("*.py"))
            if "finnside" not in p.parts and p != SRC / "__init__.py"]


def test_every_import_points_down_the_layers():
    wrong = []
    for path in _sources():
        mine = _layer(_module(path))
        for target, line, _ in imports(path):
            theirs = _layer(target)
            if theirs != mine and RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{path.relative_to(SRC)}:{line} ({mine}) imports {target} "
                             f"({theirs})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_layer_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The check above must see what it is for: a lazy import, a relative one."""
    src = tmp_path / "finnchain" / "graph"
    src.mkdir(parents=True)
    (src / "x.py").write_text("from . import pack\n\ndef f():\n    from finnchain.plan import make\n")
    global SRC
    saved, SRC = SRC, tmp_path / "finnchain"
    try:
        assert imports(src / "x.py") == [("finnchain.graph.pack", 1, True),
                                        ("finnchain.plan.make", 4, False)]
    finally:
        SRC = saved
    assert _layer("finnchain.finn.finnside.finnchain_rules") == "finn.finnside"
    assert _layer("finnchain.finn.folder") == "finn"


def test_the_board_side_imports_at_its_top_only_the_runtime_and_numpy_only_modules():
    wrong = [f"{p.relative_to(SRC)}:{line} imports {t}"
             for p in sorted((SRC / "runtime").glob("*.py"))
             for t, line, top in imports(p)
             if top and not t.startswith("finnchain.runtime")
             and not any(t == m or t.startswith(m + ".") for m in BOARD_SIDE)]
    assert not wrong, "the board side imports the controller's modules:\n" + "\n".join(wrong)


def test_every_runtime_module_imports_on_a_boards_python(board_python):
    """On a PYNQ v3.0 image's Python (no onnx, no qonnx, no torch), every module of the runtime
    imports: a controller-only import at a module's top fails here."""
    names = sorted(f"finnchain.runtime.{p.stem}" for p in (SRC / "runtime").glob("*.py")
                   if p.stem != "__init__")
    assert "finnchain.runtime.stage" in names and "finnchain.runtime.client" in names
    code = ("import importlib, sys\n"
            f"for n in {names!r}:\n    importlib.import_module(n)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'qonnx', 'torch', 'pydantic') or m.startswith('finnchain.finn')))")
    r = subprocess.run([str(board_python), "-c", code], capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


@pytest.mark.parametrize("folder", sorted(p.name for p in SRC.iterdir()
                                          if p.is_dir() and p.name != "__pycache__"))
def test_every_folder_has_a_layer(folder):
    assert folder in RANKS
