"""The shared builder of one source layout: detect it, list its files, read each file into samples."""

from __future__ import annotations

import heapq
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Mapping, Sequence

from multimed_hf.data.errors import BadSourceFile, IgnoredSourceFile
from multimed_hf.data.images import read_image_file
from multimed_hf.data.sample import RejectedRecord, Sample, SourceFileRef
from multimed_hf.tasks import SourceSpec, TaskSpec, get_task

__all__ = [
    "SourceBuilder", "ImageFolderBuilder", "PathInfo", "PROVENANCE_FILE", "READER_ERRORS", "NOTE", "printable_path",
    "INDEX_FILE_NOTE",
]

#: The manifest's note on a kept index file (labels, metadata): read, no sample of its own.
INDEX_FILE_NOTE = "index file: no sample of its own"
#: Our own provenance note beside a source's files (e.g. marking a generated sample); never read as data.
PROVENANCE_FILE = "MULTIMED_SOURCE.json"

#: What file readers (Pillow, pydicom, nibabel, h5py/anndata, MNE, Biopython, zlib, struct) raise on damaged data.
#: The build reports these as an unreadable file; anything else (TypeError, AttributeError, NameError, KeyError,
#: IndexError...) is a bug of ours and raises. A builder whose reader raises something else adds it to
#: ``SourceBuilder.reader_errors``.
READER_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, EOFError, SyntaxError, struct.error, zlib.error, UnicodeError,
)

#: Key of ``Sample.extra`` whose text the manifest shows beside a kept sample (e.g. a file-name variant).
NOTE = "note"


