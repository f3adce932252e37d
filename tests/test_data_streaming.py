"""A build streams its rows: a file's records go from the reader to the validation cache part by part, what the
build keeps of each sample is on disk (data/build_store.py), and its memory does not grow with the rows.

Measured on generated CELLxGENE-schema h5ad files of N and 4N cells and on N and 4N generated JPEGs (tiny: the
benchmarks measure 200,000 cells and 20,000 files)."""

import gc
import tracemalloc
import warnings
import weakref

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import multimed_hf.data.build as build_module
import multimed_hf.data.build_store as build_store
from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
from multimed_hf.api import build_dataset
from multimed_hf.builders.cellxgene import CellxGeneBuilder
from multimed_hf.data.build import CACHE_DIR, build_config
from multimed_hf.data.cache import ValidationCache
from multimed_hf.data.engines import LocalEngine
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "cell_type"
N = 400


def _write_h5ad(path, cells: int, seed: int = 0, negative_from: int | None = None):
    """A CELLxGENE-schema file: Ensembl ids + feature_name, counts in raw.X (or, with ``negative_from``, scaled
    values in X only, negative from that cell on), 6 donors, 3 cell types, 2 tissues."""
    rng = np.random.default_rng(seed)
    genes = 30
    dense = rng.integers(0, 4, size=(cells, genes)).astype(np.float32) * (rng.random((cells, genes)) < 0.3)
    dense[:, 0] += 1  # no empty cell
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(np.array(["T cell", "B cell", "monocyte"])[rng.integers(0, 3, cells)]),
        "cell_type_ontology_term_id": "CL:0000000",
        "donor_id": pd.Categorical([f"D{k}" for k in rng.integers(0, 6, cells)]),
        "tissue": pd.Categorical(np.array(["blood", "lung"])[rng.integers(0, 2, cells)]),
    }, index=[f"{path.stem}-cell{i:06d}" for i in range(cells)])
    var = pd.DataFrame({"feature_name": [f"G{i}" for i in range(genes)]},
                       index=[f"ENSG{i:011d}" for i in range(genes)])
    if negative_from is None:
        adata = ad.AnnData(X=sp.csr_matrix(np.log1p(dense)), obs=obs, var=var)
        adata.raw = ad.AnnData(X=sp.csr_matrix(dense), obs=obs, var=var)
    else:
        dense[negative_from:, 1] = -1.5
        adata = ad.AnnData(X=sp.csr_matrix(dense), obs=obs, var=var)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 16 records, row chunks of 50 cells, the build store's buffers at 32 rows: a file of a few hundred
    cells crosses the build in many parts, and every bounded buffer is full in both builds compared."""
    monkeypatch.setattr(build_module, "PART_RECORDS", 16)
    monkeypatch.setattr(CellxGeneBuilder, "chunk_cells", 50)
    monkeypatch.setattr(build_store, "FLUSH_EVERY", 32)


def _outputs(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and CACHE_DIR not in p.parts}


class _Materialised(CellxGeneBuilder):
    """The reading before streaming: a file's cells as one list, then handed on."""

    def iter_file(self, relpath):
        return iter(list(super().iter_file(relpath)))


class _Watched(CellxGeneBuilder):
    """Counts, at every cell it yields, how many cells it yielded are still alive somewhere in the build: a build
    that held a file's cells (a list of them, rows kept per sample) sees this grow with the file."""

    most_alive = 0

    def iter_file(self, relpath):
        alive: list = []
        for sample in super().iter_file(relpath):
            alive = [ref for ref in alive if ref() is not None]
            type(self).most_alive = max(type(self).most_alive, len(alive))
            alive.append(weakref.ref(sample))
            yield sample


