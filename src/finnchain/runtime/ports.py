"""Ports and addresses of a chain: the one place they are decided.

Each stage listens for frames on ``DATA_PORT`` and serves its counters on ``METRICS_PORT``; the
last stage also serves results to clients on ``RESULTS_PORT``. Several stages on one host (a
local chain for tests and benchmarks) use ``local_ports``: the same ports shifted by
``LOCAL_STRIDE`` per stage.
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_PORT = 5550
RESULTS_PORT = 5551
METRICS_PORT = 9150
LOCAL_STRIDE = 10


@dataclass(frozen=True)
class StagePorts:
    data: int
    results: int
    metrics: int


def board_ports() -> StagePorts:
    """Ports of a stage that has its board to itself."""
    return StagePorts(DATA_PORT, RESULTS_PORT, METRICS_PORT)


def local_ports(index: int, base: int = DATA_PORT) -> StagePorts:
    """Ports of stage ``index`` when all stages share one host."""
    shift = (base - DATA_PORT) + LOCAL_STRIDE * index
    return StagePorts(DATA_PORT + shift, RESULTS_PORT + shift, METRICS_PORT + shift)
