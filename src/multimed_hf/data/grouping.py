"""Grouping samples that must share a split: connected components over shared keys and near-duplicate pairs."""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Iterator, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "NearDuplicateLinks", "component_roots", "connected_groups", "near_duplicate_links", "near_duplicate_pairs",
]

#: Rows of a bucket compared at once (near-identical slices of one scanner can fill a bucket with thousands)...
BLOCK = 512
#: ...and at most this many comparisons in one block (a bucket of a million hashes compares a few rows at a time).
BLOCK_PAIRS = 2**20
#: Buckets of at most this many hashes are compared all at once (their k-th pairs together); larger ones block by
#: block.
SMALL_BUCKET = 160
#: Buckets of at least this many hashes are split by the second hash's bands where that means fewer comparisons.
SPLIT_FROM = 64


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


@dataclass(frozen=True)
class NearDuplicateLinks:
    """What ``near_duplicate_links`` found: a forest with the connected components of the near-duplicate pairs,
    and how many pairs there are."""

    #: ``(k, 2)`` int64 index pairs, ``k`` < the number of hashes: the same components as every near pair.
    edges: np.ndarray
    #: Near-duplicate pairs (each unordered pair once).
    pairs: int
    #: Those of them whose ``content`` differs (near, not exact, duplicates); ``pairs`` where no content is given.
    distinct_pairs: int


