"""Kermany pediatric chest X-ray: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

Two namings, one per release: Kaggle's ``personN_bacteria_M.jpeg`` / ``personN_virus_M.jpeg`` and
``IM-XXXX-YYYY.jpeg`` / ``NORMAL2-IM-XXXX-YYYY.jpeg``; Mendeley's ``NORMAL|BACTERIA|VIRUS-<patient>-<n>.jpeg``.
The label (normal / bacterial / viral pneumonia) and the patient come from the file name. Kaggle's ``val/``
(16 images) is too small to validate on: it is training data, and validation is drawn from training patients.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["KermanyCXRBuilder"]

_SPLITS = {"train": "train", "val": "train", "test": "test"}
_FOLDERS = ("NORMAL", "PNEUMONIA")
_KAGGLE_PNEUMONIA = re.compile(r"^person(\d+)_(bacteria|virus)_(\d+)\.jpe?g$", re.IGNORECASE)
_KAGGLE_NORMAL = re.compile(r"^(?:NORMAL2-)?IM-(\d+)-(\d+)\.jpe?g$", re.IGNORECASE)
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


class KermanyCXRBuilder(ImageFolderBuilder):
    task = "radiographic_findings"
    source = "kermany_cxr"
    image_suffixes = (".jpeg", ".jpg")

    @classmethod
    def detect(cls, root: Path) -> bool:
        return all((root / split).is_dir() for split in ("train", "test")) and any(
            set(_FOLDERS) <= {p.name for p in (root / split).iterdir()} for split in ("train", "test")
        )

    def parse_path(self, relpath: str) -> PathInfo:
        parts = PurePosixPath(relpath).parts
        if parts[0] == "chest_xray":
            raise BadSourceFile("stray file: chest_xray/ inside chest_xray/ is the Kaggle archive's nested second copy")
        if parts[0] == "__MACOSX":
            raise BadSourceFile("stray file: __MACOSX/ holds the archive's macOS metadata, not images")
        if len(parts) != 3 or parts[0] not in _SPLITS:
            raise BadSourceFile("stray file: expected {train,val,test}/{NORMAL,PNEUMONIA}/<image>.jpeg")
        split, folder, name = parts
        if folder not in _FOLDERS:
            raise BadSourceFile(f"class folder {folder!r} is not one of {list(_FOLDERS)}")
        facts = _name_facts(name)
        if facts is None:
            raise BadSourceFile(
                f"file name {name!r} matches neither personN_bacteria|virus_M.jpeg, [NORMAL2-]IM-XXXX-YYYY.jpeg "
                "nor NORMAL|BACTERIA|VIRUS-<patient>-<n>.jpeg"
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
        )
