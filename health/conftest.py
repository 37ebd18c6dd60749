"""Health checks of a deployed chain (pytest-testinfra). They run only against boards:

    pytest health --hosts=ansible://boards --ansible-inventory=inventory/emulated.yml

FINNCHAIN_BUILD names the deployed build folder (default artifacts/deploy). Without --hosts
(the ordinary test run) they are skipped. Every name the checks need (the service, the stage's
folder, the PYNQ venv, the board's address) comes from the inventory, as the deployment's
does (inventory/group_vars).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if not config.getoption("hosts", None):
        skip = pytest.mark.skip(reason="health checks need boards: --hosts=ansible://boards")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def build() -> Path:
    path = Path(os.environ.get("FINNCHAIN_BUILD", "artifacts/deploy"))
    return path if path.is_absolute() else ROOT / path


@pytest.fixture(scope="session")
def manifest(build) -> dict:
    return json.loads((build / "manifest.json").read_text())


@pytest.fixture(scope="session")
def chain(request) -> list:
    """The boards in chain order, from the same inventory (finnchain.ops.inventory)."""
    from finnchain.ops.inventory import boards

    return boards(request.config.getoption("ansible_inventory"))


@pytest.fixture()
def board(host, chain):
    """This board (finnchain.ops.inventory.BoardHost) and the next one in the chain."""
    name = host.ansible.get_variables()["inventory_hostname"]
    me = next(b for b in chain if b.name == name)
    nxt = chain[me.stage + 1] if me.stage + 1 < len(chain) else None
    return me, nxt


@pytest.fixture()
def stage(board, manifest) -> dict:
    """This board's stage in the build's manifest; a spare board (no stage) is skipped."""
    me, _ = board
    entry = next((s for s in manifest["stages"] if s["index"] == me.stage), None)
    if entry is None:
        pytest.skip(f"{me.name} is a spare board: the build has {len(manifest['stages'])} "
                    "stages")
    return entry
