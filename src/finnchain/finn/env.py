"""FINN's own environment, made and found by finnchain: ``finnchain finn-env``.

FINN v0.10.1 pins numpy 1.24, onnx 1.17, onnxruntime 1.18 and protobuf 3.20, which clash with
finnchain's own environment, so FINN gets a virtual environment of its own (as it has its own
docker image): ``.venv-finn/`` in the current folder (``FINNCHAIN_FINN_ENV`` overrides).

Where FINN comes from, in this order:
1. ``$FINN_ROOT``, a FINN checkout a user already has (its ``deps/qonnx`` and
   ``deps/pyverilator`` from FINN's ``fetch-repos.sh`` are used when present);
2. the archives of FINN v0.10.1, the qonnx commit it pins and pyverilator in a deps folder
   (``FINNCHAIN_FINN_DEPS``, else ``../shared/deps`` from the current folder), unpacked into the
   environment.

Python packages are installed with the versions in ``finnside/constraints-finn.txt`` (a set
verified with FINN's compiler front-end on Python 3.11), qonnx and pyverilator from source
without dependencies. FINN's ``finn.util.test`` imports ``torchvision.transforms.functional``
at module level (``build_dataflow_steps`` imports it; no build step calls it); the registry's
torchvision wheels do not load beside the CPU build of torch used here ("operator
torchvision::nms does not exist"), so the environment gets a placeholder ``torchvision``
package whose two functions FINN's test helper names raise if ever called. That is the one
difference from FINN's docker image, and it touches no build step.

What runs in it: each build folder's ``build.py`` (FINN's compiler front-end up to the estimate
reports) and ``finnside/execute.py`` (FINN's python-mode execution of a stage's HW graph).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

FINNSIDE = Path(__file__).with_name("finnside")
CONSTRAINTS = FINNSIDE / "constraints-finn.txt"
ARCHIVES = {"finn": "finn-v0.10.1.tar.gz", "qonnx": "qonnx-fd61cfee.tar.gz",
            "pyverilator": "pyverilator-766e457.tar.gz"}
MARKER = "finnchain-finn-env.json"
TORCHVISION_PLACEHOLDER = {
    "__init__.py": '"""Placeholder, not torchvision: see finnchain.finn.env."""\n',
    "transforms/__init__.py": "",
    "transforms/functional.py": (
        '"""Placeholder for the two functions FINN\'s finn.util.test imports; no build step '
        'calls them."""\n\n\ndef _missing(*args, **kwargs):\n    raise RuntimeError(\n'
        '        "torchvision is a placeholder in finnchain\'s FINN environment "\n'
        '        "(see finnchain.finn.env): install a torchvision matching torch to use FINN\'s "\n'
        '        "image test helpers"\n    )\n\n\nresize = center_crop = _missing\n'),
}


class FinnEnvError(RuntimeError):
    """No FINN environment, or none can be made here; the message says what to do."""


@dataclass(frozen=True)
class FinnEnv:
    """A ready FINN environment: its Python and FINN's sources (``FINN_ROOT``)."""

    path: Path
    python: Path
    finn_root: Path
    source: str  # "FINN_ROOT" or the deps folder it was made from

    def environ(self, build_dir: Path) -> dict[str, str]:
        """Environment variables for a process running FINN (its own scratch folder)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update({"FINN_ROOT": str(self.finn_root), "FINN_BUILD_DIR": str(build_dir),
                    "PYTHONPATH": str(self.finn_root / "src"), "PYTHONWARNINGS": "ignore",
                    "NUM_DEFAULT_WORKERS": "1", "VIRTUAL_ENV": str(self.path)})
        return env


def default_location() -> Path:
    return Path(os.environ.get("FINNCHAIN_FINN_ENV", ".venv-finn")).absolute()


def deps_folder() -> Path | None:
    """The folder of FINN's archives, or None when there is none."""
    env = os.environ.get("FINNCHAIN_FINN_DEPS")
    candidates = [Path(env)] if env else [Path("..") / "shared" / "deps"]
    for c in candidates:
        if all((c / a).is_file() for a in ARCHIVES.values()):
            return c.resolve()
    return None


def find(path: Path | None = None) -> FinnEnv | None:
    """The FINN environment at ``path`` (default: ``default_location()``) if it is ready."""
    path = path or default_location()
    marker = path / MARKER
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text())
    env = FinnEnv(path, path / "bin" / "python", Path(data["finn_root"]), data["source"])
    if not env.python.exists() or not (env.finn_root / "src" / "finn").is_dir():
        return None
    return env


def require(path: Path | None = None) -> FinnEnv:
    env = find(path)
    if env is None:
        where = path or default_location()
        raise FinnEnvError(
            f"no FINN environment at {where}: make it with `finnchain finn-env` (or `make "
            "finn-env`), which takes FINN from $FINN_ROOT or from FINN's archives in "
            "../shared/deps (FINNCHAIN_FINN_DEPS)")
    return env


