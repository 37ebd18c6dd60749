"""Small file helpers shared by the plan, the build and the deploy: JSON documents, checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path, what: str, error: type[Exception],
              missing: type[Exception] | None = None):
    """The JSON in ``path``; ``error`` when it is not JSON, ``missing`` (default ``error``)
    when there is no such file, each naming the file."""
    if not path.is_file():
        raise (missing or error)(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not JSON: {exc}") from exc


def read_document(path: str | Path, what: str, schema: str, error: type[Exception]) -> dict:
    """A JSON object of the given ``schema`` from ``path``; ``error`` names what is wrong."""
    path = Path(path)
    data = read_json(path, what, error)
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise error(f"{path}: schema {found!r} is not {schema!r} (not a finnchain {what}?)")
    return data


def write_document(path: Path, data: dict) -> Path:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path
