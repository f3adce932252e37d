"""Any CELLxGENE-schema AnnData ``.h5ad`` (scanpy-style obs columns as a fallback), read in row chunks.

A folder of ``.h5ad`` files, one sample per cell. Each file is opened with ``anndata.read_h5ad(backed="r")`` and its
matrix is read ``chunk_cells`` rows at a time, so a file larger than memory is never loaded whole; ``iter_file``
streams the cells (the build spools them to its validation cache as they come).

- obs: the cell type is ``cell_type`` (CELLxGENE schema), else the first scanpy-style column of ``LABEL_COLUMNS``;
  the donor is ``donor_id``, else the first of ``DONOR_COLUMNS``; a file with neither is rejected, the error naming
  the missing column and the columns obs has. ``tissue`` (else ``tissue_type``) and the organ (``tissue_general``,
  CELLxGENE Census's organ-level term, else ``organ``) are kept for the organ out-of-distribution analysis.
- genes: keyed by Ensembl id (the var index in the schema; scanpy's ``var["gene_ids"]`` where the index holds
  symbols), ``feature_name`` kept as the gene's name. A file without Ensembl ids keys its genes by symbol (stated).
- matrix: ``raw.X`` where present (the schema's raw counts), else ``X``. Its normalisation is detected on the first
  rows and stated: ``raw counts`` (non-negative integers), ``log1p-normalised`` (``expm1`` row sums constant: the
  target sum is given), or ``normalised`` (non-negative, neither); negative values (scaled data) reject the file.
- panel harmonisation (``PANEL_POLICY``): the union of every readable file's genes, ordered by key; each cell's
  non-zero genes are stored as indices into it. A gene outside a file's panel was not measured there. The union,
  the gene names, the policy and, per file, the matrix, normalisation and genes measured are the source's
  ``gene_panels.json`` asset.
- grouping: donor (across the folder's files: two files of one study share their donors).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import ClassVar, Iterator

import numpy as np

from multimed_hf.builders.pbmc68k_reduced import DONOR_COLUMNS, LABEL_COLUMNS, panel_id
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import PROVENANCE_FILE, SourceBuilder

__all__ = [
    "CellxGeneBuilder", "PANEL_POLICY", "detect_normalisation", "file_genes", "open_h5ad",
    "SCHEMA_LABEL", "SCHEMA_DONOR",
]

SCHEMA_LABEL = "cell_type"
SCHEMA_DONOR = "donor_id"
_LABEL_FALLBACKS = tuple(c for c in LABEL_COLUMNS if c != SCHEMA_LABEL)
_DONOR_FALLBACKS = tuple(c for c in DONOR_COLUMNS if c != SCHEMA_DONOR)
_TISSUE_COLUMNS = ("tissue", "tissue_type")
_ORGAN_COLUMNS = ("tissue_general", "organ")
#: obs columns / var columns only a CELLxGENE-schema file has (detection without reading the matrix).
_SCHEMA_OBS = "cell_type_ontology_term_id"
_SCHEMA_VAR = "feature_name"
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_MISSING = {"", "nan", "none", "na", "n/a", "unknown", "unassigned"}
_DOCUMENTS = ("README", "LICENSE")

PANEL_POLICY = (
    "union: every gene of every readable file of the source, keyed by Ensembl id (symbol where a file has none) "
    "and ordered by key; a cell's indices point into it, and a gene outside its file's panel was not measured "
    "there (not a zero)"
)


def open_h5ad(path: Path):
    """The file opened backed (``backed="r"``: obs and var in memory, the matrix on disk)."""
    import anndata

    if path.stat().st_size == 0:
        raise BadSourceFile("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata's notes on legacy fields
            return anndata.read_h5ad(path, backed="r")
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise BadSourceFile(f"cannot read h5ad: {type(err).__name__}: {str(err)[:200]}") from None


def _matrix(adata):
    """``(backed matrix, where, var frame of its genes)``: ``raw.X`` where present, else ``X``."""
    if adata.raw is not None:
        return adata.raw.X, "raw/X", adata.raw.var
    if adata.X is None:
        raise BadSourceFile("no expression matrix: X and raw are both absent")
    return adata.X, "X", adata.var


def file_genes(adata) -> tuple[list[str], list[str], str]:
    """``(keys, names, keyed_by)`` of the stored matrix's genes: Ensembl ids with ``feature_name`` as the name."""
    _, _, var = _matrix(adata)
    index = [str(g) for g in var.index]
    names_of = dict(zip(adata.var.index.astype(str), adata.var[_SCHEMA_VAR].astype(str))) \
        if _SCHEMA_VAR in adata.var.columns else {}
    if index and all(_ENSEMBL.match(g) for g in index):
        keys, names, keyed = index, [names_of.get(g, g) for g in index], "Ensembl id"
    elif "gene_ids" in var.columns and all(_ENSEMBL.match(str(g)) for g in var["gene_ids"]):
        keys, names, keyed = [str(g) for g in var["gene_ids"]], index, "Ensembl id (var['gene_ids'])"
    else:
        keys, names, keyed = index, index, "gene symbol (the file has no Ensembl ids)"
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise BadSourceFile(f"gene keys repeat in the file's panel (e.g. {repeated}): expected unique genes")
    return keys, names, keyed


