"""Grouping and split rules on hand-made cases."""

import numpy as np
import pytest

from multimed_hf.data.grouping import UnionFind, near_duplicate_pairs
from multimed_hf.data.splits import assign_splits, group_fraction
from multimed_hf.tasks import get_task


def test_near_duplicate_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=400, dtype=np.uint64)
    for i in range(0, 60, 3):  # plant pairs at distance 0..7
        flips = rng.choice(64, size=i % 8, replace=False)
        hashes[i + 1] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(dist <= 6, k=1))
    assert near_duplicate_pairs(hashes, 6) == sorted(zip(i.tolist(), j.tolist()))


def test_union_find_names_groups_by_smallest_key_transitively():
    uf = UnionFind()
    for key in "dcba":
        uf.add(key)
    uf.union("d", "c")
    uf.union("b", "c")
    assert uf.groups() == {"a": "a", "b": "b", "c": "b", "d": "b"}


def test_published_test_group_drops_its_training_files():
    task = get_task("diabetic_retinopathy")
    decisions = assign_splits({"p1": [0, 1, 2], "p2": [3]}, ["test", "train", None, "train"], task)
    assert decisions[0].split == "test" and decisions[2].split == "test"
    assert decisions[1].status == "dropped" and "leak repair" in decisions[1].reason
    assert decisions[3].split in ("train", "validation")


def test_hash_split_fractions_follow_the_registry():
    task = get_task("brain_tumor")
    groups = {f"g{i}": [i] for i in range(4000)}
    decisions = assign_splits(groups, [None] * 4000, task)
    counts = {s: sum(d.split == s for d in decisions.values()) / 4000 for s in ("train", "validation", "test")}
    assert counts == pytest.approx({"train": 0.70, "validation": 0.15, "test": 0.15}, abs=0.03)
    assert group_fraction("g1") == group_fraction("g1")


def test_unknown_publisher_split_is_refused():
    with pytest.raises(ValueError, match=r"publisher split\(s\) \['val'\]"):
        assign_splits({"g": [0]}, ["val"], get_task("brain_tumor"))
