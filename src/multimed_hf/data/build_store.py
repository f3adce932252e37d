"""What a build knows of every sample (ids, grouping key, hashes, group, split) and every manifest entry, in a
temporary SQLite file beside the validation caches: a build's memory does not grow with its number of files or rows.

The samples themselves stay in the sources' validation caches (``data/cache.py``); here each valid sample is one
row of small keys, each other manifest entry (a rejection, an index file...) one row of ``entries`` (a valid
sample's entry is made from its row and its group's decision when the manifest is written), and the build's phases
(duplicate ids, label conflicts, grouping, splits, shard order) are queries over them. Row and entry ids are the
order the build met them in."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from multimed_hf.data.manifest import ManifestEntry

__all__ = ["BuildStore", "KID", "ROW_FIELDS", "grouping_key", "row_fields", "signed_int64"]

#: Rows (and entries) inserted, and read back, at once: what a build holds of its samples at any time.
FLUSH_EVERY = 4096

#: The columns of a sample's row, in ``add_row``'s order.
ROW_FIELDS = (
    "owner", "relpath", "idx", "sample_id", "source_path", "group_key", "published", "content_hash", "dct",
    "wavelet", "labels", "note", "payload", "gkey",
)

_SCHEMA = """
CREATE TABLE sources (owner INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE rows (
    id INTEGER PRIMARY KEY, owner INTEGER NOT NULL, relpath TEXT NOT NULL, idx INTEGER NOT NULL,
    sample_id TEXT NOT NULL, source_path TEXT NOT NULL, group_key TEXT, published TEXT, content_hash TEXT,
    dct INTEGER, wavelet INTEGER, labels BLOB NOT NULL, note TEXT NOT NULL, payload INTEGER NOT NULL,
    gkey TEXT NOT NULL,  -- the grouping key, ``source:group_key`` (else ``source:sample_id``): ``grouping_key``
    state INTEGER NOT NULL DEFAULT 0,  -- 0 valid, 1 rejected: duplicate id, 2 rejected: label conflict
    grp TEXT, split TEXT
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, source_path TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL, sample_id TEXT, grp TEXT, split TEXT
);
CREATE TABLE keys (
    kid INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, root INTEGER, n INTEGER NOT NULL,
    test INTEGER NOT NULL, train INTEGER NOT NULL, odd INTEGER NOT NULL  -- its rows' publisher marks (odd: others)
);
-- each group's decision, by its root key: the split of its rows (those the publisher marked for training: NULL
-- where they are dropped, ``reason`` saying why)
CREATE TABLE decisions (kid INTEGER PRIMARY KEY, split_other TEXT NOT NULL, split_train TEXT, reason TEXT);
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


#: A valid row's key number (``BuildStore.number_keys``), as an SQL expression over ``rows``.
KID = "(SELECT kid FROM keys WHERE keys.key = rows.gkey)"


def grouping_key(source: str, group_key: str | None, sample_id: str) -> str:
    """A sample's grouping key: ``source:group_key``, else (no group key, or an empty one) ``source:sample_id``."""
    return f"{source}:{group_key or sample_id}"


