"""Build one config from its source folders: read -> group -> split -> shards + manifest + card."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections import Counter, defaultdict
from itertools import chain, islice
from concurrent.futures import Future, wait
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from tqdm.auto import tqdm

from multimed_hf.data.build_store import KID, BuildStore, row_fields
from multimed_hf.data.cache import ValidationCache, encode_body, file_stamp, stamp_of
from multimed_hf.data.cached_samples import CachedSamples
from multimed_hf.data.card import write_readme
from multimed_hf.data.errors import IGNORED, SECOND_COPY, BadSourceFile, StrictBuildError, UnusedSourceFile
from multimed_hf.data.features import task_features
from multimed_hf.data.grouping import component_roots, near_duplicate_links
from multimed_hf.data.images import NEAR_DUPLICATE_RECALL, PERCEPTUAL_HASH_VERSION
from multimed_hf.data.manifest import (
    MANIFEST_NAME, STATUSES, ManifestEntry, ManifestView, iter_manifest, kept_samples, manifest_line,
    write_manifest_lines,
)
from multimed_hf.data.sample import RejectedRecord
from multimed_hf.data.engines import ReadEngine, make_engine
from multimed_hf.data.shards import (
    Fingerprint, ShardWriter, encode_columns, fingerprint_bytes, payload_size, plan_shards, shard_batch_rows,
)
from multimed_hf.data.source_builder import INDEX_FILE_NOTE, NOTE, SourceBuilder, printable_path
from multimed_hf.data.splits import SPLITS, check_marks, decide_splits, group_fraction, leak_reason
from multimed_hf.tasks import TaskSpec

__all__ = ["BuildReport", "SourceReport", "build_config", "CACHE_DIR", "ON_BAD_FILES", "tally_entries"]

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
    #: Whether any sample of the config has perceptual hashes to search near duplicates by (no source of PMC-OA's
    #: figures, CC-CCII's slices hashes them): the card states the search only where it ran.
    near_duplicates_searched: bool = True
    #: The sources whose samples were hashed (a push leaving them all out drops the search from its card).
    hashed_sources: tuple = ()

    @cached_property
    def _tally(self) -> dict:
        """Every figure the properties give, in one pass over the entries."""
        if self.tally is not None:
            return self.tally
        return tally_entries((e.status, e.split, e.sample_id, e.reason, e.group) for e in self.entries)

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
    def data_files(self) -> int:
        """Kept entries that are data of other files' samples (a VQA image, stored with its questions)."""
        return self._tally.get("data_files", 0)

    @property
    def kept_notes(self) -> dict[str, int]:
        """Kept samples whose manifest entry carries a note (e.g. a file-name variant), counted by the note's kind."""
        return dict(sorted(self._tally["kept_notes"].items()))

    @property
    def kept_samples(self) -> int:
        """The samples the config holds (kept and moved entries, less the index and data files among them)."""
        return kept_samples(self.counts, self.index_files, self.data_files)

    def summary(self) -> str:
        c = self.counts
        index = (f", {self.index_files} index files read" if self.index_files else "") + (
            f", {self.data_files} files stored with other files' samples" if self.data_files else "")
        lines = [
            f"{self.task}: {sum(c.values())} entries from {sum(s.files_seen for s in self.sources)} files: "
            f"kept {self.kept_samples} (moved {c['moved']}), dropped "
            f"{c['dropped']}, "
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


def tally_entries(entries) -> dict:
    """``BuildReport``'s figures from ``(status, split, sample_id, reason, group)`` of every manifest entry."""
    tally = _new_tally()
    for _ in _counted(((None, None, status, reason, sample_id, group, split)
                       for status, split, sample_id, reason, group in entries), tally):
        pass
    return tally


def _new_tally() -> dict:
    return {"counts": Counter(), "splits": Counter(), "index_files": 0, "data_files": 0, "kept_notes": Counter(),
            "reasons": Counter(), "repairs": Counter(), "repaired_groups": 0}


#: A reason's leading segment that names where (a row, a file, an event) rather than what went wrong.
_PLACE = re.compile(r"(row \d+|[^\s]*[/.][^\s]*|(image|file|index file) .*[/.].*|\w+ at -?[\d.]+ s)")


def reason_category(reason: str) -> str:
    """What the summary counts a reason under: its parenthesised details left out, then its first ``:``-segment
    that says what went wrong, after any that only name where (``row 3: 6 fields`` -> ``6 fields``; ``image
    a/b.jpg: cannot decode image: OSError ...`` -> ``cannot decode image``)."""
    text, depth = [], 0
    for char in reason:
        depth += char == "("
        if depth == 0:
            text.append(char)
        depth -= char == ")" and depth > 0
    segments = [part.strip() for part in " ".join("".join(text).split()).replace(" ,", ",").split(":")]
    for segment in segments:
        if segment and not _PLACE.fullmatch(segment):
            return segment
    return reason.split(":")[0].strip()


def _counted(entries: Iterator[tuple], tally: dict, by_source: Counter | None = None) -> Iterator[tuple]:
    """The manifest's entries (tuples of ``ManifestEntry``'s fields) passed on while ``tally`` (``_new_tally``)
    counts them: the report's figures in the pass that writes the manifest; ``by_source``, each
    ``(source, status)``. Per entry one count by source, status and split (the figures by status and split come
    from them), and its reason where it carries a note or a rejection."""
    kept_notes, reasons, repairs = tally["kept_notes"], tally["reasons"], tally["repairs"]
    plain: dict[tuple, int] = {}
    repaired_groups = set()
    data_files = 0
    for entry in entries:
        source, _, status, reason, sample_id, group, split = entry
        key = source, status, split
        plain[key] = plain.get(key, 0) + 1
        if status == "kept":
            if reason and sample_id:
                kept_notes[reason_category(reason)] += 1
            elif split is None and reason and not reason.startswith(INDEX_FILE_NOTE):
                data_files += 1  # no sample of its own, yet no index file either: the data of others' samples
        elif status in ("dropped", "rejected"):
            reasons[reason_category(reason)] += 1
            if status == "dropped" and reason.startswith("leak repair"):
                repairs[reason] += 1
                repaired_groups.add(group)
        yield entry
    counts, splits = tally["counts"], tally["splits"]
    for (source, status, split), n in plain.items():  # in the order first met: the Counters' order
        counts[status] += n
        if status in ("kept", "moved"):
            splits[split] += n
            if status == "kept" and split is None:
                tally["index_files"] += n
        if by_source is not None:
            by_source[source, status] += n
    tally["repaired_groups"] += len(repaired_groups)
    tally["index_files"] -= data_files
    tally["data_files"] += data_files


#: Prefix of a cached reason that marks a file the task does not use (dropped, not rejected).
UNUSED = "not used: "
#: Prefix of a cached reason that marks a file holding no data of any source (ignored: system files, documents).
UNUSED_IGNORED = UNUSED + IGNORED


#: ``_FileCounts``'s mark of an index file (labels, metadata: read, no sample of its own).
INDEX_FILE = "index file"


def _no_sample_kind(builder, relpath: str) -> str | None:
    """``_FileCounts``'s kind of a kept file with no sample of its own: an index file, or None for a file that holds
    other files' samples' data (a VQA image stored with its questions: a file the task reads)."""
    return INDEX_FILE if builder.no_sample_note(relpath).startswith(INDEX_FILE_NOTE) else None


def _file_status(reason: str) -> str:
    """The manifest status of a file that gives no samples, from its (cached) reason."""
    if reason.startswith(UNUSED_IGNORED):
        return "ignored"
    return "dropped" if reason.startswith(UNUSED) else "rejected"
#: Records a reader hands on at once (a part): what is in flight of a file of many records.
PART_RECORDS = 1024
#: Files of one part (most: an image, a row) the reading holds before storing them together (and at most the build
#: store's batch of their records).
SETTLE_FILES = 256


def _reason(err: BadSourceFile) -> str:
    """The cached reason of a file that gives no samples (``_file_status`` reads its status from it)."""
    if isinstance(err, UnusedSourceFile):
        return err.reason if err.reason.startswith(UNUSED) else UNUSED + err.reason
    return err.reason


def _broken_link(path: str, err: OSError) -> str:
    """Why a symbolic link that ``os.stat`` cannot follow gives no samples."""
    target = printable_path(os.readlink(path))
    if isinstance(err, FileNotFoundError):
        return (f"broken symbolic link: its target {target} does not exist (not fetched? `datalad get` / "
                "`git annex get` it)")
    return f"unreadable symbolic link to {target}: {type(err).__name__}: {err.strerror or err}"


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
    except BadSourceFile as err:
        yield _reason(err)
        return
    except builder.reader_errors as err:  # a reader failing on damaged data: named in the manifest, not lost
        yield f"unreadable: {type(err).__name__}: {err}"
        return
    # anything else (TypeError, AttributeError, KeyError, ...) is a bug of ours: it raises, naming the file
    yield part


class _Reader:
    """The engines' reader of one task's files: ``_read_parts``, made where the file is read (in a worker process)
    into what the main process only stores. Each part is ``(stamp, items, rows)``: ``stamp`` the file's
    ``file_stamp``, taken before it was read (the validation cache's key); ``items`` what the validation cache stores
    of each record, its JSON body (``encode_body``) where it holds no array, else the record itself; ``rows`` what
    the build store keeps of each (``BuildStore.add_rows``' fields: ids, keys, hash halves, its labels' digest and
    payload size), or for a rejected record ``(where, reason)``. A file that gives no samples ends with
    ``(stamp, reason)``; so does a broken symbolic link, unread. With ``cache`` (the source's validation cache, where
    worker processes read), ``settle`` stores a batch's plain files there and hands on ``(stamp, None, rows)`` of
    each."""

    def __init__(self, task: TaskSpec, cache: ValidationCache | None = None):
        self.label_names = tuple(task.label_names)
        self.cache = None if cache is None else _CacheHandle(cache)

    def __call__(self, builder: SourceBuilder, relpath: str) -> Iterator[tuple]:
        path = os.path.join(builder.root, relpath)
        try:
            stamp = stamp_of(os.stat(path))  # before reading: a later change moves it
        except OSError as err:
            if not os.path.islink(path):
                raise
            yield file_stamp(path), _broken_link(path, err)
            return
        for part in _read_parts(builder, relpath):
            if isinstance(part, str):
                yield stamp, part
            else:
                items, rows = [], []
                for record in part:
                    item = encode_body(record)
                    items.append(record if item is None else item)
                    rows.append(self.row(record, builder.source))
                yield stamp, items, rows

    def settle(self, builder: SourceBuilder, files: list[tuple[str, list]]) -> list[list]:
        """Where ``files`` (``[(relpath, parts)]``) were read (a worker process, ``LocalEngine``): each plain file's
        bodies (one part, bodies only, no rejected record) stored in the validation cache, all in one transaction,
        and its part handed on as ``(stamp, None, rows)``: the main process only keeps the rows. Other files' parts
        as they are."""
        if self.cache is None:
            return [parts for _, parts in files]
        settled, stored = [], []
        for relpath, parts in files:
            if len(parts) == 1 and _plain(parts[0]):
                stamp, items, rows = parts[0]
                stored.append((relpath, stamp, items))
                parts = [(stamp, None, rows)]
            settled.append(parts)
        cache = self.cache.get()
        cache.put_many(stored)
        cache.commit()  # before the batch's outcomes go: the main process finds them stored
        return settled

    def row(self, record, source: str) -> tuple:
        """What the build store keeps of ``record`` (``BuildStore.add_rows``) of ``source``, or ``(where,
        reason)`` of a rejected one."""
        if isinstance(record, RejectedRecord):
            return record.where, record.reason
        labels = json.dumps([record.fields.get(n) for n in self.label_names], default=str)
        return row_fields(source, record.sample_id, record.source_path, record.group_key, record.published_split,
                          record.content_hash, record.perceptual_hash,
                          hashlib.blake2b(labels.encode(), digest_size=16).digest(), record.extra.get(NOTE, ""),
                          payload_size(record))


def _plain(part: tuple) -> bool:
    """Whether a part (``_Reader``'s) is of records only, each with its body made ahead: no reason, no rejected
    record, no array (stored with the files about it, ``put_many``); a settled part (``(stamp, None, rows)``) is."""
    if len(part) != 3:
        return False
    _, items, rows = part
    if items is None:  # settled where it was read (``_Reader.settle``)
        return True
    return all(type(item) is str for item in items) and all(len(row) != 2 for row in rows)


class _Rejected(Exception):
    """A file's parts ended with the reason it gives no samples (what it gave before is discarded)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _FileCounts:
    """How many files of a source the build saw, and of what kind, for the release check (``_release_note``)."""

    seen: int = 0
    not_released: int = 0  # download litter and documents the build ignores, an archive's second copy of the tree
    not_read: int = 0  # files of the release this task reads no sample from: index files, files "not used"

    def add(self, reason: str | None) -> None:
        """Count one file by its manifest reason (None: a file that gave samples, or was rejected)."""
        self.seen += 1
        if reason is None:
            return
        if reason.startswith((UNUSED_IGNORED, SECOND_COPY)):
            self.not_released += 1
        elif reason.startswith(UNUSED) or reason == INDEX_FILE:
            self.not_read += 1

    def candidates(self) -> list[tuple[int, str]]:
        """The counts a published release's file count is compared with, each with what it counts."""
        released = self.seen - self.not_released
        return [(self.seen, ""), (released, "the release's files: no litter, documents or an archive's second copy"),
                (released - self.not_read, "the files this task reads samples from")]


#: What the release check says of a source without a published file count (``SourceSpec.expected_files`` empty).
NO_RELEASE_COUNT = "no published file count to compare with"


def _release_note(builder: SourceBuilder, counts: _FileCounts) -> str:
    """Which published release (``SourceSpec.expected_files``) the files seen match, counting them all, the
    release's (without the litter and documents the build ignores and an archive's second copy of the tree, as in
    Kaggle's chest_xray archive) or those the task reads samples from (without index files and the files of the
    release it does not use: CBIS-DDSM's ROI masks, EyePACS's sample/); else that they match none."""
    expected = builder.spec().expected_files
    provenance = builder.provenance()
    matches = [(name, n, what) for n, what in counts.candidates() for name, m in expected.items() if m == n]
    if not expected:  # a user's own series, an open collection: nothing to match, nothing to warn of
        note = f"{counts.seen} files ({NO_RELEASE_COUNT})"
    elif matches and not provenance.get("synthetic"):  # a generated sample never claims a release
        name, n, what = matches[0]
        note = f"{counts.seen} files" + (f" ({n} of them {what})" if what else "") + f": the {name} release"
    else:
        known = "; ".join(f"{name}: {n:,}" for name, n in expected.items())
        note = f"{counts.seen} files, matching no published release ({known})"
    if provenance.get("synthetic"):
        note += (f"; SYNTHETIC sample (never claims a release): {provenance.get('description', '')}").rstrip(": ")
    return note


class _Manifest:
    """The entries of a build (in its ``BuildStore``), and the ``--strict`` policy: under it the first rejection
    (or repair) stops."""

    def __init__(self, store: BuildStore, strict: bool):
        self.store = store
        self.strict = strict

    def add(self, entry: ManifestEntry, root: Path | None = None) -> None:
        self.check(entry, root)
        self.store.add_entry(entry)

    def check(self, entry: ManifestEntry, root: Path | None = None) -> None:
        """Under ``--strict``, raise for an entry that stops the build."""
        if self.strict and (entry.status == "rejected" or entry.reason.startswith("leak repair")):
            where = root / entry.source_path if root is not None else entry.source_path
            raise StrictBuildError(f"{entry.source}: {where}: {entry.reason}")


def _cache_version(task: TaskSpec, builder: SourceBuilder) -> str:
    """The builder's version plus a digest of the registry facts its samples are made from (the task's labels and
    columns, and of the source, both as the task states it and as the builder's own task does: its label maps, the
    organ its records show and where it records age): editing the registry re-validates; and the version of rules
    builders share (``rules_version``: the download litter ``NonDataFiles`` ignores) and of the other files one
    file's reading depends on (``listing_version``: a copy's original, CC-CCII's index)."""
    facts = [[asdict(label) for label in task.labels], [(c.name, c.dtype) for c in (*task.inputs, *task.metadata)]]
    for spec in (task.source(builder.source), builder.spec()):
        facts.append({k: dict(v) for k, v in spec.label_map.items()})
        facts.append({"organ": spec.organ, "age": spec.age})
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=list).encode()).hexdigest()[:12]
    rules = getattr(builder, "rules_version", "")  # rules shared by builders (download litter), when they change
    listing = getattr(builder, "listing_version", "")  # the other files one file's reading depends on
    return (f"{builder.version}+registry-{digest}+hash-{PERCEPTUAL_HASH_VERSION}" + (f"+{rules}" if rules else "")
            + (f"+listing-{listing}" if listing else ""))


