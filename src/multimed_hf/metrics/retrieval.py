"""Cross-modal retrieval metrics (image-caption pairs): recall@K from a similarity matrix."""

from __future__ import annotations

import numpy as np

from multimed_hf.metrics._validation import as_float_array, to_numpy

__all__ = ["recall_at_k", "recall_at_1", "recall_at_5", "retrieval_recalls"]


def recall_at_k(predictions, references=None, *, k: int = 1) -> float:
    """Fraction of queries whose true candidate ranks among the top ``k``.

    ``predictions``: similarity scores, queries x candidates (e.g. image embeddings @ caption embeddings.T for
    image-to-text retrieval; pass the transpose for text-to-image). ``references``: the index of each query's true
    candidate; None means query i's pair is candidate i (a batch of pairs). A query's rank is the number of other
    candidates scoring at least as high as its true one: ties count against it, so constant scores retrieve
    nothing (not everything).
    """
    scores = as_float_array("predictions", predictions, ndim=(2,))
    queries, candidates = scores.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: got {k!r}; expected a positive whole number of candidates")
    if references is None:
        if queries > candidates:
            raise ValueError(
                f"references: None pairs query i with candidate i, but predictions has {queries} queries and only "
                f"{candidates} candidates; pass the true candidate of each query"
            )
        truth = np.arange(queries)
    else:
        truth = to_numpy(references, "references")
        if truth.shape != (queries,) or not np.issubdtype(truth.dtype, np.integer):
            raise ValueError(
                f"references: expected {queries} candidate indices (one per query, whole numbers); got shape "
                f"{truth.shape}, dtype {truth.dtype}"
            )
        if truth.min() < 0 or truth.max() >= candidates:
            raise ValueError(f"references: indices must lie in [0, {candidates}); got {truth.min()}..{truth.max()}")
    true_scores = scores[np.arange(queries), truth]
    rank = (scores >= true_scores[:, None]).sum(axis=1) - 1  # the true candidate itself is not counted
    return float(np.mean(rank < k))


def recall_at_1(predictions, references=None) -> float:
    """Recall@1: the true candidate scores highest (see ``recall_at_k``)."""
    return recall_at_k(predictions, references, k=1)


def recall_at_5(predictions, references=None) -> float:
    """Recall@5: the true candidate is among the five best (see ``recall_at_k``)."""
    return recall_at_k(predictions, references, k=5)


def retrieval_recalls(similarity, ks=(1, 5, 10)) -> dict[str, float]:
    """Both directions for a batch of pairs (``similarity[i, j]``: image i against caption j, pair i on the
    diagonal): ``image_to_text_recall_at_K`` and ``text_to_image_recall_at_K`` for each K (capped at the batch)."""
    scores = as_float_array("similarity", similarity, ndim=(2,))
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"similarity: expected a square images x captions matrix of pairs; got shape {scores.shape}")
    out = {}
    for k in ks:
        out[f"image_to_text_recall_at_{k}"] = recall_at_k(scores, k=k)
        out[f"text_to_image_recall_at_{k}"] = recall_at_k(scores.T, k=k)
    return out
