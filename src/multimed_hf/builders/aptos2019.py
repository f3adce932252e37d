"""APTOS 2019 Blindness Detection (Kaggle): ``train.csv`` (id_code, diagnosis 0-4) with ``train_images/<id_code>.png``.

The competition's ``test.csv`` lists ``test_images/`` without grades (its labels were never published), so those
images are reported as unlabelled; ``sample_submission.csv`` is a template whose grades are placeholders and
labels nothing. There are no patient ids: each image is its own group, exact and near duplicates join (duplicate
images are reported in this set), and exact duplicates graded differently are rejected as label conflicts.
With no labelled test set, the test split is drawn from the training images' groups.
"""

from __future__ import annotations

from pathlib import Path

from multimed_hf.builders._csv_images import CsvImageBuilder, Sheet
from multimed_hf.data.errors import BadSourceFile

__all__ = ["APTOS2019Builder", "dr_grade"]


def dr_grade(builder, value: str, column: str) -> str:
    """The canonical DR grade of a 0-4 grade as written in a sheet (``"2"``, also ``"2.0"``)."""
    mapping = builder.spec().label_map["dr_grade"]
    text = value[:-2] if value.endswith(".0") else value
    if text not in mapping:
        raise BadSourceFile(f"{column} {value!r} is not a DR grade (expected one of {sorted(mapping)})")
    return mapping[text]


class APTOS2019Builder(CsvImageBuilder):
    task = "diabetic_retinopathy"
    source = "aptos2019"
    image_suffixes = (".png",)
    sheets = {
        "train.csv": Sheet(
            "train", {"id": "id_code", "grade": "diagnosis"}, images="train_images", published_split="train"
        ),
        "test.csv": Sheet("test", {"id": "id_code"}, images="test_images", labelled=False, published_split="test"),
        "sample_submission.csv": Sheet("submission", {"id": "id_code", "grade": "diagnosis"}),
    }

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "train.csv").is_file() and (root / "train_images").is_dir()

    def parse_row(self, row: dict[str, str], sheet: Sheet) -> dict:
        column = sheet.columns["grade"]
        return {"dr_grade": dr_grade(self, row[column], column)}