def _stored(parts: Iterator[tuple], builder: SourceBuilder, owner: int, relpath: str, manifest: _Manifest,
            counter: list[int]) -> Iterator[list]:
    """A file's parts (``_Reader``'s) passed on to the validation cache, each as its list of items, while each valid
    sample's row goes to the build store and each bad record to the manifest; ``counter[0]`` counts the records. A
    last part that is the reason the file gives no samples raises ``_Rejected``."""
    store = manifest.store
    for part in parts:
        if len(part) == 2:
            raise _Rejected(part[1])
        _, items, rows = part
        start = counter[0]
        counter[0] += len(items)
        if any(len(row) == 2 for row in rows):  # rejected records among them: rows and entries in record order
            for position, row in enumerate(rows, start):
                if len(row) == 2:
                    manifest.add(ManifestEntry(builder.source, row[0], "rejected", row[1]), builder.root)
                else:
                    store.add_rows(owner, relpath, position, [row])
        else:
            store.add_rows(owner, relpath, start, rows)
        yield items


def _read_all(task: TaskSpec, builders, caches, manifest: _Manifest, progress: bool, engine: ReadEngine,
              warnings: list[str]):
    """Phase 1: every file of every source read and validated, streamed into the source's cache (files validated
    before come from it) while each valid sample's keys go to the build store (bad files, bad records, index files
    and duplicate ids go to the manifest). With worker processes (``engine.workers``), they store the plain files'
    samples in the cache themselves (``_Reader.settle``) and this process commits each of its own writes at once,
    so that neither waits on the other's lock. What the walk did not read (``SourceBuilder.walk_files``) goes to the
    manifest too, and what could not be checked to ``warnings``. Returns, per source, the number of files seen and
    of what kind (``_FileCounts``)."""
    store = manifest.store
    files_seen: list[_FileCounts] = []
    for owner, (builder, cache) in enumerate(zip(builders, caches)):
        files, unread = builder.walk_files()
        counts = _FileCounts()
        for where, err in unread:  # folders not read again (links) or not listed, file names no database holds
            reason = _reason(err)
            manifest.add(ManifestEntry(builder.source, where, _file_status(reason), reason), builder.root)
            if not where.endswith("/"):
                counts.add(reason)
        root = os.fspath(builder.root)
        todo = _to_validate(files, cache, root)
        first = builder.read_first(files)
        if first:  # read before the others, which keep their order
            files, todo = (sorted(paths, key=lambda relpath: relpath not in first) for paths in (files, todo))
        if engine.workers:  # its worker processes store what they read here too (``_Reader.settle``)
            cache.commit_every = 0
            cache.commit()
        reader = _Reader(task, cache if engine.workers else None)
        fresh = engine.map(reader, builder, todo)
        next_fresh = 0
        simple: list[tuple] = []  # files of one part of bodies and valid rows, stored together (``settle``)
        held = [0]  # their records

        def settle():
            if simple:
                cache.put_many([(relpath, stamp, items) for relpath, stamp, items, _ in simple if items is not None])
                store.add_many(owner, [(relpath, rows) for relpath, _, _, rows in simple])
                simple.clear()
                held[0] = 0

        try:
            for relpath in tqdm(files, desc=f"reading {builder.source}", unit="file", disable=not progress):
                error = None
                if next_fresh < len(todo) and todo[next_fresh] == relpath:
                    next_fresh += 1
                    parts = next(fresh)
                    first = next(parts)
                    stamp = first[0]
                    if len(first) == 3:
                        if _plain(first):
                            second = next(parts, None)
                            if second is None:  # the common file: stored with the files about it, in order
                                _, items, rows = first
                                simple.append((relpath, stamp, items, rows))
                                held[0] += len(rows)
                                if not rows:  # an index file (labels, metadata): read, no sample of its own
                                    manifest.add(ManifestEntry(builder.source, relpath, "kept",
                                                               builder.no_sample_note(relpath)))
                                counts.add(None if rows else _no_sample_kind(builder, relpath))
                                if len(simple) >= SETTLE_FILES or held[0] >= store.batch:
                                    settle()
                                continue
                            parts = chain((second,), parts)
                        parts = chain((first,), parts)
                    settle()
                    mark, counter = store.mark(), [0]
                    if len(first) == 2:  # no samples: the reason
                        error = first[1]
                        cache.put(relpath, None, None, error, stamp=stamp)
                    else:
                        try:
                            cache.put(relpath, None, _stored(parts, builder, owner, relpath, manifest, counter),
                                      stamp=stamp, parts=True)
                        except _Rejected as err:
                            error = err.reason
                            store.discard(mark)
                            cache.put(relpath, None, None, error, stamp=stamp)
                else:
                    settle()
                    counter = [0]
                    error = cache.lookup(relpath, os.path.join(root, relpath))[1]
                    if error is None:
                        rows = (reader.row(record, builder.source) for record in cache.records(relpath))  # streamed
                        cached = ((None, part, part) for part in iter(lambda: list(islice(rows, PART_RECORDS)), []))
                        for _ in _stored(cached, builder, owner, relpath, manifest, counter):
                            pass
                if error is not None:
                    if manifest.strict and not error.startswith(UNUSED):
                        raise StrictBuildError(f"{builder.source}: {os.path.join(root, relpath)}: {error}")
                    status = _file_status(error)
                    manifest.add(ManifestEntry(builder.source, relpath, status, error), builder.root)
                elif not counter[0]:  # an index file (labels, metadata): read, no sample of its own
                    manifest.add(ManifestEntry(builder.source, relpath, "kept", builder.no_sample_note(relpath)))
                counts.add(error if error is not None or counter[0] else _no_sample_kind(builder, relpath))
        finally:
            try:
                settle()  # what was read is kept, even by an interrupted build
            finally:
                close = getattr(fresh, "close", None)
                if close is not None:
                    close()
        files_seen.append(counts)
        try:
            orphans = builder.orphan_records(set(files))
        except builder.reader_errors as err:  # an index file that cannot be read is rejected as it is read
            orphans = []
            warnings.append(f"{builder.source}: the rows of its index files that name no file were not checked "
                            f"(an index file is unreadable: {type(err).__name__}: {err})")
        for where, reason in orphans:
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
    """A sample id given twice in a source (by two files, or two rows of one index file) is ambiguous: no copy is
    trusted over another, all are rejected."""
    store = manifest.store
    duplicated = store.query(
        "SELECT id, relpath, sample_id FROM rows WHERE owner = ? AND sample_id IN (SELECT sample_id FROM rows "
        "WHERE owner = ? GROUP BY sample_id HAVING COUNT(*) > 1) ORDER BY id", (owner, owner)
    ).fetchall()  # ambiguous rows only: few
    paths: dict[str, list[str]] = defaultdict(list)
    for _, relpath, sample_id in duplicated:
        paths[sample_id].append(relpath)
    for _, relpath, sample_id in duplicated:
        others = list(paths[sample_id])
        others.remove(relpath)
        others = ", ".join(p if p != relpath else f"another row of {p}" for p in others)
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
            # a row of the same file (a CSV of texts) is named by its sample id: the path alone names this row too
            others = ", ".join(f"{sources[o]}/{p}" + (f" (sample {sid!r})" if p == source_path else "")
                               for j, (_, o, p, sid, _) in enumerate(members) if j != i)
            reason = f"label conflict: identical content at {others} carries another label"
            manifest.add(ManifestEntry(sources[owner], source_path, "rejected", reason, sample_id))
            conflicted.append(row_id)
    store.update_many("UPDATE rows SET state = 2 WHERE id = ?", ((i,) for i in conflicted))
    return len(conflicted)


