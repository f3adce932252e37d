"""CBIS-DDSM mammograms (TCIA): the NBIA download tree of DICOMs beside the case-description CSVs.

Layout: ``CBIS-DDSM/<Mass|Calc>-<Training|Test>_P_<id>_<LEFT|RIGHT>_<CC|MLO>/<study>/<series>/*.dcm`` (the full
mammogram; folders with a trailing ``_<n>`` hold that abnormality's ROI mask and cropped image) and
``{mass,calc}_case_description_{train,test}_set.csv`` (patient_id, left or right breast, image view, pathology,
image file path, ...). The CSVs' paths do not match the NBIA tree, so rows are joined to folders by the path's
first component, which is the full mammogram's folder name. A sample is one full mammogram, stored as a 16-bit grey
PNG (mode ``I;16``) of its stored pixel values, MONOCHROME1 inverted so dense tissue is bright, rendered again when
shards are written. 16-bit rather than a windowed 8-bit image: the release has no agreed display window, and a
window chosen here would clip calcifications for good; a processor windows or rescales. Its label is malignant
when any of its abnormalities is MALIGNANT, else benign (BENIGN_WITHOUT_CALLBACK is benign), counting the rows of
both CSV kinds: a DDSM case with a mass and a calcification is in both sets, its full mammogram under a ``Mass-``
and a ``Calc-`` folder (the same pixels: labelled alike, the two copies are grouped as exact duplicates and share a
split; labelled by their own CSV alone they would disagree, and a label conflict rejects both). Patients group; the
publisher's Training/Test split is kept, and a patient's training images that share the patient with test images
are dropped. The NBIA Data Retriever writes ``CBIS-DDSM/`` and its ``metadata.csv`` into a download folder of
its own (``manifest-<id>/``, or the manifest's name, ``CBIS-DDSM-All-doiJNLP-zzWs5zfZ/``): the tree is found at
the root, or in one such folder under it, and the CSVs at the root, beside the tree or inside it. ``metadata.csv``
beside the tree is read as an index file; the ``.tcia`` manifest the Data Retriever opens, the licence and other
non-data files are ignored, named.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from multimed_hf.builders._ct import RenderedSlices, rendered_ref
from multimed_hf.builders._dicom import read_dicom_pixels
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders._records import dependency_version
from multimed_hf.data.errors import BadSourceFile, IgnoredSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["CBISDDSMBuilder", "CSV_NAME", "FOLDER_NAME"]

CSV_NAME = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$")
FOLDER_NAME = re.compile(r"^(Mass|Calc)-(Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(?:_(\d+))?$")
_SPLIT = {"Training": "train", "Test": "test"}
#: The case-description CSVs' columns the builder reads: a CSV without them labels nothing.
COLUMNS = ("image file path", "pathology")
#: What the NBIA Data Retriever writes beside the tree it downloads (one row per series).
NBIA_METADATA = "metadata.csv"


def mammogram_png(path: Path) -> bytes:
    """The full mammogram's stored pixel values as a 16-bit grey PNG (deterministic bytes); MONOCHROME1 images
    are inverted within BitsStored, so dense tissue is bright in every PNG."""
    ds, pixels = read_dicom_pixels(path, "CBIS-DDSM mammograms")
    if ds.get("Modality") not in ("MG", None):
        raise BadSourceFile(f"modality {ds.get('Modality')!r}: this layout holds mammograms (MG)")
    if pixels.min() < 0 or pixels.max() > 65535:
        raise BadSourceFile(f"pixel values {pixels.min()}..{pixels.max()} do not fit 16-bit grey")
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # stored inverted: dense tissue bright, as MONOCHROME2
        top = (1 << int(ds.get("BitsStored", 16))) - 1
        if pixels.max() > top:
            raise BadSourceFile(f"pixel values up to {pixels.max()} exceed BitsStored {ds.get('BitsStored')}")
        pixels = top - pixels.astype(np.int64)
    if pixels.min() == pixels.max():
        raise BadSourceFile("image is one flat value")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint16)).save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


class CBISDDSMBuilder(NonDataFiles, RenderedSlices, SourceBuilder):
    task = "breast_cancer"
    source = "cbis_ddsm"
    reading_version = "7"  # 4: a DICOM file cut short is rejected as truncated (builders._dicom); 5: an empty
    # file and a file that is no DICOM (no DICM prefix) named so; 6: a CSV without COLUMNS is unusable, not kept;
    # 7: a row naming a folder of the other split than its CSV's is not used (it labelled a test mammogram from a
    # train CSV); a path written with backslashes read as one with slashes

    @classmethod
    def detect(cls, root: Path) -> bool:
        tree = cls._tree(root)
        return bool(cls._csv_paths(root)) and any(FOLDER_NAME.match(p.name) for p in tree.iterdir() if p.is_dir())

    @staticmethod
    def _tree(root: Path) -> Path:
        """The folder holding the case folders: ``CBIS-DDSM/`` as NBIA writes it, at the root or in the Data
        Retriever's download folder under it (``manifest-<id>/CBIS-DDSM/``), else the root itself."""
        if (root / "CBIS-DDSM").is_dir():
            return root / "CBIS-DDSM"
        wrapped = sorted(p for p in root.glob("*/CBIS-DDSM") if p.is_dir())
        return wrapped[0] if wrapped else root

    @classmethod
    def _csv_paths(cls, root: Path) -> list[Path]:
        """The case-description CSVs: at the root, beside the tree (in the download folder) or inside it. Files
        only: a folder named like a CSV (what some unzip tools leave) is none; its files are read as strays."""
        folders = dict.fromkeys((root, *cls._tree_and_parent(root)))  # in order, once each
        return [
            p for folder in folders for p in sorted(folder.glob("*.csv")) if CSV_NAME.match(p.name) and p.is_file()
        ]

    @classmethod
    def _tree_and_parent(cls, root: Path) -> tuple[Path, ...]:
        """The tree's folder, after the folder holding it where that is inside the root."""
        tree = cls._tree(root)
        return (tree.parent, tree) if tree != root else (tree,)

    def _relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @cached_property
    def _index_files(self) -> set[str]:
        """Relative paths of the case-description CSVs and of the Data Retriever's ``metadata.csv``s."""
        beside = self._tree_and_parent(self.root)[:-1]  # the download folder the Data Retriever wrote, if any
        metadata = {self._relpath(folder / NBIA_METADATA) for folder in (self.root, *beside)}
        return {self._relpath(p) for p in self._csv_paths(self.root)} | metadata

    def read_first(self, files: Sequence[str]) -> set[str]:
        """The CSVs (and ``metadata.csv``): a ``--strict`` build stops at a broken CSV, not at an image it labels."""
        return self._index_files.intersection(files)

    @property
    def version(self) -> str:  # the CSVs label every image: editing one re-validates them
        return dependency_version(self.reading_version, self._csv_paths(self.root))

    @cached_property
    def _csvs(self) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str], list[tuple[str, str]]]:
        """``(rows, unreadable, elsewhere)``: full-mammogram folder -> its ``(where, pathology)`` CSV rows, from the
        CSVs that can be read (a row naming a folder of the other split than its CSV's aside, in ``elsewhere`` with
        why: ``(where, reason)``); and each CSV that cannot (not UTF-8 text, not CSV, no header or a header without
        ``COLUMNS``, e.g. saved with semicolons) -> why, by its relative path. An unreadable CSV gives no row: it is
        rejected as it is read, and so is each mammogram it would label."""
        rows: dict[str, list[tuple[str, str]]] = {}
        unreadable: dict[str, str] = {}
        elsewhere: list[tuple[str, str]] = []  # rows naming a folder of the other split: not used
        for path in self._csv_paths(self.root):
            where = self._relpath(path)
            csv_split = CSV_NAME.match(path.name).group(2)
            found = []
            try:
                with path.open(newline="", encoding="utf-8-sig") as handle:
                    reader = csv.DictReader(handle)
                    if not reader.fieldnames:
                        unreadable[where] = "empty: it has no header row"
                        continue
                    missing = [c for c in COLUMNS if c not in reader.fieldnames]
                    if missing:
                        unreadable[where] = (f"unusable: it lacks the column(s) {missing}; its header is "
                                             f"{reader.fieldnames}")
                        continue
                    for n, row in enumerate(reader, start=2):
                        image_path = (row.get("image file path") or "").strip().replace("\\", "/")
                        folder = PurePosixPath(image_path).parts[0] if image_path else ""
                        match = FOLDER_NAME.match(folder)
                        if match and _SPLIT[match.group(2)] != csv_split:  # it would label the other split's image
                            elsewhere.append((f"{where}:row {n}", f"not used: it names {folder}, a folder of the "
                                              f"{_SPLIT[match.group(2)]} set, in a {csv_split} set CSV"))
                            continue
                        found.append((folder, f"{where}:row {n}", (row.get("pathology") or "").strip()))
            except UnicodeDecodeError as err:
                unreadable[where] = f"not UTF-8 text: {err}"
                continue
            except csv.Error as err:
                unreadable[where] = f"not readable CSV: {err}"
                continue
            for folder, at, pathology in found:
                rows.setdefault(folder, []).append((at, pathology))
        return rows, unreadable, elsewhere

    @property
    def _rows(self) -> dict[str, list[tuple[str, str]]]:
        """Full-mammogram folder -> its ``(where, pathology)`` rows in the CSVs that can be read (``_csvs``)."""
        return self._csvs[0]

    def _unreadable_csv(self, lesion: str, split: str, patient: str, side: str, view: str) -> str | None:
        """Why a mammogram cannot be labelled: an unreadable CSV of its split that holds its rows, or may (the CSV
        of the other lesion kind, where the tree holds the same mammogram under that kind too). None if none."""
        tree = self._tree(self.root)
        for where, why in sorted(self._csvs[1].items()):
            kind, csv_split = CSV_NAME.match(PurePosixPath(where).name).groups()
            if _SPLIT[split] != csv_split:
                continue
            other = kind.capitalize()
            if other == lesion or (tree / f"{other}-{split}_{patient}_{side}_{view}").is_dir():
                return f"no label: {where}, the case-description CSV that labels it, is {why}"
        return None

    @cached_property
    def _mammogram_rows(self) -> dict[tuple[str, ...], list[tuple[str, str]]]:
        """(split, patient, side, view) -> the CSV rows of every abnormality on that mammogram, mass and calc alike:
        a DDSM case with both kinds is in both sets, its full mammogram under a ``Mass-`` and a ``Calc-`` folder."""
        rows: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for folder, found in self._rows.items():
            match = FOLDER_NAME.match(folder)
            if match is not None and match.group(6) is None:
                rows.setdefault(match.group(2, 3, 4, 5), []).extend(found)
        return rows

    def render(self, file: Path, params: Mapping[str, str]) -> bytes:
        return mammogram_png(file)

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        folders = {self._case_folder(f) for f in files} - {None}
        found = []
        for folder, rows in sorted(self._rows.items()):
            if folder not in folders:
                for where, _ in rows:
                    reason = "no image file path" if not folder else f"missing image: no folder {folder!r} in the tree"
                    found.append((where, reason))
        return found + self._csvs[2]

    def _case_folder(self, relpath: str) -> str | None:
        parts = PurePosixPath(relpath).parts
        tree = self._tree(self.root).relative_to(self.root).parts
        if len(parts) <= len(tree) + 1 or parts[: len(tree)] != tree:
            return None
        return parts[len(tree)]

    def read_file(self, relpath: str) -> list[Sample]:
        name = PurePosixPath(relpath).name
        if name.lower().endswith(".tcia"):  # e.g. CBIS-DDSM-All-doiJNLP-zzWs5zfZ.tcia, from the TCIA page
            raise IgnoredSourceFile(f"{name} is the TCIA manifest the NBIA Data Retriever downloads from, not data")
        if relpath in self._index_files:
            if relpath in self._csvs[1]:
                raise BadSourceFile(f"{name} is {self._csvs[1][relpath]}")
            return []  # a case-description CSV, or the NBIA Data Retriever's list of the series it wrote
        if CSV_NAME.match(name):  # e.g. in a folder of its own name, as some unzip tools leave it
            raise BadSourceFile(
                f"a case-description CSV where none is read ({PurePosixPath(relpath).parent}/): move it to the root, "
                "beside CBIS-DDSM/ or into it"
            )
        folder = self._case_folder(relpath)
        match = FOLDER_NAME.match(folder or "")
        if match is None or not name.lower().endswith(".dcm"):
            raise BadSourceFile(
                "stray file: expected CBIS-DDSM/<Mass|Calc>-<Training|Test>_P_<id>_<side>_<view>/.../*.dcm"
            )
        lesion, split, patient, side, view, abnormality = match.groups()
        if abnormality is not None:
            raise UnusedSourceFile(
                f"not used: ROI mask or cropped lesion of abnormality {abnormality}, not a full mammogram"
            )
        unusable = self._unreadable_csv(lesion, split, patient, side, view)
        if unusable is not None:
            raise BadSourceFile(unusable)
        if not self._rows.get(folder):
            own = f"{lesion.lower()}_case_description_{_SPLIT[split]}_set.csv"
            read = {PurePosixPath(p).name for p in self._index_files}
            absent = "" if own in read else f" (the source has no {own} at the root, beside CBIS-DDSM/ or in it)"
            raise BadSourceFile(f"no case-description CSV row names {folder!r}{absent}")
        rows = self._mammogram_rows[(split, patient, side, view)]  # its mass and its calcification rows
        pathology = self.spec().label_map["malignancy"]  # the registry's map of the CSVs' pathology names
        unknown = sorted({p for _, p in rows if p not in pathology})
        if unknown:
            where = ", ".join(w for w, p in rows if p not in pathology)
            raise BadSourceFile(f"pathology {unknown} ({where}) is not one of {sorted(pathology)}")
        label = "malignant" if any(pathology[p] == "malignant" for _, p in rows) else "benign"
        png = mammogram_png(self.root / relpath)
        return [Sample(
            sample_id=f"{folder}/{name}", source_path=relpath,
            fields={
                "image": rendered_ref(relpath, png, view=view), "modality": self.spec().modality,
                "malignancy": label, "patient_id": patient,
            },
            group_key=f"patient:{patient}", published_split=_SPLIT[split],
            content_hash=hashlib.sha256(png).hexdigest(),
        )]
