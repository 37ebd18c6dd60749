"""The chain file: where clients find a deployed chain (its ends, its input and output, its
CURVE certificates), as the deployment writes it and ``Chain`` reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from finnchain.files import read_json
from finnchain.runtime.errors import ChainFileError


@dataclass
class ChainFile:
    plan_hash: str
    first: str
    last: str
    input: dict
    output: dict
    stages: list[dict] = field(default_factory=list)
    curve: dict | None = None  # secret (the client's certificate), first, last (public keys)
    model: str = ""  # the plan's model name (what finnchain serve calls the model)

    __pydantic_config__ = {"extra": "forbid"}  # finnchain.schemas: unknown keys are refused

    def __post_init__(self) -> None:
        for end in ("first", "last"):
            if not str(getattr(self, end)).startswith("tcp://"):
                raise ValueError(f"{end} must be a tcp:// address, got {getattr(self, end)!r}")
        for side in ("input", "output"):
            t = getattr(self, side)
            if not isinstance(t.get("shape"), list) or int(t.get("bytes_per_frame", 0)) < 1:
                raise ValueError(f"{side} must give a shape and bytes_per_frame of at least 1")
        if self.curve is not None and set(self.curve) != {"secret", "first", "last"}:
            raise ValueError("curve must name secret, first and last (certificate files)")

    @classmethod
    def read(cls, path: str | Path) -> ChainFile:
        """A chain file, checked field by field (``finnchain.schemas``); its certificate
        paths are relative to it."""
        from finnchain.schemas import check  # pydantic: the controller's, never a board's

        path = Path(path)
        data = read_json(path, "chain file", ChainFileError, missing=FileNotFoundError)
        if isinstance(data, dict) and isinstance(data.get("curve"), dict):
            data["curve"] = {k: str((path.parent / v).resolve()) for k, v in data["curve"].items()}
        return check(cls, data, str(path), ChainFileError)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.__dict__, indent=1) + "\n")
        return path
