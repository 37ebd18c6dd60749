"""A small disk image with a PYNQ image's layout, for the SD-card tests (no PYNQ image can be
downloaded here): an MBR with a FAT32 boot partition (label PYNQ) and an ext4 root holding the
paths the seeding touches, as PYNQ v3 has them (user xilinx, uid 1000; ifupdown's interfaces.d
with DHCP on eth0 and the 192.168.2.99 alias; hostname pynq; the image's SSH host keys, shared
by every card flashed from it; sudoers.d)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

MIB = 1 << 20
BOOT_MIB, ROOT_MIB = 8, 24
ROOT_FILES = {
    "etc/hostname": "pynq\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tpynq\n",
    "etc/passwd": ("root:x:0:0:root:/root:/bin/bash\n"
                   "xilinx:x:1000:1000:Xilinx:/home/xilinx:/bin/bash\n"),
    "etc/group": "root:x:0:\nxilinx:x:1000:\n",
    "etc/network/interfaces.d/eth0": ("auto eth0\niface eth0 inet dhcp\n\nauto eth0:1\n"
                                      "iface eth0:1 inet static\naddress 192.168.2.99\n"
                                      "netmask 255.255.255.0\n"),
    "home/xilinx/.bashrc": "source /etc/profile.d/pynq_venv.sh\n",
    # the image's own host keys, the same on every card flashed from it (stand-in bytes)
    "etc/ssh/ssh_host_rsa_key": "image key\n",
    "etc/ssh/ssh_host_rsa_key.pub": "ssh-rsa AAAAimage\n",
    "etc/ssh/ssh_host_ed25519_key": "image key\n",
    "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAAimage\n",
    "etc/sudoers.d/README": "# sudo drop-ins\n",
}


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def make(path: Path) -> Path:
    """Write the image to ``path`` (about 33 MiB, sparse); returns it."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for rel, text in ROOT_FILES.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        for d in (root / "home/xilinx", root / "home/xilinx/.bashrc"):
            os.chown(d, 1000, 1000)
        boot, rootfs = Path(tmp) / "boot.fat", Path(tmp) / "root.ext4"
        _run("mkfs.vfat", "-C", "-n", "PYNQ", str(boot), str(BOOT_MIB * 1024))
        _run("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(rootfs),
             f"{ROOT_MIB}M")
        with open(path, "wb") as f:
            f.truncate((1 + BOOT_MIB + ROOT_MIB) * MIB)
        table = (f"label: dos\nstart=2048, size={BOOT_MIB * 2048}, type=c, bootable\n"
                 f"start={(1 + BOOT_MIB) * 2048}, size={ROOT_MIB * 2048}, type=83\n")
        subprocess.run(["sfdisk", "-q", str(path)], input=table.encode(), check=True,
                       capture_output=True)
        for fs, start in ((boot, 1), (rootfs, 1 + BOOT_MIB)):
            _run("dd", f"if={fs}", f"of={path}", "bs=1M", f"seek={start}", "conv=notrunc,sparse",
                 "status=none")
    return path
