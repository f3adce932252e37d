"""Byte-identical copies of one file in a download (a browser's second download ``x (1).h5ad``, a session saved at
two folder levels): the first by path is read, every later one is dropped, named, rather than read twice (its
records in the data twice) or rejected with the original (duplicate ids)."""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Iterable

from multimed_hf.data.errors import UnusedSourceFile

__all__ = ["refuse_later_copy", "listing_digest"]


#: A browser's or file manager's name for a second copy: ``x (1).h5ad``, ``x - Copy.gdf``, ``x copy 2.mat``.
_COPY_NAME = re.compile(r"( \(\d+\)| - Copy( \(\d+\))?| copy( \d+)?)$", re.IGNORECASE)


def _order(relpath: str) -> tuple[bool, int, str]:
    """Which of two copies is read: a name without a copy suffix, then the shallower path, then path order."""
    stem = PurePosixPath(relpath).name.split(".")[0]
    return bool(_COPY_NAME.search(stem)), relpath.count("/"), relpath


def refuse_later_copy(root: Path, relpath: str, candidates: Iterable[str], what: str) -> None:
    """``UnusedSourceFile`` naming the first of ``candidates`` (paths relative to ``root``) that comes before
    ``relpath`` (``_order``: the original name before a copy's, the shallower path, path order) and holds the same
    bytes; ``what`` says what a second read would double."""
    path = os.path.join(root, relpath)
    size = os.path.getsize(path)
    mine = _order(relpath)
    for other in sorted(candidates, key=_order):
        if _order(other) >= mine:
            return
        other_path = os.path.join(root, other)
        if os.path.getsize(other_path) == size and filecmp.cmp(other_path, path, shallow=False):
            raise UnusedSourceFile(f"not used: a byte-identical copy of {other} (read instead); {what}")


def listing_digest(root: Path, relpaths: Iterable[str]) -> str:
    """A digest of which of ``relpaths`` exist and their sizes: part of a builder's validation-cache version
    (``listing_version``) where one file's reading depends on the others (a copy is dropped only while its
    original is there), so that adding or removing one re-reads them."""
    digest = hashlib.sha256()
    for relpath in sorted(relpaths):
        path = os.path.join(root, relpath)
        digest.update(f"{relpath}\t{os.path.getsize(path) if os.path.isfile(path) else -1}\n".encode())
    return digest.hexdigest()[:12]
