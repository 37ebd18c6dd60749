"""TEST STAND-IN for PYNQ on a board whose FPGA fabric is emulated bit-exactly.

FINN's generated driver (its real ``driver_base.py``) uses ``Overlay``, ``allocate`` and the
IODMA registers (0x10 buffer address, 0x1C batch size, 0x00 start; status bit 0x2 done, 0x4
idle). Here the "bitstream" is a stage folder: its ``fabric/`` holds the stage's emulated
program (``program.onnx``, what ``build --target emulate`` writes). Starting the input DMA runs
the fabric on what the DMA buffer holds, read exactly as FINN's hardware reads it: the packed
*folded* tensor of the driver's io_shape_dict, each innermost folded group packed and padded to
whole bytes (finnchain's ``pack`` on the folded shape, which the tests check equals FINN's
``finnpy_to_packed_bytearray``), and writes the result into the output DMA buffer the same way.
"""

import json
from pathlib import Path

import numpy as np

_BUFFERS = {}  # device address -> buffer


class PynqBuffer(np.ndarray):
    device_address = 0

    def flush(self):
        pass

    def invalidate(self):
        pass


def allocate(shape, dtype=np.uint8, cacheable=True, target=None):
    buf = np.zeros(shape, dtype=dtype).view(PynqBuffer)
    buf.device_address = 0x10000000 + 0x1000000 * len(_BUFFERS)
    _BUFFERS[buf.device_address] = buf
    return buf


class _IODMA:
    def __init__(self, overlay, output):
        self.overlay, self.output, self.regs = overlay, output, {0x00: 0x4}

    def write(self, offset, value):
        self.regs[offset] = value
        if offset == 0x00 and value & 1:
            if self.output:
                self.regs[0x00] = 0x0  # running until the input side delivers
            else:
                self.overlay._run(_BUFFERS[self.regs[0x10]], self.regs[0x1C])

    def read(self, offset):
        return self.regs.get(offset, 0)


class Overlay:
    def __init__(self, bitfile_name, download=True, device=None):
        self.bitfile_name = bitfile_name
        self.device = device
        self.ip_dict = {}
        stage_dir = Path(bitfile_name).resolve().parent.parent
        self._fabric_dir = stage_dir / "fabric"
        self._stage = json.loads((stage_dir / "stage.json").read_text())
        self.idma0, self.odma0 = _IODMA(self, False), _IODMA(self, True)
        self.runs = 0

    def _run(self, ibuf, n):
        from finnchain.fabric.program import Runner
        from finnchain.graph.pack import pack, unpack

        io = self._io_shape_dict
        idt, odt = io["idt"][0].name, io["odt"][0].name
        ifold = (n, *io["ishape_folded"][0][1:])
        x = unpack(np.asarray(ibuf[:n]).reshape(-1), idt, ifold)
        x = x.reshape(n, *io["ishape_normal"][0][1:])
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)  # the fabric's program takes NCHW codes
        elif len(self._stage["input"]["shape"]) == 4:  # a flat NHWC vector into a dense layer
            _, c, h, w = self._stage["input"]["shape"]
            x = x.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        y = np.asarray(Runner.load(self._fabric_dir).run(x.astype(np.int64)))
        if y.ndim == 4:
            y = y.transpose(0, 2, 3, 1)
        out = pack(y.reshape(n, *io["oshape_folded"][0][1:]), odt)
        obuf = _BUFFERS[self.odma0.regs[0x10]]
        obuf[:n] = out.reshape(obuf[:n].shape)
        self.odma0.regs[0x00] = 0x2 | 0x4
        self.runs += 1
