"""A per-source SQLite record of files already validated: an interrupted build resumes where it stopped, and the
build keeps every sample here (on disk), not in memory.

One row per validated file (keyed by path and ``file_stamp``: size, mtime, ctime) and one row per record it gave,
as JSON. A file's records are stored as its reader gives them (``put`` consumes an iterator), never held whole.
Arrays (EEG epochs, expression profiles, gene indices: every ndarray) go to one binary side file per validated file
(all of its records' arrays, concatenated) and are read back with ``os.pread`` one array at a time, so neither the
database nor the build's memory (nor its resident mapped pages) holds a source's arrays, and a file of 200,000 cells
makes one side file, not 400,000."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from collections import OrderedDict
from itertools import repeat
from typing import Iterable, Iterator, Sequence

import numpy as np

from multimed_hf.data.sample import RejectedRecord, Sample, sample_from_json, sample_to_json

__all__ = ["ValidationCache", "encode_body", "file_stamp", "stamp_of"]

#: Seconds between commits while files are validated (and always on close: an interrupted build keeps them).
COMMIT_EVERY = 2.0
#: Finished files (and records) whose outcomes ``put`` holds before writing them to SQLite at once: one write per
#: batch instead of four statements a file, and a bound on what is held (a file of 200,000 cells streams through).
PUT_FILES = 256
PUT_RECORDS = 256
#: Side files kept open for reading at once (least recently used closed first).
OPEN_SIDE_FILES = 32
#: Records ``records_at`` asks SQLite for at once (three bound values each, far below SQLite's limit).
KEYS_PER_QUERY = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, ctime INTEGER, error TEXT, count INTEGER
);
CREATE TABLE IF NOT EXISTS records (path TEXT, idx INTEGER, body TEXT, PRIMARY KEY (path, idx)) WITHOUT ROWID;
"""


def file_stamp(file: str | os.PathLike) -> tuple[int, int, int]:
    """A file's size, ``st_mtime_ns`` and ``st_ctime_ns``: what says it changed since it was validated. The ctime
    too: a file rewritten in place whose mtime was set back (``os.utime``, ``touch -r``, ``rsync -t``) has a new
    ctime, which no call can set. A broken link's own stamp (``lstat``): it is rejected, and read again once its
    target is there."""
    try:
        stat = os.stat(file)
    except OSError:  # a link whose target is missing (or a loop of links)
        stat = os.lstat(file)
    return stamp_of(stat)


def stamp_of(stat: os.stat_result) -> tuple[int, int, int]:
    """``file_stamp`` of a file's ``stat``."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class _HasArray(Exception):
    """A record holds an ndarray: its body is made by ``put``, which writes the array to the file's side file."""


def _refuse_array(array: np.ndarray) -> dict:
    raise _HasArray


