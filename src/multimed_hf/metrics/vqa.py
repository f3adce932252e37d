"""Medical VQA metrics: closed-question accuracy, open-question exact match and token F1 (SQuAD normalisation)."""

from __future__ import annotations

import collections
import re
import string

import numpy as np

from multimed_hf.metrics._validation import as_strings, check_same_length

__all__ = [
    "ANSWER_TYPES",
    "exact_match",
    "normalize_answer",
    "token_f1",
    "vqa_accuracy",
    "vqa_scores",
]

ANSWER_TYPES = ("closed", "open")
#: The questions each metric scores where answer types are given.
SCORED_ANSWER_TYPE = {"vqa_accuracy": "closed", "exact_match": "open", "token_f1": "open"}
_ARTICLES = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD's normalisation)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _match(prediction: str, reference: str, normalize: bool) -> float:
    if normalize:
        return float(normalize_answer(prediction) == normalize_answer(reference))
    return float(prediction.strip() == reference.strip())


def _types(answer_types, n: int) -> list[str]:
    """``answer_types`` lower-cased and checked: one of "closed"/"open" per question."""
    raw = as_strings("answer_types", answer_types)
    if len(raw) != n:
        raise ValueError(
            f"predictions and answer_types differ in length: {n} vs {len(raw)}; expected one type per question"
        )
    types = [t.strip().lower() for t in raw]
    for i, t in enumerate(types):
        if t not in ANSWER_TYPES:
            raise ValueError(f"answer_types[{i}]: got {raw[i]!r}; expected 'closed' or 'open' (any case)")
    return types


def _select(predictions, references, answer_types, wanted: str):
    """Predictions and references (each a list of acceptable answers) of the questions of type ``wanted``."""
    preds = as_strings("predictions", predictions)
    refs = as_strings("references", references, nested=True)
    check_same_length(predictions=preds, references=refs)
    refs = [r if isinstance(r, list) else [r] for r in refs]
    if answer_types is None:
        return preds, refs
    chosen = [i for i, t in enumerate(_types(answer_types, len(preds))) if t == wanted]
    if not chosen:
        raise ValueError(f"answer_types: no question is {wanted!r}; expected at least one to score")
    return [preds[i] for i in chosen], [refs[i] for i in chosen]


def vqa_accuracy(predictions, references, answer_types=None, *, normalize=True) -> float:
    """Accuracy on closed questions: exact match with the reference (after :func:`normalize_answer` by default).

    With ``answer_types`` ("closed"/"open" per question) only closed questions count; without, every question.
    A reference may be a list of acceptable answers (the best match counts).
    """
    preds, refs = _select(predictions, references, answer_types, "closed")
    return float(np.mean([max(_match(p, r, normalize) for r in rs) for p, rs in zip(preds, refs)]))


def exact_match(predictions, references, answer_types=None) -> float:
    """Normalised exact match on open questions (every question when ``answer_types`` is None)."""
    preds, refs = _select(predictions, references, answer_types, "open")
    return float(np.mean([max(_match(p, r, True) for r in rs) for p, rs in zip(preds, refs)]))


def token_f1(predictions, references, answer_types=None) -> float:
    """Mean token-overlap F1 (SQuAD) on open questions (every question when ``answer_types`` is None)."""
    preds, refs = _select(predictions, references, answer_types, "open")
    return float(np.mean([max(_f1(p, r) for r in rs) for p, rs in zip(preds, refs)]))


def vqa_scores(predictions, references, answer_types) -> dict[str, float]:
    """Closed accuracy and open exact match / token F1 at once; a type with no question gives NaN."""
    types = set(_types(answer_types, len(as_strings("predictions", predictions))))
    out = {}
    for key, fn in (("vqa_accuracy", vqa_accuracy), ("exact_match", exact_match), ("token_f1", token_f1)):
        out[key] = fn(predictions, references, answer_types) if SCORED_ANSWER_TYPE[key] in types else float("nan")
    return out
