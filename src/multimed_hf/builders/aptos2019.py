"""APTOS 2019 Blindness Detection (Kaggle): ``train.csv`` (id_code, diagnosis 0-4) with ``train_images/<id_code>.png``.

The competition's ``test.csv`` lists ``test_images/`` without grades (its labels were never published), so those
images are dropped as unlabelled (named in the manifest; a full download is no error); ``sample_submission.csv``
is a template whose grades are placeholders and labels nothing. The archives (``*.zip``) and non-data files
(``.DS_Store``, ``Thumbs.db``) are ignored. A download of the training set alone builds as it is. There are no
patient ids: each image is its own group, exact and near duplicates join (duplicate images are reported in this
set), and exact duplicates graded differently are rejected as label conflicts. With no labelled test set, the
test split is drawn from the training images' groups.
"""

from __future__ import annotations

from pathlib import Path

from multimed_hf.builders._csv_images import CsvImageBuilder, Sheet
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile

__all__ = ["APTOS2019Builder", "PublishedUnlabelled", "dr_grade"]


def dr_grade(builder, value: str, column: str) -> str:
    """The canonical DR grade of a 0-4 grade as written in a sheet (``"2"``, also ``"2.0"``)."""
    mapping = builder.spec().label_map["dr_grade"]
    text = value[:-2] if value.endswith(".0") else value
    if text not in mapping:
        raise BadSourceFile(f"{column} {value!r} is not a DR grade (expected one of {sorted(mapping)})")
    return mapping[text]


class PublishedUnlabelled:
    """Mixin before a ``CsvImageBuilder``: an image the publisher names without a label (a test list whose labels
    were never, or not here, published) is dropped with the reason, not rejected: it is no error of the files."""

    def read_file(self, relpath: str):
        try:
            return super().read_file(relpath)
        except UnusedSourceFile:
            raise
        except BadSourceFile as err:
            if err.reason.startswith("unlabelled:"):
                raise UnusedSourceFile(err.reason) from None
            raise


class APTOS2019Builder(NonDataFiles, PublishedUnlabelled, CsvImageBuilder):
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
