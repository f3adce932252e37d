"""Kermany OCT2017 (v2, Mendeley/Kaggle) and CellData/OCT (v3): ``{train,test[,val]}/CLASS/CLASS-PATIENT-N.jpeg``.

The class and patient come from the name (``CNV-1016042-1.jpeg``); a valid image of a class folder under another
name is kept with its folder's class and the patient id the name gives (its one run of 5+ digits, else its stem),
noted in the manifest. A partial download (e.g. only ``train/``) builds with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["OCT2017Builder"]

#: The Kaggle mirror's val/ holds 32 of the 1,000 published test images: they rejoin test.
_SPLITS = {"train": "train", "test": "test", "val": "test"}
_NAME = re.compile(r"^(CNV|DME|DRUSEN|NORMAL)-(\d+)-(\d+)\.jpe?g$", re.IGNORECASE)
_PATIENT_DIGITS = re.compile(r"(?<!\d)\d{5,}(?!\d)")


class OCT2017Builder(ImageFolderBuilder):
    task = "diabetic_retinopathy"
    source = "oct2017"
    image_suffixes = (".jpeg", ".jpg")

    split_folders = _SPLITS

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        return tuple(cls.spec().label_map["oct_finding"])

    @classmethod
    def detect(cls, root: Path) -> bool:
        classes = set(cls.spec().label_map["oct_finding"])
        return any(
            (root / split).is_dir() and classes <= {p.name for p in (root / split).iterdir()}
            for split in ("train", "test")
        )

    def parse_path(self, relpath: str) -> PathInfo:
        parts = PurePosixPath(relpath).parts
        if len(parts) != 3 or parts[0] not in _SPLITS:
            raise BadSourceFile("stray file: expected {train,test,val}/<CLASS>/<CLASS>-<patient>-<n>.jpeg")
        split, folder, name = parts
        classes = self.spec().label_map["oct_finding"]
        if folder not in classes:
            raise BadSourceFile(f"class folder {folder!r} is not one of {sorted(classes)}")
        match = _NAME.match(name)
        note = ""
        if match is None:
            digits = _PATIENT_DIGITS.findall(PurePosixPath(name).stem)
            patient = digits[0] if len(digits) == 1 else PurePosixPath(name).stem
            note = (
                f"name variant: {name!r} is not CLASS-PATIENTID-N.jpeg; kept as {folder} (its folder), patient id "
                f"{patient!r}"
            )
        elif match.group(1).upper() != folder:
            raise BadSourceFile(f"file name class {match.group(1)!r} differs from its folder {folder!r}")
        else:
            patient = match.group(2)
        return PathInfo(
            sample_id=PurePosixPath(name).stem,
            labels={"oct_finding": folder},
            group_key=f"patient:{patient}",
            published_split=_SPLITS[split],
            fields={"patient_id": patient},
            note=note,
        )
