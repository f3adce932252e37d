"""A source's valid samples as a read-only sequence, each read from the validation cache only when asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Iterator, overload

import numpy as np

from multimed_hf.data.build_store import BuildStore
from multimed_hf.data.cache import ValidationCache
from multimed_hf.data.sample import Sample

__all__ = ["CachedSamples"]


class CachedSamples(Sequence):
    """The samples of the build store's rows ``ids`` (in that order), each loaded from ``cache`` when indexed or
    iterated over and held by no one but the caller: 8 bytes a sample, whatever the samples hold (an RCSB chain's
    coordinates) and however many there are. Iterating reads each sample once; indexing reads it again."""

    def __init__(self, store: BuildStore, cache: ValidationCache, ids: np.ndarray):
        self._store, self._cache = store, cache
        self._ids = np.asarray(ids, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> CachedSamples: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return CachedSamples(self._store, self._cache, self._ids[index])
        row_id = int(self._ids[index])  # IndexError past either end, as a list's
        relpath, idx = self._store.query("SELECT relpath, idx FROM rows WHERE id = ?", (row_id,)).fetchone()
        return self._cache.record(relpath, idx)

    def __iter__(self) -> Iterator[Sample]:
        batch = self._store.batch
        for start in range(0, len(self._ids), batch):
            chunk = self._ids[start:start + batch].tolist()
            where = {row_id: (relpath, idx) for row_id, relpath, idx in self._store.query(
                f"SELECT id, relpath, idx FROM rows WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            )}
            for row_id in chunk:
                yield self._cache.record(*where[row_id])
