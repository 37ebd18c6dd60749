"""Emulated boards: Linux hosts of their own on this machine, as freshly flashed PYNQ boards.

``finnchain emu up --boards N`` (root only) makes N boards. Each board is

- a network namespace ``fc-board<i>`` whose ``eth0`` is one end of a veth pair; the other end
  hangs on a bridge (the "switch") in a namespace of its own, ``fc-switch``; the controller
  reaches the switch through ``fc-host``. Addresses come from the loopback range
  (``SUBNET``.0/24, ``route_localnet`` on), so they can never be mistaken for, or leak onto, a
  real network; each link is limited to 1 Gb/s (``tc tbf``) like a board's Ethernet;
- a mount, UTS and PID namespace (``unshare``) in which /etc, /home, /opt, /root, /usr/bin,
  /usr/local and /var are overlays (the board's writes land in its own state folder; the
  machine's files are never touched) and /run and /tmp are private (``emu/boot.sh``, then
  ``emu/init.py`` as the board's PID 1: package files, read by shellcheck and ruff);
- the state of a freshly flashed PYNQ image: user ``xilinx`` (password ``xilinx``, in sudo),
  root's password ``xilinx``, the PYNQ venv at ``/usr/local/share/pynq-venv`` (numpy and pyzmq,
  as on the image), ``/etc/network/interfaces.d/eth0`` as PYNQ writes it (DHCP plus the alias
  192.168.2.99), an OpenSSH server on the board's address with password logins, no FPGA.

There is no systemd inside a board (services use LSB init scripts; ``systemctl`` is removed in
the board's /usr/bin overlay, so tools see a sysvinit host), and a boot starts only what was
installed on the board and enabled in its ``/etc/rc2.d``, as sysvinit would: never the machine's
own services (a PYNQ image runs sshd and what the deployment installs, nothing else). The clock
is the machine's. ``emu down`` removes the namespaces, the bridge, the processes (and with them
the mounts) and the state; ``emu status`` lists the boards.

``up`` writes an Ansible inventory of the boards (hosts only: the shared names live in the
inventory folder's ``group_vars``) and, as seeding an SD card per board does for real boards
(``playbooks/sdcard.yml``), gives each board its own SSH host key, records it in the
controller's ``~/.ssh/finnchain_known_hosts`` (under the board's name and address; every
connection of the deployment checks it) and installs the operator's public key for
``xilinx``: the first contact is by key, with the host verified. ``--stock`` leaves the
operator's key out: a board as a stock
image comes, reachable with its default password only.

Faults, for tests and drills: ``emu link BOARD down|up`` takes a board's Ethernet link down or
up inside its namespace (its processes live on); ``emu power BOARD off`` kills every process of
the board (as pulling its plug would) and takes its link down; ``emu power BOARD on`` boots it
again from its state, or with ``--fresh`` from a freshly flashed image (a replacement board);
``--sdcard IMG`` boots it from a card seeded by ``playbooks/sdcard.yml``: the card's hostname,
static address, authorized SSH keys and marker are those the board comes up with.
``emu heat BOARD CELSIUS|default`` sets the air around a board: its emulated XADC (kept by its
PID 1, ``emu/init.py``) reports a die that much warmer, plus what its load adds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
# what a PYNQ image's venv has that the runtime needs (pynq 3.0.1 needs numpy 1, as the image's)
IMAGE_PACKAGES = ["numpy<2", "pyzmq"]
IMAGE_VERSION = "2"  # the image is made again when this changes (2: the emulated PL's hook)
OVERLAID = ("etc", "home", "opt", "root", "usr/bin", "usr/local", "var")
LINK_RATE = "1gbit"
BOOT_SECONDS = 30.0
DEFAULT_INVENTORY = Path("inventory/emulated.yml")
# the board's system monitor, as emu/init.py (its PID 1) keeps it: an iio folder of its own,
# and the air around it (emu heat); passed to init.py as FC_IIO and FC_AMBIENT
EMU_IIO = "/var/lib/finnchain-board/iio"
EMU_AMBIENT = "/var/lib/finnchain-board/ambient"


def known_hosts_path(inventory: Path) -> Path:
    """The known_hosts file the deployment's connections check: ``UserKnownHostsFile`` in the
    SSH options of the inventory's ``group_vars/all.yml`` (one place for it)."""
    import yaml

    from finnchain.ops.inventory import known_hosts

    shared = inventory.parent / "group_vars" / "all.yml"
    found = (yaml.safe_load(shared.read_text()) or {}) if shared.is_file() else {}
    return Path(known_hosts(found.get("ansible_ssh_common_args", ""))).expanduser()