def test_streamed_build_writes_the_bytes_of_a_materialised_build(tmp_path, small_parts):
    root = tmp_path / "cellxgene"
    root.mkdir()
    _write_h5ad(root / "a.h5ad", N, seed=1)
    _write_h5ad(root / "b.h5ad", N // 2, seed=2)
    task = get_task(TASK)
    streamed = build_config(task, [CellxGeneBuilder(root)], tmp_path / "streamed", progress=False)
    materialised = build_config(task, [_Materialised(root)], tmp_path / "materialised", progress=False)
    assert sum(streamed.splits.values()) == N + N // 2
    assert streamed.entries == materialised.entries
    assert _outputs(tmp_path / "streamed") == _outputs(tmp_path / "materialised")
    assert any(name.endswith(".parquet") for name in _outputs(tmp_path / "streamed"))


@pytest.mark.parametrize("cells", [N, 4 * N])
def test_cells_are_streamed_never_held_whole(tmp_path, small_parts, cells):
    root = tmp_path / "cellxgene"
    root.mkdir()
    _write_h5ad(root / "cells.h5ad", cells)
    _Watched.most_alive = 0
    report = build_config(get_task(TASK), [_Watched(root)], tmp_path / "out", progress=False)
    assert sum(report.splits.values()) == cells
    # at most a part in flight (and the chunk being read): the same bound for N and 4N cells
    assert 0 < _Watched.most_alive <= 2 * 16 + 50, _Watched.most_alive


def _traced_peak(build) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        build()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_cells(tmp_path, small_parts, monkeypatch):
    import datasets

    # the shard writer's row group (1,000 rows by default: the one buffer that grows with a small build) at 64, so
    # that both builds fill it and what is left to grow is what the build keeps per cell
    monkeypatch.setattr(datasets.config, "DEFAULT_MAX_BATCH_SIZE", 64)
    peaks = {}
    for cells in (N, 4 * N):
        root = tmp_path / f"cells{cells}"
        root.mkdir()
        _write_h5ad(root / "cells.h5ad", cells)
        build_dataset(TASK, [root], tmp_path / f"warm{cells}", progress=False)  # imports and caches made once
        peaks[cells] = _traced_peak(lambda: build_dataset(TASK, [root], tmp_path / f"out{cells}", progress=False))
    per_cell = (peaks[4 * N] - peaks[N]) / (3 * N)
    # before streaming a build kept ~2,700 bytes a cell (list of samples, rows, manifest entries, triples); what is
    # left grows with anndata's obs (the barcodes) only
    assert per_cell < 400, f"{per_cell:.0f} bytes of peak memory per added cell ({peaks})"


#: ``test_peak_memory_does_not_grow_with_the_image_files``' builds, in a fresh interpreter: what the test session
#: did before (in CI, ~200 kB more in both 400-file builds, never seen alone) does not reach the measurement.
_IMAGE_PEAKS = """
import json, sys, tracemalloc, gc
from pathlib import Path
import multimed_hf.data.build as build_module
import multimed_hf.data.build_store as build_store
from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
from multimed_hf.api import build_dataset

build_module.PART_RECORDS, build_store.FLUSH_EVERY = 16, 32  # as the small_parts fixture
tmp, peaks = Path(sys.argv[1]), {}
for files in (100, 400):
    per_class = files // 4 * 4 // 5
    source = make_brain_tumor_mri(tmp / f"src{files}", train_per_class=per_class,
                                  test_per_class=files // 4 - per_class, size=32, bad_files=False)
    runs = []
    for run in range(2):
        gc.collect()
        tracemalloc.start()
        build_dataset("brain_tumor", [source], tmp / f"out{files}-{run}", progress=False)
        runs.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    peaks[files] = min(runs)
print(json.dumps(peaks))
"""


def test_peak_memory_does_not_grow_with_the_image_files(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # the smaller of two builds: a one-time allocation (a lazy import, a first-use cache; ~400 kB seen) lands in
    # whichever build first takes its path
    done = subprocess.run([sys.executable, "-c", _IMAGE_PEAKS, str(tmp_path)], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=True)
    peaks = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    per_file = (peaks[400] - peaks[100]) / 300
    # before: ~3,900 bytes of peak memory per image file (rows, manifest entries, groups, decisions, triples)
    assert per_file < 1000, f"{per_file:.0f} bytes of peak memory per added file ({peaks})"


def test_a_file_rejected_part_way_leaves_nothing_behind(tmp_path, small_parts, monkeypatch):
    monkeypatch.setattr(CellxGeneBuilder, "normalisation_cells", 40)  # the first chunks pass, a later one fails
    root = tmp_path / "cellxgene"
    root.mkdir()
    _write_h5ad(root / "good.h5ad", 120, seed=3)
    _write_h5ad(root / "scaled.h5ad", N, seed=4, negative_from=300)
    out = tmp_path / "out"
    report = build_dataset(TASK, [root], out, progress=False)
    entries = [e for e in read_manifest(out / TASK) if e.source_path.startswith("scaled")]
    assert len(entries) == 1 and entries[0].status == "rejected", entries
    assert entries[0].reason.startswith("the matrix holds negative values")
    assert sum(report.splits.values()) == 120  # none of the 300 cells read before the bad chunk
    cache = ValidationCache(out / CACHE_DIR / TASK / "cellxgene.sqlite", "unused")
    assert cache._db.execute("SELECT COUNT(*) FROM records WHERE path = 'scaled.h5ad'").fetchone() == (0,)
    cache.close()


def _parts(builder, relpath):
    for n in range(5 if relpath.startswith("big") else 1):
        yield [relpath, n]
    if relpath.startswith("bad"):
        yield "bad file"


def test_worker_processes_spool_large_files_and_keep_file_order():
    files = [f"f{i}" for i in range(9)] + ["big0", "bad0", "big1"] + [f"g{i}" for i in range(9)]
    here = [list(parts) for parts in LocalEngine(1).map(_parts, None, files)]
    workers = [list(parts) for parts in LocalEngine(2).map(_parts, None, files)]
    assert workers == here
    assert here[files.index("big0")] == [["big0", n] for n in range(5)]
    assert here[files.index("bad0")] == [["bad0", 0], "bad file"]
