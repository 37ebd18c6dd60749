"""An emulated overlay: what a stage's FINN build gives a board, with the bitstream emulated.

A FINN build gives a board ``bitfile/finn-accel.bit`` and ``.hwh`` (Vivado's) and ``driver/``
(FINN's ``MakePYNQDriver``). Where no Vivado runs, ``finnchain build --target emulate`` gives
an emulated board the same layout, the bitstream being the only stand-in:

- ``driver/``: FINN's own driver for the stage (``build.py --estimate`` in FINN's environment:
  ``finnside/finnchain_driver.py``), byte for byte what a Vivado build's would be;
- ``bitfile/finn-accel.hwh``: the block design as FINN's Zynq flow (``MakeZYNQProject``) makes
  it, in the format pynq's own parser reads: the Zynq-7000 processing system with its PL
  clock's divisors, and each DMA FINN's driver names (``idma0``, ``odma0``, weight DMAs) at the
  address FINN's ``assign_axi_addr_proc`` gives it (from 0x40000000 on a Zynq-7000, each at
  least 4 KiB and aligned to its range, in the order the DMAs are created);
- ``bitfile/finn-accel.bit``: not a bitstream but what the emulated PL is configured with
  (``emu.pl``): each DMA's role and bytes per frame (a weight DMA's also the SHA-256 of the
  weights FINN's driver loads into its buffer), the stage's cycles per frame, its wire
  ends and where the fabric program lies (``fabric/``: the stage's integer program).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from finnchain.fabric.bitstream import FORMAT
from finnchain.plan.schema import StagePlan

ZYNQ_REPORT = "finnchain_zynq.json"  # written by the folder's driver step
AXI_BASE = {"zynq_7000": 0x4000_0000, "zynq_us+": 0xA000_0000}  # FINN's templates.py
IO_PLL_MHZ = 1000.0  # a Zynq-7000's IO PLL as a PYNQ board boots (emu.pl's SLCR)
IODMA_RANGE = 0x1000  # an HLS IODMA's AXI-lite control block: under 4 KiB, so 4 KiB
AXIMM = "xilinx.com:interface:aximm:1.0"


class OverlayError(RuntimeError):
    """A stage whose emulated overlay cannot be made; the message says why."""


def _divisors(clock_mhz: float) -> tuple[int, int]:
    """The FCLK0 divisors of the IO PLL nearest ``clock_mhz`` (Vivado's choice when the
    frequency cannot be met exactly)."""
    return min(((d0, d1) for d0 in range(1, 64) for d1 in range(1, 64)),
               key=lambda d: (abs(IO_PLL_MHZ / (d[0] * d[1]) - clock_mhz), d[1], d[0]))


def addresses(ips: list[dict], zynq: str = "zynq_7000") -> dict[str, int]:
    """Each DMA's base address as FINN's Tcl assigns them, in creation order."""
    base, out = AXI_BASE[zynq], {}
    for ip in ips:
        if ip["kind"] == "layers":
            if ip["axilite"]:
                raise OverlayError(f"layers {', '.join(ip['axilite'])} have runtime-writable "
                                   "weights (an AXI-lite interface each), which the emulated PL "
                                   "does not emulate")
            continue
        offset = (base + IODMA_RANGE - 1) & ~(IODMA_RANGE - 1)
        out[ip["name"]] = offset
        base = offset + IODMA_RANGE
    return out


def hwh(ips: list[dict], stage: StagePlan) -> str:
    """The .hwh of the stage's block design (see the module)."""
    board = stage.board
    d0, d1 = _divisors(float(board["clock_mhz"]))
    params = [("PCW_FPGA0_PERIPHERAL_FREQMHZ", f"{board['clock_mhz']:g}")]
    for k in range(4):
        on = k == 0
        params += [(f"PCW_FPGA_FCLK{k}_ENABLE", "1" if on else "0"),
                   (f"PCW_FCLK{k}_PERIPHERAL_DIVISOR0", str(d0 if on else 1)),
                   (f"PCW_FCLK{k}_PERIPHERAL_DIVISOR1", str(d1 if on else 1))]
    ranges, modules = [], []
    for name, base in addresses(ips).items():
        ranges.append(
            f'        <MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_S_AXI_CONTROL_BASEADDR" '
            f'BASEVALUE="0x{base:08X}" HIGHNAME="C_S_AXI_CONTROL_HIGHADDR" '
            f'HIGHVALUE="0x{base + IODMA_RANGE - 1:08X}" INSTANCE={quoteattr(name)} '
            f'IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_GP0" '
            f'MEMTYPE="REGISTER" SLAVEBUSINTERFACE="s_axi_control"/>')
        modules.append(
            f'    <MODULE FULLNAME={quoteattr("/" + name)} INSTANCE={quoteattr(name)} '
            f'MODTYPE="StreamingDataflowPartition" '
            f'VLNV="xilinx.com:hls:StreamingDataflowPartition:1.0">\n'
            f'      <PARAMETERS/>\n      <PORTS/>\n      <BUSINTERFACES>\n'
            f'        <BUSINTERFACE NAME="s_axi_control" TYPE="SLAVE" VLNV="{AXIMM}"/>\n'
            f'        <BUSINTERFACE NAME="m_axi_gmem0" TYPE="MASTER" VLNV="{AXIMM}"/>\n'
            f'      </BUSINTERFACES>\n    </MODULE>')
    parameters = "\n".join(f"        <PARAMETER NAME={quoteattr(k)} VALUE={quoteattr(v)}/>"
                           for k, v in params)
    part = board["part"]
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>\n'
        f'<EDKSYSTEM EDWVERSION="1.2" VIVADOVERSION="2022.2">\n'
        f'  <SYSTEMINFO ARCH="zynq" DEVICE={quoteattr(part)} NAME="top"/>\n'
        "  <EXTERNALPORTS/>\n  <MODULES>\n"
        '    <MODULE FULLNAME="/zynq_ps" INSTANCE="zynq_ps" MODTYPE="processing_system7" '
        'VLNV="xilinx.com:ip:processing_system7:5.5">\n'
        f"      <PARAMETERS>\n{parameters}\n      </PARAMETERS>\n"
        f"      <MEMORYMAP>\n{chr(10).join(ranges)}\n      </MEMORYMAP>\n"
        "      <PORTS/>\n      <BUSINTERFACES>\n"
        f'        <BUSINTERFACE NAME="M_AXI_GP0" TYPE="MASTER" VLNV="{AXIMM}"/>\n'
        f'        <BUSINTERFACE NAME="S_AXI_HP0" TYPE="SLAVE" VLNV="{AXIMM}"/>\n'
        "      </BUSINTERFACES>\n    </MODULE>\n"
        f"{chr(10).join(modules)}\n"
        "  </MODULES>\n</EDKSYSTEM>\n")


