"""PMC-OA (PMC-CLIP, MICCAI 2023; HF ``axiong/pmc_oa``): subfigure images + JSON-lines caption files.

Layout (the Hub repository, with ``images.zip`` unpacked in place, as its loading script does):
``caption_T060_filtered_top4_sep_v0_subfigures/PMC<id>_<figure>_<n>.jpg`` (also accepted under ``images/``),
``pmc_oa.jsonl`` (one JSON object a line: ``image``, ``caption`` = the subcaption, ``alignment_type``,
``alignment_score``), ``pmc_oa_beta.jsonl`` (``image``, ``caption`` = the figure's whole compound caption) and, in
the early release, ``train.jsonl`` / ``valid.jsonl`` / ``test.jsonl`` (``image``, ``caption``, ``pmcid``,
``url_name``).

One sample per caption row: the rows come from ``pmc_oa.jsonl``, or where it is absent from the early release's
split files. The split files, where present, also give the publisher's split (``test`` stays test, ``valid`` is
read as training data: validation is drawn from training articles), ``pmcid`` and ``url_name``;
``pmc_oa_beta.jsonl`` gives ``figure_caption``.

The image files carry the samples (one cache entry, one decode each, in parallel): an image's rows are looked up in
an index of the JSON-lines files, which the builder's version hashes, so an edited caption file re-validates the
images. Bad input, each named in the manifest: a line that is not a JSON object with an ``image`` file name, and a
row whose image is not in the folder (``<jsonl>:row N``, via ``orphan_records``); a row with an empty caption, or
with the caption of an earlier row of its image (a repeated line: the pair is kept once) (``<jsonl>:row N``; an
image with no usable row is rejected with its rows' reasons); an image that does not decode
or is one flat value (its reason names the rows it takes with it); an image no row refers to (dropped, not used);
``images.zip`` itself (dropped: the unpacked folder is read); any other file (stray).

Grouping: the article (``pmcid`` where the row gives it, else the ``PMC<id>`` the file name starts with), so
subfigures of one figure and figures of one article stay together; exact copies (file sha256) are grouped across
articles too (PMC figures are often reused). Near duplicates are NOT grouped by perceptual hash here: distinct
plots of one shape (line plots, bar charts, survival curves on a white ground) hash 0-2 bits apart (seen on the
sample's drawn figures), so on 1.65M figures the transitive grouping would chain unrelated articles into a few
giant groups and break the splits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders._records import dependency_version, record_where
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.images import read_image_file
from multimed_hf.data.sample import RejectedRecord, Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["PMCOABuilder", "IMAGE_FOLDER", "CAPTIONS", "COMPOUND_CAPTIONS", "SPLIT_FILES", "pmcid_of"]

IMAGE_FOLDER = "caption_T060_filtered_top4_sep_v0_subfigures"
#: Where ``images.zip`` may have been unpacked: in place (the loading script's layout) or into ``images/``.
IMAGE_FOLDERS = (IMAGE_FOLDER, f"images/{IMAGE_FOLDER}")
CAPTIONS = "pmc_oa.jsonl"
COMPOUND_CAPTIONS = "pmc_oa_beta.jsonl"
#: The early release's split files and the split each stands for (valid is training data: validation is drawn).
SPLIT_FILES = {"train.jsonl": "train", "valid.jsonl": "train", "test.jsonl": "test"}
ARCHIVE = "images.zip"
#: The authors' PMC-CLIP weights, which the Hub repository ships beside the data.
CHECKPOINT = "checkpoint.pt"
_DOCUMENTS = re.compile(r"^(README.*\.md|\.gitattributes|LICENSE.*)$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_PMCID = re.compile(r"^(PMC\d+)_")

#: Parsed JSON-lines indexes by (root, version): built once per process (worker processes keep theirs across
#: chunks), never pickled with the builder.
_INDEXES: dict[tuple[str, str], "_Index"] = {}


def pmcid_of(image: str) -> str | None:
    """The article's PMC id that a PMC-OA image name starts with (``PMC212319_Fig3_4.jpg`` -> ``PMC212319``)."""
    match = _PMCID.match(image)
    return match.group(1) if match else None


@dataclass
class _Row:
    file: str
    line: int  # 1-based
    offset: int  # byte offset of the line, to read it again on demand


