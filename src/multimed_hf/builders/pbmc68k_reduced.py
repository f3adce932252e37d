"""scRNA-seq cells from AnnData ``.h5ad`` files; the bundled source is scanpy's real ``pbmc68k_reduced``.

Each ``.h5ad`` is read in full with anndata and checked: a cell-type column in ``obs`` (the first of
``LABEL_COLUMNS``), unique cell barcodes and gene names, and an expression matrix of finite, non-negative values.
The matrix stored is the least processed one the file has: ``layers["counts"]``, else ``.raw.X`` (scanpy keeps the
log-normalised, unscaled values there), else ``.X``; a file whose only matrix is scaled (negative values) is
rejected. Each cell is one sample: its non-zero genes as ``gene_indices`` (positions in the file's gene panel) and
``gene_values``, never densified. The panel (the ordered gene names) is identified by ``gene_panel``, a hash of the
names, and its gene list is written once per source into ``build_info.json`` (the source's
``gene_panels.json`` beside the shards). Cells whose label is missing keep ``cell_type`` None. A CELLxGENE-schema
file (``CELLXGENE_COLUMNS`` in obs) beside scanpy's is rejected, named: the cellxgene source reads it with its rules.

Grouping: by donor where ``obs`` has a donor column (the first of ``DONOR_COLUMNS``); a file without one (as
pbmc68k_reduced, one donor of Zheng et al. 2017) is split by cell, which the card states.

The ``.h5ad`` extension is matched in any case (``cells.H5AD``), the file's path kept as it is on disk.
"""

from __future__ import annotations

import hashlib
import warnings
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np

from multimed_hf.builders._copies import listing_digest, refuse_later_copy
from multimed_hf.builders._download import NonDataFiles, non_data_reason
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import NOTE, SourceBuilder

__all__ = [
    "AnnDataFolderBuilder", "PBMC68kReducedBuilder", "LABEL_COLUMNS", "DONOR_COLUMNS", "panel_id",
    "read_expression", "Expression", "is_h5ad", "h5ad_files", "UNKNOWN_DONOR_NOTE", "H5adFiles",
]

#: obs columns naming the cell type, in order of preference (CELLxGENE, common variants, scanpy's pbmc68k).
LABEL_COLUMNS = ("cell_type", "celltype", "cell_type_label", "CellType", "cell_ontology_class", "bulk_labels")
DONOR_COLUMNS = ("donor_id", "donor", "individual", "patient_id", "patient", "subject")
TISSUE_COLUMNS = ("tissue",)
ORGAN_COLUMNS = ("organ", "tissue_general")
#: The manifest's note on a cell whose donor is not given: it may be any of the file's donors.
UNKNOWN_DONOR_NOTE = ("donor not given: grouped with its file's other cells of no given donor (one split), as they "
                      "may share a donor")
#: What a label cell reads as when it says nothing.
_MISSING = {"", "nan", "none", "na", "n/a", "unknown", "unassigned"}
_DOCUMENTS = ("README", "LICENSE")


def is_h5ad(name: str) -> bool:
    """An AnnData file's name: ``.h5ad`` in any case (``cells.H5AD``, as a Windows or CD copy may name it)."""
    return name.lower().endswith(".h5ad")


def h5ad_files(folder: Path, pattern: str = "*") -> list[Path]:
    """The ``.h5ad`` files (extension in any case) that ``folder.glob(pattern)`` finds, sorted; not the ones that are
    no data (a macOS ``._name.h5ad`` resource fork, a file in ``__MACOSX/``: ``non_data_reason``)."""
    return [p for p in sorted(folder.glob(pattern)) if is_h5ad(p.name) and p.is_file()
            and non_data_reason(p.relative_to(folder).as_posix()) is None]


def panel_id(genes) -> str:
    """A stable id of an ordered gene list (the same list in two files gets the same id)."""
    return "genes:" + hashlib.sha256("\n".join(genes).encode("utf-8")).hexdigest()[:16]


