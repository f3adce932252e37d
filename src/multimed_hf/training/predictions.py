"""TaskPredictions: one task's predictions over a dataset, each row once, with its labels, metrics and intervals."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

__all__ = ["TaskPredictions", "PER_ROW_METRIC_COLUMNS", "metadata_columns", "stack_rows", "collect_batch",
           "whole_chains", "warn_cut_chains"]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
#: Per-row metric options (``compute_output_metrics``) -> the dataset column that holds them, read where a task's
#: rows have that column and the column's metrics take the option (med_vqa's closed/open split, expression
#: prediction's per-context Pearson).
PER_ROW_METRIC_COLUMNS = {"answer_types": "answer_type", "groups": "context"}


def metadata_columns(task: str) -> list[str]:
    """The dataset columns a task's predictions carry for its metrics: ``PER_ROW_METRIC_COLUMNS``' sources and its
    free-text label columns' own texts (``reference_texts``: a row whose text the vocabulary lacks counts as wrong,
    not as absent)."""
    from multimed_hf.tasks import get_task

    texts = [label.name for label in get_task(task).labels if label.kind == "text"]
    return list(dict.fromkeys([*PER_ROW_METRIC_COLUMNS.values(), *texts]))


def _metric_options(task: str, column: str) -> set[str]:
    """The options ``compute_output_metrics`` accepts for one label column."""
    from multimed_hf.metrics import get_metric
    from multimed_hf.metrics.output_metrics import applicable_metrics, get_metric_kind
    from multimed_hf.tasks import get_task

    accepted = set(get_metric_kind(get_task(task).label(column).kind).options)
    for name in applicable_metrics(task, column):
        params = inspect.signature(get_metric(name)).parameters.values()
        accepted |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return accepted


@dataclass
class TaskPredictions:
    """One task's predictions over a dataset, one row per dataset row (each counted once), in dataset order.

    Attributes:
        task: the task name.
        sample_ids: the rows' ``sample_id``.
        outputs: label column -> the model's output in model units (``MultiMedOutput.logits``: class / multilabel
            logits ``[N, K]``, regression values in the label's units ``[N]``, coordinates ``[N, L, 3]`` padded to
            the longest chain).
        references: label column -> the labels encoded as the processor does (-100 / NaN = absent); empty when the
            dataset has no labels.
        masks: column -> which entries count (``coords_mask`` ``[N, L]`` for coordinates).
        head_spec: the model's head spec of the task (``config.heads[task]``).
        split: the split the rows came from, where known.
        row_indices: each row's index in the dataset.
        loss: the model's mean loss over the rows (with labels), else None.
        metadata: dataset column -> per-row values that metrics read (``answer_type``, ``context``).
        residues: coordinates column -> ``[N, L]`` bool, the residues of each row's reference structure (those it
            observed: ``whole_chains``); the TM-score's L counts them, predicted or not (past the encoder's cut).
    """

    task: str
    sample_ids: list
    outputs: dict
    references: dict
    masks: dict
    head_spec: dict
    split: str | None = None
    row_indices: np.ndarray | None = None
    loss: float | None = None
    metadata: dict = field(default_factory=dict)
    residues: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def select(self, rows) -> "TaskPredictions":
        """These predictions restricted to positions ``rows`` (subgroups, held-out groups), every per-row field
        with them; no loss (it was the mean over every row)."""
        rows = np.asarray(rows, dtype=np.int64)
        take = lambda d: {k: np.asarray(v)[rows] for k, v in d.items()}  # noqa: E731
        return dataclasses.replace(
            self, sample_ids=[self.sample_ids[i] for i in rows], outputs=take(self.outputs),
            references=take(self.references), masks=take(self.masks), residues=take(self.residues),
            row_indices=None if self.row_indices is None else np.asarray(self.row_indices)[rows],
            metadata={k: [v[i] for i in rows] for k, v in self.metadata.items()}, loss=None)

    def labelled_columns(self) -> list[str]:
        """Label columns with at least one scored row."""
        return [c for c in self.references if self.scored_rows(c).any()]

    def scored_rows(self, column: str) -> np.ndarray:
        """Bool per row: the rows a column's metrics score (``scored_reference_rows``): those with a label (a
        structure: 3 observed residues or more), and for a free-text label also those whose text the vocabulary
        lacks (encoded absent; they count as wrong: ``TextMetrics``)."""
        from multimed_hf.metrics.output_metrics import scored_reference_rows

        return scored_reference_rows(self.task, column, self.references[column], mask=self.masks.get(column),
                                     reference_texts=self.metadata.get(column))

    def decoded(self) -> dict[str, list]:
        """Predictions in the labels' representation (class names, lists of names, units, L x 3 lists)."""
        from multimed_hf.modeling_multimed import decode_outputs

        known = {c: ~np.isnan(r) for c, r in self.references.items()
                 if self.is_multilabel(c) and r.dtype.kind == "f"}
        return decode_outputs(self.head_spec, self.outputs, label_masks=known or None)

    def scores(self) -> dict[str, np.ndarray]:
        """Column -> each row's probability of each name ``[N, K]``, in the head spec's ``names`` order (class:
        softmax; multilabel: sigmoid), for the columns whose outputs score names."""
        from multimed_hf.output_kinds import output_scores

        return output_scores(self.head_spec, self.outputs)

    def _column_metrics(self, column: str, rows: np.ndarray | None = None) -> dict[str, float]:
        from multimed_hf.metrics import compute_output_metrics

        rows = np.arange(len(self.sample_ids)) if rows is None else rows
        mask = self.masks.get(column)
        accepted = _metric_options(self.task, column)
        options = {}
        if "names" in accepted:  # the vocabulary (VQA's string metrics)
            options["names"] = next(o.get("names") for o in self.head_spec["outputs"] if o["name"] == column)
        if "class_names" in accepted:  # the names of the classes a warning names (where the head spec is known)
            options["class_names"] = next((o.get("names") for o in self.head_spec.get("outputs", ())
                                           if o["name"] == column), None)
        for option, source in PER_ROW_METRIC_COLUMNS.items():
            if option in accepted and source in self.metadata:
                options[option] = [self.metadata[source][i] for i in rows]
        if "reference_texts" in accepted and column in self.metadata:
            options["reference_texts"] = [self.metadata[column][i] for i in rows]
        if "residues" in accepted and column in self.residues:
            options["residues"] = np.asarray(self.residues[column])[rows]
        return compute_output_metrics(self.task, column, self.outputs[column][rows], self.references[column][rows],
                                      mask=None if mask is None else mask[rows], **options)

    def metrics(self) -> dict[str, dict[str, float]]:
        """column -> {metric: value} over the rows that have that column's label (registry metrics)."""
        results = {}
        for column in self.labelled_columns():
            results[column] = self._column_metrics(column, np.flatnonzero(self.scored_rows(column)))
        return results

    def bootstrap(self, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, dict[str, tuple]]:
        """column -> {metric: (low, high)}: percentile bootstrap interval over the labelled rows (resampled with
        replacement ``n`` times); a metric's warnings (e.g. a class absent from a resample) are raised by ``metrics()``
        only, not once per resample. Coordinates' metrics are means over chains: their rows are scored once and the
        per-row scores resampled."""
        if n < 1 or not 0 < alpha < 1:
            raise ValueError(f"bootstrap(n={n}, alpha={alpha}): expected n >= 1 and 0 < alpha < 1")
        rng = np.random.default_rng(seed)
        intervals = {}
        for column in self.labelled_columns():
            rows = np.flatnonzero(self.scored_rows(column))
            draws = rng.integers(0, len(rows), size=(n, len(rows)))
            per_row = self.head_kind(column) == "coords"
            if per_row:
                scores = [self._column_metrics(column, rows[i:i + 1]) for i in range(len(rows))]
                table = {m: np.array([s[m] for s in scores], dtype=float) for m in scores[0]}
                samples = {m: values[draws].mean(1) for m, values in table.items()}
            else:
                with warnings.catch_warnings():  # a resample's skipped class says nothing the point estimate did not
                    warnings.simplefilter("ignore", UserWarning)
                    runs = [self._column_metrics(column, rows[d]) for d in draws]
                samples = {m: np.array([r[m] for r in runs], dtype=float) for m in runs[0]}
            intervals[column] = {
                m: (float(np.nanpercentile(v, 100 * alpha / 2)), float(np.nanpercentile(v, 100 * (1 - alpha / 2))))
                if np.isfinite(v).any() else (math.nan, math.nan)
                for m, v in samples.items()
            }
        return intervals

    def head_kind(self, column: str) -> str | None:
        for out in self.head_spec.get("outputs", ()):
            if out["name"] == column:
                return out["kind"]
        return None

    def is_multilabel(self, column: str) -> bool:
        """Whether a column's output scores several names a row (a multilabel head, or a label-text head over a
        multilabel column): its top-1 and accuracy read only each row's known names."""
        return any(out["name"] == column and (out["kind"] == "multilabel" or bool(out.get("multilabel")))
                   for out in self.head_spec.get("outputs", ()))


