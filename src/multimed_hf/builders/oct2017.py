"""Kermany OCT2017 (v2, Mendeley/Kaggle) and CellData/OCT (v3): ``{train,test[,val]}/CLASS/CLASS-PATIENT-N.jpeg``.

The tree is read where the archive put it: the folder given, or its ``OCT2017 /`` (Kaggle's ``kermany2018``, with
a trailing space), ``OCT2017/`` (Mendeley v2), ``CellData/OCT/`` or ``ZhangLabData/CellData/OCT/`` (Mendeley v3).
Kaggle's archive holds the tree a second time (``oct2017/OCT2017 /``): that copy is dropped, named, as are v3's
chest X-rays (``CellData/chest_xray/``, the ``kermany_cxr`` source). The class and patient come from the name
(``CNV-1016042-1.jpeg``); a valid image of a class folder under another name is kept with its folder's class and
the patient id the name gives (its one run of 5+ digits, else its stem), noted in the manifest. A partial download
(e.g. only ``train/``) builds with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from multimed_hf.builders._download import NonDataFiles, WrappedTree, strip_tree
from multimed_hf.data.errors import SECOND_COPY, BadSourceFile, UnusedSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["OCT2017Builder", "WRAPPERS"]

#: The Kaggle mirror's val/ holds 32 of the 1,000 published test images: they rejoin test.
_SPLITS = {"train": "train", "test": "test", "val": "test"}
#: The archives' own folders around the tree, most common first.
WRAPPERS = ("OCT2017 ", "OCT2017", "CellData/OCT", "ZhangLabData/CellData/OCT", "oct2017/OCT2017 ")
_NAME = re.compile(r"^(CNV|DME|DRUSEN|NORMAL)-(\d+)-(\d+)\.jpe?g$", re.IGNORECASE)
_PATIENT_DIGITS = re.compile(r"(?<!\d)\d{5,}(?!\d)")


class OCT2017Builder(NonDataFiles, WrappedTree, ImageFolderBuilder):
    task = "diabetic_retinopathy"
    source = "oct2017"
    wrappers = WRAPPERS
    image_suffixes = (".jpeg", ".jpg")

    split_folders = _SPLITS

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        return tuple(cls.spec().label_map["oct_finding"])

    @classmethod
    def _is_tree(cls, folder: Path) -> bool:
        classes = set(cls.class_folders()) - {"NORMAL"}  # chest X-ray split folders hold NORMAL/ too
        return any(
            (folder / split).is_dir() and classes & {p.name for p in (folder / split).iterdir()}
            for split in _SPLITS
        )

    def layout_warnings(self) -> list[str]:
        return ImageFolderBuilder.layout_warnings(self.tree_view())

    def parse_path(self, relpath: str) -> PathInfo:
        inner = strip_tree(relpath, self.tree)
        parts = PurePosixPath(inner or relpath).parts
        if inner is None or len(parts) != 3:
            if "chest_xray" in PurePosixPath(relpath).parts:
                raise UnusedSourceFile(
                    "not used: a chest X-ray of Mendeley v3's archive (CellData/chest_xray/, the kermany_cxr source)"
                )
            if len(parts) > 3 and parts[-3] in _SPLITS and parts[-2] in self.class_folders():
                raise UnusedSourceFile(
                    f"{SECOND_COPY} ({'/'.join(parts[:-3])}/, as in Kaggle's kermany2018 "
                    f"archive); the copy at {self.tree or './'} is read"
                )
            raise BadSourceFile("stray file: expected {train,test,val}/<CLASS>/<CLASS>-<patient>-<n>.jpeg")
        split, folder, name = parts
        if split not in _SPLITS:
            raise BadSourceFile(f"stray file: split folder {split!r} is not one of {sorted(_SPLITS)}")
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
