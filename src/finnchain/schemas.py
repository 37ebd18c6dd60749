"""Checking a document the controller reads or writes against its schema, with pydantic.
Each reader passes its own class; ``finnchain.documents`` names them all (JSON Schemas).
It holds the catalogue's schema (``CatalogueSpec``, below), as the catalogue is the one
document without a dataclass of its own.

The dataclasses are the schemas: pydantic checks every field's type, nested ones included, and
runs their ``__post_init__`` range checks; unknown keys are refused where the dataclass says so
(``__pydantic_config__``). A document that does not fit raises the reader's own error with
every problem named by its field path: ``plan.json: stages.2.cycles: Input should be a valid
integer (got 'many')``.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class ArmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frame_us: float = Field(gt=0)  # estimate: fixed ARM-side cost per frame
    byte_ns: float = Field(ge=0)  # estimate: ARM-side cost per byte in or out
    # estimate: the cost of starting one more DMA per batch (a layer's weights from DDR);
    # when absent, DMA_SHARE of frame_us
    dma_us: float | None = Field(default=None, gt=0)


class PartSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lut: int = Field(gt=0)
    ff: int = Field(gt=0)
    bram18: int = Field(ge=0)
    uram: int = Field(ge=0)
    dsp: int = Field(ge=0)
    lutram: int = Field(ge=0)
    dsp_kind: str = "DSP48E1"
    # the processing system FINN's Zynq shell targets (its templates' ZYNQ_TYPE)
    zynq: Literal["zynq_7000", "zynq_us+"] = "zynq_7000"


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lut: float | None = Field(default=None, gt=0, le=1)
    ff: float | None = Field(default=None, gt=0, le=1)
    bram18: float | None = Field(default=None, gt=0, le=1)
    uram: float | None = Field(default=None, gt=0, le=1)
    dsp: float | None = Field(default=None, gt=0, le=1)


class Shell(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lut: int = Field(default=0, ge=0)
    bram18: int = Field(default=0, ge=0)
    uram: int = Field(default=0, ge=0)
    dsp: int = Field(default=0, ge=0)


class BoardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = None
    part: str
    family: str
    finn_board: str | None = None
    vivado_board_part: str = ""
    clock_mhz: float = Field(gt=0, le=1000)
    ethernet_mbps: float = Field(gt=0)
    link_efficiency: float = Field(default=1.0, gt=0, le=1)
    power_w: float = Field(gt=0)
    arm: ArmSpec
    limits: Limits = Limits()
    shell: Shell = Shell()


class CatalogueSpec(BaseModel):
    """The board catalogue (boards/catalogue.yaml), merged with any override files."""

    model_config = ConfigDict(extra="forbid")
    parts: dict[str, PartSpec]
    default_limits: Limits = Limits()
    boards: dict[str, BoardSpec]


@cache
def adapter(document: type) -> TypeAdapter:
    """pydantic's validator of a document class (a dataclass or a model), made once."""
    return TypeAdapter(document)


def describe(exc: ValidationError) -> str:
    """Every problem of a document, each named by its field path."""
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "the document"
        if e["type"] == "missing":  # "boards.half lacks 'family'"
            parent = ".".join(str(p) for p in e["loc"][:-1]) or "the document"
            problems.append(f"{parent} lacks {str(e['loc'][-1])!r}")
            continue
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            problems.append(f"{where}: not a known field (a typo?)")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = f" (got {got!r})" if not isinstance(got, (dict, list)) and len(repr(got)) <= 40 \
            else ""
        problems.append(f"{where}: {msg}{shown}")
    return "; ".join(problems)


def check(document: type, data: Any, source: str, error: type[Exception] = ValueError) -> Any:
    """``data`` as a ``document`` (the reader's own dataclass or model), or ``error`` naming
    ``source`` and every field that does not fit."""
    try:
        return adapter(document).validate_python(data)
    except ValidationError as exc:
        raise error(f"{source}: {describe(exc)}") from None
