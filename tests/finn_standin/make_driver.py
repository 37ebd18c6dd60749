"""TEST STAND-IN for FINN's MakePYNQDriver step (which needs the Vivado-built IODMA partitions).

Runs in FINN's environment: ``python make_driver.py BUILD_FOLDER DRIVER_DIR``. Writes the driver
folder as FINN's MakePYNQDriver does: FINN's own driver_base.py and validate.py templates, the
qonnx and finn files it copies beside them, and driver.py from FINN's own pynq_driver_template,
filled with the folded and packed shapes FINN derives from the first and last HW node (recorded
by finnchain's step_finnchain_io in output/report/finnchain_io.json) and FINN's default DMA
names for a Zynq build (idma0, odma0).
"""

import json
import os
import shutil
import sys
from pathlib import Path

import finn.util
import qonnx
from finn.transformation.fpgadataflow import template_driver


def main(folder: str, dest: str) -> int:
    io = json.loads((Path(folder) / "output" / "report" / "finnchain_io.json").read_text())
    d = Path(dest)
    for sub in ("qonnx/core", "qonnx/util", "finn/util", "runtime_weights"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    templates = Path(os.environ["FINN_ROOT"]) / "src/finn/qnn-data/templates/driver"
    shutil.copy(templates / "driver_base.py", d / "driver_base.py")
    shutil.copy(templates / "validate.py", d / "validate.py")
    q, f = Path(qonnx.__path__[0]), Path(finn.util.__path__[0])
    for src, rel in ((q / "core/datatype.py", "qonnx/core/datatype.py"),
                     (q / "core/__init__.py", "qonnx/core/__init__.py"),
                     (q / "util/basic.py", "qonnx/util/basic.py"),
                     (q / "util/__init__.py", "qonnx/util/__init__.py"),
                     (f / "data_packing.py", "finn/util/data_packing.py"),
                     (f / "__init__.py", "finn/util/__init__.py")):
        shutil.copy(src, d / rel)
    i, o = io["input"], io["output"]
    text = template_driver.pynq_driver_template
    for key, value in (
            ("$PLATFORM$", "zynq-iodma"),
            ("$INPUT_FINN_DATATYPE$", str(["DataType['{}']".format(i["datatype"])]).replace('"', "")),
            ("$INPUT_SHAPE_NORMAL$", str([tuple(i["normal"])])),
            ("$INPUT_SHAPE_FOLDED$", str([tuple(i["folded"])])),
            ("$INPUT_SHAPE_PACKED$", str([tuple(i["packed"])])),
            ("$OUTPUT_FINN_DATATYPE$", str(["DataType['{}']".format(o["datatype"])]).replace('"', "")),
            ("$OUTPUT_SHAPE_NORMAL$", str([tuple(o["normal"])])),
            ("$OUTPUT_SHAPE_FOLDED$", str([tuple(o["folded"])])),
            ("$OUTPUT_SHAPE_PACKED$", str([tuple(o["packed"])])),
            ("$INPUT_DMA_NAME$", str(["idma0"])), ("$OUTPUT_DMA_NAME$", str(["odma0"])),
            ("$NUM_INPUTS$", "1"), ("$NUM_OUTPUTS$", "1"), ("$EXT_WEIGHT_NUM$", "0")):
        text = text.replace(key, value)
    (d / "driver.py").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
