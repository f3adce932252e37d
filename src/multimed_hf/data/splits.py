"""Split assignment: publisher test sets kept as published, leaks repaired, the rest by a hash of the group id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from multimed_hf.tasks import TaskSpec

__all__ = ["SPLITS", "SplitDecision", "group_fraction", "assign_splits", "check_marks", "decide_splits", "leak_reason"]

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitDecision:
    split: str | None
    status: str  # "kept" or "dropped"
    reason: str = ""


#: The decision that keeps a sample in each split, one (immutable) object shared by every sample it keeps there.
_KEPT = {split: SplitDecision(split, "kept") for split in SPLITS}


def group_fraction(group_id: str) -> float:
    """A stable number in [0, 1) from the group id: the same group always lands in the same split."""
    digest = hashlib.sha256(group_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def leak_reason(group_id: str) -> str:
    """Why a group's file published for training is dropped: the group also has files in the published test set."""
    return f"leak repair: group {group_id} also has files in the publisher's test split"


def check_marks(group_id: str, marks: set) -> None:
    """A group's publisher marks (``None`` left out) must be ``"train"`` or ``"test"``: a ValueError naming any
    other."""
    unknown = set(marks) - {"train", "test"}
    if unknown:
        raise ValueError(f"group {group_id!r}: publisher split(s) {sorted(unknown)}; expected 'train' or 'test'")


def decide_splits(fractions: np.ndarray, test: np.ndarray, train: np.ndarray, task: TaskSpec) -> np.ndarray:
    """The split rule for many groups at once: each group's split (an index into ``SPLITS``) from its
    ``group_fraction`` and whether it has files the publisher marked ``test`` / ``train``; a group with a test file
    is test (its files published for training are dropped, ``leak_reason``), one with training files only is
    validation for ``task.validation_fraction`` of such groups, else train; the rest are drawn by
    ``task.split_fractions``."""
    train_frac, val_frac, _ = task.split_fractions
    fractions = np.asarray(fractions, dtype=np.float64)
    drawn = np.where(fractions < train_frac, 0, np.where(fractions < train_frac + val_frac, 1, 2))
    published_train = np.where(fractions < task.validation_fraction, 1, 0)
    return np.where(np.asarray(test, dtype=bool), 2, np.where(np.asarray(train, dtype=bool), published_train, drawn))


def assign_splits(
    groups: Mapping[str, Sequence[int]], published: Sequence[str | None], task: TaskSpec
) -> dict[int, SplitDecision]:
    """Decide every sample's split from its group (``group id -> sample indices``) and publisher split
    (``decide_splits``, the rule).

    - A group with any published test file is test; its published training files are dropped (leak repair).
    - A group with published training files only: validation for ``task.validation_fraction`` of the groups.
    - A group with no publisher split: train / validation / test by ``task.split_fractions``.
    """
    marks = []
    for group_id, members in groups.items():
        group_marks = {published[i] for i in members} - {None}
        check_marks(group_id, group_marks)
        marks.append(group_marks)
    splits = decide_splits([group_fraction(g) for g in groups], ["test" in m for m in marks],
                           ["train" in m for m in marks], task)
    decisions: dict[int, SplitDecision] = {}
    for (group_id, members), group_marks, split in zip(groups.items(), marks, splits.tolist()):
        if "test" in group_marks:
            dropped = SplitDecision(None, "dropped", leak_reason(group_id))
            for i in members:
                decisions[i] = dropped if published[i] == "train" else _KEPT["test"]
            continue
        kept = _KEPT[SPLITS[split]]
        for i in members:
            decisions[i] = kept
    return decisions