class SourceBuilder:
    """One publisher layout. Subclasses set ``task`` and ``source`` and implement ``detect`` and ``read_file`` (or
    ``iter_file``, for a reader that streams a file's records)."""

    task: ClassVar[str]
    source: ClassVar[str]
    #: Bump when the reading changes: the validation cache and the shard fingerprint change with it.
    version: ClassVar[str] = "1"
    #: Exceptions of this layout's readers that mean "damaged file" (reported, not raised); see ``READER_ERRORS``.
    reader_errors: ClassVar[tuple[type[BaseException], ...]] = READER_ERRORS
    #: With no publisher test file in the folder (a partial download, e.g. only ``train/``), the publisher's
    #: training marks are dropped and all three splits are drawn by group; False where the publisher's split is a
    #: rule the hash split must not replace (e.g. held-out chromosomes).
    draw_test_when_unpublished: ClassVar[bool] = True

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def task_spec(cls) -> TaskSpec:
        return get_task(cls.task)

    @classmethod
    def spec(cls) -> SourceSpec:
        return cls.task_spec().source(cls.source)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """True when ``root`` is laid out as this source is published."""
        raise NotImplementedError

    def list_files(self) -> list[str]:
        """Every file under the root, relative, sorted (hidden files too: a stray file is reported, not hidden)."""
        return self.walk_files()[0]

    def walk_files(self) -> tuple[list[str], list[tuple[str, BadSourceFile]]]:
        """``(files, unread)``: every file under the root, relative and sorted (``list_files``), and what the walk
        did not read, each ``(relative path, why)`` (a folder's path ends with ``/``), sorted by path.

        Links to folders are followed, their files named as seen through the link. A folder already read (a link
        loop, a second link to one folder, a link into the tree) is not read again (``IgnoredSourceFile``); the
        tree's own folders are read first, then the links in path order, so which path reads a folder does not
        depend on the order the file system lists them in. A folder that cannot be listed and a file whose name
        is not valid UTF-8 (no manifest or database can hold it) are ``BadSourceFile``."""
        root = os.fspath(self.root)
        files: list[str] = []
        unread: list[tuple[str, BadSourceFile]] = []
        read = {_folder_id(root)}
        folders = [(root, "")]  # (path, relative path + "/") of the tree's folders still to list
        links: list[tuple[str, str]] = []  # (relative path + "/", path) of links to folders: a heap, read last
        while folders or links:
            if folders:
                path, prefix = folders.pop()
            else:
                prefix, path = heapq.heappop(links)
                identity = _folder_id(path)
                if identity in read:
                    target = printable_path(os.path.realpath(path))
                    unread.append((printable_path(prefix), IgnoredSourceFile(
                        f"a link to a folder already read: {target}"
                    )))
                    continue
                read.add(identity)
            try:
                with os.scandir(path) as entries:  # relative paths as strings: no Path object per file
                    listed = list(entries)
            except OSError as err:
                unread.append((printable_path(prefix) or "./", BadSourceFile(
                    f"cannot list this folder: {type(err).__name__}: {err.strerror or err}; its files are not read"
                )))
                continue
            for entry in listed:
                relpath = prefix + entry.name
                kind = _kind(entry)
                if kind == "link":
                    heapq.heappush(links, (relpath + "/", entry.path))
                elif kind == "folder":
                    identity = _folder_id(entry.path)
                    if identity in read:  # the same folder mounted twice
                        unread.append((printable_path(relpath) + "/", IgnoredSourceFile(
                            f"a folder already read: {printable_path(os.path.realpath(entry.path))}"
                        )))
                    else:
                        read.add(identity)
                        folders.append((entry.path, relpath + "/"))
                elif not _is_utf8(relpath):
                    unread.append((printable_path(relpath), BadSourceFile(
                        f"file name is not valid UTF-8: {printable_path(relpath)} (each \\xNN a byte of another "
                        "encoding, as zips made on Windows leave names); rename it to read it"
                    )))
                elif prefix or entry.name != PROVENANCE_FILE:
                    files.append(relpath)
        return sorted(files), sorted(unread, key=lambda item: item[0])

    def read_first(self, files: Sequence[str]) -> set[str]:
        """Those of ``files`` to read before the others (which are read in path order): index files, so that a
        ``--strict`` build stops at a broken index file itself rather than at the first sample it labels. None by
        default."""
        return set()

    def layout_warnings(self) -> list[str]:
        """What the folder lacks of the publisher's full layout (a partial download), one sentence each; the
        build goes on with what is there and shows these as warnings. None by default."""
        return []

    def provenance(self) -> dict:
        """The root's ``MULTIMED_SOURCE.json`` (e.g. ``{"synthetic": true, ...}``), or ``{}``."""
        path = self.root / PROVENANCE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def read_file(self, relpath: str) -> list[Sample | RejectedRecord]:
        """Decode ``relpath`` fully and return its samples; raise ``BadSourceFile`` with the reason. A file of many
        records returns its bad ones as ``RejectedRecord`` beside the good samples; ``[]`` marks an index file (or
        what ``no_sample_note`` says it is)."""
        raise NotImplementedError

    def no_sample_note(self, relpath: str) -> str:
        """The manifest's note on a kept file that gave no sample of its own: by default an index file (labels,
        metadata); a builder whose such files are other files' samples' data (a VQA image stored with its
        questions) says so."""
        return INDEX_FILE_NOTE

    def iter_file(self, relpath: str) -> Iterator[Sample | RejectedRecord]:
        """``read_file``'s records one at a time: what the build consumes, so that a file of many records (an h5ad
        of 200,000 cells) goes from the reader to the validation cache without being held whole. By default the
        list ``read_file`` returns; a builder whose reader streams overrides this (and ``read_file`` stays
        ``list(self.iter_file(relpath))``). A ``BadSourceFile`` raised part-way rejects the whole file."""
        return iter(self.read_file(relpath))

    def assets(self) -> dict[str, object]:
        """JSON files to write beside this source's shards, by file name (e.g. ``gene_panels.json``: the gene
        lists that ``gene_panel`` ids refer to). None by default."""
        return {}

    def read_ref(self, ref: SourceFileRef) -> bytes:
        """The bytes a sample's file reference stands for (embedded when shards are written). By default the
        file itself; a builder whose images are rendered (e.g. CT slices of a volume) renders them here."""
        return (self.root / ref.path).read_bytes()

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """Records an index file names whose data file is absent among ``files``, as ``(where, reason)``
        (e.g. ``("train.csv:row 12", "image train_images/abc.png is missing")``). None by default."""
        return []

    def link_samples(self, samples: Sequence[Sample]) -> Iterable[tuple[int, int]]:
        """Pairs of indices (into ``samples``, this source's valid samples) that must share a group beyond
        their grouping keys, e.g. near-identical protein chains. None by default.

        ``samples`` is a read-only sequence that loads each sample from the validation cache when it is iterated
        over or indexed (``data.cached_samples.CachedSamples``): read them once, keeping only what the rule needs
        (a sequence, an id), so that memory does not grow with what the samples hold."""
        return ()

    def canonical(self, column: str, publisher_name: str) -> str:
        """The registry's canonical label for the publisher's name, or ``BadSourceFile`` naming what is known."""
        mapping = self.spec().label_map[column]
        try:
            return mapping[publisher_name]
        except KeyError:
            raise BadSourceFile(
                f"label {publisher_name!r} is not one of this source's {column} names {sorted(mapping)}"
            ) from None