def weight_layout(ip: dict, raw: bytes, stage: StagePlan, program: dict[str, np.ndarray]
                  ) -> dict:
    """What the emulated PL needs to compute with what a weight DMA reads: the fully connected
    node it feeds (the plan's op of FINN's layer), FINN's word layout, and the order of FINN's
    weight rows among the program's (FINN reorders a layer's inputs after a Flatten to NHWC),
    found by decoding FINN's own weight file; OverlayError when no order makes them equal."""
    from finnchain.graph.pack import unpack_external_weights

    feeds = ip.get("feeds")
    if not feeds:
        raise OverlayError(f"the weight DMA {ip['name']} names no layer it feeds (FINN's "
                           f"{ZYNQ_REPORT} from an older finnchain: rebuild the stage)")
    ops = [op for op in stage.ops if op.kind == "MVAU" and op.fold.get("ram_style") == "external"]
    named = [op for op in ops if op.finn_name == feeds["layer"]]
    same = [op for op in ops if (op.shape["mw"], op.shape["mh"]) == (feeds["mw"], feeds["mh"])]
    op = (named or (same if len(same) == 1 else [None]))[0]
    if op is None:
        raise OverlayError(f"the weight DMA {ip['name']} feeds FINN's {feeds['layer']}, which is "
                           "no layer the plan streams from DDR")
    layout = {k: int(feeds[k]) for k in ("mw", "mh", "pe", "simd")}
    finn = unpack_external_weights(raw, **layout, dt=feeds["datatype"])
    ours = program[op.node].astype(np.int64)
    rows: dict[bytes, list[int]] = {}
    for k, row in enumerate(ours):
        rows.setdefault(row.tobytes(), []).append(k)
    order = []
    for row in finn:
        taken = rows.get(row.tobytes())
        if not taken:
            raise OverlayError(f"FINN's weights for {op.node} ({ip['name']}.npy) are not the "
                               "emulated fabric's in any order of their rows")
        order.append(taken.pop(0))
    return {"node": op.node, **layout, "datatype": feeds["datatype"],
            "rows": None if order == list(range(len(order))) else order}


