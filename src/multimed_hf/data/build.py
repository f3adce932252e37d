"""Build one config from its source folders: read -> group -> split -> shards + manifest + card."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from multimed_hf.data.cache import ValidationCache
from multimed_hf.data.card import write_readme
from multimed_hf.data.errors import BadSourceFile, StrictBuildError, UnusedSourceFile
from multimed_hf.data.features import task_features
from multimed_hf.data.grouping import connected_groups, near_duplicate_pairs
from multimed_hf.data.images import NEAR_DUPLICATE_RECALL, PERCEPTUAL_HASH_VERSION, split_hashes
from multimed_hf.data.manifest import ManifestEntry, read_manifest, write_manifest
from multimed_hf.data.sample import RejectedRecord, Sample
from multimed_hf.data.engines import ReadEngine, make_engine
from multimed_hf.data.shards import Fingerprint, ShardWriter, encode_columns, payload_size, plan_shards
from multimed_hf.data.source_builder import NOTE, SourceBuilder
from multimed_hf.data.splits import SPLITS, assign_splits
from multimed_hf.tasks import TaskSpec

__all__ = ["BuildReport", "SourceReport", "build_config", "CACHE_DIR", "ON_BAD_FILES"]

CACHE_DIR = ".build_cache"
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
    """What a build kept, moved, dropped and rejected, and why."""

    task: str
    out_dir: Path
    sources: list[SourceReport]
    entries: list[ManifestEntry]
    duplicates: dict[str, int]
    warnings: list[str]

    @property
    def counts(self) -> Counter:
        return Counter(e.status for e in self.entries)

    @property
    def splits(self) -> dict[str, int]:
        sizes = Counter(e.split for e in self.entries if e.status in ("kept", "moved"))
        return {s: sizes.get(s, 0) for s in SPLITS}

    @property
    def index_files(self) -> int:
        """Kept entries that are index files (labels, metadata): read, no sample of their own."""
        return sum(1 for e in self.entries if e.status == "kept" and e.split is None)

    @property
    def kept_notes(self) -> dict[str, int]:
        """Kept samples whose manifest entry carries a note (e.g. a file-name variant), counted by the note's kind."""
        notes = Counter(
            e.reason.split(":")[0] for e in self.entries if e.status == "kept" and e.sample_id and e.reason
        )
        return dict(sorted(notes.items()))

    def summary(self) -> str:
        c = self.counts
        index = f", {self.index_files} index files read" if self.index_files else ""
        lines = [
            f"{self.task}: {len(self.entries)} entries from {sum(s.files_seen for s in self.sources)} files: "
            f"kept {c['kept'] + c['moved'] - self.index_files} (moved {c['moved']}), dropped {c['dropped']}, "
            f"rejected {c['rejected']}{index}",
            "  splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
            "  duplicates: " + ", ".join(f"{k} {v}" for k, v in self.duplicates.items()),
        ]
        for source in self.sources:
            lines.append(f"  {source.name} ({source.root}): {source.release_note}")
        reasons = Counter(e.reason.split(":")[0] for e in self.entries if e.status in ("dropped", "rejected"))
        for reason, n in sorted(reasons.items()):
            lines.append(f"  {n} x {reason}")
        for note, n in sorted(self.kept_notes.items()):
            lines.append(f"  {n} kept with a note: {note}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


#: Prefix of a cached reason that marks a file the task does not use (dropped, not rejected).
UNUSED = "not used: "


def _read_one(builder: SourceBuilder, relpath: str) -> tuple[list[Sample] | None, str | None]:
    """One file's samples, or the reason it cannot give any."""
    try:
        return builder.read_file(relpath), None
    except UnusedSourceFile as err:
        return None, err.reason if err.reason.startswith(UNUSED) else UNUSED + err.reason
    except BadSourceFile as err:
        return None, err.reason
    except builder.reader_errors as err:  # a reader failing on damaged data: named in the manifest, not lost
        return None, f"unreadable: {type(err).__name__}: {err}"
    # anything else (TypeError, AttributeError, KeyError, ...) is a bug of ours: it raises, naming the file


def _read_source(builder: SourceBuilder, cache: ValidationCache, strict: bool, progress: bool, engine: ReadEngine):
    """Every file of one source, in order: ``(relpath, records, error)``, where ``records`` iterates the file's
    samples and rejected records (files validated before come from the cache; fresh ones are cached first)."""
    files = builder.list_files()
    cached = {relpath: cache.lookup(relpath, builder.root / relpath) for relpath in files}
    todo = [relpath for relpath in files if cached[relpath] is None]
    fresh = engine.map(_read_one, builder, todo)
    try:
        for relpath in tqdm(files, desc=f"reading {builder.source}", unit="file", disable=not progress):
            if cached[relpath] is None:
                records, error = next(fresh)
                cache.put(relpath, builder.root / relpath, records, error)
            else:
                error = cached[relpath][1]
                records = cache.records(relpath) if error is None else None
            if error is not None and strict and not error.startswith(UNUSED):
                raise StrictBuildError(f"{builder.source}: {builder.root / relpath}: {error}")
            yield relpath, records, error
    finally:
        close = getattr(fresh, "close", None)
        if close is not None:
            close()


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
    """The entries of a build, and the ``--strict`` policy: under it the first rejection (or repair) stops."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.entries: list[ManifestEntry] = []

    def add(self, entry: ManifestEntry, root: Path | None = None) -> None:
        if self.strict and (entry.status == "rejected" or entry.reason.startswith("leak repair")):
            where = root / entry.source_path if root is not None else entry.source_path
            raise StrictBuildError(f"{entry.source}: {where}: {entry.reason}")
        self.entries.append(entry)


def _cache_version(task: TaskSpec, builder: SourceBuilder) -> str:
    """The builder's version plus a digest of the registry facts its samples are made from (the task's labels and
    both label maps of the source, the task's and the builder's own): editing the registry re-validates."""
    facts = [
        [asdict(label) for label in task.labels],
        {k: dict(v) for k, v in task.source(builder.source).label_map.items()},
        {k: dict(v) for k, v in builder.spec().label_map.items()},
    ]
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=list).encode()).hexdigest()[:12]
    return f"{builder.version}+registry-{digest}+hash-{PERCEPTUAL_HASH_VERSION}"


@dataclass(slots=True)
class _Row:
    """What the build keeps in memory of one valid sample; the sample itself stays in the validation cache
    (``relpath``, ``index``) until its shard is written."""

    owner: int
    relpath: str
    index: int
    sample_id: str
    source_path: str
    group_key: str | None
    published_split: str | None
    content_hash: str | None
    perceptual_hash: int | None
    labels: bytes  # a digest of the label columns' values: equal labels, equal digests
    note: str
    payload: int


def _labels_digest(task: TaskSpec, sample: Sample) -> bytes:
    labels = json.dumps([sample.fields.get(n) for n in task.label_names], default=str)
    return hashlib.blake2b(labels.encode(), digest_size=16).digest()


def _read_all(task: TaskSpec, builders, caches, manifest: _Manifest, progress: bool, engine: ReadEngine):
    """Phase 1: every file of every source read and validated, its records kept in the source's cache; returns a
    ``_Row`` per valid sample and the number of files seen per source (bad files, bad records, index files and
    duplicate ids go to the manifest)."""
    rows: list[_Row] = []
    files_seen: list[int] = []
    for index, (builder, cache) in enumerate(zip(builders, caches)):
        mine: list[_Row] = []
        seen: dict[str, str] = {}  # sample id -> the first file that gave it
        duplicated: set[str] = set()
        relpaths = []
        for relpath, records, error in _read_source(builder, cache, manifest.strict, progress, engine):
            relpaths.append(relpath)
            if error is not None:
                status = "dropped" if error.startswith(UNUSED) else "rejected"
                manifest.add(ManifestEntry(builder.source, relpath, status, error), builder.root)
                continue
            count = 0
            for position, record in enumerate(records):
                count += 1
                if isinstance(record, RejectedRecord):
                    manifest.add(ManifestEntry(builder.source, record.where, "rejected", record.reason), builder.root)
                    continue
                if seen.setdefault(record.sample_id, relpath) != relpath:
                    duplicated.add(record.sample_id)
                mine.append(_Row(
                    index, relpath, position, record.sample_id, record.source_path, record.group_key,
                    record.published_split, record.content_hash, record.perceptual_hash, _labels_digest(task, record),
                    record.extra.get(NOTE, ""), payload_size(record),
                ))
            if not count:  # an index file (labels, metadata): read, no sample of its own
                manifest.add(ManifestEntry(builder.source, relpath, "kept", "index file: no sample of its own"))
        files_seen.append(len(relpaths))
        for where, reason in builder.orphan_records(set(relpaths)):
            manifest.add(ManifestEntry(builder.source, where, "rejected", reason))
        paths_of_id: dict[str, list[str]] = defaultdict(list)
        for row in mine:
            if row.sample_id in duplicated:
                paths_of_id[row.sample_id].append(row.relpath)
        for row in mine:
            if row.sample_id in duplicated:  # ambiguous: no copy is trusted over another
                others = ", ".join(p for p in paths_of_id[row.sample_id] if p != row.relpath)
                reason = f"duplicate id: {row.sample_id!r} is also {others}"
                manifest.add(ManifestEntry(builder.source, row.relpath, "rejected", reason, row.sample_id),
                             builder.root)
            else:
                rows.append(row)
    return rows, files_seen


def _reject_label_conflicts(task: TaskSpec, rows: list[_Row], sources: list[str], manifest: _Manifest):
    """Phase 2: exact duplicates (same content hash) whose labels disagree: every copy is rejected. Returns the
    content groups and the rejected indices."""
    by_content: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row.content_hash:
            by_content[row.content_hash].append(i)
    conflicted: set[int] = set()
    for members in by_content.values():
        if len(members) > 1 and len({rows[i].labels for i in members}) > 1:
            conflicted.update(members)
            for i in members:
                others = ", ".join(f"{sources[j]}/{rows[j].source_path}" for j in members if j != i)
                reason = f"label conflict: identical content at {others} carries another label"
                manifest.add(ManifestEntry(sources[i], rows[i].source_path, "rejected", reason, rows[i].sample_id))
    return by_content, conflicted


def _group(task: TaskSpec, builders, caches, rows: list[_Row], keep, by_content):
    """Phase 3: groups by grouping key, exact duplicates, near duplicates and each source's own links, transitively
    (connected components). Returns ``{group id: row indices}`` and the duplicate statistics."""
    keys = {}
    for i in keep:
        row, source = rows[i], builders[rows[i].owner].source
        keys[i] = f"{source}:{row.group_key}" if row.group_key else f"{source}:{row.sample_id}"
    edges: list[tuple[str, str]] = []
    exact_pairs = 0
    for members in by_content.values():
        members = [i for i in members if i in keys]
        for j in members[1:]:
            exact_pairs += 1
            edges.append((keys[members[0]], keys[j]))
    hashed = [i for i in keep if rows[i].perceptual_hash is not None]
    near_pairs = []
    if hashed:
        dct, wavelet = split_hashes([rows[i].perceptual_hash for i in hashed])
        near_pairs = near_duplicate_pairs(
            dct, task.near_duplicate_distance, wavelet, task.near_duplicate_second_distance
        )
    near_only = 0
    for a, b in near_pairs:
        ia, ib = hashed[a], hashed[b]
        near_only += rows[ia].content_hash != rows[ib].content_hash
        edges.append((keys[ia], keys[ib]))
    linked = 0
    for index, (builder, cache) in enumerate(zip(builders, caches)):
        if type(builder).link_samples is SourceBuilder.link_samples:  # no rule of its own: its samples stay on disk
            continue
        mine = [i for i in keep if rows[i].owner == index]
        for a, b in builder.link_samples([cache.record(rows[i].relpath, rows[i].index) for i in mine]):
            linked += 1
            edges.append((keys[mine[a]], keys[mine[b]]))
    group_of = connected_groups([keys[i] for i in keep], edges)
    groups: dict[str, list[int]] = defaultdict(list)
    for i in keep:
        groups[group_of[keys[i]]].append(i)
    stats = {
        "exact duplicate pairs": exact_pairs,
        "near-duplicate pairs": near_only,
        "pairs linked by the source's own rule": linked,
        "groups merged from several keys": sum(1 for m in groups.values() if len({keys[i] for i in m}) > 1),
        "largest group (samples)": max((len(m) for m in groups.values()), default=0),
    }
    return groups, stats


def _assign(task: TaskSpec, groups, rows: list[_Row], sources: list[str], config_dir: Path, manifest: _Manifest):
    """Phase 4: splits, leak repairs and moves since the previous build; returns each source's
    ``(split, group id, row)`` triples."""
    decisions = assign_splits(groups, [r.published_split for r in rows], task)
    previous = {(e.source, e.source_path, e.sample_id): e.split for e in read_manifest(config_dir)}
    per_source: dict[int, list[tuple[str, str, _Row]]] = defaultdict(list)
    for group_id, members in groups.items():
        for i in members:
            decision, row, source = decisions[i], rows[i], sources[i]
            if decision.status == "dropped":
                manifest.add(ManifestEntry(
                    source, row.source_path, "dropped", decision.reason, row.sample_id, group_id
                ))
                continue
            before = previous.get((source, row.source_path, row.sample_id))
            status, reason = "kept", row.note
            if before and before != decision.split:
                moved = f"moved from {before} to {decision.split}: its group changed ({group_id})"
                status, reason = "moved", f"{moved}; {reason}" if reason else moved
            manifest.add(ManifestEntry(
                source, row.source_path, status, reason, row.sample_id, group_id, decision.split
            ))
            per_source[row.owner].append((decision.split, group_id, row))
    return per_source


def _write_source(builder: SourceBuilder, cache: ValidationCache, rows, features, out_dir: Path, config_dir: Path,
                  progress: bool):
    """Phase 5: one source's shards (and assets) under its fingerprint; the previous build's copy goes. Samples are
    read back from the cache one row group at a time, and the fingerprint is taken as they are written (into a
    partial folder, renamed once the fingerprint is known). Returns the fingerprint, ``{split: shard paths}`` and
    the asset paths."""
    rows = sorted(rows, key=lambda r: (SPLITS.index(r[0]), r[2].sample_id))
    assets = builder.assets()
    digest = Fingerprint([builder.version, features.to_dict(), assets])
    source_dir = config_dir / builder.source
    partial = source_dir / PARTIAL
    if partial.exists():
        shutil.rmtree(partial)
    names: dict[str, list[str]] = {}
    for split in SPLITS:
        split_rows = [r for r in rows if r[0] == split]
        if not split_rows:
            continue
        shards = plan_shards([row.payload for _, _, row in split_rows])
        names[split] = []
        for n, shard in enumerate(tqdm(
            shards, desc=f"writing {builder.source}/{split}", unit="shard", disable=not progress,
        )):
            name = f"{split}-{n:05d}-of-{len(shards):05d}.parquet"
            writer = ShardWriter(partial / name, features)
            try:
                for start in range(shard.start, shard.stop, writer.batch_rows):
                    batch = split_rows[start:min(start + writer.batch_rows, shard.stop)]
                    samples = [cache.record(row.relpath, row.index) for _, _, row in batch]
                    for (_, group_id, _), sample in zip(batch, samples):
                        digest.add(split, group_id, sample)
                    writer.write(encode_columns(samples, [g for _, g, _ in batch], builder, features))
            except BaseException:
                writer.abort()
                raise
            writer.close()
            names[split].append(name)
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
    come back in file order: every engine gives the same shards, manifest and card."""
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
    manifest = _Manifest(strict=on_bad_files == "error")

    with ExitStack() as stack:
        caches = []
        for builder in builders:
            cache = ValidationCache(out_dir / CACHE_DIR / task.name / f"{builder.source}.sqlite",
                                    _cache_version(task, builder))
            stack.callback(cache.close)
            caches.append(cache)
        with reader.session():
            rows, files_seen = _read_all(task, builders, caches, manifest, progress, reader)
        for cache in caches:
            cache.commit()
        warnings = [f"{b.source}: {w}" for b in builders for w in b.layout_warnings()]
        warnings += _draw_unpublished_tests(builders, rows)
        sources = [builders[r.owner].source for r in rows]
        by_content, conflicted = _reject_label_conflicts(task, rows, sources, manifest)
        keep = [i for i in range(len(rows)) if i not in conflicted]
        groups, duplicates = _group(task, builders, caches, rows, keep, by_content)
        del by_content
        duplicates["label conflicts rejected"] = len(conflicted)
        per_source = _assign(task, groups, rows, sources, config_dir, manifest)
        del groups, sources, rows

        reports = []
        for index, (builder, cache) in enumerate(zip(builders, caches)):
            triples = per_source.pop(index, [])
            fp, data_files, asset_paths = _write_source(
                builder, cache, triples, features, out_dir, config_dir, progress
            )
            counts = Counter(e.status for e in manifest.entries if e.source == builder.source)
            note = _release_note(builder, files_seen[index])
            if "matching no published release" in note:
                warnings.append(f"{builder.source}: {note}")
            reports.append(SourceReport(
                name=builder.source, root=str(builder.root), files_seen=files_seen[index], fingerprint=fp,
                counts={k: counts.get(k, 0) for k in ("kept", "moved", "dropped", "rejected")},
                splits={s: sum(1 for t in triples if t[0] == s) for s in SPLITS},
                data_files=data_files, release_note=note, provenance=builder.provenance(), assets=asset_paths,
            ))
    if config_dir.is_dir():
        for old in sorted(config_dir.iterdir()):
            if old.is_dir() and old.name not in names:
                shutil.rmtree(old)
                warnings.append(
                    f"removed {old.relative_to(out_dir).as_posix()}/: the previous build's shards of source "
                    f"{old.name!r}, which is not among this build's sources ({', '.join(names)}); pass its folder "
                    "again to keep it"
                )

    manifest.entries.sort(key=lambda e: (e.source, e.source_path, e.sample_id or ""))
    report = BuildReport(task.name, out_dir, reports, manifest.entries, duplicates, warnings)
    write_manifest(config_dir, report.entries)
    _write_build_info(config_dir, task, report)
    write_readme(out_dir)
    return report


def _draw_unpublished_tests(builders, rows: list[_Row]) -> list[str]:
    """A source whose samples carry publisher training marks but no test mark (a partial download, e.g. only
    ``train/``): its marks are dropped so that its groups are drawn into all three splits; returns the warnings."""
    warnings = []
    for index, builder in enumerate(builders):
        mine = [row for row in rows if row.owner == index]
        marks = {row.published_split for row in mine}
        if "train" in marks and "test" not in marks and builder.draw_test_when_unpublished:
            for row in mine:
                row.published_split = None
            warnings.append(
                f"{builder.source}: no sample of the publisher's test set was found: train, validation and test "
                "are drawn by group from the files present (the published test set, once added, replaces this)"
            )
    return warnings


def _write_build_info(config_dir: Path, task: TaskSpec, report: BuildReport) -> None:
    dropped = [e for e in report.entries if e.status == "dropped" and e.reason.startswith("leak repair")]
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
            "dropped": len(dropped),
            "groups": len({e.group for e in dropped}),
            "reasons": dict(Counter(e.reason for e in dropped).most_common(5)),
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