OPERATOR_KEY = "~/.ssh/finnchain_ed25519"
CARD_ROOT_PARTITION = 2  # a PYNQ image: FAT boot partition, then the ext4 root
# what a card seeded by playbooks/sdcard.yml sets, relative to its root filesystem
CARD_FILES = ("etc/hostname", "etc/hosts", "etc/network/interfaces.d/eth0",
              "etc/finnchain-board.json", "home/xilinx/.ssh", "etc/ssh/ssh_host_ed25519_key",
              "etc/ssh/ssh_host_ed25519_key.pub")

HERE = Path(__file__).resolve().parent
BOOT = HERE / "boot.sh"  # the board's boot (bash), read as text: mounts change under it
INIT = HERE / "init.py"  # the board's PID 1 once booted


class EmuError(RuntimeError):
    """The emulated cluster cannot be made or found; the message says why and what to do."""


@dataclass
class EmulatedBoard:
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


def load() -> list[EmulatedBoard]:
    if not _state_file().is_file():
        return []
    return [EmulatedBoard(**b) for b in json.loads(_state_file().read_text())["boards"]]


def make_image(progress=print) -> Path:
    """The PYNQ image's venv (numpy, pyzmq), built once with the system Python and cached.

    The venv is made at its final path, ``/usr/local/share/pynq-venv``, inside a throwaway
    mount namespace whose /usr/local is an overlay with ``IMAGE/usr/local`` as its upper
    layer: the machine's /usr/local is not touched, and the boards mount that layer. In place
    of a board's FPGA the venv gets the emulated PL's hook (``emu/pynq_board.py`` and a
    ``.pth`` line): once the deployment has installed pynq and finnchain there, pynq finds
    the emulated PL (``emu.pl``) as a board's pynq finds its FPGA."""
    marker = IMAGE / ".complete"
    if marker.is_file() and marker.read_text().strip() == IMAGE_VERSION:
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
    packages = " ".join(f"'{p}'" for p in IMAGE_PACKAGES)
    script = (f"mount -t overlay overlay -o lowerdir=/usr/local,upperdir={upper},workdir={work}"
              f" /usr/local && {python} -m venv {PYNQ_VENV} && "
              f"{PYNQ_VENV}/bin/pip install --quiet {packages}")
    _run("unshare", "--mount", "--propagation", "private", "bash", "-c", script)
    shutil.rmtree(work, ignore_errors=True)
    from finnchain.emu import pynq_board

    pynq_board.install(str(next((IMAGE / PYNQ_VENV.lstrip("/")).glob(
        "lib/python3*/site-packages"))))
    marker.write_text(IMAGE_VERSION + "\n")
    return IMAGE


def _address(i: int) -> str:
    return f"{SUBNET}.{FIRST_BOARD + i}"


def _wait_ssh(board: EmulatedBoard, deadline: float) -> None:
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


def operator_key(progress=print) -> str:
    """The operator's public key (``OPERATOR_KEY``, made here when missing, as the deployment
    and the SD-card seeding make it)."""
    key = Path(OPERATOR_KEY).expanduser()
    if not key.is_file():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "finnchain-operator", "-f",
             str(key))
        progress(f"made the operator's SSH key {key}")
    return key.with_suffix(".pub").read_text().strip()


