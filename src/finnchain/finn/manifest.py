"""manifest.json: what a build produced, with checksums, for the deploy to trust.

One entry per stage: its folder, the board it is for, the accelerator kind, every file with its
SHA-256, the hash of the build inputs (to skip unchanged stages next time), the planner's
prediction and FINN's estimate side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from finnchain.files import read_document, sha256_file, write_document

SCHEMA = "finnchain.manifest/1"


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


@dataclass
class Manifest:
    schema: str
    plan_hash: str
    model: dict
    target: str
    cluster: str
    stages: list[StageEntry] = field(default_factory=list)

    def write(self, path: Path) -> Path:
        return write_document(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        data = read_document(path, "manifest", SCHEMA, ManifestError)
        try:
            stages = [StageEntry(**s) for s in data.pop("stages")]
            return cls(**data, stages=stages)
        except (TypeError, KeyError) as exc:
            raise ManifestError(f"{path} is not a finnchain manifest: {exc}") from exc

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


def main(argv: list[str] | None = None) -> int:
    """``python -m finnchain.finn.manifest BUILD``: check a build's files against its manifest
    (the deployment runs it before anything is copied to a board)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m finnchain.finn.manifest BUILD_DIR", file=sys.stderr)
        return 2
    build = Path(args[0])
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


if __name__ == "__main__":
    raise SystemExit(main())
