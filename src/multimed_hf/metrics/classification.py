"""Classification metrics (accuracy, balanced accuracy, macro F1, Cohen's kappa, AUROC) with absent-label masking."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from multimed_hf.metrics._validation import (
    as_float_array,
    as_labels,
    check_same_length,
    drop_ignored,
    to_numpy,
)

__all__ = [
    "accuracy",
    "auroc_per_class",
    "balanced_accuracy",
    "cohen_kappa",
    "macro_auroc",
    "macro_f1",
    "quadratic_kappa",
]

_KAPPA_WEIGHTS = (None, "linear", "quadratic")


def _class_predictions(predictions) -> np.ndarray:
    """Predicted labels: a 1-D array of labels as given, or the argmax of a 2-D array of scores (samples x classes)."""
    if to_numpy(predictions, "predictions").ndim == 2:
        return np.argmax(as_float_array("predictions", predictions, ndim=(2,)), axis=1)
    labels = as_labels("predictions", predictions)
    if labels.dtype == object and any(x is None for x in labels):
        raise ValueError(
            "predictions: holds None or NaN; expected a label for every sample (absent labels go in references)"
        )
    return labels


def _prepare(predictions, references, ignore_index) -> tuple[np.ndarray, np.ndarray]:
    if to_numpy(references, "references").ndim == 2:
        raise ValueError(
            "references: got a 2-D (multi-label) array; this metric takes one class label per sample "
            "(accuracy and macro_auroc take multi-label references)"
        )
    refs = as_labels("references", references)
    preds = _class_predictions(predictions)
    check_same_length(predictions=preds, references=refs)
    preds, refs = drop_ignored(preds, refs, ignore_index)
    scores = to_numpy(predictions, "predictions")
    if scores.ndim == 2:  # the argmax is a column index: a reference must be one too, or it could never match
        _check_class_indices(refs, scores.shape[1])
    return preds, refs


def _check_class_indices(refs: np.ndarray, n_classes: int) -> None:
    """``references`` against class scores of ``n_classes`` columns: integer indices in 0..n_classes - 1."""
    if len(refs) and not all(isinstance(r, (numbers.Integral, np.integer)) for r in refs.tolist()):
        raise TypeError(f"references: class scores need integer class indices; got {refs.dtype} labels")
    if len(refs) and (min(refs) < 0 or max(refs) >= n_classes):
        raise ValueError(
            f"references: labels must lie in 0..{n_classes - 1} for scores of {n_classes} classes; "
            f"got {min(refs)}..{max(refs)}"
        )


def _multilabel(predictions, references, ignore_index) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 references (samples x labels), unknown references (NaN, ``ignore_index``) as NaN."""
    refs = as_float_array("references", references, ndim=(2,), allow_nan=True).copy()
    if ignore_index is not None:
        refs[refs == ignore_index] = np.nan
    scores = as_float_array("predictions", predictions, ndim=(2,), allow_nan=True)
    if scores.shape != refs.shape:
        raise ValueError(
            f"predictions and references differ in shape: {scores.shape} vs {refs.shape}; expected one score per "
            "sample and label"
        )
    # a score may be NaN where the reference is unknown (as a predictions file's ``<column>_scores`` holds it for the
    # names a row's source does not define): never read; where the reference is known it must be a number
    missing = np.isnan(scores) & ~np.isnan(refs)
    if missing.any():
        row, label = (int(i[0]) for i in np.nonzero(missing))
        raise ValueError(f"predictions: {int(missing.sum())} score(s) are NaN where the reference is known, the first "
                         f"at index ({row}, {label}); expected finite numbers (NaN only for unknown references)")
    known = refs[~np.isnan(refs)]
    if known.size == 0:
        raise ValueError("references: every label is unknown (NaN or ignore_index); expected some known labels")
    if not np.isin(known, (0.0, 1.0)).all():
        bad = known[~np.isin(known, (0.0, 1.0))][0]
        raise ValueError(f"references: multi-label references must be 0, 1 or unknown (NaN); got {bad}")
    return scores, refs


def accuracy(predictions, references, *, ignore_index=-100) -> float:
    """Fraction of samples whose predicted class is the reference class.

    ``predictions`` are labels (N,) or scores (N, C), of which the argmax is taken. References equal to
    ``ignore_index``, ``None`` or NaN are absent and left out. Multi-label references (N, C) of 0/1 with NaN for
    unknown give top-1 accuracy: the top-scoring known label must be a positive (rows with no known positive are
    left out).
    """
    if to_numpy(references, "references").ndim == 2:
        scores, refs = _multilabel(predictions, references, ignore_index)
        rows = np.nansum(refs, axis=1) > 0
        if not rows.any():
            raise ValueError("references: no sample has a known positive label; top-1 accuracy needs at least one")
        masked = np.where(np.isnan(refs), -np.inf, scores)[rows]
        top = np.argmax(masked, axis=1)
        return float(np.mean(refs[rows][np.arange(len(top)), top] == 1.0))
    preds, refs = _prepare(predictions, references, ignore_index)
    return float(accuracy_score(refs, preds))


def balanced_accuracy(predictions, references, *, ignore_index=-100) -> float:
    """Mean per-class recall over the classes present in the references (scikit-learn's definition)."""
    preds, refs = _prepare(predictions, references, ignore_index)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(refs, preds))