def detect_normalisation(block) -> str:
    """What a CSR block of cells holds: ``raw counts``, ``log1p-normalised (target sum ~N)`` or ``normalised``;
    ``BadSourceFile`` for negative (scaled) or non-finite values."""
    values = block.data
    if values.size and not np.isfinite(values).all():
        raise BadSourceFile(f"the matrix holds {int((~np.isfinite(values)).sum())} non-finite values")
    if values.size and values.min() < 0:
        raise BadSourceFile(
            f"the matrix holds negative values (min {values.min():.3g}): scaled data, not expression, and the file "
            "has no raw counts in raw.X"
        )
    if not values.size or np.allclose(values, np.round(values), atol=1e-4):
        return "raw counts"
    sums = np.asarray(np.expm1(block.astype(np.float64)).sum(axis=1)).ravel()
    sums = sums[sums > 0]
    if sums.size and sums.std() <= 0.02 * sums.mean():
        return f"log1p-normalised (target sum ~{float(np.median(sums)):.4g})"
    return "normalised (non-integer, not log1p of a fixed total)"


def _column(obs, preferred: str | None, fallbacks, what: str, required: bool) -> str | None:
    if preferred and preferred in obs.columns:
        return preferred
    found = next((c for c in fallbacks if c in obs.columns), None)
    if found is None and required:
        schema = f"no {preferred!r} column (CELLxGENE schema) and " if preferred else "no "
        raise BadSourceFile(
            f"obs has {schema}none of the scanpy-style fallbacks {list(fallbacks)} for the {what}; obs columns: "
            f"{list(obs.columns)[:15]}"
        )
    return found


def _texts(series) -> list[str | None]:
    out = []
    for value in series.astype(object).tolist():
        text = None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        out.append(None if text is None or text.lower() in _MISSING else text)
    return out


