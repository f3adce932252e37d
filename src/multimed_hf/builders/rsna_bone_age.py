"""RSNA Pediatric Bone Age Challenge 2017: CSV sheets of (id, bone age in months, sex) beside folders of ``<id>.png``.

The training sheet ``boneage-training-dataset.csv`` (``id, boneage, male``) indexes the PNGs of the folder of
the same name (Kaggle nests it twice: ``boneage-training-dataset/boneage-training-dataset/<id>.png``). The
challenge's other sheets are recognised by their headers, wherever they sit (at the root or one folder down):
the validation sheet (``Image ID, male, Bone Age (months)``, e.g. ``Validation Dataset.csv``) is training data
here, the test ground truth (``Case ID, Sex, Ground truth bone age (months)``, saved as CSV) is the published test
set, and Kaggle's ``boneage-test-dataset.csv`` (``Case ID, Sex``) names its 200 test images without ages, so those
are reported as unlabelled. A sheet indexes the folder named like it when there is one, else its own folder.

The challenge's own release (RSNA / Stanford AIMI) nests each set in a folder: ``Bone Age Training Set/train.csv``
(the training header) with ``boneage-training-dataset/``, ``Bone Age Validation Set/Validation Dataset.csv`` with
``boneage-validation-dataset-1/`` and ``-2/``, and ``Bone Age Test Set/`` with ``Test Set Images/`` and the ground
truth as an Excel sheet, ``Bone age ground truth.xlsx``. This build reads CSV only: the .xlsx is dropped with the
reason and a warning, and the test images it would label are dropped as unlabelled (no error); saved as CSV beside
it (same columns), it labels them. Images a test list names without ages are dropped as unlabelled too.

Targets: ``bone_age_months`` and ``bone_age_bin``, binned with the registry's edges; ``sex`` is M or F.
There is one image per child and no patient id: each image is its own group (exact and near duplicates join).
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path, PurePosixPath

from multimed_hf.builders._csv_images import CsvImageBuilder, Sheet, read_sheet
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders.aptos2019 import PublishedUnlabelled
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile

__all__ = ["RSNABoneAgeBuilder", "TRAINING_SHEET", "TEST_TRUTH_XLSX", "SHEETS", "bone_age_bin"]

TRAINING_SHEET = "boneage-training-dataset.csv"
#: The challenge's test ground truth as published (an Excel sheet; read once saved as CSV).
TEST_TRUTH_XLSX = "Bone age ground truth.xlsx"
#: The challenge's sheet layouts, most specific header first.
SHEETS = (
    Sheet("train", {"id": "id", "months": "boneage", "male": "male"}, images=".", published_split="train"),
    Sheet(
        "validation", {"id": "Image ID", "male": "male", "months": "Bone Age (months)"}, images=".",
        published_split="train",
    ),
    Sheet(
        "test", {"id": "Case ID", "sex": "Sex", "months": "Ground truth bone age (months)"}, images=".",
        published_split="test",
    ),
    Sheet("test", {"id": "Case ID", "sex": "Sex"}, images=".", labelled=False, published_split="test"),
)
#: Bone ages outside this range (months) are not a child's: a unit or typing error.
PLAUSIBLE_MONTHS = (0.0, 300.0)
_TRUE, _FALSE = {"true", "1", "yes", "t", "y"}, {"false", "0", "no", "f", "n"}


def bone_age_bin(months: float, bins, names) -> str:
    """The name of the bin ``[bins[i], bins[i+1])`` (the last open-ended) that ``months`` falls in."""
    if len(bins) != len(names):
        raise ValueError(f"{len(bins)} bin edges for {len(names)} bin names: the last bin is open-ended")
    i = bisect.bisect_right(bins, months) - 1
    if i < 0:
        raise BadSourceFile(f"bone age {months} months is below the first bin edge {bins[0]}")
    return names[i]


class RSNABoneAgeBuilder(NonDataFiles, PublishedUnlabelled, CsvImageBuilder):
    task = "bone_age"
    source = "rsna_bone_age"
    version = "2"
    image_suffixes = (".png",)
    sheets = {TRAINING_SHEET: SHEETS[0]}

    @classmethod
    def detect(cls, root: Path) -> bool:
        if (root / TRAINING_SHEET).is_file():
            return True
        for csv_path in [*root.glob("*.csv"), *root.glob("*/*.csv")]:
            try:
                with csv_path.open("rb") as handle:
                    header, _ = read_sheet(handle.readline(), csv_path.name)
            except (BadSourceFile, OSError):
                continue
            if any(set(s.columns.values()) <= set(header) and s.labelled for s in SHEETS):
                return True
        return False

    def _unread_truth(self) -> list[str]:
        """The .xlsx ground-truth sheets here (root or one folder down) with no CSV copy beside them."""
        found = []
        for path in [*self.root.glob(TEST_TRUTH_XLSX), *self.root.glob(f"*/{TEST_TRUTH_XLSX}")]:
            if not path.with_suffix(".csv").is_file():
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def layout_warnings(self) -> list[str]:
        return [
            f"{relpath} is an Excel sheet, which this build does not read: its test images are dropped as unlabelled; "
            "save it as CSV beside it (same columns) to label them" for relpath in self._unread_truth()
        ]

    def read_file(self, relpath: str):
        if PurePosixPath(relpath).name == TEST_TRUTH_XLSX:
            raise UnusedSourceFile(
                "not used: an Excel sheet, which this build does not read (save it as CSV beside it, same columns: "
                "Case ID, Sex, Ground truth bone age (months))"
            )
        return super().read_file(relpath)

    def unindexed_reason(self, relpath: str) -> str:
        top = PurePosixPath(relpath).parts[0]
        for sheet in self._unread_truth():
            folder = PurePosixPath(sheet).parent.as_posix()
            if folder == "." or folder == top:
                return f"unlabelled: its ages are in {sheet}, an Excel sheet this build does not read"
        return super().unindexed_reason(relpath)

    def sheet_for(self, relpath: str, header: list[str]) -> Sheet | None:
        if PurePosixPath(relpath).name == TRAINING_SHEET:
            return SHEETS[0]  # named: a damaged training sheet is reported as such
        for sheet in SHEETS:
            if set(sheet.columns.values()) <= set(header):
                return sheet
        return None

    def image_scope(self, relpath: str, sheet: Sheet) -> str | None:
        """The folder named like the sheet (``boneage-training-dataset/``) if there is one, else its folder."""
        path = PurePosixPath(relpath)
        twin = path.parent / path.stem
        if (self.root / twin).is_dir():
            return twin.as_posix() + "/"
        return "" if path.parent.as_posix() == "." else path.parent.as_posix() + "/"

    def parse_row(self, row: dict[str, str], sheet: Sheet) -> dict:
        column = sheet.columns["months"]
        text = row[column]
        try:
            months = float(text)
        except ValueError:
            raise BadSourceFile(f"{column} {text!r} is not a number of months") from None
        low, high = PLAUSIBLE_MONTHS
        if not math.isfinite(months) or not low <= months <= high:
            raise BadSourceFile(f"{column} {text!r} is not a bone age in months ({low:g} to {high:g})")
        label = self.task_spec().label("bone_age_bin")
        return {
            "bone_age_months": months,
            "bone_age_bin": bone_age_bin(months, label.bins, label.names),
            "sex": self._sex(row, sheet),
        }

    @staticmethod
    def _sex(row: dict[str, str], sheet: Sheet) -> str:
        if "male" in sheet.columns:
            column = sheet.columns["male"]
            value = row[column].lower()
            if value in _TRUE:
                return "M"
            if value in _FALSE:
                return "F"
            raise BadSourceFile(f"{column} {row[column]!r} is not True or False")
        column = sheet.columns["sex"]
        value = row[column].upper()
        if value in ("M", "F", "MALE", "FEMALE"):
            return value[0]
        raise BadSourceFile(f"{column} {row[column]!r} is not M or F")
