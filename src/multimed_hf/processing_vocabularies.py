"""Vocabularies of free-text labels (cell type names, VQA answers) for MultiMedProcessor: fitting and lookup."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from multimed_hf.data.label_kinds import get_label_kind
from multimed_hf.processing_rows import iter_rows
from multimed_hf.processors.base import ProcessorError
from multimed_hf.tasks import get_task

__all__ = ["VocabularyMixin", "count_text_labels"]


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, (list, tuple, set, frozenset)) else value == wanted


def count_text_labels(data: Any, columns: Sequence[str], where: Mapping[str, Any]) -> dict[str, Counter]:
    """Per column, how often each stripped, non-blank value occurs among the rows of ``data`` matching ``where``."""
    counts = {c: Counter() for c in columns}
    for row in iter_rows(data, [*columns, *where]):
        if not all(_matches(row.get(k), v) for k, v in where.items()):
            continue
        for c in columns:
            value = row.get(c)
            if value is not None and str(value).strip():
                counts[c][str(value).strip()] += 1
    return counts


class VocabularyMixin:
    """``vocabularies`` (label column -> class names) with a cached name -> index lookup and fitting from data."""

    vocabularies: dict[str, list[str]]

    def vocabulary_index(self, column: str, task: str | None = None) -> dict[str, int]:
        """``{name: index}`` of the vocabulary of free-text label ``column``; raises when it has none."""
        if column not in self.vocabularies:
            raise ProcessorError(f"free-text label {column!r} has no vocabulary; fit one on the training split: "
                                 f"processor.fit_vocabularies(train, {task!r})")
        cache = self.__dict__.setdefault("_vocab_index", {})
        names = self.vocabularies[column]
        cached = cache.get(column)
        if cached is None or cached[0] != names:  # a vocabulary replaced or edited in place: indexed again
            cached = cache[column] = (list(names), {v: i for i, v in enumerate(names)})
        return cached[1]

    def fit_vocabularies(self, data: Any, task: str, columns: Sequence[str] | None = None,
                         where: Mapping[str, Any] | None = None, min_count: int = 1,
                         max_size: int | None = None) -> dict[str, list[str]]:
        """Fit (and keep) the class names of a task's free-text labels from ``data`` (a ``datasets.Dataset``, read
        column-wise without decoding images, or an iterable of row dicts): most frequent first, ties by name.

        ``where`` keeps only rows whose columns equal the given values (a list/tuple/set: any of them), e.g. med_vqa's
        closed-answer vocabulary: ``fit_vocabularies(train, "med_vqa", where={"answer_type": "closed"})``. Values are
        stripped of surrounding blanks here and when labels are encoded. Pass the result to
        ``MultiMedConfig.from_tasks(vocabularies=...)`` so the heads have the same classes.
        """
        spec = get_task(task)
        text = [label.name for label in spec.labels if get_label_kind(label.kind).fitted_vocabulary]
        columns = text if columns is None else list(columns)
        wrong = [c for c in columns if c not in text]
        if wrong or not columns:
            raise ProcessorError(f"task {task!r}: {wrong or columns} are not free-text labels; its free-text labels "
                                 f"are {text}")
        where = dict(where or {})
        counts = count_text_labels(data, columns, where)
        fitted = {}
        for c in columns:
            names = sorted((n for n, k in counts[c].items() if k >= min_count), key=lambda n: (-counts[c][n], n))
            if not names:
                raise ProcessorError(f"task {task!r}: no value of {c!r} (with count >= {min_count}) to fit a "
                                     f"vocabulary from" + (f" among rows matching {where}" if where else ""))
            fitted[c] = names[:max_size] if max_size else names
            self.__dict__.setdefault("_vocab_index", {}).pop(c, None)
        self.vocabularies.update(fitted)
        return fitted