def _read_h5ad(path: Path, backed: bool = False):
    import anndata

    if path.stat().st_size == 0:
        raise BadSourceFile("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata's notes on moving legacy fields
            return anndata.read_h5ad(path, backed="r" if backed else None)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise BadSourceFile(f"cannot read h5ad: {type(err).__name__}: {str(err)[:200]}") from None


class Expression:
    """The matrix a file's cells are stored from, as CSR, with its gene names and where it came from."""

    def __init__(self, adata):
        import scipy.sparse as sp

        if "counts" in getattr(adata, "layers", {}):
            matrix, genes, where = adata.layers["counts"], adata.var_names, "layers/counts"
        elif adata.raw is not None:
            matrix, genes, where = adata.raw.X, adata.raw.var_names, "raw/X"
        else:
            matrix, genes, where = adata.X, adata.var_names, "X"
        if matrix is None:
            raise BadSourceFile("no expression matrix: X, raw and layers['counts'] are all absent")
        self.matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self.genes = [str(g) for g in genes]
        self.where = where
        values = self.matrix.data
        if values.size and not np.isfinite(values).all():
            raise BadSourceFile(f"{where} holds {int((~np.isfinite(values)).sum())} non-finite values")
        if values.size and values.min() < 0:
            raise BadSourceFile(
                f"{where} holds negative values (min {values.min():.3g}): scaled data, not expression; the file "
                "has no layers['counts'] or .raw to store instead"
            )
        if len(set(self.genes)) != len(self.genes):
            repeated = sorted({g for g in self.genes if self.genes.count(g) > 1})[:5]
            raise BadSourceFile(f"gene names repeat in {where}'s panel (e.g. {repeated}): make them unique")

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = self.matrix.indptr[i], self.matrix.indptr[i + 1]
        indices = self.matrix.indices[start:stop].astype(np.int32)
        values = self.matrix.data[start:stop].astype(np.float32)
        keep = values != 0
        order = np.argsort(indices[keep], kind="stable")
        return indices[keep][order], values[keep][order]


def read_expression(path: Path) -> tuple[object, Expression]:
    """The AnnData (read fully) and its stored matrix; ``BadSourceFile`` if unreadable or not expression."""
    adata = _read_h5ad(path)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise BadSourceFile(f"no cells or no genes: {adata.n_obs} x {adata.n_vars}")
    return adata, Expression(adata)


def _first(columns, names) -> str | None:
    return next((c for c in names if c in columns), None)


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in _MISSING else text


#: obs columns of the CELLxGENE schema: a file holding them is the cellxgene source's (``builders.cellxgene``).
CELLXGENE_COLUMNS = ("is_primary_data", "cell_type_ontology_term_id")


class H5adFiles:
    """Mixin for a builder of ``.h5ad`` files: the folder's files listed once (``_h5ad_relpaths``), and the
    validation-cache ``listing_version`` they give (a byte copy of one is dropped only while its original is there:
    ``_copies.refuse_later_copy``)."""

    @cached_property
    def _h5ad_relpaths(self) -> list[str]:
        """The folder's .h5ad files, listed once per builder."""
        return [rel for rel in self.list_files() if is_h5ad(rel)]

    @cached_property
    def listing_version(self) -> str:
        """The .h5ad files there are: a copy is dropped only while its original is there."""
        return listing_digest(self.root, self._h5ad_relpaths)


class AnnDataFolderBuilder(H5adFiles, NonDataFiles, SourceBuilder):
    """A folder of ``.h5ad`` files, one sample per cell. Subclasses set ``task``, ``source`` and ``detect``."""

    version = "6"  # 2: .h5ad in any case; 3: the registry's organ only for cells of the source's tissue;
    # 4: cells of no given donor grouped per file; 5: a byte-identical copy of a file dropped; 6: CELLxGENE files

    #: Facts of the source that its files do not state (e.g. the tissue of a PBMC set), per column; the organ is
    #: the registry's (``SourceSpec.organ``), for a file without an organ column.
    defaults: ClassVar[dict[str, str]] = {}

    def read_file(self, relpath: str) -> list[Sample]:
        name = PurePosixPath(relpath).name
        if name.upper().startswith(_DOCUMENTS):
            return []
        if not is_h5ad(name):
            raise BadSourceFile("stray file: not an .h5ad AnnData file")
        refuse_later_copy(self.root, relpath, self._h5ad_relpaths, "its cells would be in the data twice")
        adata, expression = read_expression(self.root / relpath)
        obs = adata.obs
        schema = [c for c in CELLXGENE_COLUMNS if c in obs.columns]
        if schema:  # its rules (is_primary_data copies, ontology ids) are the cellxgene source's, not applied here
            raise BadSourceFile(f"a CELLxGENE-schema file (obs has {schema}) in the {self.source} folder: build it "
                                f"from a folder of its own, where the cellxgene source reads it with its rules "
                                f"(cells flagged is_primary_data False left out)")
        label = _first(obs.columns, LABEL_COLUMNS)
        if label is None:
            raise BadSourceFile(
                f"no cell-type column: obs has {list(obs.columns)[:12]}; expected one of {list(LABEL_COLUMNS)}"
            )
        if not obs.index.is_unique:
            raise BadSourceFile(f"cell barcodes repeat in obs ({int(obs.index.duplicated().sum())} repeats)")
        donor = _first(obs.columns, DONOR_COLUMNS)
        tissue = _first(obs.columns, TISSUE_COLUMNS)
        organ = _first(obs.columns, ORGAN_COLUMNS)
        panel = panel_id(expression.genes)
        stated_organ = self.spec().organ
        stem = PurePosixPath(relpath).with_suffix("").as_posix()
        samples = []
        for i, barcode in enumerate(obs.index):
            indices, values = expression.row(i)
            donor_id = _text(obs[donor].iloc[i]) if donor else None
            cell_tissue = _text(obs[tissue].iloc[i]) if tissue else self.defaults.get("tissue")
            # the registry's organ is the source's: not that of a file of another tissue (a liver .h5ad beside it)
            source_tissue = cell_tissue in (None, self.defaults.get("tissue"))
            samples.append(Sample(
                sample_id=f"{stem}:{barcode}", source_path=relpath,
                fields={
                    "gene_indices": indices, "gene_values": values, "gene_panel": panel,
                    "cell_type": _text(obs[label].iloc[i]),
                    "tissue": cell_tissue,
                    "organ": _text(obs[organ].iloc[i]) if organ else (stated_organ if source_tissue else None),
                    "donor": donor_id, "expression_matrix": expression.where,
                },
                # donors are grouped across the source's files: two files of one study share their donors; cells of
                # no given donor in a file with a donor column, per file (they may share one), as CELLxGENE's
                group_key=f"donor:{donor_id}" if donor_id else (f"unknown donor:{stem}" if donor else None),
                extra={NOTE: UNKNOWN_DONOR_NOTE} if donor and not donor_id else {},
            ))
        return samples

    @cached_property
    def _panels(self) -> dict:
        """``{panel id: {"genes": [...], "files": [...]}}`` over the folder's readable ``.h5ad`` files."""
        panels: dict[str, dict] = {}
        for path in h5ad_files(self.root, "**/*"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    adata = _read_h5ad(path, backed=True)
                    if "counts" in adata.layers:
                        genes = adata.var_names
                    elif adata.raw is not None:
                        genes = adata.raw.var_names
                    else:
                        genes = adata.var_names
                    genes = [str(g) for g in genes]
                    adata.file.close()
            except BadSourceFile:
                continue
            entry = panels.setdefault(panel_id(genes), {"genes": genes, "files": []})
            entry["files"].append(path.relative_to(self.root).as_posix())
        return panels

    def assets(self) -> dict[str, object]:
        """``gene_panels.json`` beside the shards: the gene lists that ``gene_panel`` ids refer to."""
        return {"gene_panels.json": self._panels}


class PBMC68kReducedBuilder(AnnDataFolderBuilder):
    task = "cell_type"
    source = "pbmc68k_reduced"
    defaults = {"tissue": "peripheral blood mononuclear cells"}

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any("pbmc68k_reduced" in p.name for p in h5ad_files(root))