def _group(task: TaskSpec, builders, caches, store: BuildStore, engine: ReadEngine | None = None):
    """Phase 3: groups by grouping key, exact duplicates, near duplicates and each source's own links, transitively
    (connected components over key numbers: arrays, not objects, whatever the number of samples). The near-duplicate
    search runs band by band in ``engine``'s worker processes where it has them. Gives each key its component's
    root key (the group's name) in the store; returns the duplicate statistics, each key's root and each key's
    publisher marks (``BuildStore.number_keys``), for ``_assign``."""
    def columns(sql: str, params: tuple = ()) -> np.ndarray:  # integer columns of a query, as one array
        return _columns(store, sql, params)

    keys = store.number_keys()  # each key's rows and publisher marks
    key_rows, marks = keys[:, 0], keys[:, 1:]
    n_keys = len(keys)
    # exact duplicates: each copy joined to its content's first row
    copies = columns(
        f"SELECT fk.kid, rk.kid, r.id, d.first FROM rows r JOIN {_DUPLICATED_CONTENT} d ON d.content_hash = "
        "r.content_hash JOIN rows f ON f.id = d.first JOIN keys fk ON fk.key = f.gkey JOIN keys rk ON rk.key = r.gkey "
        "WHERE r.state = 0 AND r.id != d.first"
    ).reshape(-1, 4)
    edges: list[np.ndarray] = [copies[:, :2]]
    exact_pairs = len(copies)
    kid, content, dct, wavelet = store.hashes(copies[:, 2:])
    del copies
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
        ids, kids = columns(f"SELECT id, {KID} FROM rows WHERE owner = ? AND state = 0 ORDER BY id",
                             (owner,)).T
        links = np.fromiter(builder.link_samples(CachedSamples(store, cache, ids)), dtype=np.dtype((np.int64, 2)))
        linked += len(links)
        edges.append(kids[links])
    roots = component_roots(n_keys, np.concatenate(edges))
    store.set_groups(roots)
    group_rows = np.bincount(roots, weights=key_rows, minlength=n_keys)  # a group's rows, keys: by its root
    group_keys = np.bincount(roots, minlength=n_keys)
    del key_rows, keys
    return {
        "exact duplicate pairs": exact_pairs,
        "near-duplicate pairs": near_only,
        "pairs linked by the source's own rule": linked,
        "groups merged from several keys": int(np.count_nonzero(group_keys > 1)),
        "largest group (samples)": int(group_rows.max()) if n_keys else 0,
    }, roots, marks


