"""RSNA Pediatric Bone Age Challenge 2017: sheets (CSV or Excel) of (id, bone age in months, sex) beside ``<id>.png``.

The training sheet ``boneage-training-dataset.csv`` (``id, boneage, male``) indexes the PNGs of the folder of
the same name (Kaggle nests it twice: ``boneage-training-dataset/boneage-training-dataset/<id>.png``). The
challenge's other sheets are recognised by their headers, wherever they sit (at the root or one folder down):
the validation sheet (``Image ID, male, Bone Age (months)``, e.g. ``Validation Dataset.csv``) is training data
here, the test ground truth (``Case ID, Sex, Ground truth bone age (months)``) is the published test set, and
Kaggle's ``boneage-test-dataset.csv`` (``Case ID, Sex``) names its 200 test images without ages, so those are
reported as unlabelled. A sheet indexes the folder named like it when there is one, else its own folder; a sheet
alone in a folder of its own (no image, no folder beside it) indexes the folder above.

The challenge's own release (RSNA / Stanford AIMI) nests each set in a folder: ``Bone Age Training Set/train.csv``
(the training header) with ``boneage-training-dataset/``, ``Bone Age Validation Set/Validation Dataset.csv`` with
``boneage-validation-dataset-1/`` and ``-2/``, and ``Bone Age Test Set/`` with ``Test Set Images/`` and the ground
truth as an Excel sheet, ``Bone age ground truth.xlsx``. Downloaded from the Stanford AIMI Box share, those folders
unpack with ``+`` for spaces and a folder more: ``Bone+Age+Training+Set/boneage-training-dataset/`` with its sheet
apart in ``Bone+Age+Training+Set+Annotations/train.csv``, and ``Bone+Age+Validation+Set/Bone Age Validation Set/``;
so sheets are looked for down to two folders below the root. Any sheet may be an Excel workbook (``.xlsx``; its first
worksheet is read): pandas reads it with openpyxl (the ``tables`` extra) into the header and rows a CSV gives, so
the same column rules apply and rows are numbered alike (``row N`` is the N-th row under the header). Without
openpyxl a workbook is rejected, naming ``pip install multimed_hf[tables]``, and so are the images it labels (a
warning says so before the build); a CSV copy saved beside it (same name, ``.csv``) is read instead of it.

Targets: ``bone_age_months`` and ``bone_age_bin``, binned with the registry's edges; ``sex`` is M or F.
There is one image per child and no patient id: each image is its own group (exact and near duplicates join).
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import os
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from multimed_hf.builders._csv_images import CsvImageBuilder, Sheet, read_sheet
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders.aptos2019 import PublishedUnlabelled
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile

__all__ = [
    "RSNABoneAgeBuilder", "TRAINING_SHEET", "TEST_TRUTH_XLSX", "SHEETS", "EXCEL_EXTRA", "bone_age_bin",
    "read_excel_sheet",
]

TRAINING_SHEET = "boneage-training-dataset.csv"
#: The challenge's test ground truth as published (an Excel sheet).
TEST_TRUTH_XLSX = "Bone age ground truth.xlsx"
#: What to install to read Excel sheets (pandas' openpyxl engine).
EXCEL_EXTRA = "pip install multimed_hf[tables]"
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
#: What a damaged workbook raises in pandas / openpyxl (not a zip, a part missing, broken XML, a cut stream).
_EXCEL_ERRORS = (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, SyntaxError, zlib.error)


def read_excel_sheet(path: Path, name: str) -> tuple[list[str], list[dict[str, str] | None]]:
    """Header and rows of an Excel workbook's first worksheet by the rules ``read_sheet`` applies to a CSV (names
    and values as stripped text, a blank row None keeping the row numbers), or ``BadSourceFile`` naming the file
    (and the extra to install where openpyxl is missing)."""
    if not _has_openpyxl():
        raise BadSourceFile(f"{name} is an Excel sheet: reading it needs openpyxl ({EXCEL_EXTRA})")
    import pandas as pd
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        frame = pd.read_excel(path, sheet_name=0, header=None, dtype=object, engine="openpyxl", na_filter=False)
    except (*_EXCEL_ERRORS, InvalidFileException) as err:
        raise BadSourceFile(f"{name} is not a readable Excel workbook: {type(err).__name__}: {err}") from None
    if frame.empty:  # the first worksheet holds nothing: say which, and what else the workbook has
        sheets = pd.ExcelFile(path, engine="openpyxl").sheet_names
        others = f"; the workbook's other worksheets: {sheets[1:]} (move the rows to the first)" if sheets[1:] else ""
        raise BadSourceFile(f"{name}: its first worksheet {sheets[0]!r}, the one read, is empty{others}")
    text = io.StringIO()  # the cells as CSV text, read by the CSV sheets' own rules
    csv.writer(text).writerows([str(cell) for cell in row] for row in frame.itertuples(index=False, name=None))
    return read_sheet(text.getvalue().encode("utf-8"), name)


def _has_openpyxl() -> bool:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        return False
    return True


def _csv_copy(relpath: str) -> str:
    """Where a CSV copy of the workbook at ``relpath`` would be saved (same name, ``.csv``)."""
    return PurePosixPath(relpath).with_suffix(".csv").as_posix()


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
    version = "5"  # 5: a training workbook is detected by name (its damage named), an empty first worksheet said
    image_suffixes = (".png",)
    sheet_suffixes = (".csv", ".xlsx")
    sheet_depth = 2  # a Box download's Bone+Age+Validation+Set/Bone Age Validation Set/Validation Dataset.csv
    sheets = {TRAINING_SHEET: SHEETS[0]}

    def __init__(self, root):
        super().__init__(root)
        if self._workbooks():  # once openpyxl is installed, the cached rejections of its workbooks must go
            self.version += "+openpyxl" if _has_openpyxl() else "+no-openpyxl"

    @classmethod
    def detect(cls, root: Path) -> bool:
        stem = PurePosixPath(TRAINING_SHEET).stem  # the training sheet by name, as a CSV or an Excel workbook: a
        if any((root / f"{stem}{suffix}").is_file() for suffix in (".csv", ".xlsx")):  # damaged one is named
            return True
        for pattern in ("*.csv", "*/*.csv", "*/*/*.csv", "*.xlsx", "*/*.xlsx", "*/*/*.xlsx"):
            for path in root.glob(pattern):
                try:
                    if path.suffix == ".xlsx":
                        header, _ = read_excel_sheet(path, path.name)
                    else:
                        with path.open("rb") as handle:
                            header, _ = read_sheet(handle.readline(), path.name)
                except BadSourceFile:
                    if path.name == TEST_TRUTH_XLSX:
                        return True  # the challenge's own sheet, not readable here: the build says why
                    continue
                except OSError:
                    continue
                if any(set(s.columns.values()) <= set(header) and s.labelled for s in SHEETS):
                    return True
        return False

    def _sheet_candidates(self) -> list[str]:
        """CSV and Excel sheets (down to ``sheet_depth``); a workbook with a CSV copy beside it is left to the
        copy."""
        found = super()._sheet_candidates()
        return [p for p in found if not (p.lower().endswith(".xlsx") and _csv_copy(p) in found)]

    def _workbooks(self) -> list[str]:
        return [relpath for relpath in self._sheet_candidates() if relpath.lower().endswith(".xlsx")]

    def read_sheet_file(self, relpath: str):
        if relpath.lower().endswith(".xlsx"):
            return read_excel_sheet(self.root / relpath, relpath)
        return super().read_sheet_file(relpath)

    def layout_warnings(self) -> list[str]:
        if _has_openpyxl():
            return []
        return [
            f"{relpath} is an Excel sheet and openpyxl is not installed: it and the images it labels are rejected "
            f"({EXCEL_EXTRA} to read it)" for relpath in self._workbooks()
        ]

    def read_file(self, relpath: str):
        copy = _csv_copy(relpath)
        if relpath.lower().endswith(".xlsx") and relpath.count("/") <= 2 and (self.root / copy).is_file():
            raise UnusedSourceFile(f"not used: its CSV copy {copy} beside it is read instead")
        return super().read_file(relpath)

    def sheet_for(self, relpath: str, header: list[str]) -> Sheet | None:
        path = PurePosixPath(relpath)
        if path.stem == PurePosixPath(TRAINING_SHEET).stem:
            return SHEETS[0]  # named: a damaged training sheet (CSV or Excel) is reported as such
        for sheet in SHEETS:
            if set(sheet.columns.values()) <= set(header):
                return sheet
        if not header and path.suffix.lower() == ".xlsx":
            return SHEETS[2]  # a workbook not read (no openpyxl, or damaged) is the test truth as published
        return None

    def image_scope(self, relpath: str, sheet: Sheet) -> str | None:
        """The folder named like the sheet (``boneage-training-dataset/``) if there is one, else its folder; for a
        sheet alone in a folder of its own (``Bone+Age+Training+Set+Annotations/train.csv``) the folder above."""
        path = PurePosixPath(relpath)
        twin = path.parent / path.stem
        if (self.root / twin).is_dir():
            return twin.as_posix() + "/"
        folder = path.parent
        if folder.as_posix() != "." and self._holds_only_sheets(folder):
            folder = folder.parent
        return "" if folder.as_posix() == "." else folder.as_posix() + "/"

    def _holds_only_sheets(self, folder: PurePosixPath) -> bool:
        """True for a folder holding no subfolder and no image: sheets (and non-data files) only."""
        for entry in os.scandir(self.root / folder):
            if entry.is_dir() or entry.name.lower().endswith(self.image_suffixes):
                return False
        return True

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
