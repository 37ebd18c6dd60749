"""Where benchmarks put their results: ``bench/results/<name>.json`` under the current folder
(the repository's root when run as its README says), stamped with date and machine."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path

RESULTS = Path("bench") / "results"


def save(name: str, result: dict, results: Path = RESULTS) -> Path:
    """Write ``result`` (plus date and machine) to ``results/<name>.json``; returns the path."""
    results.mkdir(parents=True, exist_ok=True)
    stamped = {**result, "date": date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    path = results / f"{name}.json"
    path.write_text(json.dumps(stamped, indent=1) + "\n")
    return path
