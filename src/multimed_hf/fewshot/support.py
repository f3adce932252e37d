"""Few-shot support sets: whole groups (patients) drawn per seed from a task's training split until every class has k
examples (regression: k rows in every context, e.g. k genes per cell type; bone age: k rows in every age bin, its
class column; without contexts or classes, k rows), with the real
counts reported."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from multimed_hf.tasks import get_task

__all__ = ["SupportError", "SupportSet", "sample_support", "check_disjoint", "read_columns", "class_keys",
           "example_counts", "GROUP_COLUMNS", "CONTEXT_COLUMN"]

#: Columns tried, in order, as the grouping key (the built data's ``group_id`` first; ``sample_id``: each row alone).
GROUP_COLUMNS = ("group_id", "patient_id", "donor", "subject", "sample_id")
#: The column naming a regression row's context (expression: the cell type / sample profile).
CONTEXT_COLUMN = "context"


class SupportError(ValueError):
    """A support set that cannot be drawn (k < 1, no label column, a support row in the evaluation split)."""


@dataclass
class SupportSet:
    """The rows of a task's training split that a k-shot adapter trains on.

    ``counts``: class -> labelled examples in the set (classification; ``"<column>=<class>"`` where the task has
    several class columns), context -> rows (regression with a ``context`` column: expression's genes per cell
    type), or ``{"rows": n}`` (regression without); ``short``: the classes (or contexts) that stayed under ``k``
    after every training group was drawn (the real count, never padded)."""

    task: str
    k: int
    seed: int
    indices: list[int]
    sample_ids: list[str]
    groups: list[str]
    group_column: str
    counts: dict[str, int]
    short: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, train):
        """The support rows of ``train`` (the split it was drawn from) as their own dataset (no indices mapping)."""
        return train.select(self.indices).flatten_indices()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("indices")
        out["num_rows"] = len(self.indices)
        return out


def read_columns(dataset, columns: Sequence[str]) -> dict[str, list]:
    """Columns of ``dataset`` as Python lists, honouring a ``select``/``filter`` indices mapping (no image decoded)."""
    return dict(dataset.select_columns(list(columns))[:]) if len(dataset) else {c: [] for c in columns}


def _group_column(dataset, group_column: str | None) -> str:
    if group_column is not None:
        if group_column not in dataset.column_names:
            raise SupportError(f"group_column {group_column!r} is not a column of the training split "
                               f"(columns: {dataset.column_names})")
        return group_column
    return next(c for c in GROUP_COLUMNS if c in dataset.column_names or c == "sample_id")


def _names_of(dataset, column: str):
    feature = dataset.features[column]
    inner = getattr(feature, "feature", feature)
    return inner.int2str if hasattr(inner, "int2str") else None


def class_keys(task: str, dataset) -> dict[str, list[str]]:
    """Class label column -> its class names (the registry's; a free-text label: the values the split holds)."""
    spec = get_task(task)
    out = {}
    for label in spec.labels:
        if label.kind in ("class", "multilabel"):
            out[label.name] = list(label.names)
        elif label.kind == "text":
            values = read_columns(dataset, [label.name])[label.name]
            out[label.name] = sorted({str(v) for v in values if v is not None})
    return out


def _row_classes(task: str, dataset) -> tuple[list[list[str]], list[str]]:
    """Each row's class keys (what it is an example of) and every key the task has."""
    columns = class_keys(task, dataset)
    several = len(columns) > 1
    values = read_columns(dataset, list(columns))
    per_row: list[list[str]] = [[] for _ in range(len(dataset))]
    every = [f"{c}={n}" if several else n for c, names in columns.items() for n in names]
    for column in columns:
        decode = _names_of(dataset, column)
        for i, value in enumerate(values[column]):
            items = value if isinstance(value, list) else [value]
            for item in items:
                if item is None or (isinstance(item, int) and item < 0):
                    continue
                name = decode(item) if decode is not None and isinstance(item, int) else str(item)
                per_row[i].append(f"{column}={name}" if several else name)
    return per_row, every


def _row_keys(task: str, dataset) -> tuple[list[list[str]], list[str]] | None:
    """What ``sample_support`` counts towards k, per row, and every key: the classes (``_row_classes``), a regression
    row's context (``CONTEXT_COLUMN``); None for a task counted in rows alone (no classes, no contexts)."""
    if class_keys(task, dataset):
        return _row_classes(task, dataset)
    if CONTEXT_COLUMN not in dataset.column_names:
        return None
    # k rows in every context, as k examples of every class: before, k counted contexts, and the first gene drawn
    # (one row in each of the 6 contexts) made every k's set alike
    contexts = read_columns(dataset, [CONTEXT_COLUMN])[CONTEXT_COLUMN]
    per_row = [[str(c)] if c is not None else [] for c in contexts]
    return per_row, sorted({c for row in per_row for c in row})


def example_counts(dataset, task: str) -> dict[str, int]:
    """The examples of each key ``dataset`` holds as ``sample_support`` counts them towards k (class, context, or
    ``rows``): what a support set drawn from every row could reach."""
    keys = _row_keys(task, dataset)
    if keys is None:
        return {"rows": len(dataset)}
    per_row, every = keys
    counts = Counter({c: 0 for c in every})
    counts.update(c for row in per_row for c in row)
    return {c: int(n) for c, n in counts.items()}


#: How a row without a value in the grouping column is keyed: by the built ``group_id`` (else its sample id), so rows
#: lacking a patient id are not one "patient" named None (drawn whole, and "shared" with every split's None rows).
_NO_GROUP = "(no {column}) {key}"


def _groups(dataset, column: str) -> list[str]:
    """Each row's group key in ``column``; a row without a value keyed by its own ``group_id`` / ``sample_id``."""
    values = read_columns(dataset, [column])[column]
    if all(v is not None for v in values):
        return [str(v) for v in values]
    fallback = next((c for c in ("group_id", "sample_id") if c != column and c in dataset.column_names), None)
    keys = read_columns(dataset, [fallback])[fallback] if fallback else list(range(len(dataset)))
    return [str(v) if v is not None else _NO_GROUP.format(column=column, key=keys[i]) for i, v in enumerate(values)]


def sample_support(train, task: str, k: int, seed: int, *, group_column: str | None = None) -> SupportSet:
    """Draw a k-shot support set from ``train`` (a task's training split; never pass an evaluation split).

    Groups (``group_column``, default the first of ``GROUP_COLUMNS`` the split has) are shuffled with ``seed``
    (``numpy.random.default_rng``) and taken whole, in that order, when they hold an example of a class still under
    ``k``; drawing stops once every class has ``k`` (a group that adds only to full classes is passed over, so the
    set stays near ``k`` per class; the real counts, often above ``k``, are reported). A task without a class label
    (regression) counts rows per context (``context`` column: a gene's row in each cell type, so k genes per
    context) as it counts examples per class, or rows where it has no context: groups are drawn until ``k`` are
    covered. Classes the split cannot fill are reported in ``short`` with the count reached.
    """
    if not isinstance(k, int) or k < 1:
        raise SupportError(f"k = {k!r}: a support set needs k >= 1 (k = 0 is zero-shot: no support set)")
    if len(train) == 0:
        raise SupportError(f"task {task!r}: the training split is empty")
    column = _group_column(train, group_column)
    groups = _groups(train, column)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = [sorted(members)[i] for i in np.random.default_rng(seed).permutation(len(members))]
    keys = _row_keys(task, train)
    chosen: list[str] = []
    if keys is None:  # k rows in all (no task registered so today)
        for g in order:
            if sum(len(members[c]) for c in chosen) >= k:
                break
            chosen.append(g)
        rows = sorted(i for g in chosen for i in members[g])
        counts = {"rows": len(rows)}
        short = {"rows": len(rows)} if len(rows) < k else {}
    else:
        per_row, every = keys
        have: Counter = Counter({c: 0 for c in every})
        for g in order:
            if all(have[c] >= k for c in every):
                break
            gains = Counter(c for i in members[g] for c in per_row[i])
            if any(have[c] < k for c in gains):
                chosen.append(g)
                have.update(gains)
        rows = sorted(i for g in chosen for i in members[g])
        counts = {c: int(have[c]) for c in every}
        short = {c: n for c, n in counts.items() if n < k}
    ids = read_columns(train, ["sample_id"])["sample_id"] if "sample_id" in train.column_names else [
        str(i) for i in range(len(train))]
    return SupportSet(task=task, k=k, seed=seed, indices=rows, sample_ids=[str(ids[i]) for i in rows],
                      groups=chosen, group_column=column, counts=counts, short=short)


def check_disjoint(support: SupportSet, evaluation, *, split: str = "test") -> None:
    """Raise ``SupportError`` when a support row's sample id or group also occurs in ``evaluation`` (a build whose
    splits leak, or a support set drawn from the wrong split)."""
    columns = ["sample_id"] + ([support.group_column] if support.group_column in evaluation.column_names else [])
    values = read_columns(evaluation, columns)
    shared_ids = set(support.sample_ids) & {str(v) for v in values["sample_id"]}
    shared_groups = (set(support.groups) & {str(v) for v in values[support.group_column]}
                     if support.group_column in values and support.group_column != "sample_id" else set())
    if shared_ids or shared_groups:
        raise SupportError(f"task {support.task!r}: the support set shares sample ids {sorted(shared_ids)[:5]} and "
                           f"groups ({support.group_column}) {sorted(shared_groups)[:5]} with the {split} split; a "
                           f"support set comes from the training split and groups never span splits")
