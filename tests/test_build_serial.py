"""The main process's serial work per file under ``num_proc``: records' cache bodies made in the reading workers
and the near-duplicate search run band by band in the workers, with the same cache rows and the same links."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile

import numpy as np
import pytest

from build_sources import aged_mri_source
import multimed_hf.data.build as build
import multimed_hf.data.build_store as build_store
import multimed_hf.data.cache as cache_module
from multimed_hf.api import build_dataset
from multimed_hf.data import grouping
from multimed_hf.data.cache import ValidationCache, encode_body
from multimed_hf.data.engines import LocalEngine
from multimed_hf.data.grouping import component_roots, near_duplicate_links, near_duplicate_pairs
from multimed_hf.data.manifest import ManifestEntry, read_manifest, write_manifest
from multimed_hf.data.sample import RejectedRecord, Sample, SourceFileRef


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    return aged_mri_source(tmp_path_factory.mktemp("mri"))


def _hashes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and second hashes in clusters of near duplicates (a few bits flipped from a cluster's centre), and a
    content number per hash equal within some of the near pairs."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**63, size=(n // 8, 2), dtype=np.int64).view(np.uint64)
    pick = rng.integers(0, len(centres), n)
    flips = [np.bitwise_or.reduce(np.uint64(1) << rng.integers(0, 64, size=(n, 3)).astype(np.uint64), axis=1)
             for _ in range(2)]
    first, second = centres[pick, 0] ^ flips[0], centres[pick, 1] ^ flips[1]
    return first, second, rng.integers(0, 2, n)


@pytest.mark.parametrize("second_hash", [True, False])
def test_links_searched_band_by_band_in_workers_are_the_same(second_hash, tmp_path, monkeypatch):
    first, second, content = _hashes(3000, seed=11)
    second, d2 = (second, 6) if second_hash else (None, None)
    here = near_duplicate_links(first, 10, second, d2, content)
    answers = []

    def ordered(fn, tasks):  # the workers' answers, seen on their way back
        for answer in engine.ordered(fn, tasks):
            answers.append(answer)
            yield answer

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    engine = LocalEngine(2)
    with engine.session():
        there = near_duplicate_links(first, 10, second, d2, content, ordered)
    assert len(answers) == 11 and all(len(edges) <= len(first) for edges, _, _ in answers)
    assert not list(tmp_path.iterdir()), "the mapped arrays were left behind"
    pairs = near_duplicate_pairs(first, 10, second, d2)
    assert here.pairs == there.pairs == len(pairs) > len(first)
    assert here.distinct_pairs == there.distinct_pairs > 0
    assert np.array_equal(here.edges, there.edges)  # the same forest, edge for edge
    assert np.array_equal(component_roots(len(first), there.edges), component_roots(len(first), pairs))


def test_a_build_with_workers_runs_the_search_bands_there(mri, tmp_path, monkeypatch):
    searched = []
    band = grouping._Search.band
    monkeypatch.setattr(grouping._Search, "band", lambda self, a: searched.append(os.getpid()) or band(self, a))
    build_dataset("brain_tumor", [mri], tmp_path / "two", progress=False, num_proc=2)
    assert not searched, "the main process searched bands itself"
    build_dataset("brain_tumor", [mri], tmp_path / "one", progress=False)
    assert searched and set(searched) == {os.getpid()}  # one process: here


def _bodies(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT path, idx, body FROM records ORDER BY path, idx").fetchall()


def test_bodies_made_ahead_are_stored_as_put_makes_them(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 10)
    ref = SourceFileRef("a.bin", "0" * 64, 10, 123)
    samples = [Sample("s1", "a.bin", {"image": ref, "label": "x", "n": np.int64(3)}, group_key="g", perceptual_hash=7),
               RejectedRecord("a.bin:row 2", "bad row")]
    with_array = Sample("s2", "a.bin", {"signal": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert encode_body(with_array) is None  # its array goes to the side file, which put writes
    made, ahead = ValidationCache(tmp_path / "made.sqlite", "v"), ValidationCache(tmp_path / "ahead.sqlite", "v")
    made.put("a.bin", source, [*samples, with_array])
    ahead.put("a.bin", source, [*(encode_body(s) for s in samples), with_array])
    made.close()
    ahead.close()
    assert _bodies(tmp_path / "made.sqlite") == _bodies(tmp_path / "ahead.sqlite")
    again = ValidationCache(tmp_path / "ahead.sqlite", "v")
    read = list(again.records("a.bin"))
    assert (read[0].sample_id, read[0].fields["image"], read[0].fields["n"]) == ("s1", ref, 3)
    assert isinstance(read[1], RejectedRecord) and read[1].reason == "bad row"
    assert np.array_equal(read[2].fields["signal"], with_array.fields["signal"])
    again.close()


def test_a_build_with_workers_serialises_no_record_in_the_main_process(mri, tmp_path, monkeypatch):
    main, encode = os.getpid(), cache_module.sample_to_json
    here = []

    def counting(*args, **kwargs):
        if os.getpid() == main:
            here.append(args[0])
        return encode(*args, **kwargs)

    monkeypatch.setattr(cache_module, "sample_to_json", counting)
    report = build_dataset("brain_tumor", [mri], tmp_path / "out", progress=False, num_proc=2)
    assert report.counts["kept"] > 50
    assert not here, f"the main process serialised {len(here)} records for the cache"
    entries = list(report.entries)
    again = build_dataset("brain_tumor", [mri], tmp_path / "out", progress=False, num_proc=2)  # from the cache
    assert list(again.entries) == entries
    assert again.sources[0].fingerprint == report.sources[0].fingerprint


def test_manifest_lines_from_values_are_json_with_sorted_keys(tmp_path):
    entries = [
        ManifestEntry("src", "a/b.jpg", "kept", "", "id-1", "src:g1", "train"),
        ManifestEntry("src", 'q"uote\\back\nline\t\x01', "rejected", "caf\u00e9 \u2603 \U0001f600 </script>"),
        ManifestEntry("sr\u00e7", "x", "moved", "moved from test to train: its group changed (g)", "i", "g", "test"),
    ]
    write_manifest(tmp_path / "objects", entries)
    write_manifest(tmp_path / "values", [tuple(getattr(e, f) for f in ManifestEntry.__slots__) for e in entries])
    expected = "".join(json.dumps({f: getattr(e, f) for f in ManifestEntry.__slots__}, sort_keys=True) + "\n"
                       for e in entries)
    for folder in ("objects", "values"):
        assert (tmp_path / folder / "manifest.jsonl").read_text() == expected
    assert read_manifest(tmp_path / "values") == entries


class _FullDisk(build.ShardWriter):
    def write(self, table):
        raise OSError(f"{self.path}: no space left on device")


def test_a_shard_failing_in_a_worker_fails_the_build_and_leaves_no_spool(mri, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "ShardWriter", _FullDisk)  # before the pool forks: the workers' writer too
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with pytest.raises(OSError, match=r"train-00000-of-00001\.parquet: no space left"):
        build_dataset("brain_tumor", [mri], tmp_path / "out", progress=False, num_proc=2)
    assert not list((tmp_path / "tmp").iterdir()), "spooled parts were left behind"
    assert not list((tmp_path / "out" / build.CACHE_DIR).glob("spool-*")), "spooled row groups were left behind"
    published = [p for p in (tmp_path / "out").rglob("*.parquet") if build.PARTIAL not in p.parts]
    assert not published


def test_splits_decided_in_batches_of_groups_give_the_same_build(mri, tmp_path, monkeypatch):
    whole = build_dataset("brain_tumor", [mri], tmp_path / "whole", progress=False)
    entries = list(whole.entries)
    monkeypatch.setattr(build_store, "FLUSH_EVERY", 3)  # batches of 3 groups (and of rows, entries)
    small = build_dataset("brain_tumor", [mri], tmp_path / "small", progress=False)
    assert list(small.entries) == entries
    assert small.sources[0].fingerprint == whole.sources[0].fingerprint
    assert (tmp_path / "small" / "brain_tumor" / "manifest.jsonl").read_bytes() == \
        (tmp_path / "whole" / "brain_tumor" / "manifest.jsonl").read_bytes()
