"""Any CELLxGENE-schema AnnData ``.h5ad`` (scanpy-style obs columns as a fallback), read in row chunks.

A folder of ``.h5ad`` files, one sample per cell, read ``chunk_cells`` rows at a time, so a file larger than memory
is never loaded whole; ``iter_file`` streams the cells (the build spools them to its validation cache as they come).
A file in the on-disk layout anndata >= 0.8 writes (every CELLxGENE download) is read with h5py: the matrix through
``anndata.io.sparse_dataset``, and obs column by column, chunk by chunk (categorical codes, strings, numbers), so
not even obs is held whole (anndata's backed mode loads all of it: ~120 bytes a cell). Other layouts (legacy
files, obs columns of other encodings) are opened with ``anndata.read_h5ad(backed="r")``, which holds obs.

- obs: the cell type is ``cell_type`` (CELLxGENE schema), else the first scanpy-style column of ``LABEL_COLUMNS``;
  the donor is ``donor_id``, else the first of ``DONOR_COLUMNS``; a file with neither is rejected, the error naming
  the missing column and the columns obs has. ``tissue`` (else ``tissue_type``) and the organ (``tissue_general``,
  CELLxGENE Census's organ-level term, else ``organ``) are kept for the organ out-of-distribution analysis.
  ``development_stage`` (the schema's HsapDv label) gives the donor's ``age`` in years where the label states it
  (``N-year-old [human] stage``, ``N-month-old [human] stage``); broader stages ("adult stage", "unknown") give None.
- genes: keyed by Ensembl id (the var index in the schema, where ERCC spike-in ids such as ``ERCC-00002`` may sit
  beside the genes; scanpy's ``var["gene_ids"]`` where the index holds symbols; CELLxGENE Census's
  ``var["feature_id"]`` in a ``get_anndata`` file, whose index is only the row number), ``feature_name`` kept as
  the gene's name. A file without Ensembl ids keys its genes by symbol (stated).
- matrix: ``raw.X`` where present (the schema's raw counts), else ``X``. Its normalisation is detected on the first
  rows and stated: ``raw counts`` (non-negative integers), ``log1p-normalised`` (``expm1`` row sums constant: the
  target sum is given), or ``normalised`` (non-negative, neither); negative values (scaled data) reject the file.
- panel harmonisation (``PANEL_POLICY``): the union of every readable file's genes, ordered by key; each cell's
  non-zero genes are stored as indices into it. A gene outside a file's panel was not measured there. The union,
  the gene names, the policy and, per file, the matrix, normalisation and genes measured are the source's
  ``gene_panels.json`` asset.
- grouping: donor (across the folder's files: two files of one study share their donors). A cell whose donor is
  not given (``donor_id`` empty, "unknown", "na", "unassigned") is grouped with its file's other such cells, so
  they stay in one split, each with a note in the manifest (``UNKNOWN_DONOR_NOTE``).
- duplicates: a cell whose ``is_primary_data`` is False is CELLxGENE's copy of a cell published as primary data in
  another dataset (the schema's flag; Census queries keep ``is_primary_data == True``). Each such cell is rejected,
  named in the manifest, so a folder of overlapping datasets keeps every cell once, from its primary dataset; a
  file of copies alone is rejected whole.

The ``.h5ad`` extension is matched in any case (``cells.H5AD``), the file's path kept as it is on disk.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import ClassVar, Iterator

import numpy as np

from multimed_hf.builders._copies import refuse_later_copy
from multimed_hf.builders._download import NonDataFiles, non_data_reason
from multimed_hf.builders._records import record_where
from multimed_hf.builders.pbmc68k_reduced import (
    DONOR_COLUMNS, LABEL_COLUMNS, UNKNOWN_DONOR_NOTE, H5adFiles, h5ad_files, is_h5ad, panel_id,
)
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import RejectedRecord, Sample
from multimed_hf.data.source_builder import NOTE, PROVENANCE_FILE, SourceBuilder

__all__ = [
    "CellxGeneBuilder", "PANEL_POLICY", "detect_normalisation", "file_genes", "open_cells", "open_h5ad",
    "stage_age", "SCHEMA_LABEL", "SCHEMA_DONOR", "SCHEMA_STAGE", "SCHEMA_PRIMARY", "NOT_PRIMARY",
]

SCHEMA_LABEL = "cell_type"
SCHEMA_DONOR = "donor_id"
SCHEMA_STAGE = "development_stage"
SCHEMA_PRIMARY = "is_primary_data"
#: Why a cell flagged ``is_primary_data`` False is left out.
NOT_PRIMARY = ("is_primary_data is False: CELLxGENE's copy of a cell published as primary data in another dataset; "
               "each cell is kept once, from its primary dataset")
_LABEL_FALLBACKS = tuple(c for c in LABEL_COLUMNS if c != SCHEMA_LABEL)
_DONOR_FALLBACKS = tuple(c for c in DONOR_COLUMNS if c != SCHEMA_DONOR)
_TISSUE_COLUMNS = ("tissue", "tissue_type")
_ORGAN_COLUMNS = ("tissue_general", "organ")
#: obs columns / var columns only a CELLxGENE-schema file has (detection without reading the matrix).
_SCHEMA_OBS = "cell_type_ontology_term_id"
_SCHEMA_VAR = "feature_name"
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
#: The schema's feature ids: Ensembl genes, and ERCC RNA spike-in controls (``ERCC-00002``).
_FEATURE_ID = re.compile(r"^(ENS[A-Z]*G\d{6,}(\.\d+)?|ERCC-\d{5})$")
#: var columns holding a file's Ensembl ids when its index does not: scanpy's 10x reader, CELLxGENE Census.
_ID_COLUMNS = ("gene_ids", "feature_id")
_MISSING = {"", "nan", "none", "na", "n/a", "unknown", "unassigned"}
_DOCUMENTS = ("README", "LICENSE")
#: HsapDv's (and the schema's) exact-age stage labels: "34-year-old human stage", "34-year-old stage",
#: "10-month-old human stage".
_STAGE_AGE = re.compile(r"^(\d+(?:\.\d+)?)-(year|month)-old(?: human)? stage$", re.IGNORECASE)

PANEL_POLICY = (
    "union: every gene of every readable file of the source, keyed by Ensembl id (symbol where a file has none) "
    "and ordered by key; a cell's indices point into it, and a gene outside its file's panel was not measured "
    "there (not a zero)"
)


def stage_age(stage: str | None) -> float | None:
    """The age in years a development-stage label states (``"34-year-old human stage"`` -> 34.0,
    ``"6-month-old human stage"`` -> 0.5), or None (``"adult stage"``, ``"unknown"``, decades, embryonic stages)."""
    if stage is None:
        return None
    found = _STAGE_AGE.match(str(stage).strip())
    if found is None:
        return None
    value = float(found.group(1))
    return value if found.group(2).lower() == "year" else value / 12


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
    return _genes(_matrix(adata)[2], adata.var)


def _genes(var, main_var) -> tuple[list[str], list[str], str]:
    """``file_genes`` from the stored matrix's var frame and the file's own var (which holds ``feature_name``)."""
    index = [str(g) for g in var.index]
    names_of = dict(zip(main_var.index.astype(str), main_var[_SCHEMA_VAR].astype(str))) \
        if _SCHEMA_VAR in main_var.columns else {}
    column = next((c for c in _ID_COLUMNS if c in var.columns and _ensembl_ids(var[c].astype(str))), None)
    if _ensembl_ids(index):
        keys, names, keyed = index, [names_of.get(g, g) for g in index], "Ensembl id"
    elif column is not None:
        keys, keyed = [str(g) for g in var[column]], f"Ensembl id (var['{column}'])"
        # Census keeps the symbol in feature_name (its index is the row number); scanpy's index is the symbol
        names = [str(n) for n in var[_SCHEMA_VAR]] if _SCHEMA_VAR in var.columns else index
    else:
        keys, names, keyed = index, index, "gene symbol (the file has no Ensembl ids)"
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise BadSourceFile(f"gene keys repeat in the file's panel (e.g. {repeated}): expected unique genes")
    return keys, names, keyed


def _ensembl_ids(values) -> bool:
    """True when every value is a schema feature id (Ensembl, or an ERCC spike-in) and at least one is Ensembl."""
    values = [str(v) for v in values]
    return bool(values) and all(_FEATURE_ID.match(v) for v in values) and any(_ENSEMBL.match(v) for v in values)


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


def _column(columns: list[str], preferred: str | None, fallbacks, what: str, required: bool) -> str | None:
    if preferred and preferred in columns:
        return preferred
    found = next((c for c in fallbacks if c in columns), None)
    if found is None and required:
        schema = f"no {preferred!r} column (CELLxGENE schema) and " if preferred else "no "
        raise BadSourceFile(
            f"obs has {schema}none of the scanpy-style fallbacks {list(fallbacks)} for the {what}; obs columns: "
            f"{list(columns)[:15]}"
        )
    return found


def _texts(values) -> list[str | None]:
    out = []
    for value in (values.astype(object).tolist() if hasattr(values, "astype") else values):
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        text = None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        out.append(None if text is None or text.lower() in _MISSING else text)
    return out


class _Cells:
    """An open h5ad file as the reader needs it: obs column names, the matrix and its genes, and obs values of a
    row range (``_H5Cells`` reads them from disk chunk by chunk; ``_AnnDataCells`` from anndata's backed object)."""

    obs_columns: list[str]
    n_obs: int
    n_vars: int
    matrix: object
    where: str

    def genes(self) -> tuple[list[str], list[str], str]:
        raise NotImplementedError

    def column(self, name: str, start: int, stop: int) -> list:
        """Raw obs values of rows ``start:stop`` (strings, numbers, None for a masked value)."""
        raise NotImplementedError

    def barcodes(self, start: int, stop: int) -> list[str]:
        raise NotImplementedError

    def repeated_barcodes(self, chunk: int) -> int:
        """How many cell barcodes repeat one before them in the file (read ``chunk`` at a time)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _AnnDataCells(_Cells):
    """anndata's backed object (obs in memory): legacy layouts and encodings ``_H5Cells`` does not read."""

    def __init__(self, adata):
        self.adata = adata
        self.obs_columns = list(adata.obs.columns)
        self.n_obs, self.n_vars = adata.n_obs, adata.n_vars
        self.matrix, self.where, _ = _matrix(adata)

    def genes(self):
        return file_genes(self.adata)

    def column(self, name, start, stop):
        return self.adata.obs[name].iloc[start:stop].astype(object).tolist()

    def barcodes(self, start, stop):
        return self.adata.obs.index[start:stop].astype(str).tolist()

    def repeated_barcodes(self, chunk):
        return int(self.adata.obs.index.duplicated().sum())

    def close(self):
        self.adata.file.close()


#: obs column encodings ``_H5Cells`` reads chunk by chunk (anndata's on-disk format, >= 0.8).
_H5_ENCODINGS = ("categorical", "string-array", "array", "nullable-integer", "nullable-boolean",
                 "nullable-string-array")


class _NotH5Layout(Exception):
    """The file is not in the layout ``_H5Cells`` reads: anndata opens it instead."""


def _encoding(node) -> str:
    value = node.attrs.get("encoding-type", "")
    return value.decode() if isinstance(value, bytes) else str(value)


class _H5Cells(_Cells):
    """A file in anndata's (>= 0.8) on-disk layout, read with h5py: obs columns a row range at a time (a
    categorical's categories once: they are few), the matrix through ``anndata.io.sparse_dataset``."""

    def __init__(self, path: Path):
        import h5py

        self.handle = h5py.File(path, "r")
        try:
            self._open()
        except BaseException:
            self.handle.close()
            raise

    def _open(self) -> None:
        import h5py
        from anndata.io import read_elem, sparse_dataset

        obs = self.handle.get("obs")
        if not isinstance(obs, h5py.Group) or _encoding(obs) != "dataframe":
            raise _NotH5Layout("obs is not an anndata dataframe group")
        index_name = obs.attrs.get("_index", "_index")
        index_name = index_name.decode() if isinstance(index_name, bytes) else str(index_name)
        self.obs = obs
        self.index = obs.get(index_name)
        if not isinstance(self.index, h5py.Dataset):
            raise _NotH5Layout("obs has no index dataset")
        self.obs_columns = [str(c.decode() if isinstance(c, bytes) else c) for c in obs.attrs.get("column-order", [])]
        for name in self.obs_columns:
            node = obs.get(name)
            if node is None or _encoding(node) not in _H5_ENCODINGS:
                raise _NotH5Layout(f"obs column {name!r} has an encoding this reader does not read")
        self._categories: dict[str, list] = {}
        raw = self.handle.get("raw")
        if isinstance(raw, h5py.Group) and "X" in raw:
            matrix, self.where, var = raw["X"], "raw/X", raw.get("var")
        elif "X" in self.handle:
            matrix, self.where, var = self.handle["X"], "X", self.handle.get("var")
        else:
            raise BadSourceFile("no expression matrix: X and raw are both absent")
        encoding = _encoding(matrix)
        if isinstance(matrix, h5py.Group) and encoding in ("csr_matrix", "csc_matrix"):
            self.matrix = sparse_dataset(matrix)
        elif isinstance(matrix, h5py.Dataset) and matrix.ndim == 2:
            self.matrix = matrix
        else:
            raise _NotH5Layout(f"{self.where} is stored as {encoding or 'an unknown encoding'}")
        if var is None or "var" not in self.handle:
            raise _NotH5Layout("no var dataframe")
        self.var, self.main_var = read_elem(var), read_elem(self.handle["var"])  # genes: small, read whole
        self.n_obs = int(self.index.shape[0])
        n_rows, self.n_vars = (int(n) for n in self.matrix.shape)
        if n_rows != self.n_obs:
            raise BadSourceFile(f"{self.where} has {n_rows} rows for {self.n_obs} cells in obs")

    def genes(self):
        return _genes(self.var, self.main_var)

    def column(self, name, start, stop):
        node = self.obs[name]
        kind = _encoding(node)
        if kind == "categorical":
            categories = self._categories.get(name)
            if categories is None:
                categories = self._categories[name] = _strings(node["categories"][:]) \
                    if node["categories"].dtype.kind in "OSU" else node["categories"][:].tolist()
            codes = node["codes"][start:stop]
            return [categories[c] if c >= 0 else None for c in codes.tolist()]
        if kind.startswith("nullable"):
            values = node["values"][start:stop]
            values = _strings(values) if values.dtype.kind in "OSU" else values.tolist()
            mask = node["mask"][start:stop].tolist()
            return [None if masked else v for v, masked in zip(values, mask)]
        values = node[start:stop]
        return _strings(values) if values.dtype.kind in "OSU" else values.tolist()

    def barcodes(self, start, stop):
        return _strings(self.index[start:stop])

    def repeated_barcodes(self, chunk):
        """8 bytes a cell at a time of the check (the barcodes' in-process hashes); a hash seen twice is checked
        on the barcodes themselves, so only a true repeat counts."""
        hashes = np.empty(self.n_obs, dtype=np.int64)
        for start in range(0, self.n_obs, chunk):
            stop = min(start + chunk, self.n_obs)
            hashes[start:stop] = [hash(b) for b in self.barcodes(start, stop)]
        values, counts = np.unique(hashes, return_counts=True)
        suspects = set(values[counts > 1].tolist())
        del hashes, values, counts
        if not suspects:
            return 0
        seen: set[str] = set()
        repeats = 0
        for start in range(0, self.n_obs, chunk):
            for barcode in self.barcodes(start, min(start + chunk, self.n_obs)):
                if hash(barcode) in suspects:
                    repeats += barcode in seen
                    seen.add(barcode)
        return repeats

    def close(self):
        self.handle.close()


def _strings(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def open_cells(path: Path, *, h5py_reader: bool = True) -> _Cells:
    """The file opened for reading cells: with h5py (obs read a row range at a time) where its layout allows,
    else with anndata's backed mode (obs in memory)."""
    if path.stat().st_size == 0:
        raise BadSourceFile("empty file (0 bytes)")
    if h5py_reader:
        try:
            return _H5Cells(path)
        except _NotH5Layout:
            pass
        except (OSError, KeyError, ValueError, TypeError) as err:
            if isinstance(err, BadSourceFile):
                raise
            raise BadSourceFile(f"cannot read h5ad: {type(err).__name__}: {str(err)[:200]}") from None
    return _AnnDataCells(open_h5ad(path))


class CellxGeneBuilder(H5adFiles, NonDataFiles, SourceBuilder):
    task = "cell_type"
    source = "cellxgene"
    #: 2: age from development_stage; 3: ERCC ids, Census feature_id; 4: is_primary_data; 5: .h5ad in any case;
    #: 6: folder litter (.DS_Store, Thumbs.db, __MACOSX/) ignored, not rejected as stray files
    reading_version: ClassVar[str] = "8"  # 7: cells of no given donor grouped by file; 8: byte copies dropped
    #: Cells read from the backed matrix at a time (bounds the reader's memory, whatever the file's size).
    chunk_cells: ClassVar[int] = 8192
    #: Cells whose values decide a file's normalisation.
    normalisation_cells: ClassVar[int] = 2000
    #: Read obs with h5py a chunk at a time where the file's layout allows (False: anndata's backed mode only).
    h5py_obs: ClassVar[bool] = True

    @classmethod
    def detect(cls, root: Path) -> bool:
        """``.h5ad`` files of which one has CELLxGENE-schema columns; or a folder of nothing but ``.h5ad`` files
        (scanpy-style); never a folder holding scanpy's pbmc68k_reduced, its own source, whatever else it holds (a
        CELLxGENE file beside it turned the folder into this source, and scanpy's file was rejected)."""
        files = h5ad_files(root)
        if not files or any("pbmc68k_reduced" in p.name for p in files):
            return False
        if any(_has_schema_columns(p) for p in files):
            return True
        others = [
            p for p in root.iterdir()
            if p.is_file() and not is_h5ad(p.name) and p.name != PROVENANCE_FILE
            and not p.name.upper().startswith(_DOCUMENTS) and not p.name.startswith(".")
            and non_data_reason(p.name) is None
        ]
        return not others

    @cached_property
    def _panel(self) -> dict:
        """The union panel and, per readable file, its matrix, normalisation and gene count (files that will be
        rejected, e.g. with no donor column, add no genes)."""
        names: dict[str, str] = {}
        files: dict[str, dict] = {}
        for relpath in self._h5ad_relpaths:
            try:
                cells = self._open(relpath)
            except BadSourceFile:
                continue
            try:
                _column(cells.obs_columns, SCHEMA_LABEL, _LABEL_FALLBACKS, "cell type", required=True)
                _column(cells.obs_columns, SCHEMA_DONOR, _DONOR_FALLBACKS, "donor", required=True)
                keys, gene_names, keyed = cells.genes()
                where = cells.where
                normalisation = detect_normalisation(_csr(cells.matrix[: min(self.normalisation_cells, cells.n_obs)]))
            except (BadSourceFile, *self.reader_errors):
                continue
            finally:
                cells.close()
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

    def read_file(self, relpath: str) -> list[Sample | RejectedRecord]:
        return list(self.iter_file(relpath))

    def iter_file(self, relpath: str) -> Iterator[Sample | RejectedRecord]:
        """The file's cells, streamed (what the build reads: never a whole file's cells at once)."""
        name = PurePosixPath(relpath).name
        if name.upper().startswith(_DOCUMENTS):
            return iter(())
        if not is_h5ad(name):
            raise BadSourceFile("stray file: not an .h5ad AnnData file")
        refuse_later_copy(self.root, relpath, self._h5ad_relpaths, "its cells would be in the data twice")
        return self.iter_cells(relpath)

    def _open(self, relpath: str) -> _Cells:
        return open_cells(self.root / relpath, h5py_reader=self.h5py_obs)

    def iter_cells(self, relpath: str) -> Iterator[Sample | RejectedRecord]:
        """The file's cells, one sample each, read ``chunk_cells`` rows at a time (matrix and obs)."""
        cells = self._open(relpath)
        try:
            yield from self._cells(cells, relpath)
        finally:
            cells.close()

    def _cells(self, cells: _Cells, relpath: str) -> Iterator[Sample | RejectedRecord]:
        columns_of = cells.obs_columns
        if cells.n_obs == 0 or cells.n_vars == 0:
            raise BadSourceFile(f"no cells or no genes: {cells.n_obs} x {cells.n_vars}")
        label = _column(columns_of, SCHEMA_LABEL, _LABEL_FALLBACKS, "cell type", required=True)
        donor = _column(columns_of, SCHEMA_DONOR, _DONOR_FALLBACKS, "donor", required=True)
        tissue = _column(columns_of, None, _TISSUE_COLUMNS, "tissue", required=False)
        organ = _column(columns_of, None, _ORGAN_COLUMNS, "organ", required=False)
        stage = SCHEMA_STAGE if SCHEMA_STAGE in columns_of else None
        primary = SCHEMA_PRIMARY if SCHEMA_PRIMARY in columns_of else None
        repeats = cells.repeated_barcodes(self.chunk_cells)
        if repeats:
            raise BadSourceFile(f"cell barcodes repeat in obs ({repeats} repeats)")
        if primary and not any(_is_primary(v) for start in range(0, cells.n_obs, self.chunk_cells)
                               for v in cells.column(primary, start, min(start + self.chunk_cells, cells.n_obs))):
            raise BadSourceFile(f"every cell has {NOT_PRIMARY}; build from the primary datasets")
        keys, _, _ = cells.genes()
        matrix = cells.matrix
        # before the panel check: a scaled or non-finite file adds no genes to the panel, and its reason is its values
        first = min(self.normalisation_cells, cells.n_obs)
        normalisation = _checked(lambda: detect_normalisation(_csr(matrix[:first])), matrix[:first], cells, 0)
        position = {g: i for i, g in enumerate(self._panel["genes"])}
        unknown = [k for k in keys if k not in position]
        if unknown:  # the file changed since the panel was read
            raise BadSourceFile(f"genes {unknown[:3]} are not in the source's panel: rebuild to re-read the folder")
        remap = np.array([position[k] for k in keys], dtype=np.int32)
        stem = PurePosixPath(relpath).with_suffix("").as_posix()
        matrix_note = f"{cells.where} ({normalisation})"
        for start in range(0, cells.n_obs, self.chunk_cells):
            stop = min(start + self.chunk_cells, cells.n_obs)
            block = _csr(matrix[start:stop])
            _checked(lambda: detect_normalisation(block), block, cells, start)  # scaled / non-finite anywhere reject
            n = stop - start  # obs values per chunk too: no list of the whole file's cells

            def texts(name):
                return _texts(cells.column(name, start, stop)) if name else [None] * n

            columns = {
                "cell_type": texts(label), "donor": texts(donor), "tissue": texts(tissue), "organ": texts(organ),
                "age": [stage_age(s) for s in texts(stage)],
            }
            barcodes = cells.barcodes(start, stop)
            kept = [_is_primary(v) for v in cells.column(primary, start, stop)] if primary else [True] * n
            for offset in range(block.shape[0]):
                if not kept[offset]:
                    yield RejectedRecord(record_where(relpath, barcodes[offset]), NOT_PRIMARY)
                    continue
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
                        "age": columns["age"][offset],
                        "expression_matrix": matrix_note,
                    },
                    group_key=f"donor:{donor_id}" if donor_id else f"unknown donor:{stem}",
                    extra={} if donor_id else {NOTE: UNKNOWN_DONOR_NOTE},
                )

    def assets(self) -> dict[str, object]:
        """``gene_panels.json``: the union panel (Ensembl ids, names), its policy and each file's normalisation."""
        return {"gene_panels.json": {self.panel_id: self._panel}}


def _is_primary(value) -> bool:
    """``is_primary_data`` of one cell: only an explicit False (bool, 0 or the text "False") marks a copy; a missing
    value keeps the cell."""
    if isinstance(value, (bytes, str)):
        return (value.decode() if isinstance(value, bytes) else value).strip().lower() not in ("false", "0")
    return value is None or bool(value)


def _checked(check, block, cells: _Cells, start: int):
    """``check()``, its ``BadSourceFile`` naming the first cell (barcode) whose values are negative or non-finite."""
    try:
        return check()
    except BadSourceFile as err:
        block = _csr(block)
        bad = np.flatnonzero(~np.isfinite(block.data) | (block.data < 0))
        if not bad.size:
            raise
        row = int(np.searchsorted(block.indptr, bad[0], side="right") - 1)
        barcode = cells.barcodes(start + row, start + row + 1)[0]
        raise BadSourceFile(f"{err} (the first in cell {barcode!r}, row {start + row + 1} of obs)") from None


def _csr(block):
    """A row block of the matrix as CSR (a backed sparse block, or a dense block of a dense matrix)."""
    import scipy.sparse as sp

    return block.tocsr() if hasattr(block, "tocsr") else sp.csr_matrix(np.asarray(block))


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
