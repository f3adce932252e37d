"""A synthetic sample of CELLxGENE-schema AnnData files: several tissues, cell types and donors (needs no scanpy).

``a1f3c5e7-....h5ad`` follows the CELLxGENE schema: obs ``cell_type``, ``cell_type_ontology_term_id``, ``donor_id``,
``tissue``, ``tissue_ontology_term_id``, ``tissue_general``, ``development_stage`` (per donor, HsapDv labels: exact
ages, one "adult stage" and one "unknown"), ``assay``, ``disease``; var indexed by Ensembl id with
``feature_name``; log1p-normalised (CP10k) values in ``X`` and the integer counts in ``raw.X``. Cells of blood,
lung and kidney from six donors, each cell type with its marker genes raised. ``liver_scanpy_style.h5ad`` uses
scanpy-style columns (obs ``celltype``, ``donor``, ``tissue``; var symbols with ``gene_ids``), log1p-normalised
values in ``X`` only, and a gene panel that overlaps the first file's (the union policy joins them). Bad input:
``no_donor.h5ad`` lacks any donor column. Written with anndata alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance

__all__ = [
    "FOLDER", "make", "make_cellxgene", "SCHEMA_FILE", "SCANPY_FILE", "BAD_FILE", "CELL_TYPES", "TISSUES", "STAGES",
]

FOLDER = "cellxgene"
SCHEMA_FILE = "a1f3c5e7-2b4d-4c6e-8f90-1a2b3c4d5e6f.h5ad"
SCANPY_FILE = "liver_scanpy_style.h5ad"
BAD_FILE = "no_donor.h5ad"
#: tissue -> (organ as CELLxGENE Census's tissue_general, UBERON id, cell types with their CL ids)
TISSUES = {
    "blood": ("blood", "UBERON:0000178", (("T cell", "CL:0000084"), ("B cell", "CL:0000236"),
                                          ("classical monocyte", "CL:0000860"))),
    "lung": ("lung", "UBERON:0002048", (("type II pneumocyte", "CL:0002063"), ("alveolar macrophage", "CL:0000583"),
                                        ("T cell", "CL:0000084"))),
    "kidney": ("kidney", "UBERON:0002113", (("kidney proximal convoluted tubule epithelial cell", "CL:1000838"),
                                            ("podocyte", "CL:0000653"), ("classical monocyte", "CL:0000860"))),
}
#: donor -> its development_stage, as CELLxGENE writes them (HsapDv labels; the real files hold all three forms)
STAGES = {
    "DBL1": "34-year-old human stage", "DBL2": "61-year-old stage", "DLU1": "unknown", "DLU2": "adult stage",
    "DKI1": "9-month-old human stage", "DKI2": "72-year-old human stage",
}
CELL_TYPES = sorted({name for _, _, types in TISSUES.values() for name, _ in types} | {"hepatocyte"})
N_GENES = 120


def _genes(n: int, offset: int = 0) -> tuple[list[str], list[str]]:
    """Ensembl-style ids and gene names (made up, in the real ids' form)."""
    ids = [f"ENSG{100000 + 37 * (i + offset):011d}" for i in range(n)]
    return ids, [f"GENE{i + offset}" for i in range(n)]


def _counts(cell_types: list[str], n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts, each cell type with its own six marker genes raised."""
    base = rng.gamma(0.6, 1.0, size=n_genes)
    rates = np.tile(base, (len(cell_types), 1))
    for row, cell_type in enumerate(cell_types):
        markers = [(CELL_TYPES.index(cell_type) * 7 + k) % n_genes for k in range(6)]
        rates[row, markers] += 8.0
    return rng.poisson(rates).astype(np.float32)


def _log1p_cp10k(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    return np.log1p(counts / np.maximum(totals, 1) * 1e4).astype(np.float32)


def _write(adata, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)


def make_cellxgene(root, *, cells_per_type=12, seed=17, bad_files=True) -> Path:
    """Write the sample under ``root`` and return it."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for tissue, (organ, uberon, types) in TISSUES.items():
        donors = [f"D{tissue[:2].upper()}{k}" for k in (1, 2)]
        for cell_type, cl_id in types:
            for n in range(cells_per_type):
                rows.append({
                    "cell_type": cell_type, "cell_type_ontology_term_id": cl_id, "donor_id": donors[n % 2],
                    "tissue": tissue, "tissue_ontology_term_id": uberon, "tissue_general": organ,
                    "development_stage": STAGES[donors[n % 2]],
                    "assay": "10x 3' v3", "disease": "normal",
                })
    obs = pd.DataFrame(rows, index=[f"cell{i:04d}" for i in range(len(rows))]).astype("category")
    ids, names = _genes(N_GENES)
    var = pd.DataFrame({"feature_name": names, "feature_biotype": "gene"}, index=ids)
    counts = _counts(list(obs["cell_type"]), N_GENES, rng)
    schema = ad.AnnData(X=sp.csr_matrix(_log1p_cp10k(counts)), obs=obs, var=var)
    schema.raw = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var[[]])
    _write(schema, root / SCHEMA_FILE)

    # scanpy-style: symbols as the index, Ensembl ids in gene_ids; 100 shared genes and 20 of its own
    liver_ids, liver_names = _genes(N_GENES, offset=20)
    liver_types = ["hepatocyte"] * (2 * cells_per_type) + ["T cell"] * cells_per_type
    liver_obs = pd.DataFrame(
        {"celltype": liver_types, "donor": [f"LIV{k % 3}" for k in range(len(liver_types))], "tissue": "liver"},
        index=[f"liv{i:04d}" for i in range(len(liver_types))],
    ).astype("category")
    liver_var = pd.DataFrame({"gene_ids": liver_ids}, index=liver_names)
    liver_counts = _counts(liver_types, N_GENES, rng)
    _write(ad.AnnData(X=sp.csr_matrix(_log1p_cp10k(liver_counts)), obs=liver_obs, var=liver_var), root / SCANPY_FILE)

    if bad_files:
        bad_obs = pd.DataFrame({"cell_type": ["T cell"] * 4}, index=[f"x{i}" for i in range(4)])
        bad = ad.AnnData(X=sp.csr_matrix(_counts(["T cell"] * 4, N_GENES, rng)), obs=bad_obs, var=var.copy())
        _write(bad, root / BAD_FILE)
    write_provenance(root, "generated by dataset_scripts/sample_sources/cellxgene.py (not real cells)")
    return root


make = make_cellxgene
