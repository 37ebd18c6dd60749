"""The board catalogue: resources, limits, clocks, links and estimates per board kind.

The facts live in ``catalogue.yaml`` next to this module; a user file of the same shape may
override or add entries (merged key by key). ``parse_chain("zedboard:4,pynq-z2:2")`` turns the
command-line form into the ordered list of boards of a chain.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

from finnchain.schemas import CatalogueSpec, check

CATALOGUE = Path(__file__).with_name("catalogue.yaml")
RESOURCES = ("lut", "ff", "bram18", "uram", "dsp")
HP_PORT_BITS = {"zynq_7000": 64, "zynq_us+": 128}  # FINN v0.10.1's pynq_native_port_width


class CatalogueError(ValueError):
    """A board kind, a chain spec or a catalogue file that cannot be used."""


# An ARM's cost of starting one DMA as a share of its per-frame cost, where a catalogue entry
# gives no ``arm.dma_us``: bench/pynq.py measures FINN's driver writing the registers of its
# two DMAs at 61 % of the per-frame path through pynq (120 of 198 us), so 30 % for each.
DMA_SHARE = 0.3

@dataclass(frozen=True)
class Board:
    """One kind of board, with everything the planner and the deploy need to know."""

    kind: str  # catalogue key, e.g. "zedboard"
    title: str
    part: str  # full part name passed to FINN, e.g. "xc7z020clg484-1"
    family: str  # catalogue part family, e.g. "xc7z020"
    finn_board: str | None  # FINN's board name, None when FINN does not know the board
    vivado_board_part: str  # Vivado board definition ("" if none), for boards FINN lacks
    clock_mhz: float
    ethernet_mbps: float
    link_efficiency: float  # estimate
    power_w: float  # estimate
    arm_frame_us: float  # estimate: fixed ARM-side cost per frame
    arm_byte_ns: float  # estimate: ARM-side cost per byte received or sent
    arm_dma_us: float  # estimate: ARM-side cost of one more DMA started per batch
    resources: dict[str, int]  # lut, ff, bram18, uram, dsp of the part
    lutram: int  # LUTs usable as distributed memory
    dsp_kind: str
    zynq: str  # "zynq_7000" or "zynq_us+": the processing system FINN's shell targets
    limits: dict[str, float]  # usable share of each resource
    shell: dict[str, int]  # estimate: resources of the shell around the dataflow

    @property
    def hp_port_bits(self) -> int:
        """The width of the AXI HP port FINN's DMAs use (FINN's ``pynq_native_port_width``:
        64 on a Zynq-7000, 128 on a Zynq UltraScale+)."""
        return HP_PORT_BITS[self.zynq]

    @property
    def finn_name(self) -> str:
        """The board name a FINN build uses: FINN's own, or one the build registers."""
        return self.finn_board or self.kind.capitalize()

    def limit(self, resource: str) -> float:
        """The usable amount of ``resource`` (part total times its usage limit)."""
        return self.resources[resource] * self.limits[resource]

    @property
    def link_bytes_per_s(self) -> float:
        """Usable payload rate of the board's Ethernet link, bytes per second."""
        return self.ethernet_mbps * 1e6 / 8 * self.link_efficiency

    def arm_fps(self, bytes_in: int, bytes_out: int, weight_dmas: int = 0) -> float:
        """Frames per second the ARM side can move, given the bytes in and out per frame and
        the weight DMAs FINN's driver starts besides its input and output DMAs (one per layer
        whose weights stream from DDR, started with every batch; a batch of one frame here).
        The weights themselves never pass the ARM: the DMA reads them from DDR."""
        us = (self.arm_frame_us + self.arm_byte_ns * (bytes_in + bytes_out) / 1000
              + self.arm_dma_us * weight_dmas)
        return 1e6 / us

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "title": self.title, "part": self.part, "family": self.family,
            "finn_board": self.finn_board, "finn_name": self.finn_name,
            "vivado_board_part": self.vivado_board_part, "clock_mhz": self.clock_mhz,
            "ethernet_mbps": self.ethernet_mbps, "link_efficiency": self.link_efficiency,
            "power_w_estimate": self.power_w, "resources": dict(self.resources),
            "lutram": self.lutram, "limits": dict(self.limits), "shell": dict(self.shell),
            "zynq": self.zynq, "hp_port_bits": self.hp_port_bits,
        }


