"""Files that hold many records (chains, epochs, sequences, QA items): bad records named without losing the rest.

(And ``dependency_version``, for samples made from more than one file.)

A file whose records are partly bad keeps its good records as samples; its bad ones are returned as
``RejectedRecord`` entries ``<file>:row <record>`` (cached with the file, listed as rejected in the manifest). A
file with no good record is rejected whole, with its records' reasons.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import RejectedRecord, Sample

__all__ = ["RecordRejections", "record_where", "dependency_version", "update_with_content"]


def dependency_version(reading_version: str, files: Iterable[Path]) -> str:
    """A builder version that also changes with the content of ``files``: for samples read from one file but made
    with others (a QA file's images, a FASTA's expression table), whose validation-cache entry is keyed by the
    first file alone. Content, not time stamps, so two copies of one release build the same shards."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0")
        update_with_content(digest, path)
    return f"{reading_version}:{digest.hexdigest()[:12]}"


def update_with_content(digest, path: Path) -> None:
    """Feed ``path``'s bytes to ``digest``; a file that cannot be read (permission denied, a folder of that name)
    feeds its error's name instead: reading it rejects it, named, rather than the version stopping the build."""
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        digest.update(f"unreadable: {type(err).__name__}".encode())


def record_where(relpath: str, record: str) -> str:
    """The manifest's name for one record of a file (``:row`` marks a record, as for index-file rows)."""
    return f"{relpath}:row {record}"


class RecordRejections:
    """Mixin for a ``SourceBuilder``: call ``keep_records`` at the end of ``read_file`` for record-bearing files."""

    #: What a record is called in the message of a file with none usable ("chain", "epoch", "record").
    record_noun = "record"

    def keep_records(
        self, relpath: str, samples: list[Sample], bad: list[tuple[str, str]]
    ) -> list[Sample | RejectedRecord]:
        """``samples`` plus each bad ``(record, reason)`` as a ``RejectedRecord`` (the manifest lists it); a file
        with no usable record raises ``BadSourceFile`` naming its bad records."""
        if not samples and bad:
            shown = "; ".join(f"{record}: {reason}" for record, reason in bad[:5])
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise BadSourceFile(f"no usable {self.record_noun}: {shown}{more}")
        return [*samples, *(RejectedRecord(record_where(relpath, record), reason) for record, reason in bad)]