def _host_key(state: Path) -> list[str]:
    """A new SSH host key for a board (kept in its state); returns its public key's type and
    base64 (the first two fields of its public line)."""
    keys = state / "hostkey"
    shutil.rmtree(keys, ignore_errors=True)
    keys.mkdir(parents=True)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f",
         str(keys / "ssh_host_ed25519_key"))
    return (keys / "ssh_host_ed25519_key.pub").read_text().split()[:2]


def record_host_key(known_hosts: Path, name: str, key: list[str], *aliases: str) -> None:
    """Put ``name`` (and ``aliases``, e.g. its address) with ``key`` into ``known_hosts``,
    replacing what was recorded for that name before."""
    lines = known_hosts.read_text().splitlines() if known_hosts.is_file() else []
    names = {name, *aliases}
    kept = [ln for ln in lines if not (ln.split() and set(ln.split()[0].split(",")) & names)]
    kept.append(f"{','.join([name, *aliases])} {' '.join(key)}")
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text("\n".join(kept) + "\n")
    known_hosts.chmod(0o644)


def up(count: int, inventory: Path = DEFAULT_INVENTORY, progress=print,
       stock: bool = False) -> list[EmulatedBoard]:
    """Make ``count`` boards and write their inventory; returns them."""
    require_root()
    if count < 1 or count > 200:
        raise EmuError("--boards must be between 1 and 200")
    existing = load()
    if existing:
        raise EmuError(f"a cluster of {len(existing)} boards is already up: "
                       "`finnchain emu down` first (or `finnchain emu status`)")
    image = make_image(progress)
    seed = "" if stock else operator_key(progress)
    STATE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    boards: list[EmulatedBoard] = []
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
            boards.append(_board(i, image, seed, known_hosts_path(inventory)))
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


def _board(i: int, image: Path, seed: str, known_hosts: Path) -> EmulatedBoard:
    name, ns, veth = f"board{i + 1}", f"{NS_PREFIX}{i + 1}", f"fcb{i + 1}"
    address = _address(i)
    state = STATE / name
    state.mkdir(parents=True, exist_ok=True)
    (state / "operator.pub").write_text(seed)
    record_host_key(known_hosts, name, _host_key(state), address)
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
    (state / "boot.log").unlink(missing_ok=True)
    return EmulatedBoard(name, address, ns, veth, _boot(ns, name, address, state, image), str(state))