#: The valid rows, their source and their previous build's split.
_VALID = ("FROM rows r JOIN sources s ON s.owner = r.owner LEFT JOIN previous p ON p.source = s.name AND "
          "p.source_path = r.source_path AND p.sample_id = r.sample_id WHERE r.state = 0")
_MOVED = "p.split IS NOT NULL AND p.split != '' AND p.split IS NOT r.split"
#: A dropped row's reason: its group's leak repair (valid rows without a split are those, ``_assign``).
_LEAK = "(SELECT d.reason FROM keys k JOIN decisions d ON d.kid = k.kid WHERE k.key = r.grp)"
#: Every valid row's manifest entry (kept, moved or dropped), made by SQLite: ``ManifestEntry``'s fields, then
#: ``1, row id`` (after the entries of the table ``entries``, all added before, in the order the rows were read).
#: Kept: its note as reason; moved (its previous split differs): why, then its note.
_ROW_ENTRIES = (
    "SELECT s.name AS source, r.source_path AS source_path, "
    f"CASE WHEN r.split IS NULL THEN 'dropped' WHEN {_MOVED} THEN 'moved' ELSE 'kept' END AS status, "
    f"CASE WHEN r.split IS NULL THEN {_LEAK} WHEN {_MOVED} THEN 'moved from ' || p.split || ' to ' || r.split "
    "|| ': its group changed (' || r.grp || ')' || CASE WHEN r.note != '' THEN '; ' || r.note ELSE '' END "
    f"ELSE r.note END AS reason, r.sample_id AS sample_id, r.grp AS grp, r.split AS split, 1 AS part, r.id AS id "
    f"{_VALID}"
)


