"""Regression metrics: Pearson and Spearman per gene or per sample (one-shot and streaming), and MAE."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import mean_absolute_error

from multimed_hf.metrics._validation import as_float_array, check_same_length, to_numpy

__all__ = [
    "PearsonAccumulator",
    "correlations",
    "mae",
    "pearson",
    "spearman",
]

AXES = ("gene", "sample")
METHODS = ("pearson", "spearman")


def _check_axis(axis: str) -> str:
    if axis not in AXES:
        raise ValueError(
            f"axis: got {axis!r}; expected 'gene' (one r per gene, over samples) or 'sample' (one r per sample, "
            "over genes)"
        )
    return axis


def _pair(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    preds = as_float_array("predictions", predictions, ndim=(1, 2))
    refs = as_float_array("references", references, ndim=(1, 2))
    if preds.shape != refs.shape:
        raise ValueError(
            f"predictions and references differ in shape: {preds.shape} vs {refs.shape}; expected the same "
            "(samples,) or (samples, genes)"
        )
    return preds, refs


def _unit_scale(rows: np.ndarray) -> np.ndarray:
    """Each row whose sums of squares, or their product, could overflow or underflow (largest magnitude past 1e60 or
    under 1e-60: the product of two rows' sums of squares grows as the fourth power, n**2 * top**4) divided by its
    largest magnitude; other rows as they are (their r bit for bit as before)."""
    top = np.abs(rows).max(axis=1, keepdims=True)
    extreme = (top > 1e60) | ((top < 1e-60) & (top > 0))
    return rows / np.where(extreme, top, 1.0) if extreme.any() else rows


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``x`` with the same row of ``y``; NaN where either row is constant. A centred row of
    extreme magnitude is scaled first (r does not change): squares of values past ~1e154 overflowed (r read 0) and of
    values under ~1e-162 underflowed (read constant)."""
    xc = _unit_scale(x - x.mean(axis=1, keepdims=True))
    yc = _unit_scale(y - y.mean(axis=1, keepdims=True))
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0) | (den == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / den
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def correlations(predictions, references, *, axis="gene", method="pearson", groups=None) -> np.ndarray:
    """One correlation per gene or per sample (NaN where one side is constant, or a group has one member).

    Inputs are (samples, genes) arrays: ``axis="gene"`` correlates each column over the samples,
    ``axis="sample"`` each row over the genes. A 1-D pair gives one correlation, or with ``groups`` (one key per
    element, e.g. the context of each (gene, context) row) one correlation within each group, in sorted key order.
    ``method="spearman"`` correlates ranks (ties get their average rank).
    """
    _check_axis(axis)
    if method not in METHODS:
        raise ValueError(f"method: got {method!r}; expected one of {METHODS}")
    preds, refs = _pair(predictions, references)
    if groups is not None:
        if preds.ndim != 1:
            raise ValueError(f"groups: given with {preds.ndim}-D inputs; groups split 1-D inputs (one key per element)")
        keys = to_numpy(groups, "groups")
        if keys.ndim != 1:
            raise ValueError(f"groups: expected a 1-D sequence of keys; got shape {keys.shape}")
        check_same_length(predictions=preds, groups=keys)
        missing = [i for i, key in enumerate(keys.tolist()) if key is None or key != key]  # None or NaN
        if missing:
            raise ValueError(f"groups: {len(missing)} key(s) missing (None or NaN; first at position {missing[0]}); "
                             "every element needs its group, e.g. its context")
        _, inverse = np.unique(keys, return_inverse=True)
        rows = [(preds[inverse == g], refs[inverse == g]) for g in range(inverse.max() + 1)]
        return np.array([_correlate(p[None], r[None], method)[0] if len(p) > 1 else np.nan for p, r in rows])
    shape = preds.shape
    if preds.ndim == 1:
        preds, refs = preds[None], refs[None]
    elif axis == "gene":
        preds, refs = preds.T, refs.T
    if preds.shape[1] < 2:
        raise ValueError(
            f"predictions: a correlation needs at least 2 values to correlate (axis={axis!r}); got shape {shape}"
        )
    return _correlate(preds, refs, method)


def _correlate(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    if method == "spearman":
        x, y = rankdata(x, axis=1), rankdata(y, axis=1)
    return _rowwise_pearson(x, y)


def _mean(values: np.ndarray, what: str) -> float:
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        warnings.warn(
            f"{what}: every correlation is undefined (constant predictions or references); returning NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(defined.mean())


def pearson(predictions, references, *, axis="gene", groups=None) -> float:
    """Mean Pearson r over genes (``axis="gene"``) or samples (``axis="sample"``); undefined ones are left out.

    See :func:`correlations` for the layouts. 1-D inputs give a single r (or, with ``groups``, the mean over groups).
    """
    return _mean(correlations(predictions, references, axis=axis, groups=groups), "pearson")


def spearman(predictions, references, *, axis="gene", groups=None) -> float:
    """Mean Spearman rho over genes or samples, as :func:`pearson` on ranks."""
    return _mean(correlations(predictions, references, axis=axis, method="spearman", groups=groups), "spearman")


def mae(predictions, references) -> float:
    """Mean absolute error (e.g. bone age in months), over every element."""
    preds, refs = _pair(predictions, references)
    return float(mean_absolute_error(refs.reshape(len(refs), -1), preds.reshape(len(preds), -1)))


class PearsonAccumulator:
    """Streaming Pearson r for training loops: ``update`` batch by batch, then ``compute``.

    ``axis="gene"`` keeps per-gene sufficient statistics (count, means, co-moments, merged with Chan's update) so the
    result equals one-shot :func:`pearson` on the concatenated batches; ``axis="sample"`` keeps each sample's r.
    Batches are (samples, genes) arrays or tensors; a 1-D batch is one gene. ``merge`` combines accumulators
    (e.g. across processes).
    """

    def __init__(self, axis: str = "gene"):
        self.axis = _check_axis(axis)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.count = 0
        self._genes = None
        self._stats = None  # mean_x, mean_y, m2_x, m2_y, c_xy, min_x, max_x, min_y, max_y (each per gene)
        self._sample_r: list[np.ndarray] = []

    def update(self, predictions, references) -> None:
        """Add one batch."""
        preds, refs = _pair(predictions, references)
        if preds.ndim == 1:
            preds, refs = preds[:, None], refs[:, None]
        if self._genes is not None and preds.shape[1] != self._genes:
            raise ValueError(
                f"predictions: this batch has {preds.shape[1]} genes; earlier batches had {self._genes}"
            )
        self._genes = preds.shape[1]
        if self.axis == "sample":
            if self._genes < 2:
                raise ValueError(
                    f"predictions: axis='sample' needs at least 2 genes per sample; got shape {preds.shape}"
                )
            self._sample_r.append(_rowwise_pearson(preds, refs))
            self.count += len(preds)
            return
        n = len(preds)
        mx, my = preds.mean(axis=0), refs.mean(axis=0)
        dx, dy = preds - mx, refs - my
        batch = [mx, my, (dx * dx).sum(0), (dy * dy).sum(0), (dx * dy).sum(0),
                 preds.min(0), preds.max(0), refs.min(0), refs.max(0)]
        self._combine(n, batch)

    def _combine(self, n: int, batch: list) -> None:
        if self._stats is None:
            self.count, self._stats = n, batch
            return
        na, (mx, my, m2x, m2y, cxy, lox, hix, loy, hiy) = self.count, self._stats
        total = na + n
        ddx, ddy = batch[0] - mx, batch[1] - my
        w = na * n / total
        self._stats = [
            mx + ddx * n / total,
            my + ddy * n / total,
            m2x + batch[2] + ddx * ddx * w,
            m2y + batch[3] + ddy * ddy * w,
            cxy + batch[4] + ddx * ddy * w,
            np.minimum(lox, batch[5]), np.maximum(hix, batch[6]),
            np.minimum(loy, batch[7]), np.maximum(hiy, batch[8]),
        ]
        self.count = total

    def merge(self, other: PearsonAccumulator) -> None:
        """Add everything ``other`` has seen (same axis and gene count)."""
        if not isinstance(other, PearsonAccumulator) or other.axis != self.axis:
            raise TypeError(f"other: expected a PearsonAccumulator with axis={self.axis!r}; got {other!r}")
        if other.count == 0:
            return
        if self._genes is not None and other._genes != self._genes:
            raise ValueError(f"other: has {other._genes} genes; this accumulator has {self._genes}")
        self._genes = other._genes
        if self.axis == "sample":
            self._sample_r.extend(other._sample_r)
            self.count += other.count
        else:
            self._combine(other.count, list(other._stats))

    def correlations(self) -> np.ndarray:
        """Pearson r per gene (or per sample) so far; NaN where undefined."""
        if self.count == 0:
            raise ValueError("predictions: no batch was added; call update() before compute()")
        if self.axis == "sample":
            return np.concatenate(self._sample_r)
        if self.count < 2:
            raise ValueError(f"predictions: per-gene correlation needs at least 2 samples; got {self.count}")
        _, _, m2x, m2y, cxy, lox, hix, loy, hiy = self._stats
        den = np.sqrt(m2x) * np.sqrt(m2y)  # not sqrt(m2x * m2y): the product overflows past ~1e77 per value
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.clip(cxy / den, -1.0, 1.0)
        return np.where((lox == hix) | (loy == hiy) | (den == 0), np.nan, r)

    def compute(self) -> float:
        """Mean Pearson r over genes (or samples), as :func:`pearson` gives on all the batches at once."""
        return _mean(self.correlations(), "pearson")

    def __repr__(self) -> str:
        return f"PearsonAccumulator(axis={self.axis!r}, count={self.count}, genes={self._genes})"