def rated_temperature(part: str) -> float:
    """The highest junction temperature a part is rated for, in degrees Celsius, from its
    temperature grade: the letter that ends an AMD part name (-c commercial 85, -e extended
    100, -i industrial 100, -q/-m 125; DS187 for Zynq-7000, DS925 for Zynq UltraScale+).
    Vivado names Zynq-7000 parts without the letter (xc7z020clg484-1); the boards of the
    catalogue carry commercial parts (XC7Z020-1CLG484C), so no letter means 85."""
    grade = part.rsplit("-", 1)[-1].lower() if "-" in part else ""
    return {"c": 85.0, "e": 100.0, "i": 100.0, "q": 125.0, "m": 125.0}.get(grade, 85.0)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CatalogueError(f"board catalogue not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CatalogueError(f"board catalogue {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogueError(f"board catalogue {path} must be a mapping")
    # an inventory variable file may hold the catalogue under one key
    return data.get("finnchain_boards", data)


class Catalogue:
    """All board kinds known, from the packaged catalogue plus optional override files,
    checked against the catalogue's schema (``finnchain.schemas.CatalogueSpec``)."""

    def __init__(self, *overrides: str | Path) -> None:
        data = _read(CATALOGUE)
        for path in overrides:
            data = _merge(data, _read(Path(path)))
        source = "the board catalogue" + (
            f" ({CATALOGUE.name} with {', '.join(map(str, overrides))})" if overrides else "")
        self.spec = check(CatalogueSpec, data, source, CatalogueError)
        self.boards = {kind: self._board(kind, spec) for kind, spec in self.spec.boards.items()}

    def _board(self, kind: str, spec) -> Board:
        part = self.spec.parts.get(spec.family)
        if part is None:
            raise CatalogueError(f"board {kind!r} in the catalogue names the part family "
                                 f"{spec.family!r}, which its parts do not list "
                                 f"(parts: {', '.join(sorted(self.spec.parts))})")
        limits = {}
        for r in RESOURCES:
            share = getattr(spec.limits, r)
            share = share if share is not None else getattr(self.spec.default_limits, r)
            if share is None:
                raise CatalogueError(f"board {kind!r}: no usage limit for {r} (limits.{r} or "
                                     f"default_limits.{r})")
            limits[r] = share
        return Board(
            kind=kind, title=spec.title or kind, part=spec.part, family=spec.family,
            finn_board=spec.finn_board, vivado_board_part=spec.vivado_board_part,
            clock_mhz=spec.clock_mhz, ethernet_mbps=spec.ethernet_mbps,
            link_efficiency=spec.link_efficiency, power_w=spec.power_w,
            arm_frame_us=spec.arm.frame_us, arm_byte_ns=spec.arm.byte_ns,
            arm_dma_us=spec.arm.dma_us if spec.arm.dma_us is not None
            else DMA_SHARE * spec.arm.frame_us,
            resources={r: getattr(part, r) for r in RESOURCES}, lutram=part.lutram,
            dsp_kind=part.dsp_kind, zynq=part.zynq, limits=limits,
            shell=spec.shell.model_dump())

    def board(self, kind: str) -> Board:
        try:
            return self.boards[kind.lower()]
        except KeyError:
            known = ", ".join(sorted(self.boards))
            raise CatalogueError(f"unknown board kind {kind!r}; known: {known}") from None

    def chain(self, spec: str) -> list[Board]:
        """The ordered boards of ``KIND:COUNT[,KIND:COUNT...]`` (a bare KIND counts one)."""
        boards: list[Board] = []
        for item in filter(None, (s.strip() for s in spec.split(","))):
            kind, _, count = item.partition(":")
            try:
                n = int(count) if count else 1
            except ValueError:
                raise CatalogueError(f"bad board count in {item!r}: expected KIND:COUNT") from None
            if n < 1:
                raise CatalogueError(f"board count must be at least 1 in {item!r}")
            boards.extend([self.board(kind)] * n)
        if not boards:
            raise CatalogueError(f"no boards in {spec!r}: expected KIND:COUNT[,KIND:COUNT...]")
        return boards
