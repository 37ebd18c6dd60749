"""Emulated boards: Linux hosts of their own on this machine, as freshly flashed PYNQ boards.

``finnchain emu up --boards N`` (root only) makes N boards. Each board is

- a network namespace ``fc-board<i>`` whose ``eth0`` is one end of a veth pair; the other end
  hangs on a bridge (the "switch") in a namespace of its own, ``fc-switch``; the controller
  reaches the switch through ``fc-host``. Addresses come from the loopback range
  (``SUBNET``.0/24, ``route_localnet`` on), so they can never be mistaken for, or leak onto, a
  real network; each link is limited to 1 Gb/s (``tc tbf``) like a board's Ethernet;
- a mount, UTS and PID namespace (``unshare``) in which /etc, /home, /opt, /root, /usr/local
  and /var are overlays (the board's writes land in its own state folder; the machine's files
  are never touched) and /run and /tmp are private;
- the state of a freshly flashed PYNQ image: user ``xilinx`` (password ``xilinx``, in sudo),
  root's password ``xilinx``, the PYNQ venv at ``/usr/local/share/pynq-venv`` (numpy and pyzmq,
  as on the image), ``/etc/network/interfaces.d/eth0`` as PYNQ writes it (DHCP plus the alias
  192.168.2.99), an OpenSSH server on the board's address with password logins, no FPGA.

There is no systemd inside a board (services use LSB init scripts), and the clock is the
machine's. ``emu down`` removes the namespaces, the bridge, the processes (and with them the
mounts) and the state; ``emu status`` lists the boards. ``up`` writes an Ansible inventory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SUBNET = "127.77.0"  # boards are SUBNET.11, .12, ...; the controller is SUBNET.1
HOST_ADDRESS = f"{SUBNET}.1"
FIRST_BOARD = 11
NS_PREFIX = "fc-board"
SWITCH_NS = "fc-switch"
HOST_LINK = "fc-host"
STATE = Path("/var/lib/finnchain-emu")
IMAGE = Path("/var/cache/finnchain-emu/image")  # the PYNQ image's additions, made once
PYNQ_VENV = "/usr/local/share/pynq-venv"
IMAGE_PACKAGES = ["numpy", "pyzmq"]  # what a PYNQ image's venv has that the runtime needs
OVERLAID = ("etc", "home", "opt", "root", "usr/local", "var")
LINK_RATE = "1gbit"
BOOT_SECONDS = 30.0
DEFAULT_INVENTORY = Path("inventory/emulated.yml")

BOOT = r"""
set -e
S="$FC_STATE"
for d in $FC_OVERLAID; do
  mkdir -p "$S/upper/$d" "$S/work/$d"
  lower="/$d"
  if [ -d "$FC_IMAGE/$d" ]; then lower="$FC_IMAGE/$d:/$d"; fi
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$S/upper/$d,workdir=$S/work/$d" "/$d"
done
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
hostname "$FC_NAME"
if [ ! -e /etc/finnchain-emu-board ]; then   # first boot: the state of a fresh PYNQ image
  echo "$FC_NAME" > /etc/hostname
  sed -i "/finnchain-emu/d" /etc/hosts; echo "$FC_ADDRESS $FC_NAME # finnchain-emu" >> /etc/hosts
  id xilinx >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo xilinx
  echo 'xilinx:xilinx' | chpasswd; echo 'root:xilinx' | chpasswd
  rm -f /etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
  ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key
  mkdir -p /etc/ssh/sshd_config.d /etc/network/interfaces.d
  printf 'ListenAddress %s\nPasswordAuthentication yes\nUseDNS no\n' "$FC_ADDRESS" \
    > /etc/ssh/sshd_config.d/99-pynq-image.conf
  printf 'auto eth0\niface eth0 inet dhcp\n\nauto eth0:1\niface eth0:1 inet static\naddress 192.168.2.99\nnetmask 255.255.255.0\n' \
    > /etc/network/interfaces.d/eth0
  printf 'source %s/bin/activate\n' "$FC_VENV" > /etc/profile.d/pynq_venv.sh
  echo "$FC_NAME" > /etc/finnchain-emu-board
