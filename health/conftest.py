"""Health checks of a deployed chain (pytest-testinfra). They run only against boards:

    pytest health --hosts=ansible://boards --ansible-inventory=inventory/emulated.yml

FINNCHAIN_BUILD names the deployed build folder (default artifacts/deploy). Without --hosts
(the ordinary test run) they are skipped.
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
def board(host, chain) -> dict:
    """This board's place in the chain and the next board."""
    name = host.ansible.get_variables()["inventory_hostname"]
    names = [b.name for b in chain]
    index = names.index(name)
    nxt = chain[index + 1] if index + 1 < len(chain) else None
    return {"name": name, "index": index, "address": chain[index].address, "next": nxt}
