"""BreakHis v1 (UFPR VRI): ``histology_slides/breast/{benign,malignant}/SOB/<subtype>/<patient folder>/<mag>X/*.png``.

A file is ``SOB_<B|M>_<subtype letters>-<year>-<slide id>-<magnification>-<seq>.png`` inside the patient folder
``SOB_<B|M>_<subtype letters>_<year>-<slide id>``; the path says the class, subtype, patient and magnification
twice, and a file whose name and folders disagree is rejected, naming the disagreement; a valid image in a patient
folder under another name is kept with what its folders say, noted in the manifest. The label columns are
``malignancy`` and ``subtype``; ``magnification`` is ``40X``/``100X``/``200X``/``400X``.

The tree is read where the archive put it: the folder given, or its ``BreaKHis_v1/`` (the tarball) or
``BreaKHis_v1/BreaKHis_v1/`` (the Kaggle mirror, which adds a community ``Folds.csv`` at its top: dropped, named,
since splits here are drawn by patient). Non-data files (``Thumbs.db``, README) are ignored, named.

Grouping is by patient, never by image: the group is the id without its slide letters (``14-22549AB``,
``14-22549CD`` and ``14-22549G`` are one group, since nothing shows they are different people and splitting
one person leaks), so one patient filed under two subtypes (14-13412 as DC and LC) is one group too. The
``patient_id`` column keeps the folder's id as published.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from multimed_hf.builders._download import NonDataFiles, WrappedTree, strip_tree
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["BreakHisBuilder", "SUBTYPE_LETTERS"]

BASE = ("histology_slides", "breast")
#: The archives' own folders around the tree: the tarball's, then the Kaggle mirror's.
WRAPPERS = ("BreaKHis_v1", "BreaKHis_v1/BreaKHis_v1")
#: The subtype letters of BreakHis names, by subtype folder.
SUBTYPE_LETTERS = {
    "adenosis": "A", "fibroadenoma": "F", "phyllodes_tumor": "PT", "tubular_adenoma": "TA",
    "ductal_carcinoma": "DC", "lobular_carcinoma": "LC", "mucinous_carcinoma": "MC", "papillary_carcinoma": "PC",
}
_CLASS_LETTER = {"benign": "B", "malignant": "M"}
_FOLDER = re.compile(r"^SOB_([BM])_([A-Z]+)_(\d+-\d+)([A-Z]*)$")
_NAME = re.compile(r"^SOB_([BM])_([A-Z]+)-(\d+-\d+)([A-Z]*)-(\d+)-(\d+)\.png$", re.IGNORECASE)
_MAGNIFICATIONS = ("40X", "100X", "200X", "400X")


class BreakHisBuilder(NonDataFiles, WrappedTree, ImageFolderBuilder):
    task = "breast_cancer"
    source = "breakhis"
    wrappers = WRAPPERS
    image_suffixes = (".png",)

    @staticmethod
    def _is_tree(folder: Path) -> bool:
        base = folder.joinpath(*BASE)
        return base.is_dir() and any((base / c).is_dir() for c in _CLASS_LETTER)

    def layout_warnings(self) -> list[str]:
        base = self.root.joinpath(self.tree, *BASE)
        missing = [c for c in _CLASS_LETTER if not (base / c).is_dir()]
        return [f"partial download: no {', '.join(missing)} folder; built from what is there"] if missing else []

    def read_file(self, relpath: str):
        if relpath == "Folds.csv":
            raise UnusedSourceFile(
                "not used: Folds.csv is a community fold file (the Kaggle mirror's), not the publisher's; splits are "
                "drawn by patient here"
            )
        return super().read_file(relpath)

    def parse_path(self, relpath: str) -> PathInfo:
        inner = strip_tree(relpath, self.tree)
        parts = PurePosixPath(inner if inner is not None else relpath).parts
        if inner is None:
            parts = ()
        layout = (
            "histology_slides/breast/{benign,malignant}/SOB/<subtype>/SOB_<B|M>_<subtype>_<patient>/<mag>X/<image>.png"
        )
        if len(parts) != 8 or parts[:2] != BASE or parts[3] != "SOB":
            raise BadSourceFile(f"stray file: expected {layout}")
        cls_folder, subtype, patient_folder, mag_folder, name = parts[2], parts[4], parts[5], parts[6], parts[7]
        if cls_folder not in _CLASS_LETTER:
            raise BadSourceFile(f"class folder {cls_folder!r} is not benign or malignant")
        if subtype not in SUBTYPE_LETTERS:
            raise BadSourceFile(f"subtype folder {subtype!r} is not one of {sorted(SUBTYPE_LETTERS)}")
        if self.task_spec().label("subtype").parents[subtype] != cls_folder:  # the registry's hierarchy
            raise BadSourceFile(f"folder mismatch: subtype {subtype!r} filed under {cls_folder}/")
        if mag_folder not in _MAGNIFICATIONS:
            raise BadSourceFile(f"magnification folder {mag_folder!r} is not one of {list(_MAGNIFICATIONS)}")
        folder = _FOLDER.match(patient_folder)
        if folder is None:
            raise BadSourceFile(f"patient folder {patient_folder!r} is not SOB_<B|M>_<subtype>_<year>-<id>")
        match = _NAME.match(name)
        patient_id = folder.group(3) + folder.group(4)
        expected_letters = {"class letter": _CLASS_LETTER[cls_folder], "subtype letters": SUBTYPE_LETTERS[subtype]}
        for what, value in zip(expected_letters, folder.groups()[:2]):
            if value != expected_letters[what]:
                raise BadSourceFile(
                    f"name/folder mismatch: {what} {value!r} in the patient folder, {expected_letters[what]!r} in "
                    "the folders"
                )
        if match is None:  # a valid image of a known patient folder: its folders say everything the name would
            return PathInfo(
                sample_id=PurePosixPath(name).stem,
                labels={"malignancy": cls_folder, "subtype": subtype},
                group_key=f"patient:{folder.group(3)}",
                fields={"magnification": mag_folder, "patient_id": patient_id},
                note=(
                    f"name variant: {name!r} is not SOB_<B|M>_<subtype>-<year>-<id>-<mag>-<seq>.png; kept with its "
                    f"folders' class, subtype, magnification and patient {patient_id!r}"
                ),
            )
        letter, letters, patient, slide, mag, _ = match.groups()
        expected = {
            "class letter": (letter.upper(), folder.group(1), _CLASS_LETTER[cls_folder]),
            "subtype letters": (letters.upper(), folder.group(2), SUBTYPE_LETTERS[subtype]),
            "patient": (f"{patient}{slide.upper()}", f"{folder.group(3)}{folder.group(4)}", None),
            "magnification": (f"{mag}X", None, mag_folder),
        }
        for what, (in_name, in_patient_folder, in_folders) in expected.items():
            for where, value in (("the patient folder", in_patient_folder), ("the folders", in_folders)):
                if value is not None and value != in_name:
                    raise BadSourceFile(
                        f"name/folder mismatch: {what} {in_name!r} in the file name, {value!r} in {where}"
                    )
        return PathInfo(
            sample_id=PurePosixPath(name).stem,
            labels={"malignancy": cls_folder, "subtype": subtype},
            group_key=f"patient:{folder.group(3)}",
            fields={"magnification": mag_folder, "patient_id": patient_id},
        )
