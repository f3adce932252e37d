"""Copies of one file in a download (a browser's second download ``x (1).h5ad``, a session saved at two folder
levels, a volume gunzipped beside its ``.nii.gz``): the first by path is read, every later one is dropped, named,
rather than read twice (its records in the data twice) or rejected with the original (duplicate ids). A copy is
byte-identical by default; a builder may compare what the files hold instead (``same``)."""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from multimed_hf.data.errors import UnusedSourceFile

__all__ = ["refuse_later_copy", "listing_digest", "copy_order", "same_bytes"]


#: A browser's or file manager's name for a second copy: ``x (1).h5ad``, ``x - Copy.gdf``, ``x copy 2.mat``.
_COPY_NAME = re.compile(r"( \(\d+\)| - Copy( \(\d+\))?| copy( \d+)?)$", re.IGNORECASE)


def copy_order(relpath: str) -> tuple:
    """Which of two copies is read: a name without a copy suffix, then the shallower path, then path order."""
    stem = PurePosixPath(relpath).name.split(".")[0]
    return bool(_COPY_NAME.search(stem)), relpath.count("/"), relpath


def same_bytes(path: str, other: str) -> bool:
    """Whether two files hold the same bytes."""
    return os.path.getsize(path) == os.path.getsize(other) and filecmp.cmp(other, path, shallow=False)


def refuse_later_copy(root: Path, relpath: str, candidates: Iterable[str], what: str, *,
                      order: Callable[[str], tuple] = copy_order, same: Callable[[str, str], bool] = same_bytes,
                      copy: str = "a byte-identical copy", beside: bool = False) -> None:
    """``UnusedSourceFile`` naming the first of ``candidates`` (paths relative to ``root``) that comes before
    ``relpath`` in ``order`` (default ``copy_order``: the original name before a copy's, the shallower path, path
    order) and is ``same`` (default: the same bytes); ``what`` says what a second read would double, ``copy`` what
    the file is of the one read; ``beside``: the candidates are in ``relpath``'s folder, named by their file name."""
    path = os.path.join(root, relpath)
    mine = order(relpath)
    for other in sorted(candidates, key=order):
        if order(other) >= mine:
            return
        if same(path, os.path.join(root, other)):
            named = f"{PurePosixPath(other).name} beside it" if beside else other
            raise UnusedSourceFile(f"not used: {copy} of {named} (read instead); {what}")


def listing_digest(root: Path, relpaths: Iterable[str]) -> str:
    """A digest of which of ``relpaths`` exist and their sizes: part of a builder's validation-cache version
    (``listing_version``) where one file's reading depends on the others (a copy is dropped only while its
    original is there), so that adding or removing one re-reads them."""
    digest = hashlib.sha256()
    for relpath in sorted(relpaths):
        path = os.path.join(root, relpath)
        digest.update(f"{relpath}\t{os.path.getsize(path) if os.path.isfile(path) else -1}\n".encode())
    return digest.hexdigest()[:12]