def macro_f1(predictions, references, *, labels=None, ignore_index=-100) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: every class seen in either argument)."""
    preds, refs = _prepare(predictions, references, ignore_index)
    return float(f1_score(refs, preds, labels=labels, average="macro", zero_division=0.0))


def cohen_kappa(predictions, references, *, weights=None, labels=None, ignore_index=-100) -> float:
    """Cohen's kappa; ``weights="quadratic"`` (or ``"linear"``) weighs disagreements by their distance.

    Weighted kappa needs an order: integer labels are taken as the grades ``min..max`` (so an unseen grade
    still counts in the distances), or pass ``labels`` in order.
    """
    if weights not in _KAPPA_WEIGHTS:
        raise ValueError(f"weights: got {weights!r}; expected one of {_KAPPA_WEIGHTS}")
    preds, refs = _prepare(predictions, references, ignore_index)
    if weights is not None and labels is None:
        both = np.concatenate([preds, refs])
        if both.dtype.kind not in "iub":
            raise ValueError(
                f"labels: weights={weights!r} needs ordered labels; got {both.dtype} labels and no `labels` order. "
                "Pass integer grades or labels=[...] in order"
            )
        labels = np.arange(both.min(), both.max() + 1)
    return float(cohen_kappa_score(refs, preds, labels=labels, weights=weights))


def quadratic_kappa(predictions, references, *, labels=None, ignore_index=-100) -> float:
    """Quadratic weighted kappa (the DR-grading standard): ``cohen_kappa`` with ``weights="quadratic"``."""
    return cohen_kappa(predictions, references, weights="quadratic", labels=labels, ignore_index=ignore_index)


def _probability_rows(scores: np.ndarray) -> bool:
    """Every row a probability distribution: values in [0, 1] summing to 1, within what rounding to two decimals or
    half precision leaves (0.005 a class); values in [0, 1] whose rows do not sum to 1 (per-class sigmoid scores)
    are read as logits, with a warning."""
    if not ((scores >= 0) & (scores <= 1)).all():
        return False
    tolerance = 1e-6 + 0.005 * scores.shape[1]
    if np.abs(scores.sum(axis=1) - 1.0).max() <= tolerance:
        return True
    warnings.warn(f"auroc: scores in [0, 1] whose rows do not sum to 1 (sums {scores.sum(axis=1).min():.4g} to "
                  f"{scores.sum(axis=1).max():.4g}) are read as logits and softmaxed; give probabilities (rows "
                  f"summing to 1) or logits", UserWarning)
    return False


def auroc_per_class(predictions, references, *, ignore_index=-100) -> np.ndarray:
    """AUROC of each class (one-vs-rest) or label (multi-label); NaN where it is undefined (one class present).

    - binary: scores (N,) and references (N,) of 0/1;
    - multi-class: scores (N, C) and labels (N,) in ``0..C-1``: each class against the rest;
    - multi-label: scores (N, C) and references (N, C) of 0/1, NaN (or ``ignore_index``) for unknown, which are
      left out per label (TorchXRayVision's convention).
    Binary and multi-label scores may be logits or probabilities: only their order within a column matters.
    Multi-class scores are compared across samples per class, which takes probabilities (scikit-learn's
    ``multi_class="ovr"`` requires them): rows that are not (a value outside [0, 1], or not summing to 1 within
    rounding: 0.005 a class) are read as logits and turned into probabilities with a softmax.
    """
    if to_numpy(references, "references").ndim == 2:
        scores, refs = _multilabel(predictions, references, ignore_index)
        columns = [(~np.isnan(refs[:, c]), refs[:, c], scores[:, c]) for c in range(refs.shape[1])]
    else:
        refs = as_labels("references", references)
        scores = as_float_array("predictions", predictions, ndim=(1, 2))
        check_same_length(predictions=scores, references=refs)
        scores, refs = drop_ignored(scores, refs, ignore_index)
        if refs.dtype.kind not in "iub":
            raise TypeError(f"references: AUROC needs integer class indices; got {refs.dtype} labels")
        n_classes = 2 if scores.ndim == 1 else scores.shape[1]
        if refs.min() < 0 or refs.max() >= n_classes:
            raise ValueError(
                f"references: labels must lie in 0..{n_classes - 1} for scores of {n_classes} classes; "
                f"got {refs.min()}..{refs.max()}"
            )
        if scores.ndim == 1:
            columns = [(np.ones(len(refs), bool), refs == 1, scores)]
        else:
            if not _probability_rows(scores):
                scores = softmax(scores, axis=1)
            columns = [(np.ones(len(refs), bool), refs == c, scores[:, c]) for c in range(n_classes)]
    out = np.full(len(columns), np.nan)
    for c, (known, y, s) in enumerate(columns):
        y, s = np.asarray(y[known], dtype=float), s[known]
        if 0.0 < y.sum() < len(y):
            out[c] = roc_auc_score(y, s)
    return out


def macro_auroc(predictions, references, *, ignore_index=-100, class_names=None) -> float:
    """Mean AUROC over the classes/labels where it is defined; skipped ones are named in a ``UserWarning`` (by
    ``class_names``, in index order, where given; else by index).

    Inputs as for :func:`auroc_per_class`. Raises ``ValueError`` when no class can be scored.
    """
    per_class = auroc_per_class(predictions, references, ignore_index=ignore_index)
    skipped = np.flatnonzero(np.isnan(per_class)).tolist()
    if len(skipped) == len(per_class):
        raise ValueError(
            "references: no class has both positive and negative known references; AUROC is undefined for all of them"
        )
    if skipped:
        if class_names is not None and len(class_names) == len(per_class):
            skipped = [str(class_names[i]) for i in skipped]
        warnings.warn(
            f"macro_auroc: skipped class(es) {skipped}: only one class among their known references",
            UserWarning,
            stacklevel=2,
        )
    return float(np.mean(per_class[~np.isnan(per_class)]))
