"""plan.json: the plan as dataclasses, its versioned schema and its content hash.

Everything the FINN build driver, the deploy and the runtime need is here: the chain of boards,
per stage its segment range, QONNX nodes, cut tensors (shape, datatype, bytes per frame), every
HW op with its folding, predicted cycles and resources against the board's limits; and the
predicted rate with what limits it. ``plan_hash`` is the SHA-256 of the canonical JSON of
everything else, so that a build or a deploy can tell a plan from another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finnchain.cost.ops import Fold, Op, op_of
from finnchain.files import read_document, write_document
from finnchain.schemas import check

SCHEMA = "finnchain.plan/1"


class PlanFileError(ValueError):
    """A plan.json that cannot be read or is of another schema."""


@dataclass
class Tensor:
    """What crosses a link: a cut tensor, the model input, or the final result."""

    name: str
    shape: list[int]  # NCHW / NC, batch 1
    datatype: str
    bytes_per_frame: int
    scale: float | list[float] | None = None  # one per channel where the quantizer has them
    zero_point: float | None = None

    def __post_init__(self) -> None:
        if not self.shape or any(d < 1 for d in self.shape):
            raise ValueError(f"tensor {self.name}: every dimension must be at least 1, "
                             f"got {self.shape}")
        if self.bytes_per_frame < 1:
            raise ValueError(f"tensor {self.name}: bytes_per_frame must be at least 1")


@dataclass
class OpPlan:
    """One FINN HW op of a stage with its folding."""

    name: str  # finnchain's name (the QONNX node it comes from)
    finn_name: str  # the node name in FINN's graph after specialisation, e.g. MVAU_hls_3
    kind: str
    node: str
    fold: dict
    cycles: int
    resources: dict
    shape: dict  # the op's dimensions (MW, MH, channels, ...) for the reader and for FINN

    def __post_init__(self) -> None:
        if self.cycles < 0:
            raise ValueError(f"op {self.name}: cycles must be at least 0, got {self.cycles}")

    def op(self) -> Op:
        """The cost model's op it describes (its FINN type, key, folding-config entry)."""
        return op_of(self.kind, self.name, self.node, self.shape)

    def fold_of(self) -> Fold:
        return Fold(**self.fold)


@dataclass
class StagePlan:
    index: int
    board: dict  # kind, part, clock_mhz, finn_board, ...
    segments: list[int]  # [first, end) indices into the model's segments
    nodes: list[str]  # QONNX compute nodes of the stage
    input: Tensor
    output: Tensor
    ops: list[OpPlan]
    cycles: int
    bottleneck_op: str
    fabric_fps: float
    arm_fps: float
    link_in_mb_s: float  # at the predicted rate
    resources: dict
    limits: dict
    utilization: dict  # share of each limit, 0..1+
    files: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index < 0 or self.cycles < 1 or self.fabric_fps <= 0 or self.arm_fps <= 0:
            raise ValueError(f"stage {self.index}: index must be at least 0, cycles at least 1 "
                             "and the rates positive")


@dataclass
class Plan:
    schema: str
    model: dict  # name, file, sha256, input, output
    boards: list[dict]  # the chain as given (kind per position)
    objective: dict
    predicted_fps: float
    bottleneck: dict  # stage, limit ("fabric", "link", "arm"), what
    stages: list[StagePlan]
    estimates: dict  # power, energy per frame (labelled estimates)
    search: dict  # how the plan was found (rates tried, seconds)
    plan_hash: str = ""

    def __post_init__(self) -> None:
        if self.predicted_fps <= 0:
            raise ValueError(f"predicted_fps must be positive, got {self.predicted_fps}")
        if [s.index for s in self.stages] != list(range(len(self.stages))) or not self.stages:
            raise ValueError("stages must be numbered 0, 1, ... in order, and at least one")

    def to_dict(self) -> dict:
        return asdict(self)

    def content_hash(self) -> str:
        body = self.to_dict()
        body.pop("plan_hash", None)
        body.pop("search", None)  # timing differs between identical plans
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def seal(self) -> Plan:
        self.plan_hash = self.content_hash()
        return self

    def write(self, path: Path) -> Path:
        return write_document(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict, source: str = "plan") -> Plan:
        """A plan from its JSON form, checked field by field (``finnchain.schemas``)."""
        return check(cls, data, source, PlanFileError)

    @classmethod
    def read(cls, path: str | Path) -> Plan:
        data = read_document(path, "plan", SCHEMA, PlanFileError)
        plan = cls.from_dict(data, str(path))
        if plan.plan_hash != plan.content_hash():
            raise PlanFileError(f"{path} was edited after planning: its plan_hash does not match")
        return plan