def unavailable_reason() -> str | None:
    """Why no FINN environment can be made here (None when one can)."""
    root = os.environ.get("FINN_ROOT")
    if root and (Path(root) / "src" / "finn").is_dir():
        return None
    if deps_folder() is not None:
        return None
    return ("neither FINN_ROOT (a FINN v0.10.1 checkout) nor FINN's archives in ../shared/deps "
            "(or FINNCHAIN_FINN_DEPS) exist here")


def _run(cmd: list[str], log, env: dict | None = None) -> None:
    log.write(f"$ {' '.join(map(str, cmd))}\n")
    log.flush()
    r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if r.returncode != 0:
        raise FinnEnvError(f"{' '.join(map(str, cmd[:4]))} ... failed (exit {r.returncode}); "
                           f"see {log.name}")


def _unpack(archive: Path, dest: Path) -> Path:
    """Unpack a source archive holding one top folder; returns that folder."""
    with tarfile.open(archive) as tar:
        top = {m.name.split("/")[0] for m in tar.getmembers()}
        tar.extractall(dest, filter="data")
    if len(top) != 1:
        raise FinnEnvError(f"{archive} holds {sorted(top)}, not one source folder")
    return dest / top.pop()


def _requirements() -> list[str]:
    out = []
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def make(path: Path | None = None, python: str | None = None, log=None, force: bool = False
         ) -> FinnEnv:
    """Make (or remake with ``force``) the FINN environment; returns it. Takes a minute or two."""
    path = path or default_location()
    if not force and (env := find(path)) is not None:
        return env
    reason = unavailable_reason()
    if reason:
        raise FinnEnvError(f"cannot make a FINN environment: {reason}")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    log = log or open(path / "setup.log", "w")
    t0 = time.perf_counter()
    root_env = os.environ.get("FINN_ROOT")
    src = path / "src"
    src.mkdir()
    deps = deps_folder()
    if root_env and (Path(root_env) / "src" / "finn").is_dir():
        finn_root, source = Path(root_env).resolve(), "FINN_ROOT"
    else:
        finn_root, source = _unpack(deps / ARCHIVES["finn"], src), str(deps)
    pkgs = {}
    for name in ("qonnx", "pyverilator"):
        in_root = finn_root / "deps" / name
        if in_root.is_dir():
            pkgs[name] = in_root
        elif deps is not None:
            pkgs[name] = _unpack(deps / ARCHIVES[name], src)
        else:
            raise FinnEnvError(f"{finn_root}/deps/{name} is missing (run FINN's fetch-repos.sh) "
                               "and no deps folder holds its archive")
    _run([python or sys.executable, "-m", "venv", str(path)], log)
    py = path / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "-c", str(CONSTRAINTS), *_requirements()], log)
    _run([*pip, "--no-deps", str(pkgs["qonnx"]), str(pkgs["pyverilator"])], log,
         env={**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_QONNX": "0.3.0"})
    site = Path(subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    for rel, text in TORCHVISION_PLACEHOLDER.items():
        (site / "torchvision" / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / "torchvision" / rel).write_text(text)
    env = FinnEnv(path, py, finn_root, source)
    check = subprocess.run([str(py), "-c", "import finn.builder.build_dataflow"],
                           env=env.environ(path / "tmp"), capture_output=True, text=True,
                           check=False)
    if check.returncode != 0:
        raise FinnEnvError(f"FINN does not import in {path}: {check.stderr.strip()[-400:]}")
    (path / MARKER).write_text(json.dumps({
        "finn_root": str(finn_root), "source": source, "seconds": round(time.perf_counter() - t0),
        "constraints": CONSTRAINTS.name}, indent=1) + "\n")
    return env


def add_arguments(p) -> None:
    p.description = __doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2].replace("\n", " ")
    p.add_argument("--path", help="where (default .venv-finn, or $FINNCHAIN_FINN_ENV)")
    p.add_argument("--force", action="store_true", help="make it again")
    p.add_argument("--check", action="store_true",
                   help="only say whether a FINN environment is ready (exit 1 if not)")
    p.add_argument("--if-possible", action="store_true",
                   help="where FINN's sources are nowhere to be found, say so and exit 0 "
                   "(for `make test`: the FINN checks are then skipped, saying why)")


def run(args) -> int:
    path = Path(args.path).absolute() if args.path else None
    if args.check:
        env = find(path)
        if env is None:
            print(f"no FINN environment at {path or default_location()}"
                  + (f" ({unavailable_reason()})" if unavailable_reason() else ""))
            return 1
        print(f"FINN environment {env.path}: FINN_ROOT={env.finn_root} (from {env.source})")
        return 0
    if find(path) is not None and not args.force:
        env = find(path)
        print(f"FINN environment ready: {env.path} (FINN_ROOT={env.finn_root})")
        return 0
    if args.if_possible and unavailable_reason():
        print(f"no FINN environment made: {unavailable_reason()}; the FINN checks will be "
              "skipped")
        return 0
    try:
        print(f"making FINN's environment in {path or default_location()} (a minute or two) ...")
        env = make(path, force=args.force)
    except FinnEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"FINN environment ready: {env.path} (FINN_ROOT={env.finn_root}, from {env.source})")
    return 0