@dataclass
class _Index:
    """Where each image's rows are in the JSON-lines files (offsets, not texts: the real files hold 1.65M rows)."""

    captions: dict[str, list[_Row]] = field(default_factory=dict)  # image -> its caption rows
    compound: dict[str, _Row] = field(default_factory=dict)  # image -> its pmc_oa_beta.jsonl row
    published: dict[str, _Row] = field(default_factory=dict)  # image -> its split-file row (split, pmcid)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (where, reason) of unusable lines


def _scan(path: Path):
    """``(line number, offset, object or None, reason)`` for every non-blank line of a JSON-lines file."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                item = json.loads(raw.decode("utf-8-sig"))  # a BOM (Windows editors) before line 1
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                yield number, start, None, f"not a JSON object: {type(err).__name__}: {err}"
                continue
            if not isinstance(item, dict):
                yield number, start, None, f"not a JSON object: a {type(item).__name__}"
                continue
            image = item.get("image")
            if not isinstance(image, str) or not image.strip() or "/" in image or "\\" in image or image in (".", ".."):
                yield number, start, None, f"image {image!r} is not an image file name"
                continue
            yield number, start, item, None


def _read_line(path: Path, row: _Row) -> dict:
    with path.open("rb") as handle:
        handle.seek(row.offset)
        return json.loads(handle.readline().decode("utf-8-sig"))


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class PMCOABuilder(NonDataFiles, SourceBuilder):
    data_files = (ARCHIVE,)  # named by the builder itself: what it unpacks to
    task = "pmc_pairs"
    source = "pmc_oa"
    reading_version = "4"  # 2: the Hub repository's checkpoint.pt dropped as not data; 3: a repeated row kept once;
    # 4: a file starting with a UTF-8 BOM read

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (
            (root / CAPTIONS).is_file() or (root / COMPOUND_CAPTIONS).is_file()
            or any((root / folder).is_dir() for folder in IMAGE_FOLDERS)
        )

    # ------------------------------------------------------------------ the JSON-lines files
    @cached_property
    def image_folder(self) -> str:
        """The folder the images were unpacked to (the first of ``IMAGE_FOLDERS`` present)."""
        return next((f for f in IMAGE_FOLDERS if (self.root / f).is_dir()), IMAGE_FOLDER)

    @cached_property
    def caption_files(self) -> list[str]:
        """The files whose rows are the samples: ``pmc_oa.jsonl``, else the early release's split files."""
        if (self.root / CAPTIONS).is_file():
            return [CAPTIONS]
        return [name for name in SPLIT_FILES if (self.root / name).is_file()]

    def _jsonl_files(self) -> list[str]:
        names = [CAPTIONS, COMPOUND_CAPTIONS, *SPLIT_FILES]
        return [name for name in names if (self.root / name).is_file()]

    @cached_property
    def version(self) -> str:
        """The reading code's version and the JSON-lines files' content: an image's cached samples hold its rows."""
        return dependency_version(self.reading_version, (self.root / name for name in self._jsonl_files()))

    def _index(self) -> _Index:
        key = (str(self.root.resolve()), self.version)
        if key not in _INDEXES:
            _INDEXES.clear()  # one source at a time: the real index is large
            _INDEXES[key] = self._build_index()
        return _INDEXES[key]

    def _build_index(self) -> _Index:
        index = _Index()
        for name in self._jsonl_files():
            role = "captions" if name in self.caption_files else "compound" if name == COMPOUND_CAPTIONS else "split"
            for number, offset, item, reason in _scan(self.root / name):
                if item is None:
                    index.bad.append((record_where(name, str(number)), reason))
                    continue
                row, image = _Row(name, number, offset), item["image"].strip()
                if role == "captions":
                    index.captions.setdefault(image, []).append(row)
                elif role == "compound":
                    index.compound.setdefault(image, row)
                elif SPLIT_FILES[name] == "test" or image not in index.published:
                    index.published[image] = row  # a test row wins over a training row of the same image
        return index

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """Caption-file lines that are not usable rows, and rows whose image is not in the image folder."""
        index = self._index()
        found = list(index.bad)
        for image, rows in index.captions.items():
            path = f"{self.image_folder}/{image}"
            if path not in files:
                found += [
                    (record_where(r.file, str(r.line)), f"missing image: {path} is not in the image folder")
                    for r in rows
                ]
        return sorted(found)

    # ------------------------------------------------------------------ files
    def read_file(self, relpath: str) -> list[Sample | RejectedRecord]:
        if relpath in self._jsonl_files():
            return self._read_jsonl(relpath)
        if relpath == ARCHIVE:
            raise UnusedSourceFile(
                f"not used: the packed images; the builder reads the folder it unpacks to ({IMAGE_FOLDER}/)"
            )
        if _DOCUMENTS.match(relpath):
            return []
        path = PurePosixPath(relpath)
        if path.suffix == ".py" and path.parent.as_posix() == ".":
            raise UnusedSourceFile("not used: the Hub repository's loading script (pmc_oa.py), not data")
        if relpath == CHECKPOINT:
            raise UnusedSourceFile(f"not used: the authors' PMC-CLIP model weights ({CHECKPOINT}), not data")
        if path.parent.as_posix() == self.image_folder and path.suffix.lower() in _IMAGE_SUFFIXES:
            return self._read_image(relpath)
        raise BadSourceFile(
            f"stray file: expected {CAPTIONS}, {COMPOUND_CAPTIONS}, the split files {', '.join(SPLIT_FILES)} or "
            f"{self.image_folder}/<image>.jpg"
        )

    def _read_jsonl(self, relpath: str) -> list:
        """A JSON-lines file, read through: an index file. Its bad lines are named by ``orphan_records``."""
        good = sum(1 for _, _, item, _ in _scan(self.root / relpath) if item is not None)
        if not good:
            raise BadSourceFile("no usable row: no line is a JSON object with an image file name")
        return []

    def _read_image(self, relpath: str) -> list[Sample | RejectedRecord]:
        image = PurePosixPath(relpath).name
        index = self._index()
        rows = index.captions.get(image, [])
        if not rows:
            raise UnusedSourceFile("not used: no caption row refers to this image")
        taken = ", ".join(record_where(r.file, str(r.line)) for r in rows[:3]) + (" ..." if len(rows) > 3 else "")
        try:
            ref, _ = read_image_file(self.root / relpath, relpath)  # blank images rejected too
        except BadSourceFile as err:
            raise BadSourceFile(f"{err.reason} (its caption rows go with it: {taken})") from None
        compound = index.compound.get(image)
        figure_caption = _text(_read_line(self.root / compound.file, compound).get("caption")) if compound else None
        published = index.published.get(image)
        early = _read_line(self.root / published.file, published) if published else {}
        samples, bad, modality = [], [], self.spec().modality
        seen: dict[str, str] = {}  # caption -> the row that gave it
        for n, row in enumerate(rows):
            item = _read_line(self.root / row.file, row)
            where = record_where(row.file, str(row.line))
            caption = _text(item.get("caption"))
            if caption is None:
                bad.append((where, "empty caption"))
                continue
            if caption in seen:
                bad.append((where, f"repeated row: the same image and caption as {seen[caption]} (kept once)"))
                continue
            seen[caption] = where
            own = item if row.file in SPLIT_FILES else early
            split_file = row.file if row.file in SPLIT_FILES else published.file if published else None
            pmcid = _text(own.get("pmcid")) or pmcid_of(image)
            score = item.get("alignment_score")
            samples.append(Sample(
                sample_id=image if n == 0 else f"{image}#{n + 1}",
                source_path=relpath,
                fields={
                    "image": ref, "modality": modality, "caption": caption, "pmcid": pmcid,
                    "figure_caption": figure_caption, "alignment_type": _text(item.get("alignment_type")),
                    "alignment_score": float(score) if isinstance(score, (int, float)) else None,
                    "url_name": _text(own.get("url_name")),
                },
                group_key=f"article:{pmcid}" if pmcid else None,
                published_split=SPLIT_FILES[split_file] if split_file else None,
                content_hash=ref.sha256,  # no label column, so identical images never conflict: copies are grouped
                perceptual_hash=None,  # see the module docstring: figures of one shape are not duplicates
            ))
        if not samples:
            raise BadSourceFile("no usable caption row: " + "; ".join(f"{w}: {r}" for w, r in bad[:5]))
        return [*samples, *(RejectedRecord(where, reason) for where, reason in bad)]
