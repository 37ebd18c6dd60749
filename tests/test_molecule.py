"""Molecule's loop on the emulated cluster (molecule/default): create (plan, build, `finnchain
emu up`), converge (deploy.yml), idempotence (a second deploy changes nothing), verify (the
testinfra health checks), destroy (`finnchain emu down`). Runs before the other cluster tests
(tests/conftest.py orders it), as it brings up and takes down a cluster of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clusterkit import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the emulated cluster needs root")


@pytest.mark.slow  # 7 min and a second cluster; CI's one (test_cluster) deploys twice and runs
def test_molecule_converges_idempotently_and_verifies():  # health/ too: make test-all
    from finnchain.emu import cluster

    if cluster.load():
        pytest.skip("an emulated cluster is already up on this machine (finnchain emu down)")
    # as on a fresh clone: no inventory from an earlier cluster (CI once failed on that alone)
    (ROOT / "inventory" / "emulated.yml").unlink(missing_ok=True)
    bin_dir = Path(sys.executable).parent
    r = subprocess.run([str(bin_dir / "molecule"), "test"], cwd=ROOT, capture_output=True,
                       text=True, timeout=1800, check=False,
                       env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                            "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    for action in ("create", "converge", "idempotence", "verify", "destroy"):
        assert f"{action}: Executed: Successful" in out, action
    # every health check on each of the three boards, none failed or skipped
    checks = len(re.findall(r"^def test_", (ROOT / "health" / "test_health.py").read_text(),
                            re.MULTILINE))
    summary = re.findall(r"=+ (.*) in [\d.]+s", out)
    assert summary and re.fullmatch(rf"{3 * checks} passed(, \d+ warnings?)?", summary[-1]), \
        summary
    assert not cluster.load()
