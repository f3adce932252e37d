"""A per-source SQLite record of files already validated: an interrupted build resumes where it stopped, and the
build keeps every sample here (on disk), not in memory.

One row per validated file (keyed by path, size and mtime) and one row per record it gave, as JSON. Arrays (EEG
epochs, expression profiles, gene indices: every ndarray) go to one binary side file per validated file (all of its
records' arrays, concatenated) and come back as memory-mapped views, so neither the database nor the build's memory
holds a source's arrays, and a file of 200,000 cells makes one side file, not 400,000."""

from __future__ import annotations

import hashlib
import json
import mmap
import sqlite3
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from multimed_hf.data.sample import RejectedRecord, Sample, sample_from_json, sample_to_json

__all__ = ["ValidationCache"]

#: Seconds between commits while files are validated (and always on close: an interrupted build keeps them).
COMMIT_EVERY = 2.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, error TEXT, count INTEGER);
CREATE TABLE IF NOT EXISTS records (path TEXT, idx INTEGER, body TEXT, PRIMARY KEY (path, idx)) WITHOUT ROWID;
"""


class ValidationCache:
    """Validated files and their records, for one source of one config (``path``: the SQLite file)."""

    def __init__(self, path: Path, version: str):
        self.path = Path(path)
        self.version = version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.arrays_dir = self.path.with_suffix(".arrays")
        self._maps: dict[str, mmap.mmap] = {}
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if row is None or row[0] != version:  # another reader version or registry facts: validate everything again
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM records")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (version,))
        self._db.commit()
        self._last_commit = time.monotonic()

    @staticmethod
    def _stamp(file: Path) -> tuple[int, int]:
        stat = file.stat()
        return stat.st_size, stat.st_mtime_ns

    def lookup(self, relpath: str, file: Path) -> tuple[int, str | None] | None:
        """``(records, error)`` of a file validated before and unchanged since (its records read with
        ``records``); None for a file to validate."""
        row = self._db.execute("SELECT size, mtime, error, count FROM files WHERE path = ?", (relpath,)).fetchone()
        if row is None or (row[0], row[1]) != self._stamp(file):
            return None
        return row[3], row[2]

    def records(self, relpath: str) -> Iterator[Sample | RejectedRecord]:
        """A validated file's records in their order, streamed (a file of many records is never held whole)."""
        cursor = self._db.execute("SELECT body FROM records WHERE path = ? ORDER BY idx", (relpath,))
        for (body,) in cursor:
            yield self._decode(body)

    def record(self, relpath: str, index: int) -> Sample | RejectedRecord:
        """One record of a validated file."""
        row = self._db.execute("SELECT body FROM records WHERE path = ? AND idx = ?", (relpath, index)).fetchone()
        if row is None:
            raise KeyError(f"{self.path}: no record {index} of {relpath!r}; rebuild to validate it again")
        return self._decode(row[0])

    def _decode(self, body: str) -> Sample | RejectedRecord:
        """A record from its JSON, short strings interned: a file's cells share their panel, tissue, donor..."""
        sample = sample_from_json(json.loads(body), self._load_array)
        if isinstance(sample, Sample):
            sample.source_path = sys.intern(sample.source_path)
            for key, value in sample.fields.items():
                if isinstance(value, str) and len(value) <= 256:
                    sample.fields[key] = sys.intern(value)
        return sample

    def _load_array(self, ref: dict) -> np.ndarray:
        """A read-only view over the memory-mapped side file: ``ref`` is ``{"file", "offset", "dtype", "shape"}``."""
        mapped = self._maps.get(ref["file"])
        if mapped is None:
            with (self.arrays_dir / ref["file"]).open("rb") as handle:
                mapped = self._maps[ref["file"]] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        dtype = np.dtype(ref["dtype"])
        count = int(np.prod(ref["shape"], dtype=np.int64))
        if ref["offset"] + count * dtype.itemsize > len(mapped):
            raise ValueError(f"side file {ref['file']} is shorter than its index says")
        if count == 0:
            return np.empty(ref["shape"], dtype=dtype)
        # a plain read-only ndarray over the mapping (lighter than an np.memmap view: one per array, many arrays)
        return np.frombuffer(mapped, dtype=dtype, count=count, offset=ref["offset"]).reshape(ref["shape"])

    def put(self, relpath: str, file: Path, samples: list | None, error: str | None) -> None:
        """Record a file's outcome: its records (arrays to the file's one side file) or the reason it gave none."""
        stamp = self._stamp(file)
        name = hashlib.sha256(json.dumps([relpath, list(stamp)]).encode()).hexdigest()[:32] + ".bin"
        target = self.arrays_dir / name
        tmp = target.with_suffix(".tmp")
        handle = None
        offset = 0

        def save(array: np.ndarray) -> dict:
            nonlocal handle, offset
            if handle is None:
                self.arrays_dir.mkdir(parents=True, exist_ok=True)
                handle = tmp.open("wb")
            data = np.ascontiguousarray(array)
            pad = -offset % 16  # aligned views for every dtype
            handle.write(b"\0" * pad)
            offset += pad
            ref = {"file": name, "offset": offset, "dtype": data.dtype.str, "shape": list(data.shape)}
            handle.write(data.tobytes())
            offset += data.nbytes
            return {"__array__": ref}

        try:
            bodies = [(relpath, i, json.dumps(sample_to_json(s, save))) for i, s in enumerate(samples or ())]
        finally:
            if handle is not None:
                handle.close()
        if handle is not None:
            self._maps.pop(name, None)  # views of the replaced file keep its old mapping alive until they go
            tmp.replace(target)
        self._db.execute("DELETE FROM records WHERE path = ?", (relpath,))
        self._db.executemany("INSERT INTO records VALUES (?, ?, ?)", bodies)
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", (relpath, *stamp, error, len(bodies))
        )
        if time.monotonic() - self._last_commit > COMMIT_EVERY:
            self._db.commit()
            self._last_commit = time.monotonic()

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        """Commit what was validated (an interrupted build keeps it) and close the database and side files."""
        self._db.commit()
        self._db.close()
        self._maps.clear()  # each mapping closes when the last array viewing it goes
