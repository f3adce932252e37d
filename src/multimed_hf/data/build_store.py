"""What a build knows of every sample (ids, grouping key, hashes, group, split) and every manifest entry, in a
temporary SQLite file beside the validation caches: a build's memory does not grow with its number of files or rows.

The samples themselves stay in the sources' validation caches (``data/cache.py``); here each valid sample is one
row of small keys, each manifest entry one row, and the build's phases (duplicate ids, label conflicts, grouping,
splits, shard order) are queries over them. Row and entry ids are the order the build met them in."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from multimed_hf.data.manifest import ManifestEntry

__all__ = ["BuildStore", "ROW_FIELDS"]

#: Rows (and entries) inserted, and read back, at once: what a build holds of its samples at any time.
FLUSH_EVERY = 4096

#: The columns of a sample's row, in ``add_row``'s order.
ROW_FIELDS = (
    "owner", "relpath", "idx", "sample_id", "source_path", "group_key", "published", "content_hash", "dct",
    "wavelet", "labels", "note", "payload",
)

_SCHEMA = """
CREATE TABLE sources (owner INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE rows (
    id INTEGER PRIMARY KEY, owner INTEGER NOT NULL, relpath TEXT NOT NULL, idx INTEGER NOT NULL,
    sample_id TEXT NOT NULL, source_path TEXT NOT NULL, group_key TEXT, published TEXT, content_hash TEXT,
    dct INTEGER, wavelet INTEGER, labels BLOB NOT NULL, note TEXT NOT NULL, payload INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,  -- 0 valid, 1 rejected: duplicate id, 2 rejected: label conflict
    kid INTEGER, grp TEXT, split TEXT
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, source_path TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL, sample_id TEXT, grp TEXT, split TEXT
);
CREATE TABLE keys (kid INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, root INTEGER);
CREATE TABLE decisions (grp TEXT NOT NULL, published TEXT, split TEXT, status TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE previous (
    source TEXT NOT NULL, source_path TEXT NOT NULL, sample_id TEXT NOT NULL, split TEXT,
    PRIMARY KEY (source, source_path, sample_id)
) WITHOUT ROWID;
"""
#: The rows' indexes, made once the build first queries them (after its first source is read): filled by one sort
#: rather than kept up to date by every insert of the reading, whose rows the main process stores alone.
_INDEXES = """
CREATE INDEX IF NOT EXISTS rows_by_id ON rows (owner, sample_id);
CREATE INDEX IF NOT EXISTS rows_by_content ON rows (content_hash) WHERE content_hash IS NOT NULL;
"""


def _signed(value: int) -> int:
    """An unsigned 64-bit value as SQLite's signed INTEGER (``np.int64(...).view(np.uint64)`` undoes it)."""
    return value - (1 << 64) if value >= 1 << 63 else value


class BuildStore:
    """The rows and manifest entries of one build, in ``path`` (replaced if present, deleted on ``close``)."""

    def __init__(self, path: Path, sources: list[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=OFF")  # scratch data: a crash leaves nothing worth recovering
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-2048")  # 2 MiB of pages (SQLite's default), whatever the build's size
        self.db.executescript(_SCHEMA)
        self.db.executemany("INSERT INTO sources VALUES (?, ?)", enumerate(sources))
        self.batch = FLUSH_EVERY
        self._rows: list[tuple] = []
        self._entries: list[tuple] = []
        self.next_row = 1
        self.next_entry = 1
        self._indexed = False

    # -- writing, buffered --------------------------------------------------------------------------------------

    def add_row(self, owner: int, relpath: str, idx: int, sample_id: str, source_path: str, group_key: str | None,
                published: str | None, content_hash: str | None, perceptual_hash: int | None, labels: bytes,
                note: str, payload: int) -> None:
        dct = wavelet = None
        if perceptual_hash is not None:
            dct, wavelet = _signed(perceptual_hash >> 64), _signed(perceptual_hash & ((1 << 64) - 1))
        self._rows.append((self.next_row, owner, relpath, idx, sample_id, source_path, group_key, published,
                           content_hash, dct, wavelet, labels, note, payload))
        self.next_row += 1
        if len(self._rows) >= self.batch:
            self.flush()

    def add_entry(self, entry: ManifestEntry) -> None:
        self.add_entry_values(entry.source, entry.source_path, entry.status, entry.reason, entry.sample_id,
                              entry.group, entry.split)

    def add_entry_values(self, source: str, source_path: str, status: str, reason: str, sample_id: str | None,
                         group: str | None, split: str | None) -> None:
        """``add_entry`` of an entry's fields (one of ``STATUSES``: the caller's to check), made into no object."""
        self._entries.append((self.next_entry, source, source_path, status, reason, sample_id, group, split))
        self.next_entry += 1
        if len(self._entries) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self.db.executemany(f"INSERT INTO rows (id, {', '.join(ROW_FIELDS)}) VALUES "
                                f"({', '.join('?' * (len(ROW_FIELDS) + 1))})", self._rows)
            self._rows.clear()
        if self._entries:
            self.db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._entries)
            self._entries.clear()

    def mark(self) -> tuple[int, int]:
        """Where the next row and entry go: ``discard(mark)`` removes what was added since (a file rejected after
        some of its records were read)."""
        return self.next_row, self.next_entry

    def discard(self, mark: tuple[int, int]) -> None:
        row, entry = mark
        self._rows = [r for r in self._rows if r[0] < row]
        self._entries = [e for e in self._entries if e[0] < entry]
        self.db.execute("DELETE FROM rows WHERE id >= ?", (row,))
        self.db.execute("DELETE FROM entries WHERE id >= ?", (entry,))
        self.next_row, self.next_entry = mark

    def query(self, sql: str, params: Iterable = ()) -> sqlite3.Cursor:
        self._ready()
        return self.db.execute(sql, tuple(params))

    def update_many(self, sql: str, params: Iterable) -> None:
        self._ready()
        self.db.executemany(sql, params)

    def _ready(self) -> None:
        """What is held written, and the rows' indexes made (the first time)."""
        self.flush()
        if not self._indexed:
            self.db.executescript(_INDEXES)
            self._indexed = True

    # -- grouping --------------------------------------------------------------------------------------------------

    def number_keys(self) -> int:
        """Give every valid row its grouping key (``source:group_key``, else ``source:sample_id``) and number the
        distinct keys 0.. in sorted order (so the smallest number of a component is its smallest key); returns
        how many keys there are."""
        self._ready()
        key = "(SELECT name FROM sources s WHERE s.owner = rows.owner) || ':' || COALESCE(NULLIF(group_key, ''), sample_id)"
        self.db.execute(f"INSERT INTO keys (kid, key) SELECT ROW_NUMBER() OVER (ORDER BY k) - 1, k FROM "
                        f"(SELECT DISTINCT {key} AS k FROM rows WHERE state = 0)")
        self.db.execute(f"UPDATE rows SET kid = (SELECT kid FROM keys WHERE keys.key = {key}) WHERE state = 0")
        self.db.execute("UPDATE keys SET root = kid")
        return self.db.execute("SELECT COUNT(*) FROM keys").fetchone()[0]

    def set_groups(self, roots: np.ndarray) -> None:
        """Every key's component (``roots[kid]``: the smallest key number in it) names the group of its rows."""
        moved = np.flatnonzero(roots != np.arange(len(roots)))
        self.db.executemany("UPDATE keys SET root = ? WHERE kid = ?",
                            ((int(roots[k]), int(k)) for k in moved))
        self.db.execute("UPDATE rows SET grp = (SELECT r.key FROM keys k JOIN keys r ON r.kid = k.root "
                        "WHERE k.kid = rows.kid) WHERE state = 0")
        self.db.execute("CREATE INDEX rows_by_group ON rows (grp, published) WHERE state = 0")

    def hashes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(key numbers, content ranks, dct, wavelet)`` of the valid rows with a perceptual hash, in read order
        (32 bytes a row); rows of equal content share a rank (``DENSE_RANK`` over the content hash)."""
        count = self.query("SELECT COUNT(*) FROM rows WHERE state = 0 AND dct IS NOT NULL").fetchone()[0]
        columns = np.empty((count, 4), dtype=np.int64)
        cursor = self.db.execute(
            "SELECT kid, DENSE_RANK() OVER (ORDER BY content_hash), dct, wavelet FROM rows "
            "WHERE state = 0 AND dct IS NOT NULL ORDER BY id"
        )
        at = 0
        while batch := cursor.fetchmany(self.batch):
            columns[at:at + len(batch)] = batch
            at += len(batch)
        unsigned = columns[:, 2:].view(np.uint64)
        return (np.ascontiguousarray(columns[:, 0]), np.ascontiguousarray(columns[:, 1]),
                np.ascontiguousarray(unsigned[:, 0]), np.ascontiguousarray(unsigned[:, 1]))

    # -- previous build, manifest ---------------------------------------------------------------------------------

    def load_previous(self, entries: Iterator[ManifestEntry]) -> None:
        """The previous build's manifest (later lines win, as in a dict), for reporting moves."""
        batch = []
        for e in entries:
            if e.sample_id is not None:
                batch.append((e.source, e.source_path, e.sample_id, e.split))
            if len(batch) >= self.batch:
                self.db.executemany("INSERT OR REPLACE INTO previous VALUES (?, ?, ?, ?)", batch)
                batch.clear()
        self.db.executemany("INSERT OR REPLACE INTO previous VALUES (?, ?, ?, ?)", batch)

    def manifest(self) -> Iterator[tuple]:
        """Every entry as a tuple of its fields in ``ManifestEntry``'s order (what ``write_manifest`` writes, no
        object made), sorted by source, path and sample id (ties in the order they were added)."""
        cursor = self.query("SELECT source, source_path, status, reason, sample_id, grp, split FROM entries "
                            "ORDER BY source, source_path, COALESCE(sample_id, ''), id")
        while batch := cursor.fetchmany(self.batch):
            yield from batch

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
