"""CELLxGENE-schema h5ad: chunked backed reading, Ensembl-keyed union panel, normalisation stated, donors grouped."""

import json
import warnings
from collections import defaultdict

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from build_sources import build_with_capital_h5ad, manifest_entries
from dataset_scripts.sample_sources import cellxgene as sample
from multimed_hf.builders.cellxgene import CellxGeneBuilder, _H5Cells, detect_normalisation, open_cells, stage_age
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.manifest import read_manifest

TASK = "cell_type"


def _read(path, backed=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path, backed=backed)


@pytest.fixture(scope="module")
def built(build_sample):
    root, out, report, ds = build_sample(TASK, "cellxgene")
    panels = {}
    for asset in report.sources[0].assets:
        panels.update(json.loads((out / asset).read_text()))
    return root, out, report, ds, panels


def test_cells_map_to_the_union_panel_by_ensembl_id(built):
    root, _, report, ds, panels = built
    [(panel_id, panel)] = panels.items()
    schema = _read(root / sample.SCHEMA_FILE)
    liver = _read(root / sample.SCANPY_FILE)
    union = sorted(set(schema.raw.var_names) | set(liver.var["gene_ids"]))
    assert panel["genes"] == union and len(union) == 140  # 120 + 20 genes only the liver file measured
    names = dict(zip(panel["genes"], panel["names"]))
    assert all(names[g] == n for g, n in zip(schema.var_names, schema.var["feature_name"]))  # feature_name kept
    assert all(names[g] == n for g, n in zip(liver.var["gene_ids"], liver.var_names))
    expected = {}
    for stem, adata, keys, matrix in (
        (sample.SCHEMA_FILE[:-5], schema, list(schema.raw.var_names), schema.raw.X.toarray()),
        (sample.SCANPY_FILE[:-5], liver, list(liver.var["gene_ids"]), liver.X.toarray()),
    ):
        for barcode, row in zip(adata.obs_names, matrix):
            expected[f"{stem}:{barcode}"] = {keys[j]: v for j, v in enumerate(row) if v != 0}
    seen = 0
    for split in ds:
        for row in ds[split]:
            assert row["gene_panel"] == panel_id
            got = {union[i]: v for i, v in zip(row["gene_indices"], row["gene_values"])}
            assert got.keys() == expected[row["sample_id"]].keys()
            assert np.allclose([got[k] for k in got], [expected[row["sample_id"]][k] for k in got], rtol=1e-6)
            assert row["gene_indices"] == sorted(row["gene_indices"])
            seen += 1
    assert seen == len(expected) == schema.n_obs + liver.n_obs


def test_normalisation_detected_and_stated(built):
    _, _, _, ds, panels = built
    [panel] = panels.values()
    files = panel["files"]
    assert files[sample.SCHEMA_FILE]["matrix"] == "raw/X" and files[sample.SCHEMA_FILE]["normalisation"] == "raw counts"
    assert files[sample.SCANPY_FILE]["matrix"] == "X"
    assert files[sample.SCANPY_FILE]["normalisation"].startswith("log1p-normalised (target sum ~1e+04")
    assert sample.BAD_FILE not in files, "a rejected file adds no genes to the union"
    assert panel["policy"].startswith("union:")
    stated = {row["source_path"]: row["expression_matrix"] for split in ds for row in ds[split]}
    assert stated[sample.SCHEMA_FILE] == "raw/X (raw counts)"
    assert stated[sample.SCANPY_FILE].startswith("X (log1p-normalised")


def test_normalisation_rules_on_hand_made_blocks():
    counts = sp.csr_matrix(np.array([[0, 3, 1], [2, 0, 5]], dtype=np.float32))
    assert detect_normalisation(counts) == "raw counts"
    totals = counts.toarray().sum(axis=1, keepdims=True)
    logged = sp.csr_matrix(np.log1p(counts.toarray() / totals * 1e4))
    assert detect_normalisation(logged) == "log1p-normalised (target sum ~1e+04)"
    assert detect_normalisation(sp.csr_matrix(np.array([[0.5, 2.25], [7.0, 0.1]]))).startswith("normalised")
    with pytest.raises(BadSourceFile, match="negative values"):
        detect_normalisation(sp.csr_matrix(np.array([[-0.3, 1.2]])))


