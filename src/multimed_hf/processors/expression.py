"""Sparse expression rows (scRNA-seq cells, pseudo-bulk profiles) -> dense values over one recorded gene order."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from multimed_hf.processors.base import ModalityProcessor, ProcessorError

__all__ = ["ExpressionProcessor", "GENE_STATISTICS_FILE"]

#: File beside ``modality_processor.json`` holding the per-gene standardisation (``gene_mean``, ``gene_std``).
GENE_STATISTICS_FILE = "gene_statistics.safetensors"


class ExpressionProcessor(ModalityProcessor):
    """One sparse row (``indices`` into the row's gene panel, ``values``) -> ``values`` float32 [G] over ``genes``.

    ``genes`` is the recorded gene order (the model's input panel, ``G = len(genes)``); ``panels`` maps each
    ``gene_panel`` id of the data to its ordered gene list, which the row's indices refer to. Per row:
    ``normalize_total`` (if set) scales the row's values to that sum over all of the row's genes (library-size
    normalisation), then ``log1p`` (if set) applies ``log(1 + x)``, then the row is aligned by gene name to ``genes``.
    A gene index repeated within a row counts once, with the sum of its values (as scipy's CSR matrices read it).
    ``panel_scaling`` gives panels whose rows are stored on another scale their own ``normalize_total`` / ``log1p``
    (``{panel_id: {"normalize_total": 1e4, "log1p": True}}``: raw counts of one source beside log-scale values of
    another, or of another task sharing the encoder); other panels take the processor-wide settings.

    Standardisation (optional): after ``fit_standardization(rows)`` (or with ``gene_mean`` / ``gene_std`` given),
    every measured gene's value becomes ``(value - gene_mean) / gene_std`` (statistics over the training rows that
    measure the gene); absent genes hold 0 (the mean) instead of ``missing_value``. The statistics are saved beside
    the settings (``gene_statistics.safetensors``) and loaded with the processor.

    Absent genes: a gene of ``genes`` that the row's panel does not measure is absent, not zero. The dense ``values``
    hold ``missing_value`` (0.0 by default) there, since the batch contract has a dense panel only; with
    ``return_gene_mask=True`` a ``gene_mask`` bool [G] (True = measured) is added for a model that reads it. A gene
    the panel measures but the sparse row omits is a true zero. Genes of the row's panel outside ``genes`` are
    dropped (they take part in ``normalize_total``, which sees the whole row).
    """

    def __init__(self, genes: Sequence[str], panels: Mapping[str, Sequence[str]] | None = None,
                 normalize_total: float | None = None, log1p: bool = True, missing_value: float = 0.0,
                 return_gene_mask: bool = False, panel_column: str = "gene_panel",
                 panel_scaling: Mapping[str, Mapping[str, Any]] | None = None,
                 gene_mean: Sequence[float] | None = None, gene_std: Sequence[float] | None = None):
        self.genes = _unique(genes, "the recorded gene order (genes)")
        if not self.genes:
            raise ProcessorError("genes is empty: give the recorded gene order the model reads")
        _check_total(normalize_total, "normalize_total")
        self.normalize_total = normalize_total
        self.log1p = bool(log1p)
        self.panel_scaling: dict[str, dict[str, Any]] = {}
        for panel_id, scaling in (panel_scaling or {}).items():
            self.set_panel_scaling(panel_id, **dict(scaling))
        self.gene_mean: np.ndarray | None = None
        self.gene_std: np.ndarray | None = None
        if (gene_mean is None) != (gene_std is None):
            raise ProcessorError("gene_mean and gene_std: give both (a fitted standardisation) or neither")
        if gene_mean is not None:
            self.set_standardization(gene_mean, gene_std)
        self.missing_value = float(missing_value)
        self.return_gene_mask = bool(return_gene_mask)
        self.panel_column = panel_column
        self.panels: dict[str, list[str]] = {}
        self._position = {gene: i for i, gene in enumerate(self.genes)}
        self._maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for panel_id, panel in (panels or {}).items():
            self.add_panel(panel_id, panel)

    @classmethod
    def from_panel(cls, panel_id: str, genes: Sequence[str], **kwargs) -> "ExpressionProcessor":
        """A processor whose recorded gene order is panel ``panel_id`` itself."""
        return cls(genes=genes, panels={panel_id: genes}, **kwargs)

    def add_panel(self, panel_id: str, genes: Sequence[str]) -> None:
        """Record the ordered gene list that rows with ``gene_panel == panel_id`` index into."""
        self.panels[str(panel_id)] = _unique(genes, f"gene panel {panel_id!r}")
        self._maps.pop(str(panel_id), None)

    def set_panel_scaling(self, panel_id: str, normalize_total: float | None = None, log1p: bool = True) -> None:
        """Rows of panel ``panel_id`` are scaled with these settings instead of the processor-wide ones."""
        _check_total(normalize_total, f"panel_scaling[{panel_id!r}].normalize_total")
        self.panel_scaling[str(panel_id)] = {"normalize_total": normalize_total, "log1p": bool(log1p)}

    def scaling_of(self, panel_id: str) -> tuple[float | None, bool]:
        """``(normalize_total, log1p)`` applied to rows of panel ``panel_id``."""
        own = self.panel_scaling.get(str(panel_id))
        return (own["normalize_total"], own["log1p"]) if own else (self.normalize_total, self.log1p)

    # ------------------------------------------------------------------ standardisation
    @property
    def standardizes(self) -> bool:
        """Whether values are standardised per gene (a fitted ``gene_mean`` / ``gene_std``)."""
        return self.gene_mean is not None

    def set_standardization(self, gene_mean: Sequence[float] | None, gene_std: Sequence[float] | None) -> None:
        """Standardise each gene with these statistics (one per recorded gene); ``None, None`` turns it off."""
        if gene_mean is None and gene_std is None:
            self.gene_mean = self.gene_std = None
            return
        mean = np.asarray(gene_mean, dtype=np.float32).reshape(-1)
        std = np.asarray(gene_std, dtype=np.float32).reshape(-1)
        if mean.shape != (len(self.genes),) or std.shape != (len(self.genes),):
            raise ProcessorError(f"gene_mean / gene_std hold {mean.size} / {std.size} values; expected one per "
                                 f"recorded gene ({len(self.genes)})")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std <= 0).any():
            raise ProcessorError("gene_std must be finite and > 0 and gene_mean finite for every gene")
        self.gene_mean, self.gene_std = mean, std

    def fit_standardization(self, rows: Iterable[tuple[Sequence[int], Sequence[float], str]], *,
                            min_std: float = 1e-2) -> int:
        """Fit ``gene_mean`` / ``gene_std`` on sparse rows ``(indices, values, panel)`` (the training rows), after
        scaling and alignment, each gene over the rows that measure it (a gene no row measures: mean 0, std 1).
        Standard deviations are floored at ``min_std`` (near-constant genes are not blown up). Returns the number
        of rows read."""
        previous = self.gene_mean, self.gene_std
        self.gene_mean = self.gene_std = None  # the raw (scaled, aligned) values
        total = np.zeros(len(self.genes), dtype=np.float64)
        squares = np.zeros(len(self.genes), dtype=np.float64)
        counts = np.zeros(len(self.genes), dtype=np.float64)
        n = 0
        try:
            for indices, values, panel in rows:
                dense = self(indices, values, panel)["values"].astype(np.float64)
                measured = self._panel_map(str(panel))[1]
                total[measured] += dense[measured]
                squares[measured] += dense[measured] ** 2
                counts[measured] += 1
                n += 1
        finally:
            self.gene_mean, self.gene_std = previous  # unchanged unless the fit below completes
        if n == 0:
            raise ProcessorError("fit_standardization: no rows to fit the per-gene statistics on")
        seen = counts > 0
        mean = np.zeros(len(self.genes))
        mean[seen] = total[seen] / counts[seen]
        var = np.ones(len(self.genes))
        var[seen] = np.maximum(squares[seen] / counts[seen] - mean[seen] ** 2, 0.0)
        std = np.maximum(np.sqrt(var), min_std)
        std[~seen] = 1.0
        self.set_standardization(mean, std)
        return n

    def _panel_map(self, panel_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``genes`` of each panel gene, -1 if not recorded; mask over ``genes`` of measured genes)."""
        if panel_id not in self._maps:
            if panel_id not in self.panels:
                raise ProcessorError(f"gene panel {panel_id!r} is not known to the expression processor (known: "
                                     f"{sorted(self.panels)}); give its gene list: processor.add_panel({panel_id!r}, "
                                     f"genes)")
            positions = np.array([self._position.get(g, -1) for g in self.panels[panel_id]], dtype=np.int64)
            measured = np.zeros(len(self.genes), dtype=bool)
            measured[positions[positions >= 0]] = True
            self._maps[panel_id] = (positions, measured)
        return self._maps[panel_id]

    def __call__(self, indices: Sequence[int], values: Sequence[float], panel: str) -> dict:
        """Dense, normalised ``values`` over ``genes`` for one sparse row of panel ``panel``."""
        positions, measured = self._panel_map(str(panel))
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if indices.shape != values.shape:
            raise ProcessorError(f"gene indices ({indices.size}) and values ({values.size}) differ in length")
        if indices.size and (indices.min() < 0 or indices.max() >= positions.size):
            raise ProcessorError(f"gene indices span [{indices.min()}, {indices.max()}] but panel {panel!r} has "
                                 f"{positions.size} genes")
        if not np.isfinite(values).all():
            raise ProcessorError("expression values include NaN or infinity")
        if indices.size > 1 and not (np.diff(indices) > 0).all():  # repeated entries of a gene count once, summed
            indices, inverse = np.unique(indices, return_inverse=True)  # (as scipy's CSR matrices read them)
            values = np.bincount(inverse.reshape(-1), weights=values, minlength=indices.size)
        normalize_total, log1p = self.scaling_of(panel)
        if log1p and values.size and values.min() < 0:  # checked on the stored values, which the message quotes
            raise ProcessorError(f"expression values must be >= 0 for log1p, got a minimum of {values.min():g}; "
                                 f"for data already transformed give log1p=False")
        if normalize_total is not None:
            total = values.sum()
            if total > 0:
                values = values * (normalize_total / total)
        if log1p:
            values = np.log1p(values)
        dense = np.full(len(self.genes), self.missing_value, dtype=np.float32)
        dense[measured] = 0.0
        target = positions[indices]
        kept = target >= 0
        dense[target[kept]] = values[kept]
        if self.gene_mean is not None:
            dense = np.where(measured, (dense - self.gene_mean) / self.gene_std, 0.0).astype(np.float32)
        out = {"values": dense}
        if self.return_gene_mask:
            out["gene_mask"] = measured.copy()
        return out

    def columns(self, specs: Sequence) -> tuple[str, ...]:
        return (*_split_columns(specs), self.panel_column)

    def from_row(self, values: Mapping[str, Any], specs: Sequence) -> dict | None:
        index_column, value_column = _split_columns(specs)
        indices, data, panel = values[index_column], values[value_column], values[self.panel_column]
        if indices is None or data is None:
            return None
        if panel is None:
            raise ProcessorError(f"column {self.panel_column!r} is empty, so the gene indices cannot be read")
        return self(indices, data, panel)

    def collate(self, items: Sequence[dict]) -> dict:
        import torch

        out = {"values": torch.from_numpy(np.stack([item["values"] for item in items]))}
        if self.return_gene_mask:
            out["gene_mask"] = torch.from_numpy(np.stack([item["gene_mask"] for item in items]))
        return out

    def to_dict(self) -> dict:
        return {"genes": list(self.genes), "panels": {k: list(v) for k, v in self.panels.items()},
                "normalize_total": self.normalize_total, "log1p": self.log1p, "missing_value": self.missing_value,
                "return_gene_mask": self.return_gene_mask, "panel_column": self.panel_column,
                "panel_scaling": {k: dict(v) for k, v in self.panel_scaling.items()}}

    def _rebuild(self, settings: dict) -> "ExpressionProcessor":
        return type(self)(**settings, gene_mean=self.gene_mean, gene_std=self.gene_std)

    def _save_artifacts(self, directory: Path) -> None:
        path = directory / GENE_STATISTICS_FILE
        if self.gene_mean is not None:
            from safetensors.numpy import save_file

            save_file({"gene_mean": self.gene_mean, "gene_std": self.gene_std}, str(path))
        elif path.exists():
            path.unlink()

    @classmethod
    def _from_settings(cls, settings: dict, directory: Path) -> "ExpressionProcessor":
        path = directory / GENE_STATISTICS_FILE
        if path.is_file():
            from safetensors.numpy import load_file

            stats = load_file(str(path))
            settings = {**settings, "gene_mean": stats["gene_mean"], "gene_std": stats["gene_std"]}
        return cls(**settings)


def _check_total(value: float | None, what: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ProcessorError(f"{what}={value!r}: expected a positive target sum or None")


def _unique(genes: Sequence[str], what: str) -> list[str]:
    genes = [str(g) for g in genes]
    seen, repeated = set(), []
    for gene in genes:
        if gene in seen:
            repeated.append(gene)
        seen.add(gene)
    if repeated:
        raise ProcessorError(f"{what} names genes more than once: {sorted(set(repeated))[:10]}; gene names must be "
                             f"unique (use gene ids where symbols repeat)")
    return genes


def _split_columns(specs: Sequence) -> tuple[str, str]:
    """The (indices, values) columns among a modality's registry columns, told apart by dtype."""
    index = [s.name for s in specs if s.dtype == "list_int32"]
    value = [s.name for s in specs if s.dtype == "list_float32"]
    if len(index) != 1 or len(value) != 1:
        raise ProcessorError(f"an expression modality needs one list_int32 (indices) and one list_float32 (values) "
                             f"column, got {[(s.name, s.dtype) for s in specs]}")
    return index[0], value[0]
