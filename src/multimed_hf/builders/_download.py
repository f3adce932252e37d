"""What real downloads carry besides a source's data: system and archive files, documents, wrapper folders.

Every real download holds files that are no data of any source: operating-system litter (``Thumbs.db``,
``.DS_Store``, ``__MACOSX/``, ``._*`` AppleDouble files, ``desktop.ini``), the publisher's documents (README,
licence, citation files), the archives a user unpacked in place and the directory listings ``wget -r`` saves.
``NonDataFiles`` (a mixin before a builder's base) lists each in the manifest as ignored, with its reason, instead
of rejecting it as a stray file: its manifest status is ``ignored`` (``IgnoredSourceFile``), so it is no error and
``--strict`` does not stop on it.

Archives also wrap a source's tree in folders of their own (Kaggle's ``OCT2017 /`` with a trailing space, the
tarball's ``BreaKHis_v1/``, Mendeley v3's ``CellData/OCT/``) and some hold the tree twice (``chest_xray/chest_xray/``):
``find_tree`` finds the tree under the folder a user gives, so the builder reads it wherever the archive put it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable

from multimed_hf.data.errors import IGNORED, IgnoredSourceFile
from multimed_hf.data.unpack import is_archive

__all__ = [
    "IGNORED", "IgnoredSourceFile", "NonDataFiles", "WrappedTree", "non_data_reason", "is_archive", "find_tree",
    "strip_tree",
]

_FOLDERS = {
    "__macosx": "__MACOSX/ holds the archive's macOS metadata, not data",
    ".ipynb_checkpoints": ".ipynb_checkpoints/ holds Jupyter's autosave copies, not data",
    ".git": ".git/ is version-control metadata, not data",
    # `hf download --local-dir` keeps its bookkeeping under .cache/huggingface/ (CACHEDIR.TAG, <file>.metadata)
    ".cache": ".cache/ holds a download tool's bookkeeping (hf download --local-dir: .cache/huggingface/), not data",
}
_NAMES = {
    ".ds_store": ".DS_Store is macOS folder metadata, not data",
    "thumbs.db": "Thumbs.db is a Windows thumbnail cache, not data",
    "ehthumbs.db": "ehthumbs.db is a Windows thumbnail cache, not data",
    "desktop.ini": "desktop.ini is Windows folder settings, not data",
    ".gitattributes": ".gitattributes is version-control metadata, not data",
    ".gitignore": ".gitignore is version-control metadata, not data",
}
#: What ``wget -r`` (PhysioNet's recommended download) saves beside the files: the server's directory listings
#: (``index.html``, with Apache's sort variants ``index.html?C=N;O=D``) and its ``robots.txt``.
_CRAWL = re.compile(r"^(index\.html?(\?.*)?|robots\.txt)$", re.IGNORECASE)
_DOCUMENT = re.compile(r"^(readme|licen[cs]e|copying|citation|notice)([._ -].*)?$", re.IGNORECASE)
#: The rules above as a version, part of a ``NonDataFiles`` builder's validation-cache version: a file cached as a
#: stray one under other rules is read again (``hf download``'s .cache/ was rejected before it was named here).
NON_DATA_RULES = hashlib.sha256(
    json.dumps([_FOLDERS, _NAMES, _CRAWL.pattern, _DOCUMENT.pattern]).encode()).hexdigest()[:8]


def non_data_reason(relpath: str) -> str | None:
    """Why ``relpath`` is no data of any source, or None."""
    *folders, name = relpath.split("/")  # a relative POSIX path (list_files); no Path object per file
    for part in folders:
        reason = _FOLDERS.get(part.lower())
        if reason is not None:
            return reason
    reason = _NAMES.get(name.lower())
    if reason is not None:
        return reason
    if name.startswith("._"):
        return f"{name} is a macOS AppleDouble resource file, not data"
    if _CRAWL.match(name):
        return f"{name} is a web page or robots.txt that wget -r saved beside the files, not data"
    if _DOCUMENT.match(name):
        return f"{name} is the publisher's documentation or licence, not data"
    if is_archive(name):
        return f"{name} is a download archive: the folder it unpacks to is what is read"
    return None


class NonDataFiles:
    """Mixin before a ``SourceBuilder`` base: non-data files are ignored (status ``ignored``, with the reason) before the
    builder reads anything, whether its ``read_file`` (or streaming ``iter_file``) is inherited or its own; a
    builder that reads an archive or document itself lists it in ``data_files``."""

    #: File names (relative to the root) this layout reads although ``non_data_reason`` names them.
    data_files: tuple[str, ...] = ()
    #: Part of the validation cache's version (``data.build._cache_version``): the non-data rules read with.
    rules_version: str = f"non-data-{NON_DATA_RULES}"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("read_file", "iter_file"):  # a subclass's own reader: checked first too
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "_skips_non_data", False):
                setattr(cls, name, _skipping_non_data(own))

    def ignore_non_data(self, relpath: str) -> None:
        """``IgnoredSourceFile`` for a file that holds no data of any source."""
        reason = None if relpath in self.data_files else non_data_reason(relpath)
        if reason is not None:
            raise IgnoredSourceFile(IGNORED + reason)

    def read_file(self, relpath: str):
        self.ignore_non_data(relpath)
        return super().read_file(relpath)


def _skipping_non_data(reader):
    @functools.wraps(reader)
    def checked(self, relpath: str):
        self.ignore_non_data(relpath)
        return reader(self, relpath)

    checked._skips_non_data = True
    return checked


class WrappedTree:
    """Mixin before a ``SourceBuilder`` base for a source whose tree an archive may wrap in folders of its own:
    ``detect`` and ``tree`` look at the root, then under each of ``wrappers``, for a folder ``_is_tree`` accepts."""

    #: The archive's own folders the tree may start under (relative to the root), tried in order.
    wrappers: tuple[str, ...] = ()

    @classmethod
    def _is_tree(cls, folder: Path) -> bool:
        raise NotImplementedError(f"{cls.__name__} must say what its tree looks like (_is_tree)")

    @classmethod
    def detect(cls, root: Path) -> bool:
        return find_tree(root, cls.wrappers, cls._is_tree) is not None

    @cached_property
    def tree(self) -> str:
        """Where the tree starts, relative to the root (``""`` or a wrapper folder ending in ``/``)."""
        return find_tree(self.root, self.wrappers, self._is_tree) or ""

    def tree_view(self):
        """A shallow copy of this builder rooted where the tree starts (for checks written against the root)."""
        view = copy.copy(self)
        view.root = self.root / self.tree if self.tree else self.root
        return view

def find_tree(root: Path, wrappers: Iterable[str], is_tree: Callable[[Path], bool]) -> str | None:
    """The folder (relative to ``root``, ``""`` for the root itself, else ending in ``/``) where the source's tree
    starts: the root, else the first of ``wrappers`` (an archive's own folders) that ``is_tree``; None if none."""
    for prefix in ("", *wrappers):
        folder = root / prefix if prefix else root
        if folder.is_dir() and is_tree(folder):
            return prefix.rstrip("/") + "/" if prefix else ""
    return None


def strip_tree(relpath: str, prefix: str) -> str | None:
    """``relpath`` inside the tree that starts at ``prefix``, or None for a file outside it."""
    if not prefix:
        return relpath
    return relpath[len(prefix):] if relpath.startswith(prefix) else None