def _kind(entry: os.DirEntry) -> str:
    """``"folder"``, ``"link"`` (a link to a folder) or ``"file"`` (anything else: a broken link, too, is
    reported when it is read)."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return "folder"
        return "link" if entry.is_dir() else "file"
    except OSError:  # a link the file system cannot follow (a loop of links to links): reported when read
        return "file"


def _folder_id(path: str) -> tuple[int, int]:
    """A folder's identity (device, inode): the same folder, whatever the path or link it is reached by."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _is_utf8(name: str) -> bool:
    """Whether a name holds no byte that is not UTF-8 (``os.fsdecode`` keeps those as lone surrogates)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str) -> str:
    """A path with each byte that is not UTF-8 written as ``\\xNN``: what a manifest and a message can hold."""
    return os.fsencode(path).decode("utf-8", "backslashreplace") if not _is_utf8(path) else path


@dataclass
class PathInfo:
    """What a file's path says: its id, labels (publisher names by column), group and publisher split."""

    sample_id: str
    labels: dict[str, str]
    group_key: str | None = None
    published_split: str | None = None
    fields: dict = field(default_factory=dict)
    #: Shown in the manifest beside the kept sample, e.g. why a name variant was kept and what id it gave.
    note: str = ""


class ImageFolderBuilder(SourceBuilder):
    """A source of image files whose path carries the label: subclasses implement ``parse_path``."""

    image_suffixes: ClassVar[tuple[str, ...]] = (".jpg", ".jpeg", ".png")
    #: The publisher's split folders (folder name -> ``"train"`` / ``"test"``), for partial-download warnings.
    split_folders: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        """The class folders each split folder holds in the full release (none by default)."""
        return ()

    def layout_warnings(self) -> list[str]:
        """A publisher split with none of its folders, or a split folder lacking class folders: named, once."""
        warnings = []
        present = {split for folder, split in self.split_folders.items() if (self.root / folder).is_dir()}
        for split in sorted(set(self.split_folders.values()) - present):
            folders = " or ".join(f"{f}/" for f, s in self.split_folders.items() if s == split)
            warnings.append(
                f"partial download: no {folders} folder (the publisher's {split} set); built from what is there"
                + ("; test is drawn from the groups present" if split == "test" and self.draw_test_when_unpublished
                   else "")
            )
        for folder in self.split_folders:
            if (self.root / folder).is_dir() and self.class_folders():
                missing = [c for c in self.class_folders() if not (self.root / folder / c).is_dir()]
                if missing:
                    warnings.append(f"partial download: {folder}/ has no {', '.join(missing)} folder")
        return warnings

    def parse_path(self, relpath: str) -> PathInfo:
        raise NotImplementedError

    def read_file(self, relpath: str) -> list[Sample]:
        if os.path.splitext(relpath)[1].lower() not in self.image_suffixes:
            raise BadSourceFile(f"stray file: not an image of this layout (expected {', '.join(self.image_suffixes)})")
        info = self.parse_path(relpath)
        ref, phash = read_image_file(os.path.join(self.root, relpath), relpath)  # blank images rejected too
        labels = {column: self.canonical(column, name) for column, name in info.labels.items()}
        fields = {"image": ref, "modality": self.spec().modality, **info.fields, **labels}
        return [Sample(
            sample_id=info.sample_id, source_path=relpath, fields=fields, group_key=info.group_key,
            published_split=info.published_split, content_hash=ref.sha256, perceptual_hash=phash,
            extra={NOTE: info.note} if info.note else {},
        )]