def _band_edges(max_distance: int) -> list[tuple[int, int]]:
    """``(lowest bit, mask)`` of the ``max_distance + 1`` disjoint bands of a 64-bit hash (empty bands left out)."""
    edges = np.linspace(0, 64, max_distance + 2).astype(int)
    return [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def _ranks(sizes: np.ndarray) -> np.ndarray:
    """``0..size-1`` for each of ``sizes``, concatenated."""
    return np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def _runs(nodes: np.ndarray, keys: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``nodes`` sorted by ``keys`` (the first most significant; stable, so each run keeps the nodes' order), and
    the start and size of each run of equal keys."""
    order = np.arange(len(nodes))
    for key in reversed(keys):  # least significant first: each stable sort keeps the order of those before
        key = key[order]
        if key.dtype != np.uint16 and len(key) and key.min() >= 0 and key.max() < 1 << 16:
            key = key.astype(np.uint16)  # sorted by radix
        order = order[np.argsort(key, kind="stable")]
    sorted_keys = [key[order] for key in keys]
    change = np.zeros(len(order), dtype=bool)
    change[:1] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    starts = np.flatnonzero(change)
    return nodes[order], starts, np.diff(np.r_[starts, len(order)])


def _band(hashes: np.ndarray, lo: int, mask: int) -> np.ndarray:
    values = (hashes >> np.uint64(lo)) & np.uint64(mask)
    return values.astype(np.uint16) if mask < 1 << 16 else values  # 16-bit keys sort by radix


class _Search:
    """The pigeonhole search behind ``near_duplicate_pairs`` and ``near_duplicate_links``: yields every pair
    within both distances exactly once, as ``(i, j)`` index arrays with ``i < j``, a bounded number at a time.

    Two hashes within ``d`` bits agree exactly on at least one of ``d + 1`` disjoint bands, so only hashes sharing
    a band value (a bucket) are compared, and a pair is kept in the lowest band it agrees on only (no set of pairs
    to deduplicate). A bucket much larger than its pairs can be (hashes alike without being near: CT slices all
    look alike) is split by the second hash's bands where one is given (a pair of the bucket agrees on one of them
    too), and a pair is kept there in its lowest agreeing second band only."""

    def __init__(self, hashes, max_distance: int, second=None, second_max_distance: int | None = None):
        self.first = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1)
        self.second = None
        if second is not None:
            second = np.ascontiguousarray(second, dtype=np.uint64)
            if second.shape != np.shape(hashes) or second_max_distance is None:
                raise ValueError(
                    f"second hashes {second.shape} for hashes {np.shape(hashes)}, distance {second_max_distance}: "
                    "expected one second hash per hash and its distance"
                )
            self.second = second.reshape(-1)
        self.d1, self.d2 = int(max_distance), second_max_distance
        self.bands1 = _band_edges(self.d1)
        self.bands2 = _band_edges(int(second_max_distance)) if second is not None else []

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for a in range(len(self.bands1)):
            yield from self.band(a)

    def band(self, a: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The pairs kept in first band ``a`` (the bands' pairs are disjoint: each band can be searched apart)."""
        nodes = np.arange(len(self.first), dtype=np.int64)
        lo, mask = self.bands1[a]
        ordered, starts, sizes = _runs(nodes, (_band(self.first, lo, mask),))
        keep = sizes > 1
        starts, sizes = starts[keep], sizes[keep]
        split = np.zeros(len(sizes), dtype=bool)
        if self.second is not None:
            large = sizes >= SPLIT_FROM
            split[large] = self._split(ordered, starts[large], sizes[large])
        yield from self._compare(ordered, starts[~split], sizes[~split], a, None)
        if split.any():  # the buckets to split, all at once by each second band
            members = ordered[np.repeat(starts[split], sizes[split]) + _ranks(sizes[split])]
            bucket = np.repeat(np.arange(int(split.sum())), sizes[split])
            for b, (lo2, mask2) in enumerate(self.bands2):
                sub, sub_starts, sub_sizes = _runs(members, (bucket, _band(self.second[members], lo2, mask2)))
                keep = sub_sizes > 1
                yield from self._compare(sub, sub_starts[keep], sub_sizes[keep], a, b)

    def _split(self, ordered: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Which buckets to compare within the second hash's band values instead (where that is fewer
        comparisons: hashes alike without being near)."""
        members = ordered[np.repeat(starts, sizes) + _ranks(sizes)]
        bucket = np.repeat(np.arange(len(sizes)), sizes)
        cost = np.zeros(len(sizes), dtype=np.int64)
        for lo, mask in self.bands2:
            _, sub_starts, sub_sizes = _runs(members, (bucket, _band(self.second[members], lo, mask)))
            np.add.at(cost, bucket[sub_starts], sub_sizes * (sub_sizes - 1))
        return 2 * cost < sizes * (sizes - 1)

    def _compare(self, ordered: np.ndarray, starts: np.ndarray, sizes: np.ndarray, a: int, b: int | None):
        """Every pair within each bucket (``ordered[start:start + size]``): buckets of up to ``SMALL_BUCKET``
        members all at once (no Python loop per bucket), larger ones block by block."""
        small = sizes <= SMALL_BUCKET
        if small.any():  # the k-th pairs of every small bucket: positions p, p + k of the sorted order
            begin, size = starts[small], sizes[small]
            pos = np.repeat(begin, size) + _ranks(size)
            after = np.repeat(begin + size, size) - pos - 1  # members of its bucket after each position
            by = np.argsort(-after.astype(np.int16), kind="stable")  # most first: those with k after, a prefix
            pos = pos[by]
            reach = np.cumsum(np.bincount(after, minlength=SMALL_BUCKET + 1)[::-1])[::-1]  # how many have >= k
            del after, by
            first = self.first[ordered]
            mine = first[pos]
            for k in range(1, int(size.max())):
                at = pos[:reach[k]]
                x = mine[:len(at)] ^ first[at + k]
                near = np.flatnonzero(np.bitwise_count(x) <= self.d1)
                near = self._lowest(near, x[near], a)
                if len(near):
                    yield from self._keep(ordered[at[near]], ordered[at[near] + k], b)
        for start, size in zip(starts[~small].tolist(), sizes[~small].tolist()):
            yield from self._blocks(ordered[start:start + size], a, b)

    def _blocks(self, members: np.ndarray, a: int, b: int | None):
        """A large bucket, rows of a block against the members after them: ``BLOCK_PAIRS`` comparisons at most."""
        first = self.first[members]
        block = max(1, min(BLOCK, BLOCK_PAIRS // len(members)))
        for start in range(0, len(members) - 1, block):
            rows = first[start:start + block]
            x = rows[:, None] ^ first[None, start + 1:]
            close = np.triu(np.bitwise_count(x) <= self.d1)  # column c is member start + 1 + c: after row r if c >= r
            near = self._lowest(np.flatnonzero(close), x[close], a)
            if len(near):
                r, c = np.divmod(near, len(members) - start - 1)
                yield from self._keep(members[start + r], members[start + 1 + c], b)

    def _lowest(self, where: np.ndarray, x: np.ndarray, a: int) -> np.ndarray:
        """The pairs (``where``, their first hashes' XOR ``x``) that agree on no band before ``a`` (a pair is kept
        in the lowest band it agrees on)."""
        ok = np.ones(len(x), dtype=bool)
        for lo, mask in self.bands1[:a]:
            ok &= (x >> np.uint64(lo)) & np.uint64(mask) != 0
        return where[ok]

    def _keep(self, i: np.ndarray, j: np.ndarray, b: int | None):
        """The pairs (within the first distance, in their lowest first band) within the second distance that
        agree on no second band before ``b``."""
        if self.second is not None:
            y = self.second[i] ^ self.second[j]
            ok = np.bitwise_count(y) <= self.d2
            for lo, mask in self.bands2[:b or 0]:
                ok &= (y >> np.uint64(lo)) & np.uint64(mask) != 0
            i, j = i[ok], j[ok]
        if len(i):
            yield i, j


def near_duplicate_pairs(
    hashes: np.ndarray, max_distance: int, second: np.ndarray | None = None, second_max_distance: int | None = None
) -> np.ndarray:
    """Index pairs of 64-bit ``hashes`` within ``max_distance`` Hamming bits (and, where ``second`` is given, of
    those also within ``second_max_distance`` bits of the second, independent hash: both must agree), as an
    ``(m, 2)`` int64 array of ``i < j`` rows in sorted order.

    By the pigeonhole principle two hashes that differ in at most ``d`` bits agree exactly on at least one of
    ``d + 1`` disjoint bit bands, so only hashes sharing a band value are compared. Every pair is held (16 bytes
    each): where only the groups matter, ``near_duplicate_links`` keeps a forest instead.
    """
    n = np.int64(len(np.asarray(hashes).reshape(-1)))
    keys = [i * n + j for i, j in _Search(hashes, max_distance, second, second_max_distance)]
    keys = np.sort(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)
    return np.stack([keys // n, keys % n], axis=1) if len(keys) else np.empty((0, 2), dtype=np.int64)


def near_duplicate_links(
    hashes: np.ndarray, max_distance: int, second: np.ndarray | None = None, second_max_distance: int | None = None,
    content: np.ndarray | None = None, run: Callable[[Callable, Iterable[tuple]], Iterable] | None = None,
) -> NearDuplicateLinks:
    """The connected components of ``near_duplicate_pairs`` (same arguments) as a forest of at most ``n - 1``
    edges, and how many pairs there are (of them, how many join different ``content``: one integer per hash, equal
    for exact duplicates). Memory grows with the number of hashes, never with the number of pairs.

    ``run`` runs the search's bands (whose pairs are disjoint), a function over argument tuples, answers in task
    order (``ReadEngine.ordered``: in worker processes, which map the arrays from one temporary folder instead of
    receiving a copy each, and answer with at most ``n`` edges a band); default: here, one after another. The
    forest names each component by its smallest index, so it is the same however the bands were run."""
    search = _Search(hashes, max_distance, second, second_max_distance)
    n = len(search.first)
    if content is not None:
        content = np.asarray(content).reshape(-1)
        if len(content) != n:
            raise ValueError(f"content of {len(content)} items for {n} hashes: expected one per hash")
    with tempfile.TemporaryDirectory(prefix="multimed-bands-") if run is not None else nullcontext() as folder:
        if run is None:
            found = (_band_links(search, a, content) for a in range(len(search.bands1)))
        else:
            _save_search(folder, search, content)
            found = run(_band_links, ((folder, a) for a in range(len(search.bands1))))
        held: list[np.ndarray] = []
        size = pairs = distinct = 0
        try:
            for edges, band_pairs, band_distinct in found:
                pairs += band_pairs
                distinct += band_distinct
                held.append(edges)
                size += len(edges)
                if size > max(2 * n, BLOCK_PAIRS):  # the pairs so far replaced by their components' forest
                    held, size = [_forest(n, held)], n
        finally:
            close = getattr(found, "close", None)
            if close is not None:  # bands still running are awaited before their folder goes
                close()
    return NearDuplicateLinks(_forest(n, held), pairs, distinct)


def _save_search(folder: str, search: _Search, content: np.ndarray | None) -> None:
    """The search's hashes, distances and ``content`` as ``.npy`` files in ``folder``, for ``_load_search``."""
    d2 = -1 if search.d2 is None else int(search.d2)
    np.save(os.path.join(folder, "distances.npy"), np.array([search.d1, d2], dtype=np.int64))
    np.save(os.path.join(folder, "first.npy"), search.first)
    if search.second is not None:
        np.save(os.path.join(folder, "second.npy"), search.second)
    if content is not None:
        np.save(os.path.join(folder, "content.npy"), content)


def _load_search(folder: str) -> tuple[_Search, np.ndarray | None]:
    """``_save_search``'s search, its arrays mapped from their files (read-only, shared by the processes)."""
    def mapped(name: str) -> np.ndarray | None:
        path = os.path.join(folder, f"{name}.npy")
        return np.asarray(np.load(path, mmap_mode="r")) if os.path.exists(path) else None

    d1, d2 = (int(d) for d in np.load(os.path.join(folder, "distances.npy")))
    return _Search(mapped("first"), d1, mapped("second"), None if d2 < 0 else d2), mapped("content")


def _band_links(search: _Search | str, a: int, content: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """One band's search (``near_duplicate_links``; ``search``: the search, or the folder ``_save_search`` wrote
    it to): at most ``n`` edges with the components of its pairs (the pairs, or their forest where they are
    more), how many pairs, and how many of them join different ``content``."""
    if isinstance(search, str):
        search, content = _load_search(search)
    n = len(search.first)
    held: list[np.ndarray] = []
    size = pairs = distinct = 0
    for i, j in search.band(a):
        pairs += len(i)
        distinct += len(i) if content is None else int(np.count_nonzero(content[i] != content[j]))
        held.append(np.stack([i, j], axis=1))
        size += len(i)
        if size > max(2 * n, BLOCK_PAIRS):
            held, size = [_forest(n, held)], n
    if size > n:
        return _forest(n, held), pairs, distinct
    return (np.concatenate(held) if held else np.empty((0, 2), dtype=np.int64)), pairs, distinct


def _forest(n: int, edges: list[np.ndarray]) -> np.ndarray:
    """Edges from each node to its component's smallest node: the components of ``edges`` in < ``n`` edges."""
    if not edges:
        return np.empty((0, 2), dtype=np.int64)
    roots = component_roots(n, np.concatenate(edges))
    linked = np.flatnonzero(roots != np.arange(n))
    return np.stack([roots[linked], linked], axis=1)