def _columns(store: BuildStore, sql: str, params: tuple = (), width: int = 2) -> np.ndarray:
    """The integer columns of a query, as one ``(rows, width)`` array (read a batch at a time)."""
    cursor = store.query(sql, params)
    blocks = [np.array(batch, dtype=np.int64) for batch in iter(lambda: cursor.fetchmany(store.batch), [])]
    return np.concatenate(blocks) if blocks else np.empty((0, width), dtype=np.int64)


def _manifest_rows(db: sqlite3.Connection, batch: int) -> Iterator[tuple]:
    """The manifest's entries in its order (source, path, sample id, then the order they were made), each as a
    tuple of ``ManifestEntry``'s fields, from a build store (``db``, read ``batch`` rows at a time): the table
    ``entries`` and the rows' (``_ROW_ENTRIES``) merged by one sort (each row's entry is never stored)."""
    cursor = db.execute(
        "SELECT source, source_path, status, reason, sample_id, grp, split FROM ("
        "SELECT source, source_path, status, reason, sample_id, grp, split, 0 AS part, id FROM entries "
        f"UNION ALL {_ROW_ENTRIES}) ORDER BY source, source_path, COALESCE(sample_id, ''), part, id"
    )
    while rows := cursor.fetchmany(batch):
        yield from rows


