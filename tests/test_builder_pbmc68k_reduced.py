"""scRNA-seq cells from h5ad: scanpy's real pbmc68k_reduced stored sparse, donors grouped, bad files named."""

import json
import warnings
from collections import Counter, defaultdict

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from build_sources import build_with_capital_h5ad, manifest_entries
from dataset_scripts.sample_sources import pbmc68k_reduced as sample
from multimed_hf.builders.pbmc68k_reduced import panel_id, read_expression
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.manifest import read_manifest

TASK = "cell_type"


def _real(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(root / sample.REAL_FILE)


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "pbmc68k_reduced")


def test_features_and_sizes(built):
    _, _, report, ds = built
    sizes = {split: ds[split].num_rows for split in ds}
    assert sizes == {k: v for k, v in report.splits.items() if v} and sum(sizes.values()) == 700 + 90
    assert all(sizes[s] > 0 for s in ("train", "validation", "test"))


def test_real_cells_are_stored_sparse_and_exact(built):
    root, out, _, ds = built
    real = _real(root)
    genes = list(real.raw.var_names)
    matrix = real.raw.X.tocsr()
    rows = {r["sample_id"]: r for split in ds for r in ds[split] if r["source_path"] == sample.REAL_FILE}
    assert len(rows) == 700
    for i in (0, 1, 350, 699):
        row = rows[f"10x_pbmc68k_reduced:{real.obs_names[i]}"]
        dense = matrix[i].toarray()[0]
        assert row["gene_indices"] == np.nonzero(dense)[0].tolist()
        np.testing.assert_allclose(row["gene_values"], dense[dense != 0], rtol=1e-6)
        assert row["cell_type"] == real.obs["bulk_labels"].iloc[i]
        assert row["gene_panel"] == panel_id(genes) and row["expression_matrix"] == "raw/X"
        assert row["donor"] is None and row["organ"] == "blood"
    assert Counter(r["cell_type"] for r in rows.values()) == Counter(real.obs["bulk_labels"].astype(str))
    info = json.loads((out / TASK / "build_info.json").read_text())
    (asset,) = info["sources"][0]["assets"]
    assert asset.endswith("/gene_panels.json")
    panels = json.loads((out / asset).read_text())
    assert panels[panel_id(genes)]["genes"] == genes  # the list the indices refer to, stored once per source


def test_synthetic_donors_labels_and_signal(built):
    root, _, _, ds = built
    rows = [r for split in ds for r in ds[split] if r["source_path"] == "pbmc_3donors.h5ad"]
    assert len(rows) == 90 and {r["donor"] for r in rows} == {"D1", "D2", "D3"}
    assert sum(r["cell_type"] is None for r in rows) == 2  # unlabelled cells kept, label absent
    assert {r["expression_matrix"] for r in rows} == {"layers/counts"}
    assert all(float(v).is_integer() for r in rows[:5] for v in r["gene_values"])
    genes = [str(g) for g in ad.read_h5ad(root / "pbmc_3donors.h5ad", backed="r").var_names]
    for cell_type, markers in sample.MARKERS.items():
        mine = [r for r in rows if r["cell_type"] == cell_type]
        others = [r for r in rows if r["cell_type"] not in (cell_type, None)]
        marker = genes.index(markers[0])

        def level(r):
            return dict(zip(r["gene_indices"], r["gene_values"])).get(marker, 0.0)

        assert np.mean([level(r) for r in mine]) > np.mean([level(r) for r in others]) + 3


def test_donors_never_span_splits(built):
    _, out, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            splits_of[row["group_id"]].add(split)
            if row["donor"]:
                assert row["group_id"] == f"pbmc68k_reduced:donor:{row['donor']}"
    assert all(len(s) == 1 for s in splits_of.values())


def test_bad_files_are_named(built):
    _, out, _, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK) if e.status == "rejected"}
    expected = {
        "pbmc_unlabelled.h5ad": "no cell-type column: obs has ['donor', 'tissue', 'organ']",
        "pbmc_scaled.h5ad": "X holds negative values",
        "pbmc_cut.h5ad": "cannot read h5ad: OSError",
    }
    assert set(by_path) == set(expected)
    for path, reason in expected.items():
        assert by_path[path].reason.startswith(reason), by_path[path]


def test_counts_of_each_outcome(built):
    _, out, report, _ = built
    entries = read_manifest(out / TASK)
    counts = report.sources[0].counts
    assert counts == {"kept": 790, "moved": 0, "dropped": 0, "rejected": 3, "ignored": 1}  # ignored: .DS_Store
    assert not any(":row" in e.source_path for e in entries)  # no record entries: one per file