def bitstream(ips: list[dict], stage: StagePlan, plan_hash: str, fabric: str,
              weights: Path | None = None, fabric_dir: Path | None = None) -> dict:
    """The emulated PL's configuration for the stage (see the module); ``weights``: the
    driver's ``runtime_weights`` folder, whose files' SHA-256 each weight DMA carries;
    ``fabric_dir``: the saved program, whose weights FINN's files are matched against."""
    from dataclasses import asdict

    from finnchain.fabric.program import weight_codes

    program = None  # the program's weights, read once where a stage has weight DMAs
    dmas = []
    for ip in ips:
        if ip["kind"] != "dma":
            continue
        dma = {"name": ip["name"], "role": ip["role"], "bytes_per_frame": ip["bytes_per_frame"]}
        if ip["role"] == "weights":
            path = (weights or Path()) / f"{ip['name']}.npy"
            if not path.is_file():
                raise OverlayError(f"{path} is missing: FINN's MakePYNQDriver writes a weight "
                                   f"file for the weight DMA {ip['name']}")
            if fabric_dir is None:
                raise OverlayError(f"the weight DMA {ip['name']}: no fabric program to match "
                                   "FINN's weights against")
            program = weight_codes(fabric_dir) if program is None else program
            raw = np.load(path).tobytes()
            dma.update(sha256=hashlib.sha256(raw).hexdigest(),
                       **weight_layout(ip, raw, stage, program))
        dmas.append(dma)
    return {"format": FORMAT, "stage": stage.index, "plan_hash": plan_hash,
            "board": stage.board["kind"], "clock_mhz": stage.board["clock_mhz"],
            "cycles": stage.cycles, "program": fabric,
            "input": asdict(stage.input), "output": asdict(stage.output), "dmas": dmas}


def collect_emulated_overlay(folder: Path, dest: Path, stage: StagePlan,
                             plan_hash: str) -> dict:
    """Into ``dest``: FINN's driver from the build ``folder`` (run to its driver), the
    emulated bitstream and its .hwh; the fabric is in ``dest/fabric`` already. Returns the
    stage's accelerator entry."""
    out = folder / "output"
    report = out / "report" / ZYNQ_REPORT
    if not report.is_file() or not (out / "driver" / "driver.py").is_file():
        raise OverlayError(f"{out} has no FINN driver ({report.name}, driver/driver.py): the "
                           "folder's build did not run to its driver step")
    ips = json.loads(report.read_text())["ips"]
    roles = sorted(ip["role"] for ip in ips if ip["kind"] == "dma")
    if roles.count("input") != 1 or roles.count("output") != 1:
        raise OverlayError(f"FINN's Zynq flow made DMAs {roles}: one input and one output "
                           "DMA were expected")
    shutil.rmtree(dest / "driver", ignore_errors=True)
    shutil.copytree(out / "driver", dest / "driver")
    bits = dest / "bitfile"
    bits.mkdir(parents=True, exist_ok=True)
    (bits / "finn-accel.hwh").write_text(hwh(ips, stage))
    (bits / "finn-accel.bit").write_text(
        json.dumps(bitstream(ips, stage, plan_hash, "../fabric",
                             dest / "driver" / "runtime_weights", dest / "fabric"),
                   indent=1) + "\n")
    return {"kind": "finn", "emulated": True, "bitfile": "bitfile/finn-accel.bit",
            "hwh": "bitfile/finn-accel.hwh", "driver": "driver",
            "model": "fabric/model.onnx", "program": "fabric/program.onnx"}
