"""The manifest: every source file seen, with its status (kept, moved, dropped, rejected, ignored), reason, group, split."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from dataclasses import dataclass, fields
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

__all__ = [
    "ManifestEntry", "ManifestView", "STATUSES", "iter_manifest", "manifest_line", "read_manifest", "write_manifest",
    "write_manifest_lines", "MANIFEST_NAME", "StaleManifest", "kept_samples",
]

MANIFEST_NAME = "manifest.jsonl"
#: ``ignored``: a file of the download that holds no data of any source (system litter, documents, archives).
STATUSES = ("kept", "moved", "dropped", "rejected", "ignored")


def kept_samples(counts, index_files: int = 0, data_files: int = 0) -> int:
    """The samples a build kept, from its manifest's counts by status: kept and moved entries, less the index files
    (read for other files' labels) and data files (stored with other files' samples) listed as kept."""
    return counts.get("kept", 0) + counts.get("moved", 0) - index_files - data_files


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


_FIELDS = tuple(f.name for f in fields(ManifestEntry))
#: A manifest line with its fields in key order (as ``json.dumps(..., sort_keys=True)`` writes them), for values
#: that are JSON strings or ``null``.
_ORDER = sorted(range(len(_FIELDS)), key=lambda i: _FIELDS[i])
_LINE = "{" + ", ".join(f'"{_FIELDS[i]}": %s' for i in _ORDER) + "}\n"


def _line(values: Sequence, encode=json.JSONEncoder(sort_keys=True).encode) -> str:
    """One entry's line from its field values in ``ManifestEntry``'s order: ``json.dumps`` of the fields with
    sorted keys, byte for byte, without a dict made per entry (any value that is not a str or None: through it)."""
    try:
        return _LINE % tuple("null" if values[i] is None else encode_basestring_ascii(values[i]) for i in _ORDER)
    except TypeError:
        return encode(dict(zip(_FIELDS, values))) + "\n"


def manifest_line(values: Sequence) -> str:
    """One entry's line (``json.dumps`` of its fields, keys sorted, and a newline) from its field values in
    ``ManifestEntry``'s order."""
    return _line(values)


def write_manifest_lines(path: Path, lines: Iterable[str]) -> Path:
    """Write a manifest file from its lines (``manifest_line``'s, made as a build streams its entries)."""
    with Path(path).open("w") as handle:
        handle.writelines(lines)
    return Path(path)


def write_manifest(config_dir: Path, entries: Iterable[ManifestEntry | tuple]) -> Path:
    """Write the entries (any iterable: a build streams them from disk, as tuples of the fields in
    ``ManifestEntry``'s order, made into no object) as ``manifest.jsonl``."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / MANIFEST_NAME
    with path.open("w") as handle:
        for entry in entries:  # the fields by hand: asdict deep-copies each value (one entry per file and sample)
            values = entry if isinstance(entry, tuple) else [getattr(entry, name) for name in _FIELDS]
            handle.write(_line(values))
    return path


def iter_manifest(config_dir: Path) -> Iterator[ManifestEntry]:
    """The config's manifest entries, one line at a time (none before the first build)."""
    path = Path(config_dir) / MANIFEST_NAME
    if not path.is_file():
        return
    with path.open() as handle:
        for line in handle:
            if line.strip():
                yield ManifestEntry(**json.loads(line))


def read_manifest(config_dir: Path) -> list[ManifestEntry]:
    """The config's manifest, or an empty list before the first build."""
    return list(iter_manifest(config_dir))


class StaleManifest(ValueError):
    """A build report's manifest was rewritten by a later build."""


class ManifestView(Sequence):
    """A written manifest as a sequence of entries, read from its file on each pass, never held whole (a build of
    millions of samples reports them all). It belongs to the build that wrote it: once a later build rewrites the
    file, reading it raises ``StaleManifest`` (``read_manifest`` reads the new one)."""

    def __init__(self, config_dir: Path):
        self.path = Path(config_dir) / MANIFEST_NAME
        self._stamp = self._stat()
        self._len: int | None = None

    def _stat(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def __iter__(self) -> Iterator[ManifestEntry]:
        if not self.path.is_file() or self._stat() != self._stamp:
            raise StaleManifest(
                f"{self.path}: rewritten (or removed) by a later build since this report was made; expected the "
                "manifest this build wrote: use read_manifest(config_dir) for the current one"
            )
        return iter_manifest(self.path.parent)

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        found = next(islice(iter(self), index, None), None) if index >= 0 else None
        if found is None:
            raise IndexError(f"manifest entry {index} of {len(self)}")
        return found

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        if len(self) != len(other):
            return False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ManifestView({self.path}, {len(self)} entries)"