def signed_int64(value: int) -> int:
    """An unsigned 64-bit value as SQLite's signed INTEGER (``np.int64(...).view(np.uint64)`` undoes it)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def row_fields(source: str, sample_id: str, source_path: str, group_key: str | None, published: str | None,
               content_hash: str | None, perceptual_hash: int | None, labels: bytes, note: str,
               payload: int) -> tuple:
    """What ``BuildStore.add_rows`` keeps of one valid sample of ``source``: these fields, the perceptual hash as its
    two halves (``signed_int64`` of its high and low 64 bits, or None), then the sample's ``grouping_key``."""
    dct = wavelet = None
    if perceptual_hash is not None:
        dct, wavelet = signed_int64(perceptual_hash >> 64), signed_int64(perceptual_hash & ((1 << 64) - 1))
    return (sample_id, source_path, group_key, published, content_hash, dct, wavelet, labels, note, payload,
            grouping_key(source, group_key, sample_id))


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
        self.sources = list(sources)
        self.batch = FLUSH_EVERY
        self._rows: list[tuple] = []
        self._entries: list[tuple] = []
        self.next_row = 1
        self.next_entry = 1
        self._indexed = False

    # -- writing, buffered --------------------------------------------------------------------------------------

    def add_row(self, owner: int, relpath: str, idx: int, *fields) -> None:
        """One valid sample's row: ``row_fields``' arguments after the source (``owner``'s)."""
        self.add_rows(owner, relpath, idx, [row_fields(self.sources[owner], *fields)])

    def add_rows(self, owner: int, relpath: str, idx: int, rows: list[tuple]) -> None:
        """The rows of consecutive records of a file (from its record ``idx`` on), each as made where the file was
        read (``row_fields``)."""
        self._hold([(owner, relpath, idx + i, *row) for i, row in enumerate(rows)])

    def add_many(self, owner: int, files: list[tuple[str, list[tuple]]]) -> None:
        """``add_rows`` of whole files, in order: ``(relpath, rows)`` each (one list made of them all)."""
        self._hold([(owner, relpath, idx, *row) for relpath, rows in files for idx, row in enumerate(rows)])

    def _hold(self, rows: list[tuple]) -> None:
        """Rows (their keys and fields) numbered on from ``next_row`` and held, flushed ``batch`` at a time."""
        start = self.next_row
        self._rows.extend([(start + i, *row) for i, row in enumerate(rows)])
        self.next_row += len(rows)
        if len(self._rows) >= self.batch:
            self.flush()

    def add_entry(self, entry: ManifestEntry) -> None:
        self._entries.append((self.next_entry, entry.source, entry.source_path, entry.status, entry.reason,
                              entry.sample_id, entry.group, entry.split))
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

    def number_keys(self) -> np.ndarray:
        """Number the distinct grouping keys of the valid rows 0.. in sorted order (so the smallest number of a
        component is its smallest key; a row's is ``KID``'s); returns, for each key, its number of rows and
        whether any of them the publisher marked test, train, or otherwise (a ``(keys, 4)`` array)."""
        self._ready()
        self.db.execute(
            "INSERT INTO keys (kid, key, root, n, test, train, odd) SELECT ROW_NUMBER() OVER (ORDER BY gkey) - 1, "
            "gkey, ROW_NUMBER() OVER (ORDER BY gkey) - 1, COUNT(*), MAX(published IS 'test'), "
            "MAX(published IS 'train'), "
            "MAX(published IS NOT NULL AND published NOT IN ('train', 'test')) FROM rows WHERE state = 0 GROUP BY gkey"
        )
        cursor = self.db.execute("SELECT n, test, train, odd FROM keys ORDER BY kid")
        blocks = [np.array(batch, dtype=np.int64) for batch in iter(lambda: cursor.fetchmany(self.batch), [])]
        return np.concatenate(blocks) if blocks else np.empty((0, 4), dtype=np.int64)

    def set_groups(self, roots: np.ndarray) -> None:
        """Every key's component (``roots[kid]``: the smallest key number in it), whose key names the group of its
        rows (``set_decisions`` writes it to them)."""
        moved = np.flatnonzero(roots != np.arange(len(roots)))
        self.db.executemany("UPDATE keys SET root = ? WHERE kid = ?",
                            ((int(roots[k]), int(k)) for k in moved))

    def set_decisions(self, decisions: Iterable[tuple]) -> None:
        """Every valid row's group (its root key) and split (``decisions``: ``(root key number, split, split of
        the rows the publisher marked for training or None where they are dropped, why)`` of each group, in key
        order), in one pass."""
        self.db.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?)", decisions)
        self.db.execute(
            "UPDATE rows SET (grp, split) = (SELECT r.key, CASE WHEN rows.published IS 'train' THEN d.split_train "
            "ELSE d.split_other END FROM keys k JOIN keys r ON r.kid = k.root JOIN decisions d ON d.kid = k.root "
            "WHERE k.key = rows.gkey) WHERE state = 0"
        )

    def hashes(self, copies: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(key numbers, content numbers, dct, wavelet)`` of the valid rows with a perceptual hash, in read order
        (40 bytes a row while read). ``copies``: ``(row id, its content's first row id)`` of every valid row whose
        content hash another row shares; rows of equal content share a content number (that first row's id; the
        rows without a content hash all share -1), read in row order rather than sorted by content hash."""
        count = self.query("SELECT COUNT(*) FROM rows WHERE state = 0 AND dct IS NOT NULL").fetchone()[0]
        columns = np.empty((count, 5), dtype=np.int64)
        cursor = self.db.execute(
            f"SELECT {KID}, id, content_hash IS NULL, dct, wavelet FROM rows WHERE state = 0 AND dct IS NOT NULL "
            "ORDER BY id"
        )
        at = 0
        while batch := cursor.fetchmany(self.batch):
            columns[at:at + len(batch)] = batch
            at += len(batch)
        ids = columns[:, 1]
        content = np.where(columns[:, 2] != 0, -1, ids)
        copies = np.asarray(copies, dtype=np.int64).reshape(-1, 2)
        if len(copies) and count:  # read order is id order: each copy found by its id
            where = np.minimum(np.searchsorted(ids, copies[:, 0]), count - 1)
            found = ids[where] == copies[:, 0]
            content[where[found]] = copies[found, 1]
        unsigned = columns[:, 3:].view(np.uint64)
        return (np.ascontiguousarray(columns[:, 0]), content,
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

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