def _write_manifest_file(store_path: str, path: str, batch: int) -> tuple[dict, Counter]:
    """The manifest written to ``path`` from the build store at ``store_path`` (opened read only, ``batch`` rows
    read at a time), where the engine runs it (a worker process, while this one writes the shards); returns the
    report's figures (``_counted``: the tally and each ``(source, status)``'s count)."""
    db = sqlite3.connect(Path(store_path).as_uri() + "?mode=ro", uri=True)
    try:
        tally, by_source = _new_tally(), Counter()
        write_manifest_lines(Path(path), map(manifest_line, _counted(_manifest_rows(db, batch), tally, by_source)))
    finally:
        db.close()
    return tally, by_source


def _assign(task: TaskSpec, store: BuildStore, config_dir: Path, manifest: _Manifest, roots: np.ndarray,
            marks: np.ndarray) -> None:
    """Phase 4: each group's split (``decide_splits``, for a batch of groups at a time, from the publisher marks of
    its keys), leak repairs and moves since the previous build. The decisions go to the store by the group's root
    key, then each valid row gets its group and split in one pass; the manifest's query makes each row's entry from
    them (``_ROW_ENTRIES``). ``roots``: each key's component (``_group``); ``marks``: whether each key's rows were
    marked test, train or otherwise by the publisher (``BuildStore.number_keys``'s last columns). Arrays of a few
    numbers a key, whatever the number of samples."""
    marked = np.zeros((3, len(roots)), dtype=bool)  # a group's marks, by its root key
    for flags, column in zip(marked, marks.T):
        flags[roots[column != 0]] = True
    group_test, group_train, group_odd = marked
    if group_odd.any():  # the first group (in name order) with a mark other than train or test
        first = int(np.flatnonzero(group_odd)[0])
        name = store.query("SELECT key FROM keys WHERE kid = ?", (first,)).fetchone()[0]
        check_marks(name, {mark for (mark,) in store.query(
            "SELECT DISTINCT published FROM rows WHERE state = 0 AND published IS NOT NULL AND gkey IN "
            "(SELECT key FROM keys WHERE root = ?)", (first,))})
    groups = np.flatnonzero(roots == np.arange(len(roots)))  # root keys, in name order

    def decisions():
        for start in range(0, len(groups), store.batch):
            kids = groups[start:start + store.batch]
            names = [name for (name,) in store.query(
                "SELECT key FROM keys WHERE kid BETWEEN ? AND ? AND kid = root ORDER BY kid",
                (int(kids[0]), int(kids[-1])),
            ).fetchall()]
            if len(names) != len(kids):
                raise RuntimeError(f"{store.path}: {len(names)} groups named where {len(kids)} were expected")
            splits = decide_splits([group_fraction(name) for name in names], group_test[kids], group_train[kids],
                                   task)
            for kid, name, split, leak in zip(kids.tolist(), names, splits.tolist(), group_test[kids].tolist()):
                yield kid, SPLITS[split], None if leak else SPLITS[split], leak_reason(name) if leak else None

    store.set_decisions(decisions())
    store.load_previous(iter_manifest(config_dir))
    if manifest.strict:  # a leak repair stops a strict build: the first, in the order the rows were read
        for source, source_path, sample_id, group_id, reason in store.db.execute(
            f"SELECT s.name, r.source_path, r.sample_id, r.grp, {_LEAK} {_VALID} AND r.split IS NULL ORDER BY r.id"
        ):
            manifest.check(ManifestEntry(source, source_path, "dropped", reason, sample_id, group_id))
    store.db.execute("CREATE INDEX rows_for_shards ON rows (owner, split, sample_id) WHERE split IS NOT NULL")


