"""Running a stage's build folder through FINN in FINN's own environment, and the outcome.

``python build.py --estimate`` in FINN's environment (``finn.env``) runs every FINN step up to
``step_generate_estimate_reports``: FINN's own conversion of the stage to HW layers, its
folding, its cycle and resource estimates; then FINN's PYNQ driver (``MakePYNQDriver`` on the
graph of its Zynq flow). ``--cppsim`` adds FINN's C++ simulation of every HLS layer against the
folder's verification vectors. No Vivado. The folder's ``finnchain-status.json`` says whether it
finished and, if not, which step failed and why, and for a simulation that parts from the
vectors the layer and the first differing value (``build.py``'s docstring says why the status
file and not the exit code).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from finnchain.finn.collect import REPORTS
from finnchain.finn.env import FinnEnv

STATUS = "finnchain-status.json"
COMPARISON = "comparison.json"  # a stage's check against the plan, in OUT/stage<k>/
LOG_TAIL_LINES = 20


@dataclass
class StepOutcome:
    """How a FINN run of one build folder ended."""

    ok: bool
    seconds: float
    log: Path
    failed_step: str | None = None
    error: str | None = None
    returncode: int = 0
    failed_layer: str | None = None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log.is_file():
            return ""
        text = self.log.read_text(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        """One line naming the failed step and FINN's error (or the log's tail)."""
        if self.failed_step:
            layer = f" (layer {self.failed_layer})" if self.failed_layer else ""
            return f"FINN step {self.failed_step} failed{layer}: {self.error}"
        if self.error:
            return f"FINN failed: {self.error}"
        return f"FINN exited with {self.returncode}; last lines of {self.log}:\n{self.tail()}"


def read_status(folder: Path, log: Path, seconds: float, returncode: int) -> StepOutcome:
    """The outcome recorded by the folder's build.py (absent: the run did not get that far)."""
    path = folder / STATUS
    if not path.is_file():
        return StepOutcome(False, seconds, log, None,
                           "no finnchain-status.json: the build did not run to its end "
                           f"(exit {returncode})", returncode)
    s = json.loads(path.read_text())
    return StepOutcome(bool(s.get("ok")), seconds, log, s.get("failed_step"), s.get("error"),
                       returncode, s.get("failed_layer"))


def read_stage(out: Path, index: int, returncode: int) -> tuple[dict | None, list[str]]:
    """What ``finnchain build --target finn-estimate --out OUT`` found for stage ``index``: its
    comparison with the plan (None when FINN stopped) and its problems (the comparison's, or
    the step FINN stopped at and its error)."""
    path = out / f"stage{index}" / COMPARISON
    if path.is_file():
        comparison = json.loads(path.read_text())
        return comparison, comparison["problems"]
    folder = out / "finn-build" / f"stage{index}"
    return None, [read_status(folder, folder / "build.log", 0.0, returncode).describe()[:300]]


MODES = ("estimate", "cppsim")  # build.py's flags for a run without Vivado


def run_local(env: FinnEnv, folder: Path, log: Path, mode: str = "estimate",
              workers: int = 1) -> StepOutcome:
    """Run ``build.py --<mode>`` of ``folder`` in FINN's environment, output into ``log``
    (``workers``: FINN's parallel compilations of the stage's layers)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    folder = folder.resolve()  # FINN runs in it, and Verilator's models load by this path
    (folder / STATUS).unlink(missing_ok=True)
    shutil.rmtree(folder / "output", ignore_errors=True)
    scratch = folder / "finn-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.run([str(env.python), "build.py", f"--{mode}"], cwd=folder,
                              env=env.environ(scratch, workers), stdin=subprocess.DEVNULL,
                              stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    outcome = read_status(folder, log, time.perf_counter() - t0, proc.returncode)
    shutil.rmtree(scratch, ignore_errors=True)
    return outcome


def collect_local(folder: Path, dest: Path) -> None:
    """What a run without Vivado made, into ``dest``: FINN's estimate reports and finnchain's
    (``report/``) and FINN's PYNQ driver (``driver/``)."""
    src = folder / "output"
    for sub in ("report", "driver"):
        shutil.rmtree(dest / sub, ignore_errors=True)
    (dest / "report").mkdir(parents=True)
    for name in REPORTS:
        if (src / "report" / name).is_file():
            shutil.copyfile(src / "report" / name, dest / "report" / name)
    if (src / "driver").is_dir():
        shutil.copytree(src / "driver", dest / "driver")
