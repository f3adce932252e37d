"""The manifest: every source file seen, with its status (kept, moved, dropped, rejected), reason, group, split."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["ManifestEntry", "STATUSES", "read_manifest", "write_manifest", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.jsonl"
STATUSES = ("kept", "moved", "dropped", "rejected")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One line of the manifest (slots: a build holds one per file and sample)."""

    source: str
    source_path: str
    status: str
    reason: str = ""
    sample_id: str | None = None
    group: str | None = None
    split: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"manifest status {self.status!r}; expected one of {STATUSES}")


def write_manifest(config_dir: Path, entries: list[ManifestEntry]) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / MANIFEST_NAME
    with path.open("w") as handle:
        for entry in entries:
            handle.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
    return path


def read_manifest(config_dir: Path) -> list[ManifestEntry]:
    """The config's manifest, or an empty list before the first build."""
    path = Path(config_dir) / MANIFEST_NAME
    if not path.is_file():
        return []
    return [ManifestEntry(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
