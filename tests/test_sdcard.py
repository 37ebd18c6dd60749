"""playbooks/sdcard.yml: PYNQ SD cards flashed and seeded per board (root only: loop mounts).

No PYNQ image can be downloaded here: ``sdimage.make`` builds a small one with the same layout
(FAT boot, ext4 root with the paths the seeding touches). The playbook runs on it as an image
file, as a zip behind a local HTTP server (resumed download, never repeated), and written to a
loop device standing in for a card; each refusal is checked with the card left untouched; and an
emulated board boots from a seeded card and is deployed (the wrong card is named).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import subprocess
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import sdimage
from clusterkit import BIN, KEY, ROOT, finnchain, inventory_file, playbook, recap, ssh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")
BOARDS = {"board1": "127.77.0.11", "board2": "127.77.0.12", "board3": "127.77.0.13"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return sdimage.make(tmp_path_factory.mktemp("pynq") / "pynq_test.img")


@pytest.fixture(scope="module")
def zipped(image) -> Path:
    path = image.with_suffix(".zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(image, image.name)
    return path


def inventory(path: Path, boards: dict[str, str] = BOARDS) -> Path:
    hosts = {name: {"ansible_host": a, "finnchain_address": a} for name, a in boards.items()}
    return inventory_file(path, {"all": {"children": {"boards": {"hosts": hosts, "vars": {
        "finnchain_prefix": 24, "finnchain_gateway": "127.77.0.1"}}}}})


def sdcard(inv: Path, *extra: str, known_hosts: Path | None = None) -> subprocess.CompletedProcess:
    """The playbook; the host keys it records go to ``known_hosts`` (default: beside the
    inventory, not the running cluster's ~/.ssh/finnchain_known_hosts)."""
    known_hosts = known_hosts or inv.parent / "known_hosts"
    return subprocess.run([str(BIN / "ansible-playbook"), "playbooks/sdcard.yml", "-i", str(inv),
                           "-e", f"sdcard_known_hosts={known_hosts}", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


def host_key_recorded(known_hosts: Path, target: Path, board: str) -> None:
    """The card carries the board's own host key, and known_hosts holds its public half under
    the board's name and address; the image's own host keys are gone."""
    with root_of(target) as root:
        public = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        assert (root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
        assert not list((root / "etc/ssh").glob("ssh_host_rsa_key*"))
        assert "NOPASSWD" in (root / "etc/sudoers.d/finnchain").read_text()
    lines = [line.split() for line in known_hosts.read_text().splitlines()]
    for name in (board, BOARDS[board]):
        assert [name, *public] in lines, (name, lines)


def opts(image: Path, sha: str, *more: str) -> list[str]:
    return ["-e", f"finnchain_image={image}", "-e", f"finnchain_image_sha256={sha}", *more]


@contextlib.contextmanager
def root_of(target: Path):
    """The root filesystem (partition 2) of an image file or a card, mounted read-only."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(target)], capture_output=True,
                                      check=True).stdout)["partitiontable"]
    p = table["partitions"][1]
    with tempfile.TemporaryDirectory() as mnt:
        where = f"ro,loop,offset={p['start'] * 512},sizelimit={p['size'] * 512}"
        subprocess.run(["mount", "-o", where, str(target), mnt], check=True)
        try:
            yield Path(mnt)
        finally:
            subprocess.run(["umount", mnt], check=True)


def check_seeded(target: Path, board: str, stage: int, sha: str) -> None:
    key = Path(f"{KEY}.pub").read_text().strip()
    with root_of(target) as root:
        assert (root / "etc/hostname").read_text() == f"{board}\n"
        assert f"127.0.1.1\t{board}" in (root / "etc/hosts").read_text()
        eth0 = (root / "etc/network/interfaces.d/eth0").read_text()
        assert "iface eth0 inet static" in eth0 and f"address {BOARDS[board]}/24" in eth0
        assert "inet dhcp" not in eth0 and "192.168.2.99" in eth0  # the recovery alias stays
        keys = root / "home/xilinx/.ssh/authorized_keys"
        assert key in keys.read_text().splitlines()
        st = keys.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o600)
        assert (root / "home/xilinx/.ssh").stat().st_mode & 0o777 == 0o700
        marker = json.loads((root / "etc/finnchain-board.json").read_text())
        assert marker["board"] == board and marker["stage"] == stage
        assert marker["image_sha256"] == sha


def boot_partition(target: Path) -> bytes:
    with open(target, "rb") as f:
        f.seek(2048 * 512)
        return f.read(sdimage.BOOT_MIB << 20)


def test_seeded_image_files_one_per_board(zipped, image, tmp_path):
    inv, out, cache = inventory(tmp_path / "inv.yml"), tmp_path / "cards", tmp_path / "cache"
    args = opts(zipped, sha256(zipped), "-e", f"finnchain_sdcard_dir={out}", "-e",
                f"finnchain_image_cache={cache}")
    r = sdcard(inv, *args)
    assert r.returncode == 0, r.stdout[-3000:]
    assert sorted(p.name for p in out.glob("*.img")) == ["board1.img", "board2.img",
                                                         "board3.img"]
    private = sorted(out.glob("hostkeys/*/ssh_host_ed25519_key"))  # kept on the controller
    assert [p.parent.name for p in private] == list(BOARDS)
    assert all(p.stat().st_mode & 0o077 == 0 for p in private)
    for stage, board in enumerate(BOARDS):
        check_seeded(out / f"{board}.img", board, stage, sha256(zipped))
        host_key_recorded(inv.parent / "known_hosts", out / f"{board}.img", board)
        assert boot_partition(out / f"{board}.img") == boot_partition(image)  # FAT untouched
    keys = [line.split()[2] for line in (inv.parent / "known_hosts").read_text().splitlines()]
    assert len(set(keys)) == 3  # a host key of its own per board
    again = sdcard(inv, *args)
    assert again.returncode == 0, again.stdout[-3000:]
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), recap(again.stdout)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with byte ranges (as a download mirror does); logs each request's range."""

    requests: ClassVar[list[str]] = []

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data, start = path.read_bytes(), 0
        rng = self.headers.get("Range", "")
        type(self).requests.append(rng or "full")
        if rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture()
def mirror(zipped):
    def handler(*a, **k):
        return RangeHandler(*a, directory=str(zipped.parent), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/{zipped.name}"
    server.shutdown()


def test_a_download_resumes_is_checked_and_never_repeated(mirror, zipped, tmp_path):
    inv, cache = inventory(tmp_path / "inv.yml", {"board1": BOARDS["board1"]}), tmp_path / "cache"
    cache.mkdir()
    half = zipped.stat().st_size // 2
    (cache / f"{zipped.name}.part").write_bytes(zipped.read_bytes()[:half])  # cut off earlier
    args = ["-e", f"finnchain_sdcard_dir={tmp_path / 'cards'}", "-e",
            f"finnchain_image_cache={cache}"]
    r = sdcard(inv, *opts(mirror, sha256(zipped)), *args)
    assert r.returncode == 0, r.stdout[-3000:]
    assert RangeHandler.requests == [f"bytes={half}-"]  # only the missing half was fetched
    assert sha256(cache / zipped.name) == sha256(zipped)
    assert not (cache / f"{zipped.name}.part").exists()
    check_seeded(tmp_path / "cards/board1.img", "board1", 0, sha256(zipped))
    r = sdcard(inv, *opts(mirror, sha256(zipped)), *args)
    assert r.returncode == 0 and RangeHandler.requests == [f"bytes={half}-"]  # not again
    # a download that does not match its checksum is refused, and removed
    wrong = "0" * 64
    r = sdcard(inv, *opts(mirror, wrong), "-e", f"finnchain_image_cache={tmp_path / 'c2'}",
               *args[:2])
    assert r.returncode != 0
    assert f"{mirror}: SHA-256 {sha256(zipped)}, expected {wrong} (the download was removed)" \
        in r.stdout, r.stdout[-2000:]
    assert not list((tmp_path / "c2").iterdir())


@contextlib.contextmanager
def loop_card(path: Path, mib: int):
    """A loop device standing in for an SD card of ``mib`` MiB."""
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    dev = subprocess.run(["losetup", "--find", "--show", str(path)], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def first_mib(dev: Path) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read(1 << 20)).hexdigest()


def test_a_card_is_written_and_seeded_and_refused_when_unsafe(image, tmp_path):
    inv = inventory(tmp_path / "inv.yml")
    sha = sha256(image)
    with loop_card(tmp_path / "card.bin", 64) as card, \
            loop_card(tmp_path / "small.bin", 16) as small:
        dev = ["-e", f"finnchain_sdcard_device={card}"]
        refusals = {  # what the operator gets wrong -> what the playbook says
            "no confirmation": ([*dev], f"writing the image erases {card}"),
            "confirmation of another device": (
                [*dev, "-e", "finnchain_sdcard_confirm=/dev/sdz"], f"writing the image erases {card}"),
            "a card smaller than the image": (
                ["-e", f"finnchain_sdcard_device={small}", "-e",
                 f"finnchain_sdcard_confirm={small}"],
                f"{small} holds {16 << 20} bytes, less than the image ({image.stat().st_size} bytes)"),
            "not a block device": (
                ["-e", f"finnchain_sdcard_device={image}", "-e",
                 f"finnchain_sdcard_confirm={image}"], f"{image} is not a block device"),
            "no checksum": ([*dev, "-e", f"finnchain_sdcard_confirm={card}", "-e",
                             "finnchain_image_sha256="], "name the PYNQ image and its SHA-256"),
        }
        before = first_mib(card)
        for what, (extra, message) in refusals.items():
            r = sdcard(inv, *opts(image, sha), "--limit", "board2", *extra)
            assert r.returncode != 0 and message in r.stdout, (what, r.stdout[-2000:])
            assert first_mib(card) == before, what
        # a mounted device, and one that holds the machine's own files (the system disk)
        subprocess.run(["mkfs.ext4", "-q", str(small)], check=True)
        with tempfile.TemporaryDirectory() as mnt:
            subprocess.run(["mount", str(small), mnt], check=True)
            try:
                on_small = ["-e", f"finnchain_sdcard_device={small}", "-e",
                            f"finnchain_sdcard_confirm={small}"]
                r = sdcard(inv, *opts(image, sha), "--limit", "board2", *on_small)
                assert f"{small} is mounted ({small} on {mnt}): unmount it first" in r.stdout, \
                    r.stdout[-2000:]
                r = sdcard(inv, *opts(image, sha), "--limit", "board2", *on_small, "-e",
                           json.dumps({"sdcard_system_paths": [mnt]}))
                assert f"{small} is the system disk: it holds {mnt}" in r.stdout, r.stdout[-2000:]
            finally:
                subprocess.run(["umount", mnt], check=True)
        # confirmed: written and seeded; a second run leaves the card as it is
        ok = [*dev, "-e", f"finnchain_sdcard_confirm={card}"]
        r = sdcard(inv, *opts(image, sha), "--limit", "board2", *ok)
        assert r.returncode == 0, r.stdout[-3000:]
        check_seeded(card, "board2", 1, sha)
        assert boot_partition(card) == boot_partition(image)
        r = sdcard(inv, *opts(image, sha), "--limit", "board2", *ok)
        assert r.returncode == 0 and recap(r.stdout)["board2"]["changed"] == 0, r.stdout[-2000:]
    print(f"\n{len(refusals) + 2} unsafe writes refused, the card untouched each time")


@pytest.mark.slow  # 4 min (a board booted from its card, a deploy): make test-all
def test_a_board_boots_from_its_seeded_card_and_deploys(boards, deployed, build, image,
                                                        digits, digits_test_set, tmp_path):
    """board2 is replaced by a board with a freshly seeded card: it comes up with its name,
    address and the operator's key (no password needed), and `deploy.yml --limit board2`
    restores the chain. A card seeded for another board is named by the deploy."""
    from finnchain.fabric.executor import Executor
    from finnchain.runtime.client import Chain

    sha = sha256(image)
    wrong = sdcard(inventory(tmp_path / "other.yml", {"board9": BOARDS["board2"]}),
                   *opts(image, sha), "-e", f"finnchain_sdcard_dir={tmp_path / 'other'}")
    assert wrong.returncode == 0, wrong.stdout[-2000:]
    from finnchain.ops.inventory import boards as inventory_boards

    known = Path(inventory_boards(boards)[0].known_hosts).expanduser()  # the cluster's own
    r = sdcard(boards, *opts(image, sha), "--limit", "board2", "-e",
               f"finnchain_sdcard_dir={tmp_path / 'cards'}", known_hosts=known)
    assert r.returncode == 0, r.stdout[-2000:]

    def boot(card: Path) -> None:
        for state in (["off"], ["on", "--sdcard", str(card)]):
            r = finnchain("emu", "power", "board2", *state)
            assert r.returncode == 0, r.stderr

    boot(tmp_path / "other/board9.img")  # the wrong card in board2
    r = playbook(boards, build, "--limit", "board2", fresh_connections=True)
    assert r.returncode != 0
    assert ("board2 (127.77.0.12) booted from the SD card seeded for board9 (stage 0), but the "
            "inventory makes it stage 1") in " ".join(r.stdout.split()), r.stdout[-2000:]

    blank = tmp_path / "blank.img"  # not a card image at all: refused, the board stays off
    blank.write_bytes(bytes(1 << 20))
    assert finnchain("emu", "power", "board2", "off").returncode == 0
    r = finnchain("emu", "power", "board2", "on", "--sdcard", str(blank))
    assert r.returncode == 2 and f"{blank} has no partition table" in r.stderr, r.stderr
    boot(tmp_path / "cards/board2.img")  # the right one
    r = ssh(BOARDS["board2"], "hostname; cat /etc/finnchain-board.json")
    assert r.returncode == 0, r.stderr  # the operator's key opens it, the card's host key
    # is the one recorded: no password typed, nothing trusted on first use
    assert r.stdout.split()[0] == "board2" and '"stage": 1' in r.stdout
    assert ssh(BOARDS["board2"], "true", password="xilinx").returncode == 0  # not yet hardened
    r = playbook(boards, build, "--limit", "board2", fresh_connections=True)
    assert r.returncode == 0, r.stdout[-3000:]
    images = digits_test_set[0][:100].astype(np.uint8)
    with Chain(deployed / "chain.json", timeout=30) as chain:
        got = chain.infer(images)
    assert np.array_equal(got, Executor(digits).run(images).astype(np.int32))
    assert ssh(BOARDS["board2"], "true", password="xilinx").returncode != 0  # hardened
