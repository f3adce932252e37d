"""Split assignment: publisher test sets kept as published, leaks repaired, the rest by a hash of the group id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

from multimed_hf.tasks import TaskSpec

__all__ = ["SPLITS", "SplitDecision", "group_fraction", "assign_splits"]

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


def assign_splits(
    groups: Mapping[str, Sequence[int]], published: Sequence[str | None], task: TaskSpec
) -> dict[int, SplitDecision]:
    """Decide every sample's split from its group (``group id -> sample indices``) and publisher split.

    - A group with any published test file is test; its published training files are dropped (leak repair).
    - A group with published training files only: validation for ``task.validation_fraction`` of the groups.
    - A group with no publisher split: train / validation / test by ``task.split_fractions``.
    """
    decisions: dict[int, SplitDecision] = {}
    train_frac, val_frac, _ = task.split_fractions
    for group_id, members in groups.items():
        marks = {published[i] for i in members} - {None}
        unknown = marks - {"train", "test"}
        if unknown:
            raise ValueError(f"group {group_id!r}: publisher split(s) {sorted(unknown)}; expected 'train' or 'test'")
        fraction = group_fraction(group_id)
        if "test" in marks:
            for i in members:
                if published[i] == "train":
                    decisions[i] = SplitDecision(
                        None, "dropped",
                        f"leak repair: group {group_id} also has files in the publisher's test split",
                    )
                else:
                    decisions[i] = _KEPT["test"]
            continue
        if "train" in marks:
            split = "validation" if fraction < task.validation_fraction else "train"
        elif fraction < train_frac:
            split = "train"
        elif fraction < train_frac + val_frac:
            split = "validation"
        else:
            split = "test"
        kept = _KEPT[split]
        for i in members:
            decisions[i] = kept
    return decisions
