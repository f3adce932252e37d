"""A per-source SQLite record of files already validated: an interrupted build resumes where it stopped, and the
build keeps every sample here (on disk), not in memory.

One row per validated file (keyed by path, size and mtime) and one row per record it gave, as JSON. A file's records
are stored as its reader gives them (``put`` consumes an iterator), never held whole. Arrays (EEG epochs, expression
profiles, gene indices: every ndarray) go to one binary side file per validated file (all of its records' arrays,
concatenated) and are read back with ``os.pread`` one array at a time, so neither the database nor the build's
memory (nor its resident mapped pages) holds a source's arrays, and a file of 200,000 cells makes one side file,
not 400,000."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from collections import OrderedDict
from typing import Iterable, Iterator

import numpy as np

from multimed_hf.data.sample import RejectedRecord, Sample, sample_from_json, sample_to_json

__all__ = ["ValidationCache"]

#: Seconds between commits while files are validated (and always on close: an interrupted build keeps them).
COMMIT_EVERY = 2.0
#: Side files kept open for reading at once (least recently used closed first).
OPEN_SIDE_FILES = 32

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
        self._handles: OrderedDict[str, int] = OrderedDict()  # side file -> open descriptor
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
        """One array read from its side file (``ref``: ``{"file", "offset", "dtype", "shape"}``), read-only."""
        dtype = np.dtype(ref["dtype"])
        count = int(np.prod(ref["shape"], dtype=np.int64))
        if count == 0:
            return np.empty(ref["shape"], dtype=dtype)
        nbytes = count * dtype.itemsize
        data = os.pread(self._handle(ref["file"]), nbytes, ref["offset"])
        if len(data) != nbytes:
            raise ValueError(f"side file {self.arrays_dir / ref['file']} is shorter than its index says")
        return np.frombuffer(data, dtype=dtype).reshape(ref["shape"])

    def _handle(self, name: str) -> int:
        handle = self._handles.pop(name, None)
        if handle is None:
            handle = os.open(self.arrays_dir / name, os.O_RDONLY)
            while len(self._handles) >= OPEN_SIDE_FILES:
                os.close(self._handles.popitem(last=False)[1])
        self._handles[name] = handle
        return handle

    def _forget(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            os.close(handle)

    def put(self, relpath: str, file: Path, records: Iterable | None, error: str | None = None) -> int:
        """Record a file's outcome: its records, consumed from ``records`` as they come (arrays to the file's one
        side file), or the reason it gave none. Returns the number of records. Whatever consuming ``records``
        raises (a reader failing part-way) removes what this file had stored and raises again: a file is stored
        whole or not at all."""
        stamp = self._stamp(file)
        name = hashlib.sha256(json.dumps([relpath, list(stamp)]).encode()).hexdigest()[:32] + ".bin"
        target = self.arrays_dir / name
        tmp = target.with_suffix(".tmp")
        handle = None
        offset = 0
        count = 0

        def save(array: np.ndarray) -> dict:
            nonlocal handle, offset
            if handle is None:
                self.arrays_dir.mkdir(parents=True, exist_ok=True)
                handle = tmp.open("wb")
            data = np.ascontiguousarray(array)
            pad = -offset % 16  # aligned arrays for every dtype
            handle.write(b"\0" * pad)
            offset += pad
            ref = {"file": name, "offset": offset, "dtype": data.dtype.str, "shape": list(data.shape)}
            handle.write(data.tobytes())
            offset += data.nbytes
            return {"__array__": ref}

        def bodies():
            nonlocal count
            for i, sample in enumerate(records or ()):
                count += 1
                yield relpath, i, json.dumps(sample_to_json(sample, save))

        # the file's old outcome goes first: an interrupted put leaves no file row, so the file is read again
        self._db.execute("DELETE FROM files WHERE path = ?", (relpath,))
        self._db.execute("DELETE FROM records WHERE path = ?", (relpath,))
        try:
            self._db.executemany("INSERT INTO records VALUES (?, ?, ?)", bodies())
        except BaseException:
            if handle is not None:
                handle.close()
                tmp.unlink(missing_ok=True)
            self._db.execute("DELETE FROM records WHERE path = ?", (relpath,))
            raise
        if handle is not None:
            handle.close()
            self._forget(name)
            tmp.replace(target)
        self._db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", (relpath, *stamp, error, count))
        if time.monotonic() - self._last_commit > COMMIT_EVERY:
            self._db.commit()
            self._last_commit = time.monotonic()
        return count

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        """Commit what was validated (an interrupted build keeps it) and close the database and side files."""
        self._db.commit()
        self._db.close()
        while self._handles:
            os.close(self._handles.popitem()[1])
