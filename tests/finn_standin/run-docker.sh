#!/usr/bin/env python3
"""TEST STAND-IN for FINN's run-docker.sh where there is no docker and no Vivado.

Same command line: ``run-docker.sh build_custom <folder> [flow]``. Like FINN's container it runs
``python -mpdb -cc -cq <flow>.py`` in the folder, here with FINN's environment (.venv-finn, or
$FINNCHAIN_FINN_ENV) and ``--estimate``: FINN's real compiler front-end builds the stage up to
its estimate reports and FINN's own MakePYNQDriver writes the PYNQ driver (output/driver), and
the exit code is pdb's (0 whatever happened), as with FINN's docker. Then it stands in for
Vivado alone, for a stage that succeeded: ``output/bitfile/finn-accel.bit`` and ``.hwh``
(placeholder bytes: no synthesis here).
"""

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] != "build_custom":
        print("usage: run-docker.sh build_custom <folder> [flow]", file=sys.stderr)
        return 2
    folder = Path(sys.argv[2]).resolve()
    flow = sys.argv[3] if len(sys.argv) > 3 else "build"
    print(f"Running build_custom: {folder}/{flow}.py")
    venv = Path(os.environ.get("FINNCHAIN_FINN_ENV", ".venv-finn")).resolve()
    marker = json.loads((venv / "finnchain-finn-env.json").read_text())
    root = marker["finn_root"]
    env = {**os.environ, "FINN_ROOT": root, "PYTHONPATH": f"{root}/src",
           "FINN_BUILD_DIR": str(folder / "finn-tmp"), "PYTHONWARNINGS": "ignore"}
    (folder / "finn-tmp").mkdir(exist_ok=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-mpdb", "-cc", "-cq", f"{flow}.py", "--estimate"], cwd=folder,
                   env=env, stdin=subprocess.DEVNULL, check=False)
    status = json.loads((folder / "finnchain-status.json").read_text()) \
        if (folder / "finnchain-status.json").is_file() else {"ok": False}
    if status["ok"]:
        cfg = json.loads((folder / "build_config.json").read_text())
        out = folder / cfg.get("output_dir", "output")
        (out / "bitfile").mkdir(parents=True, exist_ok=True)
        (out / "bitfile" / "finn-accel.bit").write_bytes(b"\x00\x09\x0f\xf0" + folder.name.encode())
        (out / "bitfile" / "finn-accel.hwh").write_text(f"<MODULE NAME=\"{cfg['fpga_part']}\"/>\n")
    return 0  # pdb's exit code in FINN's container: 0, whatever the build did


if __name__ == "__main__":
    sys.exit(main())
