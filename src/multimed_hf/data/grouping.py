"""Grouping samples that must share a split: connected components over shared keys and near-duplicate pairs."""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["connected_groups", "near_duplicate_pairs"]

#: Rows of a bucket compared at once (near-identical slices of one scanner can fill a bucket with thousands).
BLOCK = 512


def connected_groups(keys: Sequence[Hashable], pairs: Iterable[tuple[Hashable, Hashable]]) -> dict:
    """Every key mapped to the smallest key of its connected component (stable names), where ``pairs`` are the
    edges (``scipy.sparse.csgraph.connected_components``)."""
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    edges = np.array([(index[a], index[b]) for a, b in pairs], dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(len(index),) * 2)
    _, labels = connected_components(graph, directed=False)
    smallest: dict[int, Hashable] = {}
    for key, i in index.items():
        label = labels[i]
        if label not in smallest or key < smallest[label]:
            smallest[label] = key
    return {key: smallest[labels[i]] for key, i in index.items()}


def near_duplicate_pairs(
    hashes: np.ndarray, max_distance: int, second: np.ndarray | None = None, second_max_distance: int | None = None
) -> list[tuple[int, int]]:
    """Index pairs of 64-bit ``hashes`` within ``max_distance`` Hamming bits (and, where ``second`` is given, of
    those also within ``second_max_distance`` bits of the second, independent hash: both must agree).

    By the pigeonhole principle two hashes that differ in at most ``d`` bits agree exactly on at least one of
    ``d + 1`` disjoint bit bands, so only hashes sharing a band value are compared.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if second is not None:
        second = np.asarray(second, dtype=np.uint64)
        if second.shape != hashes.shape or second_max_distance is None:
            raise ValueError(
                f"second hashes {second.shape} for hashes {hashes.shape}, distance {second_max_distance}: expected "
                "one second hash per hash and its distance"
            )
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
            first, sub = hashes[members], None if second is None else second[members]
            for start in range(0, len(members), BLOCK):  # a bucket of m hashes costs BLOCK x m, not m x m
                rows = slice(start, start + BLOCK)
                close = np.bitwise_count(first[rows, None] ^ first[None, :]) <= max_distance
                if sub is not None:
                    close &= np.bitwise_count(sub[rows, None] ^ sub[None, :]) <= second_max_distance
                i, j = np.nonzero(np.triu(close, k=start + 1))
                pairs.update(zip(members[i + start].tolist(), members[j].tolist()))
    return sorted(pairs)