def test_donors_grouped_tissues_and_cell_types_kept(built):
    _, out, _, ds, _ = built
    splits_of = defaultdict(set)
    tissues, organs, types = set(), set(), set()
    for split in ds:
        for row in ds[split]:
            splits_of[row["donor"]].add(split)
            assert row["group_id"] == f"cellxgene:donor:{row['donor']}"
            tissues.add(row["tissue"])
            organs.add(row["organ"])
            types.add(row["cell_type"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert tissues == {"blood", "lung", "kidney", "liver"} and organs == {"blood", "lung", "kidney", None}
    assert types == set(sample.CELL_TYPES)
    assert all(ds[s].num_rows for s in ("train", "validation", "test"))


def test_missing_obs_column_is_named(built):
    _, out, _, _, _ = built
    entry = {e.source_path: e for e in read_manifest(out / TASK)}[sample.BAD_FILE]
    assert entry.status == "rejected"
    assert entry.reason.startswith("obs has no 'donor_id' column (CELLxGENE schema) and none of the scanpy-style")
    assert "obs columns: ['cell_type']" in entry.reason


def test_missing_cell_type_column_is_named(tmp_path):
    obs = pd.DataFrame({"donor_id": ["d1", "d2"]}, index=["a", "b"])
    adata = ad.AnnData(X=sp.csr_matrix(np.ones((2, 3), dtype=np.float32)), obs=obs,
                       var=pd.DataFrame(index=["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]))
    adata.write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(BadSourceFile, match=r"obs has no 'cell_type' column \(CELLxGENE schema\) and none of"):
        CellxGeneBuilder(tmp_path).read_file("x.h5ad")


@pytest.mark.parametrize("damage, reason", [
    ("scaled", r"the matrix holds negative values .* \(the first in cell 'b', row 2 of obs\)"),
    ("nan", r"the matrix holds 1 non-finite values \(the first in cell 'c', row 3 of obs\)"),
])
def test_a_scaled_or_non_finite_file_is_named_for_its_values_not_its_genes(tmp_path, damage, reason):
    # before: the panel left such a file's genes out, and the file was then rejected as "genes [...] are not in the
    # source's panel: rebuild to re-read the folder" on a fresh build: the real reason hidden, the advice wrong
    x = np.ones((3, 3), dtype=np.float32)
    if damage == "scaled":
        x[1, 2] = -0.5
    else:
        x[2, 0] = np.nan
    obs = pd.DataFrame({"cell_type": ["T cell"] * 3, "donor_id": ["d1", "d2", "d3"]}, index=["a", "b", "c"])
    ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"ENSG0000000000{i}" for i in range(3)])
               ).write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(BadSourceFile, match=reason):
        CellxGeneBuilder(tmp_path).read_file("x.h5ad")


def test_row_chunks_give_the_same_cells(built, monkeypatch):
    root, *_ = built
    whole = CellxGeneBuilder(root).read_file(sample.SCHEMA_FILE)
    monkeypatch.setattr(CellxGeneBuilder, "chunk_cells", 7)  # many chunks, one cut mid-way through a cell type
    chunked = CellxGeneBuilder(root).read_file(sample.SCHEMA_FILE)
    assert [s.sample_id for s in chunked] == [s.sample_id for s in whole]
    for a, b in zip(chunked, whole):
        assert np.array_equal(a.fields["gene_indices"], b.fields["gene_indices"])
        assert np.array_equal(a.fields["gene_values"], b.fields["gene_values"])
        assert a.fields["cell_type"] == b.fields["cell_type"] and a.group_key == b.group_key


@pytest.mark.parametrize("stage, years", [
    ("34-year-old human stage", 34.0), ("61-year-old stage", 61.0), ("9-month-old human stage", 0.75),
    ("adult stage", None), ("unknown", None), ("third decade human stage", None),
    ("Carnegie stage 17", None), (None, None),
])
def test_development_stage_labels_to_years(stage, years):
    assert stage_age(stage) == years


def test_age_from_each_donors_development_stage(built):
    _, _, _, ds, _ = built
    ages = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            ages[row["donor"]].add(row["age"])
    for donor, stage in sample.STAGES.items():
        assert ages[donor] == {stage_age(stage)}, (donor, stage, ages[donor])
    assert ages["DBL1"] == {34.0} and ages["DLU1"] == {None}  # "unknown": no age
    assert all(a == {None} for d, a in ages.items() if d.startswith("LIV"))  # no development_stage column


def _both_readers(root, relpath, monkeypatch):
    h5 = CellxGeneBuilder(root).read_file(relpath)
    with monkeypatch.context() as m:
        m.setattr(CellxGeneBuilder, "h5py_obs", False)
        anndata_cells = CellxGeneBuilder(root).read_file(relpath)
    return h5, anndata_cells


def _same(a, b):
    assert [s.sample_id for s in a] == [s.sample_id for s in b] and a
    for x, y in zip(a, b):
        assert x.group_key == y.group_key
        assert x.fields.keys() == y.fields.keys()
        for key, value in x.fields.items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, y.fields[key])
            else:
                assert value == y.fields[key], key


def test_h5py_obs_reader_gives_the_cells_anndata_gives(built, monkeypatch):
    root, *_ = built
    monkeypatch.setattr(CellxGeneBuilder, "chunk_cells", 10)
    for relpath in (sample.SCHEMA_FILE, sample.SCANPY_FILE):
        assert isinstance(open_cells(root / relpath), _H5Cells)
        _same(*_both_readers(root, relpath, monkeypatch))


def _hand_made(path, obs, dense=False):
    var = pd.DataFrame(index=["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"])
    matrix = np.arange(len(obs) * 3, dtype=np.float32).reshape(len(obs), 3) % 4
    adata = ad.AnnData(X=matrix if dense else sp.csr_matrix(matrix), obs=obs, var=var)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)


