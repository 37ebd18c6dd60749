"""Running a stage's build folder through FINN's compiler front-end, and reading the outcome.

``python build.py --estimate`` in FINN's environment (``finn.env``) runs every FINN step up to
``step_generate_estimate_reports``: FINN's own conversion of the stage to HW layers, its
folding, its cycle and resource estimates. No Vivado. The folder's ``finnchain-status.json``
says whether it finished and, if not, which step failed and why (``build.py``'s docstring says
why the status file and not the exit code).
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

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log.is_file():
            return ""
        text = self.log.read_text(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        """One line naming the failed step and FINN's error (or the log's tail)."""
        if self.failed_step:
            return f"FINN step {self.failed_step} failed: {self.error}"
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
                       returncode)


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


def run_estimate(env: FinnEnv, folder: Path, log: Path) -> StepOutcome:
    """Run ``build.py --estimate`` of ``folder`` in FINN's environment, output into ``log``."""
    (folder / STATUS).unlink(missing_ok=True)
    shutil.rmtree(folder / "output", ignore_errors=True)
    scratch = folder / "finn-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.run([str(env.python), "build.py", "--estimate"], cwd=folder,
                              env=env.environ(scratch), stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    outcome = read_status(folder, log, time.perf_counter() - t0, proc.returncode)
    shutil.rmtree(scratch, ignore_errors=True)
    return outcome


def collect_reports(folder: Path, dest: Path) -> None:
    """FINN's estimate reports (and finnchain's io report) of a finished folder into dest/report."""
    src = folder / "output" / "report"
    report = dest / "report"
    shutil.rmtree(report, ignore_errors=True)
    report.mkdir(parents=True)
    for name in REPORTS:
        if (src / name).is_file():
            shutil.copyfile(src / name, report / name)
