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

from finnchain.files import read_document, write_document

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
    scale: float | None = None
    zero_point: float | None = None


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
    def from_dict(cls, data: dict) -> Plan:
        stages = []
        for s in data["stages"]:
            s = dict(s)
            s["input"], s["output"] = Tensor(**s["input"]), Tensor(**s["output"])
            s["ops"] = [OpPlan(**o) for o in s["ops"]]
            stages.append(StagePlan(**s))
        return cls(**{**data, "stages": stages})

    @classmethod
    def read(cls, path: str | Path) -> Plan:
        data = read_document(path, "plan", SCHEMA, PlanFileError)
        try:
            plan = cls.from_dict(data)
        except (KeyError, TypeError) as exc:
            raise PlanFileError(f"{path} is not a finnchain plan: {exc}") from exc
        if plan.plan_hash != plan.content_hash():
            raise PlanFileError(f"{path} was edited after planning: its plan_hash does not match")
        return plan
