"""``num_proc`` builds: the reading workers store the plain files' samples in the validation cache themselves (the
main process receives and keeps only their rows), giving the same cache, and the same build, as one process."""

from __future__ import annotations

import os
import sqlite3

import pytest

from build_sources import aged_mri_source
import multimed_hf.data.engines as engines
from multimed_hf.api import build_dataset
from multimed_hf.data.build import CACHE_DIR
from multimed_hf.data.cache import ValidationCache


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    return aged_mri_source(tmp_path_factory.mktemp("mri"))


def _cache(out) -> tuple[list, list]:
    """The validation cache's file rows and records, sorted."""
    (path,) = (out / CACHE_DIR / "brain_tumor").glob("*.sqlite")
    with sqlite3.connect(path) as db:
        return (db.execute("SELECT path, size, mtime, error, count FROM files ORDER BY path").fetchall(),
                db.execute("SELECT path, idx, body FROM records ORDER BY path, idx").fetchall())


def _outputs(out) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and CACHE_DIR not in p.parts}


def test_workers_store_the_plain_files_and_the_cache_is_the_one_process_cache(mri, tmp_path, monkeypatch):
    main, put_many = os.getpid(), ValidationCache.put_many
    here = []

    def counting(self, files):
        if os.getpid() == main:
            here.extend(relpath for relpath, _, _ in files)
        return put_many(self, files)

    monkeypatch.setattr(ValidationCache, "put_many", counting)
    monkeypatch.setattr(engines, "SETTLE_FILES", 5)  # several transactions a task
    one = build_dataset("brain_tumor", [mri], tmp_path / "one", progress=False)
    assert here, "one process stores its files itself"
    here.clear()
    two = build_dataset("brain_tumor", [mri], tmp_path / "two", progress=False, num_proc=2)
    assert not here, f"the main process stored {len(here)} files that its workers read"
    assert two.counts["rejected"] > 0  # the damaged files, stored by the main process with their reasons
    assert _cache(tmp_path / "two") == _cache(tmp_path / "one")
    assert _outputs(tmp_path / "two") == _outputs(tmp_path / "one")
    again = build_dataset("brain_tumor", [mri], tmp_path / "two", progress=False, num_proc=2)  # from the cache
    assert list(again.entries) == list(one.entries)
    assert _outputs(tmp_path / "two") == _outputs(tmp_path / "one")


def test_files_changed_since_are_stored_again_by_the_workers(mri, tmp_path):
    out = tmp_path / "out"
    build_dataset("brain_tumor", [mri], out, progress=False, num_proc=2)
    files, records = _cache(out)
    changed = [path for path, _, _, error, count in files if error is None and count == 1][:12]  # read by workers
    stats = {path: (mri / path).stat() for path in changed}
    for path, stat in stats.items():
        os.utime(mri / path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        build_dataset("brain_tumor", [mri], out, progress=False, num_proc=2)
        again_files, again_records = _cache(out)
        assert [row for row in again_files if row[0] not in stats] == [row for row in files if row[0] not in stats]
        assert {row[0]: row[2] for row in again_files if row[0] in stats} == {
            path: stat.st_mtime_ns + 1_000_000_000 for path, stat in stats.items()}
        assert [r for r in again_records if r[0] not in stats] == [r for r in records if r[0] not in stats]
        renewed = {path: body for path, _, body in again_records if path in stats}
        assert len(renewed) == len(stats)  # one record each, its file's new stamp in it
        assert all(f'"mtime_ns": {stats[path].st_mtime_ns + 1_000_000_000}' in body for path, body in renewed.items())
    finally:
        for path, stat in stats.items():
            os.utime(mri / path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