def collect_batch(logits: Mapping, labels: Mapping | None, outputs: dict, references: dict, masks: dict) -> None:
    """Append one batch's model outputs and encoded labels (on the CPU, as numpy) to ``{column: [arrays]}`` lists:
    class indices stay integers, the rest float32; a coordinates label also gives its ``coords_mask``. What
    ``TaskPredictions`` is made of after ``stack_rows``."""
    import torch

    for column, value in logits.items():
        outputs.setdefault(column, []).append(value.float().cpu().numpy())
    labels = labels or {}
    for column, value in labels.items():
        if column == "coords_mask":
            continue
        value = value.cpu()
        references.setdefault(column, []).append(value.numpy() if value.dtype == torch.long else value.float().numpy())
        if "coords_mask" in labels and value.ndim == 3:
            masks.setdefault(column, []).append(labels["coords_mask"].cpu().numpy())


def whole_chains(predictions: "TaskPredictions", dataset) -> int:
    """Score coordinates on each whole chain: a chain longer than the residue encoder's input was cut to it (the
    model predicts one position per residue token), and its references with it, so the residues past the cut went
    unscored and the TM-score's L shrank. Each coordinates column's references and mask become the dataset row's
    whole chain (its observed residues), the residues past the cut are masked out of the fit (they score 0 but count
    in L, as the TM-score defines it) and the outputs there are NaN (``<column>_prediction`` shows them
    unpredicted). L counts the residues of the reference structure: those it observed, as TMscore reads them from
    the deposited file; a residue the experiment did not resolve (unobserved, at either end or inside) is neither
    fitted nor counted (``residues``), so a prediction matching every observed residue scores 1.
    Returns the number of rows cut; modifies ``predictions`` in place."""
    from multimed_hf.data.label_kinds import RESIDUE_MASK_COLUMN
    from multimed_hf.training.loading import column_values

    cut = 0
    for column in [c for c in predictions.references if predictions.head_kind(c) == "coords"]:
        if column not in dataset.column_names or not len(predictions):
            continue
        extra = [RESIDUE_MASK_COLUMN] if RESIDUE_MASK_COLUMN in dataset.column_names else []
        values = column_values(dataset, [column, *extra])
        order = (predictions.row_indices if predictions.row_indices is not None
                 else np.arange(len(predictions)))
        chains = [None if values[column][i] is None else np.asarray(values[column][i], dtype=np.float32)
                  for i in order]
        outputs = predictions.outputs[column]
        kept_width = outputs.shape[1]  # the encoder's cut where a chain was cut (kept = min(L, cut) per row)
        width = max([kept_width, *(len(c) for c in chains if c is not None)])
        refs = np.zeros((len(chains), width, 3), dtype=np.float32)
        mask = np.zeros((len(chains), width), dtype=bool)
        residues = np.zeros((len(chains), width), dtype=bool)
        full = np.zeros((len(chains), width, 3), dtype=outputs.dtype)
        full[:, :kept_width] = outputs
        for row, (i, chain) in enumerate(zip(order, chains)):
            if chain is None:
                continue
            observed = np.isfinite(chain).all(axis=1)
            if extra and values[RESIDUE_MASK_COLUMN][i] is not None:
                observed &= np.asarray(values[RESIDUE_MASK_COLUMN][i]).astype(bool)
            refs[row, :len(chain)] = np.where(observed[:, None], chain, 0.0)
            residues[row, :len(chain)] = observed
            kept = min(len(chain), kept_width)
            mask[row, :kept] = observed[:kept]
            if len(chain) > kept_width:
                full[row, kept_width:len(chain)] = np.nan
                cut += 1
        predictions.outputs[column], predictions.references[column] = full, refs
        predictions.masks[column], predictions.residues[column] = mask, residues
    return cut


def warn_cut_chains(task: str, split: str | None, cut: int) -> None:
    """One warning line where ``whole_chains`` found chains longer than the residue encoder reads."""
    if cut:
        logger.warning("%s%s: %d chain(s) longer than the residue encoder's input; the residues past it are scored "
                       "as unpredicted (0 in the TM-score and GDT-TS, counted in L) and are NaN in the predictions "
                       "(a longer max_length in the processor reads more of them)", task,
                       f" ({split})" if split else "", cut)


def stack_rows(parts: Sequence[np.ndarray], fill_float: float = math.nan) -> np.ndarray:
    """Batches' arrays along rows, dimension 1 padded to the longest (coordinates of chains of different lengths):
    with ``fill_float`` (floats), -100 (integers) or False (masks)."""
    if not parts:
        return np.zeros((0,))
    if parts[0].ndim < 2 or len({p.shape[1] for p in parts}) == 1:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    padded = []
    for p in parts:
        fill = False if p.dtype == bool else IGNORE_INDEX if p.dtype.kind in "iu" else fill_float
        block = np.full((p.shape[0], width, *p.shape[2:]), fill, dtype=p.dtype)
        block[:, :p.shape[1]] = p
        padded.append(block)
    return np.concatenate(padded)
