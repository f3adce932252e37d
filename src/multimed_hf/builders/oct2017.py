"""Kermany OCT2017 (v2, Mendeley/Kaggle) and CellData/OCT (v3): ``{train,test[,val]}/CLASS/CLASS-PATIENT-N.jpeg``."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["OCT2017Builder"]

#: The Kaggle mirror's val/ holds 32 of the 1,000 published test images: they rejoin test.
_SPLITS = {"train": "train", "test": "test", "val": "test"}
_NAME = re.compile(r"^(CNV|DME|DRUSEN|NORMAL)-(\d+)-(\d+)\.jpe?g$", re.IGNORECASE)


class OCT2017Builder(ImageFolderBuilder):
    task = "diabetic_retinopathy"
    source = "oct2017"
    image_suffixes = (".jpeg", ".jpg")

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
        if match is None:
            raise BadSourceFile(f"file name {name!r} does not match CLASS-PATIENTID-N.jpeg")
        if match.group(1).upper() != folder:
            raise BadSourceFile(f"file name class {match.group(1)!r} differs from its folder {folder!r}")
        patient = match.group(2)
        return PathInfo(
            sample_id=PurePosixPath(name).stem,
            labels={"oct_finding": folder},
            group_key=f"patient:{patient}",
            published_split=_SPLITS[split],
            fields={"patient_id": patient},
        )