#: Validation caches a worker process opened (by path and version), for the row groups it encodes.
_WORKER_CACHES: dict[tuple[str, str], ValidationCache] = {}


class _CacheHandle:
    """A source's validation cache as a task carries it: the cache itself here; pickled (to a worker process),
    its path and version, which the worker opens once: to store the plain files it reads (``_Reader.settle``, each
    batch committed before its outcomes go back) and to read samples for the shards (committed before them)."""

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
        # one pool of workers for the reading, the shards and the manifest, started before any database is open
        stack.enter_context(reader.session())
        store = BuildStore(out_dir / CACHE_DIR / task.name / BUILD_STORE, names)
        stack.callback(store.close)
        manifest = _Manifest(store, strict=on_bad_files == "error")
        caches = []
        for builder in builders:
            cache = ValidationCache(out_dir / CACHE_DIR / task.name / f"{builder.source}.sqlite",
                                    _cache_version(task, builder))
            stack.callback(cache.close)
            caches.append(cache)
        read_warnings: list[str] = []
        files_seen = _read_all(task, builders, caches, manifest, progress, reader, read_warnings)
        for cache in caches:
            cache.commit()
        warnings = [f"{b.source}: {w}" for b in builders for w in b.layout_warnings()] + read_warnings
        warnings += _draw_unpublished_tests(builders, store)
        conflicted = _reject_label_conflicts(store, names, manifest)
        duplicates, roots, marks = _group(task, builders, caches, store, reader)
        hashed = tuple(r[0] for r in store.query(  # gkey: ``source:group``
            "SELECT DISTINCT substr(gkey, 1, instr(gkey, ':') - 1) FROM rows WHERE state = 0 AND dct IS NOT NULL"
        ).fetchall())
        duplicates["label conflicts rejected"] = conflicted
        _assign(task, store, config_dir, manifest, roots, marks)
        del roots, marks
        # the manifest is written from the store (read only from now on) by the engine, in a worker while this
        # process writes the shards, to a file that replaces the manifest once the shards are written
        store.flush()
        store.db.commit()
        partial_manifest = store.path.with_name(MANIFEST_NAME + ".partial")
        written = reader.submit(_write_manifest_file, os.path.abspath(store.path), os.fspath(partial_manifest),
                                store.batch)
        stack.callback(partial_manifest.unlink, missing_ok=True)
        stack.callback(wait, [written])  # (first) a build that fails leaves no worker writing it
        kept = store.query("SELECT COUNT(*) FROM rows WHERE split IS NOT NULL").fetchone()[0]
        if not kept and (config_dir / "build_info.json").is_file():
            return _nothing_kept(task, builders, files_seen, out_dir, written, partial_manifest, duplicates,
                                 warnings, hashed)

        reports = []
        for owner, (builder, cache) in enumerate(zip(builders, caches)):
            fp, data_files, asset_paths = _write_source(
                builder, owner, cache, store, features, out_dir, config_dir, progress, reader
            )
            splits = dict(store.query("SELECT split, COUNT(*) FROM rows WHERE owner = ? AND split IS NOT NULL "
                                      "GROUP BY split", (owner,)).fetchall())
            note = _release_note(builder, files_seen[owner])
            if "matching no published release" in note:
                warnings.append(f"{builder.source}: {note}")
            reports.append(SourceReport(
                name=builder.source, root=str(builder.root), files_seen=files_seen[owner].seen, fingerprint=fp,
                counts={},  # from the manifest's pass, below
                splits={s: splits.get(s, 0) for s in SPLITS},
                data_files=data_files, release_note=note, provenance=builder.provenance(), assets=asset_paths,
            ))
        warnings += _empty_splits(reports)
        if config_dir.is_dir():
            for old in sorted(config_dir.iterdir()):
                if old.is_dir() and old.name not in names:
                    shutil.rmtree(old)
                    warnings.append(
                        f"removed {old.relative_to(out_dir).as_posix()}/: the previous build's shards of source "
                        f"{old.name!r}, which is not among this build's sources ({', '.join(names)}); pass its "
                        "folder again to keep it"
                    )
        tally, by_source = written.result()  # counted as the manifest was written
        config_dir.mkdir(parents=True, exist_ok=True)
        os.replace(partial_manifest, config_dir / MANIFEST_NAME)
        for report in reports:
            report.counts = {k: by_source[report.name, k] for k in STATUSES}

    report = BuildReport(task.name, out_dir, reports, ManifestView(config_dir), duplicates, warnings, tally,
                         near_duplicates_searched=bool(hashed), hashed_sources=hashed)
    _write_build_info(config_dir, task, report)
    write_readme(out_dir)
    return report


