"""What an emulated board's PYNQ venv sees of its hardware (finnchain; not imported by finnchain).

Copied by ``finnchain emu`` into the emulated PYNQ image's venv as ``finnchain_pynq_board.py``,
with a ``.pth`` line that imports it when that venv's Python starts (``install``; ``python -m
finnchain.emu.pynq_board`` installs it into the running Python's venv, as ``make board`` does
for the board-side tests); it changes nothing until a program imports ``pynq``. Then, before
pynq's modules run:

- the process sees the machine of the board it is, ``armv7l`` (a Zynq-7000's Cortex-A9): pynq
  picks its code paths by ``os.uname().machine`` (``pynq.ps.CPU_ARCH``: the Zynq-7000's PL
  clocks and ``.hwh`` parser), as it does on a Zedboard;
- and, once pynq is loaded, ``finnchain.emu.pl`` registers the board's emulated PL as a
  ``pynq.Device`` (pynq's ``DeviceMeta``), where a real board's pynq finds its FPGA.

Programs that never import pynq (pip among them) see the machine as it is. Where finnchain is
not installed in the venv yet, pynq finds no device, as on a board without its FPGA.
"""

import importlib.abc
import importlib.machinery
import os
import shutil
import sys
import sysconfig

MACHINE = "armv7l"
NAME = "finnchain_pynq_board"  # its module and .pth file in a venv's site-packages


def install(site_packages: str) -> None:
    """Put this hook into a venv's ``site_packages``: the module and its ``.pth`` line."""
    shutil.copyfile(__file__, os.path.join(site_packages, f"{NAME}.py"))
    with open(os.path.join(site_packages, f"{NAME}.pth"), "w") as f:
        f.write(f"import {NAME}\n")


def _board_uname(real=os.uname):
    r = real()
    return os.uname_result((r.sysname, r.nodename, r.release, r.version, MACHINE))


class _PynqFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "pynq":
            return None
        sys.meta_path.remove(self)
        os.uname = _board_uname
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            try:
                import finnchain.emu.pl  # noqa: F401  (registers the emulated PL)
            except ImportError as exc:
                sys.stderr.write(f"finnchain: no emulated PL on this board ({exc})\n")

        spec.loader.exec_module = exec_module
        return spec



if __name__ == "__main__":
    install(sysconfig.get_paths()["purelib"])
    print(f"the emulated board's pynq hook is in {sysconfig.get_paths()['purelib']}")
elif not any(type(f).__name__ == "_PynqFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, _PynqFinder())