def test_h5py_reader_on_strings_nullable_and_dense_columns(tmp_path, monkeypatch):
    """obs as plain strings (not categorical), a donor with a missing value (categorical code -1), a dense X."""
    obs = pd.DataFrame({
        "cell_type": np.array(["T cell", "B cell", "T cell", "NK cell"], dtype=object),
        "donor_id": pd.array(["d1", None, "d2", "d2"], dtype="string"),
        "development_stage": ["40-year-old human stage", "unknown", "8-month-old human stage", "adult stage"],
        "n_genes": [3, 2, 1, 2],
    }, index=["a", "b", "c", "d"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _hand_made(tmp_path / "x.h5ad", obs, dense=True)
    monkeypatch.setattr(CellxGeneBuilder, "chunk_cells", 3)
    assert isinstance(open_cells(tmp_path / "x.h5ad"), _H5Cells)
    h5, via_anndata = _both_readers(tmp_path, "x.h5ad", monkeypatch)
    _same(h5, via_anndata)
    assert [s.fields["donor"] for s in h5] == ["d1", None, "d2", "d2"]
    assert [s.fields["age"] for s in h5] == [40.0, None, 8 / 12, None]


def test_repeated_barcodes_are_found_chunk_by_chunk(tmp_path, monkeypatch):
    obs = pd.DataFrame({"cell_type": ["T cell"] * 5, "donor_id": ["d1"] * 5}, index=["a", "b", "c", "b", "a"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _hand_made(tmp_path / "x.h5ad", obs)
    monkeypatch.setattr(CellxGeneBuilder, "chunk_cells", 2)
    with pytest.raises(BadSourceFile, match=r"cell barcodes repeat in obs \(2 repeats\)"):
        CellxGeneBuilder(tmp_path).read_file("x.h5ad")


def _schema_file(path, var, *, donors=("d1", "d2"), raw=False):
    """A small CELLxGENE-style file: obs with the schema's columns, counts in X (or raw.X), ``var`` as given."""
    n = 2 * len(donors)
    obs = pd.DataFrame({
        "cell_type": ["T cell", "B cell"] * len(donors), "cell_type_ontology_term_id": ["CL:0000084", "CL:0000236"]
        * len(donors), "donor_id": [d for d in donors for _ in range(2)], "tissue": "blood",
    }, index=[f"{path.stem}-{i}" for i in range(n)])
    counts = sp.csr_matrix(np.arange(1, n * len(var) + 1, dtype=np.float32).reshape(n, len(var)))
    adata = ad.AnnData(X=counts, obs=obs, var=var)
    if raw:
        adata.raw = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)


def test_ercc_spike_ins_keep_the_panel_keyed_by_ensembl_id(tmp_path):
    """The schema's var index holds Ensembl ids and, for spike-ins, ERCC ids ("ERCC-00002", feature_name
    "ERCC-00002 (spike-in control)"): the genes keep their feature_name, the file its Ensembl keying."""
    ids = ["ENSG00000000003", "ENSG00000000005", "ERCC-00002"]
    names = ["TSPAN6", "TNMD", "ERCC-00002 (spike-in control)"]
    _schema_file(tmp_path / "spike.h5ad", pd.DataFrame({"feature_name": names, "feature_biotype": ["gene", "gene",
                 "spike-in"]}, index=ids), raw=True)
    builder = CellxGeneBuilder(tmp_path)
    panel = builder._panel
    assert panel["genes"] == sorted(ids)
    assert dict(zip(panel["genes"], panel["names"])) == dict(zip(ids, names))
    assert panel["files"]["spike.h5ad"]["genes_keyed_by"] == "Ensembl id"
    assert len(builder.read_file("spike.h5ad")) == 4


def test_census_get_anndata_file_is_keyed_by_feature_id(tmp_path):
    """cellxgene_census.get_anndata writes var indexed by row number ("0", "1", ...) with the Ensembl id in
    var['feature_id'] and the symbol in var['feature_name']: two such files with different genes share one panel
    by Ensembl id, not by row number."""
    first = ["ENSG00000000003", "ENSG00000000005", "ENSG00000000419"]
    second = ["ENSG00000000419", "ENSG00000000457"]
    symbols = {"ENSG00000000003": "TSPAN6", "ENSG00000000005": "TNMD", "ENSG00000000419": "DPM1",
               "ENSG00000000457": "SCYL3"}
    for name, ids, donors in (("census_a", first, ("d1", "d2")), ("census_b", second, ("d3",))):
        var = pd.DataFrame({"soma_joinid": range(len(ids)), "feature_id": ids,
                            "feature_name": [symbols[i] for i in ids], "feature_length": 1000},
                           index=[str(i) for i in range(len(ids))])
        _schema_file(tmp_path / f"{name}.h5ad", var, donors=donors)
    builder = CellxGeneBuilder(tmp_path)
    panel = builder._panel
    assert panel["genes"] == sorted(symbols)
    assert dict(zip(panel["genes"], panel["names"])) == symbols
    assert {f["genes_keyed_by"] for f in panel["files"].values()} == {"Ensembl id (var['feature_id'])"}
    union = panel["genes"]
    for name, ids in (("census_a", first), ("census_b", second)):
        cells = builder.read_file(f"{name}.h5ad")
        adata = _read(tmp_path / f"{name}.h5ad")
        for cell, row in zip(cells, adata.X.toarray()):
            got = {union[i]: v for i, v in zip(cell.fields["gene_indices"], cell.fields["gene_values"])}
            assert got == {gene: v for gene, v in zip(ids, row) if v}


def _flagged_file(path, flags, donors):
    """A schema file whose cells carry ``is_primary_data`` ``flags`` (CELLxGENE: False = a copy of a cell that is
    primary data in another dataset)."""
    n = len(flags)
    obs = pd.DataFrame({"cell_type": ["T cell", "B cell"] * (n // 2), "donor_id": donors,
                        "is_primary_data": np.array(flags, dtype=bool)}, index=[f"{path.stem}-{i}" for i in range(n)])
    _hand_made(path, obs.iloc[:n])


def test_copies_of_primary_cells_are_rejected_each_named(tmp_path, monkeypatch):
    from multimed_hf.api import build_dataset
    from multimed_hf.builders.cellxgene import NOT_PRIMARY
    from multimed_hf.data.sample import RejectedRecord

    root = tmp_path / "cellxgene"
    root.mkdir()
    _flagged_file(root / "atlas.h5ad", [True, False, True, False, True, True], ["d1", "d1", "d2", "d2", "d3", "d3"])
    _flagged_file(root / "copies.h5ad", [False, False], ["d1", "d2"])
    monkeypatch.setattr(CellxGeneBuilder, "chunk_cells", 4)  # the flags read chunk by chunk
    for read in _both_readers(root, "atlas.h5ad", monkeypatch):
        rejected = [r for r in read if isinstance(r, RejectedRecord)]
        assert [r.where for r in rejected] == ["atlas.h5ad:row atlas-1", "atlas.h5ad:row atlas-3"]
        assert {r.reason for r in rejected} == {NOT_PRIMARY}
        assert [s.sample_id for s in read if not isinstance(s, RejectedRecord)] == \
            ["atlas:atlas-0", "atlas:atlas-2", "atlas:atlas-4", "atlas:atlas-5"]
    with pytest.raises(BadSourceFile, match=r"every cell has is_primary_data is False: .*build from the primary"):
        CellxGeneBuilder(root).read_file("copies.h5ad")

    build_dataset(TASK, [root], tmp_path / "multimed", progress=False)
    manifest = read_manifest(tmp_path / "multimed" / TASK)
    entries = {e.source_path: e for e in manifest}
    assert entries["atlas.h5ad:row atlas-1"].status == "rejected" and entries["atlas.h5ad:row atlas-1"].reason == \
        NOT_PRIMARY
    assert entries["copies.h5ad"].status == "rejected" and "every cell has is_primary_data" in \
        entries["copies.h5ad"].reason
    kept = sorted(e.sample_id for e in manifest if e.status == "kept" and e.sample_id)
    assert kept == ["atlas:atlas-0", "atlas:atlas-2", "atlas:atlas-4", "atlas:atlas-5"]


def test_h5ad_extensions_in_capitals_read_like_lower_case_ones(built, tmp_path):
    """``cells.H5AD`` (a copy made on Windows or from a CD): detected and read as the lower-case files are, each path
    as it is on disk, into the same panel and cells."""
    _, out, _, _, panels = built
    root = sample.make(tmp_path / sample.FOLDER)
    upper, entries = build_with_capital_h5ad(TASK, root, tmp_path / "out")
    assert CellxGeneBuilder.detect(root)
    assert entries == manifest_entries(out / TASK)
    assert json.loads((tmp_path / "out" / upper.sources[0].assets[0]).read_text()).keys() == panels.keys()


def test_cells_of_no_given_donor_stay_together(tmp_path):
    # before: a cell whose donor_id is "unknown" / "na" became a group of its own, so a file of such cells was split
    # cell by cell across train, validation and test, silently, under a card saying donors never span splits
    from multimed_hf.api import build_dataset
    from multimed_hf.builders.cellxgene import UNKNOWN_DONOR_NOTE

    root = tmp_path / "cellxgene"
    root.mkdir()
    var = pd.DataFrame({"feature_name": ["TSPAN6", "TNMD"]}, index=["ENSG00000000003", "ENSG00000000005"])
    _schema_file(root / "study_a.h5ad", var, donors=("unknown",) * 10)
    _schema_file(root / "study_b.h5ad", var, donors=("na",) * 10)
    _schema_file(root / "study_c.h5ad", var, donors=tuple(f"d{i}" for i in range(10)))
    report = build_dataset(TASK, [root], tmp_path / "multimed", progress=False)
    kept = [e for e in report.entries if e.status == "kept" and e.sample_id]
    assert len(kept) == 60
    for study in ("study_a", "study_b"):
        cells = [e for e in kept if e.sample_id.startswith(f"{study}:")]
        assert len({e.split for e in cells}) == 1 and len({e.group for e in cells}) == 1
        assert {e.reason for e in cells} == {UNKNOWN_DONOR_NOTE}
    assert len({e.group for e in kept if e.sample_id.startswith("study_c:")}) == 10


def test_a_byte_identical_copy_of_a_file_is_dropped_not_read_twice(tmp_path):
    # before: 'x (1).h5ad' (a second download) put every cell in the data twice, 0 duplicates reported
    import shutil

    from multimed_hf.api import build_dataset

    root = sample.make(tmp_path / "cellxgene", bad_files=False)
    original = next(p for p in sorted(root.glob("*.h5ad")))
    copy = original.with_name(original.stem + " (1).h5ad")
    shutil.copy(original, copy)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entries = {e.source_path: e for e in report.entries if not e.sample_id}
    assert entries[copy.name].status == "dropped"
    assert entries[copy.name].reason == (f"not used: a byte-identical copy of {original.name} (read instead); its "
                                         "cells would be in the data twice")
    assert not any(e.sample_id and e.source_path == copy.name for e in report.entries)
