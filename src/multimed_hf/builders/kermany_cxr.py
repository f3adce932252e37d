"""Kermany pediatric chest X-ray: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

Two namings, one per release: Kaggle's ``personN_bacteria_M.jpeg`` / ``personN_virus_M.jpeg`` and
``IM-XXXX-YYYY.jpeg`` / ``NORMAL2-IM-XXXX-YYYY.jpeg`` (the real train/NORMAL also holds 133
``IM-XXXX-0001-000N.jpeg``, e.g. ``IM-0505-0001-0002.jpeg``); Mendeley's ``NORMAL|BACTERIA|VIRUS-<patient>-<n>.jpeg``.
The label (normal / bacterial / viral pneumonia) and the patient come from the file name. A valid image in
``NORMAL/`` whose name follows none of these is kept (normal, its own patient: the file name's stem) with a
note in the manifest; in ``PNEUMONIA/`` such a name cannot tell bacterial from viral and is rejected for that.
Kaggle's ``val/`` (16 images) is too small to validate on: it is training data, and validation is drawn from
training patients. A partial download (e.g. only ``train/``) builds with a warning.

The tree is read where the archive put it: the folder given, or its ``chest_xray/`` (Kaggle) or
``CellData/chest_xray/`` (Mendeley v3). Kaggle's archive also holds a second copy (``chest_xray/chest_xray/``) and
macOS metadata (``__MACOSX/``): the copy is dropped, named, and the metadata ignored (as are ``.DS_Store`` files),
never counted as errors; v3's OCT images (``CellData/OCT/``, the ``oct2017`` source) are dropped, named.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from multimed_hf.builders._download import NonDataFiles, WrappedTree, strip_tree
from multimed_hf.data.errors import SECOND_COPY, BadSourceFile, UnusedSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["KermanyCXRBuilder"]

_SPLITS = {"train": "train", "val": "train", "test": "test"}
_FOLDERS = ("NORMAL", "PNEUMONIA")
#: The archives' own folders around the tree.
WRAPPERS = ("chest_xray", "CellData/chest_xray", "ZhangLabData/CellData/chest_xray")
_KAGGLE_PNEUMONIA = re.compile(r"^person(\d+)_(bacteria|virus)_(\d+)\.jpe?g$", re.IGNORECASE)
_KAGGLE_NORMAL = re.compile(r"^(?:NORMAL2-)?IM-(\d+)-(\d+)(?:-(\d+))?\.jpe?g$", re.IGNORECASE)
_MENDELEY = re.compile(r"^(NORMAL|BACTERIA|VIRUS)-(\d+)-(\d+)\.jpe?g$", re.IGNORECASE)


def _name_facts(name: str) -> tuple[str, str] | None:
    """``(publisher label, patient id)`` from a file name of either release, or None."""
    if match := _KAGGLE_PNEUMONIA.match(name):
        return match.group(2).lower(), f"person{int(match.group(1))}"
    if match := _KAGGLE_NORMAL.match(name):
        # NORMAL2-IM-0007 and IM-0007 are read as one patient: nothing shows the second batch renumbered, and
        # grouping two people costs only split balance, while splitting one person costs a leak
        return "NORMAL", f"IM-{match.group(1)}"
    if match := _MENDELEY.match(name):
        label = match.group(1).upper()
        return (label if label == "NORMAL" else label.lower()), match.group(2)
    return None


class KermanyCXRBuilder(NonDataFiles, WrappedTree, ImageFolderBuilder):
    task = "radiographic_findings"
    source = "kermany_cxr"
    wrappers = WRAPPERS
    image_suffixes = (".jpeg", ".jpg")

    split_folders = _SPLITS

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        return _FOLDERS

    @staticmethod
    def _is_tree(folder: Path) -> bool:
        """A split folder holding PNEUMONIA/ (OCT2017's split folders hold NORMAL/ too, never PNEUMONIA/)."""
        return any((folder / split / "PNEUMONIA").is_dir() for split in _SPLITS)

    def layout_warnings(self) -> list[str]:
        return ImageFolderBuilder.layout_warnings(self.tree_view())

    def parse_path(self, relpath: str) -> PathInfo:
        inner = strip_tree(relpath, self.tree)
        parts = PurePosixPath(inner if inner is not None else relpath).parts
        if inner is None or len(parts) != 3 or parts[0] not in _SPLITS:
            if "OCT" in PurePosixPath(relpath).parts:
                raise UnusedSourceFile("not used: an OCT image of Mendeley v3's archive (CellData/OCT/, the oct2017 "
                                       "source)")
            if len(parts) > 3 and parts[-3] in _SPLITS and parts[-2] in _FOLDERS:
                raise UnusedSourceFile(
                    f"{SECOND_COPY} ({'/'.join(parts[:-3])}/, as in Kaggle's chest_xray "
                    f"archive); the copy at {self.tree or './'} is read"
                )
            raise BadSourceFile("stray file: expected {train,val,test}/{NORMAL,PNEUMONIA}/<image>.jpeg")
        split, folder, name = parts
        if folder not in _FOLDERS:
            raise BadSourceFile(f"class folder {folder!r} is not one of {list(_FOLDERS)}")
        facts = _name_facts(name)
        note = ""
        if facts is None and folder == "PNEUMONIA":
            raise BadSourceFile(
                f"file name {name!r} matches neither personN_bacteria|virus_M.jpeg nor BACTERIA|VIRUS-<patient>-<n>"
                ".jpeg, and its PNEUMONIA folder does not say bacterial or viral: no label"
            )
        if facts is None:
            facts = "NORMAL", PurePosixPath(name).stem
            note = (
                f"name variant: {name!r} follows no known naming; kept as normal (its NORMAL folder), patient id "
                f"{facts[1]!r} (the file name's stem, a group of its own)"
            )
        label, patient = facts
        if (label == "NORMAL") != (folder == "NORMAL"):
            raise BadSourceFile(f"file name says {label!r}, its folder says {folder!r}")
        return PathInfo(
            sample_id=f"{split}/{PurePosixPath(name).stem}",
            labels={"finding": label},
            group_key=f"patient:{patient}",
            published_split=_SPLITS[split],
            fields={"patient_id": patient},
            note=note,
        )
