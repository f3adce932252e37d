"""The cellxgene source on a generated CELLxGENE-schema h5ad of >= 200,000 cells: cells/s and peak memory.

Two measurements, each in its own process (so each peak is its own):
  reader  the builder's row-chunk reading alone (cells streamed, nothing kept): matrix and obs are read
          ``chunk_cells`` rows at a time with h5py (``--anndata-obs``: anndata's backed mode, which holds obs);
  build   ``build_dataset("cell_type", ...)`` end to end (read, validate, cache, group, split, Parquet shards): cells
          stream from the reader to the validation cache, per-cell keys live in the build's SQLite store.
Both print cells/s and peak resident memory beside the file's size and its matrix's in-memory size (the ratio says
what holding the matrix would cost). Given two sizes (``--cells 50000 200000``) it also prints the growth of the
reader's and the build's peak memory per added cell (~0 when nothing is kept per cell).

    python benchmarks/bench_cellxgene.py [--cells 200000 ...] [--genes 2000] [--density 0.03] [--skip-build]
                                         [--anndata-obs]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

__all__: list[str] = []


def write_h5ad(path: Path, cells: int, genes: int, density: float, seed: int = 0) -> int:
    """A schema file: Ensembl ids + feature_name, integer counts in raw.X, 3 tissues, 8 cell types, 40 donors.
    Written in one go (the generator holds the matrix; the reader is what is measured). Returns the nnz."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    per_cell = max(1, int(genes * density))
    indptr = np.arange(cells + 1, dtype=np.int64) * per_cell
    indices = np.sort(rng.integers(0, genes, size=(cells, per_cell)), axis=1)
    counts = sp.csr_matrix(
        (rng.integers(1, 20, size=cells * per_cell).astype(np.float32), indices.ravel(), indptr), shape=(cells, genes)
    )
    counts.sum_duplicates()
    tissues = np.array(["blood", "lung", "kidney"])[rng.integers(0, 3, cells)]
    types = np.array([f"type {k}" for k in range(8)])[rng.integers(0, 8, cells)]
    obs = pd.DataFrame({
        "cell_type": types, "cell_type_ontology_term_id": [f"CL:{k:07d}" for k in range(8)] * (cells // 8)
        + [f"CL:{k:07d}" for k in range(cells % 8)],
        "donor_id": [f"D{k}" for k in rng.integers(0, 40, cells)], "tissue": tissues, "tissue_general": tissues,
        "assay": "10x 3' v3", "disease": "normal",
    }, index=[f"c{i}" for i in range(cells)]).astype({c: "category" for c in ("cell_type", "tissue", "donor_id")})
    var = pd.DataFrame({"feature_name": [f"G{i}" for i in range(genes)]},
                       index=[f"ENSG{100000 + i:011d}" for i in range(genes)])
    adata = ad.AnnData(X=counts, obs=obs, var=var)
    adata.raw = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return int(counts.nnz)


def _peak_mb() -> float:
    """This process's peak resident memory: VmHWM (reset at exec, unlike ru_maxrss, which a child inherits)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _use_anndata_obs(flag: str) -> None:
    from multimed_hf.builders.cellxgene import CellxGeneBuilder

    CellxGeneBuilder.h5py_obs = flag != "anndata"


def _reader(folder: str, obs: str = "h5py") -> dict:
    """The builder's own cell iterator (row chunks -> samples), consumed without keeping the samples."""
    import anndata  # noqa: F401  (the reader's libraries imported before the baseline: their ~110 MB is no data)
    import h5py  # noqa: F401
    import scipy.sparse  # noqa: F401

    from multimed_hf.builders.cellxgene import CellxGeneBuilder

    _use_anndata_obs(obs)
    builder = CellxGeneBuilder(Path(folder))
    relpath = builder._h5ad_relpaths[0]
    base = _peak_mb()
    start = time.perf_counter()
    cells = nnz = 0
    for sample in builder.iter_cells(relpath):
        cells += 1
        nnz += len(sample.fields["gene_indices"])
    seconds = time.perf_counter() - start
    return {"cells": cells, "nnz": nnz, "seconds": seconds, "peak_mb": _peak_mb(), "baseline_mb": base}


def _build(folder: str, out: str, obs: str = "h5py") -> dict:
    import anndata  # noqa: F401  (imported before the baseline, as for the reader)
    import h5py  # noqa: F401
    import scipy.sparse  # noqa: F401

    from multimed_hf.api import build_dataset

    _use_anndata_obs(obs)
    base = _peak_mb()
    start = time.perf_counter()
    report = build_dataset("cell_type", [folder], out, progress=False)
    seconds = time.perf_counter() - start
    return {"cells": sum(report.splits.values()), "seconds": seconds, "peak_mb": _peak_mb(), "baseline_mb": base}


def _in_subprocess(kind: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--phase", kind, *args], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[200_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--density", type=float, default=0.03)
    parser.add_argument("--skip-build", action="store_true", help="measure the reader only")
    parser.add_argument("--anndata-obs", action="store_true",
                        help="read obs through anndata's backed mode (holds obs) instead of h5py row chunks")
    parser.add_argument("--phase", choices=("reader", "build"), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "reader":
        print(json.dumps(_reader(*args.paths)))
        return
    if args.phase == "build":
        print(json.dumps(_build(*args.paths)))
        return
    readers, builds = {}, {}
    print(f"obs read by {'anndata (backed)' if args.anndata_obs else 'h5py, row chunks'}")
    for cells in args.cells:
        readers[cells], builds[cells] = _measure(cells, args)
    for what, runs in (("reader", readers), ("build", builds)):
        if len(runs) > 1 and all(runs.values()):
            (small, a), (large, b) = min(runs.items()), max(runs.items())
            slope = (b["peak_mb"] - a["peak_mb"]) * 2**20 / (large - small)
            print(f"{what} peak RSS {a['peak_mb']:.0f} MB at {small:,} cells, {b['peak_mb']:.0f} MB at {large:,} "
                  f"cells: {slope:,.0f} bytes per added cell")


def _measure(cells: int, args) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cellxgene"
        folder.mkdir()
        path = folder / "bench.h5ad"
        nnz = write_h5ad(path, cells, args.genes, args.density)
        file_mb = path.stat().st_size / 2**20
        matrix_mb = nnz * (4 + 4) / 2**20 + cells * 8 / 2**20  # CSR float32 data + int32 indices + indptr
        print(f"file: {cells:,} cells x {args.genes:,} genes, {nnz:,} non-zeros; {file_mb:.0f} MB on disk, "
              f"its matrix {matrix_mb:.0f} MB in memory (raw.X; X holds as much again)")
        obs = "anndata" if args.anndata_obs else "h5py"
        reader = _in_subprocess("reader", str(folder), obs)
        print(f"reader (row chunks): {reader['cells'] / reader['seconds']:,.0f} cells/s; peak RSS "
              f"{reader['peak_mb']:.0f} MB (process baseline {reader['baseline_mb']:.0f} MB); "
              f"peak minus baseline / matrix = {(reader['peak_mb'] - reader['baseline_mb']) / matrix_mb:.2f}")
        if args.skip_build:
            return reader, None
        build = _in_subprocess("build", str(folder), str(Path(tmp) / "out"), obs)
        print(f"build (end to end): {build['cells'] / build['seconds']:,.0f} cells/s "
              f"({build['cells']:,} cells in {build['seconds']:.0f} s); peak RSS {build['peak_mb']:.0f} MB "
              f"(baseline {build['baseline_mb']:.0f} MB); peak minus baseline / matrix = "
              f"{(build['peak_mb'] - build['baseline_mb']) / matrix_mb:.2f}")
        return reader, build

if __name__ == "__main__":
    main()
