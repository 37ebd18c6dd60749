"""The programmable logic of an emulated board, behind the ``pynq`` library's device API.

On a Zedboard every frame goes through FINN's generated driver (``FINNExampleOverlay``), the
``pynq`` library (``Overlay``, ``allocate``, MMIO, ``Clocks``) and the IODMA registers of the
bitstream. On an emulated board the same code runs, unchanged, down to the register writes;
only the device behind pynq differs: ``EmulatedPL``, a ``pynq.Device`` (registered through
pynq's ``DeviceMeta`` with ``_probe_`` and ``_probe_priority_``, the seam PYNQ's own tests use)
whose

- **bitstream** is a stage's emulated overlay (``finn.overlay``): ``finn-accel.bit`` holds the
  configuration the hardware would carry (the DMAs with their directions and bytes per frame,
  the stage's cycles per frame, the fabric program it computes with) and ``finn-accel.hwh``
  the block design as FINN's Zynq flow makes it, which pynq's own parser reads (the IP names
  ``idma0``, ``odma0``, any weight DMAs, and their address ranges);
- **registers** are the IODMAs' as FINN's IODMA HLS core has them (``ap_ctrl`` at 0x00: start
  bit 0, done bit 1 cleared on read, idle bit 2; the buffer's address at 0x10; the frames at
  0x1C) and the Zynq-7000 SLCR's clock registers (0xF8000000), so that ``Clocks.fclk0_mhz``
  sets the PL clock the run is paced by;
- **memory** is DDR behind the ARM's caches: ``allocate`` gives buffers with device
  addresses, and a DMA reads what the last ``flush`` (``sync_to_device``) put into DDR and
  writes what the next ``invalidate`` (``sync_from_device``) brings back, as on the board;
- **fabric** computes a transfer once its input, output and weight DMAs have all been
  started with the same number of frames: the input read from DDR, the stage's integer program
  run on it (``finnchain.fabric``), the result written to DDR at the output DMA's address. A
  weight DMA (an MVAU with external weights; burst mode ``wrap``) reads its buffer once for
  every frame, and the fabric computes with what it read: FINN's weight words decoded
  (``graph.pack.unpack_external_weights``) and FINN's rows put in the program's order (the
  bitstream holds both, found at build time by decoding FINN's own weight file), replacing the
  program's weights of that layer. Weights of another build, or never flushed, therefore give
  what a board would compute with them; the PL logs that they are not the build's. The
  output DMA reports done only once the plan's cycles per frame have passed at the PL clock:
  the pacing the emulated board's accelerator used to add itself.

A transfer the hardware could not complete hangs as the hardware would: a DMA started with no
buffer at its address, with a buffer too small for its frames, with frame counts that differ,
or while it is still running never reports done. The reason is logged (``finnchain.emu.pl``)
and kept in ``EmulatedPL.faults``; the driver sees only its registers, as on a board.

Imported on emulated boards only (``emu.board``, when pynq is first imported); a real board's
pynq finds its own ``EmbeddedDevice``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.metadata.runtime_metadata_parser import RuntimeMetadataParser
from pynq.pl_server.hwh_parser import HWH, get_hwh_name
from pynqmetadata.frontends import Metadata

import pynq
from finnchain.fabric.bitstream import FORMAT

log = logging.getLogger("finnchain.emu.pl")

# IODMA registers (FINN's IODMA HLS core, ap_ctrl_hs and its s_axi_control arguments)
CTRL, ADDR, REPS = 0x00, 0x10, 0x1C
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4
# The Zynq-7000 SLCR's clock registers, as a board boots (PS reference clock 50 MHz, as pynq's
# _ClocksZynq assumes): ARM PLL 1300 MHz, DDR PLL 1050 MHz, IO PLL 1000 MHz, CPU at 650 MHz,
# FCLK0 at 100 MHz from the IO PLL (divisors 5 and 2)
SLCR_BASE, SLCR_SIZE = 0xF8000000, 0x200
SLCR_RESET = {0x100: 26 << 12, 0x104: 21 << 12, 0x108: 20 << 12, 0x120: (2 << 8),
              0x170: (2 << 20) | (5 << 8), 0x180: (2 << 20) | (5 << 8),
              0x190: (2 << 20) | (5 << 8), 0x1A0: (2 << 20) | (5 << 8)}
PS_REF_MHZ = 50.0
DDR_BASE = 0x1000_0000  # where allocations start (the PS DDR of a Zynq-7000)
DDR_SIZE = 0x1000_0000  # 256 MiB for buffers, about what a 512 MB board leaves to them


class WeightsError(RuntimeError):
    """A weight DMA's bytes that cannot be read as the bitstream lays them out (raised at the
    register write that starts the transfer, as a bus error is)."""


class BitstreamError(ValueError):
    """An emulated overlay that cannot be loaded; the message names the file and the field
    (a ValueError: refused at the stage's start, as any overlay that is not the plan's)."""


@dataclass
class _Allocation:
    base: int
    size: int
    ddr: bytearray
    freed: bool = False

    def free(self) -> None:
        self.freed, self.ddr = True, bytearray()


@dataclass
class Dma:
    """One IODMA of the loaded overlay: its registers and its place in the stage."""

    name: str
    base: int
    span: int
    role: str  # "input", "output" or "weights"
    bytes_per_frame: int
    sha256: str = ""  # a weight DMA's: of the weights the build's driver loads
    layout: dict = field(default_factory=dict)  # a weight DMA's: node, FINN's words, row order
    regs: dict[int, int] = field(default_factory=dict)
    running: bool = False
    done: bool = False
    started_at: float = 0.0
    done_at: float = 0.0
    hung: str | None = None  # why it never finishes

    def ctrl(self, now: float) -> int:
        if self.hung or (self.running and not self.done):
            return 0
        if self.running and self.done and now < self.done_at:
            return 0
        return AP_IDLE | (AP_DONE if self.done else 0)


def _slcr_pll(regs: dict[int, int], offset: int) -> float:
    return PS_REF_MHZ * ((regs[offset] >> 12) & 0x7F)


class EmulatedPL(pynq.Device):
    """The emulated board's PL (see the module): one device, found by pynq's probe."""

    _probe_priority_ = 40

    @classmethod
    def _probe_(cls):
        return [cls()]

    def __init__(self) -> None:
        super().__init__("finnchain-emulated-pl")
        self.name = "finnchain-emulated-pl"
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False, "CALLABLE": False}
        self.slcr = dict(SLCR_RESET)
        self.allocations: dict[int, _Allocation] = {}
        self._next = DDR_BASE
        self.dmas: dict[str, Dma] = {}
        self.fabric = None  # the stage's EmulatedAccelerator, once an overlay is loaded
        self.cycles = 0
        self.faults: list[str] = []
        self._build_weights = self._weights_key = ()  # the weight DMAs' bytes (their SHA-256)
        self.transfers = 0
        self.last_transfer: dict = {}  # frames, seconds (paced), fclk_mhz
        self.bitfile_name = None
        self.timestamp = None

    # -- the bitstream ----------------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False):
        """The block design from the .hwh beside the bitstream, parsed as a board's pynq
        parses a full bitstream's (pynqmetadata's HWH front end)."""
        hwh = Path(get_hwh_name(bitfile_name))
        if not hwh.is_file():
            raise BitstreamError(f"{bitfile_name} has no {hwh.name} beside it: pynq reads a "
                                 "bitstream's block design from its .hwh (FINN's build writes "
                                 "both into bitfile/)")
        if partial:
            return HWH(str(hwh))
        parser = RuntimeMetadataParser(Metadata(input=hwh))
        parser.refresh_hierarchy_dict()
        return parser

    def download(self, bitstream, parser=None) -> None:
        """Load an emulated overlay: its configuration (the .bit), the DMAs the .hwh places."""
        from finnchain.runtime.accel import EmulatedAccelerator

        path = Path(bitstream.bitfile_name)
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BitstreamError(f"{path} is not an emulated overlay's bitstream (a board "
                                 f"without an FPGA loads only those): {exc}") from exc
        if config.get("format") != FORMAT:
            raise BitstreamError(f"{path}: format is {config.get('format')!r}, not {FORMAT!r}")
        ip = (parser or self.parser).ip_dict
        dmas = {}
        for d in config["dmas"]:
            if d["name"] not in ip:
                raise BitstreamError(
                    f"{get_hwh_name(str(path))}: the block design has no IP {d['name']!r}, "
                    f"which the bitstream's {d['role']} DMA is (it has "
                    f"{', '.join(sorted(k for k in ip if ip[k].get('phys_addr')))})")
            dmas[d["name"]] = Dma(d["name"], int(ip[d["name"]]["phys_addr"]),
                                  int(ip[d["name"]]["addr_range"]), d["role"],
                                  int(d["bytes_per_frame"]), d.get("sha256", ""),
                                  {k: d[k] for k in ("node", "mw", "mh", "pe", "simd",
                                                     "datatype", "rows") if k in d})
        fabric = path.parent / config["program"]
        from finnchain.fabric.program import Runner

        self.fabric = EmulatedAccelerator(Runner.load(fabric, threads=1), config["input"],
                                          config["output"])
        self.dmas, self.cycles, self.config = dmas, int(config["cycles"]), config
        # the program computes with the build's weights: no decoding while the DMAs read them
        self._build_weights = self._weights_key = tuple(
            d.sha256 for _, d in sorted(dmas.items()) if d.role == "weights")
        self.bitfile_name = str(path)
        self.timestamp = time.strftime("%Y/%m/%d %H:%M:%S")

    def gen_cache(self, bitstream, parser=None) -> None:
        pass

    def close(self) -> None:
        pass

    # -- clocks ------------------------------------------------------------------------------
    @property
    def fclk0_mhz(self) -> float:
        """The PL clock the SLCR sets (IO PLL over FPGA0_CLK_CTRL's two divisors)."""
        ctrl = self.slcr[0x170]
        pll = (0x108, 0x108, 0x100, 0x104)[(ctrl >> 4) & 0x3]
        div0, div1 = (ctrl >> 8) & 0x3F, (ctrl >> 20) & 0x3F
        return _slcr_pll(self.slcr, pll) / max(1, div0) / max(1, div1)

    # -- registers ---------------------------------------------------------------------------
    def _dma_at(self, address: int, length: int) -> Dma:
        for d in self.dmas.values():
            if d.base <= address and address + length <= d.base + d.span:
                return d
        ips = ", ".join(f"{d.name} at 0x{d.base:08x}" for d in self.dmas.values())
        raise RuntimeError(f"bus error: no IP of the loaded overlay at 0x{address:08x} "
                           f"({ips or 'no overlay loaded'})")

    def read_registers(self, address: int, length: int) -> bytes:
        if SLCR_BASE <= address < SLCR_BASE + SLCR_SIZE:
            return self.slcr.get(address - SLCR_BASE, 0).to_bytes(4, "little")[:length]
        dma = self._dma_at(address, length)
        offset = address - dma.base
        if offset == CTRL:
            value = dma.ctrl(time.monotonic())
            if value & AP_DONE:
                dma.done = False  # ap_done is cleared on read
                dma.running = False
        else:
            value = dma.regs.get(offset, 0)
        return value.to_bytes(4, "little")[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        value = int.from_bytes(bytes(data), "little")
        if SLCR_BASE <= address < SLCR_BASE + SLCR_SIZE:
            self.slcr[address - SLCR_BASE] = value
            return
        dma = self._dma_at(address, len(data))
        offset = address - dma.base
        if offset != CTRL:
            dma.regs[offset] = value
        elif value & AP_START:
            self._start(dma)

    # -- DDR -------------------------------------------------------------------------------
    def allocate(self, shape, dtype, **kwargs) -> PynqBuffer:
        """A buffer in the board's DDR (page-aligned, as the CMA allocator gives them; the
        range of a freed buffer of at least that size is given again)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        span = max(0x1000, (nbytes + 0xFFF) & ~0xFFF)
        reuse = next((a for a in self.allocations.values()
                      if a.freed and ((a.size + 0xFFF) & ~0xFFF) >= span), None)
        if reuse is not None:
            base = reuse.base
        else:
            base, self._next = self._next, self._next + span
            if self._next > DDR_BASE + DDR_SIZE:
                raise RuntimeError("the emulated board's DDR for buffers is full "
                                   f"({DDR_SIZE >> 20} MiB)")
        alloc = _Allocation(base, nbytes, bytearray(nbytes))
        self.allocations[base] = alloc
        buf = PynqBuffer(shape, dtype, device=self, device_address=base, bo=base,
                         coherent=False)
        weakref.finalize(buf, alloc.free)
        return buf

    def flush(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        """The ARM's caches written back: DDR now holds what the CPU wrote."""
        alloc = self.allocations[bo]
        alloc.ddr[offset: offset + length] = ctypes.string_at(vaddr, length)

    def invalidate(self, bo: int, offset: int, vaddr: int, length: int) -> None:
        """The ARM's caches dropped: the CPU now reads what is in DDR."""
        alloc = self.allocations[bo]
        chunk = (ctypes.c_char * length).from_buffer(alloc.ddr, offset)
        ctypes.memmove(vaddr, chunk, length)

    def _buffer(self, dma: Dma, nbytes: int) -> tuple[_Allocation, int] | str:
        """The allocation and offset a DMA's transfer of ``nbytes`` touches, or why none."""
        address = dma.regs.get(ADDR, 0)
        for alloc in self.allocations.values():
            if alloc.base <= address < alloc.base + max(1, alloc.size):
                if alloc.freed:
                    return f"the buffer at 0x{address:08x} was freed"
                if address + nbytes > alloc.base + alloc.size:
                    return (f"the buffer at 0x{address:08x} holds "
                            f"{alloc.base + alloc.size - address} bytes, the transfer "
                            f"{nbytes}")
                return alloc, address - alloc.base
        return f"no buffer at 0x{address:08x} (0x10 never set, or not allocated)"

    # -- the fabric ------------------------------------------------------------------------------
    def _hang(self, dmas: list[Dma], why: str) -> None:
        for d in dmas:
            d.hung = why
        self.faults.append(why)
        log.warning("emulated PL: the transfer hangs: %s", why)

    def _start(self, dma: Dma) -> None:
        if dma.hung:
            return
        if dma.running and (not dma.done or time.monotonic() < dma.done_at):
            self._hang([dma], f"{dma.name} started again before its transfer finished")
            return
        dma.running, dma.done, dma.started_at = True, False, time.monotonic()
        group = list(self.dmas.values())
        if all(d.running and not d.done for d in group):
            self._transfer(group)

    def _transfer(self, group: list[Dma]) -> None:
        frames = {d.name: d.regs.get(REPS, 0) for d in group}
        n = frames[group[0].name]
        if len(set(frames.values())) != 1 or n < 1:
            self._hang(group, "the DMAs were started for different frame counts (0x1C): "
                       + ", ".join(f"{k} {v}" for k, v in frames.items()))
            return
        spans = {}
        for d in group:
            # a weight DMA (burst mode wrap) reads its one buffer again for every frame
            nbytes = d.bytes_per_frame * (1 if d.role == "weights" else n)
            where = self._buffer(d, nbytes)
            if isinstance(where, str):
                self._hang(group, f"{d.name} ({d.role}, {n} frames of {d.bytes_per_frame} "
                           f"bytes): {where}")
                return
            spans[d.name] = (where, nbytes)
        weights = {}
        for d in group:
            if d.role == "weights":
                (alloc, offset), nbytes = spans[d.name]
                weights[d.name] = bytes(alloc.ddr[offset: offset + nbytes])
        self._load_weights(group, weights)
        roles = {d.role: d.name for d in group}
        (alloc, offset), nbytes = spans[roles["input"]]
        payload = bytes(alloc.ddr[offset: offset + nbytes])
        out = self.fabric.run(payload, n)
        (alloc, offset), nbytes = spans[roles["output"]]
        alloc.ddr[offset: offset + nbytes] = bytes(out)
        start = max(d.started_at for d in group)  # the transfer runs once every DMA runs
        seconds = n * self.cycles / (self.fclk0_mhz * 1e6)
        for d in group:
            d.done, d.done_at = True, start + seconds
        self.transfers += 1
        self.last_transfer = {"frames": n, "seconds": seconds, "fclk_mhz": self.fclk0_mhz}

    def _load_weights(self, group: list[Dma], weights: dict[str, bytes]) -> None:
        """The fabric computes with what the weight DMAs read (FINN's words decoded, FINN's
        rows put in the program's order); decoded again only when the bytes change."""
        key = tuple(hashlib.sha256(weights[k]).hexdigest() for k in sorted(weights))
        if not weights or key == self._weights_key:
            return
        from finnchain.graph.pack import PackError, unpack_external_weights

        codes = {}
        for d in group:
            if d.role != "weights":
                continue
            lay = d.layout
            try:
                finn = unpack_external_weights(weights[d.name], lay["mw"], lay["mh"], lay["pe"],
                                               lay["simd"], lay["datatype"])
            except (KeyError, PackError) as exc:
                why = f"{d.name}: its weights cannot be read as the bitstream lays them out: {exc}"
                for x in group:
                    x.running = False
                self.faults.append(why)
                log.error("emulated PL: %s", why)
                raise WeightsError(why) from exc
            ours = np.empty_like(finn)
            ours[lay["rows"] if lay.get("rows") is not None else slice(None)] = finn
            codes[lay["node"]] = ours
        self.fabric.executor.with_weights(codes)
        self._weights_key = key
        if key != self._build_weights:
            log.warning("emulated PL: the weight DMAs read weights other than the build's "
                        "(%s): computing with them", ", ".join(sorted(weights)))

    def describe(self) -> str:
        """The DMAs' registers, as the driver sees them (for a timeout's message)."""
        now = time.monotonic()
        return "; ".join(f"{d.name} ctrl=0x{d.ctrl(now):x} addr=0x{d.regs.get(ADDR, 0):08x} "
                         f"frames={d.regs.get(REPS, 0)}" for d in self.dmas.values())