#: Where a build that kept no sample leaves its manifest, under the build cache, when an earlier build of the config
#: is there (that build is left as it was).
FAILED_BUILD_DIR = "failed"


def _nothing_kept(task, builders, files_seen, out_dir: Path, written, partial_manifest: Path, duplicates, warnings,
                  hashed) -> BuildReport:
    """The report of a build that kept no sample where an earlier build of the config is: that build's shards,
    manifest, build info and card entry are left as they were (a wrong or unfinished download must not erase a good
    build), and this build's manifest, each file's reason, goes to ``.build_cache/<config>/failed/``."""
    failed = out_dir / CACHE_DIR / task.name / FAILED_BUILD_DIR
    failed.mkdir(parents=True, exist_ok=True)
    tally, by_source = written.result()
    os.replace(partial_manifest, failed / MANIFEST_NAME)
    reports = [SourceReport(
        name=b.source, root=str(b.root), files_seen=files_seen[i].seen, fingerprint="",
        counts={k: by_source[b.source, k] for k in STATUSES}, splits={s: 0 for s in SPLITS}, data_files={},
        release_note=_release_note(b, files_seen[i]), provenance=b.provenance(),
    ) for i, b in enumerate(builders)]
    warnings = [*warnings, f"no sample kept: the earlier build of {task.name} in {out_dir} is left as it was (its "
                           f"shards, manifest and card entry); this build's manifest is {failed / MANIFEST_NAME}"]
    return BuildReport(task.name, out_dir, reports, ManifestView(failed), duplicates, warnings, tally,
                       near_duplicates_searched=bool(hashed), hashed_sources=hashed)


def _empty_splits(reports: Sequence[SourceReport]) -> list[str]:
    """A warning for each split that a config with samples leaves empty (too few groups for three: a partial
    download, a few subjects): ``load_dataset`` gives no such split, which only a count of 0 said."""
    totals = Counter()
    for report in reports:
        totals.update(report.splits)
    if not sum(totals.values()):
        return []
    warnings = []
    for split in (s for s in SPLITS if not totals[s]):
        others = ", ".join(f"{s} {totals[s]}" for s in SPLITS if s != split)
        warnings.append(f"the {split} split is empty: every group went to the other splits ({others}; a group never "
                        f"spans splits), too few groups for three (a partial download?); load_dataset gives no "
                        f"{split} split")
    return warnings


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
        "data_files": report.data_files,
        "splits": report.splits,
        "duplicates": report.duplicates,
        "near_duplicate_search": (
            f"two hashes of the normalised image must agree: DCT within {task.near_duplicate_distance} and "
            f"wavelet within {task.near_duplicate_second_distance} of 64 bits; {NEAR_DUPLICATE_RECALL}"
        ) if report.near_duplicates_searched else None,
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
                "near_duplicates_searched": s.name in report.hashed_sources,
            }
            for s in report.sources
        ],
    }
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "build_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