fi
mkdir -p /run/sshd
/usr/sbin/sshd
echo "board $FC_NAME up"
exec /usr/bin/python3 -c '
import os, signal, time
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
while True:                     # PID 1 of the board: reap whatever is orphaned
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
'
"""


class EmuError(RuntimeError):
    """The emulated cluster cannot be made or found; the message says why and what to do."""


@dataclass
class Board:
    name: str
    address: str
    netns: str
    veth: str  # its end on the switch
    pid: int  # the unshare process holding the board's namespaces
    state: str


def _run(*cmd: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise EmuError(f"{' '.join(full)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r


def require_root() -> None:
    if os.geteuid() != 0:
        raise EmuError("the emulated cluster needs root (network namespaces, mounts, sshd): "
                       "run this command as root, e.g. with sudo")
    missing = [t for t in ("ip", "unshare", "tc", "/usr/sbin/sshd", "ssh-keygen", "useradd",
                           "chpasswd", "sudo") if not shutil.which(t)]
    if missing:
        raise EmuError(f"missing {', '.join(missing)}: apt-get install iproute2 util-linux "
                       "openssh-server openssh-client passwd sudo")


def _state_file() -> Path:
    return STATE / "cluster.json"


def load() -> list[Board]:
    if not _state_file().is_file():
        return []
    return [Board(**b) for b in json.loads(_state_file().read_text())["boards"]]


def make_image(progress=print) -> Path:
    """The PYNQ image's venv (numpy, pyzmq), built once with the system Python and cached.

    The venv is made at its final path, ``/usr/local/share/pynq-venv``, inside a throwaway
    mount namespace whose /usr/local is an overlay with ``IMAGE/usr/local`` as its upper
    layer: the machine's /usr/local is not touched, and the boards mount that layer."""
    marker = IMAGE / ".complete"
    if marker.is_file():
        return IMAGE
    progress(f"making the PYNQ image's venv once ({', '.join(IMAGE_PACKAGES)}) in {IMAGE} ...")
    shutil.rmtree(IMAGE, ignore_errors=True)
    upper, work = IMAGE / "usr" / "local", IMAGE.parent / "work"
    upper.mkdir(parents=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    python = "/usr/bin/python3"
    if not Path(python).is_file():
        raise EmuError("the boards need the system Python at /usr/bin/python3 "
                       "(apt-get install python3 python3-venv)")
    script = (f"mount -t overlay overlay -o lowerdir=/usr/local,upperdir={upper},workdir={work}"
              f" /usr/local && {python} -m venv {PYNQ_VENV} && "
              f"{PYNQ_VENV}/bin/pip install --quiet {' '.join(IMAGE_PACKAGES)}")
    _run("unshare", "--mount", "--propagation", "private", "bash", "-c", script)
    shutil.rmtree(work, ignore_errors=True)
    marker.write_text("ok\n")
    return IMAGE


def _address(i: int) -> str:
    return f"{SUBNET}.{FIRST_BOARD + i}"


def _wait_ssh(board: Board, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((board.address, 22), timeout=0.5) as s:
                if s.recv(4) == b"SSH-":
                    return
        except OSError:
            time.sleep(0.05)
    log = Path(board.state) / "boot.log"
    tail = log.read_text(errors="replace")[-800:] if log.is_file() else ""
    raise EmuError(f"{board.name} ({board.address}) did not start sshd in time:\n{tail}")


def up(count: int, inventory: Path = DEFAULT_INVENTORY, progress=print) -> list[Board]:
    """Make ``count`` boards and write their inventory; returns them."""
    require_root()
    if count < 1 or count > 200:
        raise EmuError("--boards must be between 1 and 200")
    existing = load()
    if existing:
        raise EmuError(f"a cluster of {len(existing)} boards is already up: "
                       "`finnchain emu down` first (or `finnchain emu status`)")
    image = make_image(progress)
    STATE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    boards: list[Board] = []
    try:
        _run("ip", "netns", "add", SWITCH_NS)
        _run("ip", "link", "add", "br0", "type", "bridge", netns=SWITCH_NS)
        _run("ip", "link", "set", "br0", "up", netns=SWITCH_NS)
        _run("ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", "host0", "netns",
             SWITCH_NS)
        _run("ip", "link", "set", "host0", "master", "br0", "up", netns=SWITCH_NS)
        _run("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", HOST_LINK)
        _run("sysctl", "-qw", f"net.ipv4.conf.{HOST_LINK}.route_localnet=1")
        _run("ip", "link", "set", HOST_LINK, "up")
        for i in range(count):
            boards.append(_board(i, image))
        _save(boards)
        deadline = time.monotonic() + BOOT_SECONDS
        for b in boards:
            _wait_ssh(b, deadline)
    except BaseException:
        _save(boards)
        down(progress=lambda *_: None)
        raise
    write_inventory(boards, inventory)
    progress(f"{count} boards up in {time.monotonic() - t0:.1f} s; inventory {inventory}")
    return boards


def _board(i: int, image: Path) -> Board:
    name, ns, veth = f"board{i + 1}", f"{NS_PREFIX}{i + 1}", f"fcb{i + 1}"
    address = _address(i)
    state = STATE / name
    state.mkdir(parents=True, exist_ok=True)
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", veth,
         "netns", SWITCH_NS)
    _run("ip", "link", "set", veth, "master", "br0", "up", netns=SWITCH_NS)
    for cmd in (("ip", "link", "set", "lo", "up"),
                ("ip", "addr", "add", f"{address}/24", "dev", "eth0"),
                ("sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1",
                 "net.ipv4.conf.eth0.route_localnet=1"),
                ("ip", "link", "set", "eth0", "up"),
                ("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", LINK_RATE,
                 "burst", "256kb", "latency", "50ms")):
        _run(*cmd, netns=ns)
    env = {**os.environ, "FC_STATE": str(state), "FC_OVERLAID": " ".join(OVERLAID),
           "FC_IMAGE": str(image), "FC_NAME": name, "FC_ADDRESS": address, "FC_VENV": PYNQ_VENV}
    with open(state / "boot.log", "wb") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--kill-child", "--mount-proc", "--propagation", "private", "bash", "-c", BOOT],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Board(name, address, ns, veth, proc.pid, str(state))


def _save(boards: list[Board]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps({"boards": [asdict(b) for b in boards]}, indent=1))


def down(progress=print) -> int:
    """Remove what ``up`` made; returns the number of boards removed."""
    require_root()
    boards = load()
    for b in boards:
        try:
            os.kill(b.pid, signal.SIGKILL)  # --kill-child takes the board's PID 1 with it
        except ProcessLookupError:
            pass
    for b in boards:
        _run("ip", "netns", "del", b.netns, check=False)
    _run("ip", "netns", "del", SWITCH_NS, check=False)
    _run("ip", "link", "del", HOST_LINK, check=False)
    shutil.rmtree(STATE, ignore_errors=True)
    progress(f"removed {len(boards)} boards, the switch and their state")
    return len(boards)


def status() -> list[dict]:
    out = []
    for b in load():
        alive = Path(f"/proc/{b.pid}").exists()
        try:
            with socket.create_connection((b.address, 22), timeout=0.5):
                ssh = True
        except OSError:
            ssh = False
        out.append({**asdict(b), "running": alive, "ssh": ssh})
    return out


def write_inventory(boards: list[Board], path: Path) -> Path:
    """An Ansible inventory of the boards, in chain order, ready for ``deploy.yml``."""
    lines = [
        "# Written by `finnchain emu up`: the emulated boards, in chain order (stage 0 first).",
        "# The group and variable names are those of inventory/zedboards.example.yml.",
        "all:",
        "  children:",
        "    boards:",
        "      hosts:",
    ]
    for b in boards:
        lines += [f"        {b.name}:", f"          ansible_host: {b.address}",
                  f"          finnchain_address: {b.address}"]
    lines += [
        "      vars:",
        "        ansible_user: xilinx",
        "        ansible_password: xilinx          # a fresh PYNQ image; provisioning replaces it",
        "        ansible_become_password: xilinx",
        "        ansible_ssh_private_key_file: ~/.ssh/finnchain_ed25519   # installed by provisioning",
        "        ansible_python_interpreter: /usr/bin/python3",
        "        ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "        finnchain_emulated: true          # no FPGA, no systemd, addresses set by emu",
        "        finnchain_prefix: 24",
        f"        finnchain_gateway: {HOST_ADDRESS}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main_up(args) -> int:
    try:
        up(args.boards, Path(args.inventory))
    except EmuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main_down(args) -> int:
    try:
        down()
    except EmuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main_status(args) -> int:
    boards = status()
    if not boards:
        print("no emulated cluster is up")
        return 0
    for b in boards:
        state = "running" if b["running"] else "STOPPED"
        print(f"{b['name']:8} {b['address']:14} {state:8} ssh {'up' if b['ssh'] else 'DOWN'}")
    return 0 if all(b["running"] and b["ssh"] for b in boards) else 1
