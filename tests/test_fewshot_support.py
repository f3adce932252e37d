"""Support sets: drawn from the training split only, whole groups, every class at k or reported short, per seed."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from multimed_hf.fewshot.support import SupportError, check_disjoint, sample_support
from multimed_hf.tasks import get_task

NAMES = list(get_task("brain_tumor").label("tumor").names)


def _rows(split: str, n_groups: int, rows_per_group, *, start: int = 0, skew: bool = False) -> Dataset:
    ids, groups, labels = [], [], []
    for g in range(start, start + n_groups):
        for r in range(rows_per_group(g)):
            ids.append(f"{split}-{g}-{r}")
            groups.append(f"patient{g}")
            labels.append(0 if skew and g % 5 else (g + r) % len(NAMES))
    features = Features({"sample_id": Value("string"), "group_id": Value("string"),
                         "tumor": ClassLabel(names=NAMES)})
    return Dataset.from_dict({"sample_id": ids, "group_id": groups, "tumor": labels}, features=features)


TRAIN = _rows("train", 40, lambda g: 1 + g % 3)
TEST = _rows("test", 10, lambda g: 2, start=100)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_every_class_reaches_k_with_whole_groups_from_the_training_split(k):
    support = sample_support(TRAIN, "brain_tumor", k, seed=0)
    rows = support.select(TRAIN)
    counts = Counter(NAMES[y] for y in rows["tumor"])
    assert support.counts == {n: counts[n] for n in NAMES} and min(counts.values()) >= k and not support.short
    by_group = Counter(TRAIN["group_id"])
    assert Counter(rows["group_id"]) == {g: by_group[g] for g in set(rows["group_id"])}  # groups whole
    assert set(support.groups) == set(rows["group_id"])
    check_disjoint(support, TEST)  # no shared id or group
    assert not set(support.sample_ids) & set(TEST["sample_id"])


def test_seeds_draw_different_sets_and_the_same_seed_the_same():
    a, b, again = (sample_support(TRAIN, "brain_tumor", 3, seed=s) for s in (0, 1, 0))
    assert a.sample_ids == again.sample_ids and a.sample_ids != b.sample_ids


def test_a_class_the_split_cannot_fill_is_reported_with_its_real_count():
    skewed = _rows("train", 20, lambda g: 1, skew=True)  # classes 1-3 only in groups 0, 5, 10, 15
    support = sample_support(skewed, "brain_tumor", 5, seed=0)
    assert support.short and all(n < 5 for n in support.short.values())
    assert support.counts["glioma"] >= 5 and len(support) == len(support.sample_ids)


def test_regression_counts_rows_per_context_and_a_leak_raises():
    features = Features({"sample_id": Value("string"), "group_id": Value("string"), "context": Value("string"),
                         "expression": Value("float32")})
    rows = Dataset.from_dict({"sample_id": [f"s{i}" for i in range(30)], "group_id": [f"gene{i // 3}" for i in
                                                                                        range(30)],
                              "context": [f"cell{i % 6}" for i in range(30)], "expression": [float(i) for i in
                                                                                            range(30)]},
                             features=features)
    # before: k counted contexts; the first gene (a row in each context) filled any k <= 6, every k alike
    support = sample_support(rows, "expression_prediction", 4, seed=2)
    counted = Counter(support.select(rows)["context"])
    assert support.counts == dict(counted) and min(counted.values()) >= 4 and not support.short
    assert len(support.groups) > len(sample_support(rows, "expression_prediction", 1, seed=2).groups)
    with pytest.raises(SupportError, match="shares sample ids"):
        check_disjoint(support, rows)  # an "evaluation split" that is the training split
    with pytest.raises(SupportError, match="k >= 1"):
        sample_support(rows, "expression_prediction", 0, seed=0)


def test_rows_without_a_value_in_the_group_column_are_not_one_group_named_none():
    # before: --group_column patient_id made every row lacking one a single patient "None", drawn whole and "shared"
    # with the test split's None rows: every run failed with a false leak error
    features = Features({"sample_id": Value("string"), "group_id": Value("string"), "patient_id": Value("string"),
                         "tumor": ClassLabel(names=NAMES)})

    def rows(split, n):
        return Dataset.from_dict({"sample_id": [f"{split}{i}" for i in range(n)],
                                  "group_id": [f"{split}g{i}" for i in range(n)],
                                  "patient_id": [f"{split}p{i}" if i % 2 else None for i in range(n)],
                                  "tumor": [i % len(NAMES) for i in range(n)]}, features=features)

    train, test = rows("tr", 24), rows("te", 8)
    support = sample_support(train, "brain_tumor", 1, seed=0, group_column="patient_id")
    assert "None" not in support.groups and len(support) < 12
    check_disjoint(support, test)
