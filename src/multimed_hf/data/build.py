"""Build one config from its source folders: read -> group -> split -> shards + manifest + card."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import Future, wait
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from tqdm.auto import tqdm

from multimed_hf.data.build_store import BuildStore
from multimed_hf.data.cache import ValidationCache, encode_body
from multimed_hf.data.cached_samples import CachedSamples
from multimed_hf.data.card import write_readme
from multimed_hf.data.errors import IGNORED, BadSourceFile, StrictBuildError, UnusedSourceFile
from multimed_hf.data.features import task_features
from multimed_hf.data.grouping import component_roots, near_duplicate_links
from multimed_hf.data.images import NEAR_DUPLICATE_RECALL, PERCEPTUAL_HASH_VERSION
from multimed_hf.data.manifest import STATUSES, ManifestEntry, ManifestView, iter_manifest, write_manifest
from multimed_hf.data.sample import RejectedRecord
from multimed_hf.data.engines import ReadEngine, make_engine
from multimed_hf.data.shards import (
    Fingerprint, ShardWriter, encode_columns, fingerprint_bytes, payload_size, plan_shards, shard_batch_rows,
)
from multimed_hf.data.source_builder import NOTE, SourceBuilder
from multimed_hf.data.splits import SPLITS, assign_splits
from multimed_hf.tasks import TaskSpec

__all__ = ["BuildReport", "SourceReport", "build_config", "CACHE_DIR", "ON_BAD_FILES"]

CACHE_DIR = ".build_cache"
#: The build's own scratch store (per-sample keys, manifest entries), beside the validation caches; removed after.
BUILD_STORE = "build.sqlite"
#: Where a source's shards are written until their fingerprint is known.
PARTIAL = ".partial"
ON_BAD_FILES = ("report", "error")


@dataclass
class SourceReport:
    name: str
    root: str
    files_seen: int
    fingerprint: str
    counts: dict[str, int]
    splits: dict[str, int]
    data_files: dict[str, list[str]]
    release_note: str
    provenance: dict = field(default_factory=dict)
    assets: list[str] = field(default_factory=list)


@dataclass
class BuildReport:
    """What a build kept, moved, dropped, rejected and ignored, and why. ``entries`` is the manifest the build wrote, read
    from its file (a ``ManifestView``): a build of millions of samples reports them without holding them."""

    task: str
    out_dir: Path
    sources: list[SourceReport]
    entries: Sequence[ManifestEntry]
    duplicates: dict[str, int]
    warnings: list[str]
    #: The figures, where the build hands them in (taken from its store before the manifest was written, so that
    #: the manifest is not read back); else counted from ``entries`` when first asked.
    tally: dict | None = field(default=None, repr=False, compare=False)

    @cached_property
    def _tally(self) -> dict:
        """Every figure the properties give, in one pass over the entries."""
        if self.tally is not None:
            return self.tally
        return _tally((e.status, e.split, e.sample_id, e.reason, e.group) for e in self.entries)

    @property
    def counts(self) -> Counter:
        return Counter(self._tally["counts"])

    @property
    def splits(self) -> dict[str, int]:
        sizes = self._tally["splits"]
        return {s: sizes.get(s, 0) for s in SPLITS}

    @property
    def index_files(self) -> int:
        """Kept entries that are index files (labels, metadata): read, no sample of their own."""
        return self._tally["index_files"]

    @property
    def kept_notes(self) -> dict[str, int]:
        """Kept samples whose manifest entry carries a note (e.g. a file-name variant), counted by the note's kind."""
        return dict(sorted(self._tally["kept_notes"].items()))

    def summary(self) -> str:
        c = self.counts
        index = f", {self.index_files} index files read" if self.index_files else ""
        lines = [
            f"{self.task}: {sum(c.values())} entries from {sum(s.files_seen for s in self.sources)} files: "
            f"kept {c['kept'] + c['moved'] - self.index_files} (moved {c['moved']}), dropped {c['dropped']}, "
            f"rejected {c['rejected']}, ignored {c['ignored']}{index}",
            "  splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
            "  duplicates: " + ", ".join(f"{k} {v}" for k, v in self.duplicates.items()),
        ]
        for source in self.sources:
            lines.append(f"  {source.name} ({source.root}): {source.release_note}")
        for reason, n in sorted(self._tally["reasons"].items()):
            lines.append(f"  {n} x {reason}")
        for note, n in sorted(self.kept_notes.items()):
            lines.append(f"  {n} kept with a note: {note}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _tally(entries) -> dict:
    """``BuildReport``'s figures from ``(status, split, sample_id, reason, group)`` of every manifest entry."""
    counts, splits, kept_notes, reasons, repairs = Counter(), Counter(), Counter(), Counter(), Counter()
    repaired_groups = set()
    index_files = 0
    for status, split, sample_id, reason, group in entries:
        counts[status] += 1
        if status in ("kept", "moved"):
            splits[split] += 1
        if status == "kept" and split is None:
            index_files += 1
        if status == "kept" and sample_id and reason:
            kept_notes[reason.split(":")[0]] += 1
        if status in ("dropped", "rejected"):
            reasons[reason.split(":")[0]] += 1
        if status == "dropped" and reason.startswith("leak repair"):
            repairs[reason] += 1
            repaired_groups.add(group)
    return {"counts": counts, "splits": splits, "index_files": index_files, "kept_notes": kept_notes,
            "reasons": reasons, "repairs": repairs, "repaired_groups": len(repaired_groups)}


#: Prefix of a cached reason that marks a file the task does not use (dropped, not rejected).
UNUSED = "not used: "
#: Prefix of a cached reason that marks a file holding no data of any source (ignored: system files, documents).
UNUSED_IGNORED = UNUSED + IGNORED


def _file_status(reason: str) -> str:
    """The manifest status of a file that gives no samples, from its (cached) reason."""
    if reason.startswith(UNUSED_IGNORED):
        return "ignored"
    return "dropped" if reason.startswith(UNUSED) else "rejected"
#: Records a reader hands on at once (a part): what is in flight of a file of many records.
PART_RECORDS = 1024


def _read_parts(builder: SourceBuilder, relpath: str) -> Iterator[list | str]:
    """One file's records in parts of at most ``PART_RECORDS`` (an engine's reader, run where the engine reads):
    a last part that is a ``str`` is the reason the file gives no samples."""
    part: list = []
    try:
        for record in builder.iter_file(relpath):
            part.append(record)
            if len(part) == PART_RECORDS:
                yield part
                part = []
    except UnusedSourceFile as err:
        yield err.reason if err.reason.startswith(UNUSED) else UNUSED + err.reason
        return
    except BadSourceFile as err:
        yield err.reason
        return
    except builder.reader_errors as err:  # a reader failing on damaged data: named in the manifest, not lost
        yield f"unreadable: {type(err).__name__}: {err}"
        return
    # anything else (TypeError, AttributeError, KeyError, ...) is a bug of ours: it raises, naming the file
    yield part


class _Reader:
    """The engines' reader of one task's files: ``_read_parts``, each record as ``(item, row)``, made where the file
    is read (in a worker process) so that the main process only stores them: ``row`` is what the build store keeps
    of a valid sample (``BuildStore.add_row``'s fields after ``idx``: ids, keys, its labels' digest and payload
    size), None for a rejected record; ``item`` is what the validation cache stores, the record's JSON body
    (``encode_body``) where it holds no array, else the record itself."""

    def __init__(self, task: TaskSpec):
        self.label_names = tuple(task.label_names)

    def __call__(self, builder: SourceBuilder, relpath: str) -> Iterator[list | str]:
        for part in _read_parts(builder, relpath):
            yield part if isinstance(part, str) else [self.keyed(record, body=True) for record in part]

    def keyed(self, record, body: bool = False) -> tuple:
        """``(item, row)`` of ``record``; ``item`` is the record itself unless ``body`` (for ``put``)."""
        if isinstance(record, RejectedRecord):
            return record, None
        item = encode_body(record) if body else None
        item = record if item is None else item
        labels = json.dumps([record.fields.get(n) for n in self.label_names], default=str)
        return item, (
            record.sample_id, record.source_path, record.group_key, record.published_split, record.content_hash,
            record.perceptual_hash, hashlib.blake2b(labels.encode(), digest_size=16).digest(),
            record.extra.get(NOTE, ""), payload_size(record),
        )


class _Rejected(Exception):
    """A file's parts ended with the reason it gives no samples (what it gave before is discarded)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _records(parts: Iterator[list | str]) -> Iterator:
    for part in parts:
        if isinstance(part, str):
            raise _Rejected(part)
        yield from part


def _release_note(builder: SourceBuilder, files_seen: int) -> str:
    expected = builder.spec().expected_files
    provenance = builder.provenance()
    matches = [name for name, n in expected.items() if n == files_seen]
    if matches and not provenance.get("synthetic"):  # a generated sample never claims a release
        note = f"{files_seen} files: the {matches[0]} release"
    else:
        known = "; ".join(f"{name}: {n:,}" for name, n in expected.items()) or "no published count"
        note = f"{files_seen} files, matching no published release ({known})"
    if provenance.get("synthetic"):
        note += f"; SYNTHETIC sample: {provenance.get('description', '')}".rstrip(": ")
    return note


class _Manifest:
    """The entries of a build (in its ``BuildStore``), and the ``--strict`` policy: under it the first rejection
    (or repair) stops."""

    def __init__(self, store: BuildStore, strict: bool):
        self.store = store
        self.strict = strict

    def add(self, entry: ManifestEntry, root: Path | None = None) -> None:
        if self.strict and (entry.status == "rejected" or entry.reason.startswith("leak repair")):
            where = root / entry.source_path if root is not None else entry.source_path
            raise StrictBuildError(f"{entry.source}: {where}: {entry.reason}")
        self.store.add_entry(entry)


def _cache_version(task: TaskSpec, builder: SourceBuilder) -> str:
    """The builder's version plus a digest of the registry facts its samples are made from (the task's labels and
    columns, and of the source, both as the task states it and as the builder's own task does: its label maps, the
    organ its records show and where it records age): editing the registry re-validates."""
    facts = [[asdict(label) for label in task.labels], [(c.name, c.dtype) for c in (*task.inputs, *task.metadata)]]
    for spec in (task.source(builder.source), builder.spec()):
        facts.append({k: dict(v) for k, v in spec.label_map.items()})
        facts.append({"organ": spec.organ, "age": spec.age})
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=list).encode()).hexdigest()[:12]
    return f"{builder.version}+registry-{digest}+hash-{PERCEPTUAL_HASH_VERSION}"


def _tap(keyed, builder: SourceBuilder, owner: int, relpath: str, manifest: _Manifest, counter: list[int]):
    """Pass a file's records on (to the validation cache) while each valid sample's keys go to the build store and
    each bad record to the manifest (``keyed``: ``(item, row)`` as ``_Reader`` gives them); ``counter[0]`` counts
    the records."""
    store = manifest.store
    for position, (item, row) in enumerate(keyed):
        counter[0] += 1
        if row is None:
            manifest.add(ManifestEntry(builder.source, item.where, "rejected", item.reason), builder.root)
        else:
            store.add_row(owner, relpath, position, *row)
        yield item


def _read_all(task: TaskSpec, builders, caches, manifest: _Manifest, progress: bool, engine: ReadEngine):
    """Phase 1: every file of every source read and validated, streamed into the source's cache (files validated
    before come from it) while each valid sample's keys go to the build store (bad files, bad records, index files
    and duplicate ids go to the manifest). Returns the number of files seen per source."""
    store = manifest.store
    reader = _Reader(task)
    files_seen: list[int] = []
    for owner, (builder, cache) in enumerate(zip(builders, caches)):
        files = builder.list_files()
        root = os.fspath(builder.root)
        todo = _to_validate(files, cache, root)
        fresh = engine.map(reader, builder, todo)
        next_fresh = 0
        try:
            for relpath in tqdm(files, desc=f"reading {builder.source}", unit="file", disable=not progress):
                path = os.path.join(root, relpath)
                mark, counter = store.mark(), [0]
                error = None
                if next_fresh < len(todo) and todo[next_fresh] == relpath:
                    next_fresh += 1
                    try:
                        cache.put(relpath, path, _tap(_records(next(fresh)), builder, owner, relpath, manifest,
                                                      counter))
                    except _Rejected as err:
                        error = err.reason
                        store.discard(mark)
                        cache.put(relpath, path, None, error)
                else:
                    error = cache.lookup(relpath, path)[1]
                    if error is None:
                        keyed = map(reader.keyed, cache.records(relpath))
                        for _ in _tap(keyed, builder, owner, relpath, manifest, counter):
                            pass
                if error is not None:
                    if manifest.strict and not error.startswith(UNUSED):
                        raise StrictBuildError(f"{builder.source}: {path}: {error}")
                    status = _file_status(error)
                    manifest.add(ManifestEntry(builder.source, relpath, status, error), builder.root)
                elif not counter[0]:  # an index file (labels, metadata): read, no sample of its own
                    manifest.add(ManifestEntry(builder.source, relpath, "kept", "index file: no sample of its own"))
        finally:
            close = getattr(fresh, "close", None)
            if close is not None:
                close()
        files_seen.append(len(files))
        for where, reason in builder.orphan_records(set(files)):
            manifest.add(ManifestEntry(builder.source, where, "rejected", reason))
        _reject_duplicate_ids(builder, owner, manifest)
    return files_seen


def _to_validate(files: list[str], cache: ValidationCache, root: str) -> list[str]:
    """The files (sorted) that the cache has no valid outcome of: those it never saw, without asking it file by file
    (its validated paths are walked beside them, in the same order), and those changed since."""
    known = cache.validated()
    seen = next(known, None)
    todo = []
    for relpath in files:
        while seen is not None and seen < relpath:
            seen = next(known, None)
        if seen != relpath or cache.lookup(relpath, os.path.join(root, relpath)) is None:
            todo.append(relpath)
    return todo


def _reject_duplicate_ids(builder: SourceBuilder, owner: int, manifest: _Manifest) -> None:
    """A sample id given by two files of a source is ambiguous: no copy is trusted over another, all are rejected."""
    store = manifest.store
    duplicated = store.query(
        "SELECT id, relpath, sample_id FROM rows WHERE owner = ? AND sample_id IN (SELECT sample_id FROM rows "
        "WHERE owner = ? GROUP BY sample_id HAVING COUNT(DISTINCT relpath) > 1) ORDER BY id", (owner, owner)
    ).fetchall()  # ambiguous rows only: few
    paths: dict[str, list[str]] = defaultdict(list)
    for _, relpath, sample_id in duplicated:
        paths[sample_id].append(relpath)
    for _, relpath, sample_id in duplicated:
        others = ", ".join(p for p in paths[sample_id] if p != relpath)
        reason = f"duplicate id: {sample_id!r} is also {others}"
        manifest.add(ManifestEntry(builder.source, relpath, "rejected", reason, sample_id), builder.root)
    store.update_many("UPDATE rows SET state = 1 WHERE id = ?", ((row_id,) for row_id, _, _ in duplicated))


#: Content hashes held by more than one valid row, each with its first row (``content_hash, first``).
_DUPLICATED_CONTENT = ("(SELECT content_hash, MIN(id) AS first FROM rows WHERE state = 0 AND content_hash IS NOT NULL "
                       "GROUP BY content_hash HAVING COUNT(*) > 1)")


def _content_groups(store: BuildStore) -> Iterator[list[tuple]]:
    """Rows sharing a content hash (exact duplicates), as lists of ``(id, owner, source_path, sample_id, labels)``
    in read order, the groups in the order of their first row."""
    cursor = store.query(
        "SELECT r.content_hash, r.id, r.owner, r.source_path, r.sample_id, r.labels, d.first FROM rows r JOIN "
        f"{_DUPLICATED_CONTENT} d ON d.content_hash = r.content_hash WHERE r.state = 0 ORDER BY d.first, r.id"
    )
    members: list[tuple] = []
    for row in cursor:
        if members and row[0] != members[0][0]:
            yield [m[1:6] for m in members]
            members = []
        members.append(row)
    if members:
        yield [m[1:6] for m in members]


def _reject_label_conflicts(store: BuildStore, sources: list[str], manifest: _Manifest) -> int:
    """Phase 2: exact duplicates (same content hash) whose labels disagree: every copy is rejected. Returns how
    many rows were."""
    conflicted: list[int] = []
    for members in _content_groups(store):
        if len({labels for *_, labels in members}) < 2:
            continue
        for i, (row_id, owner, source_path, sample_id, _) in enumerate(members):
            others = ", ".join(f"{sources[o]}/{p}" for j, (_, o, p, _, _) in enumerate(members) if j != i)
            reason = f"label conflict: identical content at {others} carries another label"
            manifest.add(ManifestEntry(sources[owner], source_path, "rejected", reason, sample_id))
            conflicted.append(row_id)
    store.update_many("UPDATE rows SET state = 2 WHERE id = ?", ((i,) for i in conflicted))
    return len(conflicted)


def _group(task: TaskSpec, builders, caches, store: BuildStore, engine: ReadEngine | None = None):
    """Phase 3: groups by grouping key, exact duplicates, near duplicates and each source's own links, transitively
    (connected components over key numbers: arrays, not objects, whatever the number of samples). The near-duplicate
    search runs band by band in ``engine``'s worker processes where it has them. Names each valid row's group in
    the store; returns the duplicate statistics."""
    def columns(sql: str, params: tuple = ()) -> np.ndarray:  # integer columns of a query, as one array
        cursor = store.query(sql, params)
        blocks = [np.array(batch, dtype=np.int64) for batch in iter(lambda: cursor.fetchmany(store.batch), [])]
        return np.concatenate(blocks) if blocks else np.empty((0, 2), dtype=np.int64)

    n_keys = store.number_keys()
    # exact duplicates: each copy joined to its content's first row
    edges: list[np.ndarray] = [columns(
        f"SELECT f.kid, r.kid FROM rows r JOIN {_DUPLICATED_CONTENT} d ON d.content_hash = r.content_hash "
        "JOIN rows f ON f.id = d.first WHERE r.state = 0 AND r.id != d.first"
    )]
    exact_pairs = len(edges[0])
    kid, content, dct, wavelet = store.hashes()
    near_only = 0
    if len(dct):  # near duplicates: a forest with their components; the pairs whose content differs counted
        run = engine.ordered if engine is not None and engine.workers else None
        near = near_duplicate_links(dct, task.near_duplicate_distance, wavelet, task.near_duplicate_second_distance,
                                    content, run)
        del dct, wavelet, content
        near_only = near.distinct_pairs
        edges.append(kid[near.edges])
        del kid, near
    linked = 0
    for owner, (builder, cache) in enumerate(zip(builders, caches)):
        if type(builder).link_samples is SourceBuilder.link_samples:  # no rule of its own: its samples stay on disk
            continue
        ids, kids = columns("SELECT id, kid FROM rows WHERE owner = ? AND state = 0 ORDER BY id", (owner,)).T
        links = np.fromiter(builder.link_samples(CachedSamples(store, cache, ids)), dtype=np.dtype((np.int64, 2)))
        linked += len(links)
        edges.append(kids[links])
    roots = component_roots(n_keys, np.concatenate(edges))
    store.set_groups(roots)
    del roots
    largest = store.query(
        "SELECT COALESCE(MAX(n), 0), COALESCE(SUM(k > 1), 0) FROM "
        "(SELECT COUNT(*) AS n, COUNT(DISTINCT kid) AS k FROM rows WHERE state = 0 GROUP BY grp)"
    ).fetchone()
    return {
        "exact duplicate pairs": exact_pairs,
        "near-duplicate pairs": near_only,
        "pairs linked by the source's own rule": linked,
        "groups merged from several keys": largest[1],
        "largest group (samples)": largest[0],
    }


def _assign(task: TaskSpec, store: BuildStore, config_dir: Path, manifest: _Manifest) -> None:
    """Phase 4: each group's split (decided once per group and publisher mark, ``assign_splits``), leak repairs
    and moves since the previous build; the split goes to each row of the store, the decision to the manifest."""
    pending: dict[str, list[str | None]] = {}  # groups not decided yet: their publisher marks

    def decide():  # the pending groups at once: one ``assign_splits`` call per batch of groups
        marks = [mark for group_marks in pending.values() for mark in group_marks]
        groups, at = {}, 0
        for grp, group_marks in pending.items():
            groups[grp] = range(at, at + len(group_marks))
            at += len(group_marks)
        made = assign_splits(groups, marks, task)
        store.db.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?)", [
            (grp, marks[i], made[i].split, made[i].status, made[i].reason)
            for grp, members in groups.items() for i in members
        ])
        pending.clear()

    for grp, published in store.query("SELECT DISTINCT grp, published FROM rows WHERE state = 0 ORDER BY grp"):
        if grp not in pending and len(pending) >= store.batch:  # a group's rows are consecutive: never split
            decide()
        pending.setdefault(grp, []).append(published)
    decide()
    store.db.execute("CREATE INDEX decisions_by_group ON decisions (grp, published)")
    store.load_previous(iter_manifest(config_dir))
    store.db.execute("UPDATE rows SET split = (SELECT d.split FROM decisions d WHERE d.grp = rows.grp AND "
                     "d.published IS rows.published) WHERE state = 0")
    cursor = store.db.execute(
        "SELECT s.name, r.source_path, r.sample_id, r.grp, r.note, d.split, d.status, d.reason, p.split "
        "FROM rows r JOIN sources s ON s.owner = r.owner "
        "JOIN decisions d ON d.grp = r.grp AND d.published IS r.published "
        "LEFT JOIN previous p ON p.source = s.name AND p.source_path = r.source_path AND p.sample_id = r.sample_id "
        "WHERE r.state = 0 ORDER BY r.id"
    )
    while batch := cursor.fetchmany(store.batch):
        for source, source_path, sample_id, group_id, note, split, status, reason, before in batch:
            if status == "dropped":
                manifest.add(ManifestEntry(source, source_path, "dropped", reason, sample_id, group_id))
                continue
            status, reason = "kept", note
            if before and before != split:
                moved = f"moved from {before} to {split}: its group changed ({group_id})"
                status, reason = "moved", f"{moved}; {reason}" if reason else moved
            store.add_entry_values(source, source_path, status, reason, sample_id, group_id, split)  # kept: not strict
    store.db.execute("CREATE INDEX rows_for_shards ON rows (owner, split, sample_id) WHERE split IS NOT NULL")


#: Validation caches a worker process opened (by path and version), for the row groups it encodes.
_WORKER_CACHES: dict[tuple[str, str], ValidationCache] = {}


class _CacheHandle:
    """A source's validation cache as a task carries it: the cache itself here; pickled (to a worker process),
    its path and version, which the worker opens once (reads only: the build committed it before its shards)."""

    def __init__(self, cache: ValidationCache):
        self.path, self.version, self._cache = os.fspath(cache.path), cache.version, cache

    def __getstate__(self) -> dict:
        return {"path": self.path, "version": self.version}

    def __setstate__(self, state: dict) -> None:
        self.path, self.version, self._cache = state["path"], state["version"], None

    def get(self) -> ValidationCache:
        if self._cache is None:
            key = (self.path, self.version)
            if key not in _WORKER_CACHES:
                _WORKER_CACHES[key] = ValidationCache(Path(self.path), self.version)
            self._cache = _WORKER_CACHES[key]
        return self._cache


def _encode_batch(builder: SourceBuilder, cache: _CacheHandle, features, split: str,
                  batch: list[tuple[str, int, str]], spool: str | None = None):
    """One row group of a shard (``batch``: its rows' ``(relpath, index, group id)``), where the engine runs it:
    its samples from the validation cache, what they add to the fingerprint (``fingerprint_bytes``, joined) and
    their table, file bytes embedded and checked. The main process only digests it (and writes it, without
    workers). With ``spool`` (a worker process's answer) the table goes to that Arrow file, which ``_write_shard``
    maps instead of receiving its bytes through a pipe."""
    samples = cache.get().records_at([(relpath, idx) for relpath, idx, _ in batch])
    groups = [group_id for _, _, group_id in batch]
    digest = b"".join(fingerprint_bytes(split, g, sample) for g, sample in zip(groups, samples))
    table = encode_columns(samples, groups, builder, features)
    if spool is None:
        return table, digest
    with pa.OSFile(spool, "wb") as sink, pa.ipc.new_file(sink, table.schema) as arrow:
        arrow.write_table(table)
    return spool, digest


def _write_shard(path: Path, features, spools: list[str]) -> None:
    """One shard written from its row groups' spooled tables (``_encode_batch``'s Arrow files, each removed once
    written), where the engine runs it: in a worker process, while the main process goes on with the next shards."""
    writer = ShardWriter(path, features)
    try:
        for spool in spools:
            source = pa.memory_map(spool)
            try:
                writer.write(pa.ipc.open_file(source).read_all())
            finally:
                source.close()
                os.unlink(spool)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _write_source(builder: SourceBuilder, owner: int, cache: ValidationCache, store: BuildStore, features,
                  out_dir: Path, config_dir: Path, progress: bool, engine: ReadEngine | None = None):
    """Phase 5: one source's shards (and assets) under its fingerprint; the previous build's copy goes. Rows come
    from the store in shard order (split, then sample id), a row group at a time; each row group is encoded
    (samples from the cache, files embedded, fingerprint bytes) by ``engine`` (in its worker processes where it
    has them, in order), the fingerprint taken from them in order here. Each shard is written (into a partial
    folder, renamed once the fingerprint is known) here, or, with workers, by one of them from its row groups'
    spooled tables (``_write_shard``) while the next shards are encoded: a shard's spooled row groups wait on disk
    until it is written. Returns the fingerprint, ``{split: shard paths}`` and the asset paths."""
    engine = engine if engine is not None else make_engine("local")
    assets = builder.assets()
    digest = Fingerprint([builder.version, features.to_dict(), assets])
    source_dir = config_dir / builder.source
    partial = source_dir / PARTIAL
    if partial.exists():
        shutil.rmtree(partial)
    names: dict[str, list[str]] = {}
    order = "FROM rows WHERE owner = ? AND split = ? ORDER BY sample_id, id"
    batch_rows = shard_batch_rows(features)
    plans = []
    for split in SPLITS:
        shards = plan_shards(size for (size,) in store.query(f"SELECT payload {order}", (owner, split)))
        if shards[-1]:
            plans.append((split, shards))
    handle = _CacheHandle(cache)
    spool_dir = None
    if engine.workers:  # beside the build cache, on the output's disk: a shard's row groups wait there (<= ~256 MB)
        (out_dir / CACHE_DIR).mkdir(parents=True, exist_ok=True)
        spool_dir = tempfile.mkdtemp(prefix="spool-", dir=out_dir / CACHE_DIR)

    def tasks():
        count = 0
        for split, shards in plans:
            rows = store.query(f"SELECT relpath, idx, grp {order}", (owner, split))
            for shard in shards:
                for start in range(shard.start, shard.stop, batch_rows):
                    count += 1
                    spool = None if spool_dir is None else os.path.join(spool_dir, f"{count}.arrow")
                    yield builder, handle, features, split, rows.fetchmany(min(batch_rows, shard.stop - start)), spool

    encoded = engine.ordered(_encode_batch, tasks())
    writes: list[Future] = []  # shards being written by the engine (workers: from their spooled row groups)
    try:
        for split, shards in plans:
            names[split] = []
            for n, shard in enumerate(tqdm(
                shards, desc=f"writing {builder.source}/{split}", unit="shard", disable=not progress,
            )):
                name = f"{split}-{n:05d}-of-{len(shards):05d}.parquet"
                batches = range(shard.start, shard.stop, batch_rows)
                if spool_dir is not None:  # row groups encoded (in any worker) in order, then one task writes them
                    spools = []
                    for _ in batches:
                        spool, fingerprinted = next(encoded)
                        digest.update(fingerprinted)
                        spools.append(spool)
                    writes.append(engine.submit(_write_shard, partial / name, features, spools))
                else:
                    writer = ShardWriter(partial / name, features)
                    try:
                        for _ in batches:
                            table, fingerprinted = next(encoded)
                            digest.update(fingerprinted)
                            writer.write(table)
                    except BaseException:
                        writer.abort()
                        raise
                    writer.close()
                names[split].append(name)
        for write in writes:
            write.result()  # a shard that failed raises here, naming its file
    finally:
        encoded.close()  # the engine's tasks still running are awaited
        wait([write for write in writes if not write.cancel()])
        if spool_dir is not None:
            shutil.rmtree(spool_dir, ignore_errors=True)
    for name, content in sorted(assets.items()):
        partial.mkdir(parents=True, exist_ok=True)
        (partial / name).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    fp = digest.hexdigest()
    final = source_dir / fp
    if final.exists():
        shutil.rmtree(final)
    if partial.exists():
        partial.rename(final)
    data_files = {split: [(final / n).relative_to(out_dir).as_posix() for n in shard_names]
                  for split, shard_names in names.items()}
    asset_paths = [(final / name).relative_to(out_dir).as_posix() for name in sorted(assets)]
    if source_dir.is_dir():
        for old in source_dir.iterdir():
            if old.name != fp:
                shutil.rmtree(old)
    return fp, data_files, asset_paths


def build_config(
    task: TaskSpec,
    builders: Sequence[SourceBuilder],
    out_dir: str | os.PathLike,
    *,
    on_bad_files: str = "report",
    progress: bool = True,
    num_proc: int = 1,
    engine: str | ReadEngine = "local",
    ray_address: str | None = None,
) -> BuildReport:
    """Build ``task``'s config under ``out_dir`` from the given source builders (see ``multimed_hf.api``).

    ``engine="local"`` reads files here, in ``num_proc`` worker processes when > 1; ``engine="ray"`` reads them
    with Ray Data on the cluster at ``ray_address`` (None: a local Ray instance with ``num_proc`` CPUs). Results
    come back in file order: every engine gives the same shards, manifest and card.

    Memory does not grow with the number of files or samples: samples stream from the readers into each source's
    validation cache, and what the build keeps of each (ids, keys, hashes, group, split, its manifest entry) goes
    to a ``BuildStore`` on disk; grouping holds a few arrays of 8-byte numbers a sample."""
    if num_proc < 1:
        raise ValueError(f"num_proc={num_proc}; expected a positive number of processes")
    if on_bad_files not in ON_BAD_FILES:
        raise ValueError(f"on_bad_files={on_bad_files!r}; expected one of {ON_BAD_FILES}")
    reader = make_engine(engine, num_proc=num_proc, ray_address=ray_address, progress=progress)
    out_dir = Path(out_dir)
    config_dir = out_dir / task.name
    features = task_features(task)
    names = [b.source for b in builders]
    if len(set(names)) != len(names):
        raise ValueError(f"{task.name}: the same source layout was given twice: {names}")

    with ExitStack() as stack:
        store = BuildStore(out_dir / CACHE_DIR / task.name / BUILD_STORE, names)
        stack.callback(store.close)
        manifest = _Manifest(store, strict=on_bad_files == "error")
        caches = []
        for builder in builders:
            cache = ValidationCache(out_dir / CACHE_DIR / task.name / f"{builder.source}.sqlite",
                                    _cache_version(task, builder))
            stack.callback(cache.close)
            caches.append(cache)
        stack.enter_context(reader.session())  # one pool of workers for the reading and the shards
        files_seen = _read_all(task, builders, caches, manifest, progress, reader)
        for cache in caches:
            cache.commit()
        warnings = [f"{b.source}: {w}" for b in builders for w in b.layout_warnings()]
        warnings += _draw_unpublished_tests(builders, store)
        conflicted = _reject_label_conflicts(store, names, manifest)
        duplicates = _group(task, builders, caches, store, reader)
        duplicates["label conflicts rejected"] = conflicted
        _assign(task, store, config_dir, manifest)

        reports = []
        for owner, (builder, cache) in enumerate(zip(builders, caches)):
            fp, data_files, asset_paths = _write_source(
                builder, owner, cache, store, features, out_dir, config_dir, progress, reader
            )
            counts = dict(store.query("SELECT status, COUNT(*) FROM entries WHERE source = ? GROUP BY status",
                                      (builder.source,)).fetchall())
            splits = dict(store.query("SELECT split, COUNT(*) FROM rows WHERE owner = ? AND split IS NOT NULL "
                                      "GROUP BY split", (owner,)).fetchall())
            note = _release_note(builder, files_seen[owner])
            if "matching no published release" in note:
                warnings.append(f"{builder.source}: {note}")
            reports.append(SourceReport(
                name=builder.source, root=str(builder.root), files_seen=files_seen[owner], fingerprint=fp,
                counts={k: counts.get(k, 0) for k in STATUSES},
                splits={s: splits.get(s, 0) for s in SPLITS},
                data_files=data_files, release_note=note, provenance=builder.provenance(), assets=asset_paths,
            ))
        if config_dir.is_dir():
            for old in sorted(config_dir.iterdir()):
                if old.is_dir() and old.name not in names:
                    shutil.rmtree(old)
                    warnings.append(
                        f"removed {old.relative_to(out_dir).as_posix()}/: the previous build's shards of source "
                        f"{old.name!r}, which is not among this build's sources ({', '.join(names)}); pass its "
                        "folder again to keep it"
                    )
        tally = _tally(store.query("SELECT status, split, sample_id, reason, grp FROM entries "  # manifest order
                                   "ORDER BY source, source_path, COALESCE(sample_id, ''), id"))
        write_manifest(config_dir, store.manifest())

    report = BuildReport(task.name, out_dir, reports, ManifestView(config_dir), duplicates, warnings, tally)
    _write_build_info(config_dir, task, report)
    write_readme(out_dir)
    return report


def _draw_unpublished_tests(builders, store: BuildStore) -> list[str]:
    """A source whose samples carry publisher training marks but no test mark (a partial download, e.g. only
    ``train/``): its marks are dropped so that its groups are drawn into all three splits; returns the warnings."""
    warnings = []
    for owner, builder in enumerate(builders):
        marks = {m for (m,) in store.query("SELECT DISTINCT published FROM rows WHERE owner = ? AND state = 0",
                                           (owner,))}
        if "train" in marks and "test" not in marks and builder.draw_test_when_unpublished:
            store.db.execute("UPDATE rows SET published = NULL WHERE owner = ? AND state = 0", (owner,))
            warnings.append(
                f"{builder.source}: no sample of the publisher's test set was found: train, validation and test "
                "are drawn by group from the files present (the published test set, once added, replaces this)"
            )
    return warnings


def _write_build_info(config_dir: Path, task: TaskSpec, report: BuildReport) -> None:
    repairs = report._tally["repairs"]
    info = {
        "config": task.name,
        "task": task.name,
        "counts": dict(report.counts),
        "index_files": report.index_files,
        "splits": report.splits,
        "duplicates": report.duplicates,
        "near_duplicate_search": (
            f"two hashes of the normalised image must agree: DCT within {task.near_duplicate_distance} and "
            f"wavelet within {task.near_duplicate_second_distance} of 64 bits; {NEAR_DUPLICATE_RECALL}"
        ),
        "split_repairs": {
            "dropped": sum(repairs.values()),
            "groups": report._tally["repaired_groups"],
            "reasons": dict(repairs.most_common(5)),
        },
        "warnings": report.warnings,
        "kept_notes": report.kept_notes,
        "sources": [
            {
                "name": s.name, "fingerprint": s.fingerprint, "files_seen": s.files_seen, "counts": s.counts,
                "splits": s.splits, "data_files": s.data_files, "release_note": s.release_note,
                "provenance": s.provenance, "assets": s.assets,
            }
            for s in report.sources
        ],
    }
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "build_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