def encode_body(record: Sample | RejectedRecord) -> str | None:
    """The JSON body ``put`` stores for ``record``, made ahead (where a worker process reads the file, so that the
    build's main process only inserts it); None for a record holding an array (``put`` saves it to the side file)."""
    try:
        return json.dumps(sample_to_json(record, _refuse_array))
    except _HasArray:
        return None


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
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(files)")]
        if columns and "ctime" not in columns:  # written before files were stamped with their ctime: read again
            self._db.executescript("DROP TABLE files; DROP TABLE records;")
            shutil.rmtree(self.arrays_dir, ignore_errors=True)  # side files named by the old stamps
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if row is None or row[0] != version:  # another reader version or registry facts: validate everything again
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM records")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (version,))
        self._db.commit()
        self._last_commit = time.monotonic()
        #: Seconds between commits while files are validated; 0 where other processes write this cache meanwhile (a
        #: build's worker processes): each write then commits at once, holding no lock that they would wait on.
        self.commit_every = COMMIT_EVERY
        self._records: list[tuple[str, int, str]] = []  # held by ``put``: (path, idx, body)
        self._files: dict[str, tuple] = {}  # held by ``put``: finished files' rows, by path
        self._open: list[str] = []  # the file ``put`` is consuming, if any
        self._flushed: set[str] = set()  # a streaming file some of whose records were written

    def validated(self) -> Iterator[str]:
        """The paths of every file validated before (whether or not it has changed since), sorted as Python sorts
        strings (SQLite's binary order of UTF-8 is code-point order): a build walks them beside its sorted file list
        instead of asking for each file."""
        self._flush()
        for (path,) in self._db.execute("SELECT path FROM files ORDER BY path"):
            yield path

    def lookup(self, relpath: str, file: str | os.PathLike) -> tuple[int, str | None] | None:
        """``(records, error)`` of a file validated before and unchanged since (its records read with
        ``records``); None for a file to validate."""
        self._held(relpath)
        row = self._db.execute("SELECT size, mtime, ctime, error, count FROM files WHERE path = ?",
                               (relpath,)).fetchone()
        if row is None or row[:3] != file_stamp(file):
            return None
        return row[4], row[3]

    def records(self, relpath: str) -> Iterator[Sample | RejectedRecord]:
        """A validated file's records in their order, streamed (a file of many records is never held whole)."""
        self._held(relpath)
        cursor = self._db.execute("SELECT body FROM records WHERE path = ? ORDER BY idx", (relpath,))
        for (body,) in cursor:
            yield self._decode(body)

    def record(self, relpath: str, index: int) -> Sample | RejectedRecord:
        """One record of a validated file."""
        self._held(relpath)
        row = self._db.execute("SELECT body FROM records WHERE path = ? AND idx = ?", (relpath, index)).fetchone()
        if row is None:
            raise KeyError(f"{self.path}: no record {index} of {relpath!r}; rebuild to validate it again")
        return self._decode(row[0])

    def records_at(self, keys: Sequence[tuple[str, int]]) -> list[Sample | RejectedRecord]:
        """Records of validated files by ``(relpath, index)``, in the order given: one query per ``KEYS_PER_QUERY``
        keys rather than one per record (a shard's row group at a time)."""
        self._flush()
        out: list = []
        for start in range(0, len(keys), KEYS_PER_QUERY):
            chunk = keys[start:start + KEYS_PER_QUERY]
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            params = [v for k, (relpath, index) in enumerate(chunk) for v in (k, relpath, index)]
            found = dict(self._db.execute(
                f"WITH want (k, path, idx) AS (VALUES {values}) "
                "SELECT want.k, r.body FROM want JOIN records r ON r.path = want.path AND r.idx = want.idx", params
            ).fetchall())
            if len(found) < len(chunk):
                relpath, index = next(key for k, key in enumerate(chunk) if k not in found)
                raise KeyError(f"{self.path}: no record {index} of {relpath!r}; rebuild to validate it again")
            out.extend(self._decode(found[k]) for k in range(len(chunk)))
        return out

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

    def put(self, relpath: str, file: str | os.PathLike | None, records: Iterable | None, error: str | None = None,
            *, stamp: tuple[int, int] | None = None, parts: bool = False) -> int:
        """Record a file's outcome: its records, consumed from ``records`` as they come (arrays to the file's one
        side file; a ``str`` is a record's body made ahead by ``encode_body``), or the reason it gave none. Returns
        the number of records. Whatever consuming ``records`` raises (a reader failing part-way) removes what this
        file had stored and raises again: a file is stored whole or not at all.

        Outcomes are held and written ``PUT_FILES`` files (or ``PUT_RECORDS`` records) at a time, in one
        transaction: a file's row goes in with, or after, the last of its records, so an interrupted build (whose
        ``close`` writes what was held) never finds a file row with half its records; a file read again has its
        previous row removed before any of its new records are written.

        ``stamp``: the file's ``file_stamp`` where it was taken before the file was read (by the worker that
        read it; ``file`` is then not looked at), else taken now. ``parts``: ``records`` is an iterable of lists
        of records (a reader's parts), each stored at once."""
        stamp = file_stamp(file) if stamp is None else tuple(stamp)
        name = tmp = None  # the side file, named on its first array (most files have none)
        handle = None
        offset = 0

        def save(array: np.ndarray) -> dict:
            nonlocal handle, offset, name, tmp
            if handle is None:
                name = hashlib.sha256(json.dumps([relpath, list(stamp)]).encode()).hexdigest()[:32] + ".bin"
                tmp = self.arrays_dir / (name[:-4] + ".tmp")
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

        if relpath in self._files:  # stored twice in one batch: the first outcome is written, then replaced
            self._flush()
        self._open.append(relpath)
        start = len(self._records)
        held = self._records
        count = 0
        try:
            for part in (records or ()) if parts else ((sample,) for sample in records or ()):
                bodies = [s if isinstance(s, str) else json.dumps(sample_to_json(s, save)) for s in part]
                held.extend(zip(repeat(relpath), range(count, count + len(bodies)), bodies))
                count += len(bodies)
                if len(held) >= PUT_RECORDS:
                    self._flush()
                    start = 0
        except BaseException:
            if handle is not None:
                handle.close()
                tmp.unlink(missing_ok=True)
            del held[start:]
            self._open.remove(relpath)
            if relpath in self._flushed:  # some of its records were written: they go (its old row went before)
                self._db.execute("DELETE FROM records WHERE path = ?", (relpath,))
                if not self.commit_every:
                    self._db.commit()
            raise
        if handle is not None:
            handle.close()
            self._forget(name)
            tmp.replace(self.arrays_dir / name)
        self._files[relpath] = (relpath, *stamp, error, count)
        self._open.remove(relpath)
        if len(self._files) >= PUT_FILES:
            self._flush()
        return count

    def put_many(self, files: Sequence[tuple[str, tuple[int, int, int], list[str]]]) -> None:
        """``put`` of whole files at once, each ``(relpath, stamp, bodies)``: its stamp taken before it was read
        and its records' bodies made ahead (``encode_body``), as ``put`` would store them."""
        held, rows = self._records, self._files
        for relpath, (size, mtime, ctime), bodies in files:
            if relpath in rows:  # stored twice in one batch: the first outcome is written, then replaced
                self._flush()
            held.extend(zip(repeat(relpath), range(len(bodies)), bodies))
            rows[relpath] = (relpath, size, mtime, ctime, None, len(bodies))
        if len(rows) >= PUT_FILES or len(held) >= PUT_RECORDS:
            self._flush()

    def _flush(self) -> None:
        """Write the outcomes held (see ``put``), committing at most every ``commit_every`` seconds."""
        if not self._files and not self._records:
            return
        db = self._db
        # a file met for the first time in this flush loses its old outcome first: a finished file its records
        # beyond its new count (the others are replaced), a file still streaming its row and all its records
        db.executemany("DELETE FROM records WHERE path = ? AND idx >= ?",
                       [(path, row[-1]) for path, row in self._files.items() if path not in self._flushed])
        streaming = [(path,) for path in self._open if path not in self._flushed]
        db.executemany("DELETE FROM files WHERE path = ?", streaming)
        db.executemany("DELETE FROM records WHERE path = ?", streaming)
        db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", self._records)
        db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", self._files.values())
        self._flushed = set(self._open)
        self._records.clear()
        self._files.clear()
        if time.monotonic() - self._last_commit >= self.commit_every:
            db.commit()
            self._last_commit = time.monotonic()

    def _held(self, relpath: str) -> None:
        """Write what is held of ``relpath`` before it is read back."""
        if relpath in self._files or relpath in self._open:
            self._flush()

    def commit(self) -> None:
        self._flush()
        self._db.commit()

    def close(self) -> None:
        """Commit what was validated (an interrupted build keeps it) and close the database and side files."""
        self._flush()
        self._db.commit()
        self._db.close()
        while self._handles:
            os.close(self._handles.popitem()[1])
