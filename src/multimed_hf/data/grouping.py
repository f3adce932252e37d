"""Grouping samples that must share a split: connected components over shared keys and near-duplicate pairs."""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["component_roots", "connected_groups", "near_duplicate_pairs"]

#: Rows of a bucket compared at once (near-identical slices of one scanner can fill a bucket with thousands)...
BLOCK = 512
#: ...and at most this many comparisons in one block (a bucket of a million hashes compares a few rows at a time).
BLOCK_PAIRS = 2**20


def component_roots(n: int, edges: np.ndarray) -> np.ndarray:
    """For nodes ``0..n-1`` and ``edges`` (an ``(m, 2)`` integer array), each node's smallest node of its connected
    component (``scipy.sparse.csgraph.connected_components``): numbered in key order, the component's name. Arrays
    only: 16 bytes a node, whatever the keys are."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n, dtype=np.int64))
    return smallest[labels]


def connected_groups(keys: Sequence[Hashable], pairs: Iterable[tuple[Hashable, Hashable]]) -> dict:
    """Every key mapped to the smallest key of its connected component (stable names), where ``pairs`` are the
    edges (``component_roots`` over the keys in sorted order)."""
    ordered = sorted(dict.fromkeys(keys))
    index = {key: i for i, key in enumerate(ordered)}
    edges = np.array([(index[a], index[b]) for a, b in pairs], dtype=np.int64).reshape(-1, 2)
    roots = component_roots(len(ordered), edges)
    return {key: ordered[roots[i]] for key, i in index.items()}


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
        order = np.argsort(band, kind="stable")  # buckets as runs of equal band values, members in index order
        starts = np.flatnonzero(np.r_[True, band[order][1:] != band[order][:-1]])
        ends = np.r_[starts[1:], len(order)]
        for a, b in zip(starts.tolist(), ends.tolist()):
            if b - a < 2:
                continue
            members = order[a:b]
            first, sub = hashes[members], None if second is None else second[members]
            block = max(1, min(BLOCK, BLOCK_PAIRS // len(members)))
            for start in range(0, len(members), block):  # a bucket of m hashes costs block x m, not m x m
                rows = slice(start, start + block)
                close = np.bitwise_count(first[rows, None] ^ first[None, :]) <= max_distance
                if sub is not None:
                    close &= np.bitwise_count(sub[rows, None] ^ sub[None, :]) <= second_max_distance
                i, j = np.nonzero(np.triu(close, k=start + 1))
                pairs.update(zip(members[i + start].tolist(), members[j].tolist()))
    return sorted(pairs)
