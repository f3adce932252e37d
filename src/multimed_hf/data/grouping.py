"""Grouping samples that must share a split: union-find over patient keys, exact and near duplicates."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["UnionFind", "near_duplicate_pairs"]


class UnionFind:
    """Disjoint sets over hashable keys; ``groups()`` names each set by its smallest key."""

    def __init__(self):
        self._parent: dict = {}

    def add(self, key) -> None:
        self._parent.setdefault(key, key)

    def find(self, key):
        parent = self._parent
        root = key
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:
            parent[key], key = root, parent[key]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self._parent[rb] = ra  # the smaller key stays the root: stable names

    def groups(self) -> dict:
        """Every key mapped to its set's smallest key."""
        return {key: self.find(key) for key in self._parent}


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
    """Index pairs of 64-bit hashes within ``max_distance`` Hamming bits.

    By the pigeonhole principle two hashes that differ in at most ``d`` bits agree exactly on at least one of
    ``d + 1`` disjoint bit bands, so only hashes sharing a band value are compared.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n_bands = max_distance + 1
    edges = np.linspace(0, 64, n_bands + 1).astype(int)
    pairs: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        width = int(hi - lo)
        if width == 0:
            continue
        band = (hashes >> np.uint64(lo)) & np.uint64((1 << width) - 1)
        buckets: dict[int, list[int]] = defaultdict(list)
        for index, value in enumerate(band.tolist()):
            buckets[value].append(index)
        for members in buckets.values():
            if len(members) < 2:
                continue
            members = np.asarray(members)
            sub = hashes[members]
            dist = np.bitwise_count(sub[:, None] ^ sub[None, :])
            i, j = np.nonzero(np.triu(dist <= max_distance, k=1))
            pairs.update(zip(members[i].tolist(), members[j].tolist()))
    return sorted(pairs)