class CellxGeneBuilder(SourceBuilder):
    task = "cell_type"
    source = "cellxgene"
    reading_version: ClassVar[str] = "1"
    #: Cells read from the backed matrix at a time (bounds the reader's memory, whatever the file's size).
    chunk_cells: ClassVar[int] = 8192
    #: Cells whose values decide a file's normalisation.
    normalisation_cells: ClassVar[int] = 2000

    @classmethod
    def detect(cls, root: Path) -> bool:
        """``.h5ad`` files of which one has CELLxGENE-schema columns; or a folder of nothing but ``.h5ad`` files
        (scanpy-style), none of them scanpy's pbmc68k_reduced (its own source)."""
        files = sorted(root.glob("*.h5ad"))
        if not files:
            return False
        if any(_has_schema_columns(p) for p in files):
            return True
        others = [
            p for p in root.iterdir()
            if p.is_file() and p.suffix != ".h5ad" and p.name != PROVENANCE_FILE
            and not p.name.upper().startswith(_DOCUMENTS) and not p.name.startswith(".")
        ]
        return not others and not any("pbmc68k_reduced" in p.name for p in files)

    def _h5ad_files(self) -> list[str]:
        return [rel for rel in self.list_files() if rel.endswith(".h5ad")]

    @cached_property
    def _panel(self) -> dict:
        """The union panel and, per readable file, its matrix, normalisation and gene count (files that will be
        rejected, e.g. with no donor column, add no genes)."""
        names: dict[str, str] = {}
        files: dict[str, dict] = {}
        for relpath in self._h5ad_files():
            try:
                adata = open_h5ad(self.root / relpath)
            except BadSourceFile:
                continue
            try:
                _column(adata.obs, SCHEMA_LABEL, _LABEL_FALLBACKS, "cell type", required=True)
                _column(adata.obs, SCHEMA_DONOR, _DONOR_FALLBACKS, "donor", required=True)
                keys, gene_names, keyed = file_genes(adata)
                matrix, where, _ = _matrix(adata)
                normalisation = detect_normalisation(matrix[: min(self.normalisation_cells, adata.n_obs)])
            except BadSourceFile:
                continue
            finally:
                adata.file.close()
            for key, name in zip(keys, gene_names):
                names.setdefault(key, name)
            files[relpath] = {
                "matrix": where, "normalisation": normalisation, "genes_keyed_by": keyed, "genes_measured": len(keys),
            }
        genes = sorted(names)
        return {"genes": genes, "names": [names[g] for g in genes], "files": files, "policy": PANEL_POLICY}

    @cached_property
    def version(self) -> str:  # the reading code and the union panel every cell's indices refer to
        digest = hashlib.sha256("\n".join(self._panel["genes"]).encode()).hexdigest()[:12]
        return f"{self.reading_version}+panel-{digest}"

    @cached_property
    def panel_id(self) -> str:
        return panel_id(self._panel["genes"])

    def read_file(self, relpath: str) -> list[Sample]:
        return list(self.iter_file(relpath))

    def iter_file(self, relpath: str) -> Iterator[Sample]:
        """The file's cells, streamed (what the build reads: never a whole file's cells at once)."""
        name = PurePosixPath(relpath).name
        if name.upper().startswith(_DOCUMENTS):
            return iter(())
        if not name.endswith(".h5ad"):
            raise BadSourceFile("stray file: not an .h5ad AnnData file")
        return self.iter_cells(relpath)

    def iter_cells(self, relpath: str) -> Iterator[Sample]:
        """The file's cells, one sample each, read ``chunk_cells`` rows at a time from the backed matrix."""
        adata = open_h5ad(self.root / relpath)
        try:
            yield from self._cells(adata, relpath)
        finally:
            adata.file.close()

    def _cells(self, adata, relpath: str) -> Iterator[Sample]:
        obs = adata.obs
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise BadSourceFile(f"no cells or no genes: {adata.n_obs} x {adata.n_vars}")
        label = _column(obs, SCHEMA_LABEL, _LABEL_FALLBACKS, "cell type", required=True)
        donor = _column(obs, SCHEMA_DONOR, _DONOR_FALLBACKS, "donor", required=True)
        tissue = _column(obs, None, _TISSUE_COLUMNS, "tissue", required=False)
        organ = _column(obs, None, _ORGAN_COLUMNS, "organ", required=False)
        if not obs.index.is_unique:
            raise BadSourceFile(f"cell barcodes repeat in obs ({int(obs.index.duplicated().sum())} repeats)")
        keys, _, _ = file_genes(adata)
        position = {g: i for i, g in enumerate(self._panel["genes"])}
        unknown = [k for k in keys if k not in position]
        if unknown:  # the file changed since the panel was read
            raise BadSourceFile(f"genes {unknown[:3]} are not in the source's panel: rebuild to re-read the folder")
        remap = np.array([position[k] for k in keys], dtype=np.int32)
        matrix, where, _ = _matrix(adata)
        normalisation = detect_normalisation(matrix[: min(self.normalisation_cells, adata.n_obs)])
        stem = PurePosixPath(relpath).with_suffix("").as_posix()
        matrix_note = f"{where} ({normalisation})"
        for start in range(0, adata.n_obs, self.chunk_cells):
            stop = min(start + self.chunk_cells, adata.n_obs)
            block = matrix[start:stop]
            block = block.tocsr() if hasattr(block, "tocsr") else _dense_to_csr(block)
            detect_normalisation(block)  # every chunk checked: scaled or non-finite values anywhere reject
            rows = obs.iloc[start:stop]  # obs texts per chunk too: no list of the whole file's cells
            columns = {
                "cell_type": _texts(rows[label]), "donor": _texts(rows[donor]),
                "tissue": _texts(rows[tissue]) if tissue else [None] * len(rows),
                "organ": _texts(rows[organ]) if organ else [None] * len(rows),
            }
            barcodes = rows.index.astype(str).tolist()
            for offset in range(block.shape[0]):
                lo, hi = block.indptr[offset], block.indptr[offset + 1]
                values = block.data[lo:hi].astype(np.float32)
                indices = remap[block.indices[lo:hi]]
                keep = values != 0
                order = np.argsort(indices[keep], kind="stable")
                donor_id = columns["donor"][offset]
                yield Sample(
                    sample_id=f"{stem}:{barcodes[offset]}", source_path=relpath,
                    fields={
                        "gene_indices": indices[keep][order], "gene_values": values[keep][order],
                        "gene_panel": self.panel_id, "cell_type": columns["cell_type"][offset],
                        "tissue": columns["tissue"][offset], "organ": columns["organ"][offset], "donor": donor_id,
                        "expression_matrix": matrix_note,
                    },
                    group_key=f"donor:{donor_id}" if donor_id else None,
                )

    def assets(self) -> dict[str, object]:
        """``gene_panels.json``: the union panel (Ensembl ids, names), its policy and each file's normalisation."""
        return {"gene_panels.json": {self.panel_id: self._panel}}


def _dense_to_csr(block):
    import scipy.sparse as sp

    return sp.csr_matrix(np.asarray(block))


def _has_schema_columns(path: Path) -> bool:
    """True when the file's obs has ``cell_type_ontology_term_id`` or its var ``feature_name`` (read by h5py)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            groups = [handle.get(name) for name in ("obs", "var")]
            if not all(isinstance(g, h5py.Group) for g in groups):  # a legacy file (obs as one record array)
                return False
            return _SCHEMA_OBS in groups[0] or _SCHEMA_VAR in groups[1]
    except OSError:
        return False
