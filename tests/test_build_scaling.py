"""``num_proc`` builds: one pool of worker processes per build, used by the reading and by the shards' encoding
and by the writing of each shard (the main process only digests each row group), and the same build as one process,
byte for byte."""

from __future__ import annotations

import os
import tempfile

import pytest

from build_sources import aged_mri_source
import multimed_hf.data.build as build
import multimed_hf.data.engines as engines
from multimed_hf.api import build_dataset
from multimed_hf.data.engines import LocalEngine

ROWS_PER_SHARD = 150  # more than one row group (100 images) a shard, and several shards a split


def _by_rows(sizes):
    """Shards of ``ROWS_PER_SHARD`` rows (``plan_shards``'s place): several shards of several row groups."""
    n = len(list(sizes))
    return [range(i, min(i + ROWS_PER_SHARD, n)) for i in range(0, n, ROWS_PER_SHARD)] or [range(0, 0)]


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    return aged_mri_source(tmp_path_factory.mktemp("mri"), train_per_class=60, test_per_class=15)


class _CountingPool(engines.ProcessPoolExecutor):
    """A pool that records its starts and the functions it was given."""

    started = 0
    functions: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        type(self).started += 1

    def submit(self, fn, /, *args, **kwargs):
        type(self).functions.append(fn.__name__)
        return super().submit(fn, *args, **kwargs)


def test_workers_give_the_same_build_over_several_shards_and_row_groups(mri, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "plan_shards", _by_rows)
    one = build_dataset("brain_tumor", [mri], tmp_path / "one", progress=False)
    three = build_dataset("brain_tumor", [mri], tmp_path / "three", progress=False, num_proc=3)
    assert one.sources[0].fingerprint == three.sources[0].fingerprint
    assert one.sources[0].data_files == three.sources[0].data_files
    assert len(one.sources[0].data_files["train"]) >= 2, "the sample should need several train shards"
    assert list(one.entries) == list(three.entries)
    shards = sorted((tmp_path / "one").rglob("*.parquet"))
    assert shards
    for shard in shards:
        assert shard.read_bytes() == (tmp_path / "three" / shard.relative_to(tmp_path / "one")).read_bytes()
    files = {p.relative_to(mri).as_posix() for p in mri.rglob("*") if p.is_file()}
    assert {e.source_path for e in three.entries} >= files - {"MULTIMED_SOURCE.json"}  # every file accounted for
    assert three.counts["rejected"] > 0  # the damaged files, with their reasons
    groups = {}
    for e in three.entries:
        if e.split is not None:
            groups.setdefault(e.group, set()).add(e.split)
    assert all(len(splits) == 1 for splits in groups.values())  # no group in two splits
    again = build_dataset("brain_tumor", [mri], tmp_path / "three", progress=False, num_proc=3)  # from the cache
    assert again.sources[0].fingerprint == one.sources[0].fingerprint
    assert list(again.entries) == list(one.entries)


def test_one_pool_reads_the_files_and_encodes_the_shards(mri, tmp_path, monkeypatch):
    monkeypatch.setattr(_CountingPool, "started", 0)
    monkeypatch.setattr(_CountingPool, "functions", [])
    monkeypatch.setattr(engines, "ProcessPoolExecutor", _CountingPool)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    build_dataset("brain_tumor", [mri], tmp_path / "out", progress=False, num_proc=2)
    assert _CountingPool.started == 1
    assert {"_collect", "_encode_batch", "_write_shard", "_band_links"} <= set(_CountingPool.functions)
    assert not list((tmp_path / "tmp").iterdir()), "spooled parts were left behind"
    assert not list((tmp_path / "out" / build.CACHE_DIR).glob("spool-*")), "spooled row groups were left behind"


def _parts(builder, relpath):
    yield [relpath, os.getpid()]


def _square(x):
    return x * x, os.getpid()


def _fail(x):
    if x == 3:
        raise ValueError(f"task {x} failed")
    return x


def test_a_session_keeps_one_pool_for_every_map_and_ordered_call():
    engine = LocalEngine(2)
    files = [f"f{i}" for i in range(20)]
    with engine.session():
        read = [part for parts in engine.map(_parts, None, files) for part in parts]
        squares = list(engine.ordered(_square, [(i,) for i in range(40)]))
        again = list(engine.ordered(_square, [(i,) for i in range(40)]))
    assert [relpath for relpath, _ in read] == files  # file order
    assert [x for x, _ in squares] == [i * i for i in range(40)]  # task order
    pids = {pid for _, pid in read} | {pid for _, pid in squares} | {pid for _, pid in again}
    assert os.getpid() not in pids and len(pids) <= 2  # the same two workers throughout
    assert engine._pool is None  # handed back at the session's end
    with pytest.raises(ValueError, match="task 3 failed"):
        list(LocalEngine(2).ordered(_fail, [(i,) for i in range(8)]))
    assert list(LocalEngine(1).ordered(_square, [(3,)])) == [(9, os.getpid())]  # one process: here
