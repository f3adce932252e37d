"""Image folders indexed by CSV sheets (APTOS 2019, EyePACS, RSNA bone age): one sheet row per image, keyed by id.

A layout names its sheets (by file name, or by header where the publisher's names vary) and, for each sheet, the
folder its images sit in. An image gets its labels from the row of its sheet whose id is the image's file stem;
every image file is decoded (``read_image_file``). What goes wrong is named per file in the manifest: an image with no row, a
row with a bad value, rows that disagree, an image its sheet lists without a label (a publisher test list), a
sheet that cannot be read; and a row whose image is missing is an orphan record (``<sheet>:row <n>``).

Sheets are read into every sample, so their bytes join the builder's version: editing a sheet re-validates.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import ClassVar, Mapping

from multimed_hf.builders._records import update_with_content
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.images import read_image_file
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["Sheet", "CsvImageBuilder", "read_sheet"]


@dataclass(frozen=True)
class Sheet:
    """How one index CSV of a layout is read."""

    #: The sheet's part of the release ("train", "validation", "test"): the prefix of its sample ids.
    role: str
    #: Our name for a column -> the publisher's column name; ``"id"`` is required (its value is the image stem).
    columns: Mapping[str, str]
    #: Folder (relative to the sheet's folder) holding the images it indexes, or None for a sheet that indexes
    #: no images (a submission template, whose labels are placeholders).
    images: str | None = None
    #: False for a publisher's test list: its images are named but carry no labels.
    labelled: bool = True
    #: The publisher's split of its images ("train" / "test"). A "train" sheet counts as train only beside a
    #: labelled "test" sheet: with no labelled test set, a test split is drawn from its groups instead.
    published_split: str | None = None


@dataclass
class _Index:
    """One sheet as read: its rows by id (row number, fields or the reason the row is bad)."""

    relpath: str
    sheet: Sheet
    scope: str | None  # folder prefix ("" = the root, else ending in "/") of its images, or None
    rows: dict[str, list[tuple[int, dict | str]]] = field(default_factory=dict)
    blank_id_rows: list[int] = field(default_factory=list)
    error: str | None = None


def read_sheet(data: bytes, name: str) -> tuple[list[str], list[dict[str, str] | None]]:
    """Header and rows of a CSV sheet (UTF-8, optional BOM; names and values stripped; a blank line is None,
    keeping row numbers), or ``BadSourceFile``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadSourceFile(f"{name} is not UTF-8 text: {err}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        lines = list(reader)
    except csv.Error as err:
        raise BadSourceFile(f"{name}: not readable CSV: {err}") from None
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise BadSourceFile(f"{name} is empty: no header row")
    header = [cell.strip() for cell in lines[0]]
    rows = []
    for line in lines[1:]:
        if not any(cell.strip() for cell in line):
            rows.append(None)  # a blank line keeps its row number
            continue
        rows.append({h: (line[i].strip() if i < len(line) else "") for i, h in enumerate(header)})
    return header, rows


class CsvImageBuilder(SourceBuilder):
    """A source of images named ``<id>.<ext>`` whose labels sit in CSV sheets. Subclasses set ``task``,
    ``source``, ``image_suffixes`` and ``sheets`` (or override ``sheet_for``), and implement ``parse_row``
    (and ``parse_image_name`` where the name carries facts)."""

    image_suffixes: ClassVar[tuple[str, ...]] = (".png",)
    #: The layout's sheets by file name (relative to the root).
    sheets: ClassVar[Mapping[str, Sheet]] = {}
    #: Suffixes (lower case) of the files that may be sheets; ``read_sheet_file`` reads each.
    sheet_suffixes: ClassVar[tuple[str, ...]] = (".csv",)
    #: How many folders below the root sheets are looked for.
    sheet_depth: ClassVar[int] = 1

    def __init__(self, root: str | os.PathLike):
        super().__init__(root)
        digest = hashlib.sha256()
        for relpath in self._sheet_candidates():
            digest.update(relpath.encode() + b"\0")
            update_with_content(digest, self.root / relpath)
        # +index-2: a labelled sheet naming an image wins over an unlabelled list wherever the two sit (``_index_of``)
        self.version = f"{type(self).version}+sheets-{digest.hexdigest()[:12]}+index-2"
        self._indexes: dict[str, _Index] | None = None

    # --- what subclasses say ----------------------------------------------------------------------------------
    def sheet_for(self, relpath: str, header: list[str]) -> Sheet | None:
        """The layout's sheet this CSV is, or None (a stray CSV). By file name by default."""
        return self.sheets.get(relpath)

    def parse_row(self, row: dict[str, str], sheet: Sheet) -> dict:
        """A sheet row's registry fields (labels as canonical names); ``BadSourceFile`` for a bad value."""
        raise NotImplementedError

    def parse_image_name(self, stem: str) -> tuple[dict, str | None]:
        """Fields and group key the image's name gives; ``BadSourceFile`` for a name outside the layout."""
        return {}, None

    def image_scope(self, relpath: str, sheet: Sheet) -> str | None:
        """The folder prefix of the images ``sheet`` (at ``relpath``) indexes, or None."""
        if sheet.images is None:
            return None
        parent = PurePosixPath(relpath).parent
        folder = (parent / sheet.images).as_posix()
        return "" if folder in (".", "") else folder.rstrip("/") + "/"

    def unindexed_reason(self, relpath: str) -> str:
        """The manifest's reason for an image in no sheet's folder."""
        folders = sorted(i.scope or "./" for i in self._load().values() if i.scope is not None)
        return f"no label: an image outside every indexed folder (the sheets here index {folders})"

    def read_sheet_file(self, relpath: str) -> tuple[list[str], list[dict[str, str] | None]]:
        """Header and rows of the sheet at ``relpath``, as ``read_sheet`` gives them, or ``BadSourceFile``."""
        return read_sheet((self.root / relpath).read_bytes(), relpath)

    # --- the sheets ---------------------------------------------------------------------------------------------
    def _sheet_candidates(self) -> list[str]:
        """Sheet files (``sheet_suffixes``) at the root and down to ``sheet_depth`` folders below it (where
        publishers put their sheets), in name order, each folder's before the next folder's."""

        def scan(path: str, prefix: str, depth: int):
            for entry in sorted(os.scandir(path), key=lambda e: e.name):
                if entry.is_file() and entry.name.lower().endswith(self.sheet_suffixes):
                    yield prefix + entry.name
                elif entry.is_dir() and depth < self.sheet_depth:
                    yield from scan(entry.path, f"{prefix}{entry.name}/", depth + 1)

        return list(scan(str(self.root), "", 0))

    def _load(self) -> dict[str, _Index]:
        if self._indexes is not None:
            return self._indexes
        indexes = {}
        for relpath in self._sheet_candidates():
            try:
                header, rows = self.read_sheet_file(relpath)
            except BadSourceFile as err:
                header, rows, error = [], [], err.reason
            else:
                error = None
            sheet = self.sheet_for(relpath, header)
            if sheet is None:
                continue  # a CSV that is no sheet of this layout: reported as a stray file
            index = _Index(relpath, sheet, self.image_scope(relpath, sheet), error=error)
            missing = [c for c in sheet.columns.values() if c not in header]
            if index.error is None and missing:
                index.error = f"{relpath} lacks the column(s) {missing}; its header is {header}"
            if index.error is None:
                id_column = sheet.columns["id"]
                for n, row in enumerate(rows, start=1):
                    if row is None:
                        continue
                    key = row[id_column]
                    if not key:
                        index.blank_id_rows.append(n)
                        continue
                    try:
                        parsed: dict | str = self.parse_row(row, sheet) if sheet.labelled else {}
                    except BadSourceFile as err:
                        parsed = f"bad row: {relpath} row {n}: {err.reason}"
                    index.rows.setdefault(key, []).append((n, parsed))
            indexes[relpath] = index
        self._indexes = indexes
        return indexes

    def _index_of(self, relpath: str) -> _Index | None:
        """The sheet whose image folder holds ``relpath``: the deepest of those that label its id, else the deepest
        (where folders nest). A labelled sheet wins over an unlabelled list wherever the two sit: RSNA's ground truth
        (``Bone age ground truth.xlsx``) dropped beside Kaggle's ``boneage-test-dataset.csv`` (ids, no ages)."""
        stem = PurePosixPath(relpath).stem
        covering = [i for i in self._load().values() if i.scope is not None and relpath.startswith(i.scope)]
        labelling = [i for i in covering if i.error is None and i.sheet.labelled and stem in i.rows]
        return max(labelling or covering, key=lambda i: len(i.scope), default=None)

    def _published_split(self, index: _Index) -> str | None:
        split = index.sheet.published_split
        if split == "train":
            labelled_test = any(
                i.sheet.published_split == "test" and i.sheet.labelled and i.error is None
                for i in self._load().values()
            )
            return "train" if labelled_test else None
        return split

    # --- reading ------------------------------------------------------------------------------------------------
    def read_file(self, relpath: str) -> list[Sample]:
        indexes = self._load()
        if relpath in indexes:
            if indexes[relpath].error is not None:
                raise BadSourceFile(indexes[relpath].error)
            return []  # an index sheet: read, no sample of its own
        path = PurePosixPath(relpath)
        if path.suffix.lower() not in self.image_suffixes:
            raise BadSourceFile(
                f"stray file: neither an index sheet of this layout nor an image ({', '.join(self.image_suffixes)})"
            )
        index = self._index_of(relpath)
        if index is None:
            raise BadSourceFile(self.unindexed_reason(relpath))
        if index.error is not None:
            raise BadSourceFile(f"no label: its sheet {index.relpath} is unusable ({index.error})")
        stem = path.stem
        name_fields, group_key = self.parse_image_name(stem)
        rows = index.rows.get(stem)
        if not rows:
            raise BadSourceFile(f"no label: id {stem!r} has no row in {index.relpath}")
        if not index.sheet.labelled:
            raise BadSourceFile(
                f"unlabelled: {index.relpath} (the publisher's {index.sheet.role} list) names {stem!r} without a label"
            )
        for _, parsed in rows:
            if isinstance(parsed, str):
                raise BadSourceFile(parsed)
        if len({json.dumps(parsed, sort_keys=True) for _, parsed in rows}) > 1:
            numbers = ", ".join(str(n) for n, _ in rows)
            raise BadSourceFile(f"conflicting rows: id {stem!r} has rows {numbers} in {index.relpath} that disagree")
        ref, phash = read_image_file(self.root / relpath, relpath)  # blank images rejected too
        fields = {"image": ref, "modality": self.spec().modality, **name_fields, **rows[0][1]}
        return [Sample(
            sample_id=f"{index.sheet.role}/{stem}", source_path=relpath, fields=fields, group_key=group_key,
            published_split=self._published_split(index), content_hash=ref.sha256, perceptual_hash=phash,
        )]

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """Rows whose image is not in their sheet's folder, and rows with no id."""
        records = []
        for index in self._load().values():
            if index.error is not None or index.scope is None or index.relpath not in files:
                continue
            stems = {
                PurePosixPath(f).stem for f in files
                if f.startswith(index.scope) and PurePosixPath(f).suffix.lower() in self.image_suffixes
            }
            where = index.scope or "the root"
            for n in index.blank_id_rows:
                records.append((f"{index.relpath}:row {n}", f"no id: the row's {index.sheet.columns['id']} is empty"))
            for key, rows in index.rows.items():
                if key in stems:
                    continue
                for n, _ in rows:
                    records.append((
                        f"{index.relpath}:row {n}",
                        f"missing image: no {key}{self.image_suffixes[0]} under {where}",
                    ))
        return sorted(records, key=lambda r: (r[0].split(":row ")[0], int(r[0].split(":row ")[1])))
