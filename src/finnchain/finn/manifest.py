"""manifest.json: what a build produced, with checksums, for the deploy to trust.

One entry per stage: its folder, the board it is for, the accelerator kind, every file with its
SHA-256, the hash of the build inputs (to skip unchanged stages next time), the planner's
prediction and FINN's estimate side by side; and the plan's predicted rate for the whole chain
with what binds it (a stage's fabric, a link or a board's ARM side).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from finnchain.files import read_document, sha256_file, write_document
from finnchain.schemas import check

SCHEMA = "finnchain.manifest/1"
TARGETS = ("emulate", "finn", "finn-estimate", "finn-cppsim")


class ManifestError(ValueError):
    """A manifest that cannot be read, or files that do not match it."""


@dataclass
class StageEntry:
    index: int
    board: str
    dir: str
    accelerator: dict
    inputs_sha256: str
    files: dict[str, str]  # path relative to the manifest's folder -> sha256
    predicted: dict
    finn_estimate: dict | None = None
    build_seconds: float | None = None
    # FINN's checks against the verification vectors, per verify step: frames, equal, ...
    verification: dict | None = None

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"a stage's index must be at least 0, got {self.index}")


@dataclass
class Manifest:
    schema: str
    plan_hash: str
    model: dict
    target: str
    cluster: str
    stages: list[StageEntry] = field(default_factory=list)
    # the plan's own prediction for the whole chain: fps and what binds (stage, limit, what)
    predicted: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        indices = [s.index for s in self.stages]
        if len(set(indices)) != len(indices):
            raise ValueError(f"two stages share an index: {sorted(indices)}")

    def write(self, path: Path) -> Path:
        return write_document(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        data = read_document(path, "manifest", SCHEMA, ManifestError)
        return check(cls, data, str(path), ManifestError)

    def stage(self, index: int) -> StageEntry | None:
        return next((s for s in self.stages if s.index == index), None)


def file_hashes(root: Path, folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, keyed by its path relative to ``root``."""
    return {str(p.relative_to(root)): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def verify(root: Path, entry: StageEntry) -> list[str]:
    """Files of a stage that are missing or changed since the manifest was written, and files
    in its folder that the manifest does not list (a board gets exactly the manifest)."""
    bad = []
    for rel, digest in entry.files.items():
        p = root / rel
        if not p.is_file():
            bad.append(f"{rel} (missing)")
        elif sha256_file(p) != digest:
            bad.append(f"{rel} (changed)")
    folder = root / entry.dir
    if folder.is_dir():
        listed = set(entry.files)
        for p in sorted(folder.rglob("*")):
            rel = str(p.relative_to(root))
            if p.is_file() and rel not in listed:
                bad.append(f"{rel} (not in the manifest)")
    return bad


def verify_build(build: Path) -> list[str]:
    """Every file of every stage of the build at ``build`` that does not match its manifest."""
    manifest = Manifest.read(build / "manifest.json")
    return [f"stage {e.index}: {bad}" for e in manifest.stages for bad in verify(build, e)]


def verify_command(build: Path) -> int:
    """``finnchain manifest verify BUILD``: check a build's files against its manifest (the
    deployment runs it before anything is copied to a board). 0 when every file matches."""
    import sys

    try:
        bad = verify_build(build)
    except (ManifestError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if bad:
        print(f"error: the build at {build} does not match its manifest.json "
              f"(rebuild it, or copy it again): {'; '.join(bad)}", file=sys.stderr)
        return 1
    print(f"{build}: every file matches manifest.json")
    return 0