def test_counts_layer_wins_and_repeated_genes_are_rejected(tmp_path):
    counts = sp.csr_matrix(np.array([[0, 3, 1], [2, 0, 0]], dtype=np.float32))
    adata = ad.AnnData(X=sp.csr_matrix(np.log1p(counts.toarray())), var=pd.DataFrame(index=["A", "B", "C"]))
    adata.layers["counts"] = counts
    adata.write_h5ad(tmp_path / "x.h5ad")
    _, expression = read_expression(tmp_path / "x.h5ad")
    assert expression.where == "layers/counts"
    assert [v.tolist() for v in expression.row(0)] == [[1, 2], [3.0, 1.0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns of the repeated names we write on purpose
        ad.AnnData(X=counts, var=pd.DataFrame(index=["A", "B", "A"])).write_h5ad(tmp_path / "y.h5ad")
    with pytest.raises(BadSourceFile, match="gene names repeat"):
        read_expression(tmp_path / "y.h5ad")


def test_the_organ_of_a_file_without_an_organ_column_is_the_registrys(built, monkeypatch):
    """The file states no organ: the registry's ``SourceSpec.organ`` fills it, and editing the registry changes it."""
    import dataclasses

    from multimed_hf import tasks
    from multimed_hf.builders.pbmc68k_reduced import PBMC68kReducedBuilder

    root, *_ = built
    task = tasks.get_task(TASK)
    assert task.source("pbmc68k_reduced").organ == "blood"
    cells = PBMC68kReducedBuilder(root).read_file(sample.REAL_FILE)
    assert {c.fields["organ"] for c in cells} == {"blood"}
    edited = dataclasses.replace(task, sources=tuple(
        dataclasses.replace(s, organ="bone marrow") if s.name == "pbmc68k_reduced" else s for s in task.sources
    ))
    monkeypatch.setitem(tasks._TASKS, TASK, edited)
    cells = PBMC68kReducedBuilder(root).read_file(sample.REAL_FILE)
    assert {c.fields["organ"] for c in cells} == {"bone marrow"}


def test_a_file_of_another_tissue_does_not_get_the_sources_organ(tmp_path):
    # before: a liver .h5ad beside the PBMC file (tissue column, no organ column) came out as organ "blood"
    from multimed_hf.builders.pbmc68k_reduced import PBMC68kReducedBuilder

    counts = sp.csr_matrix(np.array([[0, 3, 1], [2, 0, 0]], dtype=np.float32))
    obs = pd.DataFrame({"celltype": ["hepatocyte", "kupffer"], "tissue": ["liver", "liver"]}, index=["c1", "c2"])
    ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=["A", "B", "C"])).write_h5ad(tmp_path / "liver.h5ad")
    cells = PBMC68kReducedBuilder(tmp_path).read_file("liver.h5ad")
    assert {(c.fields["tissue"], c.fields["organ"]) for c in cells} == {("liver", None)}


def test_h5ad_extensions_in_capitals_read_like_lower_case_ones(built, tmp_path):
    """``pbmc68k_reduced.H5AD`` (a copy made on Windows or from a CD): detected and read as the lower-case files are,
    each path as it is on disk."""
    from multimed_hf.builders.pbmc68k_reduced import PBMC68kReducedBuilder

    root = sample.make(tmp_path / sample.FOLDER)
    _, entries = build_with_capital_h5ad(TASK, root, tmp_path / "out")
    assert PBMC68kReducedBuilder.detect(root)
    assert entries == manifest_entries(built.out / TASK)


def test_cells_of_no_given_donor_stay_together(tmp_path):
    # before: a cell whose donor_id was "unknown" was a group of its own: such cells spread over train, validation
    # and test (the rule CELLxGENE's builder got, here too)
    from multimed_hf.api import build_dataset
    from multimed_hf.builders.pbmc68k_reduced import UNKNOWN_DONOR_NOTE

    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(2, (40, 5)).astype(np.float32))
    obs = pd.DataFrame({"celltype": ["T cell", "B cell"] * 20,
                        "donor": ["unknown"] * 24 + [f"d{i}" for i in range(16)]},
                       index=[f"c{i}" for i in range(40)])
    from dataset_scripts.sample_sources import sample_generators

    folder = sample_generators()["pbmc68k_reduced"](tmp_path / "pbmc", bad_files=False)  # scanpy's file beside it
    ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=list("ABCDE"))).write_h5ad(folder / "study.h5ad")
    report = build_dataset(TASK, [folder], tmp_path / "out", progress=False)
    assert report.sources[0].name == "pbmc68k_reduced"
    unknown = [e for e in report.entries if e.sample_id and e.sample_id.startswith("study:")
               and int(e.sample_id.split(":c")[1]) < 24]
    assert len(unknown) == 24 and len({(e.split, e.group) for e in unknown}) == 1
    assert {e.reason for e in unknown} == {UNKNOWN_DONOR_NOTE}


def test_a_cellxgene_file_beside_scanpys_keeps_the_folder_pbmc68k_reduced(tmp_path):
    # before: one CELLxGENE-schema .h5ad in the folder made it the cellxgene source (first detection wins), and
    # scanpy's real 700 cells were rejected for lacking a donor_id column
    import shutil

    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.builders import detect_builder
    from multimed_hf.builders.pbmc68k_reduced import PBMC68kReducedBuilder

    folder = sample_generators()["pbmc68k_reduced"](tmp_path / "pbmc", bad_files=False)
    cellxgene = sample_generators()["cellxgene"](tmp_path / "cxg", bad_files=False)
    shutil.copy(next(p for p in cellxgene.glob("*.h5ad") if "-" in p.stem), folder)
    assert isinstance(detect_builder(TASK, folder), PBMC68kReducedBuilder)
    # ... and that file is rejected, named, not read without CELLxGENE's rules (before: its is_primary_data False
    # cells, copies of cells published elsewhere, were kept under pbmc68k_reduced's licence and citation)
    from multimed_hf.api import build_dataset

    report = build_dataset(TASK, [folder], tmp_path / "out", progress=False)
    schema_file = next(p.name for p in folder.glob("*.h5ad") if "-" in p.stem)
    entry = next(e for e in report.entries if e.source_path == schema_file)
    assert entry.status == "rejected" and entry.reason.startswith("a CELLxGENE-schema file (obs has ['cell_type_onto")
    assert "cellxgene source" in entry.reason
    assert any(e.source_path == "10x_pbmc68k_reduced.h5ad" and e.sample_id for e in report.entries)