def _boot(ns: str, name: str, address: str, state: Path, image: Path,
          card: Path | None = None) -> int:
    """Start the board's PID 1 (mounts, first-boot set-up, sshd, enabled services)."""
    seed = state / "operator.pub"
    env = {**os.environ, "FC_STATE": str(state), "FC_OVERLAID": " ".join(OVERLAID),
           "FC_IMAGE": str(image), "FC_NAME": name, "FC_ADDRESS": address, "FC_VENV": PYNQ_VENV,
           "FC_CARD": str(card or ""), "FC_INIT": INIT.read_text(),
           "FC_IIO": EMU_IIO, "FC_AMBIENT": EMU_AMBIENT,
           "FC_OPERATOR_KEY": seed.read_text().strip() if seed.is_file() else ""}
    with open(state / "boot.log", "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--kill-child", "--mount-proc", "--propagation", "private", "bash", "-c",
             BOOT.read_text(), str(BOOT)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc.pid


def _find(name: str) -> tuple[list[EmulatedBoard], EmulatedBoard]:
    boards = load()
    if not boards:
        raise EmuError("no emulated cluster is up (`finnchain emu up --boards N`)")
    for b in boards:
        if b.name == name:
            return boards, b
    raise EmuError(f"no board {name!r} in the emulated cluster "
                   f"(boards: {', '.join(b.name for b in boards)})")


def link(name: str, up: bool) -> EmulatedBoard:
    """Take a board's Ethernet link up or down, inside its namespace."""
    require_root()
    _, board = _find(name)
    _run("ip", "link", "set", "eth0", "up" if up else "down", netns=board.netns)
    return board


def heat(name: str, ambient_c: float | None) -> EmulatedBoard:
    """Set the air around a board to ``ambient_c`` degrees (None: the default): its die's
    temperature, as its emulated XADC reports it, settles that far above its load's heat."""
    require_root()
    _, board = _find(name)
    if not _alive(board.pid):
        raise EmuError(f"{name} is off (`finnchain emu power {name} on` first)")
    # written inside the board (its own mounts: /var is its overlay), as its PID 1 reads it
    script = (f"rm -f {EMU_AMBIENT}" if ambient_c is None else
              f"echo {float(ambient_c)!r} > {EMU_AMBIENT}.new && mv {EMU_AMBIENT}.new {EMU_AMBIENT}")
    _run("nsenter", "-t", str(board.pid), "-m", "sh", "-c", script)
    return board


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_card(image: Path, into: Path) -> str | None:
    """Copy what a seeded card sets (``CARD_FILES``) out of its root filesystem into ``into``;
    returns the static address the card gives eth0 (None for DHCP)."""
    if not image.is_file():
        raise EmuError(f"no SD card image at {image}")
    r = _run("sfdisk", "--json", str(image), check=False)
    if r.returncode != 0:
        raise EmuError(f"{image} has no partition table: not an SD card image "
                       f"({r.stderr.strip().rpartition(': ')[2]})")
    table = json.loads(r.stdout)
    parts = table.get("partitiontable", {}).get("partitions", [])
    if len(parts) < CARD_ROOT_PARTITION:
        raise EmuError(f"{image} has no partition {CARD_ROOT_PARTITION} (a PYNQ image's "
                       "root filesystem)")
    root, unit = parts[CARD_ROOT_PARTITION - 1], table["partitiontable"].get("sectorsize", 512)
    mnt = Path(tempfile.mkdtemp(prefix="finnchain-card-"))
    try:
        _run("mount", "-o", f"ro,loop,offset={root['start'] * unit},"
             f"sizelimit={root['size'] * unit}", str(image), str(mnt))
        try:
            shutil.rmtree(into, ignore_errors=True)
            for rel in CARD_FILES:
                src = mnt / rel
                if src.is_dir():
                    shutil.copytree(src, into / rel, symlinks=True)
                elif src.is_file():
                    (into / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, into / rel)
        finally:
            _run("umount", str(mnt), check=False)
    finally:
        mnt.rmdir()
    if not (into / "etc/hostname").is_file():
        raise EmuError(f"{image} is not a seeded card: no /etc/hostname on its root filesystem")
    eth0 = into / "etc/network/interfaces.d/eth0"
    text = eth0.read_text() if eth0.is_file() else ""
    static = re.search(r"iface eth0 inet static\s+address\s+([\d.]+)", text)
    return static.group(1) if static else None


def power(name: str, on: bool, fresh: bool = False, card: Path | None = None,
          known_hosts: Path | None = None) -> EmulatedBoard:
    """Cut a board's power (every process of it dies, its link goes down) or boot it again;
    ``fresh`` boots it from a freshly flashed image, as a replacement board would come (a new
    host key, recorded in ``known_hosts`` when given, and the operator's key as a seeded card
    has it), and ``card`` from a seeded SD card image (fresh as well): its hostname, address,
    host key and keys."""
    require_root()
    boards, board = _find(name)
    if card is not None:
        fresh = True
    if not on:  # the link first: a dead board says goodbye to no one (no FIN, no RST)
        _run("ip", "link", "set", "eth0", "down", netns=board.netns)
        if _alive(board.pid):
            os.kill(board.pid, signal.SIGKILL)  # --kill-child: the board's PID 1 and all below
        deadline = time.monotonic() + 10  # until no process of the board is left
        while time.monotonic() < deadline and (
                _alive(board.pid) or any(_alive(int(p)) for p in _run(
                    "ip", "netns", "pids", board.netns, check=False).stdout.split())):
            time.sleep(0.02)
        return board
    if _alive(board.pid):
        raise EmuError(f"{name} is already on (`finnchain emu power {name} off` first)")
    state = Path(board.state)
    staged, address = None, None
    if card is not None:  # read before anything of the board is dropped: a bad card changes nothing
        staged = state / "card"
        address = read_card(card, staged)
        taken = {b.address: b.name for b in boards if b.name != name}
        if address and not address.startswith(f"{SUBNET}."):
            raise EmuError(f"the card gives eth0 {address}, outside the emulated network "
                           f"{SUBNET}.0/24")
        if address in taken:
            raise EmuError(f"the card gives eth0 {address}, the address of {taken[address]}")
    if fresh:  # a new SD card: nothing of the old board's writes survives, a new host key
        for sub in ("upper", "work"):
            shutil.rmtree(state / sub, ignore_errors=True)
        key = _host_key(state)
        if staged is not None and (staged / "etc/ssh/ssh_host_ed25519_key").is_file():
            for f in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):  # the card's own
                shutil.copy2(staged / "etc/ssh" / f, state / "hostkey" / f)
            key = (state / "hostkey/ssh_host_ed25519_key.pub").read_text().split()[:2]
        if known_hosts is not None:
            record_host_key(known_hosts, board.name, key, address or board.address)
    if address and address != board.address:  # the card's static address, as ifupdown sets it
        _run("ip", "addr", "flush", "dev", "eth0", netns=board.netns)
        _run("ip", "addr", "add", f"{address}/24", "dev", "eth0", netns=board.netns)
        board.address = address
    _run("ip", "link", "set", "eth0", "up", netns=board.netns)
    board.pid = _boot(board.netns, board.name, board.address, state, make_image(), staged)
    _save(boards)
    _wait_ssh(board, time.monotonic() + BOOT_SECONDS)
    return board


