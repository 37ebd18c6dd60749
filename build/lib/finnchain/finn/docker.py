"""Running FINN's docker flow on build folders: ``$FINN_ROOT/run-docker.sh build_custom DIR``.

FINN's script starts its container with ``docker run -it``, which needs a terminal; when
finnchain runs it (several at once, output to a log file) there is none, so each run gets a
pseudo-terminal from util-linux's ``script`` when that is installed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

GET_FINN = (
    "FINN_ROOT is not set. --target finn runs FINN's docker flow, "
    "$FINN_ROOT/run-docker.sh build_custom <folder>, which needs a FINN checkout "
    "(git clone --branch v0.10.1 https://github.com/Xilinx/finn, then "
    "export FINN_ROOT=<that folder>), Docker, and Vivado 2022.2 (export FINN_XILINX_PATH and "
    "FINN_XILINX_VERSION; see FINN's 'Getting started'). Without them, --target emulate builds "
    "the same layout for the emulated accelerator."
)
LOG_TAIL_LINES = 20


class FinnSetupError(RuntimeError):
    """FINN cannot be run here; the message says what is missing and how to get it."""


@dataclass
class RunResult:
    ok: bool
    seconds: float
    log: Path
    returncode: int

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log.is_file():
            return ""
        text = self.log.read_text(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])


def finn_script(env: dict[str, str] | None = None) -> Path:
    """``$FINN_ROOT/run-docker.sh``, checked to exist and be executable."""
    env = os.environ if env is None else env
    root = env.get("FINN_ROOT")
    if not root:
        raise FinnSetupError(GET_FINN)
    script = Path(root) / "run-docker.sh"
    if not script.is_file():
        raise FinnSetupError(f"FINN_ROOT={root} has no run-docker.sh: is it a FINN checkout? "
                             + GET_FINN.split(". ", 1)[1])
    if not os.access(script, os.X_OK):
        raise FinnSetupError(f"{script} is not executable (chmod +x it)")
    return script


def _with_terminal(cmd: list[str]) -> list[str]:
    script = shutil.which("script")
    if script is None:
        return cmd
    return [script, "-qefc", shlex.join(cmd), "/dev/null"]


def run_build(script: Path, folder: Path, log: Path) -> RunResult:
    """Run one build folder through FINN's docker flow, its output into ``log``."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.run(_with_terminal([str(script), "build_custom", str(folder)]),
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              cwd=folder, check=False)
    return RunResult(proc.returncode == 0, time.perf_counter() - t0, log, proc.returncode)
