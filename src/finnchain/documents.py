"""Every document finnchain reads or writes, by name, with its JSON Schema (for editors and
other tools). It sits above the readers: each checks its own documents through
``finnchain.schemas.check`` and knows nothing of this list.

- ``plan``: plan.json (``plan.schema.Plan`` and its dataclasses)
- ``manifest``: a build's manifest.json (``finn.manifest.Manifest``)
- ``chain``: the chain file clients read (``runtime.chainfile.ChainFile``)
- ``stage-config``: a stage daemon's config, as the deployment renders it
  (``runtime.stage.StageConfig``; the board reads it without pydantic, with the same dataclass
  and its own range checks)
- ``catalogue``: the board catalogue and its override files (``schemas.CatalogueSpec``)
"""

from __future__ import annotations

from typing import Any

from finnchain.finn.manifest import Manifest
from finnchain.plan.schema import Plan
from finnchain.runtime.chainfile import ChainFile
from finnchain.runtime.stage import StageConfig
from finnchain.schemas import CatalogueSpec, adapter, check

DOCUMENTS: dict[str, type] = {"plan": Plan, "manifest": Manifest, "chain": ChainFile,
                              "stage-config": StageConfig, "catalogue": CatalogueSpec}


def document(kind: str) -> type:
    """The class of the document named ``kind``."""
    if kind not in DOCUMENTS:
        raise KeyError(f"no document {kind!r}; known: {', '.join(DOCUMENTS)}")
    return DOCUMENTS[kind]


def check_document(kind: str, data: Any, source: str,
                   error: type[Exception] = ValueError) -> Any:
    """``data`` as the document named ``kind`` (``schemas.check`` with its class)."""
    return check(document(kind), data, source, error)


def json_schema(kind: str) -> dict:
    """The JSON Schema of the document named ``kind``."""
    return adapter(document(kind)).json_schema()