def _save(boards: list[EmulatedBoard]) -> None:
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
        alive = _alive(b.pid)  # a zombie is not running
        try:
            with socket.create_connection((b.address, 22), timeout=0.5):
                ssh = True
        except OSError:
            ssh = False
        out.append({**asdict(b), "running": alive, "ssh": ssh})
    return out


def write_inventory(boards: list[EmulatedBoard], path: Path) -> Path:
    """An Ansible inventory of the boards, in chain order, ready for ``deploy.yml``: hosts
    only; what all boards share comes from the inventory folder's ``group_vars``."""
    import yaml

    hosts = {b.name: {"ansible_host": b.address, "finnchain_address": b.address,
                      "finnchain_emulated": True, "finnchain_gateway": HOST_ADDRESS,
                      "finnchain_iio_devices": EMU_IIO}
             for b in boards}
    doc = {"all": {"children": {"boards": {"hosts": hosts}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `finnchain emu up`: the emulated boards, in chain order "
                    "(stage 0 first).\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


def main_up(args) -> int:
    try:
        up(args.boards, Path(args.inventory), stock=args.stock)
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


def main_link(args) -> int:
    try:
        b = link(args.board, args.state == "up")
    except EmuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{b.name}: link {args.state}")
    return 0


def main_heat(args) -> int:
    try:
        if args.ambient == "default":
            ambient = None
        else:
            try:
                ambient = float(args.ambient)
            except ValueError:
                raise EmuError(f"the ambient must be degrees Celsius or 'default', got "
                               f"{args.ambient!r}") from None
        b = heat(args.board, ambient)
    except EmuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{b.name}: ambient {args.ambient}" + ("" if ambient is None else " °C"))
    return 0


def main_power(args) -> int:
    try:
        card = Path(args.sdcard) if args.sdcard else None
        if card is not None and args.state != "on":
            raise EmuError("--sdcard goes with `power BOARD on`")
        b = power(args.board, args.state == "on", fresh=args.fresh, card=card,
                  known_hosts=known_hosts_path(Path(args.inventory)))
    except EmuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{b.name}: power {args.state}" + (f" from the card {args.sdcard}, at {b.address}"
                                             if args.sdcard else
                                             " (fresh image)" if args.fresh else ""))
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
