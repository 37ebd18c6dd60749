"""Unit tests of finnside's transformations, run in FINN's own environment (.venv-finn), as FINN
tests its own (one small graph per transformation, executed before and after by FINN's
``execute_onnx``). tests/test_finn.py runs them there; the ordinary test run skips this folder
(tests/conftest.py), since FINN is not in the controller's environment."""

from __future__ import annotations

import sys
from pathlib import Path

FINNSIDE = Path(__file__).resolve().parents[2] / "src" / "finnchain" / "finn" / "finnside"
sys.path.insert(0, str(FINNSIDE))
